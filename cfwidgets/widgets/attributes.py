"""``AttributeWidget``: attribute-conditioned counterfactuals (GCI and AIP) with sliders.

Built on :class:`~cfwidgets.widgets.CounterfactualWidget` (input picker, target, knobs
from the Config, Run/Stop, before | after | difference, probability bars, trajectory).
What it adds:

- a method switch (GCI: attributes only; AIP: latent + attributes);
- one weight slider per attribute (the cost of changing it; 0 = free) with a *lock*
  checkbox (weight 100: the attribute is not optimised);
- a signed bar chart of the attribute changes (named, in natural units);
- a *walk* slider: decode points on the line from the query's ``(z0, a0)`` to the
  counterfactual's ``(z', a')`` and watch the class probabilities change;
- a *what-if* mode: set attribute values by hand (natural units; a dropdown for the
  digit / shape) and see the generator's output and the classifier's probabilities
  update at once, without optimising.

Examples::

    from cfwidgets import data
    from cfwidgets.widgets.attributes import AttributeWidget
    w = AttributeWidget.from_zoo("mnist", data.load_mnist("test"))
    w                                   # in a notebook; or from code:
    w.set_weight("digit", lock=True)    # style-only explanations
    w.run(block=True); w.result.meta["per_row_changes"]
    w.what_if(slant=20.0)               # decode the query with a new slant
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import torch
from torch import Tensor

from ..analysis.views import attribute_bars_html
from ..methods.aip import AIP
from ..methods.base import CounterfactualMethod
from ..methods.gci import GCI
from ..models.conditional import spec_of
from ..result import CounterfactualResult
from .base import CounterfactualWidget
from .controls import CONTROL_WIDTH, DESCRIPTION_WIDTH, AttributeWeights
from .views import fmt

__all__ = ["AttributeWidget"]

_METHODS = {"gci": ("GCI: attributes only", GCI), "aip": ("AIP: latent + attributes", AIP)}


class AttributeWidget(AttributeWeights, CounterfactualWidget):
    """Explore GCI / AIP counterfactuals: per-attribute weights and locks, attribute-change
    bars, a walk along the counterfactual path and a manual what-if mode.

    Args:
        classifier: the model to explain (logits).
        generator: a conditional generator (``attribute_names``, ``attributes``,
            ``encode``, ``decode(z, a)``), e.g. ``zoo.load("mnist/cvae")``.
        data: inputs (an ``ImageDataset`` or images).
        method: ``"gci"`` or ``"aip"`` (switchable in the widget).
        weight_max: the range of the weight sliders (0 .. weight_max).
        kwargs: passed to :class:`CounterfactualWidget` (``defaults``, ``index``, ...).
    """

    hidden_knobs = ("attribute_weights",)

    def __init__(self, classifier, generator, data: Any = None, *, method: str = "gci",
                 weight_max: float = 10.0, **kwargs: Any) -> None:
        if method not in _METHODS:
            raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}.")
        self._gen = generator
        self._spec = spec_of(generator)
        self._methods: dict[str, CounterfactualMethod] = {
            k: cls(classifier, generator) for k, (_, cls) in _METHODS.items()}
        self._weight_max = float(weight_max)
        self._quiet = False
        self._z0: Tensor | None = None
        self._a0: Tensor | None = None
        self._whatif_base: tuple[Tensor, Tensor] | None = None
        self._whatif_set: dict[str, float] = {}  # the values the widget itself set last
        super().__init__(self._methods[method], data, **kwargs)

    @classmethod
    def from_zoo(cls, dataset: str = "mnist", data: Any = None, **kwargs: Any) -> AttributeWidget:
        """Zoo models for ``"mnist"``, ``"shapes"`` or ``"shapes-biased"`` (the data
        default: that data set's test split). For digits the metrics line also gives the
        verdict of ``mnist/oracle``, a classifier no method steers with (pass
        ``oracle=None`` to leave it out): a flip the explained CNN accepts but the oracle
        reads as the original digit shows there."""
        from .. import zoo
        from ..data import load_mnist, load_shapes

        gen = {"mnist": "mnist/cvae", "shapes": "shapes/cvae", "shapes-biased": "shapes/cvae"}
        if dataset not in gen:
            raise ValueError(f"AttributeWidget.from_zoo knows {sorted(gen)}, got {dataset!r}.")
        if data is None:
            data = load_mnist("test") if dataset == "mnist" else load_shapes("test")
        dev = kwargs.pop("model_device", "cpu")
        if dataset == "mnist":
            kwargs.setdefault("oracle", zoo.load("mnist/oracle", device=dev))
        return cls(zoo.load(f"{dataset}/cnn", device=dev), zoo.load(gen[dataset], device=dev), data, **kwargs)

    # ============================================================= controls
    def primary_controls(self) -> list[W.Widget]:
        style = {"description_width": DESCRIPTION_WIDTH}
        current = next(k for k, m in self._methods.items() if m is self.method)
        self.method_dropdown = W.Dropdown(
            options=[(label, k) for k, (label, _) in _METHODS.items()], value=current,
            description="method", tooltip="GCI optimises the attributes only; AIP the latent "
            "code and the attributes together.", style=style, layout=W.Layout(width=CONTROL_WIDTH))
        self.method_dropdown.add_class("cfw-method-switch")
        self.method_dropdown.observe(self._on_method_change, names=["value"])
        return [self.method_dropdown]

    def advanced_controls(self) -> list[W.Widget]:
        return self._weight_rows("attribute weights (cost of a change; 0 = free) and locks")

    def _on_method_change(self, change) -> None:
        try:
            self.set_method(self._methods[change["new"]])
        except Exception as e:  # noqa: BLE001 - shown, not swallowed
            self.show_error(e)

    def explain_kwargs(self) -> dict[str, Any]:
        return {**super().explain_kwargs(), "attribute_weights": self.attribute_weights}

    # ================================================================ views
    def extra_views(self) -> list[W.Widget]:
        self.attr_view = W.HTML(attribute_bars_html_placeholder(), layout=W.Layout(min_width="420px"))
        self.attr_view.add_class("cfw-attr-view")
        self.walk_slider = W.FloatSlider(
            value=1.0, min=0.0, max=1.0, step=0.05, description="walk", disabled=True,
            continuous_update=True, readout_format=".2f",
            tooltip="Decode points on the line from the query (0) to the counterfactual (1).",
            style={"description_width": "40px"}, layout=W.Layout(width="300px"))
        self.walk_slider.add_class("cfw-walk")
        self.walk_label = W.HTML("", layout=W.Layout(width="240px"))
        self.walk_slider.observe(self._on_walk, names=["value"])
        # what-if: one control per attribute in natural units
        spec = self._spec
        self.whatif_controls: dict[str, W.Widget] = {}
        items = []
        for i, name in enumerate(spec.names):
            unit = f" ({spec.units[i]})" if spec.units[i] else ""
            if spec.kinds[i] == "categorical":
                w = W.Dropdown(options=[(c, k) for k, c in enumerate(spec.categories[i])], value=0,
                               description=name, style={"description_width": "120px"},
                               layout=W.Layout(width="280px"))
            else:
                lo, hi = self._natural_bounds(i)
                w = W.FloatSlider(value=(lo + hi) / 2, min=lo, max=hi, step=(hi - lo) / 200,
                                  description=name + unit, readout_format=".3g", continuous_update=True,
                                  tooltip=f"{name}{unit}", style={"description_width": "120px"},
                                  layout=W.Layout(width="340px"))
            w.observe(self._on_whatif, names=["value"])
            w.add_class(f"cfw-whatif-{name}")
            self.whatif_controls[name] = w
            items.append(w)
        self.whatif_from_input = W.Button(description="from input", layout=W.Layout(width="120px"),
                                          tooltip="Set the sliders to the query's attributes.")
        self.whatif_from_cf = W.Button(description="from counterfactual", layout=W.Layout(width="150px"),
                                       tooltip="Set the sliders (and the latent) to the counterfactual's.")
        self.whatif_from_input.on_click(lambda _b: self._guard(self.whatif_reset, "input"))
        self.whatif_from_cf.on_click(lambda _b: self._guard(self.whatif_reset, "counterfactual"))
        self.whatif_info = W.HTML("", layout=W.Layout(width="320px"))
        self.whatif_info.add_class("cfw-whatif-info")
        whatif = W.VBox([W.HTML("<div style='font-weight:600;font-size:13px'>what-if: set attributes "
                                "by hand</div>"), *items,
                         W.HBox([self.whatif_from_input, self.whatif_from_cf]), self.whatif_info],
                        layout=W.Layout(margin="0 0 0 16px"))
        left = W.VBox([self.attr_view, W.HBox([self.walk_slider, self.walk_label])])
        return [W.HBox([left, whatif], layout=W.Layout(flex_flow="row wrap", align_items="flex-start"))]

    def _natural_bounds(self, i: int) -> tuple[float, float]:
        s = self._spec
        if s.kinds[i] == "binary":
            return 0.0, 1.0
        lo, hi = s.mean[i] + s.std[i] * s.low[i], s.mean[i] + s.std[i] * s.high[i]
        return float(min(lo, hi)), float(max(lo, hi))

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            self.show_error(e)

    # ============================================================ input / result
    def show_input(self) -> None:
        super().show_input()
        if not hasattr(self, "whatif_controls"):
            return  # called before the extra views exist
        dev = self.method.device
        with torch.no_grad():
            x = self.current_input().to(dev)
            self._a0 = self._spec.project(self._gen.attributes(x))
            self._z0 = self._gen.encode(x)
        self._whatif_base = (self._z0, self._a0)
        self._set_whatif(self._a0)
        self.whatif_info.value = "<span style='font-size:12px;color:#57606a'>move a slider to decode</span>"
        self.attr_view.value = attribute_bars_html_placeholder()
        self.walk_slider.disabled = True
        self.walk_label.value = ""

    def render_extra(self, result: CounterfactualResult) -> None:
        self.attr_view.value = attribute_bars_html(result, 0)
        self.walk_slider.disabled = False
        self._quiet = True
        self.walk_slider.value = 1.0
        self._quiet = False
        self.walk_label.value = self._walk_text(1.0, result.probs_cf[0])
        # the what-if sliders start at the counterfactual, so its numbers match the
        # caption and the metrics line (the after image is not redrawn here)
        m = result.meta
        if "z_cf" in m and "a_cf" in m:
            dev = self.method.device
            self._whatif_base = (m["z_cf"][:1].to(dev), m["a_cf"][:1].to(dev))
            self._set_whatif(self._whatif_base[1])
            self.whatif_info.value = self._whatif_text(result.probs_cf[0], "the counterfactual")

    def _walk_text(self, t: float, probs: Tensor) -> str:
        return (f"<span style='font-size:12px;white-space:nowrap'>t = {t:.2f} &middot; p(target) "
                f"{fmt(float(probs[self.current_target()]), '%')}</span>")

    def _whatif_text(self, probs: Tensor, what: str = "what-if") -> str:
        k = int(probs.argmax())
        name = self.class_names[k] if k < len(self.class_names) else str(k)
        return (f"<span style='font-size:12px'>{html.escape(what)}: predicted <b>{html.escape(name)}</b> "
                f"{fmt(float(probs[k]), '%')} &middot; p(target) {fmt(float(probs[self.current_target()]), '%')}"
                f"</span>")

    def clear_result(self) -> None:
        super().clear_result()
        if hasattr(self, "walk_slider"):
            self.walk_slider.disabled = True
            self.walk_label.value = ""
            self.attr_view.value = attribute_bars_html_placeholder()

    def compute_metrics(self, result: CounterfactualResult) -> dict:
        from ..metrics import evaluate
        from ..metrics.attributes import ATTRIBUTE_METRICS

        row = evaluate(result, autoencoders=self.autoencoders, oracle=self.oracle, extra=ATTRIBUTE_METRICS)
        row["time_s"] = float(result.meta.get("wall_time_s", float("nan")))
        return row

    # ================================================================= walk
    def walk_to(self, t: float) -> tuple[Tensor, Tensor]:
        """Decode the point ``t`` (0 = query, 1 = counterfactual) of the last result's path;
        returns ``(image (C, H, W), probabilities (K,))`` and shows them."""
        res = self.result
        if res is None:
            raise RuntimeError("no result yet: run first.")
        m = res.meta
        dev = self.method.device
        z0, z1 = m["z0"][:1].to(dev), m["z_cf"][:1].to(dev)
        a0, a1 = m["a0"][:1].to(dev), m["a_cf"][:1].to(dev)
        with torch.no_grad():
            x = self._gen.decode(z0 + t * (z1 - z0), a0 + t * (a1 - a0))
            probs = self.method.classifier(x).softmax(-1)[0].cpu()
        x = x[0].cpu()
        self.show_images(x, probs, caption=f" (walk t={t:.2f})")
        self.walk_label.value = self._walk_text(t, probs)
        return x, probs

    def _on_walk(self, change) -> None:
        if self._quiet or self.running or self.result is None:
            return
        self._guard(self.walk_to, float(change["new"]))

    # ============================================================== what-if
    def _set_whatif(self, a: Tensor) -> None:
        nat = self._spec.to_natural(a.detach().cpu())[0]
        self._quiet = True
        try:
            for i, name in enumerate(self._spec.names):
                w = self.whatif_controls[name]
                v = float(nat[i])
                if isinstance(w, W.Dropdown):
                    w.value = int(v)
                else:
                    w.value = min(max(v, w.min), w.max)
                self._whatif_set[name] = w.value
        finally:
            self._quiet = False

    def whatif_reset(self, source: str = "input") -> None:
        """Set the what-if controls (and latent) to the query's (``"input"``) or the last
        counterfactual's (``"counterfactual"``) values, and decode."""
        if source == "counterfactual":
            if self.result is None:
                raise RuntimeError("no counterfactual yet: run first.")
            m = self.result.meta
            dev = self.method.device
            self._whatif_base = (m["z_cf"][:1].to(dev), m["a_cf"][:1].to(dev))
        else:
            self._whatif_base = (self._z0, self._a0)
        self._set_whatif(self._whatif_base[1])
        self.what_if()

    def what_if(self, **values: Any) -> tuple[Tensor, Tensor]:
        """Decode the current what-if attribute values (``values`` override controls, in
        natural units: ``what_if(slant=20.0, digit=7)``); shows and returns
        ``(image (C, H, W), probabilities (K,))``."""
        if values:
            self._quiet = True
            try:
                for k, v in values.items():
                    if k not in self.whatif_controls:
                        raise KeyError(f"unknown attribute {k!r}; known: {list(self.whatif_controls)}")
                    w = self.whatif_controls[k]
                    if isinstance(w, W.Dropdown) and isinstance(v, str):
                        v = [lab for lab, _ in w.options].index(v)
                    w.value = v
            finally:
                self._quiet = False
        from ..analysis.whatif import set_attributes

        z, a_base = self._whatif_base
        vals = {n: (c.value if isinstance(c, W.Dropdown) else float(c.value))
                for n, c in self.whatif_controls.items()}
        a = set_attributes(self._gen, a_base, vals)
        with torch.no_grad():
            x = self._gen.decode(z, a)
            probs = self.method.classifier(x).softmax(-1)[0].cpu()
        x = x[0].cpu()
        self.show_images(x, probs, caption=" (what-if)")
        self.whatif_info.value = self._whatif_text(probs)
        return x, probs

    def _on_whatif(self, change) -> None:
        if self._quiet or self.running or self._whatif_base is None:
            return
        # the front end rounds a value the kernel set to its slider's step and sends it
        # back: that echo is not the person moving the slider
        w = change["owner"]
        name = next((n for n, c in self.whatif_controls.items() if c is w), None)
        set_v = self._whatif_set.get(name)
        step = getattr(w, "step", None)
        if set_v is not None and step and abs(float(change["new"]) - float(set_v)) <= float(step) * 0.51:
            return
        self._guard(self.what_if)

    # ======================================================= static fallback
    def static_html(self) -> str:
        out = super().static_html()
        if self.result is not None:
            out += attribute_bars_html(self.result, 0)
        return out


def attribute_bars_html_placeholder() -> str:
    return ("<div class='cfw-attr-bars' style='font-size:12px;color:#57606a'>attribute changes: "
            "press Run</div>")

"""``DiffeomorphicWidget``: counterfactuals in the coordinates of a flow, a VAE or a GAN,
beside the same ascent on the pixels (Dombrowski et al., arXiv 2206.05075).

Built on :class:`~cfwidgets.widgets.CounterfactualWidget` (input picker, target, knobs
from the Config, Run/Stop, live preview, before | after | difference, probability bars,
trajectory slider). What it adds:

- a **generator** dropdown: ``flow`` / ``vae`` / ``gan`` (the diffeomorphic method) or
  ``pixels`` (the paper's baseline: the same ascent with the pixels as parameters, i.e.
  Wachter without a proximity term);
- a **pixel baseline** toggle: every run also runs the pixel ascent with the same
  budget, lr and stopping rule, shown beside the latent result (images, difference,
  oracle verdict, bits/dim);
- **path curves**: the target probability and the flow's bits/dim of every trajectory
  snapshot (and, for a flow, the log-density live during the run, at no extra cost);
- the reconstruction ``g(g^-1(x))`` (differs from ``x`` for VAE/GAN) and a metrics line
  with the oracle's verdict, bits/dim before -> after and the tangent-space fraction.

Examples::

    from cfwidgets import data
    from cfwidgets.widgets.diffeomorphic import DiffeomorphicWidget
    w = DiffeomorphicWidget.from_zoo("mnist", data.load_mnist("test"))
    w                                         # in a notebook; or from code:
    w.generator = "vae"; w.pixel_baseline = True
    res = w.run(block=True); w.pixel_result
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as W
import torch

from ..config import knobs
from ..methods.base import CounterfactualMethod
from ..methods.diffeomorphic import DiffeomorphicCounterfactual
from ..methods.wachter import Wachter
from ..metrics.core import oracle_agreement, oracle_prediction
from ..result import CounterfactualResult
from ..viz import html as vh
from .base import CounterfactualWidget, RunJob
from .controls import CONTROL_WIDTH, DESCRIPTION_WIDTH
from .views import LossView, fmt

__all__ = ["DiffeomorphicWidget"]

_LABELS = {"flow": "flow (exact)", "vae": "VAE (encoder)", "gan": "GAN (inversion)",
           "pixels": "pixels (adversarial)"}


class DiffeomorphicWidget(CounterfactualWidget):
    """Explore diffeomorphic counterfactuals: pick the coordinates (flow / VAE / GAN /
    pixels), compare with the pixel-space ascent, scrub the path and watch the target
    probability and the data density along it.

    Args:
        classifier: the model to explain (logits).
        generators: ``{"flow": model, "vae": model, "gan": model}`` (any subset, at least
            one); ``"pixels"`` is always offered.
        data: inputs (an ``ImageDataset`` or images).
        generator: the first generator shown.
        flow: the density model for bits/dim (default: ``generators["flow"]``).
        vae: the VAE whose decoder Jacobian gives the tangent-space fraction (default:
            ``generators["vae"]``).
        pixel_baseline: start with the pixel-baseline toggle on.
        kwargs: passed to :class:`CounterfactualWidget` (``defaults``, ``index``,
            ``oracle``, ``autoencoders``, ...).
    """

    def __init__(self, classifier, generators: Mapping[str, Any], data: Any = None, *,
                 generator: str | None = None, flow: Any = None, vae: Any = None,
                 pixel_baseline: bool = False, **kwargs: Any) -> None:
        gens = {k: v for k, v in dict(generators).items() if v is not None}
        unknown = sorted(set(gens) - {"flow", "vae", "gan"})
        if unknown:
            raise ValueError(f"generators are keyed 'flow', 'vae', 'gan'; got {unknown}.")
        if not gens:
            raise ValueError("pass at least one generative model, e.g. {'flow': zoo.load('mnist/flow')}.")
        self.flow = flow if flow is not None else gens.get("flow")
        self.vae = vae if vae is not None else gens.get("vae")
        self._methods: dict[str, CounterfactualMethod] = {
            k: DiffeomorphicCounterfactual(classifier, g, density_model=self.flow)
            for k, g in gens.items()}
        self._methods["pixels"] = Wachter(classifier)
        first = generator or next(iter(gens))
        if first not in self._methods:
            raise ValueError(f"generator must be one of {list(self._methods)}, got {first!r}.")
        self.pixel_result: CounterfactualResult | None = None  #: the last pixel-baseline result
        self._live_path: dict[str, list[float]] = {}
        self.generator_dropdown = W.Dropdown(
            options=[(_LABELS[k], k) for k in self._methods], value=first,
            description="generator", tooltip="The coordinates of the gradient ascent: a "
            "generative model's latent space, or the pixels themselves (adversarial baseline).",
            style={"description_width": DESCRIPTION_WIDTH}, layout=W.Layout(width=CONTROL_WIDTH))
        self.generator_dropdown.add_class("cfw-generator")
        self.baseline_toggle = W.Checkbox(
            value=bool(pixel_baseline), description="pixel baseline beside it", indent=False,
            tooltip="Also run the same ascent on the pixels (same steps, lr, confidence) "
            "and show it next to the result.", layout=W.Layout(width=CONTROL_WIDTH))
        self.baseline_toggle.add_class("cfw-baseline-toggle")
        defaults = dict(kwargs.pop("defaults", None) or {})
        self._base_hidden = tuple(kwargs.pop("hidden", ()))
        super().__init__(self._methods[first], data, defaults=self._for_config(
            self._methods[first], defaults), hidden=self._hidden_for(first), **kwargs)
        self._all_defaults = defaults
        self.generator_dropdown.observe(self._on_generator_change, names=["value"])

    @classmethod
    def from_zoo(cls, dataset: str = "mnist", data: Any = None, *,
                 generators: tuple[str, ...] = ("flow", "vae", "gan"), device="cpu",
                 **kwargs: Any) -> DiffeomorphicWidget:
        """Classifier ``<dataset>/cnn``, the zoo generators that exist for ``dataset``
        (MNIST: flow, VAE, GAN; Fashion-MNIST: flow), ``<dataset>/oracle`` and
        ``<dataset>/ae`` for the metrics; ``data`` defaults to the test split."""
        from .. import zoo
        from ..data import load_dataset

        names = zoo.recipes()
        gens = {g: zoo.load(f"{dataset}/{g}", device=device) for g in generators
                if f"{dataset}/{g}" in names}
        kwargs.setdefault("oracle", zoo.load(f"{dataset}/oracle", device=device)
                          if f"{dataset}/oracle" in names else None)
        kwargs.setdefault("autoencoders", zoo.load(f"{dataset}/ae", device=device)
                          if f"{dataset}/ae" in names else None)
        if data is None:
            data = load_dataset(dataset, "test")
        return cls(zoo.load(f"{dataset}/cnn", device=device), gens, data, **kwargs)

    # ------------------------------------------------------------ generator
    @staticmethod
    def _for_config(method: CounterfactualMethod, values: Mapping[str, Any]) -> dict:
        names = {k.name for k in knobs(method.Config)}
        out = {k: v for k, v in values.items() if k in names}
        if isinstance(method, Wachter):
            out["proximity_weight"] = 0.0  # the paper's pixel arm: no distance term
        return out

    def _hidden_for(self, generator: str) -> tuple[str, ...]:
        """The GAN's inversion knobs are shown only for the GAN."""
        gan_knobs = () if generator == "gan" else tuple(
            k.name for k in knobs(DiffeomorphicCounterfactual.Config) if k.name.startswith("gan_"))
        return self._base_hidden + gan_knobs

    @property
    def generator(self) -> str:
        return str(self.generator_dropdown.value)

    @generator.setter
    def generator(self, name: str) -> None:
        if name not in self._methods:
            raise ValueError(f"generator must be one of {list(self._methods)}, got {name!r}.")
        self.generator_dropdown.value = name

    @property
    def pixel_baseline(self) -> bool:
        return bool(self.baseline_toggle.value)

    @pixel_baseline.setter
    def pixel_baseline(self, on: bool) -> None:
        self.baseline_toggle.value = bool(on)

    def _on_generator_change(self, change) -> None:
        try:
            m = self._methods[change["new"]]
            keep = {**self._all_defaults, **self.knob_values()}
            self.set_hidden_knobs(self._for_config(m, keep), self._hidden_for(change["new"]))
            if m.Config is self.method.Config:  # same knobs, other visible set: rebuild here
                self._build_knob_controls({k: v for k, v in keep.items() if k in self.knob_controls})
            self.set_method(m)
            # the pixel arm has no proximity term; keep the knob at 0 where it is shown
            if "proximity_weight" in self.knob_controls:
                self.knob_controls["proximity_weight"].value = 0.0
            self.baseline_toggle.disabled = change["new"] == "pixels"
            self._show_reconstruction()
        except Exception as e:  # noqa: BLE001 - shown in the widget
            self.show_error(e)

    def explain_kwargs(self) -> dict[str, Any]:
        return self._for_config(self.method, super().explain_kwargs())

    # ---------------------------------------------------------------- views
    def primary_controls(self) -> list[W.Widget]:
        return [self.generator_dropdown]

    def extra_controls(self) -> list[W.Widget]:
        return [self.baseline_toggle]

    def extra_views(self) -> list[W.Widget]:
        px = self.image_px()
        lay = W.Layout(width=f"{px[1]}px", height=f"{px[0]}px")
        blank = self.png(self.placeholder_image())
        self.rec_image = W.Image(value=blank, format="png", layout=lay)
        self.rec_label = W.HTML("", layout=W.Layout(width=f"{max(px[1], 140)}px"))
        self.rec_image.add_class("cfw-reconstruction")
        self.pixel_after = W.Image(value=blank, format="png", layout=lay)
        self.pixel_diff = W.Image(value=blank, format="png", layout=lay)
        self.pixel_label = W.HTML("", layout=W.Layout(width=f"{max(px[1], 140)}px"))
        self.pixel_after.add_class("cfw-pixel-after")

        def col(img, label):
            return W.VBox([img, label], layout=W.Layout(align_items="center", margin="0 6px 0 0"))

        self.rec_box = col(self.rec_image, self.rec_label)
        self.pixel_box = W.HBox([col(self.pixel_after, self.pixel_label),
                                 col(self.pixel_diff, W.HTML("pixels: x&prime; &minus; x"))])
        self.pixel_box.layout.display = "none"
        self.pixel_note = W.HTML("", layout=W.Layout(display="none", width="220px"))
        self.pixel_note.add_class("cfw-pixel-note")
        self.path_prob = LossView("p(target) along the path", width=270, shared=True)
        self.path_bpd = LossView("bits/dim along the path (flow)", width=270, shared=True)
        self.path_view = W.HTML(layout=W.Layout(min_height="120px"))
        self.path_view.add_class("cfw-path-curves")
        self._draw_path()
        self.manifold_view = W.HTML("", layout=W.Layout(width="auto", min_height="20px"))
        self.manifold_view.add_class("cfw-manifold-metrics")
        title = W.HTML("<div style='font-weight:600;margin:8px 0 2px 0;border-bottom:1px solid "
                       "#d0d7de'>Reconstruction g(g<sup>-1</sup>(x)) &middot; pixel baseline "
                       "&middot; along the path</div>")
        return [title, W.HBox([self.rec_box, self.pixel_box, self.pixel_note],
                              layout=W.Layout(align_items="flex-start")),
                self.path_view, self.manifold_view]

    def _show_reconstruction(self, result: CounterfactualResult | None = None) -> None:
        """g(g^-1(x)) of the current input: for a GAN a short inversion before a run (a
        preview) and the run's own inversion after it (``result.meta['x_rec']``)."""
        if not hasattr(self, "rec_image"):
            return
        m = self.method
        if not isinstance(m, DiffeomorphicCounterfactual):
            self.rec_box.layout.display = "none"
            return
        self.rec_box.layout.display = ""
        x = self.current_input()
        if result is not None and "x_rec" in result.meta:
            rec = result.meta["x_rec"][:1].detach().float().cpu()
            preview = False
        else:
            with torch.no_grad():
                xd = x.to(m.device)
                if m.kind == "gan":  # a short inversion: the preview only (the run does it fully)
                    z0, _ = m.generative_model.invert(xd, steps=50, tol=1e-2)
                else:
                    z0 = m.generative_model.encode(xd)
                rec = m.generative_model.decode(z0).clamp(0, 1).cpu()
            preview = m.kind == "gan"
        err = float((rec - x).pow(2).mean())
        self.rec_image.value = self.png(rec[0])
        what = "exact inverse" if m.kind == "flow" else ("encoder mean" if m.kind == "vae"
                                                         else "inversion (preview)" if preview
                                                         else "inversion (this run)")
        self.rec_label.value = (f"<span style='font-size:12px'>g(g<sup>-1</sup>(x)): {what}"
                                f"<br>MSE {fmt(err)}</span>")

    def show_input(self) -> None:
        super().show_input()
        if hasattr(self, "pixel_box"):
            self.pixel_box.layout.display = "none"
            self.pixel_note.layout.display = "none"
        try:
            self._show_reconstruction()
        except Exception as e:  # noqa: BLE001
            self.show_error(e)

    # ---------------------------------------------------------------- runs
    def execute(self, job: RunJob, callback: Callable) -> CounterfactualResult:
        self._live_path = {}
        res = super().execute(job, callback)
        self.pixel_result = None
        if self.pixel_baseline and isinstance(job.method, DiffeomorphicCounterfactual) and not res.stopped:
            kw = {k: v for k, v in job.overrides.items()
                  if k in ("steps", "lr", "confidence", "optimizer", "loss", "record_every")}
            self.pixel_result = self._methods["pixels"].explain(
                job.x, job.target, proximity_weight=0.0, generator=job.seed, **kw)
        return res

    def show_preview(self, step: int, state) -> None:
        super().show_preview(step, state)
        lp = state.extra.get("log_density") if isinstance(state.extra, dict) else None
        self._live_path.setdefault("step", []).append(step)
        self._live_path.setdefault("p(target)", []).append(float(state.target_prob[0]))
        if lp is not None and self.flow is not None:
            d = self.flow.dims * 0.6931471805599453
            self._live_path.setdefault("bits/dim", []).append(float(-lp[0] / d + 8.0))
        xs = self._live_path["step"]
        self.path_prob.show({"p(target)": self._live_path["p(target)"]}, xs)
        bpd = self._live_path.get("bits/dim", [])
        self.path_bpd.show({self.generator: bpd} if bpd else {}, xs)
        self._draw_path()

    def render_extra(self, result: CounterfactualResult) -> None:
        meta = result.meta
        steps = list(result.trajectory_steps)
        prob = {"p(target)": meta["path_target_prob"][0].tolist()} if "path_target_prob" in meta else {}
        bpd: dict[str, list] = {}
        if "path_bpd" in meta:
            bpd[self.generator] = meta["path_bpd"][0].tolist()
        px = self.pixel_result
        if px is not None and px.trajectory is not None and self.flow is not None:
            with torch.no_grad():
                dev = next(self.flow.parameters()).device
                traj = px.trajectory[:, 0].to(dev)
                pix = self.flow.bits_per_dim(traj).cpu().tolist()
            bpd["pixels"] = pix  # on its own snapshot steps (it may stop earlier or later)
        xs = {"p(target)": steps, self.generator: steps,
              "pixels": list(px.trajectory_steps) if px is not None else []}
        self.path_prob.show(prob, xs, steps[-1] if steps else None)
        self.path_bpd.show(bpd, xs, steps[-1] if steps else None)
        self._draw_path()
        self._show_reconstruction(result)
        x = result.x[:1]
        self.pixel_note.layout.display = "none"
        if px is not None:
            self.pixel_box.layout.display = ""
            vmax = vh.diff_range((x, px.x_cf[:1]))
            self.pixel_after.value = self.png(px.x_cf[0])
            self.pixel_diff.value = self.png(vh.diff_rgb(x[0], px.x_cf[0], vmax))
            k = int(px.pred_cf[0])
            self.pixel_label.value = (
                f"<span style='font-size:12px'>pixels: predicted <b>{html.escape(self.class_names[k])}"
                f"</b> {fmt(float(px.probs_cf[0, k]), '%')}{self._oracle_text(px)}</span>")
        else:
            self.pixel_box.layout.display = "none"
            if self.pixel_baseline and isinstance(self.method, DiffeomorphicCounterfactual):
                self.pixel_note.value = ("<div style='font-size:12px;color:#7d4e00;padding:4px'>"
                                         "pixel baseline: not run, because this run was stopped "
                                         "(press Run again for both)</div>")
                self.pixel_note.layout.display = ""
        self.manifold_view.value = self._manifold_line(result, px)

    def on_scrub_extra(self, i: int, result: CounterfactualResult) -> None:
        step = self._scrub_step(i, result)
        self.path_prob.mark(step)
        self.path_bpd.mark(step)
        self._draw_path()

    def _draw_path(self) -> None:
        """Both path charts side by side in ``path_view`` (one HTML update)."""
        self.path_view.value = (f"<div style='display:flex;gap:12px'>{self.path_prob.widget.value}"
                                f"{self.path_bpd.widget.value}</div>")

    def _oracle_text(self, res: CounterfactualResult) -> str:
        if self.oracle is None:
            return ""
        k = int(oracle_prediction(res[:1], self.oracle)[0])
        ok = k == int(res.target[0])
        return (f"<br>oracle says <span class='{'cfw-ok' if ok else 'cfw-bad'}'>"
                f"{html.escape(self.class_names[k])}</span>")

    def _manifold_line(self, res: CounterfactualResult, px: CounterfactualResult | None) -> str:
        from ..metrics.manifold import bits_per_dim_cf, bits_per_dim_query, tangent_fraction

        parts = []
        rows = [(self.generator, res)] + ([("pixels", px)] if px is not None else [])
        for name, r in rows:
            bits = []
            if self.flow is not None:
                b0, b1 = float(bits_per_dim_query(r, self.flow)[0]), float(bits_per_dim_cf(r, self.flow)[0])
                bits.append(f"bits/dim <b>{fmt(b0)} &rarr; {fmt(b1)}</b>")
            if self.vae is not None:
                bits.append(f"tangent fraction <b>{fmt(float(tangent_fraction(r, self.vae)[0]), '%')}</b>")
            if self.oracle is not None:
                ok = bool(oracle_agreement(r[:1], self.oracle)[0])
                bits.append(f"oracle <span class='{'cfw-ok' if ok else 'cfw-bad'}'>"
                            f"{'agrees' if ok else 'disagrees'}</span>")
            if bits:
                parts.append(f"<b>{html.escape(name)}</b>: " + " &middot; ".join(bits))
        return "<div style='font-size:12px'>" + "<br>".join(parts) + "</div>" if parts else ""

    def clear_result(self) -> None:
        super().clear_result()
        self.pixel_result = None
        if hasattr(self, "pixel_box"):
            self.pixel_box.layout.display = "none"
            self.pixel_note.layout.display = "none"
            self.path_prob.show({})
            self.path_bpd.show({})
            self._draw_path()
            self.manifold_view.value = ""

    def static_html(self) -> str:
        out = super().static_html()
        if self.result is not None and hasattr(self, "manifold_view"):
            out += self.manifold_view.value
            if self.pixel_result is not None:
                out += "<p><b>Pixel baseline</b></p>" + vh.result_html(self.pixel_result)
        return out

"""``AttributionWidget``: one-vs-one attributions ("why c and not t?") with a row of
baselines, the GANMEX counterfactual baseline itself, and the perturbation curves.

Built on :class:`~cfwidgets.widgets.CounterfactualWidget` like its siblings: the input
picker, the target class (every class but the predicted one), Run / Stop with a progress
bar and a status line, errors in the widget's error box, and the standard views showing
the GANMEX counterfactual ``G(x, t)``: before | after (= the baseline) | difference,
probability bars, and the path slider over the straight path ``x -> G(x, t)`` that
Integrated Gradients integrates along (knob ``steps``: points on that path). What this
widget adds:

- controls: the attribution method, Integrated Gradients' steps, and the baselines to
  compare (checkboxes);
- a **row of maps** on *one* symmetric colour scale (red: the pixel argues for ``c`` over
  ``t``; blue: for ``t``), each under the baseline image it was computed against;
- the **deletion curves** of the chosen baselines (the top pixels of ``x`` replaced by the
  baseline's pixels): ``p_t`` solid (its area in the legend), ``p_c`` dashed.

A run computes the GANMEX path first, then one baseline after another; the progress bar
counts the baselines and Stop keeps the maps finished so far (the result is marked
stopped). ``widget.run(block=True)`` runs synchronously and returns the GANMEX result;
``widget.maps``, ``widget.baselines``, ``widget.curves`` hold what the views show, so tests
and notebooks can assert it.

Examples::

    from cfwidgets import data
    from cfwidgets.methods.ganmex import GANMEX
    from cfwidgets.widgets.attribution import AttributionWidget
    g = GANMEX.from_zoo("mnist")
    w = AttributionWidget(g, data.load_mnist("test"), index=30, target=8)
    w                                  # or, in a script:
    w.run(block=True); w.maps["ganmex"].shape
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W
import torch
from torch import Tensor

from ..attribution import ATTRIBUTION_METHODS, BASELINES, attribute, perturbation_curves
from ..protocols import StepState
from ..result import CounterfactualResult
from .base import CounterfactualWidget
from .controls import CONTROL_WIDTH, DESCRIPTION_WIDTH
from .runner import RunJob

__all__ = ["AttributionWidget"]

#: points on each perturbation curve (k = 0, 1/CURVE_STEPS, ..., 1)
CURVE_STEPS = 20


@dataclasses.dataclass
class AttributionJob(RunJob):
    """A :class:`RunJob` plus the attribution settings, read on the caller's thread."""

    baselines: tuple[str, ...] = ()
    attribution_method: str = "integrated_gradients"
    n_steps: int = 32


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _show(view: W.Image, png: bytes) -> None:
    """Show ``png`` in ``view``; an empty one hides the view (no broken-image icon)."""
    view.value = png
    view.layout.display = None if png else "none"


class AttributionWidget(CounterfactualWidget):
    """Baselines side by side for one input and one target class.

    Args:
        ganmex: a :class:`~cfwidgets.methods.ganmex.GANMEX` method (its classifier is
            explained; its translator gives the GANMEX baseline).
        dataset: an ``ImageDataset`` (or an ``(N, C, H, W)`` tensor) to pick inputs from.
        index: the initial input (a row of ``dataset``).
        target: the initial target class (default: the runner-up).
        baselines: the baselines compared at first.
        method: the attribution method at first.
        n_steps: Integrated Gradients' steps at first.
        data: training images and labels for the ``train_mean`` / ``mdts`` / ``eg``
            baselines (a zoo classifier finds its own).
        kwargs: passed to :class:`CounterfactualWidget` (``defaults``, ``oracle``,
            ``autoencoders``, ``title``, ``app``, ...).
    """

    #: IG steps slider range
    max_ig_steps = 256

    def __init__(self, ganmex, dataset: Any = None, *, index: int = 0, target: int | str | None = None,
                 baselines: Sequence[str] = ("ganmex", "zero", "blur", "mdts"),
                 method: str = "integrated_gradients", n_steps: int = 32, data: Any = None,
                 **kwargs: Any) -> None:
        from ..methods.ganmex import GANMEX

        if not isinstance(ganmex, GANMEX):
            raise TypeError(f"ganmex must be a GANMEX method (GANMEX.from_zoo('mnist')), got "
                            f"{type(ganmex).__name__}.")
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {list(BASELINES)}.")
        if method not in ATTRIBUTION_METHODS:
            raise ValueError(f"unknown attribution method {method!r}; choose from "
                             f"{list(ATTRIBUTION_METHODS)}.")
        if not isinstance(n_steps, int) or not 2 <= n_steps <= self.max_ig_steps:
            raise ValueError(f"n_steps must be an int in [2, {self.max_ig_steps}], got {n_steps!r}.")
        self.train_data = data
        self.maps: dict[str, Tensor] = {}  #: baseline -> (C, H, W) map of the last run
        self.baselines: dict[str, Tensor] = {}  #: baseline -> (R, C, H, W) its image(s)
        self.curves: dict[str, dict[str, Tensor]] = {}  #: baseline -> deletion curves
        # the widget's own controls exist before the base builds its layout
        style = {"description_width": DESCRIPTION_WIDTH}
        self.method_w = W.Dropdown(options=list(ATTRIBUTION_METHODS), value=method,
                                   description="attribution", style=style,
                                   tooltip="Captum's attribution method; the baseline is its "
                                   "reference input", layout=W.Layout(width=CONTROL_WIDTH))
        self.steps_w = W.IntSlider(value=int(n_steps), min=2, max=self.max_ig_steps,
                                   description="IG steps", continuous_update=False, style=style,
                                   tooltip="Integrated Gradients' steps along x -> baseline",
                                   layout=W.Layout(width=CONTROL_WIDTH))
        self.baseline_ws = {b: W.Checkbox(value=b in baselines, description=b, indent=False,
                                          layout=W.Layout(width="108px")) for b in BASELINES}
        for b, box in self.baseline_ws.items():
            box.add_class(f"cfw-baseline-{b}")
        self.method_w.add_class("cfw-attribution-method")
        kwargs.setdefault("defaults", {"steps": 16})
        kwargs.setdefault("title", "GANMEX: why this class and not the target?")
        super().__init__(ganmex, dataset, index=index, target=target, **kwargs)

    # ---------------------------------------------------------- old names
    ganmex = property(lambda self: self.method, doc="the GANMEX method explained")
    classifier = property(lambda self: self.method.classifier)
    index_w = property(lambda self: self.index_slider)
    target_w = property(lambda self: self.target_dropdown)
    run_w = property(lambda self: self.run_button)
    box = property(lambda self: self, doc="the widget itself (it is a VBox)")
    data = property(lambda self: self.train_data)

    @property
    def x(self) -> Tensor:
        """The current input, ``(1, C, H, W)``."""
        return self.current_input()

    @property
    def source(self) -> int:
        """The class the classifier predicts for the input (``c``)."""
        return int(self._probs_before.argmax())

    @property
    def chosen(self) -> list[str]:
        return [b for b, w in self.baseline_ws.items() if w.value]

    @property
    def vmax(self) -> float:
        """The one colour scale of the row of maps: the largest |attribution| among them."""
        return max(float(m.sum(0).abs().max()) for m in self.maps.values()) if self.maps else 1.0

    # ----------------------------------------------------------- controls
    def extra_controls(self) -> list[W.Widget]:
        head = W.HTML("<div style='font-size:12px;margin-top:4px'>baselines to compare</div>")
        grid = W.HBox(list(self.baseline_ws.values()),
                      layout=W.Layout(flex_flow="row wrap", width=CONTROL_WIDTH))
        grid.add_class("cfw-baselines")
        return [self.method_w, self.steps_w, head, grid]

    def _set_running_ui(self, running: bool) -> None:
        super()._set_running_ui(running)
        for w in self.baseline_ws.values():
            w.disabled = running

    # -------------------------------------------------------------- views
    def extra_views(self) -> list[W.Widget]:
        def title(text):
            return W.HTML(f"<div style='font-weight:600;margin:8px 0 2px 0;border-bottom:1px "
                          f"solid #d0d7de'>{text}</div>")

        self.summary = W.HTML("", layout=W.Layout(min_height="18px"))
        self.summary.add_class("cfw-attribution-summary")
        self.maps_view = W.Image(format="png", layout=W.Layout(max_width="100%", display="none"))
        self.maps_view.add_class("cfw-attribution-maps")
        self.curves_view = W.Image(format="png", layout=W.Layout(max_width="100%", display="none"))
        self.curves_view.add_class("cfw-attribution-curves")
        return [title("Attribution maps: each baseline above, its map of f<sub>c</sub> &minus; "
                      "f<sub>t</sub> below (one colour scale)"),
                self.summary, self.maps_view,
                title("Deletion curves: top pixels of x replaced by the baseline's"),
                self.curves_view]

    # ---------------------------------------------------------------- run
    def make_job(self) -> AttributionJob:
        chosen = tuple(self.chosen)
        if not chosen:
            raise ValueError("choose at least one baseline to compare (the checkboxes under "
                             "'baselines to compare').")
        job = super().make_job()
        fields = {f.name: getattr(job, f.name) for f in dataclasses.fields(RunJob)}
        return AttributionJob(**fields, baselines=chosen, attribution_method=str(self.method_w.value),
                              n_steps=int(self.steps_w.value))

    def execute(self, job: RunJob, callback: Callable[[int, StepState], bool]) -> CounterfactualResult:
        """The GANMEX path (the base run, with progress and Stop), then one attribution and
        its deletion curves per chosen baseline, kept in ``result.meta["attribution"]``."""
        res = super().execute(job, callback)
        if res.stopped or not isinstance(job, AttributionJob):
            return res
        m = job.method
        x = res.x.to(m.device)
        c = torch.tensor([int(res.probs[0].argmax())], device=x.device)
        t = torch.tensor([int(res.target[0])], device=x.device)
        maps, bases, curves = {}, {}, {}
        n = len(job.baselines)
        runner = self.runner
        with self.progress.hold_sync():
            self.progress.max, self.progress.value = n, 0
        t0 = time.perf_counter()
        stopped = False
        for i, b in enumerate(job.baselines):
            if runner.stop_requested:
                stopped = True
                break
            runner.set_status(f"attribution {i + 1}/{n}: {html.escape(b)} baseline")
            a, base = attribute(m.classifier, x, t, baseline=b, method=job.attribution_method,
                                translator=m, source=c, n_steps=job.n_steps, data=self.train_data,
                                generator=job.seed, return_baseline=True)
            cur = perturbation_curves(m.classifier, x, a, base, t, c, steps=CURVE_STEPS)
            maps[b], bases[b] = a[0].cpu(), base[0].cpu()
            curves[b] = {k: v.cpu() for k, v in cur.items()}
            self.progress.value = i + 1
        info = {"maps": maps, "baselines": bases, "curves": curves, "method": job.attribution_method,
                "n_steps": job.n_steps, "seconds": time.perf_counter() - t0, "requested": job.baselines}
        return dataclasses.replace(res, stopped=res.stopped or stopped,
                                   meta={**res.meta, "attribution": info})

    # ------------------------------------------------------------ results
    def render_extra(self, result: CounterfactualResult) -> None:
        info = result.meta.get("attribution")
        if not info:
            self.maps, self.baselines, self.curves = {}, {}, {}
            _show(self.maps_view, b"")
            _show(self.curves_view, b"")
            self.summary.value = ("<span style='font-size:12px'>no attribution maps for this "
                                  "result yet: press Run to compute them.</span>")
            return
        self.maps, self.baselines, self.curves = info["maps"], info["baselines"], info["curves"]
        c, t = int(result.probs[0].argmax()), int(result.target[0])
        names = self.class_names
        done = len(self.maps)
        missing = [b for b in info["requested"] if b not in self.maps]
        note = (f" &middot; <span class='cfw-stopped'>stopped: {html.escape(', '.join(missing))} not "
                f"computed</span>") if missing else ""
        self.summary.value = (
            f"<span style='font-size:12px'>why <b>{html.escape(names[c])}</b> and not "
            f"<b>{html.escape(names[t])}</b>: {html.escape(info['method'])}, {done} baseline"
            f"{'s' if done != 1 else ''} in {info['seconds']:.2f} s{note}</span>")
        if not self.maps:
            _show(self.maps_view, b"")
            _show(self.curves_view, b"")
            return
        _show(self.maps_view, self.maps_png(c, t))
        _show(self.curves_view, self.curves_png(t))

    def maps_png(self, c: int, t: int) -> bytes:
        """The figure of the maps row: the input and each baseline's image on top, each map
        under its baseline, all maps on one symmetric colour scale."""
        from matplotlib.figure import Figure

        n = len(self.maps) + 1
        fig = Figure(figsize=(1.5 * n + 0.6, 3.3))
        axes = fig.subplots(2, n, squeeze=False)
        names = self.class_names
        x = self.x[0].sum(0).numpy() if self.x.shape[1] == 1 else self.x[0].permute(1, 2, 0).numpy()
        axes[0, 0].imshow(x, cmap="gray", vmin=0, vmax=1)
        axes[0, 0].set_title(f"x: {names[c]}", fontsize=8)
        axes[1, 0].axis("off")
        axes[1, 0].text(0.5, 0.5, f"red: for {names[c]}\nblue: for {names[t]}", ha="center",
                        va="center", fontsize=8, transform=axes[1, 0].transAxes)
        vmax = self.vmax or 1.0
        im = None
        for k, (b, m) in enumerate(self.maps.items(), start=1):
            img = self.baselines[b].mean(0)  # the mean reference for eg
            img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
            axes[0, k].imshow(img.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            label = f"G(x, {names[t]})" if b == "ganmex" else b
            axes[0, k].set_title(label, fontsize=8)
            im = axes[1, k].imshow(m.sum(0).numpy(), cmap="bwr", vmin=-vmax, vmax=vmax)
            axes[1, k].set_title(f"map: {b}", fontsize=8)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        if im is not None:
            fig.colorbar(im, ax=list(axes[1, 1:]), fraction=0.03, pad=0.02)
        return _png(fig)

    def curves_png(self, t: int) -> bytes:
        """The deletion curves of the chosen baselines: ``p_t`` solid, ``p_c`` dashed."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5.0, 2.6))
        ax = fig.subplots()
        for k, (b, cur) in enumerate(self.curves.items()):
            col = f"C{k % 10}"
            ax.plot(cur["fractions"], cur["p_target"][0], color=col,
                    label=f"{b}: AUC p(t) {float(cur['auc_target'][0]):.2f}")
            ax.plot(cur["fractions"], cur["p_source"][0], color=col, ls="--", lw=0.9)
        ax.set_xlabel("share of top pixels replaced by the baseline's", fontsize=8)
        ax.set_ylabel(f"p({self.class_names[t]}) solid, p(c) dashed", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        return _png(fig)

    def clear_result(self) -> None:
        super().clear_result()
        if hasattr(self, "maps_view"):
            self.maps, self.baselines, self.curves = {}, {}, {}
            _show(self.maps_view, b"")
            _show(self.curves_view, b"")
            self.summary.value = ""

    def static_html(self) -> str:
        out = super().static_html()
        if self.result is not None and self.maps:
            for png in (self.maps_view.value, self.curves_view.value):
                out += f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        return out

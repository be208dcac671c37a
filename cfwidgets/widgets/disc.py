"""``DISCWidget``: counterfactuals by deep model inversion (Thiagarajan et al., NeurIPS
2021), from the classifier alone.

Built on :class:`~cfwidgets.widgets.CounterfactualWidget` (input picker, target, Run/Stop
with progress, live preview, before | after | difference, probability bars, path slider,
loss curves). DISC is the slowest method, so the live preview and Stop matter most. What
this widget adds:

- the terms of the objective as sliders in the first panel (class, BatchNorm statistics,
  total variation, manifold consistency, proximity), the prior dropdown (pixels / DIP /
  INR) and the progressive schedule on/off; the rest under "Advanced";
- the current **stage** in the live preview's caption (fit, stage k, final);
- the **stages** as a strip of frames (the image at the end of each stage) and as frames
  of the path slider (its caption names the stage a frame ends);
- a line saying which manifold term was used (the classifier's DUQ certainty, or the
  energy stand-in for a plain softmax CNN).

Examples::

    from cfwidgets import data
    from cfwidgets.widgets import DISCWidget
    w = DISCWidget.from_zoo("mnist", data.load_mnist("test"))
    w                                    # in a notebook; or from code:
    w.set_knobs(prior="dip", progressive=False)
    res = w.run(block=True); res.meta["stage_names"]
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from ..methods.disc import DISC
from ..protocols import StepState
from ..result import CounterfactualResult
from .base import CounterfactualWidget

__all__ = ["DISCWidget"]


class DISCWidget(CounterfactualWidget):
    """Explore DISC counterfactuals: switch the terms of the objective on and off, pick
    the image prior, watch the stages of the progressive schedule.

    Args:
        classifier: the model to explain; it must have BatchNorm layers (a DUQ model such
            as ``zoo.load("mnist/duq")`` gives the paper's manifold term). Or a
            :class:`~cfwidgets.methods.disc.DISC` instance.
        data: inputs (an ``ImageDataset`` or images).
        uncertainty: optional DUQ model for the manifold term (see :class:`DISC`).
        kwargs: passed to :class:`CounterfactualWidget` (``defaults``, ``oracle``,
            ``autoencoders``, ``preview_every``, ...).
    """

    primary_knobs = ("steps", "prior", "progressive", "w_cls", "a_bn", "a_tv", "w_mc", "w_prox")

    def __init__(self, classifier: Any, data: Any = None, *, uncertainty: Any = None, **kwargs: Any) -> None:
        method = classifier if isinstance(classifier, DISC) else DISC(classifier, uncertainty)
        kwargs.setdefault("preview_every", 5)
        self._stage = ""
        super().__init__(method, data, **kwargs)

    @classmethod
    def from_zoo(cls, dataset: str = "mnist", data: Any = None, *, device="cpu", **kwargs: Any) -> DISCWidget:
        """The zoo's DUQ classifier (``mnist/duq``), with ``mnist/oracle`` and ``mnist/ae``
        as independent judges for the metrics line; ``data`` defaults to the test split."""
        from .. import zoo
        from ..data import load_dataset

        kwargs.setdefault("oracle", zoo.load(f"{dataset}/oracle", device=device))
        kwargs.setdefault("autoencoders", zoo.load(f"{dataset}/ae", device=device))
        if data is None:
            data = load_dataset(dataset, "test")
        return cls(DISC.from_zoo(dataset, device=device), data, **kwargs)

    # ---------------------------------------------------------------- views
    def extra_views(self) -> list[W.Widget]:
        self.stage_strip = W.HTML("", layout=W.Layout(min_height="20px"))
        self.stage_strip.add_class("cfw-disc-stages")
        self.term_line = W.HTML("", layout=W.Layout(min_height="16px"))
        self.term_line.add_class("cfw-disc-terms")
        title = W.HTML("<div style='font-weight:600;margin:8px 0 2px 0;border-bottom:1px solid "
                       "#d0d7de'>Stages of the search</div>")
        return [title, self.stage_strip, self.term_line]

    def show_preview(self, step: int, state: StepState) -> None:
        super().show_preview(step, state)
        stage = state.extra.get("stage", "") if isinstance(state.extra, dict) else ""
        if stage != self._stage:
            self._stage = stage
            self._set_status(f"running: {stage}", "info")

    def stage_frames_html(self, result: CounterfactualResult) -> str:
        """The image at the end of each stage of ``result`` (its first row), captioned."""
        frames = result.meta.get("stage_frames")
        names = result.meta.get("stage_names", [])
        steps = result.meta.get("stage_steps", [])
        if frames is None:
            return ""
        import base64

        cells = []
        for frame, name, at in zip(frames, names, steps, strict=False):
            png = base64.b64encode(self.png(frame[0])).decode()
            p = self.predict_probs(frame[:1])[0]
            t = int(result.target[0])
            cells.append(
                f"<div style='text-align:center;margin-right:6px;font-size:11px'>"
                f"<img src='data:image/png;base64,{png}' width='70' height='70' "
                f"style='image-rendering:pixelated'><br>{html.escape(str(name))}<br>step {int(at)} &middot; "
                f"p(target) {float(p[t]):.2f}</div>")
        return "<div style='display:flex;flex-wrap:wrap'>" + "".join(cells) + "</div>"

    def render_extra(self, result: CounterfactualResult) -> None:
        self._stage = ""
        self.stage_strip.value = self.stage_frames_html(result)
        term = result.meta.get("manifold_term", "")
        self.term_line.value = (f"<span style='font-size:12px'>prior <b>{html.escape(str(result.meta.get('prior')))}"
                                f"</b> &middot; manifold term: <b>{html.escape(str(term))}</b></span>")

    def _trajectory_caption(self, i: int, result: CounterfactualResult) -> None:
        super()._trajectory_caption(i, result)
        steps = list(result.trajectory_steps)
        ends = dict(zip(result.meta.get("stage_steps", []), result.meta.get("stage_names", []), strict=False))
        if i < len(steps) and steps[i] in ends and hasattr(self.path, "label"):
            self.path.label.value = f"{self.path.label.value} &middot; end of {html.escape(ends[steps[i]])}"

    def clear_result(self) -> None:
        super().clear_result()
        if hasattr(self, "stage_strip"):
            self.stage_strip.value = ""
            self.term_line.value = ""

    def static_html(self) -> str:
        out = super().static_html()
        if self.result is not None and hasattr(self, "stage_strip"):
            out += self.stage_strip.value + self.term_line.value
        return out

"""The view parts of the widgets: images (before | after | difference + colour bar),
class probabilities, the path (a scrub slider with a frame cache), the loss curve, the
metrics line and the header. Each part holds its ipywidgets and a ``show...`` method
that takes plain values (tensors, names, numbers), so a widget composes the parts it
needs and decides what to show; none of them runs anything.

Examples::

    imgs = ImageViews((28, 28), scale=5)
    imgs.show_before(x[0], "before")
    imgs.show_after(x[0], x_cf[0], pred_caption(probs, names, target, "after"))
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as W
import numpy as np
from torch import Tensor

from ..viz import html as vh

__all__ = ["ImageViews", "ProbsView", "LossView", "PathView", "MetricsView", "header_html",
           "pred_caption", "fmt"]

fmt = vh.fmt


def header_html(title: str, paper: str | None = None, intro: str | None = None) -> str:
    """The widget's header: the method's title, its paper (small, grey) and, in app mode,
    one line for the person using it."""
    out = f"<div style='font-size:15px;font-weight:600;line-height:1.3'>{html.escape(title)}</div>"
    if paper:
        out += (f"<div class='cfw-paper' style='font-size:11px;color:#57606a;line-height:1.3'>"
                f"{html.escape(paper)}</div>")
    if intro:
        out += f"<div class='cfw-intro' style='font-size:13px;margin:2px 0 4px 0'>{html.escape(intro)}</div>"
    return out


def pred_caption(probs: Tensor | None, names: Sequence[str], target: int | None, role: str,
                 extra: str = "", *, br: bool = True, show_role: bool = True) -> str:
    """``role`` (+ ``extra``), the predicted class (``cfw-pred``, ``data-class``; green when
    it is the target, red otherwise, after a run) and, when the prediction is not the
    target, p(target): the numbers every view of the widget shows the same way."""
    if probs is None:
        return f"{role}{html.escape(extra)}"
    k = int(probs.argmax())
    name = html.escape(names[k] if k < len(names) else str(k))
    ok = ""
    if role == "after" and target is not None:
        ok = " cfw-ok" if k == target else " cfw-bad"
    tp = ""
    if target is not None and k != target and 0 <= target < len(probs):
        tn = html.escape(names[target] if target < len(names) else str(target))
        tp = (f" <span style='color:#57606a' title='probability of the target class, {tn}'>"
              f"&middot; p(target) {fmt(float(probs[target]), '%')}</span>")
    sep = "<br>" if br else " "
    head = f"{role}{html.escape(extra)}{sep}" if show_role else ""
    body = (f"{head}<span class='cfw-pred{ok}' data-class='{k}'>predicted "
            f"<b>{name}</b></span> <span style='color:#57606a'>{fmt(float(probs[k]), '%')}</span>{tp}")
    return f"<div style='font-size:12px;line-height:1.35'>{body}</div>" if br else body


def _col(img: W.Widget, label: W.Widget) -> W.VBox:
    return W.VBox([img, label], layout=W.Layout(align_items="center", margin="0 6px 0 0"))


class ImageViews:
    """before | after | difference (``x' - x``, red = added, blue = removed) with a colour
    bar whose range snaps to :data:`cfwidgets.viz.html.DIFF_RANGES`.

    Attributes: ``before_image``, ``after_image``, ``diff_image`` (``W.Image``),
    ``before_label``, ``after_label``, ``diff_label``, ``colorbar_text`` (``W.HTML``),
    ``box`` (the row), ``vmax`` (the colour bar's range).
    """

    def __init__(self, hw: tuple[int, int], scale: int) -> None:
        self.hw = hw
        self.scale = scale
        h, w = self.px
        lay = lambda: W.Layout(width=f"{w}px", height=f"{h}px")  # noqa: E731
        cap = lambda: W.Layout(width=f"{max(w, 130)}px")  # noqa: E731
        blank = self.png(self.placeholder())
        self.before_image = W.Image(value=blank, format="png", layout=lay())
        self.after_image = W.Image(value=blank, format="png", layout=lay())
        self.diff_image = W.Image(value=self.png(np.full(hw + (3,), 0.97, np.float32)),
                                  format="png", layout=lay())
        for img, cls in ((self.before_image, "cfw-before"), (self.after_image, "cfw-after"),
                         (self.diff_image, "cfw-diff")):
            img.add_class(cls)
        self.before_label = W.HTML("before", layout=cap())
        self.after_label = W.HTML("after: press Run", layout=cap())
        self.diff_label = W.HTML("difference x&prime; &minus; x", layout=cap())
        self.before_label.add_class("cfw-before-label")
        self.after_label.add_class("cfw-after-label")
        bar = W.Image(value=vh.colorbar_png(height=h, width=12), format="png",
                      layout=W.Layout(width="12px", height=f"{h}px"))
        self.colorbar_text = W.HTML()
        self.colorbar = W.HBox([bar, self.colorbar_text],
                               layout=W.Layout(align_items="flex-start", margin="0 0 0 4px"))
        self.set_diff_range(1.0)
        self.box = W.HBox([_col(self.before_image, self.before_label),
                           _col(self.after_image, self.after_label),
                           _col(self.diff_image, self.diff_label), self.colorbar],
                          layout=W.Layout(align_items="flex-start"))
        self.box.add_class("cfw-images")

    @property
    def px(self) -> tuple[int, int]:
        """Height and width on screen, in pixels."""
        return self.hw[0] * self.scale, self.hw[1] * self.scale

    def png(self, img: Any) -> bytes:
        return vh.png_bytes(img, self.scale, fast=True)

    def placeholder(self) -> np.ndarray:
        """An input-sized, faintly dotted grey image: "nothing here yet"."""
        a = np.full(self.hw, 0.93, dtype=np.float32)
        a[::4, ::4] = 0.85
        return a

    def set_diff_range(self, vmax: float) -> None:
        self.vmax = float(vmax)
        h = self.px[0]
        self.colorbar_text.value = (
            f"<div style='height:{h}px;display:flex;flex-direction:column;"
            f"justify-content:space-between;font-size:11px;color:#57606a;line-height:1.1'>"
            f"<span>+{vmax:g}<br>added</span><span>0</span><span>removed<br>&minus;{vmax:g}"
            f"</span></div>")

    def show_before(self, x: Tensor, caption: str) -> None:
        self.before_image.value = self.png(x)
        self.before_label.value = caption

    def show_after(self, x: Tensor, x_cf: Tensor | None, caption: str = "after: press Run", *,
                   diff_range: float | None = None, pngs: tuple[bytes, bytes] | None = None) -> None:
        """Show ``x_cf`` and ``x_cf - x`` (``None``: the placeholder). ``diff_range``: the
        colour bar's range (default: keep it, growing it to hold this difference).
        ``pngs``: the already encoded (after, difference) pair (a scrub cache)."""
        if x_cf is None:
            self.after_image.value = self.png(self.placeholder())
            self.diff_image.value = self.png(vh.diff_rgb(x, x))
            self.after_label.value = caption
            return
        if diff_range is None:
            diff_range = max(self.vmax, vh.diff_range((x, x_cf)))
        if diff_range != self.vmax:
            self.set_diff_range(diff_range)
        after, diff = pngs if pngs is not None else self.encode(x, x_cf)
        self.after_image.value = after
        self.diff_image.value = diff
        self.after_label.value = caption

    def encode(self, x: Tensor, x_cf: Tensor) -> tuple[bytes, bytes]:
        """PNG bytes of ``x_cf`` and of its difference map at the current range."""
        return self.png(x_cf), self.png(vh.diff_rgb(x, x_cf, self.vmax))


class ProbsView:
    """Class-probability bars before (grey) and after (blue; the target red)."""

    def __init__(self, min_height: str = "150px") -> None:
        self.widget = W.HTML(vh.prob_bars_html(None, None, None),
                             layout=W.Layout(width="280px", min_height=min_height))
        self.widget.add_class("cfw-probs-view")

    def show(self, before: Tensor | None, after: Tensor | None, target: int | None,
             names: Sequence[str]) -> None:
        self.widget.value = vh.prob_bars_html(before, after, target, names, width=80)


class LossView:
    """The loss curve against the step (``xs``), with a marker at the scrubbed step."""

    def __init__(self, title: str = "loss", width: int = 270, shared: bool = False,
                 height: str = "120px") -> None:
        self.title, self.width, self.shared = title, width, shared
        self._last: tuple[Mapping, Sequence | None] = ({}, None)
        self.widget = W.HTML(vh.loss_svg({}, title=title, width=width),
                             layout=W.Layout(width=f"{width + 4}px", height=height))
        self.widget.add_class("cfw-loss-view")

    def show(self, losses: Mapping[str, Sequence[float]], xs: Sequence[float] | None = None,
             marker: float | None = None) -> None:
        self._last = (losses, xs)
        self.widget.value = vh.loss_svg(losses, title=self.title, width=self.width, xs=xs,
                                        marker=marker, shared=self.shared)

    def mark(self, x: float | None) -> None:
        """Move the marker to ``x`` (same curves)."""
        losses, xs = self._last
        if losses:
            self.show(losses, xs, x)


class PathView:
    """The path slider over a result's snapshots, a caption and a cache of what each
    snapshot shows (filled lazily by the widget's scrub handler with :meth:`cached`).

    ``on_scrub(i)`` is called with the snapshot index when the user moves the slider
    (not when the widget sets it)."""

    def __init__(self, on_scrub: Callable[[int], None], tooltip: str) -> None:
        self._quiet = False
        self._on_scrub = on_scrub
        self.cache: dict[int, Any] = {}
        self.slider = W.IntSlider(
            value=0, min=0, max=0, description="path", disabled=True, continuous_update=True,
            readout=False, tooltip=tooltip,
            style={"description_width": "40px"}, layout=W.Layout(width="330px"))
        self.slider.add_class("cfw-path")
        self.label = W.HTML("", layout=W.Layout(width="190px"))
        self.label.add_class("cfw-path-label")
        self.slider.observe(self._changed, names=["value"])
        self.box = W.HBox([self.slider, self.label], layout=W.Layout(align_items="center"))

    @property
    def quiet(self) -> bool:
        return self._quiet

    def _changed(self, change) -> None:
        if not self._quiet:
            self._on_scrub(int(change["new"]))

    def set_length(self, n: int) -> None:
        """``n`` snapshots, the handle on the last one; the cache is emptied."""
        self.cache = {}
        # two messages, max first: in one message a front end may clamp the new value to
        # the old max and show the handle at the start while the model says "last"
        self._quiet = True
        try:
            if n - 1 < self.slider.value:
                self.slider.value = max(0, n - 1)
            self.slider.max = max(0, n - 1)
            self.slider.value = max(0, n - 1)
        finally:
            self._quiet = False
        self.slider.disabled = n <= 1

    def clear(self) -> None:
        self.cache = {}
        self._quiet = True
        try:
            self.slider.value = 0  # value first, then max
            self.slider.max = 0
        finally:
            self._quiet = False
        self.slider.disabled = True
        self.label.value = ""

    def cached(self, i: int, make: Callable[[], Any]) -> Any:
        if i not in self.cache:
            self.cache[i] = make()
        return self.cache[i]

    def caption(self, i: int, steps: Sequence[int]) -> None:
        """"snapshot i+1/N · step s" on one line."""
        if not steps or i < 0:
            self.label.value = ""
            return
        self.label.value = (f"<span style='font-size:12px;white-space:nowrap'>snapshot {i + 1}/"
                            f"{len(steps)} &middot; step {steps[min(i, len(steps) - 1)]}</span>")


class MetricsView:
    """One line of metrics (``render(row, stopped=...) -> HTML``)."""

    def __init__(self, render: Callable[..., str] = vh.metrics_html) -> None:
        self.render = render
        self.widget = W.HTML("", layout=W.Layout(width="auto", min_height="20px"))
        self.widget.add_class("cfw-metrics-view")

    def show(self, row: Mapping[str, Any], *, stopped: bool = False) -> None:
        self.widget.value = self.render(row, stopped=stopped) if row else ""

"""Draw your own input: a small canvas (an ``anywidget``, so it runs in JupyterLab,
Notebook 7, VS Code and Colab without a front-end build) whose strokes become an MNIST-like
28x28 digit (:func:`cfwidgets.data.drawing.mnist_like`: cropped, scaled into a 20x20 box,
centred by its centre of mass).

Examples::

    from cfwidgets.widgets.draw import DrawCanvas
    pad = DrawCanvas()
    pad                        # draw with the mouse (or a finger), then:
    pad.digit()                # (1, 1, 28, 28) tensor, ready for a classifier
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import traitlets
from torch import Tensor

from ..data.drawing import mnist_like

try:
    import anywidget
except ImportError as _e:  # pragma: no cover - depends on installed extras
    raise ImportError("the drawing canvas needs anywidget: pip install 'cfwidgets[notebook]' "
                      "(or pip install anywidget)") from _e

__all__ = ["DrawCanvas"]

_ESM = r"""
function render({ model, el }) {
  const n = model.get("resolution");
  const px = model.get("display_px");
  const wrap = document.createElement("div");
  wrap.className = "cfw-draw";
  const canvas = document.createElement("canvas");
  canvas.width = n; canvas.height = n;
  canvas.className = "cfw-draw-canvas";
  canvas.style.width = px + "px"; canvas.style.height = px + "px";
  const ctx = canvas.getContext("2d");
  const blank = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, n, n); };
  blank();
  const paint = (pixels) => {
    if (!pixels || pixels.length !== n * n) { blank(); return; }
    const img = ctx.createImageData(n, n);
    for (let i = 0; i < n * n; i++) {
      const v = pixels[i];
      img.data[4 * i] = v; img.data[4 * i + 1] = v; img.data[4 * i + 2] = v; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  };
  paint(model.get("pixels"));
  let drawing = false, last = null;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * n / r.width, (e.clientY - r.top) * n / r.height];
  };
  const line = (a, b) => {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = model.get("brush");
    ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
  };
  const send = () => {
    const d = ctx.getImageData(0, 0, n, n).data;
    const out = new Array(n * n);
    for (let i = 0; i < n * n; i++) out[i] = d[4 * i];
    model.set("pixels", out);
    model.set("strokes", model.get("strokes") + 1);
    model.save_changes();
  };
  canvas.addEventListener("pointerdown", (e) => {
    drawing = true; last = at(e); line(last, last);
    canvas.setPointerCapture(e.pointerId); e.preventDefault();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    const p = at(e); line(last, p); last = p; e.preventDefault();
  });
  const end = (e) => { if (!drawing) return; drawing = false; send(); };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  const clear = document.createElement("button");
  clear.textContent = "Clear";
  clear.className = "cfw-draw-clear";
  clear.addEventListener("click", () => {
    blank(); model.set("pixels", []); model.set("strokes", 0); model.save_changes();
  });
  model.on("change:pixels", () => { if (!drawing) paint(model.get("pixels")); });
  const hint = document.createElement("div");
  hint.className = "cfw-draw-hint";
  hint.textContent = "draw a digit";
  wrap.append(canvas, clear, hint);
  el.appendChild(wrap);
}
export default { render };
"""

_CSS = """
.cfw-draw { display: flex; flex-direction: column; align-items: flex-start; gap: 4px; }
.cfw-draw-canvas { border: 1px solid #8c959f; border-radius: 4px; cursor: crosshair;
  touch-action: none; image-rendering: pixelated; }
.cfw-draw-clear { font-size: 12px; padding: 1px 10px; }
.cfw-draw-hint { font-size: 11px; color: #57606a; }
"""


class DrawCanvas(anywidget.AnyWidget):
    """A square canvas to draw on; ``pixels`` holds the drawing (``resolution``\\ :sup:`2`
    grey values 0..255, row-major; empty when cleared), updated at the end of each stroke.

    Args:
        resolution: canvas pixels per side (the drawing is downscaled to 28x28 later).
        display_px: size on screen.
        brush: stroke width in canvas pixels (default: about an MNIST stroke).
    """

    _esm = _ESM
    _css = _CSS
    pixels = traitlets.List(traitlets.Int(), default_value=[]).tag(sync=True)
    strokes = traitlets.Int(0).tag(sync=True)
    resolution = traitlets.Int(112).tag(sync=True)
    display_px = traitlets.Int(168).tag(sync=True)
    brush = traitlets.Float(10.0).tag(sync=True)

    def __init__(self, *, resolution: int = 112, display_px: int = 168, brush: float = 10.0,
                 **kwargs: Any) -> None:
        if not 28 <= int(resolution) <= 512:
            raise ValueError(f"resolution must be between 28 and 512 canvas pixels, got {resolution}.")
        super().__init__(resolution=int(resolution), display_px=int(display_px), brush=float(brush),
                         **kwargs)
        self.add_class("cfw-draw-widget")

    @property
    def empty(self) -> bool:
        return not self.pixels or max(self.pixels) == 0

    def image(self) -> Tensor:
        """The drawing as an ``(R, R)`` float tensor in [0, 1] (R = ``resolution``)."""
        n = self.resolution
        if len(self.pixels) != n * n:
            return torch.zeros(n, n)
        return torch.tensor(self.pixels, dtype=torch.float32).reshape(n, n) / 255.0

    def set_image(self, img: Any) -> None:
        """Show ``img`` (``(H, W)`` in [0, 1], resized to the canvas) as the drawing, as if
        it had been drawn (scripts, tests)."""
        t = torch.as_tensor(np.asarray(img), dtype=torch.float32)
        if t.ndim != 2:
            raise ValueError(f"img must be (H, W), got shape {tuple(t.shape)}.")
        n = self.resolution
        t = torch.nn.functional.interpolate(t[None, None], size=(n, n), mode="bilinear",
                                            align_corners=False)[0, 0]
        with self.hold_sync():
            self.pixels = (t.clamp(0, 1) * 255).round().int().flatten().tolist()
            self.strokes += 1

    def clear(self) -> None:
        with self.hold_sync():
            self.pixels = []
            self.strokes = 0

    def digit(self) -> Tensor:
        """The drawing as an MNIST-like digit, ``(1, 1, 28, 28)`` in [0, 1]; a clear
        ValueError when nothing is drawn."""
        return mnist_like(self.image())[None]

    def on_draw(self, fn: Callable[[DrawCanvas], None]) -> None:
        """Call ``fn(canvas)`` after every stroke (and after a clear)."""
        self.observe(lambda _c: fn(self), names=["pixels"])

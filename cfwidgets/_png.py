"""Tensors as PNG bytes: the encoding the zoo (sample sheets beside checkpoints) and the
renderers of :mod:`cfwidgets.viz` share. Encoding only; no layout, no colour maps."""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import Tensor

__all__ = ["png_bytes", "grid_png"]


def _to_numpy_img(img: Tensor | np.ndarray) -> np.ndarray:
    """Tensors are (C, H, W) or (H, W); numpy arrays (H, W), (H, W, 3) or (1, H, W)."""
    if isinstance(img, Tensor):
        a = img.detach().cpu().float().numpy()
        if a.ndim == 3:
            a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
        return a
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    return a


def png_bytes(img: Tensor | np.ndarray, scale: int = 4, *, fast: bool = False) -> bytes:
    """A grey (H, W), (1, H, W) or RGB (H, W, 3) image in [0, 1] as PNG bytes, enlarged
    ``scale`` times with nearest-neighbour. ``fast=True`` compresses lightly (about 20x
    quicker, for live widget updates); the default makes the smallest file (for HTML that
    is saved)."""
    from PIL import Image

    a = _to_numpy_img(img)
    a = np.clip(a, 0, 1)
    if scale > 1:
        a = a.repeat(scale, 0).repeat(scale, 1)
    a8 = (a * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(a8, mode="L" if a8.ndim == 2 else "RGB")
    buf = io.BytesIO()
    if fast:
        im.save(buf, format="PNG", compress_level=1)
    else:
        im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def grid_png(images: Tensor, nrow: int = 8, scale: int = 2, pad: int = 1) -> bytes:
    """A grid of (N, C, H, W) images as PNG bytes (sample sheets beside checkpoints)."""
    imgs = images.detach().cpu().float().clamp(0, 1)
    n, c, h, w = imgs.shape
    ncol = min(nrow, n)
    nr = (n + ncol - 1) // ncol
    canvas = torch.ones(c, nr * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, k = divmod(i, ncol)
        canvas[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = imgs[i]
    return png_bytes(canvas, scale)

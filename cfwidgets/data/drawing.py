"""A drawn image -> an MNIST-like digit: the preprocessing of the MNIST data set itself
(LeCun, Cortes & Burges, "The MNIST database": each digit was size-normalised to fit a
20x20 box, keeping its aspect ratio, with anti-aliasing, then centred by its centre of
mass in a 28x28 field), so a classifier trained on MNIST sees a hand-drawn digit the way
it saw its training data.

Examples::

    from cfwidgets.data.drawing import mnist_like
    x = mnist_like(canvas)          # (H, W) in [0, 1], ink = 1  ->  (1, 28, 28)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["center_of_mass", "mnist_like"]


def center_of_mass(img: Tensor) -> tuple[float, float]:
    """``(row, col)`` of the intensity-weighted centre of an ``(H, W)`` image (pixel
    centres at integer coordinates)."""
    h, w = img.shape
    total = img.sum()
    if float(total) <= 0:
        raise ValueError("the image is blank (no ink): the centre of mass is undefined.")
    rows = torch.arange(h, dtype=img.dtype)
    cols = torch.arange(w, dtype=img.dtype)
    return float((img.sum(1) * rows).sum() / total), float((img.sum(0) * cols).sum() / total)


def mnist_like(img: Any, *, size: int = 28, box: int = 20, threshold: float = 0.05) -> Tensor:
    """Crop ``img`` to its ink, scale it (aspect ratio kept, anti-aliased) so its longer
    side is ``box`` pixels, and place it in a ``size`` x ``size`` field with its centre of
    mass at the field's centre (moved less where the box would leave the field).

    Args:
        img: an ``(H, W)`` or ``(1, H, W)`` image (tensor or array), ink bright on dark,
            floats in [0, 1] or uint8 (divided by 255).
        threshold: pixels above this count as ink for the crop.

    Returns:
        a ``(1, size, size)`` float tensor in [0, 1].
    """
    t = img if isinstance(img, Tensor) else torch.as_tensor(np.asarray(img))
    t = t.detach().cpu()
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    if not t.dtype.is_floating_point:
        raise TypeError(f"img must be floats in [0, 1] or uint8, got {t.dtype}.")
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2:
        raise ValueError(f"img must be one grey image (H, W) or (1, H, W), got shape {tuple(t.shape)}.")
    if not 1 <= box <= size:
        raise ValueError(f"box must be between 1 and size ({size}), got {box}.")
    t = t.float().clamp(0.0, 1.0)
    ink = t > threshold
    if not bool(ink.any()):
        raise ValueError("the drawing is empty: draw a digit first (ink bright on dark).")
    rows = torch.nonzero(ink.any(1)).flatten()
    cols = torch.nonzero(ink.any(0)).flatten()
    crop = t[int(rows[0]):int(rows[-1]) + 1, int(cols[0]):int(cols[-1]) + 1]
    h, w = crop.shape
    s = box / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    # bilinear with antialias: an area-weighted downscale, the grey edges MNIST has
    small = F.interpolate(crop[None, None], size=(nh, nw), mode="bilinear", antialias=True,
                          align_corners=False)[0, 0].clamp(0.0, 1.0)
    cy, cx = center_of_mass(small)
    centre = (size - 1) / 2
    top = min(max(round(centre - cy), 0), size - nh)
    left = min(max(round(centre - cx), 0), size - nw)
    out = torch.zeros(size, size)
    out[top:top + nh, left:left + nw] = small
    return out[None]

"""Morphometric attributes of digit images (in the spirit of Morpho-MNIST, Castro et al.
2019), computed vectorised from the pixels so attribute-based methods (GCI, AIP) have
named, measurable attributes without any labelled face data.

Definitions (image ``x`` in [0, 1], 28x28; "ink" = pixels above 0.5; y grows downwards):

============  ======  =====================================================================
attribute     unit    definition
============  ======  =====================================================================
thickness     px      the short side w of the rectangle with the same ink mass A = sum(x) and
                      half-perimeter P = TV(x) / 2, where TV is the total variation (sum of
                      absolute differences between 4-neighbours, image zero-padded): w L = A,
                      w + L = P, so ``w = (P - sqrt(P^2 - 4A)) / 2``. Exact for a straight
                      stroke, close for curved ones; smooth in the pixels.
slant         deg     ``atan(-cov(x, y) / var(y))`` of the intensity-weighted pixel
                      coordinates: positive when the top of the digit leans to the right.
width         px      horizontal extent of the ink after removing the slant (shear
                      ``x -> x + tan(slant) * (y - y_mean)``), last minus first column + 1.
height        px      vertical extent of the ink, last minus first row + 1.
area          px      ink mass ``sum(x)`` (pixels of full intensity equivalent).
============  ======  =====================================================================

:func:`digit_attributes` caches the values per data set split; :class:`AttributeScaler`
z-scores them with training-set statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

__all__ = [
    "MORPHO_NAMES",
    "MORPHO_UNITS",
    "morphometrics",
    "digit_attributes",
    "AttributeScaler",
]

MORPHO_NAMES = ["thickness", "slant", "width", "height", "area"]
MORPHO_UNITS = {"thickness": "px", "slant": "deg", "width": "px", "height": "px", "area": "px"}


def morphometrics(x: Tensor, threshold: float = 0.5) -> Tensor:
    """``(N, 1, H, W)`` images in [0, 1] -> ``(N, 5)`` attributes in :data:`MORPHO_NAMES`
    order. Blank images give zeros (and slant 0)."""
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"morphometrics needs (N, 1, H, W) grey images, got {tuple(x.shape)}")
    img = x[:, 0].float()
    n, h, w = img.shape
    mass = img.sum((1, 2))  # (N,)
    padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
    tv = (padded[:, 1:, :] - padded[:, :-1, :]).abs().sum((1, 2)) + (
        padded[:, :, 1:] - padded[:, :, :-1]
    ).abs().sum((1, 2))
    half_perimeter = tv / 2
    thickness = (half_perimeter - torch.sqrt((half_perimeter**2 - 4 * mass).clamp_min(0))) / 2

    ys = torch.arange(h, dtype=img.dtype, device=img.device).view(1, h, 1)
    xs = torch.arange(w, dtype=img.dtype, device=img.device).view(1, 1, w)
    m = mass.clamp_min(1e-6).view(n, 1, 1)
    my = (img * ys).sum((1, 2), keepdim=True) / m
    mx = (img * xs).sum((1, 2), keepdim=True) / m
    cov = (img * (xs - mx) * (ys - my)).sum((1, 2)) / m.view(n)
    var_y = (img * (ys - my) ** 2).sum((1, 2)) / m.view(n)
    shear = -cov / var_y.clamp_min(1e-6)
    slant = torch.rad2deg(torch.atan(shear))

    ink = img > threshold
    any_ink = ink.flatten(1).any(1)
    big = float(max(h, w) * 4)
    rows = ys.expand(n, h, w)
    row_min = torch.where(ink, rows, torch.full_like(rows, big)).flatten(1).min(1).values
    row_max = torch.where(ink, rows, torch.full_like(rows, -big)).flatten(1).max(1).values
    height = torch.where(any_ink, row_max - row_min + 1, torch.zeros_like(row_max))
    # deslant: x' = x + shear * (y - my) moves the leaning top back over the bottom
    xd = xs + shear.view(n, 1, 1) * (ys - my)
    col_min = torch.where(ink, xd, torch.full_like(xd, big)).flatten(1).min(1).values
    col_max = torch.where(ink, xd, torch.full_like(xd, -big)).flatten(1).max(1).values
    width = torch.where(any_ink, col_max - col_min + 1, torch.zeros_like(col_max))

    out = torch.stack([thickness, slant, width, height, mass], dim=1)
    blank = mass < 1e-6
    return torch.where(blank[:, None], torch.zeros_like(out), out)


@lru_cache(maxsize=8)
def digit_attributes(dataset: str = "mnist", split: str = "train") -> Tensor:
    """Cached :func:`morphometrics` of a data set split (``(N, 5)``, natural units)."""
    from .images import load_dataset

    return morphometrics(load_dataset(dataset, split).x)


@dataclass(frozen=True)
class AttributeScaler:
    """Z-scoring of named attributes with fixed statistics (from a training split)."""

    names: tuple[str, ...]
    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, values: Tensor, names) -> AttributeScaler:
        std = values.std(0).clamp_min(1e-6)
        return cls(tuple(names), values.mean(0), std)

    def transform(self, values: Tensor) -> Tensor:
        return (values - self.mean.to(values)) / self.std.to(values)

    def inverse(self, z: Tensor) -> Tensor:
        return z * self.std.to(z) + self.mean.to(z)

    def describe(self, delta_natural: Tensor, units: dict[str, str] | None = None) -> list[str]:
        """Human-readable signed changes, e.g. ``["thickness -0.8 px", "slant +12.0 deg"]``."""
        units = units or {}
        return [
            f"{name} {float(d):+.2f} {units.get(name, '')}".rstrip()
            for name, d in zip(self.names, delta_natural, strict=True)
            if not math.isclose(float(d), 0.0, abs_tol=1e-9)
        ]

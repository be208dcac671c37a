"""A synthetic image data set with known ground-truth factors ("shapes").

Each 28x28 image is the outline of one shape: the *class* is the shape (circle, square,
triangle, cross); six continuous factors are drawn independently and uniformly:

============  ===============  ==================================================
factor        range            meaning
============  ===============  ==================================================
size          5 .. 10 px       circumradius-like half extent of the shape
rotation      -30 .. 30 deg    in-plane rotation (a circle looks the same at any angle)
pos_x         -4 .. 4 px       horizontal offset of the centre (right is positive)
pos_y         -4 .. 4 px       vertical offset of the centre (down is positive)
stroke        1 .. 3 px        outline width
brightness    0.4 .. 1.0       intensity of the outline
============  ===============  ==================================================

Images are rendered vectorised from signed distance functions with anti-aliasing, so the
same factors always give the same image (:func:`render_shapes` is the ground truth that
tests use to check what a counterfactual changed). A *biased* variant ties a nuisance
factor (e.g. brightness) to the class so a classifier can learn a shortcut: the GCI bias-
discovery story.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .images import ImageDataset

__all__ = [
    "SHAPE_CLASSES",
    "SHAPE_FACTORS",
    "FACTOR_RANGES",
    "render_shapes",
    "sample_factors",
    "make_shapes",
    "load_shapes",
]

SHAPE_CLASSES = ["circle", "square", "triangle", "cross"]
SHAPE_FACTORS = ["size", "rotation", "pos_x", "pos_y", "stroke", "brightness"]
FACTOR_RANGES: dict[str, tuple[float, float]] = {
    "size": (5.0, 10.0),
    "rotation": (-30.0, 30.0),
    "pos_x": (-4.0, 4.0),
    "pos_y": (-4.0, 4.0),
    "stroke": (1.0, 3.0),
    "brightness": (0.4, 1.0),
}
FACTOR_UNITS = {"size": "px", "rotation": "deg", "pos_x": "px", "pos_y": "px", "stroke": "px",
                "brightness": ""}


def _box_sdf(px: Tensor, py: Tensor, hx: Tensor, hy: Tensor) -> Tensor:
    qx, qy = px.abs() - hx, py.abs() - hy
    outside = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2)
    inside = torch.maximum(qx, qy).clamp_max(0)
    return outside + inside


def _triangle_sdf(px: Tensor, py: Tensor, r: Tensor) -> Tensor:
    """Signed distance to an equilateral triangle of half side ``r`` pointing up
    (image y grows downwards, so flip y first)."""
    k = math.sqrt(3.0)
    py = -py
    px = px.abs() - r
    py = py + r / k
    fold = (px + k * py) > 0
    nx = torch.where(fold, (px - k * py) / 2, px)
    ny = torch.where(fold, (-k * px - py) / 2, py)
    nx = nx - torch.clamp(nx, min=-2 * r, max=torch.zeros_like(r))
    return -torch.sqrt(nx**2 + ny**2) * torch.sign(ny)


def render_shapes(classes: Tensor, factors: Tensor, size: int = 28) -> Tensor:
    """Render outlines: ``classes`` (N,) ints, ``factors`` (N, 6) in :data:`SHAPE_FACTORS`
    order (natural units) -> images (N, 1, size, size) in [0, 1]."""
    if factors.ndim != 2 or factors.shape[1] != len(SHAPE_FACTORS):
        raise ValueError(f"factors must have shape (N, {len(SHAPE_FACTORS)}), got {tuple(factors.shape)}")
    f = factors.float()
    n = f.shape[0]
    s, rot, cx, cy, stroke, bright = (f[:, i].view(n, 1, 1) for i in range(6))
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    px, py = xx[None] - cx, yy[None] - cy
    theta = torch.deg2rad(rot)
    c, sn = torch.cos(theta), torch.sin(theta)
    # rotate the sampling grid by -theta, which turns the shape by theta
    rx = c * px - sn * py
    ry = sn * px + c * py
    d_circle = torch.sqrt(rx**2 + ry**2) - s
    d_square = _box_sdf(rx, ry, s * 0.8, s * 0.8)
    d_tri = _triangle_sdf(rx, ry, s)
    arm = s * 0.3
    d_cross = torch.minimum(_box_sdf(rx, ry, s, arm), _box_sdf(rx, ry, arm, s))
    d_all = torch.stack([d_circle, d_square, d_tri, d_cross])  # (4, N, H, W)
    d = d_all.gather(0, classes.long().view(1, n, 1, 1).expand(1, n, size, size))[0]
    ink = (stroke / 2 - d.abs() + 0.5).clamp(0, 1)
    return (bright * ink).unsqueeze(1).clamp(0, 1)


def sample_factors(n: int, generator: torch.Generator,
                   ranges: dict[str, tuple[float, float]] | None = None) -> Tensor:
    """``(n, 6)`` factors drawn uniformly in their ranges."""
    ranges = {**FACTOR_RANGES, **(ranges or {})}
    lo = torch.tensor([ranges[k][0] for k in SHAPE_FACTORS])
    hi = torch.tensor([ranges[k][1] for k in SHAPE_FACTORS])
    return lo + (hi - lo) * torch.rand(n, len(SHAPE_FACTORS), generator=generator)


def make_shapes(
    n: int,
    seed: int = 0,
    *,
    classes: Sequence[int] | None = None,
    bias: str | None = None,
    bias_strength: float = 1.0,
    split: str = "custom",
) -> ImageDataset:
    """Generate ``n`` shapes (balanced classes) with a seed.

    ``bias="brightness"`` (or any factor name) ties that factor to the class: with
    probability ``bias_strength`` a sample's factor is drawn from its class's own band
    (class k of K gets the k-th of K equal sub-ranges), otherwise uniformly.
    ``extra["factors"]`` holds the ground truth (N, 6) in natural units.
    """
    if bias is not None and bias not in SHAPE_FACTORS:
        raise ValueError(f"bias must be one of {SHAPE_FACTORS}, got {bias!r}")
    g = torch.Generator().manual_seed(seed)
    cls_list = list(range(len(SHAPE_CLASSES))) if classes is None else list(classes)
    k = len(cls_list)
    y = torch.tensor(cls_list)[torch.arange(n) % k]
    y = y[torch.randperm(n, generator=g)]
    factors = sample_factors(n, g)
    if bias is not None:
        j = SHAPE_FACTORS.index(bias)
        lo, hi = FACTOR_RANGES[bias]
        width = (hi - lo) / k
        band = torch.tensor([cls_list.index(int(c)) for c in y], dtype=torch.float32)
        tied = torch.rand(n, generator=g) < bias_strength
        in_band = lo + (band + torch.rand(n, generator=g)) * width
        factors[:, j] = torch.where(tied, in_band, factors[:, j])
    x = render_shapes(y, factors)
    name = "shapes" if bias is None else f"shapes-{bias}-biased"
    return ImageDataset(
        name, split, x, y.long(), [SHAPE_CLASSES[c] for c in range(len(SHAPE_CLASSES))],
        extra={"factors": factors, "factor_names": list(SHAPE_FACTORS), "bias": bias},
    )


def load_shapes(split: str = "train", *, bias: str | None = None) -> ImageDataset:
    """The standard shapes splits: 8,000 train (seed 0), 2,000 test (seed 1)."""
    if split == "train":
        return make_shapes(8000, seed=0, bias=bias, split="train")
    if split == "test":
        return make_shapes(2000, seed=1, bias=bias, split="test")
    raise ValueError(f"split must be 'train' or 'test', got {split!r}.")

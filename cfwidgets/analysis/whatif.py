"""What-if decoding with a conditional generator: set attribute values by hand, or walk
along a counterfactual's attribute path, and see the image and the class probabilities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..models.conditional import spec_of

__all__ = ["decode_attributes", "walk", "set_attributes"]


def set_attributes(generator, a: Tensor, values: Mapping[str, float | int | str]) -> Tensor:
    """A copy of the attribute vector(s) ``a`` ``(B, dim)`` with some attributes set in
    *natural* units: ``{"slant": 12.0, "digit": 7}`` (a category by index or name)."""
    spec = spec_of(generator)
    nat = spec.to_natural(a)
    out = a.clone()
    for name, v in values.items():
        i = spec.index(name)
        sl = spec.slices[i]
        if spec.kinds[i] == "categorical":
            cats = spec.categories[i]
            c = cats.index(v) if isinstance(v, str) else int(v)
            if not 0 <= c < len(cats):
                raise ValueError(f"{name} must be one of {list(cats)}, got {v!r}")
            out[:, sl] = 0
            out[:, sl.start + c] = 1
        else:
            nat_i = nat[:, i].clone().fill_(float(v))
            out[:, sl] = ((nat_i - spec.mean[i]) / spec.std[i])[:, None] if spec.kinds[i] == "continuous" \
                else nat_i[:, None].clamp(0, 1)
    return spec.project(out)


@torch.no_grad()
def decode_attributes(generator, classifier, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """``(images (B, C, H, W), probabilities (B, K))`` of ``g(z, a)``."""
    x = generator.decode(z, a)
    return x, classifier(x).softmax(-1)


@torch.no_grad()
def walk(generator, classifier, z0: Tensor, a0: Tensor, z1: Tensor, a1: Tensor,
         n: int = 11) -> tuple[Tensor, Tensor, Tensor]:
    """Decode ``n`` points on the straight line from ``(z0, a0)`` to ``(z1, a1)`` (one
    query: 1-D or ``(1, ...)`` tensors). Returns ``(t (n,), images (n, C, H, W), probs
    (n, K))``: how the classifier's belief changes along the counterfactual's path."""
    def row(v: Tensor) -> Tensor:
        return v if v.ndim > 1 else v[None]

    z0, a0, z1, a1 = row(z0), row(a0), row(z1), row(a1)
    t = torch.linspace(0, 1, n, device=z0.device)
    tz = t.view(-1, *([1] * (z0.ndim - 1)))
    z = z0 + tz * (z1 - z0)
    a = a0 + t[:, None] * (a1 - a0)
    x, p = decode_attributes(generator, classifier, z, a)
    return t, x, p

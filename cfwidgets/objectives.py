"""Small loss terms shared by the methods. Every term returns one value per row ``(B,)``
so batched runs can freeze finished rows and callbacks can show per-row curves.

Each method writes its weighted sum out in its own file, next to the paper's equation
(e.g. ``class_loss(logits, t) + w * l1_distance(x_cf, x)``, Wachter et al. eq. 1), so one
knob maps to one visible weight.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_loss", "l1_distance", "l2_distance", "sq_distance", "total_variation"]


def class_loss(logits: Tensor, target: Tensor, kind: str = "ce", kappa: float = 0.0) -> Tensor:
    """Loss that is small when ``logits`` favour ``target``: ``"ce"`` cross-entropy, or
    ``"hinge"`` ``max(0, max_{j != t} f_j - f_t + kappa)`` (Carlini-Wagner margin)."""
    if kind == "ce":
        return F.cross_entropy(logits, target, reduction="none")
    if kind == "hinge":
        own = logits.gather(1, target[:, None])[:, 0]
        other = logits.masked_fill(F.one_hot(target, logits.shape[1]).bool(), float("-inf")).amax(1)
        return (other - own + kappa).clamp_min(0)
    raise ValueError(f"unknown class loss {kind!r}; use 'ce' or 'hinge'")


def _flat(a: Tensor) -> Tensor:
    return a.reshape(a.shape[0], -1)


def l1_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute difference per row (per-pixel L1)."""
    return _flat(a - b).abs().mean(1)


def l2_distance(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distance per row."""
    return _flat(a - b).norm(dim=1)


def sq_distance(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distance per row."""
    return _flat(a - b).pow(2).sum(1)


def total_variation(x: Tensor, p: int = 2) -> Tensor:
    """Anisotropic total variation per row (``p=1``) or its squared-L2 form (``p=2``),
    averaged over pixels."""
    dh = x[..., 1:, :] - x[..., :-1, :]
    dw = x[..., :, 1:] - x[..., :, :-1]
    if p == 1:
        return _flat(dh).abs().mean(1) + _flat(dw).abs().mean(1)
    return _flat(dh).pow(2).mean(1) + _flat(dw).pow(2).mean(1)

"""Small loss terms shared by the methods. Every term returns one value per row ``(B,)``
so batched runs can freeze finished rows and callbacks can show per-row curves.

Terms compose (in the spirit of lucent's objectives)::

    obj = Objective.of(class_loss) + 0.1 * Objective.of(l1_distance)
    per_row = obj(logits=..., target=..., x_cf=..., x=...)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_loss", "l1_distance", "l2_distance", "sq_distance", "total_variation", "Objective"]


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


class Objective:
    """A weighted sum of named per-row terms; ``+`` and scalar ``*`` build new objectives."""

    def __init__(self, terms: list[tuple[float, str, Callable[..., Tensor]]]):
        self.terms = terms

    @classmethod
    def of(cls, fn: Callable[..., Tensor], name: str | None = None, **bound) -> Objective:
        """Wrap ``fn``; at call time it receives only the keyword arguments it names
        (``bound`` fixes some, e.g. ``Objective.of(l1_distance, a="x_cf", b="x")`` maps
        argument names to the objective's keywords)."""
        params = list(inspect.signature(fn).parameters)

        def call(**kw):
            args = {}
            for p in params:
                key = bound.get(p, p)
                if key in kw:
                    args[p] = kw[key]
            return fn(**args)

        return cls([(1.0, name or fn.__name__, call)])

    def __add__(self, other: Objective) -> Objective:
        return Objective(self.terms + other.terms)

    def __mul__(self, w: float) -> Objective:
        return Objective([(w * a, n, f) for a, n, f in self.terms])

    __rmul__ = __mul__

    def parts(self, **kw) -> dict[str, Tensor]:
        """Each weighted term by name, plus ``"loss"``, the total (all ``(B,)``)."""
        out: dict[str, Tensor] = {}
        total = None
        for w, name, fn in self.terms:
            v = w * fn(**kw)
            out[name] = v
            total = v if total is None else total + v
        out["loss"] = total if total is not None else torch.zeros(())
        return out

    def __call__(self, **kw) -> Tensor:
        return self.parts(**kw)["loss"]

"""The few interfaces every component of cfwidgets speaks.

A user brings their own models by matching these protocols; adapters are a few lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = [
    "Classifier",
    "Encoder",
    "Decoder",
    "ConditionalGenerator",
    "StepCallback",
    "StepState",
]


@runtime_checkable
class Classifier(Protocol):
    """Images ``(B, C, H, W)`` in [0, 1] -> logits ``(B, K)``. Must return *logits*, not
    probabilities (methods check this and say so)."""

    def __call__(self, x: Tensor, /) -> Tensor: ...


@runtime_checkable
class Encoder(Protocol):
    def encode(self, x: Tensor, /) -> Tensor: ...  # (B, ...) -> (B, D)


@runtime_checkable
class Decoder(Protocol):
    def decode(self, z: Tensor, /) -> Tensor: ...  # (B, D) -> (B, ...)


@runtime_checkable
class ConditionalGenerator(Protocol):
    """An attribute-conditioned decoder ``g(z, a)`` (AIP, GCI), with its encoder."""

    attribute_names: Sequence[str]

    def encode(self, x: Tensor, /) -> Tensor: ...

    def decode(self, z: Tensor, a: Tensor, /) -> Tensor: ...


@dataclass
class StepState:
    """What a method reports to its callback after each optimisation step.

    Tensors stay on the method's device; a callback that wants numbers pays for the
    transfer itself (``state.probs.cpu()``), so a progress bar alone costs nothing.
    """

    step: int  # 0-based index of the step just taken
    total: int  # the step budget
    x_cf: Tensor | list  # current counterfactual(s): (B, C, H, W) or list of str
    probs: Tensor  # (B, K) class probabilities of x_cf
    target: Tensor  # (B,)
    done: Tensor  # (B,) bool: rows that reached the confidence threshold
    losses: dict[str, Tensor] = field(default_factory=dict)  # name -> (B,) per-row terms
    extra: dict = field(default_factory=dict)  # method-specific (e.g. z, attributes, stage)

    @property
    def target_prob(self) -> Tensor:
        return self.probs.gather(1, self.target[:, None])[:, 0]


@runtime_checkable
class StepCallback(Protocol):
    """Called after every step; return ``True`` to stop the optimisation early."""

    def __call__(self, step: int, state: StepState) -> bool | None: ...

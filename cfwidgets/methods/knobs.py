"""Knobs that mean the same thing in several methods, defined once so that their name,
range and doc agree everywhere (ARCHITECTURE.md: one vocabulary). Each call makes a new
dataclass field, to be listed in a method's own ``Config`` where the method reads it::

    @dataclass(frozen=True)
    class Config:
        steps: int = knob(300, 1, 2000, "...")
        loss: str = class_loss_knob()
        kappa: float = kappa_knob()
        record_every: int = record_every_knob()
"""

from __future__ import annotations

from typing import Any

from ..config import knob
from ..models.conditional import LOCK_WEIGHT

__all__ = ["attribute_weights_knob", "class_loss_knob", "confidence_knob", "kappa_knob", "patience_knob",
           "record_every_knob", "restart_noise_knob", "restarts_knob"]


def class_loss_knob() -> Any:
    """``loss``: the class term, cross-entropy or the margin hinge (``objectives.class_loss``)."""
    return knob("ce", doc="Class term: cross-entropy or the margin hinge.", choices=("ce", "hinge"))


def confidence_knob(note: str = "") -> Any:
    """``confidence``: the per-row stopping rule of the image methods' shared loop."""
    return knob(0.99, 0.5, 0.9999, "Stop a query once the target probability reaches this value"
                + (f" ({note})." if note else "."))


def patience_knob(default: int = 0) -> Any:
    """``patience``: the shared loop's plateau stop (``Recorder(patience=...)``)."""
    return knob(default, 0, 5000, "Stop a query that the classifier already assigns to the target "
                "once its loss has not improved by 1 % in this many steps, below the confidence "
                "(0 = never: run to the confidence or the budget).")


def patience_move_knob(default: float = 0.0) -> Any:
    """``patience_move``: with the plateau stop, an iterate still moving counts as progress."""
    return knob(default, 0.0, 0.1, "With `patience`: a query whose image still moves by more than "
                "this (mean absolute change per pixel since its last progress) is not on a plateau, "
                "even when its loss is flat (0 = the loss alone decides).")


def restarts_knob(winner: str) -> Any:
    """``restarts``: copies of each query optimised from noisy starts; ``winner`` says which
    copy is returned."""
    return knob(1, 1, 8, f"Copies optimised from noisy starts; {winner}.")


def restart_noise_knob(of: str) -> Any:
    """``restart_noise``: the start noise of restarts 2..R, on ``of``."""
    return knob(0.5, 0.0, 3.0, f"Std of the start noise on {of} of restarts 2..R.")


def kappa_knob() -> Any:
    """``kappa``: the hinge's margin."""
    return knob(2.0, 0.0, 20.0, "Margin of the hinge class term (unused with 'ce').")


def record_every_knob() -> Any:
    """``record_every``: the trajectory snapshot interval (0 = about 25 snapshots)."""
    return knob(0, 0, 1000, "Keep a trajectory snapshot every this many steps "
                "(0 = about 25 snapshots over the budget).")


def attribute_weights_knob(doc: str = "Cost of changing each attribute, one per generator "
                           "attribute (() = all 1; a {name: weight} dict is accepted too). 0 = "
                           "free, 100 = locked (not optimised).") -> Any:
    """``attribute_weights``: a cost per attribute of a conditional generator, ``()`` = all
    1, ``LOCK_WEIGHT`` (100) = locked."""
    return knob((), 0.0, LOCK_WEIGHT, doc)

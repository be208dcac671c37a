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

__all__ = ["attribute_weights_knob", "class_loss_knob", "kappa_knob", "record_every_knob"]


def class_loss_knob() -> Any:
    """``loss``: the class term, cross-entropy or the margin hinge (``objectives.class_loss``)."""
    return knob("ce", doc="Class term: cross-entropy or the margin hinge.", choices=("ce", "hinge"))


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

"""Counterfactual methods: one file per paper, one verb (``explain``).

``METHODS`` maps a method's name to its class; the conformance suite and the demo run over
it. A method module whose optional dependencies are missing is skipped (see ``SKIPPED``).
"""

from __future__ import annotations

import importlib

from .base import CounterfactualMethod, Recorder, RunOutput
from .wachter import Wachter

__all__ = ["CounterfactualMethod", "Recorder", "RunOutput", "Wachter", "METHODS", "SKIPPED",
           "get_method"]

METHODS: dict[str, type[CounterfactualMethod]] = {"wachter": Wachter}
SKIPPED: dict[str, str] = {}

# (module, class name) of the other methods; each module is a single paper.
_OPTIONAL = [
    ("gci", "GCI"),
    ("aip", "AIP"),
    ("diffeomorphic", "DiffeomorphicCounterfactual"),
    ("hotflip", "HotFlip"),
    ("aip_text", "AIPText"),
    ("ganmex", "GANMEX"),
    ("disc", "DISC"),
]

for _mod, _cls in _OPTIONAL:
    try:
        _m = importlib.import_module(f"{__name__}.{_mod}")
    except ImportError as _e:  # pragma: no cover - depends on installed extras
        SKIPPED[_mod] = str(_e)
        continue
    _c = getattr(_m, _cls)
    METHODS[_c.name] = _c
    globals()[_cls] = _c
    __all__.append(_cls)


def get_method(name: str) -> type[CounterfactualMethod]:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; available: {sorted(METHODS)}"
                       + (f" (skipped: {SKIPPED})" if SKIPPED else ""))
    return METHODS[name]

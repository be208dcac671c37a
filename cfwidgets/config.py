"""Method configurations: frozen dataclasses whose fields are *knobs*.

Every field of a method's ``Config`` is declared with :func:`knob`, which records the
field's range, documentation and (optionally) its choices in the dataclass field's
metadata. Widgets build their controls from this, the conformance suite checks that every
knob is documented, and :func:`validate` turns out-of-range values into clear errors.

Examples::

    @dataclass(frozen=True)
    class Config:
        steps: int = knob(300, 1, 5000, "Optimisation steps (upper bound).")
        lr: float = knob(0.05, 1e-4, 1.0, "Adam learning rate.", log=True)
        optimizer: str = knob("adam", doc="Optimiser.", choices=("adam", "sgd"))
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Knob", "knob", "knobs", "validate", "merge", "to_dict"]


@dataclass(frozen=True)
class Knob:
    """Description of one configuration field."""

    name: str
    default: Any
    min: float | None
    max: float | None
    doc: str
    choices: tuple | None = None
    log: bool = False
    step: float | None = None
    optional: bool = False  # None is an allowed value (e.g. "use the paper's default")

    @property
    def kind(self) -> str:
        """One of "choice", "bool", "int", "float", "sequence", "other"."""
        if self.choices is not None:
            return "choice"
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "float"
        if isinstance(self.default, (tuple, list)):
            return "sequence"
        return "other"


def knob(
    default: Any,
    min: float | None = None,  # noqa: A002 - the natural names for a range
    max: float | None = None,  # noqa: A002
    doc: str = "",
    *,
    choices: Sequence | None = None,
    log: bool = False,
    step: float | None = None,
    optional: bool = False,
) -> Any:
    """A dataclass field that carries its range and documentation.

    ``min``/``max`` bound numbers (and every element of a tuple of numbers);
    ``choices`` lists the allowed values of a categorical knob; ``log`` hints a
    log-scaled slider; ``optional`` allows ``None``.
    """
    meta = {
        "knob": dict(
            min=min,
            max=max,
            doc=doc,
            choices=tuple(choices) if choices is not None else None,
            log=log,
            step=step,
            optional=optional,
        )
    }
    if isinstance(default, (list, dict, set)):
        raise TypeError("knob defaults must be immutable; use a tuple instead of a list")
    return field(default=default, metadata=meta)


def knobs(config_cls_or_obj: Any) -> Iterator[Knob]:
    """Yield the :class:`Knob` of every field of a Config class or instance."""
    for f in dataclasses.fields(config_cls_or_obj):
        meta = f.metadata.get("knob")
        if meta is None:
            # A plain field without knob metadata: report it with no range so the
            # conformance suite can flag it.
            yield Knob(f.name, f.default, None, None, "", None)
            continue
        yield Knob(name=f.name, default=f.default, **meta)


def _plain(value: Any) -> Any:
    """A numpy / torch scalar as the python number it holds (``np.int64(20)`` -> ``20``,
    ``np.bool_(True)`` -> ``True``); anything else unchanged."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, numbers.Number) or type(value).__module__.split(".")[0] in ("numpy", "torch"):
        try:
            item = value.item()  # one-element numpy / torch values only
        except (AttributeError, ValueError, RuntimeError, TypeError):
            return value
        if type(item) in (bool, int, float, str):
            return item
    return value


def _normalise(k: Knob, value: Any) -> Any:
    """The knob's value in its declared python type where that loses nothing: numpy
    scalars become python numbers, an integral float for an int knob an int (``20.0`` ->
    ``20``), an int for a float knob a float, a list for a tuple knob a tuple."""
    if k.kind == "sequence" and isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    value = _plain(value)
    if k.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if k.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _check_value(k: Knob, value: Any, cls_name: str) -> None:
    where = f"{cls_name}.{k.name}"
    if value is None:
        if k.optional:
            return
        raise ValueError(f"{where} must not be None (default {k.default!r}).")
    if k.choices is not None:
        if value not in k.choices:
            raise ValueError(f"{where} must be one of {list(k.choices)}, got {value!r}.")
        return
    kind = k.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"{where} must be a bool, got {type(value).__name__}.")
        return
    values: Sequence
    if kind == "sequence":
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"{where} must be a tuple of numbers, got {type(value).__name__}.")
        values = value
    else:
        values = (value,)
    for v in values:
        v = _plain(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{where} must be a number, got {v!r} ({type(v).__name__}).")
        if v != v:  # NaN
            raise ValueError(f"{where} is NaN.")
        if kind == "int" and not (isinstance(v, int) or (math.isfinite(v) and float(v).is_integer())):
            raise TypeError(f"{where} must be a whole number (an int knob), got {v!r}.")
        if k.min is not None and v < k.min:
            raise ValueError(f"{where} must be >= {k.min}, got {v!r}.")
        if k.max is not None and v > k.max:
            raise ValueError(f"{where} must be <= {k.max}, got {v!r}.")


def validate(config: Any) -> Any:
    """Check every knob of ``config`` against its range/choices; return ``config``.

    Raises ``ValueError``/``TypeError`` naming the field, the allowed range and the value.
    """
    name = type(config).__name__
    for k in knobs(config):
        _check_value(k, getattr(config, k.name), name)
    return config


def merge(config_cls: type, config: Any = None, overrides: Mapping[str, Any] | None = None) -> Any:
    """Build a validated config from a base (instance or mapping) plus keyword overrides.

    Unknown names raise a ``TypeError`` that lists the valid knobs.
    """
    if config is None:
        base = config_cls()
    elif isinstance(config, config_cls):
        base = config
    elif isinstance(config, Mapping):
        base = _replace(config_cls, config_cls(), config)
    else:
        raise TypeError(
            f"config must be a {config_cls.__qualname__} or a dict, got {type(config).__name__}."
        )
    if overrides:
        base = _replace(config_cls, base, overrides)
    # values of the knob's meaning in another type (an int for a float knob, 20.0 or
    # np.int64(20) for an int knob, a list for a tuple) are recorded in the declared type,
    # so the loops get what they expect; everything else is judged by validate()
    fixes = {}
    for k in knobs(base):
        v = getattr(base, k.name)
        if k.choices is not None:
            nv = _plain(v)
        else:
            nv = _normalise(k, v)
        if nv is not v and (type(nv) is not type(v) or nv != v):
            fixes[k.name] = nv
    if fixes:
        base = dataclasses.replace(base, **fixes)
    return validate(base)


def _replace(config_cls: type, base: Any, values: Mapping[str, Any]) -> Any:
    valid = [f.name for f in dataclasses.fields(config_cls)]
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for {config_cls.__qualname__}; valid options: {valid}."
        )
    return dataclasses.replace(base, **dict(values))


def to_dict(config: Any) -> dict:
    """A plain dict of a config (for ``meta`` and JSON)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}

"""Controls generated from a method's Config knobs.

:func:`knob_control` turns one :class:`~cfwidgets.config.Knob` into a :class:`KnobControl`:
a displayable ``widget`` plus ``value`` get/set in the knob's own type (a slider for a
number with a range, a log slider for ``log=True``, a dropdown for ``choices``, a checkbox
for a bool, a text box for a tuple of numbers, a "default" checkbox beside the control of
an ``optional`` knob whose default is ``None``). The knob's doc is the tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ..config import Knob

__all__ = ["KnobControl", "knob_control", "AttributeWeights", "DESCRIPTION_WIDTH", "CONTROL_WIDTH"]

DESCRIPTION_WIDTH = "150px"
CONTROL_WIDTH = "340px"


def _label(name: str) -> str:
    return name.replace("_", " ")


def _style() -> dict:
    return {"description_width": DESCRIPTION_WIDTH}


class KnobControl:
    """One knob's control: ``widget`` to display, ``value`` in the knob's type.

    ``observe(fn)`` calls ``fn(value)`` whenever the user changes the value.
    """

    def __init__(self, knob: Knob, widget: W.Widget, value_widget: W.Widget,
                 get: Callable[[], Any] | None = None, set: Callable[[Any], None] | None = None,
                 none_box: W.Checkbox | None = None) -> None:  # noqa: A002
        self.knob = knob
        self.widget = widget
        self.value_widget = value_widget
        self._get = get or (lambda: value_widget.value)
        self._set = set or (lambda v: setattr(value_widget, "value", v))
        self.none_box = none_box

    @property
    def name(self) -> str:
        return self.knob.name

    @property
    def value(self) -> Any:
        if self.none_box is not None and self.none_box.value:
            return None
        return self._get()

    @value.setter
    def value(self, v: Any) -> None:
        if self.none_box is not None:
            self.none_box.value = v is None
            if v is None:
                return
        self._set(v)

    @property
    def disabled(self) -> bool:
        return bool(getattr(self.value_widget, "disabled", False))

    @disabled.setter
    def disabled(self, flag: bool) -> None:
        for w in (self.value_widget, self.none_box):
            if w is not None and hasattr(w, "disabled"):
                w.disabled = flag
        if self.none_box is not None and not flag:
            self.value_widget.disabled = bool(self.none_box.value)

    def observe(self, fn: Callable[[Any], None]) -> None:
        def _changed(_change):
            fn(self.value)

        self.value_widget.observe(_changed, names=["value"])
        if self.none_box is not None:
            self.none_box.observe(_changed, names=["value"])

    def __repr__(self) -> str:
        return f"KnobControl({self.name}={self.value!r})"


def _number_widget(k: Knob, value: Any, common: dict) -> W.Widget:
    lo, hi = k.min, k.max
    if k.kind == "int":
        if lo is not None and hi is not None:
            step = int(k.step) if k.step else 1
            return W.IntSlider(value=int(value), min=int(lo), max=int(hi), step=step,
                               continuous_update=False, **common)
        return W.IntText(value=int(value), **common)
    # float
    if lo is not None and hi is not None:
        if k.log and lo > 0:
            a, b = math.log10(lo), math.log10(hi)
            return W.FloatLogSlider(value=float(value), base=10, min=a, max=b,
                                    step=(b - a) / 100, readout_format=".3g",
                                    continuous_update=False, **common)
        step = k.step or (hi - lo) / 200
        fmt = ".4g" if hi - lo < 1 else ".3g"
        return W.FloatSlider(value=float(value), min=float(lo), max=float(hi), step=step,
                             readout_format=fmt, continuous_update=False, **common)
    return W.FloatText(value=float(value), **common)


def _parse_sequence(text: str, k: Knob) -> tuple:
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    out = []
    for p in parts:
        v = float(p)
        if isinstance(k.default, tuple) and k.default and all(
            isinstance(d, int) and not isinstance(d, bool) for d in k.default
        ) and v.is_integer():
            v = int(v)
        out.append(v)
    return tuple(out)


def knob_control(k: Knob, value: Any = None) -> KnobControl:
    """The control of knob ``k``, showing ``value`` (default: the knob's default)."""
    value = k.default if value is None and not (k.optional and k.default is None) else value
    common = dict(description=_label(k.name), tooltip=k.doc or k.name, style=_style(),
                  layout=W.Layout(width=CONTROL_WIDTH))
    kind = k.kind
    if kind == "choice":
        w = W.Dropdown(options=list(k.choices), value=value if value in k.choices else k.choices[0],
                       **common)
        return KnobControl(k, w, w)
    if kind == "bool":
        w = W.Checkbox(value=bool(value), indent=True, **common)
        return KnobControl(k, w, w)
    if kind in ("int", "float"):
        w = _number_widget(k, value, common)
        return KnobControl(k, w, w)
    if kind == "sequence" or (k.optional and k.default is None and isinstance(value, tuple)):
        w = W.Text(value=", ".join(str(v) for v in (value or ())), placeholder="comma-separated",
                   **common)
        return KnobControl(k, w, w, get=lambda: _parse_sequence(w.value, k),
                           set=lambda v: setattr(w, "value", ", ".join(str(x) for x in v)))
    if k.optional and k.default is None:
        # "None = the method's own default": a checkbox beside a control for a number
        if k.min is not None and k.max is not None:
            is_int = isinstance(k.min, int) and isinstance(k.max, int) and not k.log
            proto = Knob(k.name, k.min if is_int else float(k.min), k.min, k.max, k.doc,
                         log=k.log, step=k.step)
            inner = _number_widget(proto, value if value is not None else proto.default,
                                   {**common, "layout": W.Layout(width="260px")})
        else:
            inner = W.Text(value="" if value is None else str(value),
                           **{**common, "layout": W.Layout(width="260px")})
        auto = W.Checkbox(value=value is None, description="default", indent=False,
                          tooltip="use the method's default (None)", layout=W.Layout(width="80px"))
        inner.disabled = auto.value

        def _toggle(change):
            inner.disabled = bool(change["new"])

        auto.observe(_toggle, names=["value"])
        box = W.HBox([inner, auto], layout=W.Layout(width=CONTROL_WIDTH))
        return KnobControl(k, box, inner, none_box=auto)
    # anything else: its repr in a text box, read back as a string
    w = W.Text(value=str(value), **common)
    return KnobControl(k, w, w)


class AttributeWeights:
    """Mixin of the widgets whose method takes per-attribute weights (GCI/AIP on images,
    AIP on text): a weight slider and a lock box per attribute of ``self._spec`` (an
    attribute spec, or None where the method has none), up to ``self._weight_max``."""

    def _weight_rows(self, header: str) -> list[W.Widget]:
        """Build ``weight_sliders`` / ``lock_boxes``; the header line and one row per attribute."""
        from ..models.conditional import LOCK_WEIGHT

        self.weight_sliders: dict[str, W.FloatSlider] = {}
        self.lock_boxes: dict[str, W.Checkbox] = {}
        rows: list[W.Widget] = [W.HTML(f"<div style='font-size:12px;margin-top:4px'>{header}</div>")]
        for name in self._spec.names:
            s = W.FloatSlider(value=1.0, min=0.0, max=self._weight_max, step=0.05,
                              description=name, readout_format=".2f", continuous_update=False,
                              tooltip=f"cost of changing {name} (0 = free)",
                              style={"description_width": "80px"}, layout=W.Layout(width="270px"))
            lock = W.Checkbox(value=False, description="lock", indent=False,
                              tooltip=f"keep {name} fixed (weight {LOCK_WEIGHT:g})",
                              layout=W.Layout(width="60px"))
            lock.observe(lambda c, s=s: setattr(s, "disabled", bool(c["new"])), names=["value"])
            lock.add_class(f"cfw-lock-{name}")
            s.add_class(f"cfw-weight-{name}")
            self.weight_sliders[name] = s
            self.lock_boxes[name] = lock
            rows.append(W.HBox([s, lock], layout=W.Layout(width=CONTROL_WIDTH)))
        return rows

    def set_weight(self, name: str, value: float | None = None, *, lock: bool | None = None) -> None:
        """Set an attribute's weight and/or lock from code."""
        if name not in self.weight_sliders:
            raise KeyError(f"unknown attribute {name!r}; known: {list(self.weight_sliders)}")
        if value is not None:
            self.weight_sliders[name].value = float(value)
        if lock is not None:
            self.lock_boxes[name].value = bool(lock)

    @property
    def attribute_weights(self) -> tuple[float, ...]:
        """The weights the next run uses (``LOCK_WEIGHT`` for locked attributes; () without
        an attribute spec)."""
        from ..models.conditional import LOCK_WEIGHT

        if self._spec is None:
            return ()
        return tuple(LOCK_WEIGHT if self.lock_boxes[n].value else float(self.weight_sliders[n].value)
                     for n in self._spec.names)

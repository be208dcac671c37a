"""The control panel of the widgets, built from a method's Config: the target class, the
knobs a person needs first (``steps``), and every other knob, device, seed and preview
rate in an "Advanced" accordion (its widgets are the same objects whether it is open or
closed, so values are kept; a method switch keeps same-named knob values).

:class:`ControlPanel` knows nothing about runs or views; the widget reads it
(:meth:`ControlPanel.knob_values`, ``target``) when a run starts.

Examples::

    p = ControlPanel(Wachter.Config, class_names=["0", "1"], defaults={"steps": 200})
    p.knob_values()["steps"]     # 200
    p.set_targets(exclude=0)     # the class the model predicts is not offered
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as W

from ..config import knobs, merge
from .controls import CONTROL_WIDTH, DESCRIPTION_WIDTH, KnobControl, knob_control

__all__ = ["ControlPanel", "PRIMARY_KNOBS"]

#: knobs shown first, outside "Advanced" (the step budget of each method family)
PRIMARY_KNOBS = ("steps", "max_flips")


def section(title: str) -> W.HTML:
    """A small bold heading with a rule under it, as wide as the controls."""
    return W.HTML(f"<div style='font-weight:600;margin:4px 0 2px 0;border-bottom:1px solid "
                  f"#d0d7de'>{html.escape(title)}</div>", layout=W.Layout(width=CONTROL_WIDTH))


class ControlPanel:
    """Target dropdown, knob controls, device / seed / preview rate.

    Args:
        config: the method's Config class.
        class_names: the target choices.
        defaults: initial knob values (validated against ``config``).
        hidden: knob names without a control (their ``defaults`` are still used).
        primary: knob names shown outside "Advanced".
        devices: the device dropdown's choices.
        device: the initial device.
        seed: the initial seed.
        preview_every: the initial live-preview interval (steps).
        app: app mode: no device, seed or preview controls (their values still apply).

    Attributes: ``target_dropdown``, ``knob_controls`` (name -> :class:`KnobControl`),
    ``primary_box`` (primary knobs), ``knob_box`` (the other knobs), ``advanced`` (the
    Accordion holding ``knob_box``, the run settings and any ``add_advanced`` widgets),
    ``device_dropdown``, ``seed_box``, ``preview_slider``.
    """

    def __init__(self, config: type, class_names: Sequence[str], *,
                 defaults: Mapping[str, Any] | None = None, hidden: Sequence[str] = (),
                 primary: Sequence[str] = PRIMARY_KNOBS, devices: Sequence[str] = ("auto", "cpu", "cuda"),
                 device: str = "auto", seed: int = 0, preview_every: int = 10,
                 app: bool = False) -> None:
        self._config = config
        self._defaults = dict(defaults or {})
        if self._defaults:  # fail early, with the Config's own error message
            merge(config, None, self._defaults)
        self._hidden = tuple(hidden)
        self._primary = tuple(primary)
        self.app = bool(app)
        self.class_names = list(class_names)
        self._excluded: int | None = None
        style = {"description_width": DESCRIPTION_WIDTH}
        self.target_dropdown = W.Dropdown(
            options=self._target_options(), description="target class",
            tooltip="The class the counterfactual should be classified as (the class the model "
            "already predicts is not offered).", style=style, layout=W.Layout(width=CONTROL_WIDTH))
        self.target_dropdown.add_class("cfw-target")
        self.primary_box = W.VBox(layout=W.Layout(width="100%"))
        self.knob_box = W.VBox(layout=W.Layout(width="100%"))
        self.knob_controls: dict[str, KnobControl] = {}
        self.device_dropdown = W.Dropdown(
            options=list(devices), value=device if device in devices else "auto",
            description="device", tooltip="auto = CUDA when available, else CPU",
            style=style, layout=W.Layout(width=CONTROL_WIDTH))
        self.seed_box = W.IntText(value=int(seed), description="seed", tooltip="Same seed, same result.",
                                  style=style, layout=W.Layout(width=CONTROL_WIDTH))
        self.preview_slider = W.IntSlider(
            value=int(preview_every), min=1, max=100, description="preview every",
            tooltip="Redraw the live preview every this many steps.", continuous_update=False,
            style=style, layout=W.Layout(width=CONTROL_WIDTH))
        self.device_dropdown.add_class("cfw-device")
        self.seed_box.add_class("cfw-seed")
        self._extra_advanced: list[W.Widget] = []
        self.advanced_box = W.VBox(layout=W.Layout(width="100%"))
        self.advanced = W.Accordion(children=[self.advanced_box], layout=W.Layout(width="352px"))
        self.advanced.set_title(0, "Advanced")
        self.advanced.selected_index = None  # closed
        self.advanced.add_class("cfw-advanced")
        self.build_knobs(config)

    # ------------------------------------------------------------- knobs
    def build_knobs(self, config: type, keep: Mapping[str, Any] | None = None) -> None:
        """(Re)build the knob controls for ``config``; ``keep`` values win over defaults
        (a kept value outside the new knob's range falls back to its default)."""
        self._config = config
        controls: dict[str, KnobControl] = {}
        for k in knobs(config):
            if k.name in self._hidden:
                continue
            value = self._defaults.get(k.name, k.default)
            if keep and k.name in keep:
                value = keep[k.name]
            try:
                controls[k.name] = knob_control(k, value)
            except Exception:  # noqa: BLE001 - out of the new range: the knob's default
                controls[k.name] = knob_control(k, k.default)
        self.knob_controls = controls
        self.primary_box.children = [c.widget for n, c in controls.items() if n in self._primary]
        self.knob_box.children = [c.widget for n, c in controls.items() if n not in self._primary]
        self._fill_advanced()

    def add_advanced(self, widgets: Sequence[W.Widget]) -> None:
        """Show ``widgets`` (a subclass's rarely used controls) inside "Advanced"."""
        self._extra_advanced = list(widgets)
        self._fill_advanced()

    def _fill_advanced(self) -> None:
        run = [] if self.app else [section("Run settings"), self.device_dropdown, self.seed_box,
                                   self.preview_slider]
        items = [*self._extra_advanced, self.knob_box, *run]
        self.advanced_box.children = items
        empty = not self.knob_box.children and not self._extra_advanced and not run
        self.advanced.layout.display = "none" if empty else None

    def knob_values(self) -> dict[str, Any]:
        """The values of the visible controls, plus ``defaults`` of hidden knobs."""
        out = {k: v for k, v in self._defaults.items() if k in self._hidden}
        out.update({k: c.value for k, c in self.knob_controls.items()})
        return out

    def set_knobs(self, **values: Any) -> None:
        """Set knob values from code (validated against the Config first); a knob
        without a control keeps the value as a hidden default."""
        merge(self._config, None, {**self.knob_values(), **values})
        for k, v in values.items():
            if k in self.knob_controls:
                self.knob_controls[k].value = v
            else:
                self._defaults[k] = v
                if k not in self._hidden:
                    self._hidden = (*self._hidden, k)

    def set_hidden(self, defaults: Mapping[str, Any], hidden: Sequence[str]) -> None:
        """Replace the hidden knobs and their values; visible controls stay."""
        self._defaults = dict(defaults)
        self._hidden = tuple(hidden)

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self._defaults)

    @property
    def hidden(self) -> tuple[str, ...]:
        return self._hidden

    # ------------------------------------------------------------ target
    def _target_options(self) -> list[tuple[str, int]]:
        return [(name, k) for k, name in enumerate(self.class_names) if k != self._excluded]

    def set_targets(self, class_names: Sequence[str] | None = None, *, exclude: int | None = None,
                    value: int | None = None) -> None:
        """Offer ``class_names`` as targets, all but ``exclude`` (the class the model
        predicts now), and select ``value`` (or keep the current one where offered)."""
        if class_names is not None:
            self.class_names = list(class_names)
        self._excluded = exclude
        opts = self._target_options()
        cur = self.target_dropdown.value if value is None else value
        valid = [v for _, v in opts]
        if cur not in valid:
            cur = valid[0] if valid else None
        if tuple(self.target_dropdown.options) != tuple(opts):
            self.target_dropdown.options = opts  # selects the first option
        if cur is not None:
            self.target_dropdown.value = cur

    @property
    def excluded(self) -> int | None:
        """The class not offered as a target (the model's prediction for the input)."""
        return self._excluded

    # ------------------------------------------------------------- state
    def set_disabled(self, flag: bool, extra: Sequence[W.Widget] = ()) -> None:
        """Lock (during a run) or unlock every control, and ``extra`` widgets."""
        for c in self.knob_controls.values():
            c.disabled = flag
        for w in (self.target_dropdown, self.device_dropdown, self.seed_box, *extra):
            if hasattr(w, "disabled"):
                w.disabled = flag

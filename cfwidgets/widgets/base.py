"""The generic counterfactual widget: controls from a Config, Run/Stop in a thread, views.

See the package docstring (:mod:`cfwidgets.widgets`) for the extension points.
"""

from __future__ import annotations

import html
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import ipywidgets as W
import numpy as np
import torch
from torch import Tensor

from ..config import knobs, merge
from ..methods.base import CounterfactualMethod
from ..protocols import StepState
from ..result import CounterfactualResult
from ..viz import html as vh
from .controls import CONTROL_WIDTH, DESCRIPTION_WIDTH, KnobControl, knob_control

__all__ = ["CounterfactualWidget", "RunJob"]

StepListener = Callable[[int, StepState], Any]

_WARM = threading.Event()


def _warm_up_torch() -> None:
    """torch imports ~800 modules (torch._dynamo) at the first optimizer step: 3-6 s on a
    small CPU. Pay it in the background once per process, while the user picks a target,
    instead of on the first Run click."""
    if _WARM.is_set():
        return
    _WARM.set()

    def work():
        try:
            p = torch.zeros(1, requires_grad=True)
            opt = torch.optim.Adam([p], lr=0.1)
            p.sum().backward()
            opt.step()
        except Exception:  # noqa: BLE001 - a warm-up only; a real run reports errors
            pass

    threading.Thread(target=work, name="cfwidgets-warmup", daemon=True).start()


@dataclass
class RunJob:
    """Everything one run needs, read from the widget on the caller's thread (so the
    worker thread never reads widget state)."""

    method: CounterfactualMethod
    x: Any  # (1, C, H, W) tensor, or [str] for text
    target: int
    overrides: dict
    seed: int
    device: str | None
    preview_every: int


class CounterfactualWidget(W.VBox):
    """Explore one method's counterfactuals with sliders: knobs from the method's Config,
    an input picker, a target class, Run/Stop, progress, live preview and result views.

    Args:
        method: a :class:`~cfwidgets.methods.base.CounterfactualMethod` (models inside).
        data: an ``ImageDataset`` (anything with ``.x``, optional ``.y`` and
            ``.class_names``), or images ``(N, C, H, W)`` / ``(C, H, W)`` / ``(H, W)`` as a
            tensor or array.
        index: the first input shown.
        target: the first target class (index or name); default: the runner-up class.
        defaults: initial knob values (e.g. ``{"steps": 200}``), validated against the Config.
        hidden: knob names not shown as controls (their ``defaults`` value, if any, is
            still passed to ``explain``).
        device, seed: initial values of the device dropdown and the seed box.
        preview_every: live preview of the counterfactual every this many steps.
        autoencoders, oracle: optional models for the realism (IM1/IM2) and oracle metrics.
        scale: image enlargement factor (default: about 140 px per image).
        title: header text (default: the method's title).

    Examples::

        from cfwidgets import zoo, data
        from cfwidgets.methods import Wachter
        from cfwidgets.widgets import CounterfactualWidget
        w = CounterfactualWidget(Wachter(zoo.load("mnist/cnn")), data.load_mnist("test"))
        w                     # shows the widget; press Run
        w.run(block=True)     # or run from code (synchronously) ...
        w.result              # ... and keep working with the CounterfactualResult
    """

    #: knob names a subclass shows with its own controls (merged with ``hidden=``)
    hidden_knobs: ClassVar[tuple[str, ...]] = ()
    #: device choices offered in the dropdown
    devices: ClassVar[tuple[str, ...]] = ("auto", "cpu", "cuda")
    #: displayed size in pixels of the longer image side (before/after/difference)
    view_px: ClassVar[int] = 140

    def __init__(
        self,
        method: CounterfactualMethod,
        data: Any = None,
        *,
        index: int = 0,
        target: int | str | None = None,
        defaults: Mapping[str, Any] | None = None,
        hidden: Sequence[str] = (),
        device: str = "auto",
        seed: int = 0,
        preview_every: int = 10,
        autoencoders: Any = None,
        oracle: Any = None,
        scale: int | None = None,
        title: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(method, CounterfactualMethod):
            raise TypeError(
                f"method must be a CounterfactualMethod (e.g. Wachter(classifier)), got "
                f"{type(method).__name__}.")
        self._method = method
        self._lock = threading.RLock()
        self._stop_event = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None
        self._step_listeners: list[StepListener] = []
        self._live_losses: dict[str, list] = {}
        self._last_progress = 0.0
        self._scrub_quiet = False
        self._title = title
        self.autoencoders = autoencoders
        self.oracle = oracle
        self.result: CounterfactualResult | None = None  #: the last result (also when stopped)
        self.error: BaseException | None = None  #: the last run's exception, if any
        self.metrics: dict = {}  #: metrics row of the last result
        self.timings: dict[str, float] = {}  #: seconds: explain, run_to_view, preview_count
        self._hidden = tuple(self.hidden_knobs) + tuple(hidden)
        self._defaults = dict(defaults or {})
        if self._defaults:  # fail early, with the Config's own error message
            merge(method.Config, None, self._defaults)

        self._set_data(data)
        self._scale = scale or self._auto_scale()

        # ---- standard controls
        self.target_dropdown = W.Dropdown(
            options=self._target_options(), description="target class",
            tooltip="The class the counterfactual should be classified as.",
            style={"description_width": DESCRIPTION_WIDTH}, layout=W.Layout(width=CONTROL_WIDTH))
        self.knob_controls: dict[str, KnobControl] = {}
        self.knob_box = W.VBox(layout=W.Layout(width="100%"))
        self._build_knob_controls()
        self.device_dropdown = W.Dropdown(
            options=list(self.devices), value=device if device in self.devices else "auto",
            description="device", tooltip="auto = CUDA when available, else CPU",
            style={"description_width": DESCRIPTION_WIDTH}, layout=W.Layout(width=CONTROL_WIDTH))
        self.seed_box = W.IntText(
            value=int(seed), description="seed", tooltip="Same seed, same result.",
            style={"description_width": DESCRIPTION_WIDTH}, layout=W.Layout(width=CONTROL_WIDTH))
        self.preview_slider = W.IntSlider(
            value=int(preview_every), min=1, max=100, description="preview every",
            tooltip="Redraw the live preview every this many steps.", continuous_update=False,
            style={"description_width": DESCRIPTION_WIDTH}, layout=W.Layout(width=CONTROL_WIDTH))
        self.run_button = W.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="Optimise a counterfactual with these settings",
                                   layout=W.Layout(width="110px"))
        self.stop_button = W.Button(description="Stop", button_style="warning", icon="stop",
                                    disabled=True, tooltip="Stop after the current step; keeps "
                                    "the partial result", layout=W.Layout(width="110px"))
        self.progress = W.IntProgress(value=0, min=0, max=1, description="progress",
                                      style={"description_width": DESCRIPTION_WIDTH},
                                      layout=W.Layout(width=CONTROL_WIDTH))
        self.status = W.HTML("ready: pick an input and a target, then press Run.",
                             layout=W.Layout(width=CONTROL_WIDTH, min_height="20px"))
        self.status.add_class("cfw-status")
        self.error_box = W.HTML("", layout=W.Layout(display="none", width="100%"))
        self.error_box.add_class("cfw-error")
        for w, cls in ((self.target_dropdown, "cfw-target"), (self.run_button, "cfw-run"),
                       (self.stop_button, "cfw-stop"), (self.device_dropdown, "cfw-device"),
                       (self.seed_box, "cfw-seed"), (self.progress, "cfw-progress")):
            w.add_class(cls)
        self.run_button.on_click(self._on_run_click)
        self.stop_button.on_click(lambda _b: self.stop())
        self.target_dropdown.observe(self._on_target_change, names=["value"])

        self.input_controls: list[W.Widget] = self.make_input_controls()
        self.views: list[W.Widget] = self.make_views()

        # ---- extension points: called once, after the standard widgets exist
        self._extra_controls = list(self.extra_controls())
        self._extra_views = list(self.extra_views())

        self.children = self._layout()
        self.add_class("cfw-widget")
        self._select_target(target)
        self.show_input()
        _warm_up_torch()

    # ================================================================== data
    def _set_data(self, data: Any) -> None:
        self.labels: Tensor | None = None
        names = None
        if data is None:
            raise ValueError("pass inputs to explain: an ImageDataset or images (N, C, H, W).")
        if isinstance(data, (list, tuple)) and data and isinstance(data[0], str):
            self.inputs: Any = list(data)
        elif hasattr(data, "x"):
            self.inputs = self._as_images(data.x)
            y = getattr(data, "y", None)
            self.labels = None if y is None else torch.as_tensor(y)
            names = getattr(data, "class_names", None)
        else:
            self.inputs = self._as_images(data)
        self.class_names: list[str] = list(
            self._method.class_names or names or [str(k) for k in range(self._num_classes())])

    def _as_images(self, x: Any) -> Tensor:
        t = torch.from_numpy(np.asarray(x)) if not isinstance(x, Tensor) else x
        t = t.detach().cpu()
        if not t.dtype.is_floating_point:
            raise TypeError(f"images must be floats in [0, 1], got dtype {t.dtype}"
                            + (" (use x.float() / 255)" if t.dtype == torch.uint8 else "") + ".")
        shape = self._method.input_shape
        if t.ndim == 2:  # (H, W)
            t = t[None, None]
        elif t.ndim == 3:
            if shape is not None and tuple(t.shape) == tuple(shape):
                t = t[None]  # one (C, H, W) image
            elif shape is not None and shape[0] == 1 and tuple(t.shape[1:]) == tuple(shape[1:]):
                t = t[:, None]  # (N, H, W) grey images
            else:
                t = t[None]
        if t.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), (C, H, W) or (H, W); got "
                             f"{tuple(t.shape)}.")
        if t.shape[0] == 0:
            raise ValueError("no inputs: the data set is empty.")
        return t.float()

    def _num_classes(self) -> int:
        with torch.no_grad():
            return int(self.predict_probs(self.input_at(0)).shape[-1])

    @property
    def n_inputs(self) -> int:
        return len(self.inputs)

    def input_at(self, i: int) -> Any:
        """Input ``i`` as a batch of one (``(1, C, H, W)`` or ``[str]``)."""
        return self.inputs[i:i + 1]

    def _auto_scale(self) -> int:
        if isinstance(self.inputs, Tensor):
            side = max(self.inputs.shape[-2:])
            return max(1, self.view_px // side)
        return 1

    # ============================================================ the method
    @property
    def method(self) -> CounterfactualMethod:
        return self._method

    def set_method(self, method: CounterfactualMethod) -> None:
        """Swap in another method (e.g. when a generator dropdown changes). Knob controls
        are rebuilt when the Config class differs, keeping values of same-named knobs;
        the class names and the before view are refreshed."""
        if not isinstance(method, CounterfactualMethod):
            raise TypeError(f"expected a CounterfactualMethod, got {type(method).__name__}.")
        with self._lock:
            if self._running:
                raise RuntimeError("cannot change the method while a run is in progress; "
                                   "press Stop first.")
            old = self._method
            self._method = method
        if method.Config is not old.Config:
            keep = {k: c.value for k, c in self.knob_controls.items()}
            self._build_knob_controls(keep)
        if method.class_names and list(method.class_names) != self.class_names:
            self.class_names = list(method.class_names)
            t = self.target
            self.target_dropdown.options = self._target_options()
            self._select_target(t if t < len(self.class_names) else None)
        self.clear_result()
        self.show_input()

    def predict_probs(self, x: Any) -> Tensor:
        """``(B, K)`` class probabilities of ``x`` on the CPU (hook: text widgets may
        override)."""
        m = self._method
        with torch.no_grad():
            xin = x.to(m.device) if isinstance(x, Tensor) else x
            logits = m.classifier(xin)
        return logits.float().softmax(-1).cpu()

    # ============================================================== controls
    def _build_knob_controls(self, keep: Mapping[str, Any] | None = None) -> None:
        controls: dict[str, KnobControl] = {}
        for k in knobs(self._method.Config):
            if k.name in self._hidden:
                continue
            value = self._defaults.get(k.name, k.default)
            if keep and k.name in keep:
                value = keep[k.name]
            try:
                controls[k.name] = knob_control(k, value)
            except Exception:  # a kept value outside the new knob's range: use its default
                controls[k.name] = knob_control(k, k.default)
        self.knob_controls = controls
        self.knob_box.children = [c.widget for c in controls.values()]

    def _target_options(self) -> list[tuple[str, int]]:
        return [(name, k) for k, name in enumerate(self.class_names)]

    def _select_target(self, target: int | str | None) -> None:
        if isinstance(target, str):
            if target not in self.class_names:
                raise ValueError(f"unknown target class {target!r}; known: {self.class_names}.")
            target = self.class_names.index(target)
        if target is None:
            target = self._runner_up()
        if not 0 <= int(target) < len(self.class_names):
            raise ValueError(f"target {target} out of range: {len(self.class_names)} classes.")
        self.target_dropdown.value = int(target)

    def _runner_up(self) -> int:
        probs = self.predict_probs(self.current_input())[0]
        return int(probs.topk(2).indices[1]) if probs.numel() > 1 else 0

    def make_input_controls(self) -> list[W.Widget]:
        """Hook: the widgets that pick the input (default: an index slider over the data
        set and a line that says the label and the model's prediction)."""
        n = self.n_inputs
        self.index_slider = W.IntSlider(
            value=0, min=0, max=max(0, n - 1), description="input #",
            tooltip=f"Which of the {n} inputs to explain.", continuous_update=False,
            style={"description_width": DESCRIPTION_WIDTH}, layout=W.Layout(width=CONTROL_WIDTH))
        self.index_slider.observe(lambda _c: self._on_input_change(), names=["value"])
        self.input_info = W.HTML("", layout=W.Layout(width=CONTROL_WIDTH))
        self.input_info.add_class("cfw-input-info")
        if n <= 1:
            self.index_slider.layout.display = "none"
        return [self.index_slider, self.input_info]

    def extra_controls(self) -> list[W.Widget]:
        """Hook: method-specific controls, shown under the method's knobs."""
        return []

    def extra_views(self) -> list[W.Widget]:
        """Hook: method-specific view panels, shown under the standard views."""
        return []

    def _on_input_change(self) -> None:
        try:
            self.clear_result()
            self.show_input()
            self._set_status("ready: press Run for this input.")
            if self.current_target() == int(self._probs_before.argmax()):
                self._select_target(None)  # the runner-up: a target must differ
        except Exception as e:  # noqa: BLE001 - shown to the user, not swallowed
            self.show_error(e)

    def _on_target_change(self, _change) -> None:
        try:
            res = self.result
            if res is not None and int(res.target[0]) != self.current_target():
                self.clear_result()
                if hasattr(self, "after_image"):
                    self.show_images(None)
                self._set_status("ready: press Run for the new target.")
            elif hasattr(self, "probs_view") and hasattr(self, "_probs_before"):
                after = res.probs_cf[0] if res is not None else None
                self.probs_view.value = vh.prob_bars_html(
                    self._probs_before, after, self.current_target(), self.class_names)
        except Exception as e:  # noqa: BLE001
            self.show_error(e)

    # ----------------------------------------------------------- widget state
    @property
    def index(self) -> int:
        s = getattr(self, "index_slider", None)
        return int(s.value) if s is not None else 0

    @index.setter
    def index(self, i: int) -> None:
        self.index_slider.value = int(i)

    @property
    def target(self) -> int:
        return int(self.target_dropdown.value)

    @target.setter
    def target(self, t: int | str) -> None:
        self._select_target(t)

    def current_input(self) -> Any:
        """Hook: the batch of one input to explain (default: ``input_at(index)``)."""
        return self.input_at(self.index)

    def current_target(self) -> int:
        """Hook: the target class (default: the dropdown's value)."""
        return self.target

    def knob_values(self) -> dict[str, Any]:
        """The knob values of the visible controls, plus ``defaults`` of hidden knobs."""
        out = {k: v for k, v in self._defaults.items() if k in self._hidden}
        out.update({k: c.value for k, c in self.knob_controls.items()})
        return out

    def set_knobs(self, **values: Any) -> None:
        """Set knob controls from code (validated against the Config first)."""
        merge(self._method.Config, None, {**self.knob_values(), **values})
        for k, v in values.items():
            if k in self.knob_controls:
                self.knob_controls[k].value = v
            else:
                self._defaults[k] = v
                if k not in self._hidden:
                    self._hidden = (*self._hidden, k)

    def set_hidden_knobs(self, defaults: dict[str, Any], hidden: Sequence[str]) -> None:
        """Replace the hidden knobs and their values (for a subclass that swaps in a method
        with other knobs); visible controls are left as they are."""
        self._defaults = dict(defaults)
        self._hidden = tuple(hidden)

    def explain_kwargs(self) -> dict[str, Any]:
        """Hook: widget state -> keyword overrides of ``method.explain`` (default: the
        knob values). Subclasses add what their own controls set, e.g.
        ``{**super().explain_kwargs(), "attribute_weights": (...)}``."""
        return self.knob_values()

    def config(self):
        """The validated Config the next run will use."""
        return merge(self._method.Config, None, self.explain_kwargs())

    # ================================================================ layout
    def _section(self, title: str) -> W.HTML:
        return W.HTML(f"<div style='font-weight:600;margin:6px 0 2px 0;border-bottom:1px solid "
                      f"#d0d7de'>{html.escape(title)}</div>", layout=W.Layout(width=CONTROL_WIDTH))

    def _layout(self) -> list[W.Widget]:
        m = self._method
        title = self._title or m.title or m.name
        paper = f"<div style='font-size:11px;color:#57606a'>{html.escape(m.paper)}</div>" if m.paper else ""
        self.header = W.HTML(f"<div style='font-size:15px;font-weight:600'>{html.escape(title)}"
                             f"</div>{paper}")
        controls = [self._section("Input"), *self.input_controls, self.target_dropdown,
                    self._section("Method settings"), self.knob_box]
        if self._extra_controls:
            controls += self._extra_controls
        controls += [self._section("Run"), self.device_dropdown, self.seed_box,
                     self.preview_slider,
                     W.HBox([self.run_button, self.stop_button],
                            layout=W.Layout(margin="6px 0 2px 0")),
                     self.progress, self.status]
        self.control_panel = W.VBox(controls, layout=W.Layout(width="360px", min_width="360px",
                                                              margin="0 16px 0 0"))
        self.control_panel.add_class("cfw-controls")
        # basis 0: long HTML lines wrap inside the panel instead of pushing the whole
        # panel under the controls; below min_width (narrow screens) it wraps on purpose
        self.view_panel = W.VBox(self.views, layout=W.Layout(flex="1 1 0%", min_width="520px"))
        self.view_panel.add_class("cfw-views")
        body = W.HBox([self.control_panel, self.view_panel],
                      layout=W.Layout(width="100%", flex_flow="row wrap", align_items="flex-start"))
        out = [self.header, body, self.error_box]
        if self._extra_views:
            self.extra_panel = W.VBox(self._extra_views)
            self.extra_panel.add_class("cfw-extra-views")
            out.append(self.extra_panel)
        return out

    def _make_path_probs_loss(self, tooltip: str, on_scrub, probs_min_height: str) -> None:
        """The views every widget shares: ``trajectory_slider`` / ``_label`` / ``_row`` (scrub
        handler ``on_scrub``), ``probs_view`` and ``loss_view``."""
        self.trajectory_slider = W.IntSlider(
            value=0, min=0, max=0, description="path", disabled=True, continuous_update=True,
            readout=False, tooltip=tooltip,
            style={"description_width": "40px"}, layout=W.Layout(width="360px"))
        self.trajectory_slider.add_class("cfw-path")
        self.trajectory_label = W.HTML("", layout=W.Layout(width="160px"))
        self.trajectory_slider.observe(on_scrub, names=["value"])
        self.trajectory_row = W.HBox([self.trajectory_slider, self.trajectory_label])
        self.probs_view = W.HTML(vh.prob_bars_html(None, None, None),
                                 layout=W.Layout(width="280px", min_height=probs_min_height))
        self.probs_view.add_class("cfw-probs-view")
        self.loss_view = W.HTML(vh.loss_svg({}), layout=W.Layout(width="270px", height="120px"))
        self.loss_view.add_class("cfw-loss-view")

    def make_views(self) -> list[W.Widget]:
        """Hook: the view panels (default: before | after | difference with a colour bar,
        a trajectory slider, probability bars beside a loss curve, a metrics line)."""
        px = self.image_px()

        def lay():
            return W.Layout(width=f"{px[1]}px", height=f"{px[0]}px")

        blank = self._png(self.placeholder_image())
        self.before_image = W.Image(value=blank, format="png", layout=lay())
        self.after_image = W.Image(value=blank, format="png", layout=lay())
        self.diff_image = W.Image(value=self._png(np.full(self._hw() + (3,), 0.97, np.float32)),
                                  format="png", layout=lay())
        for w, cls in ((self.before_image, "cfw-before"), (self.after_image, "cfw-after"),
                       (self.diff_image, "cfw-diff")):
            w.add_class(cls)

        def cap():
            return W.Layout(width=f"{max(px[1], 130)}px")

        self.before_label = W.HTML("before", layout=cap())
        self.after_label = W.HTML("after: press Run", layout=cap())
        self.diff_label = W.HTML("difference x&prime; &minus; x", layout=cap())
        self.before_label.add_class("cfw-before-label")
        self.after_label.add_class("cfw-after-label")
        colorbar = W.Image(value=vh.colorbar_png(height=px[0], width=12), format="png",
                           layout=W.Layout(width="12px", height=f"{px[0]}px"))
        self.colorbar_text = W.HTML()
        self.colorbar = W.HBox([colorbar, self.colorbar_text],
                               layout=W.Layout(align_items="flex-start", margin="0 0 0 4px"))
        self._set_diff_range(1.0)

        def col(img, label):
            return W.VBox([img, label], layout=W.Layout(align_items="center", margin="0 6px 0 0"))

        self.image_row = W.HBox([col(self.before_image, self.before_label),
                                 col(self.after_image, self.after_label),
                                 col(self.diff_image, self.diff_label), self.colorbar],
                                layout=W.Layout(align_items="flex-start"))
        self.image_row.add_class("cfw-images")
        self._make_path_probs_loss("Scrub through the optimisation path (snapshots).",
                                   self._on_scrub, probs_min_height="150px")
        self.metrics_view = W.HTML("", layout=W.Layout(width="100%", min_height="20px"))
        self.metrics_view.add_class("cfw-metrics-view")
        self.style_html = W.HTML(vh.CSS)  # shared CSS of the HTML parts
        self.style_html.layout.display = "none"
        row = W.HBox([self.probs_view, self.loss_view], layout=W.Layout(align_items="flex-start"))
        return [self.style_html, self.image_row, self.trajectory_row, row, self.metrics_view]

    # ================================================================ images
    def _hw(self) -> tuple[int, int]:
        if isinstance(self.inputs, Tensor):
            return int(self.inputs.shape[-2]), int(self.inputs.shape[-1])
        return (1, 1)

    def image_px(self) -> tuple[int, int]:
        """Height and width in screen pixels of the image views (for subclasses' panels)."""
        h, w = self._hw()
        return h * self._scale, w * self._scale

    def placeholder_image(self) -> np.ndarray:
        """The "nothing here yet" image shown before a run (input-sized, for subclasses)."""
        h, w = self._hw()
        a = np.full((h, w), 0.93, dtype=np.float32)
        a[::4, ::4] = 0.85  # a faint dotted pattern: "nothing here yet"
        return a

    def png(self, img: Any) -> bytes:
        """PNG bytes of an image (``(C, H, W)``, ``(H, W)`` or RGB ``(H, W, 3)``), enlarged
        like the widget's views (for ``ipywidgets.Image`` panels of subclasses)."""
        return vh.png_bytes(img, self._scale, fast=True)

    _png = png

    def _caption(self, role: str, probs: Tensor | None, extra: str = "") -> str:
        if probs is None:
            return f"{role}{extra}"
        k = int(probs.argmax())
        name = html.escape(self.class_names[k] if k < len(self.class_names) else str(k))
        ok = ""
        if role == "after":
            ok = " cfw-ok" if k == self.current_target() else " cfw-bad"
        return (f"{role}{extra}<br><span class='cfw-pred{ok}' data-class='{k}'>predicted "
                f"<b>{name}</b></span> <span style='color:#57606a'>({float(probs[k]):.2f})</span>")

    def _set_diff_range(self, vmax: float) -> None:
        """Set the difference map's symmetric range and relabel its colour bar."""
        self._diff_vmax = float(vmax)
        h = self.image_px()[0]
        self.colorbar_text.value = (
            f"<div style='height:{h}px;display:flex;flex-direction:column;"
            f"justify-content:space-between;font-size:11px;color:#57606a;line-height:1.1'>"
            f"<span>+{vmax:g}<br>added</span><span>0</span><span>removed<br>&minus;{vmax:g}"
            f"</span></div>")

    def show_images(self, x_cf: Tensor | None, probs_cf: Tensor | None = None, *,
                    caption: str = "", diff_range: float | None = None) -> None:
        """Show ``x_cf`` (``(C, H, W)``) as the after image with its difference to the
        current input (and its probabilities, when given). ``None`` clears the views.
        ``diff_range``: the colour bar's range (default: keep it, growing it to the
        smallest of ``viz.html.DIFF_RANGES`` that holds this difference). Subclasses use
        it for previews of their own (e.g. a what-if mode)."""
        x = self.current_input()[0]
        if x_cf is None:
            self.after_image.value = self._png(self.placeholder_image())
            self.diff_image.value = self._png(vh.diff_rgb(x, x))
            self.after_label.value = "after: press Run"
            self.probs_view.value = vh.prob_bars_html(self._probs_before, None,
                                                      self.current_target(), self.class_names)
            return
        x_cf = x_cf.detach().float().cpu()
        if diff_range is None:
            diff_range = max(self._diff_vmax, vh.diff_range((x, x_cf)))
        if diff_range != self._diff_vmax:
            self._set_diff_range(diff_range)
        self.after_image.value = self._png(x_cf)
        self.diff_image.value = self._png(vh.diff_rgb(x, x_cf, self._diff_vmax))
        self.after_label.value = self._caption("after", probs_cf, caption)
        if probs_cf is not None:
            self.probs_view.value = vh.prob_bars_html(self._probs_before, probs_cf,
                                                      self.current_target(), self.class_names)

    # ================================================================= hooks
    def show_input(self) -> None:
        """Hook: refresh the views for the current input (before image, probabilities)."""
        x = self.current_input()
        self._probs_before = self.predict_probs(x)[0]
        pred = int(self._probs_before.argmax())
        if hasattr(self, "input_info"):
            lab = ""
            if self.labels is not None:
                y = int(self.labels[self.index])
                lab = f"label <b>{html.escape(self.class_names[y])}</b> &middot; "
            self.input_info.value = (
                f"<span style='font-size:12px'>#{self.index} of {self.n_inputs}: {lab}model "
                f"says <b>{html.escape(self.class_names[pred])}</b> "
                f"({float(self._probs_before[pred]):.2f})</span>")
        if hasattr(self, "before_image") and isinstance(x, Tensor):
            self.before_image.value = self._png(x[0])
            self.before_label.value = self._caption("before", self._probs_before)
            self.show_images(None)

    def show_preview(self, step: int, state: StepState) -> None:
        """Hook: live preview during a run (called every ``preview every`` steps, on the
        worker thread). Default: the current counterfactual, its probabilities and the
        loss curve so far. Subclasses call ``super().show_preview(step, state)``."""
        x_cf = state.x_cf
        if isinstance(x_cf, Tensor) and hasattr(self, "after_image"):
            probs = state.probs[0].detach().float().cpu()
            self.show_images(x_cf[0], probs, caption=f" (step {step + 1})")
        if hasattr(self, "loss_view"):
            self.loss_view.value = vh.loss_svg(self._live_loss_values())

    def show_result(self, result: CounterfactualResult) -> None:
        """Hook: show a finished (or stopped) result in every view, then call
        :meth:`render_extra`. Subclasses without image views override it."""
        if hasattr(self, "after_image") and isinstance(result.x_cf, Tensor):
            stopped = " (stopped)" if result.stopped else ""
            frames = result.trajectory[:, 0] if isinstance(result.trajectory, Tensor) else result.x_cf[:1]
            vmax = vh.diff_range((result.x[:1], frames), (result.x[:1], result.x_cf[:1]))
            self.show_images(result.x_cf[0], result.probs_cf[0], caption=stopped, diff_range=vmax)
            self._set_trajectory(result)
        if hasattr(self, "loss_view"):
            self.loss_view.value = vh.loss_svg(result.losses)
        self.metrics = self.compute_metrics(result)
        if hasattr(self, "metrics_view"):
            self.metrics_view.value = vh.metrics_html(self.metrics, stopped=result.stopped)
        self.render_extra(result)

    def render_extra(self, result: CounterfactualResult) -> None:
        """Hook: update method-specific views for a new result (default: nothing)."""

    def compute_metrics(self, result: CounterfactualResult) -> dict:
        """Hook: the metrics row shown under the views (default:
        :func:`cfwidgets.metrics.evaluate`, with realism when ``autoencoders`` were given)."""
        from ..metrics import evaluate

        if result.is_text:  # text widgets add their own metrics
            return {"validity": float(result.success.float().mean()),
                    "target_prob": float(result.target_prob.mean()),
                    "time_s": float(result.meta.get("wall_time_s", float("nan")))}
        row = evaluate(result, autoencoders=self.autoencoders, oracle=self.oracle)
        row["time_s"] = float(result.meta.get("wall_time_s", float("nan")))
        return row

    def clear_result(self) -> None:
        """Forget the shown result (views back to "press Run")."""
        self.result = None
        self.metrics = {}
        if hasattr(self, "trajectory_slider"):
            self._scrub_quiet = True
            try:
                self.trajectory_slider.value = 0  # value first, then max (see above)
                self.trajectory_slider.max = 0
            finally:
                self._scrub_quiet = False
            self.trajectory_slider.disabled = True
            self.trajectory_label.value = ""
        if hasattr(self, "loss_view"):
            self.loss_view.value = vh.loss_svg({})
        if hasattr(self, "metrics_view"):
            self.metrics_view.value = ""

    # ============================================================ trajectory
    def _set_trajectory(self, result: CounterfactualResult) -> None:
        traj = result.trajectory
        n = 0 if traj is None else len(traj)
        # two messages, max first: in one message a front end may clamp the new value to
        # the old max and show the handle at the start while the model says "last"
        self._scrub_quiet = True
        try:
            self.trajectory_slider.max = max(0, n - 1)
            self.trajectory_slider.value = max(0, n - 1)
        finally:
            self._scrub_quiet = False
        self.trajectory_slider.disabled = n <= 1
        self._trajectory_caption(n - 1, result)

    def _trajectory_caption(self, i: int, result: CounterfactualResult) -> None:
        steps = result.trajectory_steps
        if not steps or i < 0:
            self.trajectory_label.value = ""
            return
        self.trajectory_label.value = (f"<span style='font-size:12px'>snapshot {i + 1}/"
                                       f"{len(steps)}: step {steps[i]}</span>")

    def _on_scrub(self, change) -> None:
        if self._scrub_quiet:
            return
        res = self.result
        if res is None or res.trajectory is None or self._running:
            return
        try:
            i = int(change["new"])
            frame = res.trajectory[i, 0] if isinstance(res.trajectory, Tensor) else None
            if frame is None:
                return
            last = i == len(res.trajectory) - 1
            probs = res.probs_cf[0] if last else self.predict_probs(frame[None])[0]
            step = res.trajectory_steps[i] if i < len(res.trajectory_steps) else i
            self.show_images(frame, probs, caption="" if last else f" (step {step})",
                             diff_range=self._diff_vmax)
            self._trajectory_caption(i, res)
        except Exception as e:  # noqa: BLE001 - shown to the user, not swallowed
            self.show_error(e)

    # ================================================================== runs
    @property
    def running(self) -> bool:
        return self._running

    def on_step(self, fn: StepListener) -> StepListener:
        """Register ``fn(step, state)``, called on the worker thread after every step
        (before the Stop check). Returns ``fn`` (usable as a decorator)."""
        self._step_listeners.append(fn)
        return fn

    def make_job(self) -> RunJob:
        """Read the widget state into a :class:`RunJob` (on the caller's thread)."""
        dev = self.device_dropdown.value
        return RunJob(method=self._method, x=self.current_input(), target=self.current_target(),
                      overrides=self.explain_kwargs(), seed=int(self.seed_box.value),
                      device=dev, preview_every=int(self.preview_slider.value))

    def run(self, block: bool = False, *, raise_errors: bool | None = None):
        """Start a run with the current settings.

        ``block=False`` (the Run button): the optimisation runs in a background thread and
        the notebook stays responsive; returns ``None`` at once (``wait()`` joins it).
        ``block=True`` (tests, nbval, scripts): runs here and returns the result.
        While a run is in progress another call does nothing and returns ``None``.
        Errors are shown in the widget; with ``block=True`` they are also raised
        (``raise_errors=False`` to only show them).
        """
        if raise_errors is None:
            raise_errors = block
        with self._lock:
            if self._running:
                self._set_status("a run is already in progress: press Stop to end it.", "warn")
                return None
            self._running = True
            self._stop_event.clear()
        self._t_click = time.perf_counter()
        try:
            job = self.make_job()
            merge(job.method.Config, None, job.overrides)  # bad knob values: say so now
        except Exception as e:
            with self._lock:
                self._running = False
            self.show_error(e)
            if raise_errors:
                raise
            return None
        self._set_running_ui(True, job)
        if block:
            self._work(job)
            if self.error is not None and raise_errors:
                raise self.error
            return self.result
        th = threading.Thread(target=self._work, args=(job,), name="cfwidgets-run", daemon=True)
        self._thread = th
        th.start()
        return None

    def run_sync(self) -> CounterfactualResult | None:
        """``run(block=True)``: run here and return the result (errors raised)."""
        return self.run(block=True)

    def wait(self, timeout: float | None = None) -> CounterfactualResult | None:
        """Wait for a background run to end; return the result."""
        th = self._thread
        if th is not None:
            th.join(timeout)
        return self.result

    def stop(self) -> None:
        """Ask the running optimisation to stop after the current step (keeps the partial
        result, marked ``stopped``)."""
        if self._running:
            self._t_stop = time.perf_counter()
            self._stop_event.set()
            self._set_status("stopping after this step...", "warn")

    def execute(self, job: RunJob, callback: Callable[[int, StepState], bool]
                ) -> CounterfactualResult:
        """Hook: the run itself, on the worker thread (default: move the method to the
        job's device and call ``explain``). Override to run more (e.g. a pixel baseline
        beside the main method, kept for :meth:`render_extra`); pass ``callback`` on so
        progress, preview and Stop keep working."""
        if job.device:
            job.method.to(job.device)
        return job.method.explain(job.x, job.target, callback=callback, generator=job.seed,
                                  **job.overrides)

    def _on_run_click(self, _button) -> None:
        try:
            self.run(block=False)
        except Exception as e:  # noqa: BLE001 - never lost in a front-end log
            self.show_error(e)

    def _set_running_ui(self, running: bool, job: RunJob | None = None) -> None:
        self.run_button.disabled = running
        self.stop_button.disabled = not running
        for c in self.knob_controls.values():
            c.disabled = running
        for w in (*self.input_controls, self.target_dropdown, self.device_dropdown,
                  self.seed_box, *self._extra_controls):
            if hasattr(w, "disabled"):
                w.disabled = running
        if hasattr(self, "trajectory_slider"):
            self.trajectory_slider.disabled = running or self.trajectory_slider.max == 0
        if running:
            self.error = None
            self.error_box.value = ""
            self.error_box.layout.display = "none"
            total = int(job.overrides.get("steps", 0)) if job is not None else 0
            with self.progress.hold_sync():
                self.progress.max = max(1, total)
                self.progress.value = 0
                self.progress.bar_style = ""
            self._set_status("running...", "info")
            if hasattr(self, "colorbar_text"):
                self._set_diff_range(vh.DIFF_RANGES[0])

    def _set_status(self, text: str, kind: str = "info") -> None:
        color = {"info": "#24292f", "warn": "#7d4e00", "ok": "#1a7f37", "error": "#cf222e"}[kind]
        self.status.value = f"<span style='font-size:12px;color:{color}'>{text}</span>"

    def _live_loss_values(self) -> dict[str, list[float]]:
        out = {}
        for k, vals in self._live_losses.items():
            if vals:
                out[k] = torch.stack(vals).float().cpu().tolist()
        return out

    def _callback(self, job: RunJob) -> Callable[[int, StepState], bool]:
        every = max(1, job.preview_every)

        def cb(step: int, state: StepState) -> bool:
            for fn in self._step_listeners:
                fn(step, state)
            for k, v in state.losses.items():
                self._live_losses.setdefault(k, []).append(v.detach().float().mean())
            now = time.perf_counter()
            last = step + 1 >= state.total
            if last or now - self._last_progress > 0.05 or step % every == 0:
                self._last_progress = now
                with self.progress.hold_sync():
                    self.progress.max = max(1, state.total)
                    self.progress.value = step + 1
                tp = float(state.target_prob[0])
                self._set_status(f"step {step + 1}/{state.total} &middot; p(target) = {tp:.3f}")
            if step % every == 0 and not self._stop_event.is_set():
                self.show_preview(step, state)
                self.timings["previews"] = self.timings.get("previews", 0) + 1
            return self._stop_event.is_set()

        return cb

    def _work(self, job: RunJob) -> None:
        self._live_losses = {}
        self.timings = {"previews": 0}
        try:
            res = self.execute(job, self._callback(job))
            with self._lock:
                self.result = res
            self.show_result(res)
            t_view = time.perf_counter()
            self.timings["explain_s"] = float(res.meta.get("wall_time_s", float("nan")))
            self.timings["run_to_view_s"] = t_view - self._t_click
            used = int(res.steps[0]) if res.steps is not None else None
            if res.stopped:
                t_stop = getattr(self, "_t_stop", None)
                after = ""
                if t_stop is not None and t_stop >= self._t_click:
                    self.timings["stop_to_view_s"] = t_view - t_stop
                    after = f", {t_view - t_stop:.2f} s after Stop"
                self._set_status(
                    f"<span class='cfw-stopped'>stopped at step {used}{after}: partial "
                    f"result</span>", "warn")
                self.progress.bar_style = "warning"
            else:
                ok = bool(res.success[0])
                self.progress.value = self.progress.max if ok else self.progress.value
                self.progress.bar_style = "success" if ok else "danger"
                what = "reached the target" if ok else "did not reach the target"
                self._set_status(f"done: {what} in {used} steps, "
                                 f"{self.timings['run_to_view_s']:.2f} s", "ok" if ok else "warn")
        except BaseException as e:  # noqa: BLE001 - shown in the widget, and kept in .error
            self.show_error(e)
        finally:
            with self._lock:
                self._running = False
            self._set_running_ui(False)

    # ================================================================ errors
    def show_error(self, exc: BaseException) -> None:
        """Show ``exc`` (type, message and traceback) in the widget's error box; it is
        also kept in ``widget.error``."""
        self.error = exc
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.error_box.value = (
            f"<div style='border:1px solid #cf222e;background:#ffebe9;color:#82071e;"
            f"padding:6px 10px;border-radius:4px;font-size:13px'>"
            f"<b>{html.escape(type(exc).__name__)}</b>: {html.escape(str(exc))}"
            f"<details><summary style='cursor:pointer;font-size:12px'>traceback</summary>"
            f"<pre style='font-size:11px;white-space:pre-wrap'>{html.escape(tb)}</pre>"
            f"</details></div>")
        self.error_box.layout.display = "block"
        self._set_status(f"error: {html.escape(type(exc).__name__)} (see below)", "error")
        if hasattr(self, "progress"):
            self.progress.bar_style = "danger"

    # ======================================================= static fallback
    def static_html(self) -> str:
        """HTML of the last result (or of the current input), for renderers without a
        live kernel: exported notebooks, nbval, GitHub."""
        m = self._method
        title = html.escape(self._title or m.title or m.name)
        if self.result is not None:
            return vh.result_html(self.result) + vh.metrics_html(self.metrics,
                                                                 stopped=self.result.stopped)
        x = self.current_input()
        img = vh.img_tag(x[0], self._scale, alt="input") if isinstance(x, Tensor) else html.escape(str(x[0]))
        return (f"{vh.CSS}<div><p><b>{title}</b> widget (no result yet; needs a live kernel "
                f"to run)</p>{img}</div>")

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        if data is None:
            return None
        try:
            data["text/html"] = self.static_html()
        except Exception:  # noqa: BLE001 - the live view must not fail for its fallback
            pass
        return data

    def __repr__(self) -> str:  # cheap: no rendering, no child reprs
        res = "none" if self.result is None else repr(self.result)
        return (f"{type(self).__name__}(method={self._method.name!r}, input={self.index}, "
                f"target={self.target}, running={self._running}, result={res})")

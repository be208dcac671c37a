"""The generic counterfactual widget, composed of three parts:

- a :class:`~cfwidgets.widgets.runner.Runner` (Run/Stop, the worker thread, progress,
  status, errors),
- a :class:`~cfwidgets.widgets.panel.ControlPanel` built from the method's Config (target,
  ``steps`` first, every other knob and the run settings in "Advanced"),
- views from :mod:`cfwidgets.widgets.views` (images, probabilities, path, loss, metrics).

See the package docstring (:mod:`cfwidgets.widgets`) for the hooks a subclass overrides.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import ipywidgets as W
import numpy as np
import torch
from torch import Tensor

from ..config import merge
from ..methods.base import CounterfactualMethod
from ..protocols import StepState
from ..result import CounterfactualResult
from ..viz import html as vh
from .controls import CONTROL_WIDTH, DESCRIPTION_WIDTH, KnobControl
from .panel import PRIMARY_KNOBS, ControlPanel, section
from .runner import RunJob, Runner, StepListener, warm_up_torch
from .views import ImageViews, LossView, MetricsView, PathView, ProbsView, header_html, pred_caption

__all__ = ["CounterfactualWidget", "RunJob"]

#: the app-mode line for the person using the widget (``intro=`` replaces it)
APP_INTRO = ("Pick an input and the class you would like the model to see, then press Run: "
             "the widget looks for a small change to the input that makes the model say that "
             "class, and shows what changed (red = added, blue = removed).")


class CounterfactualWidget(W.VBox):
    """Explore one method's counterfactuals with sliders: an input picker, a target class,
    the ``steps`` budget and Run/Stop first, the result beside them, every other knob in
    an "Advanced" section; live preview, a path slider, probabilities, loss and metrics.

    Args:
        method: a :class:`~cfwidgets.methods.base.CounterfactualMethod` (models inside).
        data: an ``ImageDataset`` (anything with ``.x``, optional ``.y`` and
            ``.class_names``), or images ``(N, C, H, W)`` / ``(C, H, W)`` / ``(H, W)`` as a
            tensor or array.
        index: the first input shown.
        target: the first target class (index or name; not the class the model predicts);
            default: the runner-up class.
        defaults: initial knob values (e.g. ``{"steps": 200}``), validated against the Config.
        hidden: knob names not shown as controls (their ``defaults`` value, if any, is
            still passed to ``explain``).
        device: initial value of the device dropdown.
        seed: initial value of the seed box.
        preview_every: live preview of the counterfactual every this many steps.
        autoencoders: optional class autoencoders for the realism metrics (IM1/IM2).
        oracle: optional independent classifier for the oracle metric.
        scale: image enlargement factor (default: about 140 px per image).
        title: header text (default: the method's title).
        app: app mode (Voila, or a page for people who do not program): only the input,
            target and method controls and Run/Stop, an intro line, no knobs or run
            settings (their ``defaults`` still apply).
        intro: the app-mode intro line (default: :data:`APP_INTRO`).

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
    #: knob names shown first, outside "Advanced"
    primary_knobs: ClassVar[tuple[str, ...]] = PRIMARY_KNOBS
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
        app: bool = False,
        intro: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(method, CounterfactualMethod):
            raise TypeError(
                f"method must be a CounterfactualMethod (e.g. Wachter(classifier)), got "
                f"{type(method).__name__}.")
        self._method = method
        self._title = title
        self.app = bool(app)
        self._intro = (intro or APP_INTRO) if app else intro
        self.autoencoders = autoencoders
        self.oracle = oracle
        self.metrics: dict = {}  #: metrics row of the last result
        self._path_probs: Tensor | None = None

        self._set_data(data)
        self._scale = scale or self._auto_scale()
        self._probs_before = self.predict_probs(self.input_at(0))[0]

        # ---- the three parts
        self.panel = ControlPanel(
            method.Config, self.class_names, defaults=defaults,
            hidden=tuple(self.hidden_knobs) + tuple(hidden), primary=self.primary_knobs,
            devices=self.devices, device=device, seed=seed, preview_every=preview_every, app=app)
        self.runner = Runner(execute=self.execute, on_preview=self.show_preview,
                             on_result=self.show_result, on_busy=self._set_running_ui)
        self.target_dropdown.observe(self._on_target_change, names=["value"])
        self._quiet_target = False
        self.run_button.on_click(self._on_run_click)

        self.input_controls: list[W.Widget] = self.make_input_controls()
        self.views: list[W.Widget] = self.make_views()
        # ---- extension points: called once, after the standard parts exist
        self._primary_controls = list(self.primary_controls())
        self._extra_controls = list(self.extra_controls())
        self.panel.add_advanced(list(self.advanced_controls()))
        self._extra_views = list(self.extra_views())

        self.children = self._layout()
        self.add_class("cfw-widget")
        if app:
            self.add_class("cfw-app")
        if 0 < int(index) < self.n_inputs:
            self.index_slider.value = int(index)  # observers: show_input
        self.show_input()
        self._select_target(target)
        # measured in Voila on this machine: delaying the warm-up did not speed up the first
        # render, and the first Run then paid the imports (3.3 s instead of 1.3 s)
        warm_up_torch()

    # ======================================================= part accessors
    # (the parts' widgets under the names the widget has always had)
    target_dropdown = property(lambda self: self.panel.target_dropdown)
    device_dropdown = property(lambda self: self.panel.device_dropdown)
    seed_box = property(lambda self: self.panel.seed_box)
    preview_slider = property(lambda self: self.panel.preview_slider)
    knob_box = property(lambda self: self.panel.knob_box)
    run_button = property(lambda self: self.runner.run_button)
    stop_button = property(lambda self: self.runner.stop_button)
    progress = property(lambda self: self.runner.progress)
    status = property(lambda self: self.runner.status)
    error_box = property(lambda self: self.runner.error_box)
    timings = property(lambda self: self.runner.timings,
                       doc="seconds: explain_s, run_to_view_s, stop_to_view_s; previews")

    @property
    def knob_controls(self) -> dict[str, KnobControl]:
        return self.panel.knob_controls

    @property
    def result(self) -> CounterfactualResult | None:
        """The last result (also when stopped)."""
        return self.runner.result

    @result.setter
    def result(self, res: CounterfactualResult | None) -> None:
        self.runner.result = res

    @property
    def error(self) -> BaseException | None:
        """The last run's exception, if any."""
        return self.runner.error

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
        """Swap in another method (e.g. when a method or generator dropdown changes): the
        header shows its title and paper; knob controls are rebuilt when the Config class
        differs, keeping values of same-named knobs; the class names and views refresh."""
        if not isinstance(method, CounterfactualMethod):
            raise TypeError(f"expected a CounterfactualMethod, got {type(method).__name__}.")
        with self.runner.lock:
            if self.runner.running:
                raise RuntimeError("cannot change the method while a run is in progress; "
                                   "press Stop first.")
            old = self._method
            self._method = method
        if method.Config is not old.Config:
            self.panel.build_knobs(method.Config, {k: c.value for k, c in self.knob_controls.items()})
        if method.class_names and list(method.class_names) != self.class_names:
            self.class_names = list(method.class_names)
            self.panel.set_targets(self.class_names)
        self._refresh_header()
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
        self.panel.build_knobs(self._method.Config, keep)

    def _select_target(self, target: int | str | None) -> None:
        if isinstance(target, str):
            if target not in self.class_names:
                raise ValueError(f"unknown target class {target!r}; known: {self.class_names}.")
            target = self.class_names.index(target)
        pred = int(self._probs_before.argmax())
        if target is None:
            target = self._runner_up()
        if not 0 <= int(target) < len(self.class_names):
            raise ValueError(f"target {target} out of range: {len(self.class_names)} classes.")
        if int(target) == pred and len(self.class_names) > 1:
            raise ValueError(f"the model already predicts {self.class_names[pred]!r} for this "
                             f"input: choose another target class.")
        self.target_dropdown.value = int(target)

    def _runner_up(self) -> int:
        probs = self._probs_before
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

    def primary_controls(self) -> list[W.Widget]:
        """Hook: controls shown first, under the target (a method or generator switch)."""
        return []

    def extra_controls(self) -> list[W.Widget]:
        """Hook: method-specific controls, shown under the primary knobs (above Run)."""
        return []

    def advanced_controls(self) -> list[W.Widget]:
        """Hook: method-specific controls shown in "Advanced" (e.g. attribute weights)."""
        return []

    def extra_views(self) -> list[W.Widget]:
        """Hook: method-specific view panels, shown under the standard views."""
        return []

    def _on_input_change(self) -> None:
        try:
            self.clear_result()
            self.show_input()
            self._set_status("ready: press Run for this input.")
        except Exception as e:  # noqa: BLE001 - shown to the user, not swallowed
            self.show_error(e)

    def _on_target_change(self, _change) -> None:
        if self._quiet_target:
            return
        try:
            res = self.result
            if res is not None and int(res.target[0]) != self.current_target():
                self.clear_result()
                self.show_images(None)
                self._set_status("ready: press Run for the new target.")
            elif hasattr(self, "probs"):
                after = res.probs_cf[0] if res is not None else None
                self.probs.show(self._probs_before, after, self.current_target(), self.class_names)
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
        v = self.target_dropdown.value
        return int(v) if v is not None else 0

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
        return self.panel.knob_values()

    def set_knobs(self, **values: Any) -> None:
        """Set knob controls from code (validated against the Config first)."""
        self.panel.set_knobs(**values)

    def set_hidden_knobs(self, defaults: dict[str, Any], hidden: Sequence[str]) -> None:
        """Replace the hidden knobs and their values (for a subclass that swaps in a method
        with other knobs); visible controls are left as they are."""
        self.panel.set_hidden(defaults, hidden)

    def explain_kwargs(self) -> dict[str, Any]:
        """Hook: widget state -> keyword overrides of ``method.explain`` (default: the
        knob values). Subclasses add what their own controls set, e.g.
        ``{**super().explain_kwargs(), "attribute_weights": (...)}``."""
        return self.knob_values()

    def config(self):
        """The validated Config the next run will use."""
        return merge(self._method.Config, None, self.explain_kwargs())

    # ================================================================ layout
    _section = staticmethod(section)

    def _refresh_header(self) -> None:
        m = self._method
        self.header.value = header_html(self._title or m.title or m.name, m.paper, self._intro)

    def _layout(self) -> list[W.Widget]:
        self.header = W.HTML(layout=W.Layout(width="auto"))
        self.header.add_class("cfw-header")
        self._refresh_header()
        p = self.panel
        controls = [*self.input_controls, p.target_dropdown, *self._primary_controls]
        if not self.app:
            controls.append(p.primary_box)
        controls += [*self._extra_controls, self.runner.box]
        if not self.app:
            controls.append(p.advanced)
        self.control_panel = W.VBox(controls, layout=W.Layout(width="356px", min_width="356px",
                                                              margin="0 12px 0 0"))
        self.control_panel.add_class("cfw-controls")
        # basis 0: long HTML lines wrap inside the panel instead of pushing the whole
        # panel under the controls; below min_width (narrow screens) it wraps on purpose
        self.view_panel = W.VBox(self.views, layout=W.Layout(flex="1 1 0%", min_width="500px"))
        self.view_panel.add_class("cfw-views")
        body = W.HBox([self.control_panel, self.view_panel],
                      layout=W.Layout(width="100%", flex_flow="row wrap", align_items="flex-start"))
        out = [self.header, body, self.error_box]
        if self._extra_views:
            self.extra_panel = W.VBox(self._extra_views)
            self.extra_panel.add_class("cfw-extra-views")
            out.append(self.extra_panel)
        return out

    def make_views(self) -> list[W.Widget]:
        """Hook: the view panels (default: before | after | difference with a colour bar,
        the path slider, probability bars beside the loss curve, a metrics line). Sets
        ``images`` (:class:`ImageViews`), ``path``, ``probs``, ``loss``, ``metrics_panel``."""
        self.images = ImageViews(self._hw(), self._scale)
        self._make_path_probs_loss("Scrub through the optimisation path (snapshots).",
                                   self._on_scrub, probs_min_height="150px")
        self.style_html = W.HTML(vh.CSS)  # shared CSS of the HTML parts
        self.style_html.layout.display = "none"
        row = W.HBox([self.probs_view, self.loss_view], layout=W.Layout(align_items="flex-start"))
        return [self.style_html, self.images.box, self.trajectory_row, row, self.metrics_view]

    def _make_path_probs_loss(self, tooltip: str, on_scrub: Callable[[int], None],
                              probs_min_height: str, metrics_render: Callable[..., str] = vh.metrics_html
                              ) -> None:
        """The views every widget shares: ``path`` (scrub handler ``on_scrub(i)``),
        ``probs``, ``loss`` and ``metrics_panel``."""
        self.path = PathView(on_scrub, tooltip)
        self.probs = ProbsView(probs_min_height)
        self.loss = LossView()
        self.metrics_panel = MetricsView(metrics_render)

    # widget names of the shared views
    trajectory_slider = property(lambda self: self.path.slider)
    trajectory_label = property(lambda self: self.path.label)
    trajectory_row = property(lambda self: self.path.box)
    probs_view = property(lambda self: self.probs.widget)
    loss_view = property(lambda self: self.loss.widget)
    metrics_view = property(lambda self: self.metrics_panel.widget)
    before_image = property(lambda self: self.images.before_image)
    after_image = property(lambda self: self.images.after_image)
    diff_image = property(lambda self: self.images.diff_image)
    before_label = property(lambda self: self.images.before_label)
    after_label = property(lambda self: self.images.after_label)
    diff_label = property(lambda self: self.images.diff_label)
    colorbar_text = property(lambda self: self.images.colorbar_text)
    image_row = property(lambda self: self.images.box)
    _diff_vmax = property(lambda self: self.images.vmax)

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
        a[::4, ::4] = 0.85
        return a

    def png(self, img: Any) -> bytes:
        """PNG bytes of an image (``(C, H, W)``, ``(H, W)`` or RGB ``(H, W, 3)``), enlarged
        like the widget's views (for ``ipywidgets.Image`` panels of subclasses)."""
        return vh.png_bytes(img, self._scale, fast=True)

    _png = png

    def caption(self, role: str, probs: Tensor | None, extra: str = "") -> str:
        """The caption of an image or text view: ``role`` + ``extra``, the predicted class
        and, when it is not the target, p(target)."""
        return pred_caption(probs, self.class_names, self.current_target(), role, extra)

    _caption = caption

    def _set_diff_range(self, vmax: float) -> None:
        self.images.set_diff_range(vmax)

    def show_images(self, x_cf: Tensor | None, probs_cf: Tensor | None = None, *,
                    caption: str = "", diff_range: float | None = None,
                    pngs: tuple[bytes, bytes] | None = None) -> None:
        """Show ``x_cf`` (``(C, H, W)``) as the after image with its difference to the
        current input (and its probabilities, when given). ``None`` clears the views.
        ``diff_range``: the colour bar's range (default: keep it, growing it to the
        smallest of ``viz.html.DIFF_RANGES`` that holds this difference). Subclasses use
        it for previews of their own (e.g. a what-if mode)."""
        x = self.current_input()[0]
        if x_cf is None:
            self.images.show_after(x, None)
            self.probs.show(self._probs_before, None, self.current_target(), self.class_names)
            return
        x_cf = x_cf.detach().float().cpu()
        self.images.show_after(x, x_cf, self.caption("after", probs_cf, caption),
                               diff_range=diff_range, pngs=pngs)
        if probs_cf is not None:
            self.probs.show(self._probs_before, probs_cf, self.current_target(), self.class_names)

    # ================================================================= hooks
    def input_info_html(self, pred: int) -> str:
        """The line under the input picker: which input, its label, the model's call."""
        lab = ""
        if self.labels is not None:
            y = int(self.labels[self.index])
            lab = f"label <b>{html.escape(self.class_names[y])}</b> &middot; "
        return (f"<span style='font-size:12px'>#{self.index} of {self.n_inputs}: {lab}model "
                f"says <b>{html.escape(self.class_names[pred])}</b> "
                f"({vh.fmt(float(self._probs_before[pred]), '%')})</span>")

    def show_input(self) -> None:
        """Hook: refresh the views for the current input (before image, probabilities,
        the target choices: every class but the predicted one)."""
        x = self.current_input()
        self._probs_before = self.predict_probs(x)[0]
        pred = int(self._probs_before.argmax())
        if hasattr(self, "input_info"):
            self.input_info.value = self.input_info_html(pred)
        keep = self.target_dropdown.value
        self._quiet_target = True
        try:
            self.panel.set_targets(exclude=pred if len(self.class_names) > 1 else None,
                                   value=self._runner_up() if keep in (None, pred) else keep)
        finally:
            self._quiet_target = False
        if hasattr(self, "images") and isinstance(x, Tensor):
            self.images.show_before(x[0], self.caption("before", self._probs_before))
            self.show_images(None)

    def show_preview(self, step: int, state: StepState) -> None:
        """Hook: live preview during a run (called every ``preview every`` steps, on the
        worker thread). Default: the current counterfactual, its probabilities and the
        loss curve so far. Subclasses call ``super().show_preview(step, state)``."""
        x_cf = state.x_cf
        if isinstance(x_cf, Tensor) and hasattr(self, "images"):
            probs = state.probs[0].detach().float().cpu()
            self.show_images(x_cf[0], probs, caption=f" (step {step + 1})")
        self.loss.show(self.runner.live_loss_values())

    def show_result(self, result: CounterfactualResult) -> None:
        """Hook: show a finished (or stopped) result in every view, then call
        :meth:`render_extra`. Subclasses without image views override it."""
        if hasattr(self, "images") and isinstance(result.x_cf, Tensor):
            stopped = " (stopped)" if result.stopped else ""
            frames = result.trajectory[:, 0] if isinstance(result.trajectory, Tensor) else result.x_cf[:1]
            vmax = vh.diff_range((result.x[:1], frames), (result.x[:1], result.x_cf[:1]))
            self.show_images(result.x_cf[0], result.probs_cf[0], caption=stopped, diff_range=vmax)
            self._set_trajectory(result)
        self.loss.show(result.losses, self.loss_steps(result))
        self.metrics = self.compute_metrics(result)
        self.metrics_panel.show(self.metrics, stopped=result.stopped)
        self.render_extra(result)

    @staticmethod
    def loss_steps(result: CounterfactualResult) -> list[int] | None:
        """The step of each recorded loss value, so that the loss chart ends at the step
        count the status line reports (``result.steps``): Wachter records one loss per
        evaluation including the one that reached the target (n = steps + 1: steps
        0 .. steps), a run that used its whole budget or a method that records after each
        update one per step (n = steps: steps 1 .. steps)."""
        vals = next(iter(result.losses.values()), None) if result.losses else None
        if vals is None or result.steps is None:
            return None
        n, used = len(vals), int(result.steps[0])
        if n == 0 or used < n - 1:
            return None
        return list(range(used - n + 1, used + 1))

    def render_extra(self, result: CounterfactualResult) -> None:
        """Hook: update method-specific views for a new result (default: nothing)."""

    def on_scrub_extra(self, i: int, result: CounterfactualResult) -> None:
        """Hook: the path slider moved to snapshot ``i`` (after the standard views
        updated); mark it in views of your own (default: nothing)."""

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
        """Forget the shown result (views back to "press Run", progress bar empty)."""
        self.result = None
        self.metrics = {}
        self._path_probs = None
        self.runner.reset_progress()
        if not self.runner.running:
            self._set_status("ready: press Run.")
        if hasattr(self, "path"):
            self.path.clear()
            self.loss.show({})
            self.metrics_panel.show({})

    # ============================================================ trajectory
    def _set_trajectory(self, result: CounterfactualResult) -> None:
        traj = result.trajectory
        n = 0 if traj is None else len(traj)
        self._path_probs = None
        self.path.set_length(n)
        self._trajectory_caption(n - 1, result)

    def _trajectory_caption(self, i: int, result: CounterfactualResult) -> None:
        self.path.caption(i, result.trajectory_steps)

    def path_probs(self, result: CounterfactualResult) -> Tensor:
        """``(T, K)`` class probabilities of every snapshot of ``result`` (one batched call,
        kept until the next result)."""
        if self._path_probs is None:
            traj = result.trajectory
            frames = traj[:, 0] if isinstance(traj, Tensor) else [t[0] for t in traj]
            self._path_probs = self.predict_probs(frames)
        return self._path_probs

    def _scrub_step(self, i: int, result: CounterfactualResult) -> int:
        steps = result.trajectory_steps
        return steps[i] if i < len(steps) else i

    def _after_scrub(self, i: int, result: CounterfactualResult) -> None:
        self._trajectory_caption(i, result)
        self.loss.mark(self._scrub_step(i, result))
        self.on_scrub_extra(i, result)

    def _on_scrub(self, i: int) -> None:
        res = self.result
        if res is None or not isinstance(res.trajectory, Tensor) or self.runner.running:
            return
        try:
            last = i == len(res.trajectory) - 1
            frame = res.trajectory[i, 0]
            probs = res.probs_cf[0] if last else self.path_probs(res)[i]
            x = self.current_input()[0]
            pngs = self.path.cached(i, lambda: self.images.encode(x, frame))
            step = self._scrub_step(i, res)
            stopped = " (stopped)" if res.stopped else ""
            self.show_images(frame, probs, caption=stopped if last else f" (step {step})",
                             diff_range=self._diff_vmax, pngs=pngs)
            self._after_scrub(i, res)
        except Exception as e:  # noqa: BLE001 - shown to the user, not swallowed
            self.show_error(e)

    # ================================================================== runs
    @property
    def running(self) -> bool:
        return self.runner.running

    _running = running

    def on_step(self, fn: StepListener) -> StepListener:
        """Register ``fn(step, state)``, called on the worker thread after every step
        (before the Stop check). Returns ``fn`` (usable as a decorator)."""
        self.runner.listeners.append(fn)
        return fn

    def make_job(self) -> RunJob:
        """Read the widget state into a :class:`RunJob` (on the caller's thread); a bad
        knob value or a target the model already predicts is reported here."""
        t = self.current_target()
        if len(self.class_names) > 1 and t == int(self._probs_before.argmax()):
            raise ValueError(f"the model already predicts {self.class_names[t]!r} for this "
                             f"input: choose another target class.")
        job = RunJob(method=self._method, x=self.current_input(), target=t,
                     overrides=self.explain_kwargs(), seed=int(self.seed_box.value),
                     device=self.device_dropdown.value, preview_every=int(self.preview_slider.value))
        merge(job.method.Config, None, job.overrides)  # bad knob values: say so now
        return job

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
        return self.runner.start(self.make_job, block=block, raise_errors=raise_errors)

    def run_sync(self) -> CounterfactualResult | None:
        """``run(block=True)``: run here and return the result (errors raised)."""
        return self.run(block=True)

    def wait(self, timeout: float | None = None) -> CounterfactualResult | None:
        """Wait for a background run to end; return the result."""
        return self.runner.wait(timeout)

    def stop(self) -> None:
        """Ask the running optimisation to stop after the current step (keeps the partial
        result, marked ``stopped``)."""
        self.runner.stop()

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

    def _set_running_ui(self, running: bool) -> None:
        self.panel.set_disabled(running, [*self.input_controls, *self._primary_controls,
                                          *self._extra_controls, *self.panel._extra_advanced])
        if hasattr(self, "path"):
            self.trajectory_slider.disabled = running or self.trajectory_slider.max == 0
        if running and hasattr(self, "images"):
            self._set_diff_range(vh.DIFF_RANGES[0])

    def _set_status(self, text: str, kind: str = "info") -> None:
        self.runner.set_status(text, kind)

    def _live_loss_values(self) -> dict[str, list[float]]:
        return self.runner.live_loss_values()

    # ================================================================ errors
    def show_error(self, exc: BaseException) -> None:
        """Show ``exc`` (type, message and traceback) in the widget's error box; it is
        also kept in ``widget.error``."""
        self.runner.show_error(exc)

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
                f"target={self.target}, running={self.running}, result={res})")

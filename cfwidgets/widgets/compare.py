"""The comparison dashboard: every registered method on one input and one target with the
same budget, side by side (:class:`CompareWidget`).

The runs, metrics rows and exports come from :mod:`cfwidgets.analysis.compare` and
:mod:`cfwidgets.viz.compare` (the ``cfwidgets demo`` report uses the same code); this file
only lays them out and wires the buttons.

Layout: the input (an index slider over the data set, a drawing canvas for one-channel
images, a sentence box for text), the target, the budget and Run all / Stop on the left;
the grid of cells beside them (one per method: progress, status, after image and
difference map or word diff, its error when it fails, "open" for its own widget); under
them the metrics table with a sort control and the opened method widget.

CSS classes for browser tests: ``cfw-compare``, ``cfw-run-all``, ``cfw-stop-all``,
``cfw-cell`` (with ``data-method``... via the class ``cfw-cell-<name>``), ``cfw-cell-status``,
``cfw-open``, ``cfw-sort``, ``cfw-compare-table``, ``cfw-compare-detail``,
``cfw-input-source``, ``cfw-draw-widget``.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W
import torch
from torch import Tensor

from ..analysis.compare import (
    SORT_KEYS,
    Cell,
    Comparison,
    Judges,
    build_methods,
    load_judges,
    new_comparison,
    registered,
    run_comparison,
)
from ..methods.base import CounterfactualMethod
from ..viz import html as vh
from ..viz.compare import CELL_CSS, cell_html, comparison_page, metrics_table_html
from .controls import CONTROL_WIDTH, DESCRIPTION_WIDTH
from .runner import warm_up_torch

__all__ = ["CompareWidget", "own_widget"]

_TEXT_DATASETS = ("reviews", "imdb")


def own_widget(method: CounterfactualMethod, data: Any, *, name: str | None = None,
               target: int | None = None, defaults: Mapping[str, Any] | None = None,
               autoencoders: Any = None, oracle: Any = None) -> W.Widget:
    """The method's own widget on ``data`` (a one-item data set: the compared input):
    Diffeomorphic -> ``DiffeomorphicWidget``, GCI / AIP -> ``AttributeWidget``, GANMEX ->
    ``AttributionWidget``, DISC -> ``DISCWidget``, text methods -> ``TextCounterfactualWidget``, any other (a method
    registered later) -> the generic ``CounterfactualWidget``."""
    name = name or method.name
    kw: dict[str, Any] = {"target": target, "defaults": dict(defaults or {})}
    if method.modality == "text":
        from .text import TextCounterfactualWidget

        return TextCounterfactualWidget(method, data, **kw)
    kw.update(autoencoders=autoencoders, oracle=oracle)
    if name == "diffeomorphic" and getattr(method, "kind", None) in ("flow", "vae", "gan"):
        from .diffeomorphic import DiffeomorphicWidget

        return DiffeomorphicWidget(method.classifier, {method.kind: method.generative_model}, data,
                                   flow=method.density_model, **kw)
    if name in ("gci", "aip"):
        from .attributes import AttributeWidget

        kw["defaults"].pop("attribute_weights", None)
        return AttributeWidget(method.classifier, method.generator, data, method=name, **kw)
    if name == "ganmex":
        from .attribution import AttributionWidget

        return AttributionWidget(method, data, **kw)
    if name == "disc":
        from .disc import DISCWidget

        return DISCWidget(method, data, **kw)
    from .base import CounterfactualWidget

    return CounterfactualWidget(method, data, **kw)


class _CellView:
    """The widgets of one method's cell."""

    def __init__(self, cell: Cell, on_open) -> None:
        self.name = cell.name
        self.title = W.HTML(f"<b>{html.escape(cell.title)}</b>")
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="172px", height="14px"))
        self.status = W.HTML("", layout=W.Layout(width="172px"))
        self.status.add_class("cfw-cell-status")
        self.body = W.HTML("")
        self.body.add_class("cfw-cell-body")
        self.open = W.Button(description="open", icon="external-link", tooltip=f"Open {cell.title}'s "
                             "own widget on this input and target", layout=W.Layout(width="80px"),
                             disabled=cell.method is None)
        self.open.add_class("cfw-open")
        self.open.on_click(lambda _b: on_open(self.name))
        self.box = W.VBox([self.title, self.progress, self.status, self.body, self.open],
                          layout=W.Layout(border="1px solid #d0d7de", padding="4px 4px",
                                          margin="0 5px 5px 0", width="184px", min_height="120px"))
        self.box.add_class("cfw-cell")
        self.box.add_class(f"cfw-cell-{cell.name}")
        self._last = 0.0

    def set_status(self, text: str, color: str = "#24292f") -> None:
        self.status.value = f"<span style='font-size:12px;color:{color}'>{text}</span>"


class CompareWidget(W.VBox):
    """Every registered method (or a chosen subset) on one input and one target, the same
    budget for each, run one after another with a cell per method filling in as it
    finishes; a sortable metrics table scored by independent judges; a click on a cell's
    "open" shows that method's own widget on the same input and target.

    Args:
        methods: ``None`` (every registered method for the data's modality, including
            methods registered after this file was written), method names, or
            ``{name: method}``.
        data: an ``ImageDataset``, a ``TextDataset`` or a list of sentences.
        dataset: the zoo data set the methods are built for (default: ``data.name``, or
            ``"reviews"`` for sentences).
        index: the first input; target: the first target class (default: the runner-up).
        budget: steps per method (each method's ``steps`` / ``max_flips`` knob, clipped to
            its range); ``None`` = each method's own default.
        judges: :class:`~cfwidgets.analysis.compare.Judges` (default: the zoo's judges of
            ``dataset``).
        draw: show the drawing canvas (default: for one-channel 28x28 images).
        device: where the methods run (``"auto"``, ``"cpu"``, ``"cuda"``).
        seed: the seed the methods run with.
        workers: methods run at once (threads; default 1, one after another: see
            ``benchmarks/bench_compare.py`` for when more pays).

    Examples::

        from cfwidgets import data
        from cfwidgets.widgets import CompareWidget
        w = CompareWidget(data=data.load_mnist("test"), budget=100)
        w                          # press "Run all"; or from code:
        comp = w.run(block=True)   # a cfwidgets.analysis.compare.Comparison
        w.to_dict(); w.export_html("compare.html")
    """

    def __init__(self, methods: Sequence[str] | Mapping[str, CounterfactualMethod] | None = None,
                 data: Any = None, *, dataset: str | None = None, index: int = 0,
                 target: int | str | None = None, budget: int | None = 100,
                 judges: Judges | None = None, draw: bool | None = None, device: str = "auto",
                 seed: int = 0, scale: int = 3, workers: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if data is None:
            raise ValueError("pass inputs to compare on: data=data.load_mnist('test') (images) or "
                             "data=data.load_reviews('test') / a list of sentences (text).")
        self.texts: list[str] | None = None
        if isinstance(data, (list, tuple)) and data and isinstance(data[0], str):
            self.texts = list(data)
        elif hasattr(data, "texts"):
            self.texts = list(data.texts)
        self.modality = "text" if self.texts is not None else "image"
        self.data = data
        if self.modality == "image":
            x = data.x if hasattr(data, "x") else data
            self.images: Tensor = torch.as_tensor(x).float()
            if self.images.ndim != 4 or len(self.images) == 0:
                raise ValueError(f"images must be (N, C, H, W) with N >= 1, got {tuple(self.images.shape)}.")
        self.dataset = dataset or getattr(data, "name", None) or (
            "reviews" if self.modality == "text" else "mnist")
        self.device = device
        self.seed = int(seed)
        self.scale = int(scale)
        self.workers = int(workers)
        if isinstance(methods, Mapping):
            self._methods: dict[str, Any] = dict(methods)
        else:
            names = list(methods) if methods is not None else registered(self.modality)
            self._methods = build_methods(names, self.dataset, device=device)
        ready = [m for m in self._methods.values() if isinstance(m, CounterfactualMethod)]
        if not ready:
            errs = "; ".join(f"{k}: {v}" for k, v in self._methods.items())
            raise ValueError(f"no method could be built for {self.dataset!r} ({errs}).")
        self._ref = ready[0]  # predictions shown before a run (every method explains this model)
        self.judges = judges if judges is not None else load_judges(self.dataset, device=device)
        self.class_names = list(self._ref.class_names or getattr(data, "class_names", None)
                                or [str(k) for k in range(self._predict(self._input_at(0)).shape[-1])])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None
        self.comparison: Comparison | None = None
        self.error: BaseException | None = None
        self.timings: dict[str, float] = {}
        self._drawn: Tensor | None = None
        self._build(index, budget, draw)
        self._select_target(target)
        self._fresh_cells()
        warm_up_torch()

    # ================================================================ inputs
    def _input_at(self, i: int) -> Any:
        return self.texts[i:i + 1] if self.texts is not None else self.images[i:i + 1]

    def current_input(self) -> Any:
        """The compared input: a batch of one (``(1, C, H, W)`` or ``[str]``)."""
        if self.texts is not None:
            return [self.sentence_box.value]
        if self.source.value == "drawing":
            if self._drawn is None:
                raise ValueError("nothing drawn yet: draw a digit on the canvas, or pick 'data set'.")
            return self._drawn
        return self._input_at(int(self.index_slider.value))

    def _predict(self, x: Any) -> Tensor:
        m = self._ref
        with torch.no_grad():
            if isinstance(x, Tensor):
                return m.classifier(x.to(m.device)).float().softmax(-1).cpu()
            return m.score_texts(list(x)).float().cpu()

    @property
    def target(self) -> int:
        return int(self.target_dropdown.value)

    @target.setter
    def target(self, t: int | str) -> None:
        self._select_target(t)

    def _select_target(self, target: int | str | None) -> None:
        if isinstance(target, str):
            if target not in self.class_names:
                raise ValueError(f"unknown target class {target!r}; known: {self.class_names}.")
            target = self.class_names.index(target)
        pred = int(self._probs.argmax())
        if target is None:
            target = int(self._probs.topk(2).indices[1])
        if not 0 <= int(target) < len(self.class_names):
            raise ValueError(f"target {target} out of range: {len(self.class_names)} classes.")
        if int(target) == pred:
            raise ValueError(f"the model already predicts {self.class_names[pred]!r} for this input: "
                             f"choose another target class.")
        self.target_dropdown.value = int(target)

    def _refresh_input(self) -> None:
        """The input changed: prediction line, target choices (every class but the
        predicted one), the before image; the cells are cleared."""
        try:
            x = self.current_input()
        except ValueError as e:
            self.input_info.value = f"<span style='font-size:12px;color:#7d4e00'>{html.escape(str(e))}</span>"
            return
        self._probs = self._predict(x)[0]
        pred = int(self._probs.argmax())
        keep = self.target_dropdown.value
        runner_up = int(self._probs.topk(2).indices[1])
        opts = [(n, k) for k, n in enumerate(self.class_names) if k != pred]
        with self.target_dropdown.hold_sync():
            self.target_dropdown.options = opts
            self.target_dropdown.value = keep if keep not in (None, pred) else runner_up
        self.input_info.value = (f"<span style='font-size:12px'>model says <b>"
                                 f"{html.escape(self.class_names[pred])}</b> "
                                 f"({vh.fmt(float(self._probs[pred]), '%')})</span>")
        if isinstance(x, Tensor):
            self.before.value = vh.png_bytes(x[0], 4, fast=True)
        if not self._running:
            self._fresh_cells()

    def _on_drawn(self, canvas) -> None:
        try:
            if canvas.empty:
                self._drawn = None
                return
            self._drawn = canvas.digit()
            if self.source.value != "drawing":
                self.source.value = "drawing"  # observer refreshes
            else:
                self._refresh_input()
        except Exception as e:  # noqa: BLE001 - shown, never swallowed
            self.show_error(e)

    # ================================================================ layout
    def _build(self, index: int, budget: int | None, draw: bool | None) -> None:
        style = {"description_width": DESCRIPTION_WIDTH}
        lay = W.Layout(width=CONTROL_WIDTH)
        self.header = W.HTML(
            "<div style='font-size:15px;font-weight:600'>Compare methods</div>"
            "<div style='font-size:12px;color:#57606a'>every method on the same input, target "
            "and step budget; realism and oracle scored by independent judges</div>")
        self.header.add_class("cfw-header")
        controls: list[W.Widget] = []
        self.canvas = None
        self.source = W.ToggleButtons(options=["data set"], value="data set", layout=W.Layout(display="none"))
        if self.modality == "text":
            n = len(self.texts)
            self.index_slider = W.IntSlider(value=min(max(0, index), n - 1), min=0, max=n - 1,
                                            description="sentence #", continuous_update=False,
                                            style=style, layout=lay)
            self.sentence_box = W.Textarea(value=self.texts[self.index_slider.value],
                                           description="sentence", style=style,
                                           layout=W.Layout(width=CONTROL_WIDTH, height="70px"),
                                           continuous_update=False)
            self.sentence_box.add_class("cfw-sentence")
            self.index_slider.observe(lambda c: setattr(self.sentence_box, "value", self.texts[c["new"]]),
                                      names=["value"])
            self.sentence_box.observe(lambda _c: self._refresh_input(), names=["value"])
            controls += [self.index_slider, self.sentence_box]
        else:
            n = len(self.images)
            self.index_slider = W.IntSlider(value=min(max(0, index), n - 1), min=0, max=n - 1,
                                            description="input #", continuous_update=False,
                                            style=style, layout=lay)
            self.index_slider.observe(lambda _c: self._on_index(), names=["value"])
            self.before = W.Image(format="png", layout=W.Layout(width="112px", height="112px"))
            self.before.add_class("cfw-before")
            shape = tuple(self.images.shape[1:])
            if draw is None:
                draw = shape == (1, 28, 28)
            if draw:
                from .draw import DrawCanvas

                self.canvas = DrawCanvas(layout=W.Layout(margin="0 0 0 10px"))
                self.canvas.on_draw(self._on_drawn)
                self.source = W.ToggleButtons(options=["data set", "drawing"], value="data set",
                                              description="input", style={"button_width": "80px",
                                                                          **style})
                self.source.add_class("cfw-input-source")
                self.source.observe(lambda _c: self._refresh_input(), names=["value"])
            controls += [self.source, self.index_slider]
            pics = [self.before] + ([self.canvas] if self.canvas is not None else [])
            controls.append(W.HBox(pics, layout=W.Layout(align_items="flex-start")))
        self.input_info = W.HTML("", layout=lay)
        self.target_dropdown = W.Dropdown(options=[(c, k) for k, c in enumerate(self.class_names)],
                                          description="target", style=style, layout=lay)
        self.target_dropdown.add_class("cfw-target")
        self.target_dropdown.observe(lambda _c: None if self._running else self._fresh_cells(),
                                     names=["value"])
        self.budget_box = W.BoundedIntText(value=budget or 0, min=0, max=5000, description="steps each",
                                           tooltip="the same step budget for every method (0 = each "
                                           "method's own default)", style=style, layout=lay)
        self.run_button = W.Button(description="Run all", button_style="primary", icon="play",
                                   layout=W.Layout(width="110px"))
        self.run_button.add_class("cfw-run-all")
        self.stop_button = W.Button(description="Stop", button_style="warning", icon="stop",
                                    disabled=True, layout=W.Layout(width="100px"))
        self.stop_button.add_class("cfw-stop-all")
        self.run_button.on_click(lambda _b: self._click_run())
        self.stop_button.on_click(lambda _b: self.stop())
        self.status = W.HTML("", layout=lay)
        self.status.add_class("cfw-status")
        self.error_box = W.HTML("", layout=W.Layout(display="none"))
        self.error_box.add_class("cfw-error")
        controls += [self.input_info, self.target_dropdown, self.budget_box,
                     W.HBox([self.run_button, self.stop_button]), self.status]
        self.grid = W.Box([], layout=W.Layout(display="flex", flex_flow="row wrap",
                                              align_items="flex-start", width="100%"))
        self.grid.add_class("cfw-compare-grid")
        # basis 0 and grow: the grid takes the width beside the controls (as the views of
        # CounterfactualWidget do)
        grid_panel = W.VBox([self.grid], layout=W.Layout(flex="1 1 0%", min_width="380px",
                                                         width="calc(100% - 372px)"))
        sort_opts = [("(method order)", "")] + [(vh.HEADINGS.get(k, k.replace("_", " ")), k)
                                                 for k in SORT_KEYS]
        self.sort_dropdown = W.Dropdown(options=sort_opts, value="", description="sort by",
                                        style=style, layout=W.Layout(width="330px"))
        self.sort_dropdown.add_class("cfw-sort")
        self.sort_desc = W.ToggleButton(value=True, description="best first", icon="sort",
                                        tooltip="best first (higher validity / oracle, lower L1 / "
                                        "IM1 / time); off: the reverse", layout=W.Layout(width="110px"))
        self.sort_dropdown.observe(lambda _c: self._show_table(), names=["value"])
        self.sort_desc.observe(lambda _c: self._show_table(), names=["value"])
        self.table = W.HTML("")
        self.table.add_class("cfw-compare-table")
        self.detail = W.VBox([])
        self.detail.add_class("cfw-compare-detail")
        self.style_html = W.HTML(vh.CSS + vh.TEXT_CSS + CELL_CSS, layout=W.Layout(display="none"))
        panel = W.VBox(controls, layout=W.Layout(width="356px", min_width="356px", margin="0 12px 0 0"))
        body = W.HBox([panel, grid_panel], layout=W.Layout(width="100%", flex_flow="row wrap",
                                                          align_items="flex-start"))
        self.children = [self.style_html, self.header, body, self.error_box,
                         W.HBox([self.sort_dropdown, self.sort_desc]), self.table, self.detail]
        self.add_class("cfw-compare")
        self._probs = self._predict(self._input_at(self.index_slider.value))[0]
        self._refresh_input()

    def _on_index(self) -> None:
        if self.source.value != "data set":
            self.source.value = "data set"  # observer refreshes
        else:
            self._refresh_input()

    # ================================================================= cells
    @property
    def budget(self) -> int | None:
        return int(self.budget_box.value) or None

    def _fresh_cells(self) -> None:
        """Empty cells for the current input and target (a new comparison, not run)."""
        try:
            x = self.current_input()
        except ValueError:
            x = self._input_at(int(self.index_slider.value))
        self.comparison = new_comparison(self._methods, x, self.target, budget=self.budget,
                                         judges=self.judges)
        self.comparison.class_names = self.class_names
        self.cells: dict[str, _CellView] = {n: _CellView(c, self.open_cell)
                                            for n, c in self.comparison.cells.items()}
        for c in self.comparison.cells.values():
            self._show_cell(c)
        self.grid.children = [v.box for v in self.cells.values()]
        self.detail.children = []
        self._show_table()
        self._set_status(f"{len(self.cells)} methods; press Run all.")

    def _show_cell(self, cell: Cell) -> None:
        v = self.cells[cell.name]
        comp = self.comparison
        colors = {"done": "#1a7f37", "stopped": "#7d4e00", "failed": "#cf222e", "not run": "#57606a"}
        with v.progress.hold_sync():
            if cell.status == "failed":
                v.progress.bar_style = "danger"
            elif cell.status == "stopped":
                v.progress.bar_style = "warning"
            elif cell.status == "done":
                v.progress.bar_style = "success" if bool(cell.result.success.all()) else "danger"
                v.progress.value = v.progress.max
            else:
                v.progress.bar_style = ""
                v.progress.value = 0
        budget = ", ".join(f"{k} {val}" for k, val in cell.overrides.items()) or "own budget"
        text = {"pending": f"waiting ({budget})", "running": "running...",
                "done": f"done in {vh.fmt(cell.time_s, 's')}",
                "stopped": f"stopped at step {cell.step}", "failed": "failed",
                "not run": "not run (stopped)"}[cell.status]
        v.set_status(text, colors.get(cell.status, "#24292f"))
        v.body.value = cell_html(comp, cell.name, self.scale, title=False) if cell.status in (
            "done", "stopped", "failed") else ""
        v.open.disabled = cell.method is None

    def _show_table(self) -> None:
        if self.comparison is None:
            return
        key = self.sort_dropdown.value or None
        if key is not None and not any(key in r for r in self.comparison.rows()):
            key = None
        desc = None
        if key is not None:  # "best first": descending where higher is better
            better_high = SORT_KEYS.get(key, True)
            desc = better_high if self.sort_desc.value else not better_high
        self.table.value = metrics_table_html(self.comparison, key, desc)

    def sort(self, key: str | None, best_first: bool = True) -> None:
        """Sort the table by metric ``key`` (``None``: method order)."""
        if key is not None and key not in SORT_KEYS:
            raise ValueError(f"cannot sort by {key!r}; choose from {list(SORT_KEYS)}.")
        with self.hold_sync():
            self.sort_desc.value = bool(best_first)
            self.sort_dropdown.value = key or ""
        self._show_table()

    # ================================================================== runs
    @property
    def running(self) -> bool:
        return self._running

    def run(self, block: bool = False) -> Comparison | None:
        """Run every method (``block=True``: here, returning the
        :class:`~cfwidgets.analysis.compare.Comparison`; else on a thread)."""
        with self._lock:
            if self._running:
                self._set_status("a comparison is running: press Stop to end it.", "#7d4e00")
                return None
            self._running = True
        try:
            x = self.current_input()
            t = self.target
            if int(self._probs.argmax()) == t:
                raise ValueError("the model already predicts the target for this input: choose another.")
        except Exception:
            with self._lock:
                self._running = False
            raise
        self._stop.clear()
        self.error = None
        self.error_box.layout.display = "none"
        self._t_click = time.perf_counter()
        self._fresh_cells()
        self.comparison.x = x
        self._busy(True)
        if block:
            self._work(x, t)
            return self.comparison
        self._thread = threading.Thread(target=self._work, args=(x, t), name="cfwidgets-compare",
                                        daemon=True)
        self._thread.start()
        return None

    def wait(self, timeout: float | None = None) -> Comparison | None:
        th = self._thread
        if th is not None:
            th.join(timeout)
        return self.comparison

    def stop(self) -> None:
        """Stop the running method after its current step; the others are not started."""
        if self._running:
            self._stop.set()
            self._set_status("stopping...", "#7d4e00")

    def _click_run(self) -> None:
        try:
            self.run(block=False)
        except Exception as e:  # noqa: BLE001 - shown in the widget
            self.show_error(e)

    def _busy(self, on: bool) -> None:
        self.run_button.disabled = on
        self.stop_button.disabled = not on
        for w in (self.index_slider, self.target_dropdown, self.budget_box, self.source):
            w.disabled = on
        if self.texts is not None:
            self.sentence_box.disabled = on

    def _work(self, x: Any, t: int) -> None:
        comp = self.comparison
        n = len(comp.cells)
        done = [0]

        def on_start(cell: Cell) -> None:
            self._show_cell(cell)
            self._set_status(f"running {html.escape(cell.title)} ({done[0] + 1}/{n})...")

        def on_step(name: str, step: int, state) -> None:
            v = self.cells[name]
            now = time.perf_counter()
            if now - v._last > 0.05 or step + 1 >= state.total:
                v._last = now
                with v.progress.hold_sync():
                    v.progress.max = max(1, int(state.total))
                    v.progress.value = step + 1
                v.set_status(f"step {step + 1}/{state.total} &middot; p(target) "
                             f"{float(state.target_prob[0]):.3g}")

        def on_done(cell: Cell) -> None:
            done[0] += 1
            self._show_cell(cell)
            self._show_table()

        try:
            run_comparison(self._methods, x, t, budget=self.budget, judges=self.judges,
                           seed=self.seed, stop=self._stop, on_start=on_start, on_step=on_step,
                           on_done=on_done, comparison=comp, workers=self.workers)
            self.timings["run_all_s"] = time.perf_counter() - self._t_click
            failed = sum(c.status == "failed" for c in comp.cells.values())
            stopped = self._stop.is_set()
            self._set_status(
                f"{'stopped' if stopped else 'done'}: {sum(c.result is not None for c in comp.cells.values())}"
                f" of {n} methods gave a result{f', {failed} failed' if failed else ''}, "
                f"{self.timings['run_all_s']:.1f} s", "#7d4e00" if stopped or failed else "#1a7f37")
        except BaseException as e:  # noqa: BLE001 - shown in the widget and kept in .error
            self.show_error(e)
        finally:
            with self._lock:
                self._running = False
            self._busy(False)

    # ============================================================== the cells
    def open_cell(self, name: str) -> W.Widget:
        """Open method ``name``'s own widget on the compared input and target (shown under
        the table, with the cell's result when it has one); returns it."""
        cell = self.comparison.cells[name]
        if cell.method is None:
            raise ValueError(f"{name} could not be built, so it has no widget: {cell.error}")
        try:
            x = self.current_input()
            data = x if self.texts is not None else x.clone()
            w = own_widget(cell.method, data, name=name, target=self.target, defaults=cell.overrides,
                           autoencoders=self.judges.autoencoders, oracle=self.judges.oracle)
            res = cell.result
            if res is not None and hasattr(w, "show_result") and hasattr(w, "runner"):
                w.result = res
                w.show_result(res)
                w.runner.set_status(f"the comparison's result ({cell.status}); press Run to run again.")
            title = W.HTML(f"<b>{html.escape(cell.title)}</b>: its own widget on the same input and target")
            self.detail.children = [title, w]
            self.opened = w
            return w
        except Exception as e:  # noqa: BLE001 - shown, and raised to a caller in code
            self.show_error(e)
            raise

    # ================================================================ output
    def to_dict(self) -> dict:
        """The comparison as plain data (see :meth:`Comparison.to_dict`)."""
        return self.comparison.to_dict()

    def export_html(self, path: str | Path | None = None) -> str:
        """The comparison as a self-contained HTML page (written to ``path`` when given)."""
        page = comparison_page(self.comparison, sort_by=self.sort_dropdown.value or None)
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def _set_status(self, text: str, color: str = "#24292f") -> None:
        self.status.value = f"<div style='font-size:12px;color:{color}'>{text}</div>"

    def show_error(self, exc: BaseException) -> None:
        self.error = exc
        self.error_box.value = (f"<div style='border:1px solid #cf222e;background:#ffebe9;color:#82071e;"
                                f"padding:6px 10px;border-radius:4px;font-size:13px'><b>"
                                f"{html.escape(type(exc).__name__)}</b>: {html.escape(str(exc))}</div>")
        self.error_box.layout.display = "block"

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        if data is None:
            return None
        try:
            from ..viz.compare import comparison_html

            data["text/html"] = comparison_html(self.comparison, self.sort_dropdown.value or None)
        except Exception:  # noqa: BLE001 - the live view must not fail for its fallback
            pass
        return data

    def __repr__(self) -> str:
        return (f"CompareWidget(methods={list(self._methods)}, dataset={self.dataset!r}, "
                f"target={self.target_dropdown.value}, running={self._running})")

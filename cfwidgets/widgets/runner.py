"""The run machinery of the widgets: one run at a time on a worker thread, Stop, progress,
status line and the error box. No views and no knobs here.

A :class:`Runner` is given three functions by the widget that owns it:

- ``execute(job, callback) -> CounterfactualResult``: the run itself, on the worker
  thread (pass ``callback`` on to ``explain`` so progress, preview and Stop work);
- ``on_preview(step, state)``: a live preview, every ``job.preview_every`` steps;
- ``on_result(result)``: show a finished (or stopped) result;

and, optionally, ``on_busy(running)``, called when a run starts and ends (lock the
controls). Everything that touches widgets on the worker thread is a plain trait
assignment (safe in ipykernel); the running flag is guarded by a lock.

Examples::

    r = Runner(execute=lambda job, cb: job.method.explain(job.x, job.target, callback=cb),
               on_preview=lambda step, state: None, on_result=print)
    r.start(job, block=True)      # or block=False: a thread; r.wait() joins it
"""

from __future__ import annotations

import html
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
import torch

from ..methods.base import CounterfactualMethod
from ..protocols import StepState
from ..result import CounterfactualResult
from .controls import CONTROL_WIDTH

__all__ = ["RunJob", "Runner", "warm_up_torch"]

StepListener = Callable[[int, StepState], Any]

_WARM = threading.Event()


def warm_up_torch(delay: float = 0.0) -> None:
    """torch imports ~800 modules (torch._dynamo) at the first optimizer step: 3-6 s on a
    small CPU. Pay it in the background once per process, while the user picks a target,
    instead of on the first Run click. ``delay``: start it this many seconds later, so
    the imports (which hold the GIL) do not slow the widget's first render."""
    if _WARM.is_set():
        return
    _WARM.set()

    def work():
        if delay > 0:
            time.sleep(delay)
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


_COLORS = {"info": "#24292f", "warn": "#7d4e00", "ok": "#1a7f37", "error": "#cf222e"}


class Runner:
    """Run/Stop buttons, a progress bar, a status line and an error box, and the thread
    that runs one job at a time.

    Attributes: ``run_button``, ``stop_button``, ``progress``, ``status``, ``error_box``
    (widgets); ``result`` / ``error`` (the last run's); ``timings`` (seconds:
    ``explain_s``, ``run_to_view_s``, ``stop_to_view_s``, and ``previews`` counted);
    ``live_losses`` (the loss terms seen so far in this run).
    """

    def __init__(self, *, execute: Callable[[RunJob, Callable], CounterfactualResult],
                 on_preview: Callable[[int, StepState], None],
                 on_result: Callable[[CounterfactualResult], None],
                 on_busy: Callable[[bool], None] | None = None) -> None:
        self._execute = execute
        self._on_preview = on_preview
        self._on_result = on_result
        self._on_busy = on_busy or (lambda _running: None)
        self.lock = threading.RLock()
        self._stop_event = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None
        self._t_click = 0.0
        self._t_stop: float | None = None
        self._last_progress = 0.0
        self.listeners: list[StepListener] = []
        self.live_losses: dict[str, list] = {}
        self.result: CounterfactualResult | None = None
        self.error: BaseException | None = None
        self.timings: dict[str, float] = {}

        self.run_button = W.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="Optimise a counterfactual with these settings",
                                   layout=W.Layout(width="100px"))
        self.stop_button = W.Button(description="Stop", button_style="warning", icon="stop",
                                    disabled=True, tooltip="Stop after the current step; keeps "
                                    "the partial result", layout=W.Layout(width="100px"))
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="130px"))
        self.status = W.HTML("ready: pick an input and a target, then press Run.",
                             layout=W.Layout(width=CONTROL_WIDTH, min_height="20px"))
        self.error_box = W.HTML("", layout=W.Layout(display="none", width="auto"))
        for w, cls in ((self.run_button, "cfw-run"), (self.stop_button, "cfw-stop"),
                       (self.progress, "cfw-progress"), (self.status, "cfw-status"),
                       (self.error_box, "cfw-error")):
            w.add_class(cls)
        self.stop_button.on_click(lambda _b: self.stop())
        #: Run / Stop / progress on one line, the status under them
        self.box = W.VBox([W.HBox([self.run_button, self.stop_button, self.progress],
                                  layout=W.Layout(align_items="center", margin="4px 0 0 0")),
                           self.status])

    # ------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self._running

    @property
    def stop_requested(self) -> bool:
        """Stop was pressed during this run (for work a widget does after ``explain``,
        between steps of its own)."""
        return self._stop_event.is_set()

    def set_status(self, text: str, kind: str = "info") -> None:
        """The status line (``text`` is HTML); ``kind``: info, warn, ok or error."""
        self.status.value = (f"<div style='font-size:12px;line-height:1.4;color:{_COLORS[kind]}'>"
                             f"{text}</div>")

    def reset_progress(self) -> None:
        """An empty, neutral progress bar (no result shown)."""
        with self.progress.hold_sync():
            self.progress.value = 0
            self.progress.bar_style = ""

    def show_error(self, exc: BaseException) -> None:
        """Show ``exc`` (type, message and traceback) in the error box; kept in ``error``."""
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
        self.set_status(f"error: {html.escape(type(exc).__name__)} (see below)", "error")
        self.progress.bar_style = "danger"

    def clear_error(self) -> None:
        self.error = None
        self.error_box.value = ""
        self.error_box.layout.display = "none"

    # ------------------------------------------------------------- runs
    def start(self, make_job: Callable[[], RunJob], *, block: bool,
              raise_errors: bool) -> CounterfactualResult | None:
        """Start a run of ``make_job()`` (called here, on the caller's thread).

        ``block=True`` runs here and returns the result; else a thread runs it and this
        returns ``None``. While a run is in progress another start does nothing."""
        with self.lock:
            if self._running:
                self.set_status("a run is already in progress: press Stop to end it.", "warn")
                return None
            self._running = True
            self._stop_event.clear()
        self._t_click = time.perf_counter()
        self._t_stop = None
        try:
            job = make_job()
        except Exception as e:
            with self.lock:
                self._running = False
            self.show_error(e)
            if raise_errors:
                raise
            return None
        self._busy(True, job)
        if block:
            self._work(job)
            if self.error is not None and raise_errors:
                raise self.error
            return self.result
        th = threading.Thread(target=self._work, args=(job,), name="cfwidgets-run", daemon=True)
        self._thread = th
        th.start()
        return None

    def wait(self, timeout: float | None = None) -> CounterfactualResult | None:
        th = self._thread
        if th is not None:
            th.join(timeout)
        return self.result

    def stop(self) -> None:
        """Ask the running optimisation to stop after the current step."""
        if self._running:
            self._t_stop = time.perf_counter()
            self._stop_event.set()
            self.set_status("stopping after this step...", "warn")

    def live_loss_values(self) -> dict[str, list[float]]:
        """The loss terms of the run so far, as floats (one value per step). Steps where
        every term is exactly 0 are left out: a method reports zeros for a row it no
        longer optimises (e.g. AIP-text's shown restart once it has finished while
        other restarts run on), and a legend of zeros would misread the run."""
        series = {k: torch.stack(v).float().cpu() for k, v in self.live_losses.items() if v}
        if not series:
            return {}
        n = min(len(v) for v in series.values())
        keep = torch.stack([v[:n] for v in series.values()]).ne(0).any(0)
        return {k: v[:n][keep].tolist() for k, v in series.items()}

    def _busy(self, running: bool, job: RunJob | None = None) -> None:
        self.run_button.disabled = running
        self.stop_button.disabled = not running
        if running:
            self.clear_error()
            total = int(job.overrides.get("steps", 0)) if job is not None else 0
            with self.progress.hold_sync():
                self.progress.max = max(1, total)
                self.progress.value = 0
                self.progress.bar_style = ""
            self.set_status("running...", "info")
        self._on_busy(running)

    def _callback(self, job: RunJob) -> Callable[[int, StepState], bool]:
        every = max(1, job.preview_every)

        def cb(step: int, state: StepState) -> bool:
            for fn in self.listeners:
                fn(step, state)
            for k, v in state.losses.items():
                self.live_losses.setdefault(k, []).append(v.detach().float().mean())
            now = time.perf_counter()
            last = step + 1 >= state.total
            if last or now - self._last_progress > 0.05 or step % every == 0:
                self._last_progress = now
                with self.progress.hold_sync():
                    self.progress.max = max(1, state.total)
                    self.progress.value = step + 1
                tp = float(state.target_prob[0])
                self.set_status(f"step {step + 1}/{state.total} &middot; p(target) {tp:.3g}")
            if step % every == 0 and not self._stop_event.is_set():
                self._on_preview(step, state)
                self.timings["previews"] = self.timings.get("previews", 0) + 1
            return self._stop_event.is_set()

        return cb

    def _work(self, job: RunJob) -> None:
        self.live_losses = {}
        self.timings = {"previews": 0}
        try:
            res = self._execute(job, self._callback(job))
            with self.lock:
                self.result = res
            self._on_result(res)
            t_view = time.perf_counter()
            self.timings["explain_s"] = float(res.meta.get("wall_time_s", float("nan")))
            self.timings["run_to_view_s"] = t_view - self._t_click
            used = int(res.steps[0]) if res.steps is not None else None
            if res.stopped:
                after = ""
                if self._t_stop is not None and self._t_stop >= self._t_click:
                    self.timings["stop_to_view_s"] = t_view - self._t_stop
                    after = f", {t_view - self._t_stop:.2f} s after Stop"
                self.set_status(f"<span class='cfw-stopped'>stopped at step {used}{after}: "
                                f"partial result</span>", "warn")
                self.progress.bar_style = "warning"
            elif _row0_flag(res, "nonfinite"):
                # the method's guard halted the row: say so instead of "did not reach"
                self.progress.bar_style = "danger"
                self.set_status(f"<span class='cfw-nonfinite'>halted at step {used}: the loss or "
                                f"the model's output became NaN/inf; the last finite iterate is "
                                f"shown</span>", "warn")
            else:
                ok = bool(res.success[0])
                self.progress.value = self.progress.max if ok else self.progress.value
                self.progress.bar_style = "success" if ok else "danger"
                what = "reached the target" if ok else "did not reach the target"
                if ok and _row0_flag(res, "settled"):
                    # the plateau stop ended it below the confidence: say so, with p
                    conf = res.meta.get("config", {}).get("confidence")
                    below = f" {conf:g}" if isinstance(conf, (int, float)) else ""
                    what = (f"reached the target (settled at p = {float(res.target_prob[0]):.3f}, "
                            f"below the{below} stop: the loss stopped improving)")
                self.set_status(f"done: {what} in {used} steps, "
                                f"{self.timings['run_to_view_s']:.2f} s", "ok" if ok else "warn")
        except BaseException as e:  # noqa: BLE001 - shown in the widget, and kept in .error
            self.show_error(e)
        finally:
            with self.lock:
                self._running = False
            self._busy(False)


def _row0_flag(res: CounterfactualResult, key: str) -> bool:
    """True where the shown row (row 0) has the per-row flag ``res.meta[key]`` set
    (``"nonfinite"``: halted by the non-finite guard; ``"settled"``: ended by the plateau
    stop)."""
    flags = res.meta.get(key)
    return flags is not None and len(flags) > 0 and bool(flags[0])


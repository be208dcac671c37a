"""Jupyter widgets: explore a method's counterfactuals with sliders.

:class:`CounterfactualWidget` builds its controls from the method's ``Config`` knobs
(int/float sliders with the knob's range, log sliders, dropdowns for choices, checkboxes;
the knob's doc is the tooltip), adds an input picker, a target-class dropdown, device,
seed, Run/Stop, a progress bar and a live preview, and shows before | after | difference
(red = ink added, blue = removed, one colour bar), class-probability bars before and
after, a trajectory slider, a loss curve and a metrics line. It works in JupyterLab,
Notebook 7 and Voila without a front-end build (only core ipywidgets), and displays a
static HTML fallback (the last result) where no kernel runs.

Run behaviour: the Run button optimises in a background thread (the notebook stays
responsive); Stop ends the run after the current step and keeps the partial result
(``result.stopped``); a second Run while running does nothing; errors appear in the
widget's error box (and in ``widget.error``). ``widget.run(block=True)`` runs
synchronously (tests, nbval, scripts) and returns the result; ``widget.result`` always
holds the last :class:`~cfwidgets.result.CounterfactualResult`.

Examples::

    from cfwidgets import zoo, data
    from cfwidgets.methods import Wachter
    from cfwidgets.widgets import CounterfactualWidget
    w = CounterfactualWidget(Wachter(zoo.load("mnist/cnn")), data.load_mnist("test"),
                             defaults={"steps": 300})
    w                      # press Run in the notebook, or:
    w.target = 3; w.run(block=True); w.result

Layout (fits 1366x768): the header (title, paper; an intro line in app mode); on the left
the input picker, the target (every class but the predicted one), the method / generator
switch, ``steps``, Run / Stop / progress and the status; the views beside them; every
other knob, the run settings (device, seed, preview rate) and rarely used controls in an
"Advanced" accordion (closed; the same controls, so values are kept). ``app=True`` (Voila):
only the input, target and method controls and Run/Stop, with an intro line.

Comparison dashboard
--------------------
:class:`CompareWidget` (``cfwidgets.widgets.compare``) runs every registered method of the
data's modality (or a chosen subset) on one input and target with the same step budget, a
cell per method, a sortable metrics table by independent judges, and "open" for a method's
own widget (:func:`own_widget`); images can be drawn on a :class:`DrawCanvas` (anywidget).
The runs and metrics come from :mod:`cfwidgets.analysis.compare`, shared with
``cfwidgets demo``.

Three parts, composed by every widget
-------------------------------------
- :class:`~cfwidgets.widgets.runner.Runner` (``widget.runner``): Run/Stop buttons,
  progress, status, error box and the worker thread; it calls the widget's ``execute``,
  ``show_preview`` and ``show_result``.
- :class:`~cfwidgets.widgets.panel.ControlPanel` (``widget.panel``): the target dropdown
  and the knob controls built from the method's Config (``primary_knobs`` first, the rest
  in "Advanced"), device, seed, preview rate.
- views (:mod:`cfwidgets.widgets.views`): ``ImageViews`` (``widget.images``), ``ProbsView``
  (``widget.probs``), ``PathView`` (``widget.path``: the scrub slider and its frame cache),
  ``LossView`` (``widget.loss``), ``MetricsView`` (``widget.metrics_panel``),
  ``header_html``, ``pred_caption``, ``fmt`` (numbers for people).

The old names stay as properties (``run_button``, ``target_dropdown``, ``knob_controls``,
``after_image``, ``trajectory_slider``, ``loss_view``, ``metrics_view``, ...).

Extension points (for method-specific widgets)
----------------------------------------------
Subclass :class:`CounterfactualWidget` and override only what is special. Hooks called
once in ``__init__``, in this order (each may use the standard parts, which exist by then):

1. ``make_input_controls() -> list[Widget]``: the input picker (default: an index
   slider and an info line; text: a text area).
2. ``make_views() -> list[Widget]``: the views beside the controls (default: images,
   path, probabilities + loss, metrics; call ``_make_path_probs_loss`` for the shared ones).
3. ``primary_controls()``: shown first, under the target (a method or generator switch).
4. ``extra_controls()``: shown under ``steps``, above Run (e.g. a baseline toggle).
5. ``advanced_controls()``: shown in "Advanced" (e.g. attribute weights).
6. ``extra_views()``: panels under the widget (e.g. path curves, what-if).

Class attributes: ``hidden_knobs`` (or ``hidden=``: knobs you control yourself; their
``defaults=`` value is still passed to ``explain``), ``primary_knobs`` (knobs shown
outside "Advanced"; default ``steps`` / ``max_flips``), ``devices``, ``view_px``.

Hooks called at run/display time:

- ``explain_kwargs() -> dict``: widget state -> ``method.explain(**overrides)``; extend
  with ``{**super().explain_kwargs(), "attribute_weights": (...)}``.
- ``current_input()`` (a batch of one: ``(1, C, H, W)`` or ``[str]``),
  ``current_target() -> int``, ``predict_probs(x) -> (B, K)``.
- ``show_input()``: the input changed (refreshes the target choices too);
  ``input_info_html(pred)``: the line under the picker.
- ``execute(job, callback) -> CounterfactualResult``: the run itself on the worker thread
  (default ``job.method.explain(job.x, job.target, callback=callback, generator=job.seed,
  **job.overrides)``); override to run more, e.g. a pixel baseline for a side-by-side.
- ``show_preview(step, state)``: live preview on the worker thread (every "preview every"
  steps); ``show_result(result)``: final views, then ``render_extra(result)``: your own
  per-result views; ``compute_metrics(result) -> dict``: the metrics line.
- ``on_scrub_extra(i, result)``: the path slider moved to snapshot ``i`` (mark it in your
  views); ``path_probs(result)``: every snapshot's probabilities, one batched call, cached.
- ``clear_result()``: forget the result (call ``super()`` and clear your views).
- ``on_step(fn)``: register ``fn(step, StepState)``, called every step on the worker thread.
- ``set_method(method)``: swap the method (a dropdown changed): the header follows; knob
  controls are rebuilt if the Config class differs, same-named knob values are kept.
- ``show_images(x_cf, probs_cf, caption=...)``: put any image into the after/difference
  views (a what-if mode that decodes without optimising); ``caption(role, probs)``: the
  shared caption (predicted class, p(target) when it is not the target).
- ``show_error(exc)``: show an exception from your own callbacks (never swallow it).
- ``png(img)``: PNG bytes enlarged like the standard views, for your own ``W.Image``.
- CSS classes for browser tests: ``cfw-widget`` (``cfw-app`` in app mode), ``cfw-header``,
  ``cfw-target``, ``cfw-run``, ``cfw-stop``, ``cfw-status``, ``cfw-progress``,
  ``cfw-advanced``, ``cfw-after`` (img), ``cfw-after-label .cfw-pred[data-class]``,
  ``cfw-error``, ``cfw-path`` (trajectory slider), ``cfw-path-label``, ``cfw-loss-view``
  (``.cfw-marker``: the scrubbed step), ``cfw-metrics-view``; ``tests/browser/conftest.py``
  has Lab/Voila/Chromium fixtures and a ``widget_driver`` that uses them.

Widget updates from the worker thread are plain trait assignments (safe in ipykernel);
the run state is guarded by the runner's lock. Create your own widgets before
``super().__init__`` or inside the hooks above. A method-specific widget, sketched::

    class DiffeomorphicWidget(CounterfactualWidget):
        def __init__(self, data, generators=("flow", "vae", "gan", "pixels"), **kw):
            self.gen = W.Dropdown(options=generators, description="generator")
            super().__init__(build_method(generators[0]), data, **kw)
            self.gen.observe(lambda c: self.set_method(build_method(c["new"])), names=["value"])
        def primary_controls(self): return [self.gen]
        def extra_views(self): self.side = W.HTML(); return [self.side]
        def render_extra(self, result): self.side.value = pixel_vs_generator_html(result)
"""

from .base import CounterfactualWidget
from .compare import CompareWidget, own_widget
from .controls import KnobControl, knob_control
from .disc import DISCWidget
from .panel import ControlPanel
from .runner import RunJob, Runner

__all__ = ["CompareWidget", "ControlPanel", "CounterfactualWidget", "DISCWidget", "DrawCanvas", "KnobControl", "RunJob",
           "Runner", "knob_control", "own_widget"]


def __getattr__(name: str):
    if name == "DrawCanvas":  # needs anywidget (the notebook extra): imported on first use
        from .draw import DrawCanvas

        return DrawCanvas
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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

Extension points (for method-specific widgets)
----------------------------------------------
Subclass :class:`CounterfactualWidget` and override only what is special. Hooks called
once in ``__init__`` (after the standard controls exist, so they can be used there):

- ``hidden_knobs`` (class attribute) or ``hidden=``: knobs you control yourself; their
  ``defaults=`` value is still passed to ``explain``.
- ``extra_controls() -> list[Widget]``: shown under the method's knobs (disabled during a
  run like the rest).
- ``extra_views() -> list[Widget]``: panels shown under the standard views.
- ``make_input_controls() -> list[Widget]`` and ``make_views() -> list[Widget]``: replace
  the input picker / the standard image views (e.g. a text area and a word diff).

Hooks called at run/display time:

- ``explain_kwargs() -> dict``: widget state -> ``method.explain(**overrides)``; extend
  with ``{**super().explain_kwargs(), "attribute_weights": (...)}``.
- ``current_input()`` (a batch of one: ``(1, C, H, W)`` or ``[str]``),
  ``current_target() -> int``, ``predict_probs(x) -> (B, K)``.
- ``show_input()``: the input changed; ``show_preview(step, state)``: live preview on the
  worker thread (every "preview every" steps); ``show_result(result)``: final views;
  ``render_extra(result)``: your own per-result views (called by ``show_result``);
  ``compute_metrics(result) -> dict``: the metrics line.
- ``execute(job, callback) -> CounterfactualResult``: the run itself on the worker thread
  (default ``job.method.explain(job.x, job.target, callback=callback, generator=job.seed,
  **job.overrides)``); override to run more, e.g. a pixel baseline for a side-by-side.
- ``on_step(fn)``: register ``fn(step, StepState)``, called every step on the worker thread.
- ``set_method(method)``: swap the method (e.g. a generator dropdown changed): knob
  controls are rebuilt if the Config class differs, same-named knob values are kept.
- ``show_images(x_cf, probs_cf, caption=...)``: put any image into the after/difference
  views (a what-if mode that decodes without optimising).
- ``show_error(exc)``: show an exception from your own callbacks (never swallow it).
- ``png(img)``: PNG bytes enlarged like the standard views, for your own ``W.Image``.
- CSS classes for browser tests: ``cfw-widget``, ``cfw-target``, ``cfw-run``, ``cfw-stop``,
  ``cfw-status``, ``cfw-after`` (img), ``cfw-after-label .cfw-pred[data-class]``,
  ``cfw-error``, ``cfw-path`` (trajectory slider); ``tests/browser/conftest.py`` has Lab/Voila/Chromium fixtures and a
  ``widget_driver`` that uses them.

Widget updates from the worker thread are plain trait assignments (safe in ipykernel);
the run state is guarded by a lock. Create your own widgets before ``super().__init__``
or inside ``extra_controls``/``extra_views``. A method-specific widget, sketched::

    class DiffeomorphicWidget(CounterfactualWidget):
        def __init__(self, data, generators=("flow", "vae", "gan", "pixels"), **kw):
            self.gen = W.Dropdown(options=generators, description="generator")
            super().__init__(build_method(generators[0]), data, **kw)
            self.gen.observe(lambda c: self.set_method(build_method(c["new"])), names=["value"])
        def extra_controls(self): return [self.gen]
        def extra_views(self): self.side = W.HTML(); return [self.side]
        def render_extra(self, result): self.side.value = pixel_vs_generator_html(result)
"""

from .base import CounterfactualWidget, RunJob
from .controls import KnobControl, knob_control

__all__ = ["CounterfactualWidget", "KnobControl", "RunJob", "knob_control"]

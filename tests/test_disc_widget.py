"""DISCWidget: the DISC knobs as controls, live stage in the preview, Stop, the stages as
a strip and as frames of the path slider."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ipywidgets")

from cfwidgets import zoo  # noqa: E402
from cfwidgets.data import load_mnist  # noqa: E402
from cfwidgets.methods.disc import DISC  # noqa: E402
from cfwidgets.widgets import DISCWidget  # noqa: E402

FAST = {"steps": 10, "stage_steps": 4, "init_fit_steps": 6, "confidence": 0.9999}


@pytest.fixture(scope="module")
def widget():
    clf = zoo.load("mnist/duq", device="cpu", progress=False)
    return DISCWidget(clf, load_mnist("test").x[:20], index=3, defaults=FAST, preview_every=2)


def test_controls_are_the_disc_knobs(widget):
    assert isinstance(widget.method, DISC)
    for name in ("steps", "prior", "progressive", "w_cls", "a_bn", "a_tv", "w_mc", "w_prox"):
        assert name in widget.knob_controls
    assert set(widget.knob_controls["prior"].widget.options) >= {"pixels", "dip", "inr"}


def test_run_equals_explain_and_stages_are_path_frames(widget):
    # snapshots every 7 steps: the stage ends (6, 10, 14, 24) are frames only because DISC adds them
    widget.set_knobs(prior="inr", progressive=True, record_every=7)
    seen = []
    def listen(step, state):
        seen.append(state.extra.get("stage"))

    widget.on_step(listen)
    try:
        res = widget.run(block=True)
    finally:
        widget.runner.listeners.remove(listen)
    ref = widget.method.explain(widget.current_input(), widget.target, generator=widget.result.meta["seed"],
                                **widget.knob_values())
    assert torch.equal(res.x_cf, ref.x_cf)
    assert {"fit", "final"} <= set(seen) and any(s.startswith("stage") for s in seen)
    # every stage end is a frame of the path slider, and the strip shows one image per stage
    for at in res.meta["stage_steps"]:
        assert at in res.trajectory_steps
    assert widget.stage_strip.value.count("<img") == len(res.meta["stage_names"]) == 4
    assert "duq (classifier)" in widget.term_line.value
    i = res.trajectory_steps.index(res.meta["stage_steps"][1])
    widget.trajectory_slider.value = i
    assert "end of stage 1" in widget.trajectory_label.value
    assert widget.after_image.value == widget._png(res.trajectory[i, 0])
    widget.set_knobs(record_every=0)


def test_switching_terms_off_changes_the_run(widget):
    widget.set_knobs(prior="inr", progressive=True)
    a = widget.run(block=True)
    widget.set_knobs(progressive=False)
    b = widget.run(block=True)
    assert b.meta["stage_names"] == ["fit", "final"] and not torch.equal(a.x_cf, b.x_cf)
    widget.set_knobs(progressive=True)


def test_stop_keeps_the_partial_result(widget):
    stop_at = 8

    def stopper(step, state):
        if step == stop_at:
            widget.stop()

    widget.on_step(stopper)
    try:
        res = widget.run(block=True)
    finally:
        widget.runner.listeners.remove(stopper)
    assert res.stopped and int(res.steps[0]) == stop_at
    assert "stopped" in widget.status.value

"""The widget framework without a front end (ipywidgets works kernel-free): controls from
knobs, synchronous == explain, Stop, double Run, errors, views, static fallback."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import ipywidgets as W
import numpy as np
import pytest
import torch
from torch import nn

from cfwidgets.config import knob, knobs
from cfwidgets.data import ImageDataset
from cfwidgets.methods import Wachter
from cfwidgets.methods.base import CounterfactualMethod, Recorder
from cfwidgets.widgets import CounterfactualWidget, knob_control

NAMES = ["cat", "dog", "bird"]


class Tiny(nn.Module):
    """A linear classifier on 8x8 grey images (flips classes in a few Adam steps)."""

    input_shape = (1, 8, 8)
    class_names = NAMES

    def __init__(self, delay: float = 0.0, fail_with_grad: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = nn.Linear(64, 3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(3, 64, generator=g))
            self.lin.bias.zero_()
        self.delay = delay
        self.fail_with_grad = fail_with_grad
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail_with_grad and torch.is_grad_enabled():
            raise RuntimeError("classifier exploded on purpose")
        return self.lin(x.flatten(1))


def make_data(n: int = 5) -> ImageDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 8, 8, generator=g)
    return ImageDataset("tiny", "test", x, torch.arange(n) % 3, NAMES)


def make_widget(clf=None, **kw) -> CounterfactualWidget:
    kw.setdefault("defaults", {"steps": 60, "lr": 0.05})
    return CounterfactualWidget(Wachter(clf or Tiny()), make_data(), **kw)


# ------------------------------------------------------------------ controls
def test_controls_follow_the_config_knobs():
    w = make_widget(defaults={})
    ks = {k.name: k for k in knobs(Wachter.Config)}
    assert set(w.knob_controls) == set(ks)
    steps = w.knob_controls["steps"].widget
    assert isinstance(steps, W.IntSlider)
    assert (steps.min, steps.max, steps.value) == (1, 5000, 500)
    lr = w.knob_controls["lr"].widget
    assert isinstance(lr, W.FloatLogSlider)
    assert lr.min == pytest.approx(np.log10(ks["lr"].min))
    assert lr.max == pytest.approx(np.log10(ks["lr"].max))
    assert lr.value == pytest.approx(ks["lr"].default)
    prox = w.knob_controls["proximity_weight"].widget
    assert isinstance(prox, W.FloatSlider) and (prox.min, prox.max) == (0.0, 10.0)
    loss = w.knob_controls["loss"].widget
    assert isinstance(loss, W.Dropdown) and tuple(loss.options) == ("ce", "hinge")
    for name, c in w.knob_controls.items():
        assert c.widget.tooltip == ks[name].doc  # the doc is the tooltip
    # default widget values == the Config's defaults
    assert w.knob_values() == {k: v.default for k, v in ks.items()}
    assert w.config() == Wachter.Config()
    # the standard controls
    pred = int(w._probs_before.argmax())  # the predicted class is not offered as a target
    assert [o[0] for o in w.target_dropdown.options] == [n for k, n in enumerate(NAMES) if k != pred]
    assert tuple(w.device_dropdown.options) == ("auto", "cpu", "cuda")
    assert w.index_slider.max == 4


def test_control_kinds_for_every_knob_type():
    @dataclass(frozen=True)
    class Cfg:
        flag: bool = knob(True, doc="a flag")
        n: int = knob(3, 0, 10, "an int")
        w: tuple = knob((0.5, 1.0), 0.0, 2.0, "weights")
        k: int = knob(None, 1, 20, "optional int", optional=True)
        mode: str = knob("a", doc="mode", choices=("a", "b"))

    c = {k.name: knob_control(k) for k in knobs(Cfg)}
    assert isinstance(c["flag"].widget, W.Checkbox) and c["flag"].value is True
    assert isinstance(c["n"].widget, W.IntSlider)
    assert c["w"].value == (0.5, 1.0)
    c["w"].value = (1.5, 0.25)
    assert c["w"].value == (1.5, 0.25)
    assert c["k"].value is None  # "default" box ticked
    c["k"].value = 7
    assert c["k"].value == 7 and not c["k"].none_box.value
    c["k"].value = None
    assert c["k"].value is None and c["k"].value_widget.disabled
    assert isinstance(c["mode"].widget, W.Dropdown)


def test_defaults_and_hidden_knobs():
    w = make_widget(defaults={"steps": 42, "record_every": 3}, hidden=("record_every",))
    assert "record_every" not in w.knob_controls
    assert w.knob_controls["steps"].value == 42
    assert w.knob_values()["record_every"] == 3
    with pytest.raises(ValueError, match="steps"):
        make_widget(defaults={"steps": -1})
    with pytest.raises(TypeError, match="unknown option"):
        make_widget(defaults={"stepz": 3})


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="CounterfactualMethod"):
        CounterfactualWidget(Tiny(), make_data())
    with pytest.raises(TypeError, match="255"):
        CounterfactualWidget(Wachter(Tiny()), torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown target"):
        make_widget(target="fish")


def test_array_inputs_of_several_shapes():
    clf = Tiny()
    x = torch.rand(3, 1, 8, 8)
    assert CounterfactualWidget(Wachter(clf), x).n_inputs == 3
    assert CounterfactualWidget(Wachter(clf), x[0]).n_inputs == 1  # (C, H, W)
    assert CounterfactualWidget(Wachter(clf), x[:, 0].numpy()).n_inputs == 3  # (N, H, W)
    w = CounterfactualWidget(Wachter(clf), x[0, 0])  # (H, W)
    assert w.n_inputs == 1 and w.index_slider.layout.display == "none"


# ----------------------------------------------------------------------- runs
def test_sync_run_equals_explain_with_the_same_knobs():
    w = make_widget(seed=3)
    w.set_knobs(proximity_weight=0.5, steps=40)
    res = w.run(block=True)
    assert res is w.result and not res.stopped
    ref = w.method.explain(w.current_input(), w.target, generator=3, **w.knob_values())
    assert torch.equal(res.x_cf, ref.x_cf)
    assert torch.equal(res.probs_cf, ref.probs_cf)
    assert res.meta["config"] == ref.meta["config"]
    assert res.meta["seed"] == 3
    assert w.run_sync().x_cf.equal(res.x_cf)
    # views and metrics were filled
    assert w.metrics["validity"] in (0.0, 1.0)
    assert "cfw-pred" in w.after_label.value
    assert f"data-class='{int(res.pred_cf[0])}'" in w.after_label.value
    assert "done" in w.status.value and not w.running
    assert w.timings["run_to_view_s"] >= w.timings["explain_s"] > 0


def test_background_run_via_button_and_wait():
    w = make_widget()
    w.run_button.click()
    res = w.wait(30)
    assert res is not None and w.result is res and not w.running
    assert bool(res.success[0])
    assert w.run_button.disabled is False and w.stop_button.disabled is True
    assert w.progress.bar_style == "success"


def test_stop_from_a_step_callback_keeps_the_partial_result():
    w = make_widget(defaults={"steps": 500, "confidence": 0.9999, "lr": 1e-3})
    stop_at = 4

    @w.on_step
    def _(step, state):
        if step == stop_at:
            w.stop()

    res = w.run(block=True)
    assert res.stopped and w.result is res
    assert int(res.steps[0]) == stop_at  # ended within one step
    assert res.trajectory_steps[-1] == stop_at
    assert "stopped" in w.status.value and "stopped" in w.after_label.value
    assert "stopped early" in w.metrics_view.value
    assert "stopped early" in w._repr_mimebundle_()["text/html"]


def test_stop_button_ends_a_background_run():
    clf = Tiny(delay=0.01)
    w = make_widget(clf, defaults={"steps": 2000, "confidence": 0.9999, "lr": 1e-4})
    started = threading.Event()
    w.on_step(lambda step, state: started.set() if step >= 3 else None)
    w.run_button.click()
    assert started.wait(20)
    assert w.running and w.run_button.disabled and not w.stop_button.disabled
    w.stop_button.click()
    res = w.wait(20)
    assert res is not None and res.stopped
    assert int(res.steps[0]) < 2000
    assert not w.running and not w.run_button.disabled


def test_a_second_run_while_running_does_not_start_another():
    clf = Tiny(delay=0.01)
    w = make_widget(clf, defaults={"steps": 60, "confidence": 0.9999, "lr": 1e-4})
    calls = []
    orig = w.method.explain

    def counting(*a, **k):
        calls.append(threading.current_thread().name)
        return orig(*a, **k)

    w.method.explain = counting
    w.run_button.click()
    assert w.running
    w.run_button.click()  # the front end would have it disabled; the model must cope too
    assert w.run() is None
    assert w.run(block=True) is None
    assert "already" in w.status.value
    w.wait(30)
    assert len(calls) == 1 and w.result is not None


def test_errors_show_in_the_widget_background():
    w = make_widget(Tiny(fail_with_grad=True))
    w.run_button.click()
    w.wait(30)
    assert isinstance(w.error, RuntimeError)
    assert w.error_box.layout.display == "block"
    assert "classifier exploded on purpose" in w.error_box.value
    assert "RuntimeError" in w.error_box.value and "traceback" in w.error_box.value
    assert "error" in w.status.value
    assert not w.running and not w.run_button.disabled  # ready for the next try
    # a good run afterwards clears the box
    w.method.classifier.fail_with_grad = False
    w.run(block=True)
    assert w.error is None and w.error_box.layout.display == "none"


def test_errors_show_in_the_widget_and_raise_when_blocking():
    w = make_widget(Tiny(fail_with_grad=True))
    with pytest.raises(RuntimeError, match="exploded"):
        w.run(block=True)
    assert "exploded" in w.error_box.value
    assert w.run(block=True, raise_errors=False) is None
    assert isinstance(w.error, RuntimeError)


def test_bad_knob_value_is_shown_not_lost():
    w = make_widget()
    w.knob_controls["steps"].value_widget.value = 0  # the slider clamps to its min
    assert w.knob_controls["steps"].value == 1
    w.device_dropdown.value = "cuda"
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    w.run_button.click()
    w.wait(30)
    assert "cuda" in w.error_box.value.lower()
    assert w.error_box.layout.display == "block"


# ---------------------------------------------------------------------- views
def test_views_trajectory_input_and_target_changes():
    w = make_widget(defaults={"steps": 40, "record_every": 2, "confidence": 0.9999})
    before_png = w.before_image.value
    res = w.run(block=True)
    T = res.trajectory.shape[0]
    assert w.trajectory_slider.max == T - 1 and w.trajectory_slider.value == T - 1
    assert not w.trajectory_slider.disabled
    final_png = w.after_image.value
    w.trajectory_slider.value = 0  # the first snapshot is the query itself
    assert w.after_image.value == w._png(res.trajectory[0, 0])
    assert "step 0" in w.after_label.value and "step 0" in w.trajectory_label.value
    w.trajectory_slider.value = T - 1
    assert w.after_image.value == final_png
    # every image view keeps its size
    h, wd = w.image_px()
    for img in (w.before_image, w.after_image, w.diff_image):
        assert img.layout.width == f"{wd}px" and img.layout.height == f"{h}px"
    # the loss curve and probability bars
    assert "<polyline" in w.loss_view.value
    assert w.probs_view.value.count("<tr>") == 1 + len(NAMES)
    # a new target forgets the result; a new input too, and updates the before view
    other = [k for k in range(3) if k not in (w.target, int(res.pred[0]))][0]
    w.target = other
    assert w.result is None and "press Run" in w.after_label.value
    w.index = 2
    assert w.before_image.value != before_png or torch.equal(w.inputs[0], w.inputs[2])
    assert w.target != int(w._probs_before.argmax())


def test_path_slider_sends_max_before_value():
    """In one message a front end may clamp the new value to the old max (the handle then
    sits at the start while the model says "last snapshot"): max goes first, alone."""
    w = make_widget(defaults={"steps": 40, "record_every": 2, "confidence": 0.9999})
    sent = []
    orig = w.trajectory_slider.send_state

    def record(key=None):
        sent.append(sorted(key) if isinstance(key, (list, set, tuple)) else [key])
        return orig(key)

    w.trajectory_slider.send_state = record
    w.run(block=True)
    keys = [k for k in sent if "max" in k or "value" in k]
    assert keys[:2] == [["max"], ["value"]], sent


def test_difference_map_range_and_colour_bar():
    w = make_widget()
    res = w.run(block=True)
    vmax = w._diff_vmax
    d = float((res.x_cf - res.x).abs().max())
    assert d <= vmax + 1e-6
    assert f"+{vmax:g}" in w.colorbar_text.value


class _FakeAE(nn.Module):
    """Stands in for class autoencoders: ``reconstruct(x, classes)``."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def reconstruct(self, x, classes):
        return x * 0.9 if classes is None else x * 0.8


def test_realism_metrics_when_autoencoders_are_given():
    w = make_widget(autoencoders=_FakeAE())
    w.run(block=True)
    assert {"im1", "im2"} <= set(w.metrics)
    assert "IM1" in w.metrics_view.value and "IM2" in w.metrics_view.value


def test_static_fallback_without_a_kernel():
    w = make_widget()
    bundle = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "no result yet" in bundle["text/html"] and "<img" in bundle["text/html"]
    w.run(block=True)
    html = w._repr_mimebundle_()["text/html"]
    assert html.count("<img") >= 3 and "counterfactual" in html
    r = repr(w)
    assert "CounterfactualWidget" in r and len(r) < 300


class _OtherMethod(CounterfactualMethod):
    name = "other"

    @dataclass(frozen=True)
    class Config:
        steps: int = knob(20, 1, 100, "steps")
        step_size: float = knob(0.1, 0.01, 1.0, "step size")

    def _explain(self, x, target, cfg, *, probs, callback, generator):
        x_cf = x.clone().requires_grad_(True)
        rec = Recorder(target, cfg.steps, 0.9, None, callback)
        for step in range(cfg.steps):
            logits = self.classifier(x_cf)
            loss = nn.functional.cross_entropy(logits, target, reduction="none")
            if rec.observe(step, x_cf, logits.softmax(-1), {"loss": loss}):
                break
            (g,) = torch.autograd.grad(loss.sum(), x_cf)
            with torch.no_grad():
                x_cf -= cfg.step_size * g.sign()
                x_cf.clamp_(0, 1)
        with torch.no_grad():
            p = self.classifier(x_cf).softmax(-1)
        return rec.output(*rec.finish(x_cf.detach(), p))


def test_set_method_rebuilds_the_knob_controls():
    w = make_widget()
    w.set_knobs(steps=30)
    w.set_method(_OtherMethod(Tiny()))
    assert set(w.knob_controls) == {"steps", "step_size"}
    assert w.knob_controls["steps"].value == 30  # same-named knob kept
    shown = list(w.panel.primary_box.children) + list(w.knob_box.children)  # steps first
    assert [c.widget for c in w.knob_controls.values()] == shown
    res = w.run(block=True)
    assert res.method == "other"


class _Extended(CounterfactualWidget):
    hidden_knobs = ("proximity_weight",)

    def extra_controls(self):
        self.strength = W.FloatSlider(value=0.25, min=0, max=2, description="strength")
        return [self.strength]

    def extra_views(self):
        self.note = W.HTML()
        return [self.note]

    def explain_kwargs(self):
        return {**super().explain_kwargs(), "proximity_weight": self.strength.value}

    def render_extra(self, result):
        self.note.value = f"used {result.meta['config']['proximity_weight']}"


def test_extension_hooks():
    w = _Extended(Wachter(Tiny()), make_data(), defaults={"steps": 30})
    assert "proximity_weight" not in w.knob_controls
    assert w.strength in w.control_panel.children
    assert w.extra_panel.children == (w.note,)
    w.strength.value = 0.75
    res = w.run(block=True)
    assert res.meta["config"]["proximity_weight"] == 0.75
    assert w.note.value == "used 0.75"
    during = []  # read on the worker thread, mid-run: extra controls are locked then
    w.on_step(lambda step, state: during.append(w.strength.disabled) if step == 1 else None)
    w.run_button.click()
    assert w.wait(30) is not None
    assert during == [True]
    assert not w.strength.disabled  # and unlocked after the run


class _TurnsNaN(Tiny):
    """Returns NaN logits from the 5th call with gradients on (mid-run)."""

    def forward(self, x):
        out = super().forward(x)
        if torch.is_grad_enabled() and self.calls >= 5:
            return out * float("nan")
        return out


def test_a_row_halted_by_the_nonfinite_guard_is_shown_as_such():
    import warnings

    w = make_widget(_TurnsNaN())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = w.run(block=True)
    assert bool(res.meta["nonfinite"][0])
    assert "cfw-nonfinite" in w.status.value and "NaN" in w.status.value
    assert "did not reach" not in w.status.value
    assert w.progress.bar_style == "danger"
    assert torch.isfinite(res.x_cf).all()  # the last finite iterate, not NaN pixels


def test_a_row_ended_by_the_plateau_stop_says_so_in_the_status():
    """A row the plateau stop (``patience``) ended below the confidence is a valid answer:
    the status says it reached the target, that it settled, and at which p."""
    from cfwidgets import zoo
    from cfwidgets.data import load_mnist
    from cfwidgets.methods.diffeomorphic import DiffeomorphicCounterfactual

    clf = zoo.load("mnist/cnn", device="cpu", progress=False)
    vae = zoo.load("mnist/vae", device="cpu", progress=False)
    m = DiffeomorphicCounterfactual(clf, vae)
    w = CounterfactualWidget(m, load_mnist("test").x[:1], defaults={
        "confidence": 0.9999, "patience": 20, "steps": 400, "path_density": False})
    res = w.run(block=True)
    assert bool(res.success[0]) and bool(res.meta["settled"][0]), res.steps
    p = float(res.target_prob[0])
    assert p < 0.9999
    assert f"settled at p = {p:.3f}" in w.status.value and "below the 0.9999 stop" in w.status.value
    assert "did not reach" not in w.status.value

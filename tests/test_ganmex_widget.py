"""AttributionWidget: on the shared widget base (Run / Stop / progress / status / error box),
and what it shows is what attribute() and perturbation_curves() compute, on one colour scale."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("captum")
pytest.importorskip("ipywidgets")

import cfwidgets.widgets.attribution as wa  # noqa: E402
from cfwidgets.attribution import attribute, make_baseline, perturbation_curves  # noqa: E402
from cfwidgets.data import load_mnist  # noqa: E402
from cfwidgets.methods.ganmex import GANMEX  # noqa: E402
from cfwidgets.widgets import CounterfactualWidget  # noqa: E402
from cfwidgets.widgets.attribution import AttributionWidget  # noqa: E402


@pytest.fixture(scope="module")
def ganmex():
    return GANMEX.from_zoo("mnist", device="cpu")


@pytest.fixture()
def widget(ganmex):
    return AttributionWidget(ganmex, load_mnist("test"), index=300, baselines=("ganmex", "zero"),
                             n_steps=16, device="cpu")


def test_built_on_the_widget_base_and_shows_what_attribute_computes(widget):
    assert isinstance(widget, CounterfactualWidget)
    x = widget.x
    with torch.no_grad():
        top = widget.classifier(x).topk(2, 1).indices[0]
    assert widget.source == int(top[0]) and widget.target == int(top[1])
    # the predicted class is not offered as a target
    assert widget.source not in [v for _, v in widget.target_dropdown.options]
    assert widget.maps_view.layout.display == "none"  # no empty image before a run
    res = widget.run(block=True)
    assert set(widget.maps) == {"ganmex", "zero"} and not res.stopped
    assert widget.maps_view.layout.display is None and widget.curves_view.layout.display is None
    c, t = widget.source, widget.target
    ref, base = attribute(widget.classifier, x, t, baseline="ganmex", translator=widget.ganmex,
                          n_steps=16, return_baseline=True)
    assert torch.allclose(widget.maps["ganmex"], ref[0], atol=1e-5)
    # the "after" view of the base is the counterfactual baseline G(x, t) itself
    assert torch.allclose(res.x_cf, base[:, 0], atol=1e-6)
    assert torch.allclose(widget.baselines["ganmex"], base[0], atol=1e-6)
    assert torch.equal(widget.baselines["zero"], torch.zeros_like(base[0]))
    cur = perturbation_curves(widget.classifier, x, ref, base, torch.tensor([t]), torch.tensor([c]),
                              steps=wa.CURVE_STEPS)
    assert torch.allclose(widget.curves["ganmex"]["p_target"], cur["p_target"], atol=1e-5)
    # one colour scale: the largest |map| of all baselines
    assert widget.vmax == pytest.approx(max(float(m.sum(0).abs().max()) for m in widget.maps.values()))
    assert widget.maps_view.value[:4] == b"\x89PNG" and widget.curves_view.value[:4] == b"\x89PNG"
    # the base's status line, progress bar (one tick per baseline) and path slider
    assert "done" in widget.status.value and widget.progress.value == widget.progress.max == 2
    assert widget.trajectory_slider.max == 15 and not widget.run_button.disabled
    assert f"not <b>{widget.class_names[t]}</b>" in widget.summary.value


def test_target_change_clears_and_rerun_recomputes(widget):
    widget.run(block=True)
    before = widget.maps["ganmex"].clone()
    widget.target = next(k for k in range(10) if k not in (widget.source, widget.target))
    assert widget.maps == {} and widget.result is None and widget.maps_view.value == b""
    assert widget.curves_view.layout.display == "none"
    widget.baseline_ws["blur"].value = True
    widget.run(block=True)
    assert set(widget.maps) == {"ganmex", "zero", "blur"}
    assert not torch.allclose(widget.maps["ganmex"], before)
    blur = make_baseline("blur", widget.classifier, widget.x, torch.tensor([widget.target]))
    assert torch.allclose(widget.baselines["blur"], blur[0])
    # the attribution method follows its dropdown
    widget.method_w.value = "deeplift"
    widget.run(block=True)
    ref = attribute(widget.classifier, widget.x, widget.target, baseline="zero", method="deeplift")
    assert torch.allclose(widget.maps["zero"], ref[0], atol=1e-5)
    assert "deeplift" in widget.summary.value


def test_background_run_locks_the_controls(widget):
    seen = []
    widget.on_step(lambda step, state: seen.append(
        (widget.baseline_ws["zero"].disabled, widget.method_w.disabled, widget.run_button.disabled)))
    assert widget.run() is None  # Run button semantics: a thread
    res = widget.wait(60)
    assert res is not None and set(widget.maps) == {"ganmex", "zero"}
    assert seen and all(all(s) for s in seen)
    assert not widget.baseline_ws["zero"].disabled and not widget.run_button.disabled


def test_stop_keeps_the_maps_finished_so_far(widget, monkeypatch):
    real = wa.perturbation_curves

    def curves_then_stop(*a, **k):
        out = real(*a, **k)
        widget.stop()  # pressed while the first baseline's curves were computed
        return out

    monkeypatch.setattr(wa, "perturbation_curves", curves_then_stop)
    res = widget.run(block=True)
    assert res.stopped and list(widget.maps) == ["zero"]
    assert "stopped" in widget.status.value and "ganmex not computed" in widget.summary.value


def test_bad_choices_show_clear_errors(widget):
    with pytest.raises(ValueError, match="already predicts"):
        widget.target = widget.source
    for b in widget.baseline_ws.values():
        b.value = False
    widget.run_button.click()  # shown in the widget, not raised into the front end
    assert isinstance(widget.error, ValueError) and "choose at least one baseline" in str(widget.error)
    assert widget.error_box.layout.display == "block" and "ValueError" in widget.error_box.value
    with pytest.raises(ValueError, match="unknown baselines"):
        AttributionWidget(widget.ganmex, load_mnist("test"), baselines=("median",))
    with pytest.raises(ValueError, match="unknown attribution method"):
        AttributionWidget(widget.ganmex, load_mnist("test"), method="lime")
    with pytest.raises(TypeError, match="GANMEX method"):
        AttributionWidget(widget.classifier, load_mnist("test"))

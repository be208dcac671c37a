"""AttributeWidget without a browser: weights and locks reach the method, the method switch,
the attribute bars, the walk along the path and the what-if mode."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ipywidgets")

from cfwidgets.data import load_mnist  # noqa: E402
from cfwidgets.models.conditional import LOCK_WEIGHT  # noqa: E402
from cfwidgets.widgets.attributes import AttributeWidget  # noqa: E402


@pytest.fixture(scope="module")
def widget():
    d = load_mnist("test")
    return AttributeWidget.from_zoo("mnist", d.subset(10, seed=0), defaults={"steps": 40})


def test_controls_one_weight_and_lock_per_attribute(widget):
    names = widget.method.attribute_spec.names
    assert list(widget.weight_sliders) == list(names) == list(widget.lock_boxes)
    assert "attribute_weights" not in widget.knob_controls  # replaced by the sliders
    widget.set_weight("slant", 2.5)
    widget.set_weight("digit", lock=True)
    w = widget.explain_kwargs()["attribute_weights"]
    assert w[names.index("slant")] == 2.5 and w[names.index("digit")] == LOCK_WEIGHT
    assert widget.weight_sliders["digit"].disabled
    widget.set_weight("digit", lock=False)
    widget.set_weight("slant", 1.0)
    assert widget.attribute_weights == (1.0,) * len(names)


def test_run_shows_bars_walk_and_static_fallback(widget):
    widget.set_weight("digit", lock=True)
    try:
        res = widget.run(block=True)
    finally:
        widget.set_weight("digit", lock=False)
    assert res is not None and widget.error is None
    assert res.meta["locked"] == ["digit"]
    assert "thickness" in widget.attr_view.value and "attribute changes" in widget.attr_view.value
    assert not widget.walk_slider.disabled
    x0, p0 = widget.walk_to(0.0)
    x1, p1 = widget.walk_to(1.0)
    assert torch.allclose(x0, res.meta["x_rec"][0], atol=1e-5)
    assert torch.allclose(x1, res.x_cf[0], atol=1e-4)
    assert "top1_share" in widget.metrics
    assert "attribute changes" in widget.static_html()
    # from_zoo adds the independent oracle's verdict, named, to the metrics line
    assert widget.metrics["judges"]["oracle"] == "mnist/oracle"
    assert "oracle agrees" in widget.metrics_view.value


def test_what_if_decodes_and_updates_probabilities(widget):
    widget.whatif_reset("input")
    x_a, p_a = widget.what_if()
    x_b, p_b = widget.what_if(slant=25.0, thickness=4.0)
    assert x_a.shape == x_b.shape == (1, 28, 28)
    assert not torch.allclose(x_a, x_b)
    assert abs(float(p_a.sum()) - 1) < 1e-4
    assert "what-if" in widget.after_label.value and "p(target)" in widget.whatif_info.value
    x_c, p_c = widget.what_if(digit="7")
    assert widget.whatif_controls["digit"].value == 7
    with pytest.raises(KeyError):
        widget.what_if(colour=1.0)


def test_method_switch_rebuilds_knobs(widget):
    widget.method_dropdown.value = "aip"
    assert widget.method.name == "aip" and "beta_z" in widget.knob_controls
    res = widget.run(block=True)
    assert res.meta["method"] == "aip"
    widget.method_dropdown.value = "gci"
    assert widget.method.name == "gci" and "sparsity_weight" in widget.knob_controls

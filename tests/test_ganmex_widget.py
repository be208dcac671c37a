"""AttributionWidget: what it shows is what attribute() computes, on one colour scale."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("captum")
pytest.importorskip("ipywidgets")

from cfwidgets.attribution import attribute  # noqa: E402
from cfwidgets.data import load_mnist  # noqa: E402
from cfwidgets.methods.ganmex import GANMEX  # noqa: E402
from cfwidgets.widgets.attribution import AttributionWidget  # noqa: E402


@pytest.fixture(scope="module")
def widget():
    g = GANMEX.from_zoo("mnist", device="cpu")
    return AttributionWidget(g, load_mnist("test"), index=300, baselines=("ganmex", "zero"),
                             n_steps=16)


def test_default_target_is_the_runner_up_and_maps_match_attribute(widget):
    x = widget.x
    with torch.no_grad():
        top = widget.classifier(x).topk(2, 1).indices[0]
    assert widget.source == int(top[0]) and widget.target == int(top[1])
    maps = widget.run()
    assert set(maps) == {"ganmex", "zero"}
    ref = attribute(widget.classifier, x, widget.target, baseline="ganmex", translator=widget.ganmex,
                    n_steps=16)
    assert torch.allclose(maps["ganmex"], ref[0], atol=1e-5)
    assert widget.vmax == pytest.approx(max(float(m.abs().max()) for m in maps.values()))
    assert widget.maps_view.value[:4] == b"\x89PNG" and widget.curves_view.value[:4] == b"\x89PNG"
    assert set(widget.curves) == {"ganmex", "zero"}


def test_changing_target_and_baselines_recomputes(widget):
    widget.run()
    before = widget.maps["ganmex"].clone()
    widget.target = next(k for k in range(10) if k not in (widget.source, widget.target))
    widget.baseline_ws["blur"].value = True
    maps = widget.run()
    assert "blur" in maps and not torch.allclose(maps["ganmex"], before)


def test_bad_choices_show_an_error(widget):
    widget.target = widget.source
    widget._safe_run()
    assert widget.error and "already predicts" in widget.error
    with pytest.raises(ValueError, match="unknown baselines"):
        AttributionWidget(widget.ganmex, load_mnist("test"), baselines=("median",))
    with pytest.raises(TypeError, match="GANMEX method"):
        AttributionWidget(widget.classifier, load_mnist("test"))

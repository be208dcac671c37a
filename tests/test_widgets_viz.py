"""Pure renderers of cfwidgets.viz (no widgets): difference map convention, colour bar,
probability bars, loss curve, metrics line, static result HTML, matplotlib figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfwidgets.result import CounterfactualResult
from cfwidgets.viz import html as vh


def _result(stopped=False):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, generator=g)
    x_cf = (x + 0.2 * torch.randn(2, 1, 8, 8, generator=g)).clamp(0, 1)
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    probs_cf = torch.tensor([[0.1, 0.85, 0.05], [0.3, 0.3, 0.4]])
    return CounterfactualResult(
        x=x, x_cf=x_cf, target=torch.tensor([1, 0]), probs=probs, probs_cf=probs_cf,
        trajectory=torch.stack([x, x_cf]), trajectory_steps=[0, 5],
        losses={"loss": [1.0, 0.5, 0.2]}, steps=torch.tensor([5, 5]), stopped=stopped,
        meta={"method": "m", "title": "M", "class_names": ["a", "b", "c"], "wall_time_s": 0.1})


def test_diff_map_is_symmetric_red_added_blue_removed():
    x = torch.zeros(1, 2, 2)
    xc = torch.tensor([[[0.2, 0.0], [0.0, 0.0]]])
    xc2 = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    rgb = vh.diff_rgb(x, xc, vmax=0.2)
    red, white = rgb[0, 0], rgb[0, 1]
    assert red[0] > 0.3 and red[2] < 0.2  # +vmax is red
    assert np.allclose(white, white.mean(), atol=0.03) and white.mean() > 0.9  # zero is white
    blue = vh.diff_rgb(xc, xc2, vmax=0.2)[0, 0]
    assert blue[2] > blue[0]  # removed ink is blue
    # the default range stays [-1, 1]
    assert np.allclose(vh.diff_rgb(x, xc), vh.diff_rgb(x, xc, vmax=1.0))
    assert vh.diff_range((x, xc)) == 0.2 and vh.diff_range(0.3) == 0.5 and vh.diff_range(2) == 1.0


def test_colorbar_prob_bars_loss_and_metrics():
    png = vh.colorbar_png(height=50, width=10)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    bars = vh.prob_bars_html(torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.1, 0.8, 0.1]), 1,
                             ["a", "b", "c"])
    assert bars.count("<tr>") == 4 and "&#9664;" in bars  # the target is marked
    assert vh.CLASS_COLORS["target"] in bars
    top = vh.prob_bars_html(torch.full((20,), 0.05), None, 19, top=3)
    assert top.count("<tr>") <= 1 + 4
    svg = vh.loss_svg({"loss": [3.0, 2.0, 1.0], "l1": [0.0, 0.1, float("nan")]})
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and "step 2" in svg  # x axis: steps 0 .. 2
    assert "no run yet" in vh.loss_svg({})
    line = vh.metrics_html({"validity": 1.0, "l1": 0.01, "time_s": 0.5}, stopped=True)
    assert "valid" in line and "0.5 s" in line and "stopped early" in line


def test_result_html_marks_stopped_and_shares_the_range():
    h = vh.result_html(_result(stopped=True))
    assert h.count("<img") == 6 and "stopped early" in h
    assert "red = ink added" in h


def test_result_figure():
    pytest.importorskip("matplotlib")
    from cfwidgets.viz.figures import figure_png, result_figure

    fig = result_figure(_result(stopped=True), rows=2)
    assert "stopped" in fig._suptitle.get_text()
    assert figure_png(fig, dpi=40)[:4] == b"\x89PNG"

"""The comparison dashboard in a real browser (JupyterLab): draw a stroke on the canvas,
press "Run all", watch every cell fill, sort the table, open one method's own widget.
Saves ``test-artifacts/compare_lab.png`` (and ``compare_lab_opened.png``) and the time from
the click to a full grid in ``compare_lab.json``."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

NOTEBOOK = "_browser_compare.ipynb"
SOURCE = """\
import torch
torch.set_num_threads(1)
from cfwidgets import data
from cfwidgets.widgets import CompareWidget
w = CompareWidget(data=data.load_mnist("test"), budget=60, device="cpu")
w"""


def _statuses(widget) -> list[str]:
    return widget.locator(".cfw-cell-status").all_inner_texts()


def test_compare_dashboard(lab, browser_page, artifacts):
    lab.write_notebook(NOTEBOOK, SOURCE)
    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 1400})  # the grid and the table on one screen
    lab.open_notebook(page, NOTEBOOK)
    lab.run_all(page)
    assert not lab.errors(page), lab.errors(page)
    widget = page.locator(".cfw-compare").first
    widget.wait_for(state="visible", timeout=60_000)
    n_cells = widget.locator(".cfw-cell").count()
    assert n_cells >= 5  # wachter, gci, aip, diffeomorphic, ganmex (+ any registered later)

    # draw a stroke: a "7" (a bar, then a diagonal down to the left)
    canvas = widget.locator(".cfw-draw-canvas")
    canvas.wait_for(state="visible", timeout=30_000)
    box = canvas.bounding_box()

    def at(fx, fy):
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    page.mouse.move(*at(0.25, 0.2))
    page.mouse.down()
    for fx, fy in ((0.5, 0.2), (0.75, 0.2), (0.6, 0.5), (0.45, 0.85)):
        page.mouse.move(*at(fx, fy), steps=8)
    page.mouse.up()
    page.wait_for_function(
        "w => Array.from(w.querySelectorAll('.cfw-input-source button.mod-active'))"
        ".some(b => b.textContent.includes('drawing'))", arg=widget.element_handle(), timeout=30_000)
    info = widget.locator(".cfw-status").inner_text()
    assert "press Run all" in info, info

    # Run all: every cell ends (done / failed / stopped) and the table fills
    t0 = time.perf_counter()
    widget.locator(".cfw-run-all").click()
    page.wait_for_function(
        """([w, n]) => { const s = Array.from(w.querySelectorAll('.cfw-cell-status'))
             .map(e => e.textContent);
           return s.length === n && s.every(t => /^(done|failed|stopped)/.test(t.trim())); }""",
        arg=[widget.element_handle(), n_cells], timeout=300_000)
    t_grid = time.perf_counter() - t0
    statuses = _statuses(widget)
    assert all(s.startswith("done") for s in statuses), statuses
    # after + difference in each cell (the body may land a moment after the status line)
    page.wait_for_function("([w, n]) => w.querySelectorAll('.cfw-cell-body img').length === 2 * n",
                           arg=[widget.element_handle(), n_cells], timeout=30_000)
    page.wait_for_function("w => /done: /.test(w.querySelector('.cfw-status').textContent)",
                           arg=widget.element_handle(), timeout=30_000)

    # sort the table by oracle agreement: best first
    widget.locator(".cfw-sort select").select_option(label="oracle agrees")
    page.wait_for_timeout(500)
    head = widget.locator(".cfw-compare-table th").all_inner_texts()
    col = next(i for i, h in enumerate(head) if h.startswith("oracle agrees"))
    assert "mnist/oracle" in head[col]
    values = [float(t.replace("%", "").strip()) for t in widget.locator(
        f".cfw-compare-table tbody tr td:nth-child({col + 1})").all_inner_texts()]
    assert len(values) == n_cells and values == sorted(values, reverse=True), values
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(artifacts / "compare_lab.png"))
    assert widget.locator(".cfw-compare-table").is_visible()

    # open one cell: the method's own widget, on the same (drawn) input
    widget.locator(".cfw-cell-diffeomorphic .cfw-open").click()
    opened = widget.locator(".cfw-compare-detail .cfw-widget")
    opened.wait_for(state="visible", timeout=60_000)
    assert "Diffeomorphic" in opened.locator(".cfw-header").inner_text()
    assert "comparison's result" in opened.locator(".cfw-status").inner_text()
    opened.scroll_into_view_if_needed()
    opened.screenshot(path=str(artifacts / "compare_lab_opened.png"))
    assert not lab.errors(page), lab.errors(page)
    (artifacts / "compare_lab.json").write_text(json.dumps(
        {"run_all_to_full_grid_s": round(t_grid, 2), "cells": n_cells, "statuses": statuses}, indent=1))
    print(f"Run all -> full grid: {t_grid:.1f} s for {n_cells} methods")

"""The GANMEX attribution widget in a real browser (JupyterLab): pick a target, press Run,
and check that the base's views (status, G(x, t) as the after image) and the widget's own
(the maps row, the deletion curves, the summary line) are drawn; then a bad choice (no
baseline ticked) shows its error in the widget. Saves
``test-artifacts/attribution_lab.png`` and the click-to-maps time in
``attribution_lab.json``."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

NOTEBOOK = "_browser_attribution.ipynb"
SOURCE = """\
import torch
torch.set_num_threads(1)
from cfwidgets import data
from cfwidgets.methods.ganmex import GANMEX
from cfwidgets.widgets.attribution import AttributionWidget
w = AttributionWidget(GANMEX.from_zoo("mnist", device="cpu"), data.load_mnist("test"), index=300,
                      baselines=("ganmex", "zero", "blur", "mdts"), n_steps=16, device="cpu")
w"""


def _natural_size(widget, css: str) -> list[int]:
    return widget.locator(css).evaluate("i => [i.naturalWidth, i.naturalHeight]")


def test_attribution_widget_in_lab(lab, browser_page, artifacts):
    lab.write_notebook(NOTEBOOK, SOURCE)
    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 2000})  # the whole widget on one screenshot
    lab.open_notebook(page, NOTEBOOK)
    lab.run_all(page)
    assert not lab.errors(page), lab.errors(page)
    widget = page.locator(".cfw-widget").first
    widget.wait_for(state="visible", timeout=60_000)
    assert "GANMEX" in widget.locator(".cfw-header").inner_text()
    # the predicted class (3 for this digit) is not offered as a target
    options = widget.locator(".cfw-target select").evaluate(
        "s => Array.from(s.options).map(o => o.textContent)")
    assert "3" not in options and "8" in options, options

    widget.locator(".cfw-target select").select_option(label="8")
    page.wait_for_function("w => /ready/.test(w.querySelector('.cfw-status').textContent)",
                           arg=widget.element_handle())
    after_src = widget.locator("img.cfw-after").get_attribute("src")
    t0 = time.perf_counter()
    widget.locator("button.cfw-run").click()
    page.wait_for_function(
        """([w, src]) => { const st = w.querySelector('.cfw-status').textContent;
             const maps = w.querySelector('.cfw-attribution-maps');
             return /done|stopped|error/.test(st) && maps && maps.naturalWidth > 0 &&
                    w.querySelector('img.cfw-after').getAttribute('src') !== src; }""",
        arg=[widget.element_handle(), after_src], timeout=120_000, polling=50)
    t_maps = time.perf_counter() - t0
    assert "done" in widget.locator(".cfw-status").inner_text()
    summary = widget.locator(".cfw-attribution-summary").inner_text()
    assert "why 3 and not 8" in summary and "4 baselines" in summary, summary
    # the maps row (input + 4 baselines over their maps) is wider than tall; the curves drawn
    mw, mh = _natural_size(widget, "img.cfw-attribution-maps")
    cw, ch = _natural_size(widget, "img.cfw-attribution-curves")
    assert mw > 1.5 * mh > 200 and cw > ch > 150, (mw, mh, cw, ch)
    # the after image is G(x, 8): the classifier calls it an 8
    assert widget.locator(".cfw-after-label .cfw-pred").get_attribute("data-class") == "8"
    assert widget.locator(".cfw-progress").count() == 1
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(artifacts / "attribution_lab.png"))

    # no baseline ticked: the error shows in the widget's error box
    for b in ("ganmex", "zero", "blur", "mdts"):
        widget.locator(f".cfw-baseline-{b} input").uncheck()
    widget.locator("button.cfw-run").click()
    page.wait_for_function("w => /error/.test(w.querySelector('.cfw-status').textContent)",
                           arg=widget.element_handle(), timeout=30_000)
    err = widget.locator(".cfw-error").inner_text()
    assert "ValueError" in err and "choose at least one baseline" in err, err
    (artifacts / "attribution_lab.json").write_text(json.dumps({"click_to_maps_s": t_maps}, indent=2))
    print("attribution_lab", {"click_to_maps_s": round(t_maps, 2)})

"""A person's path through the quickstart in a real browser: open the notebook in
JupyterLab, run all cells, pick a target class in the widget, press Run, see the new
counterfactual and its predicted class."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

NOTEBOOK = "00_quickstart.ipynb"
NEW_TARGET = "8"


def _after_state(widget):
    return widget.evaluate(
        """w => {
            const img = w.querySelector('img.cfw-after');
            const pred = w.querySelector('.cfw-after-label .cfw-pred');
            const status = w.querySelector('.cfw-status');
            return {src: img && img.getAttribute('src'),
                    pred: pred && pred.dataset.class,
                    predText: pred && pred.textContent,
                    status: status && status.textContent};
        }""")


def run_widget_for_target(page, widget, target_label: str, timeout: float = 60_000) -> dict:
    """Select ``target_label`` in the widget's target dropdown, click Run, wait for the
    final view; return timings and the after-view state."""
    widget.locator(".cfw-target select").select_option(label=target_label)
    page.wait_for_function(
        "w => !w.querySelector('.cfw-after-label .cfw-pred') && "
        "/ready/.test(w.querySelector('.cfw-status').textContent)", arg=widget.element_handle())
    before = _after_state(widget)
    t0 = time.perf_counter()
    widget.locator("button.cfw-run").click()
    page.wait_for_function(
        """([w, src]) => {
            const img = w.querySelector('img.cfw-after');
            const pred = w.querySelector('.cfw-after-label .cfw-pred');
            const st = w.querySelector('.cfw-status').textContent;
            return img.getAttribute('src') !== src && pred && /done|stopped|error/.test(st);
        }""", arg=[widget.element_handle(), before["src"]], timeout=timeout, polling=20)
    elapsed = time.perf_counter() - t0
    after = _after_state(widget)
    return {"click_to_final_view_s": elapsed, "before": before, "after": after}


def test_quickstart_in_lab(lab, browser_page, artifacts):
    page = browser_page
    t0 = time.perf_counter()
    lab.open_notebook(page, NOTEBOOK)
    t_open = time.perf_counter() - t0
    t_run_all = lab.run_all(page)
    assert not lab.errors(page), lab.errors(page)

    widget = page.locator(".cfw-widget").first
    widget.wait_for(state="visible")
    widget.scroll_into_view_if_needed()
    # the notebook's synchronous runs already show a result
    assert widget.locator(".cfw-after-label .cfw-pred").count() == 1
    widget.screenshot(path=str(artifacts / "lab_widget_initial.png"))

    res = run_widget_for_target(page, widget, NEW_TARGET)
    after = res["after"]
    assert "done" in after["status"], after
    assert after["pred"] == NEW_TARGET, after
    assert f"predicted {NEW_TARGET}" in after["predText"]
    assert widget.locator(".cfw-error").evaluate("e => getComputedStyle(e).display") == "none"

    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(artifacts / "lab_widget_after_run.png"))
    page.screenshot(path=str(artifacts / "lab_page.png"))
    timings = {"lab_start_s": lab.timings["start_s"], "open_s": t_open, "run_all_s": t_run_all,
               "click_to_final_view_s": res["click_to_final_view_s"], "status": after["status"]}
    (artifacts / "lab_timings.json").write_text(json.dumps(timings, indent=2))
    print(timings)

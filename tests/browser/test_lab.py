"""A person's path through the quickstart in a real browser: open the notebook in
JupyterLab (and Notebook 7 where installed), run all cells, pick a target class in the widget, press Run, see the new
counterfactual and its predicted class."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

NOTEBOOK = "00_quickstart.ipynb"
NEW_TARGET = "8"
SLOW_TARGET = "1"  # takes the whole 500-step budget (several seconds) for digit #0


@pytest.mark.parametrize("frontend", ["lab", "notebook7"])
def test_quickstart(frontend, request, browser_page, widget_driver, artifacts):
    lab = request.getfixturevalue(frontend)
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
    widget.screenshot(path=str(artifacts / f"{frontend}_widget_initial.png"))

    res = widget_driver.run_for_target(page, widget, NEW_TARGET)
    after = res["after"]
    assert "done" in after["status"], after
    assert after["pred"] == NEW_TARGET, after
    assert f"predicted {NEW_TARGET}" in after["predText"]
    assert widget.locator(".cfw-error").evaluate("e => getComputedStyle(e).display") == "none"

    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(artifacts / f"{frontend}_widget_after_run.png"))

    # scrub the path: drag the handle past the track's ends (clamps to first/last snapshot);
    # the handle must start at the end (the last snapshot is what the after image shows)
    track = widget.locator(".cfw-path .noUi-target").bounding_box()
    handle = widget.locator(".cfw-path .noUi-handle").bounding_box()
    assert handle["x"] + handle["width"] / 2 > track["x"] + 0.9 * track["width"], (handle, track)
    y = track["y"] + track["height"] / 2

    def drag_to(x_end):
        h = widget.locator(".cfw-path .noUi-handle").bounding_box()
        page.mouse.move(h["x"] + h["width"] / 2, h["y"] + h["height"] / 2)
        page.mouse.down()
        page.mouse.move(x_end, y, steps=8)
        page.mouse.up()

    drag_to(track["x"] - 40)
    page.wait_for_function(
        "w => /step 0\\)/.test(w.querySelector('.cfw-after-label').textContent)",
        arg=widget.element_handle(), timeout=20_000)
    drag_to(track["x"] + track["width"] + 40)
    page.wait_for_function(
        "w => !/\\(step/.test(w.querySelector('.cfw-after-label').textContent)",
        arg=widget.element_handle(), timeout=20_000)
    assert widget_driver.state(widget)["pred"] == NEW_TARGET
    page.screenshot(path=str(artifacts / f"{frontend}_page.png"))

    # a long run (a hard target at the notebook's proximity weight 3) streams progress,
    # and Stop, clicked while the kernel optimises, ends it with a partial result
    stop = widget_driver.run_then_stop(page, widget, SLOW_TARGET)
    assert "step" in stop["running"]["status"], stop
    assert "stopped" in stop["after"]["status"], stop
    assert "stopped" in widget.locator(".cfw-after-label").inner_text()
    assert "stopped early" in widget.locator(".cfw-metrics-view").inner_text()
    widget.screenshot(path=str(artifacts / f"{frontend}_widget_stopped.png"))
    timings = {"lab_start_s": lab.timings["start_s"], "open_s": t_open, "run_all_s": t_run_all,
               "click_to_final_view_s": res["click_to_final_view_s"], "status": after["status"],
               "stop_click_to_view_s": stop["stop_to_view_s"],
               "stopped_status": stop["after"]["status"]}
    (artifacts / f"{frontend}_timings.json").write_text(json.dumps(timings, indent=2))
    print(timings)

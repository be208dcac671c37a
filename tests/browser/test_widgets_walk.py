"""Issue 12's walk-through, automated: every notebook's widget in a real browser (JupyterLab
and Notebook 7) at 1366x768 - switch the method, run, stop, scrub the path - checking the
header, the after view and the numbers shown, and saving a screenshot per widget in
``test-artifacts/`` (with the timings: Run -> final view, scrub latency per move)."""

from __future__ import annotations

import json
import statistics
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

SCREEN = {"width": 1366, "height": 768}

#: notebook -> what to do with its (last) widget
CASES = {
    "00_quickstart.ipynb": dict(header="Wachter", switch=None, target="8", stop_target="1"),
    "01_diffeomorphic.ipynb": dict(header="Diffeomorphic", switch=(".cfw-generator select", "pixels", "Wachter",
                                                                   "flow", "Diffeomorphic"),
                                   target="8", stop_target="1"),
    "02_attributes.ipynb": dict(header="GCI", switch=(".cfw-method-switch select", "aip", "AIP", "gci", "GCI"),
                                target="5", stop_target="8"),
    "03_text.ipynb": dict(header="AIP on text", switch=(".cfw-method-switch select", "HotFlip", "HotFlip",
                                                        "AIP", "AIP on text"),
                          target=None, stop_target=None),
}


def _status(widget) -> str:
    return widget.locator(".cfw-status").inner_text()


def _switch(page, widget, selector: str, value: str, title: str) -> None:
    sel = widget.locator(selector)
    labels = sel.evaluate("s => Array.from(s.options).map(o => o.textContent)")
    label = next(lab for lab in labels if value.lower() in lab.lower())
    sel.select_option(label=label)
    page.wait_for_function("([w, t]) => w.querySelector('.cfw-header').textContent.includes(t)",
                           arg=[widget.element_handle(), title], timeout=30_000)


def _pick_target(widget, wanted: str | None) -> str:
    sel = widget.locator(".cfw-target select")
    labels = sel.evaluate("s => Array.from(s.options).map(o => o.textContent)")
    label = wanted if wanted in labels else labels[-1]
    sel.select_option(label=label)
    return label


@pytest.mark.parametrize("frontend", ["lab", "notebook7"])
@pytest.mark.parametrize("notebook", list(CASES))
def test_widget_walk(notebook, frontend, request, browser_page, widget_driver, artifacts):
    case = CASES[notebook]
    server = request.getfixturevalue(frontend)
    page = browser_page
    page.set_viewport_size(SCREEN)
    server.open_notebook(page, notebook)
    server.run_all(page, timeout=600_000)
    assert not any("Traceback" in e or "Error" in e.split(":")[0] for e in server.errors(page)), server.errors(page)
    n_stderr = len(server.errors(page))  # the notebook's own warnings (not the widget's)
    widget = page.locator(".cfw-widget").last
    widget.wait_for(state="visible")
    widget.scroll_into_view_if_needed()
    name = f"{frontend}_{notebook.split('.')[0]}"
    timings: dict = {}

    # the header says which method runs, and follows a switch
    assert case["header"] in widget.locator(".cfw-header").inner_text()
    if case["switch"]:
        sel, value, title, back, back_title = case["switch"]
        _switch(page, widget, sel, value, title)
        assert title in widget.locator(".cfw-header").inner_text()
        _switch(page, widget, sel, back, back_title)

    # no horizontal overflow; Run and the after view on one screen with the widget's top
    box = widget.bounding_box()
    wide = widget.evaluate("""w => { const area = w.closest('.jp-OutputArea-output') || w.parentElement;
        const right = Math.min(area.getBoundingClientRect().right, window.innerWidth) + 1; const out = [];
        w.querySelectorAll('*').forEach(e => { const r = e.getBoundingClientRect();
            if (r.width > 0 && r.right > right) out.push(e.className.toString().slice(0, 60) + ' ' + Math.round(r.right - right)); });
        return out.slice(0, 8); }""")
    if wide:
        widget.screenshot(path=str(artifacts / f"{name}_overflow.png"))
    assert not wide, f"the widget overflows sideways: {wide}"
    run = widget.locator("button.cfw-run").bounding_box()
    after = widget.locator(".cfw-after").first.bounding_box()
    assert run["y"] + run["height"] - box["y"] <= SCREEN["height"] - 120, (run, box)
    assert after["y"] + after["height"] - box["y"] <= SCREEN["height"] - 120, (after, box)
    assert after["x"] > run["x"] + run["width"], "the result sits beside the controls"

    # run to the end
    label = _pick_target(widget, case["target"])
    if case["switch"]:  # a method switch forgets the result: the status says so
        assert "ready" in _status(widget), _status(widget)
    before_after = widget.locator(".cfw-after").first.inner_html() if notebook.startswith("03") else None
    pre = _status(widget)
    t0 = time.perf_counter()
    widget.locator("button.cfw-run").click()
    page.wait_for_function("([w, pre]) => { const t = w.querySelector('.cfw-status').textContent;"
                           " return t !== pre && /done|stopped|error/.test(t); }",
                           arg=[widget.element_handle(), pre], timeout=180_000, polling=20)
    if notebook.startswith("03"):
        page.wait_for_function("([w, h]) => w.querySelector('.cfw-after').innerHTML !== h",
                               arg=[widget.element_handle(), before_after], timeout=30_000)
    timings["click_to_final_view_s"] = time.perf_counter() - t0
    status = _status(widget)
    assert "done" in status, status
    pred = widget.locator(".cfw-pred").last
    assert pred.count() == 1
    after_text = widget.locator(".cfw-after-label, div.cfw-after").first.inner_text()
    assert "what-if" not in after_text and "step" not in after_text, after_text  # the final result
    # the numbers: the status's step count is the loss chart's last step
    steps = int(status.split(" in ")[1].split(" steps")[0])
    assert f"step {steps}" in widget.locator(".cfw-loss-view").inner_text()
    metrics = widget.locator(".cfw-metrics-view").inner_text()
    assert "p(target)" in metrics and "e-0" not in metrics and "0.0000" not in metrics
    assert len(server.errors(page)) == n_stderr, server.errors(page)  # the run adds no stderr box (FutureWarning)
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(artifacts / f"{name}_after_run.png"))

    # scrub the path: latency per move
    if not notebook.startswith("03") and widget.locator(".cfw-path .noUi-handle").count():
        lat = widget_driver.scrub_latency(page, widget)
        timings["scrub_latency_s"] = lat
        timings["scrub_median_s"] = statistics.median(lat) if lat else None
        assert lat, "the after image never changed while scrubbing"
        assert "cfw-marker" in widget.locator(".cfw-loss-view").inner_html()

    # a run stopped by the user keeps the partial result, marked
    if case["stop_target"] is not None:
        stop = widget_driver.run_then_stop(page, widget, _pick_target(widget, case["stop_target"]))
        timings["stop_click_to_view_s"] = stop["stop_to_view_s"]
        assert "stopped" in stop["after"]["status"] or "done" in stop["after"]["status"], stop
        widget.screenshot(path=str(artifacts / f"{name}_stopped.png"))
    timings["target"] = label
    (artifacts / f"{name}_walk.json").write_text(json.dumps(timings, indent=2))
    print(name, timings)

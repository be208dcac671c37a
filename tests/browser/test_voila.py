"""The Wachter widget served as an app by Voila: open it, pick a target, Run, see the new
prediction."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

APP = "app_wachter.ipynb"
NEW_TARGET = "3"


def test_app_in_voila(voila_app, browser_page, widget_driver, artifacts):
    app = voila_app(APP)
    page = browser_page
    t0 = time.perf_counter()
    page.goto(app.url, wait_until="domcontentloaded")
    widget = page.locator(".cfw-widget").first
    widget.wait_for(state="visible", timeout=120_000)
    t_render = time.perf_counter() - t0
    page.wait_for_function("() => /ready/.test(document.querySelector('.cfw-status').textContent)")
    assert "code" not in page.locator("body").inner_text()[:0]  # Voila hides the sources
    res = widget_driver.run_for_target(page, widget, NEW_TARGET)
    after = res["after"]
    assert "done" in after["status"], after
    assert after["pred"] == NEW_TARGET, after
    assert widget.locator(".cfw-error").evaluate("e => getComputedStyle(e).display") == "none"
    page.screenshot(path=str(artifacts / "voila_app.png"), full_page=True)
    timings = {"voila_start_s": app.start_s, "page_to_widget_s": t_render,
               "click_to_final_view_s": res["click_to_final_view_s"], "status": after["status"]}
    (artifacts / "voila_timings.json").write_text(json.dumps(timings, indent=2))
    print(timings)

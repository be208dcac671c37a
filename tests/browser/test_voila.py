"""The Wachter widget served as an app by Voila: open it, pick a target, Run, see the new
prediction."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

APP = "app_wachter.ipynb"
NEW_TARGET = "3"
SECOND_TARGET = "2"


def test_app_in_voila(voila_app, browser_page, widget_driver, artifacts):
    app = voila_app(APP)
    page = browser_page
    t0 = time.perf_counter()
    page.goto(app.url, wait_until="domcontentloaded")
    widget = page.locator(".cfw-widget").first
    widget.wait_for(state="visible", timeout=120_000)
    t_render = time.perf_counter() - t0
    page.wait_for_function("() => /ready/.test(document.querySelector('.cfw-status').textContent)")
    res = widget_driver.run_for_target(page, widget, NEW_TARGET)
    after = res["after"]
    assert "done" in after["status"], after
    assert after["pred"] == NEW_TARGET, after
    assert widget.locator(".cfw-error").evaluate("e => getComputedStyle(e).display") == "none"
    page.screenshot(path=str(artifacts / "voila_app.png"), full_page=True)
    # a second Run (warm: torch's one-time imports are paid), default Wachter config
    res2 = widget_driver.run_for_target(page, widget, SECOND_TARGET)
    assert res2["after"]["pred"] == SECOND_TARGET, res2
    timings = {"voila_start_s": app.start_s, "page_to_widget_s": t_render,
               "first_click_to_final_view_s": res["click_to_final_view_s"],
               "first_status": after["status"],
               "second_click_to_final_view_s": res2["click_to_final_view_s"],
               "second_status": res2["after"]["status"]}
    (artifacts / "voila_timings.json").write_text(json.dumps(timings, indent=2))
    print(timings)

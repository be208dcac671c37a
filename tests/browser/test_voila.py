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
PREHEAT_IDLE_S = 15.0


def _open_app(page, url: str):
    """Open the app; ``(widget, seconds to a visible widget, seconds to status "ready")``."""
    t0 = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    widget = page.locator(".cfw-widget").first
    widget.wait_for(state="visible", timeout=120_000)
    t_render = time.perf_counter() - t0
    page.wait_for_function("() => /ready/.test(document.querySelector('.cfw-status').textContent)")
    return widget, t_render, time.perf_counter() - t0


def test_app_in_voila(voila_app, browser_page, widget_driver, artifacts):
    app = voila_app(APP)
    page = browser_page
    widget, t_render, _ = _open_app(page, app.url)
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


def test_app_in_voila_preheated(voila_app, browser_page, widget_driver, artifacts):
    """Served as README says for deployment (``--preheat_kernel``): the notebook has run in a
    pooled kernel before the page opens, so the first render does not wait for torch."""
    app = voila_app(APP, preheat=True)
    time.sleep(PREHEAT_IDLE_S)  # a deployed server has been up a while; let the pool's run end
    page = browser_page
    widget, t_render, t_ready = _open_app(page, app.url)
    res = widget_driver.run_for_target(page, widget, NEW_TARGET)
    assert "done" in res["after"]["status"], res["after"]
    assert res["after"]["pred"] == NEW_TARGET, res["after"]
    page.screenshot(path=str(artifacts / "voila_app_preheated.png"), full_page=True)
    timings = {"voila_start_to_pool_filled_s": app.start_s, "idle_before_open_s": PREHEAT_IDLE_S,
               "page_to_widget_s": t_render, "page_to_ready_s": t_ready,
               "first_click_to_final_view_s": res["click_to_final_view_s"]}
    (artifacts / "voila_timings_preheated.json").write_text(json.dumps(timings, indent=2))
    print(timings)

"""Scrub latency in JupyterLab: after a run of the quickstart widget, hold the path
slider and move it across the track; print the seconds from each move to the after
image showing the new frame (a figure, not a timed assertion: written to
``test-artifacts/scrub_latency.json``). Uses only the widget's long-standing CSS classes
(``cfw-target``, ``cfw-run``, ``cfw-path``, ``cfw-after``), so the same test measures
older versions too."""

from __future__ import annotations

import json
import statistics

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


@pytest.mark.parametrize("notebook,target", [("00_quickstart.ipynb", "8"), ("01_diffeomorphic.ipynb", "2")])
def test_scrub_latency(notebook, target, lab, browser_page, widget_driver, artifacts):
    page = browser_page
    lab.open_notebook(page, notebook)
    lab.run_all(page, timeout=600_000)
    widget = page.locator(".cfw-widget").last
    widget.scroll_into_view_if_needed()
    run = widget_driver.run_for_target(page, widget, target, timeout=180_000)
    assert "done" in run["after"]["status"]
    rounds = [widget_driver.scrub_latency(page, widget, positions=10) for _ in range(3)]
    lat = [t for r in rounds for t in r]
    assert lat, "the after image never changed while scrubbing"
    out = {"moves": len(lat), "median_s": statistics.median(lat), "max_s": max(lat),
           "p90_s": sorted(lat)[int(0.9 * (len(lat) - 1))],
           "click_to_final_view_s": run["click_to_final_view_s"], "all_s": lat}
    (artifacts / f"scrub_latency_{notebook.split('_')[0]}.json").write_text(json.dumps(out, indent=2))
    print({k: v for k, v in out.items() if k != "all_s"})

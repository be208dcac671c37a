"""Screenshots for the README gallery of the widgets that test_widgets_walk does not walk.

Every notebook of ``notebooks/`` (by glob, so a notebook added later is covered) that shows
a widget and is not one of the walk's cases is run in JupyterLab at 1366x768; its last
widget must render (images and controls, no error output) and is saved, on a screen tall
enough to show all of it, as
``test-artifacts/gallery_<notebook>.png``. The walk saves ``lab_<notebook>_after_run.png``
for its own notebooks. ``python experiments/refresh_gallery.py`` runs both and copies the
screenshots into ``docs/gallery/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_widgets_walk import CASES, SCREEN  # the walk's notebooks and screen size

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

# Screenshot generation for the README gallery: it re-runs whole notebooks in the browser
# (about 4 minutes for 04-06 on 2 cores) that nbval and the widget tests already run, so
# the default test run leaves it out; `python experiments/refresh_gallery.py` sets
# CFWIDGETS_GALLERY=1 and runs it.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(900),
              pytest.mark.skipif(not os.environ.get("CFWIDGETS_GALLERY"),
                                 reason="gallery screenshots: run python experiments/refresh_gallery.py "
                                        "(or set CFWIDGETS_GALLERY=1)")]


def _shows_widget(path) -> bool:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return any(c["cell_type"] == "code" and "Widget(" in "".join(c["source"]) for c in nb["cells"])


GALLERY = sorted(p.name for p in NOTEBOOKS.glob("[0-9]*.ipynb")
                 if p.name not in CASES and _shows_widget(p))


@pytest.mark.parametrize("notebook", GALLERY)
def test_gallery_screenshot(notebook, lab, browser_page, artifacts):
    page = browser_page
    page.set_viewport_size(SCREEN)
    lab.open_notebook(page, notebook)
    lab.run_all(page, timeout=800_000)
    errors = [e for e in lab.errors(page) if "Traceback" in e or "Error" in e.split(":")[0]]
    assert not errors, errors
    # the output area of the last widget view that shows images (a widget's own root, not
    # one of its children; notebook 06 ends on a text comparison, its digits come first)
    area = page.locator(".jp-OutputArea-output:has(.jupyter-widgets):has(img)").last
    area.wait_for(state="visible", timeout=60_000)
    page.wait_for_function("a => Array.from(a.querySelectorAll('img')).some(i => i.complete && i.naturalWidth > 0)",
                           arg=area.element_handle(), timeout=60_000)
    assert area.locator("button, select, input").count() > 0, "the widget shows no controls"
    # a screen tall enough for the whole widget: an element taller than the notebook panel
    # is captured with the page's chrome over it (seen at 1366x768)
    height = area.bounding_box()["height"]
    page.set_viewport_size({"width": SCREEN["width"], "height": int(min(height + 300, 4000))})
    area.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = area.bounding_box()
    panel = page.locator(".jp-NotebookPanel:visible .jp-WindowedPanel-outer, .jp-NotebookPanel:visible .jp-Notebook").first.bounding_box()
    assert box["width"] > 300 and box["height"] > 150, box
    assert panel["y"] - 1 <= box["y"] and box["y"] + box["height"] <= panel["y"] + panel["height"] + 1, \
        f"the widget ({box}) is not wholly inside the notebook panel ({panel})"
    area.screenshot(path=str(artifacts / f"gallery_{notebook.split('.')[0]}.png"))

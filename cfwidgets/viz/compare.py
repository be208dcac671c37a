"""HTML of a comparison (:class:`cfwidgets.analysis.compare.Comparison`): one cell per
method (after image and difference map, or a word diff for text; its status or error) and
the metrics table, with each judged column naming its judge. The dashboard's export, its
static fallback and the ``cfwidgets demo`` report are made here.

Examples::

    from cfwidgets.viz.compare import comparison_html, comparison_page
    open("compare.html", "w").write(comparison_page(comp))
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from .html import CSS, TEXT_CSS, diff_range, diff_rgb, fmt, img_tag, table_html, word_diff_html

__all__ = ["IMAGE_COLUMNS", "TEXT_COLUMNS", "cell_html", "comparison_html", "comparison_page",
           "judged_headings", "metrics_table_html"]

#: the table's columns, in order (those a row lacks are left out)
IMAGE_COLUMNS = ("method", "validity", "target_prob", "l1", "sparsity", "im1", "oracle", "steps",
                 "time_s")
TEXT_COLUMNS = ("method", "flip_rate", "target_prob", "edit_distance", "bleu", "judge_agreement",
                "ppl_ratio", "time_s")

#: which judge (a key of ``Comparison.judges``) scores each column
_JUDGED = {"im1": "realism", "im2": "realism", "oracle": "oracle", "judge_agreement": "judge",
           "ppl_ratio": "fluency"}
_BASE = {"im1": "IM1 realism", "im2": "IM2 realism", "oracle": "oracle agrees",
         "judge_agreement": "judge agrees", "ppl_ratio": "perplexity ratio"}

CELL_CSS = """
<style>
.cfw-cgrid{display:flex;flex-wrap:wrap;gap:8px;font-family:system-ui,sans-serif;font-size:12px}
.cfw-ccell{border:1px solid #d0d7de;border-radius:6px;padding:6px 8px;background:#fff;min-width:150px}
.cfw-ccell img{image-rendering:pixelated;image-rendering:crisp-edges}
.cfw-ccell .cfw-ctitle{font-weight:600;font-size:13px}
.cfw-comparison .cfw-table td,.cfw-compare-table .cfw-table td{white-space:nowrap;overflow-wrap:normal}
.cfw-cerror{color:#82071e;background:#ffebe9;border:1px solid #cf222e;border-radius:4px;padding:2px 6px;max-width:22em;overflow-wrap:anywhere}
</style>
"""


def judged_headings(judges: Mapping[str, str]) -> dict[str, str]:
    """Column headings that name their judge, e.g. ``"oracle agrees (mnist/oracle)"``."""
    return {k: f"{_BASE[k]} ({judges[j]})" for k, j in _JUDGED.items() if j in judges}


def metrics_table_html(comp, sort_by: str | None = None, descending: bool | None = None) -> str:
    """The sortable metrics table of ``comp`` (sorted by ``sort_by``)."""
    rows = comp.rows(sort_by, descending)
    if not rows:
        return "<p class='cfw-legend'>no results yet</p>"
    wanted = TEXT_COLUMNS if comp.modality == "text" else IMAGE_COLUMNS
    cols = [c for c in wanted if any(c in r for r in rows)]
    return table_html(rows, cols, headings=judged_headings(comp.judges))


def cell_html(comp, name: str, scale: int = 3, row: int = 0, *, title: bool = True) -> str:
    """One method's cell: title (``title=False``: left out, for a widget that shows it
    itself), the after image beside its difference map (text: the word diff), the verdict,
    p(target), time and the difference map's range; or its error."""
    c = comp.cells[name]
    head = f"<div class='cfw-ctitle'>{html.escape(c.title)}</div>" if title else ""
    res = c.result
    if c.status == "failed":
        return f"{head}<div class='cfw-cerror cfw-cell-error'>failed: {html.escape(str(c.error))}</div>"
    if res is None:
        return f"{head}<div class='cfw-legend'>{html.escape(c.status)}</div>"
    ok = bool(res.success[row])
    names = comp.class_names
    k = int(res.pred_cf[row])
    label = names[k] if names and k < len(names) else str(k)
    parts = [f"<span class='{'cfw-ok' if ok else 'cfw-bad'}'>{'&#10003;' if ok else '&#10007;'} "
             f"{html.escape(label)}</span>",
             f"p(target) {fmt(float(res.target_prob[row]), '%')}", fmt(c.time_s, "s")]
    if res.is_text:
        body = f"<div style='max-width:24em'>{word_diff_html(res.x[row], res.x_cf[row])}</div>"
    else:
        x, xc = res.x[row], res.x_cf[row]
        vmax = diff_range((x[None], xc[None]))
        body = (f"<div style='white-space:nowrap'>{img_tag(xc, scale, alt=f'{c.title}: counterfactual')}"
                f"&nbsp;{img_tag(diff_rgb(x, xc, vmax), scale, alt=f'{c.title}: difference')}</div>")
        parts.append(f"<span title='difference map range (red = added, blue = removed)'>"
                     f"&Delta; &plusmn;{vmax:g}</span>")
    if c.status == "stopped":
        parts.append("<span class='cfw-stopped'>stopped</span>")
    note = ""
    if c.row and c.row.get("not_judged_by"):
        left = ", ".join(map(str, c.row["not_judged_by"]))
        note = (f"<div class='cfw-legend'>not judged by {html.escape(left)}: the method "
                f"steers with it</div>")
    return f"{head}{body}<div style='line-height:1.4'>{' &middot; '.join(parts)}</div>{note}"


def comparison_html(comp, sort_by: str | None = None, scale: int = 3) -> str:
    """The comparison as one HTML fragment: the input, a grid of cells, the metrics table,
    the judges and the budget."""
    if comp.modality == "text":
        query = f"<div class='cfw-diff'>{html.escape(str(comp.x[0]))}</div>"
    else:
        query = img_tag(comp.x[0], scale, alt="input")
    names = comp.class_names
    t = int(comp.target[0])
    tname = names[t] if names and t < len(names) else str(t)
    cells = "".join(f"<div class='cfw-ccell'>{cell_html(comp, n, scale)}</div>" for n in comp.cells)
    judges = ", ".join(f"{k}: <code>{html.escape(v)}</code>" for k, v in comp.judges.items()) or "none"
    budget = f"{comp.budget} steps each" if comp.budget else "each method's own"
    return (f"{CSS}{TEXT_CSS}{CELL_CSS}<div class='cfw-comparison'>"
            f"<p>Input {query} target <b>{html.escape(tname)}</b>; budget: {budget}; "
            f"independent judges: {judges}.</p>"
            f"<div class='cfw-cgrid'>{cells}</div>"
            f"<p class='cfw-legend'>each cell: the counterfactual and its difference map (red = "
            f"ink added, blue = removed, range &Delta;)</p>"
            f"<h3 style='margin:12px 0 4px 0'>Metrics</h3>{metrics_table_html(comp, sort_by)}</div>")


def comparison_page(comp, title: str = "cfwidgets comparison", sort_by: str | None = None) -> str:
    """A self-contained HTML page of the comparison (images inline, no scripts)."""
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px}</style>"
            f"</head><body><h1>{html.escape(title)}</h1>{comparison_html(comp, sort_by)}</body></html>")

"""Static HTML views of attribute counterfactuals (no widgets): a signed bar chart of the
attribute changes of one result row, and a small table of several results.

Bars are drawn in comparable units (standard deviations; categorical: probability mass
moved) so the lengths compare across attributes; each bar is labelled in natural units.
"""

from __future__ import annotations

import html

from ..result import CounterfactualResult

__all__ = ["attribute_bars_html", "changes_html"]

# the difference maps' convention (RdBu_r): red = more (ink added / attribute increased),
# blue = less
_POS, _NEG, _CAT = "#c0392b", "#2f6fb0", "#7b5ea7"


def attribute_bars_html(result: CounterfactualResult, row: int = 0, *, width: int = 260,
                        scale: float | None = None, title: str | None = None) -> str:
    """A signed horizontal bar per attribute for ``result`` row ``row``: red = increased,
    blue = decreased (as in the difference maps), purple = categorical mass moved (labelled ``from -> to``)."""
    m = result.meta
    if "attribute_changes" not in m:
        return "<div class='cfw-attr-bars'>(no attribute changes in this result)</div>"
    names, units, kinds = m["attribute_names"], m["attribute_units"], m["attribute_kinds"]
    cats = m.get("attribute_categories", {})
    ch = m["attribute_changes"][row].float()
    before, after, deltas = m["attributes_before"][row], m["attributes_after"][row], m["attribute_deltas"][row]
    top = float(scale) if scale else max(1.0, float(ch.abs().max()))
    half = width // 2
    rows = []
    for i, name in enumerate(names):
        c = float(ch[i])
        if kinds[i] == "categorical":
            c0, c1 = int(before[i]), int(after[i])
            lab = cats.get(name, [])
            text = (f"{lab[c0]} &rarr; {lab[c1]}" if c0 != c1 else f"{lab[c0]} (kept)") if lab else ""
            text += f" &middot; {abs(c):.0%} moved"
            bar_w, left, color = int(half * min(1.0, abs(c) / top)), half, _CAT
        else:
            d = float(deltas[i])
            unit = html.escape(units[i]) if units[i] else ""
            text = f"{float(before[i]):.3g} &rarr; {float(after[i]):.3g} {unit} ({d:+.3g})"
            bar_w = int(half * min(1.0, abs(c) / top))
            left = half if c >= 0 else half - bar_w
            color = _POS if c >= 0 else _NEG
        bar = (f"<div style='position:relative;width:{width}px;height:12px;background:#f3f4f6'>"
               f"<div style='position:absolute;left:{half}px;top:0;width:1px;height:12px;background:#8c959f'></div>"
               f"<div style='position:absolute;left:{left}px;top:1px;width:{bar_w}px;height:10px;"
               f"background:{color}'></div></div>")
        rows.append(f"<tr><td style='padding:1px 6px;font-size:12px'>{html.escape(name)}</td>"
                    f"<td>{bar}</td><td style='padding:1px 6px;font-size:11px;color:#3d444d'>{text}</td></tr>")
    cap = title or f"attribute changes (bar: &plusmn;{top:.2g} std / mass moved)"
    return (f"<div class='cfw-attr-bars'><div style='font-size:12px;font-weight:600'>{cap}</div>"
            f"{class_code_flag_html(result, row)}"
            f"<table style='border-collapse:collapse'>{''.join(rows)}</table></div>")


def class_code_flag_html(result: CounterfactualResult, row: int = 0) -> str:
    """A warning line where row ``row`` reached its class by changing a class code (a
    categorical attribute's most likely category, ``meta["class_code_changed"]``): the
    generator relabelled the input, so the picture says little about which *style* change
    the classifier needs. Empty otherwise."""
    flags = result.meta.get("class_code_changed")
    if flags is None or not bool(flags[row]):
        return ""
    return ("<div class='cfw-class-code-flag' style='font-size:12px;color:#9a6700;"
            "background:#fff8c5;padding:2px 6px;margin:2px 0'>&#9888; reached through the class "
            "code: the generator was told another class. Lock the class attribute to see what "
            "style alone does.</div>")


def changes_html(result: CounterfactualResult, max_rows: int = 8) -> str:
    """One line per row: the readable attribute changes and whether the class flipped."""
    lines = []
    names = result.meta.get("class_names")
    for b in range(min(len(result), max_rows)):
        t = int(result.target[b])
        tn = names[t] if names else str(t)
        ok = "&#10003;" if bool(result.success[b]) else "&#10007;"
        ch = result.meta.get("per_row_changes", [[]] * len(result))[b]
        lines.append(f"<li>{ok} to <b>{html.escape(str(tn))}</b>: "
                     f"{html.escape(', '.join(ch) or 'no attribute change')}</li>")
    return f"<ul class='cfw-attr-changes' style='font-size:12px'>{''.join(lines)}</ul>"


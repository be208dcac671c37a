"""Static HTML renderings of results (no widgets, no live kernel needed). Public name:
``cfwidgets.viz.html``; the code sits in the bottom layer so that the shared result type
(``result.CounterfactualResult._repr_html_``) renders itself without importing viz.

Images are embedded as base64 PNGs, enlarged with nearest-neighbour scaling so pixels stay
crisp. Difference maps use one diverging colour map symmetric around zero everywhere:
**red = ink added, blue = ink removed** (``x' - x`` on the ``RdBu_r`` map, linear on
``[-vmax, vmax]``; ``vmax`` is 1 by default, and views that show small changes snap it to
a shared, labelled range from :data:`DIFF_RANGES`, so zero is always white).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from ._png import _to_numpy_img, grid_png, png_bytes

__all__ = ["png_bytes", "img_tag", "diff_rgb", "result_html", "report_html", "grid_png",
           "colorbar_png", "diff_range", "DIFF_RANGES", "prob_bars_html", "loss_svg", "metrics_html", "DIFF_CMAP", "CSS", "fmt", "table_html", "HEADINGS",
           "CLASS_COLORS", "word_diff_html", "TEXT_CSS"]

DIFF_CMAP = "RdBu_r"

CSS = """
<style>
.cfw-result{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;font-size:13px;border-collapse:collapse}
.cfw-result td,.cfw-result th{padding:4px 8px;text-align:center;vertical-align:middle;border-bottom:1px solid #ddd}
.cfw-result img{image-rendering:pixelated;image-rendering:crisp-edges;display:block;margin:auto}
.cfw-ok{color:#1a7f37;font-weight:600}.cfw-bad{color:#cf222e;font-weight:600}
.cfw-table{border-collapse:collapse;font-family:system-ui,sans-serif;font-size:13px}
.cfw-table td,.cfw-table th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
.cfw-table th{background:#f6f8fa;white-space:nowrap}
.cfw-table td{max-width:32em;overflow-wrap:anywhere}
.cfw-legend{font-size:12px;color:#555}
.cfw-stopped{display:inline-block;color:#7d4e00;background:#fff8c5;border:1px solid #d4a72c;padding:0 6px;border-radius:3px;font-weight:600}
.cfw-metrics{font-size:12px;color:#24292f;white-space:normal;line-height:1.5}
.cfw-swatch{display:inline-block;width:60px;height:9px;vertical-align:middle;background:linear-gradient(to right,#053061,#f7f7f7,#67001f)}
</style>
"""


@lru_cache(maxsize=4)
def _lut(name: str) -> np.ndarray:
    """A colour map as a (256, 3) float32 table (looked up once; matplotlib rebuilds its
    table on every registry access)."""
    from matplotlib import colormaps

    return colormaps[name](np.linspace(0, 1, 256))[:, :3].astype(np.float32)


def diff_rgb(x: Tensor, x_cf: Tensor, vmax: float = 1.0) -> np.ndarray:
    """``x' - x`` as an RGB array on the diverging map (red added, blue removed), linear
    and symmetric around zero on ``[-vmax, vmax]`` (default the full range ``[-1, 1]``;
    see :func:`diff_range` for a shared, readable range)."""
    d = _to_numpy_img(x_cf) - _to_numpy_img(x)
    if d.ndim == 3:  # colour images: signed mean over channels
        d = d.mean(-1)
    vmax = float(vmax) if vmax and vmax > 0 else 1.0
    u = (np.clip(d / vmax, -1, 1) + 1) / 2  # [0, 1], 0.5 = no change
    idx = np.minimum((u * 256).astype(np.int64), 255)  # matplotlib's binning for N = 256
    return _lut(DIFF_CMAP)[idx]


#: the symmetric ranges difference maps snap to (so a colour bar reads 0.1, 0.25, ...)
DIFF_RANGES = (0.05, 0.1, 0.2, 0.25, 0.5, 1.0)


def diff_range(*pairs_or_max) -> float:
    """The smallest of :data:`DIFF_RANGES` that holds ``max |x' - x|``: pass ``(x, x_cf)``
    pairs of tensors, or plain numbers (maxima)."""
    m = 0.0
    for p in pairs_or_max:
        if isinstance(p, (int, float)):
            m = max(m, float(p))
        else:
            a, b = p
            m = max(m, float((torch.as_tensor(b).float() - torch.as_tensor(a).float()).abs().max()))
    for r in DIFF_RANGES:
        if m <= r + 1e-6:
            return r
    return 1.0


def img_tag(img: Tensor | np.ndarray, scale: int = 4, title: str = "", alt: str = "") -> str:
    data = base64.b64encode(png_bytes(img, scale)).decode("ascii")
    t = f' title="{html.escape(title)}"' if title else ""
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"{t}/>'


def _class_label(names: Sequence[str] | None, k: int) -> str:
    return html.escape(names[k]) if names and 0 <= k < len(names) else str(k)


def _prob_bar(probs: Tensor, highlight: int, names: Sequence[str] | None, width: int = 120) -> str:
    """A tiny inline bar chart of class probabilities (target highlighted)."""
    k = probs.shape[0]
    bars = []
    for j in range(k):
        h = max(1, int(round(float(probs[j]) * 30)))
        color = "#cf222e" if j == highlight else "#8c959f"
        bars.append(
            f'<div title="{_class_label(names, j)}: {float(probs[j]):.3f}" style="display:inline-block;'
            f'width:{max(2, width // k - 2)}px;height:{h}px;background:{color};margin-right:2px;'
            f'vertical-align:bottom"></div>'
        )
    return f'<div style="height:32px;white-space:nowrap">{"".join(bars)}</div>'


def _summary_html(result, n: int) -> tuple[str, str]:
    """The title line (method, stopped badge, successes, time, device) of a result table,
    and the "showing n of N rows" line (empty when every row is shown)."""
    more = f"<p class='cfw-legend'>showing {n} of {len(result)} rows</p>" if len(result) > n else ""
    status = (" <span class='cfw-stopped'>stopped early: partial result</span>"
              if result.stopped else "")
    title = html.escape(str(result.meta.get("title", result.method)))
    summary = (
        f"<p><b>{title}</b>{status}: {int(result.success.sum())}/{len(result)} reached the target; "
        f"{result.meta.get('wall_time_s', float('nan')):.2f} s on "
        f"{html.escape(str(result.meta.get('device', '?')))}</p>")
    return summary, more


def result_html(result, max_rows: int = 8, scale: int = 4) -> str:
    """Before | after | difference with predictions for the first ``max_rows`` rows."""
    names = result.meta.get("class_names")
    if result.is_text:
        return _text_result_html(result, max_rows, names)
    head = (
        "<tr><th>#</th><th>query</th><th>counterfactual</th><th>difference</th>"
        "<th>prediction</th><th>target</th><th>p(target)</th><th>steps</th></tr>"
    )
    rows = []
    n = min(len(result), max_rows)
    vmax = diff_range((result.x[:n], result.x_cf[:n]))
    for i in range(n):
        x, xc = result.x[i], result.x_cf[i]
        ok = bool(result.success[i])
        pred, pred_cf, t = int(result.pred[i]), int(result.pred_cf[i]), int(result.target[i])
        steps = "" if result.steps is None else int(result.steps[i])
        rows.append(
            f"<tr><td>{i}</td><td>{img_tag(x, scale, alt='query')}</td>"
            f"<td>{img_tag(xc, scale, alt='counterfactual')}</td>"
            f"<td>{img_tag(diff_rgb(x, xc, vmax), scale, alt='difference')}</td>"
            f"<td>{_class_label(names, pred)} &rarr; "
            f"<span class='{'cfw-ok' if ok else 'cfw-bad'}'>{_class_label(names, pred_cf)}</span>"
            f"{_prob_bar(result.probs_cf[i], t, names)}</td>"
            f"<td>{_class_label(names, t)}</td><td>{float(result.target_prob[i]):.3f}</td>"
            f"<td>{steps}</td></tr>"
        )
    summary, more = _summary_html(result, n)
    legend = ("<p class='cfw-legend'>difference x&prime; &minus; x: blue = ink removed "
              f"<span class='cfw-swatch'></span> red = ink added (&minus;{vmax:g} &hellip; "
              f"+{vmax:g})</p>")
    return f"{CSS}<div>{summary}<table class='cfw-result'>{head}{''.join(rows)}</table>{legend}{more}</div>"


TEXT_CSS = """
<style>
.cfw-diff{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;font-size:13px;line-height:1.6;text-align:left;white-space:normal}
.cfw-diff del{background:#ffebe9;color:#82071e;text-decoration:line-through;padding:0 2px;border-radius:2px}
.cfw-diff ins{background:#dafbe1;color:#116329;text-decoration:none;font-weight:600;padding:0 2px;border-radius:2px}
</style>
"""


def word_diff_html(source: str, counterfactual: str) -> str:
    """An inline word-level diff: deleted words struck through in red (``<del>``),
    inserted words in green (``<ins>``), a replacement as both; words are whitespace
    tokens (the text models' normalised text has punctuation as separate tokens)."""
    import difflib

    a, b = str(source).split(), str(counterfactual).split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f"<del title='removed'>{html.escape(' '.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins title='inserted'>{html.escape(' '.join(b[j1:j2]))}</ins>")
    return f"<span class='cfw-diff'>{' '.join(out)}</span>"


def _text_result_html(result, max_rows: int, names) -> str:
    rows = []
    n = min(len(result), max_rows)
    for i in range(n):
        ok = bool(result.success[i])
        t = int(result.target[i])
        rows.append(
            f"<tr><td>{i}</td><td class='cfw-diff'>{html.escape(result.x[i])}</td>"
            f"<td class='cfw-diff'>{word_diff_html(result.x[i], result.x_cf[i])}</td>"
            f"<td>{_class_label(names, int(result.pred[i]))} &rarr; <span class='{'cfw-ok' if ok else 'cfw-bad'}'>"
            f"{_class_label(names, int(result.pred_cf[i]))}</span></td>"
            f"<td>{_class_label(names, t)}</td><td>{float(result.target_prob[i]):.3f}</td></tr>"
        )
    head = ("<tr><th>#</th><th>query</th><th>counterfactual (word diff)</th><th>prediction</th>"
            "<th>target</th><th>p(target)</th></tr>")
    summary, more = _summary_html(result, n)
    legend = ("<p class='cfw-legend'>word diff: <del style='background:#ffebe9;color:#82071e'>removed</del> "
              "<ins style='background:#dafbe1;color:#116329;text-decoration:none'>inserted</ins></p>")
    return (f"{CSS}{TEXT_CSS}<div>{summary}<table class='cfw-result'>{head}{''.join(rows)}</table>"
            f"{legend}{more}</div>")


def report_html(title: str, sections: Mapping[str, str], table_html: str = "", intro: str = "") -> str:
    """A self-contained HTML page: a metrics table and one section per method."""
    body = "".join(f"<h2>{html.escape(k)}</h2>{v}" for k, v in sections.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>{CSS}"
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{intro}"
        f"{'<h2>Metrics</h2>' + table_html if table_html else ''}{body}</body></html>"
    )


# ----------------------------------------------------------------- widget parts
#: colours shared by the widgets and the static views
CLASS_COLORS = {"before": "#8c959f", "after": "#0969da", "target": "#cf222e"}


def colorbar_png(height: int = 112, width: int = 12) -> bytes:
    """The difference map's colour bar (top = +1 ink added, red; bottom = -1 removed,
    blue) as PNG bytes, on the same map and range as :func:`diff_rgb`."""
    v = np.linspace(1, -1, height)[:, None].repeat(width, 1)
    idx = np.minimum(((v + 1) / 2 * 256).astype(np.int64), 255)
    return png_bytes(_lut(DIFF_CMAP)[idx], scale=1)


def prob_bars_html(probs_before: Tensor | None, probs_after: Tensor | None, target: int | None,
                   names: Sequence[str] | None = None, *, width: int = 100,
                   top: int | None = None) -> str:
    """Horizontal class-probability bars, before (grey) and after (blue), one row per class;
    the target row is highlighted in red. ``top`` keeps only the most likely classes."""
    ref = probs_after if probs_after is not None else probs_before
    if ref is None:
        return "<div class='cfw-probs'></div>"
    k = int(ref.shape[-1])
    order = list(range(k))
    if top is not None and top < k:
        score = torch.zeros(k)
        for p in (probs_before, probs_after):
            if p is not None:
                score = torch.maximum(score, p.detach().cpu().float())
        keep = set(score.topk(top).indices.tolist())
        if target is not None:
            keep.add(int(target))
        order = [j for j in order if j in keep]

    def bar(p, j, color):
        if p is None:
            return "<td></td>"
        v = float(p[j])
        w = max(1, round(v * width))
        return (f"<td style='text-align:left;white-space:nowrap;padding:0 4px'>"
                f"<div title='{v:.3f}' style='display:inline-block;"
                f"width:{w}px;height:9px;background:{color};vertical-align:middle'></div>"
                f"<span style='font-size:11px;color:#57606a;margin-left:4px'>{v:.2f}</span></td>")

    rows = []
    for j in order:
        is_t = target is not None and j == int(target)
        label = _class_label(names, j)
        style = f"color:{CLASS_COLORS['target']};font-weight:600" if is_t else ""
        mark = " &#9664;" if is_t else ""
        rows.append(
            f"<tr><td style='text-align:right;white-space:nowrap;padding:0 4px;{style}'>"
            f"{label}{mark}</td>"
            f"{bar(probs_before, j, CLASS_COLORS['before'])}"
            f"{bar(probs_after, j, CLASS_COLORS['target'] if is_t else CLASS_COLORS['after'])}</tr>")
    head = ("<tr><th></th><th style='text-align:left'>before</th>"
            "<th style='text-align:left'>after</th></tr>")
    return (f"<table class='cfw-probs' style='border-collapse:collapse;font-size:12px;"
            f"line-height:1.1'>{head}{''.join(rows)}</table>")


_LOSS_COLORS = ["#24292f", "#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700"]


def fmt(v: object, unit: str = "") -> str:
    """A number for people: 3 significant figures (thousands with separators, integers as
    integers), ``unit="%"`` shows a fraction as a percentage, other units are appended
    (``fmt(0.97312, "%") == "97.3 %"``, ``fmt(2.5, "s") == "2.5 s"``); NaN / None: an en dash."""
    if v is None:
        return "&ndash;"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    if x != x:
        return "&ndash;"
    if unit == "%":
        x *= 100
    if abs(x) == float("inf"):
        s = "&infin;" if x > 0 else "&minus;&infin;"
    elif abs(x) >= 1000:
        s = f"{x:,.0f}"
    elif x == int(x) and (isinstance(v, int) or abs(x) >= 100 or unit == "%"):
        s = f"{int(x)}"
    else:
        s = f"{x:.3g}"
        if "e" in s:  # tiny: keep 3 significant figures, no exponent for people
            s = f"{x:.2e}"
    return f"{s} {unit}" if unit else s


def loss_svg(losses: Mapping[str, Sequence[float]], width: int = 260, height: int = 110,
             title: str = "loss", *, xs: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
             marker: float | None = None, shared: bool = False, x_unit: str = "step") -> str:
    """A small SVG line chart: ``title`` on top, a legend with each curve's last value
    (3 significant figures), the curves (each min-max scaled in its own range, or on one
    shared range with ``shared=True``, its ends labelled), and the x axis labelled with
    its first and last ``xs`` (default 0 .. n-1; a mapping gives each curve its own) in
    ``x_unit``. ``marker``: an x value
    marked with a vertical line (the scrubbed snapshot)."""
    series = [(k, [float(v) for v in vals]) for k, vals in losses.items() if len(vals) > 0]
    head = f"<text x='6' y='12' font-size='11' font-weight='600' fill='#24292f'>{html.escape(title)}</text>"
    if not series:
        return (f"<svg width='{width}' height='{height}' class='cfw-loss' "
                f"xmlns='http://www.w3.org/2000/svg'>{head}<text x='6' y='28' font-size='11' "
                f"fill='#57606a'>no run yet</text></svg>")
    pad_l, pad_r, pad_t, pad_b = 6, 6, 30, 14
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    def xs_of(name: str, n: int) -> list[float]:
        v = xs.get(name) if isinstance(xs, Mapping) else xs
        return [float(a) for a in v[:n]] if v is not None and len(v) >= n else list(range(n))

    xs_all = {name: xs_of(name, len(vals)) for name, vals in series}
    x0 = min(v[0] for v in xs_all.values())
    x1 = max(v[-1] for v in xs_all.values())
    xspan = (x1 - x0) or 1.0

    def px(x: float) -> float:
        return pad_l + pw * (float(x) - x0) / xspan

    def ok(v: float) -> bool:
        return v == v and abs(v) != float("inf")

    every = [v for _, vals in series for v in vals if ok(v)]
    g_lo, g_hi = (min(every), max(every)) if every else (0.0, 1.0)
    lines, legend = [], []
    for i, (name, vals) in enumerate(series):
        finite = [v for v in vals if ok(v)]
        if not finite:
            continue
        lo, hi = (g_lo, g_hi) if shared else (min(finite), max(finite))
        span = hi - lo or 1.0
        pts = [f"{px(xs_all[name][j]):.1f},{pad_t + ph * (1 - (v - lo) / span):.1f}"
               for j, v in enumerate(vals) if ok(v)]
        color = _LOSS_COLORS[i % len(_LOSS_COLORS)]
        sw = 2 if i == 0 else 1.2
        lines.append(f"<polyline fill='none' stroke='{color}' stroke-width='{sw}' "
                     f"points='{' '.join(pts)}'/>")
        label = name if len(name) <= 12 else name[:11] + "\u2026"
        legend.append(f"<tspan fill='{color}'>{html.escape(label)} {fmt(finite[-1])}</tspan>")
    axis = (f"<line x1='{pad_l}' y1='{pad_t + ph}' x2='{pad_l + pw}' y2='{pad_t + ph}' "
            f"stroke='#d0d7de'/>")
    unit = f"{x_unit} " if x_unit else ""
    ticks = (f"<text x='{pad_l}' y='{height - 2}' font-size='10' fill='#57606a'>{unit}{fmt(x0)}</text>"
             f"<text x='{pad_l + pw}' y='{height - 2}' font-size='10' text-anchor='end' "
             f"fill='#57606a'>{unit}{fmt(x1)}</text>")
    if shared and every:
        ticks += (f"<text x='{pad_l + pw}' y='{pad_t + 8}' font-size='9' text-anchor='end' "
                  f"fill='#8c959f'>{fmt(g_hi)}</text><text x='{pad_l + pw}' y='{pad_t + ph - 2}' "
                  f"font-size='9' text-anchor='end' fill='#8c959f'>{fmt(g_lo)}</text>")
    mark = ""
    if marker is not None:  # a snapshot before the first recorded loss: the left edge
        xm = px(min(max(float(marker), x0), x1))
        mark = (f"<line class='cfw-marker' x1='{xm:.1f}' y1='{pad_t - 2}' x2='{xm:.1f}' "
                f"y2='{pad_t + ph}' stroke='#bf8700' stroke-width='1.5' stroke-dasharray='3,2'/>")
    leg = f"<text x='{pad_l}' y='25' font-size='10'>{'  '.join(legend)}</text>"
    return (f"<svg class='cfw-loss' width='{width}' height='{height}' "
            f"xmlns='http://www.w3.org/2000/svg'>{head}{axis}{''.join(lines)}{mark}{leg}{ticks}</svg>")


def metrics_html(row: Mapping[str, object], *, stopped: bool = False) -> str:
    """One line of metrics (validity, target probability, proximity, sparsity, realism,
    steps, time) from a :func:`cfwidgets.metrics.evaluate` row, each number with 3
    significant figures, shares as percentages, times in seconds."""
    def f(key, label, unit="", tip=""):
        v = row.get(key)
        if v is None:
            return None
        t = f" title='{html.escape(tip)}'" if tip else ""
        return f"<span{t}>{label} <b>{fmt(v, unit)}</b></span>"

    ok = row.get("validity")
    badge = ""
    if ok is not None:
        good = float(ok) >= 1.0
        badge = (f"<span class='{'cfw-ok' if good else 'cfw-bad'}'>"
                 f"{'&#10003; valid' if good else '&#10007; not valid'}</span>")
    parts = [badge] if badge else []
    parts += [p for p in (
        f("target_prob", "p(target)", "%"),
        f("l1", "L1", tip="mean |x' - x| per pixel"),
        f("l2", "L2", tip="Euclidean distance ||x' - x||"),
        f("sparsity", "pixels changed by &gt; 0.05", "%",
          tip="share of pixels whose value moved by more than 0.05 (of 1)"),
        f("im1", "IM1", tip="realism: lower = closer to the target class's data"),
        f("im2", "IM2", tip="realism: lower = better"),
        f("oracle", "oracle agrees", "%",
          tip=f"share an independent classifier ({_judge(row, 'oracle')}) also reads as the target"),
        f("steps", "steps"),
        f("time_s", "time", "s"),
    ) if p]
    if stopped:
        parts.append("<span class='cfw-stopped'>stopped early (partial result)</span>")
    return f"<div class='cfw-metrics'>{' &middot; '.join(parts)}</div>"


def _judge(row: Mapping[str, object], key: str) -> str:
    """The model that produced ``row[key]`` (``row["judges"]`` of an evaluate row)."""
    judges = row.get("judges")
    return str(judges.get(key, "not named")) if isinstance(judges, Mapping) else "not named"


#: column headings of :func:`table_html` (other keys: snake_case -> words)
HEADINGS = {"validity": "valid", "flip_rate": "flipped", "target_prob": "p(target)", "l1": "L1",
            "l2": "L2", "sparsity": "pixels changed", "im1": "IM1", "im2": "IM2",
            "oracle": "oracle agrees", "time_per_cf_s": "time per CF", "time_s": "time",
            "edit_distance": "word edits", "edit_distance_norm": "edits / length", "bleu": "BLEU",
            "ppl_ratio": "perplexity ratio", "similarity": "MiniLM cosine",
            "time_per_sentence_s": "time per sentence", "repetition_cf": "repeated bigrams",
            "nonword_rate_cf": "unknown words", "judge_agreement": "judge agrees",
            "tangent": "tangent fraction", "bpd_cf": "bits/dim"}
_UNITS = {"validity": "%", "flip_rate": "%", "target_prob": "%", "sparsity": "%", "oracle": "%",
          "time_per_cf_s": "s", "time_s": "s", "time_per_sentence_s": "s", "repetition_cf": "%",
          "nonword_rate_cf": "%", "edit_distance_norm": "%", "judge_agreement": "%"}


def table_html(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None,
               headings: Mapping[str, str] | None = None) -> str:
    """A metrics table for people: worded headings (:data:`HEADINGS`, then ``headings``),
    numbers with 3 significant figures, shares as %, times in s, long text wrapped; inside
    a box that scrolls sideways instead of widening the page."""
    if not rows:
        return ""
    cols = list(columns) if columns else []
    if not cols:
        for r in rows:
            cols += [k for k in r if k not in cols and not isinstance(r[k], (list, tuple, dict))]
    words = {**HEADINGS, **(headings or {})}
    head = "".join(f"<th>{html.escape(words.get(c, c.replace('_', ' ')))}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                cells.append(f"<td>{fmt(v, _UNITS.get(c, ''))}</td>")
            else:
                cells.append(f"<td style='text-align:left'>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div style='max-width:100%;overflow-x:auto'><table class='cfw-table'><thead><tr>{head}"
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>")

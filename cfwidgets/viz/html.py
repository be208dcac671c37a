"""Static HTML renderings of results (no widgets, no live kernel needed).

Images are embedded as base64 PNGs, enlarged with nearest-neighbour scaling so pixels stay
crisp. Difference maps use one diverging colour map symmetric around zero everywhere:
**red = ink added, blue = ink removed** (``x' - x`` on the ``RdBu_r`` map, range
``[-1, 1]``).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["png_bytes", "img_tag", "diff_rgb", "result_html", "report_html", "DIFF_CMAP", "CSS"]

DIFF_CMAP = "RdBu_r"

CSS = """
<style>
.cfw-result{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;font-size:13px;border-collapse:collapse}
.cfw-result td,.cfw-result th{padding:4px 8px;text-align:center;vertical-align:middle;border-bottom:1px solid #ddd}
.cfw-result img{image-rendering:pixelated;image-rendering:crisp-edges;display:block;margin:auto}
.cfw-ok{color:#1a7f37;font-weight:600}.cfw-bad{color:#cf222e;font-weight:600}
.cfw-table{border-collapse:collapse;font-family:system-ui,sans-serif;font-size:13px}
.cfw-table td,.cfw-table th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
.cfw-table th{background:#f6f8fa}
.cfw-legend{font-size:12px;color:#555}
</style>
"""


def _to_numpy_img(img: Tensor | np.ndarray) -> np.ndarray:
    """Tensors are (C, H, W) or (H, W); numpy arrays (H, W), (H, W, 3) or (1, H, W)."""
    if isinstance(img, Tensor):
        a = img.detach().cpu().float().numpy()
        if a.ndim == 3:
            a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
        return a
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    return a


def diff_rgb(x: Tensor, x_cf: Tensor) -> np.ndarray:
    """``x' - x`` as an RGB array on the diverging map (red added, blue removed)."""
    from matplotlib import colormaps

    d = _to_numpy_img(x_cf) - _to_numpy_img(x)
    if d.ndim == 3:  # colour images: signed mean over channels
        d = d.mean(-1)
    rgba = colormaps[DIFF_CMAP]((np.clip(d, -1, 1) + 1) / 2)
    return rgba[..., :3].astype(np.float32)


def png_bytes(img: Tensor | np.ndarray, scale: int = 4) -> bytes:
    """A grey (H, W), (1, H, W) or RGB (H, W, 3) image in [0, 1] as PNG bytes, enlarged
    ``scale`` times with nearest-neighbour."""
    from PIL import Image

    a = _to_numpy_img(img)
    a = np.clip(a, 0, 1)
    if scale > 1:
        a = a.repeat(scale, 0).repeat(scale, 1)
    a8 = (a * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(a8, mode="L" if a8.ndim == 2 else "RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


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
    for i in range(n):
        x, xc = result.x[i], result.x_cf[i]
        ok = bool(result.success[i])
        pred, pred_cf, t = int(result.pred[i]), int(result.pred_cf[i]), int(result.target[i])
        steps = "" if result.steps is None else int(result.steps[i])
        rows.append(
            f"<tr><td>{i}</td><td>{img_tag(x, scale, alt='query')}</td>"
            f"<td>{img_tag(xc, scale, alt='counterfactual')}</td>"
            f"<td>{img_tag(diff_rgb(x, xc), scale, alt='difference')}</td>"
            f"<td>{_class_label(names, pred)} &rarr; "
            f"<span class='{'cfw-ok' if ok else 'cfw-bad'}'>{_class_label(names, pred_cf)}</span>"
            f"{_prob_bar(result.probs_cf[i], t, names)}</td>"
            f"<td>{_class_label(names, t)}</td><td>{float(result.target_prob[i]):.3f}</td>"
            f"<td>{steps}</td></tr>"
        )
    more = f"<p class='cfw-legend'>showing {n} of {len(result)} rows</p>" if len(result) > n else ""
    status = " (stopped early)" if result.stopped else ""
    title = html.escape(str(result.meta.get("title", result.method)))
    summary = (
        f"<p><b>{title}</b>{status}: {int(result.success.sum())}/{len(result)} reached the target; "
        f"{result.meta.get('wall_time_s', float('nan')):.2f} s on {html.escape(str(result.meta.get('device', '?')))}</p>"
    )
    legend = "<p class='cfw-legend'>difference: red = ink added, blue = ink removed</p>"
    return f"{CSS}<div>{summary}<table class='cfw-result'>{head}{''.join(rows)}</table>{legend}{more}</div>"


def _text_result_html(result, max_rows: int, names) -> str:
    rows = []
    for i in range(min(len(result), max_rows)):
        ok = bool(result.success[i])
        rows.append(
            f"<tr><td>{i}</td><td style='text-align:left'>{html.escape(result.x[i])}</td>"
            f"<td style='text-align:left'>{html.escape(result.x_cf[i])}</td>"
            f"<td>{_class_label(names, int(result.pred[i]))} &rarr; <span class='{'cfw-ok' if ok else 'cfw-bad'}'>"
            f"{_class_label(names, int(result.pred_cf[i]))}</span></td></tr>"
        )
    head = "<tr><th>#</th><th>query</th><th>counterfactual</th><th>prediction</th></tr>"
    return f"{CSS}<table class='cfw-result'>{head}{''.join(rows)}</table>"


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


def grid_png(images: Tensor, nrow: int = 8, scale: int = 2, pad: int = 1) -> bytes:
    """A grid of (N, C, H, W) images as PNG bytes (sample sheets beside checkpoints)."""
    imgs = images.detach().cpu().float().clamp(0, 1)
    n, c, h, w = imgs.shape
    ncol = min(nrow, n)
    nr = (n + ncol - 1) // ncol
    canvas = torch.ones(c, nr * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, k = divmod(i, ncol)
        canvas[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = imgs[i]
    return png_bytes(canvas, scale)

"""Matplotlib renderers: result -> Figure (for papers, reports and scripts; no widgets).

Figures are built on :class:`matplotlib.figure.Figure` directly, not through pyplot, so
nothing global changes and no window opens; save them with ``fig.savefig(...)`` or get PNG
bytes with :func:`figure_png`. The difference panel uses the same map and convention as
:mod:`cfwidgets.viz.html`: ``x' - x`` on ``RdBu_r``, symmetric around zero, red = ink
added, blue = removed, with a colour bar.

Examples::

    from cfwidgets.viz.figures import result_figure
    fig = result_figure(result, rows=4)
    fig.savefig("cf.png", dpi=150)
"""

from __future__ import annotations

import io

import numpy as np

from .._png import _to_numpy_img
from .html import DIFF_CMAP, diff_range

__all__ = ["result_figure", "figure_png"]


def _grey_or_rgb(img) -> tuple[np.ndarray, str | None]:
    a = _to_numpy_img(img)
    return np.clip(a, 0, 1), ("gray" if a.ndim == 2 else None)


def result_figure(result, rows: int = 4, *, probs: bool = True, size: float = 1.6):
    """A grid: one row per query with query | counterfactual | difference (+ colour bar)
    and, with ``probs``, class probabilities before (grey) and after (blue; target red).

    Args:
        result: an image :class:`~cfwidgets.result.CounterfactualResult`.
        rows: the most rows drawn.
        probs: add the probability panel.
        size: inches per image panel.
    """
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if result.is_text:
        raise ValueError("result_figure draws image results; use viz.html.result_html for text.")
    n = min(rows, len(result))
    cols = 4 if probs else 3
    widths = [1, 1, 1] + ([1.6] if probs else [])
    fig = Figure(figsize=(size * sum(widths) + 0.9, size * n + 0.4), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False, gridspec_kw={"width_ratios": widths})
    names = result.meta.get("class_names")
    label = (lambda k: names[k] if names and k < len(names) else str(k))  # noqa: E731
    vmax = diff_range((result.x[:n], result.x_cf[:n]))
    im = None
    for i in range(n):
        x, xc = result.x[i], result.x_cf[i]
        a, cmap = _grey_or_rgb(x)
        b, _ = _grey_or_rgb(xc)
        d = _to_numpy_img(xc) - _to_numpy_img(x)
        if d.ndim == 3:
            d = d.mean(-1)
        p0, p1 = int(result.pred[i]), int(result.pred_cf[i])
        t = int(result.target[i])
        axes[i, 0].imshow(a, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        axes[i, 0].set_title(f"query: {label(p0)}", fontsize=9)
        axes[i, 1].imshow(b, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ok = p1 == t
        axes[i, 1].set_title(f"counterfactual: {label(p1)}", fontsize=9,
                             color="#1a7f37" if ok else "#cf222e")
        im = axes[i, 2].imshow(d, cmap=DIFF_CMAP, norm=Normalize(-vmax, vmax),
                               interpolation="nearest")
        axes[i, 2].set_title("x' - x", fontsize=9)
        for ax in axes[i, :3]:
            ax.set_xticks([])
            ax.set_yticks([])
        if probs:
            ax = axes[i, 3]
            k = result.probs.shape[1]
            ys = np.arange(k)
            ax.barh(ys + 0.2, result.probs[i].numpy(), height=0.4, color="#8c959f", label="before")
            colors = ["#cf222e" if j == t else "#0969da" for j in range(k)]
            ax.barh(ys - 0.2, result.probs_cf[i].numpy(), height=0.4, color=colors, label="after")
            ax.set_yticks(ys, [label(j) for j in range(k)], fontsize=7)
            ax.invert_yaxis()
            ax.set_xlim(0, 1)
            ax.tick_params(axis="x", labelsize=7)
            if i == 0:
                ax.legend(fontsize=7, loc="lower right", frameon=False)
    if im is not None:
        cb = fig.colorbar(im, ax=axes[:, 2].tolist(), shrink=0.8, pad=0.02)
        cb.set_label("removed  <-  ink  ->  added", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    title = result.meta.get("title", result.method)
    if result.stopped:
        title += " (stopped early: partial result)"
    fig.suptitle(title, fontsize=10)
    return fig


def figure_png(fig, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()

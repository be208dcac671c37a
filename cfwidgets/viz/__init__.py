"""Pure renderers: result -> HTML / PNG / matplotlib figures. No widgets here.

``html``: static HTML (``result_html``, ``report_html``), PNG helpers (``png_bytes``,
``img_tag``, ``grid_png``), the difference map (``diff_rgb``, ``diff_range``,
``colorbar_png``) and widget parts (``prob_bars_html``, ``loss_svg``, ``metrics_html``).
``figures`` (imports matplotlib on use): ``result_figure``, ``figure_png``.
"""

from .html import (
    DIFF_CMAP,
    DIFF_RANGES,
    colorbar_png,
    diff_range,
    diff_rgb,
    grid_png,
    img_tag,
    loss_svg,
    metrics_html,
    png_bytes,
    prob_bars_html,
    report_html,
    result_html,
)

__all__ = ["DIFF_CMAP", "DIFF_RANGES", "colorbar_png", "diff_range", "diff_rgb", "grid_png",
           "img_tag", "loss_svg", "metrics_html", "png_bytes", "prob_bars_html", "report_html",
           "result_html"]

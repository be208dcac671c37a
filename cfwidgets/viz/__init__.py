"""Pure renderers: result -> HTML / PNG / matplotlib figures. No widgets here."""

from .html import DIFF_CMAP, diff_rgb, grid_png, img_tag, png_bytes, report_html, result_html

__all__ = ["DIFF_CMAP", "diff_rgb", "grid_png", "img_tag", "png_bytes", "report_html", "result_html"]

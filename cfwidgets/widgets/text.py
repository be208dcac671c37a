"""``TextCounterfactualWidget``: sentence counterfactuals (AIP on text, HotFlip) with sliders.

Built on :class:`~cfwidgets.widgets.CounterfactualWidget` (target, knobs from the Config,
Run/Stop in a thread, progress, trajectory slider, loss curve, static fallback). What it
changes for text:

- input: a text area (type or paste a sentence) and a picker over the data's sentences;
- views: the query with the model's probabilities, the counterfactual as an inline
  word-level diff (deleted words struck through in red, inserted words in green), class
  probabilities before / after, the path of hard decodes (scrub with the slider), a table
  of the candidates with their metrics (validity, p(target), edit distance, perplexity
  ratio) and a metrics line (flip, edit distance, BLEU, perplexity ratio, time);
- controls: a method switch when several methods are given (e.g. AIP and HotFlip), and
  one weight slider (+ lock) per generator attribute for AIP.

The static fallback (``_repr_html_`` of the widget and of the result) shows the word diff
as HTML, so exported notebooks keep the result.

Examples::

    from cfwidgets.data.text import load_reviews
    from cfwidgets.methods import AIPText, HotFlip
    from cfwidgets.widgets.text import TextCounterfactualWidget
    aip = AIPText.from_zoo()
    w = TextCounterfactualWidget({"AIP": aip, "HotFlip": HotFlip(aip.classifier)},
                                 load_reviews("test"))
    w                                       # in a notebook; or from code:
    w.set_text("the plot drags and the jokes fall flat ."); w.target = "positive"
    w.run(block=True).x_cf
"""

from __future__ import annotations

import html
import logging
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import ipywidgets as W
import torch

from ..methods.base import CounterfactualMethod
from ..methods.text_candidates import Candidate
from ..result import CounterfactualResult
from ..viz import html as vh
from .base import CounterfactualWidget
from .controls import CONTROL_WIDTH, DESCRIPTION_WIDTH, AttributeWeights
from .views import pred_caption

__all__ = ["TextCounterfactualWidget", "candidates_html", "text_metrics_html"]

#: knobs of the text methods shown only on request (``defaults=`` still applies)
_RARE = ("long_inputs", "mask_attributes", "population", "search_noise", "kappa", "restart_noise",
         "max_len", "skip_punctuation", "per_position", "length_slack")


def _dedupe_ranked(cands: list[Candidate]) -> list[tuple[Candidate, int]]:
    """Valid candidates first (then the method's rank), identical sentences folded into one
    row with their count."""
    order = sorted(cands, key=lambda c: (not c.valid, c.rank))
    out: list[tuple[Candidate, int]] = []
    seen: dict[str, int] = {}
    for c in order:
        key = " ".join(str(c.text).split())
        if key in seen:
            first, k = out[seen[key]]
            out[seen[key]] = (first, k + 1)
            continue
        seen[key] = len(out)
        out.append((c, 1))
    return out


def candidates_html(result: CounterfactualResult, row: int = 0) -> str:
    """A table of the candidates of one row (AIP: ``per_row_candidates``; HotFlip: the
    flips), each with its word diff and metrics: valid candidates first, identical
    sentences shown once (with a count); it wraps its text and scrolls sideways rather
    than widening the page."""
    cands = result.meta.get("per_row_candidates")
    src = result.x[row]
    if cands:
        head = ("<tr><th>#</th><th style='text-align:left;min-width:16em'>candidate</th><th>valid</th>"
                "<th>p(target)</th><th title='word edits (per word of the query)'>edits</th>"
                "<th title='perplexity ratio: counterfactual / query (lower = more fluent)'>ppl ratio</th>"
                "<th title='share of words in neither the query nor the review corpora'>"
                "unknown words</th><th>kind</th></tr>")
        body = []
        for pos, (c, count) in enumerate(_dedupe_ranked(cands[row])):
            ok = "<span class='cfw-ok'>&#10003;</span>" if c.valid else "<span class='cfw-bad'>&#10007;</span>"
            ppl = "" if c.ppl_ratio is None else vh.fmt(c.ppl_ratio)
            nw = "" if c.nonword_rate is None else vh.fmt(c.nonword_rate, "%")
            times = f" <span style='color:#57606a'>&times;{count}</span>" if count > 1 else ""
            tip = html.escape(f"method rank {c.rank + 1}, restart {c.restart}, step {c.step}")
            body.append(f"<tr><td title='{tip}'>{pos + 1}</td><td style='text-align:left;"
                        f"white-space:normal'>{vh.word_diff_html(src, c.text)}{times}</td><td>{ok}</td>"
                        f"<td style='white-space:nowrap'>{vh.fmt(c.p_target, '%')}</td>"
                        f"<td style='white-space:nowrap'>{c.edit_distance} ({vh.fmt(c.edit_norm, '%')})</td>"
                        f"<td>{ppl}</td><td style='white-space:nowrap'>{nw}</td>"
                        f"<td style='white-space:nowrap'>{html.escape(c.kind)}</td></tr>")
        return (f"{vh.TEXT_CSS}<div style='font-size:12px;margin:4px 0;white-space:normal;line-height:1.35'>"
                f"<b>candidates</b>, valid first (ranked by "
                f"{html.escape(str(result.meta.get('ranked_by', '')))})</div>"
                f"<div class='cfw-candidates-box' style='max-width:100%;overflow-x:auto;white-space:normal'>"
                f"<table class='cfw-table' style='font-size:12px;width:100%;line-height:1.35'>{head}"
                f"{''.join(body)}</table></div>")
    flips = result.meta.get("per_row_flips")
    if flips is not None:
        items = "".join(f"<li><del>{html.escape(f['from'])}</del> &rarr; <ins>{html.escape(f['to'])}</ins>"
                        f" (token {f['position']})</li>" for f in flips[row])
        return (f"{vh.TEXT_CSS}<div class='cfw-diff' style='font-size:12px'><b>word flips</b>"
                f"<ol>{items or '<li>none</li>'}</ol></div>")
    return ""


def text_metrics_html(row: Mapping[str, Any], *, stopped: bool = False) -> str:
    """One line of text metrics: validity, p(target), edit distance, BLEU, perplexity
    ratio, time (3 significant figures, shares in %)."""
    parts = []
    v = row.get("flip_rate")
    if v is not None:
        good = float(v) >= 1.0
        parts.append(f"<span class='{'cfw-ok' if good else 'cfw-bad'}'>"
                     f"{'&#10003; flipped' if good else '&#10007; not flipped'}</span>")
    for key, label, unit in (("target_prob", "p(target)", "%"), ("edit_distance", "word edits", ""),
                             ("edit_distance_norm", "edits / length", "%"), ("bleu", "BLEU", ""),
                             ("similarity", "MiniLM cosine", ""), ("ppl_ratio", "perplexity ratio", ""),
                             ("time_s", "time", "s")):
        if row.get(key) is not None and row.get(key) == row.get(key):
            parts.append(f"{label} <b>{vh.fmt(row[key], unit)}</b>")
    if stopped:
        parts.append("<span class='cfw-stopped'>stopped early (partial result)</span>")
    return f"<div class='cfw-metrics'>{' &middot; '.join(parts)}</div>"


@contextmanager
def _quiet_transformers():
    """transformers warns (FutureWarning) about its own cache API on every decode; the
    person at the widget cannot act on it, so it is not shown there."""
    log = logging.getLogger("transformers")
    level = log.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\.|$)")
        warnings.filterwarnings("ignore", message=r".*past_key_values.*")
        log.setLevel(logging.ERROR)  # its logger says the same once more
        try:
            yield
        finally:
            log.setLevel(level)


class TextCounterfactualWidget(AttributeWeights, CounterfactualWidget):
    """Explore text counterfactuals: a text area, target, knobs, attribute weights (AIP),
    Run/Stop, an inline word diff, probabilities, candidates and metrics.

    Args:
        method: a text method (``AIPText``, ``HotFlip``), or a ``{label: method}`` dict
            (a dropdown switches between them; all must explain the same classifier's classes).
        data: sentences: a :class:`~cfwidgets.data.text.TextDataset` (labels shown) or a
            list of strings.
        lm: optional fluency LM for the metrics line (default: the method's ``lm``).
        similarity: also compute the MiniLM cosine in the metrics line (loads MiniLM once).
        kwargs: passed to :class:`CounterfactualWidget` (``defaults``, ``index``, ``target``, ...).
    """

    hidden_knobs = ("attribute_weights", *_RARE)

    def __init__(self, method: CounterfactualMethod | Mapping[str, CounterfactualMethod],
                 data: Any = None, *, lm: Any = None, similarity: bool = False,
                 weight_max: float = 10.0, **kwargs: Any) -> None:
        if isinstance(method, Mapping):
            if not method:
                raise ValueError("give at least one method")
            self._methods = dict(method)
        else:
            self._methods = {getattr(method, "title", None) or method.name: method}
        for m in self._methods.values():
            if not isinstance(m, CounterfactualMethod) or getattr(m, "modality", "image") != "text":
                raise TypeError(f"TextCounterfactualWidget needs text methods (AIPText, HotFlip), "
                                f"got {type(m).__name__}.")
        first = next(iter(self._methods.values()))
        self._text_labels = None
        self._lm = lm
        self._similarity = similarity
        self._weight_max = float(weight_max)
        self._spec = None
        for m in self._methods.values():
            if getattr(m, "attribute_spec", None) is not None:
                self._spec = m.attribute_spec
                break
        if data is None:
            raise ValueError("pass sentences to explain: a TextDataset or a list of strings.")
        if hasattr(data, "texts"):
            labels = getattr(data, "labels", None)
            self._text_labels = None if labels is None else torch.as_tensor(labels)
            data = list(data.texts)
        elif isinstance(data, str):
            data = [data]
        super().__init__(first, data, **kwargs)

    def _set_data(self, data: Any) -> None:
        super()._set_data(data)
        if self._text_labels is not None and len(self._text_labels) == len(self.inputs):
            self.labels = self._text_labels

    # ============================================================ inputs
    def make_input_controls(self) -> list[W.Widget]:
        super().make_input_controls()  # index slider over the data + info line
        self.index_slider.description = "sentence #"
        self.text_area = W.Textarea(
            value=self.inputs[0] if self.inputs else "", placeholder="type or paste a sentence",
            description="sentence", continuous_update=False, rows=3,
            tooltip="The sentence to explain (edit freely; the slider picks one from the data).",
            style={"description_width": DESCRIPTION_WIDTH}, layout=W.Layout(width=CONTROL_WIDTH))
        self.text_area.add_class("cfw-text-input")
        self._quiet_text = False
        self.index_slider.observe(self._on_pick, names=["value"])
        self.text_area.observe(self._on_text, names=["value"])
        return [self.index_slider, self.text_area, self.input_info]

    def _on_pick(self, change) -> None:
        self._quiet_text = True
        try:
            self.text_area.value = self.inputs[int(change["new"])]
        finally:
            self._quiet_text = False

    def _on_text(self, _change) -> None:
        if self._quiet_text:
            return
        try:
            self.clear_result()
            self.show_input()  # the target choices follow the new prediction
        except Exception as e:  # noqa: BLE001 - shown, not swallowed
            self.show_error(e)

    def input_info_html(self, pred: int) -> str:
        area = getattr(self, "text_area", None)
        if area is None or area.value == self.inputs[self.index]:
            return super().input_info_html(pred)
        return (f"<span style='font-size:12px'>your sentence: model says <b>"
                f"{html.escape(self.class_names[pred])}</b> "
                f"({vh.fmt(float(self._probs_before[pred]), '%')})</span>")

    def set_text(self, text: str) -> None:
        """Explain ``text`` (as if typed into the text area)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        self.text_area.value = text

    def current_input(self) -> list[str]:
        area = getattr(self, "text_area", None)
        if area is None:
            return self.input_at(self.index)
        return [area.value]

    def predict_probs(self, x: Any) -> torch.Tensor:
        text = [t if str(t).strip() else "." for t in x]
        return super().predict_probs(text)

    # ============================================================ controls
    def primary_controls(self) -> list[W.Widget]:
        if len(self._methods) <= 1:
            return []
        current = next(k for k, m in self._methods.items() if m is self.method)
        self.method_dropdown = W.Dropdown(options=list(self._methods), value=current,
                                          description="method",
                                          style={"description_width": DESCRIPTION_WIDTH},
                                          layout=W.Layout(width=CONTROL_WIDTH))
        self.method_dropdown.add_class("cfw-method-switch")
        self.method_dropdown.observe(self._on_method_change, names=["value"])
        return [self.method_dropdown]

    def advanced_controls(self) -> list[W.Widget]:
        self.weight_sliders, self.lock_boxes = {}, {}
        if self._spec is None:
            return []
        rows = self._weight_rows("attribute weights (AIP: cost of a change; 0 = free) and locks")
        self.weight_box = W.VBox(rows)
        self._show_weights()
        return [self.weight_box]

    def _show_weights(self) -> None:
        if hasattr(self, "weight_box"):
            has = "attribute_weights" in {f for f in self.method.Config.__dataclass_fields__}
            self.weight_box.layout.display = None if has else "none"

    def _on_method_change(self, change) -> None:
        try:
            self.set_method(self._methods[change["new"]])
            self._show_weights()
        except Exception as e:  # noqa: BLE001
            self.show_error(e)

    def explain_kwargs(self) -> dict[str, Any]:
        kw = super().explain_kwargs()
        fields = set(self.method.Config.__dataclass_fields__)
        if "attribute_weights" in fields and self._spec is not None:
            kw["attribute_weights"] = self.attribute_weights
        return {k: v for k, v in kw.items() if k in fields}

    # ============================================================ views
    def make_views(self) -> list[W.Widget]:
        self.style_html = W.HTML(vh.CSS + vh.TEXT_CSS)
        self.style_html.layout.display = "none"
        self.before_view = W.HTML("", layout=W.Layout(width="auto"))
        self.before_view.add_class("cfw-before")
        self.after_view = W.HTML("<i>after: press Run</i>", layout=W.Layout(width="auto", min_height="40px"))
        self.after_view.add_class("cfw-after")
        self._make_path_probs_loss("Scrub through the hard decodes along the optimisation path.",
                                   self._on_text_scrub, probs_min_height="80px",
                                   metrics_render=text_metrics_html)
        self.candidates_view = W.HTML("", layout=W.Layout(width="auto", max_width="100%", overflow="auto"))
        self.candidates_view.add_class("cfw-candidates")
        row = W.HBox([self.probs_view, self.loss_view], layout=W.Layout(align_items="flex-start"))
        return [self.style_html, self.before_view, self.after_view, self.trajectory_row, row,
                self.metrics_view, self.candidates_view]

    def _pred_caption(self, probs: torch.Tensor, role: str) -> str:
        return pred_caption(probs, self.class_names, self.current_target(), role, show_role=False)

    def show_input(self) -> None:
        super().show_input()
        if not hasattr(self, "before_view"):
            return
        text = self.current_input()[0]
        self.before_view.value = (f"<div class='cfw-diff'><span style='color:#57606a'>before:</span> "
                                  f"{html.escape(text)} &nbsp; {self._pred_caption(self._probs_before, 'before')}</div>")
        self.show_text(None)

    def show_text(self, text: str | None, probs: torch.Tensor | None = None, caption: str = "") -> None:
        """Show ``text`` as the counterfactual (word diff against the input) with its
        probabilities; ``None`` clears the view."""
        if text is None:
            self.after_view.value = "<i style='color:#57606a'>after: press Run</i>"
            self.probs.show(self._probs_before, None, self.current_target(), self.class_names)
            return
        src = self.current_input()[0]
        if self.result is not None:
            src = self.result.x[0]
        cap = self._pred_caption(probs, "after") if probs is not None else ""
        self.after_view.value = (f"<div class='cfw-diff'><span style='color:#57606a'>after{html.escape(caption)}:"
                                 f"</span> {vh.word_diff_html(src, text)} &nbsp; {cap}</div>")
        if probs is not None:
            self.probs.show(self._probs_before, probs, self.current_target(), self.class_names)

    def show_preview(self, step: int, state) -> None:
        x_cf = state.x_cf
        if isinstance(x_cf, list) and x_cf:
            self.show_text(x_cf[0], state.probs[0].detach().float().cpu(), caption=f" (step {step + 1})")
        self.loss.show(self.runner.live_loss_values())

    def execute(self, job, callback) -> CounterfactualResult:
        with _quiet_transformers():
            return super().execute(job, callback)

    def show_result(self, result: CounterfactualResult) -> None:
        stopped = " (stopped)" if result.stopped else ""
        self.show_text(result.x_cf[0], result.probs_cf[0], caption=stopped)
        self._set_trajectory(result)
        self.loss.show(result.losses, self.loss_steps(result))
        with _quiet_transformers():
            self.metrics = self.compute_metrics(result)
        self.metrics_panel.show(self.metrics, stopped=result.stopped)
        self.candidates_view.value = candidates_html(result, 0)
        self.render_extra(result)

    def clear_result(self) -> None:
        super().clear_result()
        if hasattr(self, "candidates_view"):
            self.candidates_view.value = ""

    def _on_text_scrub(self, i: int) -> None:
        res = self.result
        if res is None or not res.trajectory or self.running:
            return
        try:
            last = i == len(res.trajectory) - 1
            text = res.x_cf[0] if last else res.trajectory[i][0]
            probs = res.probs_cf[0] if last else self.path_probs(res)[i]
            step = self._scrub_step(i, res)
            self.show_text(text, probs, caption="" if last else f" (step {step})")
            self._after_scrub(i, res)
        except Exception as e:  # noqa: BLE001
            self.show_error(e)

    def compute_metrics(self, result: CounterfactualResult) -> dict:
        """Flip (on hard text), p(target), word edits, BLEU, perplexity ratio (with an LM),
        MiniLM cosine (``similarity=True``) and time of the first row."""
        from ..metrics import text as mt

        src, cf = result.x[:1], result.x_cf[:1]
        row: dict[str, Any] = {
            "flip_rate": float(result.success[:1].float().mean()),
            "target_prob": float(result.target_prob[:1].mean()),
            "edit_distance": float(mt.edit_distance(src, cf)[0]),
            "edit_distance_norm": float(mt.edit_distance_norm(src, cf)[0]),
            "bleu": float(mt.bleu(src, cf)[0]),
            "time_s": float(result.meta.get("wall_time_s", float("nan"))),
        }
        lm = self._lm if self._lm is not None else getattr(self.method, "lm", None)
        if lm is not None:
            row["ppl_ratio"] = float(mt.ppl_ratio(src, cf, lm)[0])
        if self._similarity:
            row["similarity"] = float(mt.similarity(src, cf)[0])
        return row

    def static_html(self) -> str:
        if self.result is not None:
            return (vh.result_html(self.result) + text_metrics_html(self.metrics, stopped=self.result.stopped)
                    + candidates_html(self.result, 0))
        return super().static_html()

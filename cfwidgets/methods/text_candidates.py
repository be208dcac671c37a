"""Candidate sentences of AIP-text: how they are gathered, varied and ranked (our
additions around the paper's search; :mod:`cfwidgets.methods.aip_text` holds the
paper's loop).

Per sentence, each restart gives one decode (its first valid one, else its last); each
decode may give post-processed variants (:func:`transfer_edits`, :func:`repair_words`),
verified on hard text like every candidate. :func:`rank` orders them: valid first, then
``edit distance / length + fluency_weight x max(0, log ppl ratio) + nonword_weight x
unknown-word share + ending_weight x lost final punctuation``, then the target
probability. The result's ``meta["per_row_candidates"]`` lists :class:`Candidate`
records, best first, which the text widget shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from ..metrics.text import corpus_vocabulary, levenshtein, nonword_rate, words

__all__ = ["Candidate", "Decode", "first_decodes", "add_variants", "rank", "ranked_by",
           "transfer_edits", "repair_words"]


@dataclass
class Decode:
    """A hard decode of one restart of one sentence, as the search left it."""

    text: str
    probs: Tensor  # (K,) the explained classifier's verdict on the text
    a: Tensor  # (A,) the attribute code it was decoded from
    step: int | None  # the step it became valid at; None = never valid (its last decode)
    z_dist: float = float("nan")  # mean squared latent change per coordinate


@dataclass
class Candidate:
    """One candidate sentence of a query, with what ranked it (the widget's table row).

    ``kind``: ``"decode"`` (the generator's own output) or a variant of one
    (``"transferred"``, ``"transferred, known words"``, ``"repaired"``); ``rank`` 0 is the
    returned sentence."""

    text: str
    valid: bool
    p_target: float
    edit_distance: int
    edit_norm: float
    nonword_rate: float
    keeps_end: bool
    ppl_ratio: float | None
    restart: int
    step: int | None
    rank: int
    score: float
    kind: str
    probs: Tensor = field(repr=False, compare=False, default=None)  # (K,)
    a: Tensor = field(repr=False, compare=False, default=None)  # (A,)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able fields (no tensors; figures to 4 decimals), as a result's
        ``to_dict`` stores them."""
        d = {k: v for k, v in asdict(self).items() if k not in ("probs", "a")}
        for k in ("p_target", "edit_norm", "nonword_rate", "ppl_ratio", "score"):
            if d[k] is not None:
                d[k] = round(d[k], 4)
        return d


@dataclass
class _Draft:
    """A candidate while it is being scored."""

    text: str
    probs: Tensor
    a: Tensor
    step: int | None
    restart: int
    valid: bool
    kind: str
    ppl_ratio: float | None = None


def first_decodes(decodes: Sequence[Sequence[Decode]]) -> list[list[_Draft]]:
    """Per query (outer: restarts, inner: queries, as the search holds them): one draft
    per restart, valid when it reached the target."""
    n_q = len(decodes[0]) if decodes else 0
    return [[_Draft(text=d.text, probs=d.probs, a=d.a, step=d.step, restart=r, valid=d.step is not None,
                    kind="decode")
             for r, per_query in enumerate(decodes) for d in [per_query[q]]]
            for q in range(n_q)]


def add_variants(pool: list[list[_Draft]], texts: Sequence[str], x_rec: Sequence[str], *,
                 known_words: bool, score: Callable[[list[str]], Tensor], target: Tensor,
                 confidence: float) -> None:
    """Add each decode's variants to its query's pool (in place): its edits relative to
    the reconstruction applied to the source, the same without edits that bring in
    unknown words and the decode with its garbled copies repaired (``known_words``: the
    last two need the corpus vocabulary). A variant already in the pool (or the source
    itself) is skipped; each is scored by ``score`` (texts -> ``(N, K)`` probabilities)
    and valid at ``p_target >= confidence``."""
    extra = []
    vocab = corpus_vocabulary() if known_words else None
    for q, drafts in enumerate(pool):
        have = {c.text for c in drafts} | {texts[q]}
        own = set(texts[q].split())
        for c in list(drafts):
            variants = [(transfer_edits(texts[q], x_rec[q], c.text), "transferred")]
            if vocab is not None:
                variants.append((transfer_edits(
                    texts[q], x_rec[q], c.text,
                    keep=lambda ws, own=own: all(w in vocab or w in own for w in ws)),
                    "transferred, known words"))
                variants.append((repair_words(texts[q], c.text, vocab), "repaired"))
            for t, kind in variants:
                if t and t not in have:
                    have.add(t)
                    extra.append((q, replace(c, text=t, kind=kind)))
    if extra:
        probs = score([c.text for _, c in extra]).cpu()
        for (q, c), p in zip(extra, probs, strict=True):
            c.probs = p
            c.valid = float(p[int(target[q])]) >= confidence
            pool[q].append(c)


def rank(pool: list[list[_Draft]], texts: Sequence[str], target: Tensor, *, lm=None,
         fluency_weight: float, nonword_weight: float, ending_weight: float
         ) -> tuple[list[list[Candidate]], Tensor | None]:
    """Each query's candidates, best first, and the sources' perplexities (``None``
    without an ``lm``)."""
    ppl_src = None
    if lm is not None:
        flat = [c.text or "." for drafts in pool for c in drafts]
        with torch.no_grad():
            ppl = lm.perplexity(list(texts) + flat).float().cpu()
        ppl_src, ppl_c = ppl[:len(pool)], iter(ppl[len(pool):])
        for q, drafts in enumerate(pool):
            for c in drafts:
                c.ppl_ratio = float(next(ppl_c) / ppl_src[q])
    ranked = []
    for q, drafts in enumerate(pool):
        src_w = words(texts[q], normalize=False)
        nw = (nonword_rate([c.text for c in drafts], [texts[q]] * len(drafts)).tolist()
              if nonword_weight > 0 else [0.0] * len(drafts))
        src_end = src_w[-1] if src_w and not any(ch.isalnum() for ch in src_w[-1]) else None
        scored = []
        for c, c_nw in zip(drafts, nw, strict=True):
            cw = words(c.text, normalize=False)
            keeps_end = src_end is None or cw[-1:] == [src_end]
            d = levenshtein(src_w, cw)
            edit_norm = d / max(1, len(src_w))
            flu = max(0.0, math.log(c.ppl_ratio)) if c.ppl_ratio is not None and c.ppl_ratio > 0 else 0.0
            score = edit_norm + fluency_weight * flu + nonword_weight * c_nw + ending_weight * (not keeps_end)
            scored.append(Candidate(
                text=c.text, valid=c.valid, p_target=float(c.probs[int(target[q])]), edit_distance=d,
                edit_norm=edit_norm, nonword_rate=c_nw, keeps_end=keeps_end, ppl_ratio=c.ppl_ratio,
                restart=c.restart, step=c.step, rank=0, score=score, kind=c.kind, probs=c.probs, a=c.a))
        # valid (reached the confidence) first, then those that at least flip the class
        # (argmax = target), then the rest; within a tier by score
        t_q = int(target[q])
        order = sorted(range(len(scored)), key=lambda j: (
            not scored[j].valid, int(scored[j].probs.argmax()) != t_q, scored[j].score,
            -scored[j].p_target))
        ranked.append([replace(scored[j], rank=r) for r, j in enumerate(order)])
    return ranked, ppl_src


def ranked_by(lm, fluency_weight: float, nonword_weight: float, ending_weight: float) -> str:
    """The ranking rule in words (``meta["ranked_by"]``)."""
    return "validity (then: flips the class), then edit distance / length" + (
        f" + {fluency_weight} x max(0, log perplexity ratio)" if lm is not None else
        " (no lm given: fluency not used)") + (
        f" + {nonword_weight} x share of unknown words" if nonword_weight > 0 else "") + (
        f" + {ending_weight} if the final punctuation is lost" if ending_weight > 0 else "")


def transfer_edits(source: str, reconstruction: str, decode: str,
                   keep: Callable[[list[str]], bool] | None = None) -> str:
    """Apply the word edits that turn ``reconstruction`` into ``decode`` to ``source``.

    The generator's reconstruction of a query is imperfect, so a decode of a perturbed
    code differs from the query both where the perturbation acted and where the
    reconstruction was already wrong. Aligning reconstruction and source
    (:class:`difflib.SequenceMatcher` on words) anchors each edit of the decode (relative
    to the reconstruction) on the source; an edit whose ends do not fall on aligned words
    (or the sentence's ends) is dropped. Returns the edited source (normalised words joined
    by spaces). ``keep(new_words)``, if given, drops the edits it rejects (AIP uses it to
    leave out edits that bring in mangled words). Our addition: the paper has no such
    step [unverified].

    Examples::

        >>> transfer_edits("the plot drags and the jokes fall flat .",
        ...                "the plot drags and the jokes fall short .",
        ...                "the plot soars and the jokes fall short .")
        'the plot soars and the jokes fall flat .'
    """
    import difflib

    x, rec, cf = source.split(), reconstruction.split(), decode.split()
    align: dict[int, int] = {}
    for blk in difflib.SequenceMatcher(a=rec, b=x, autojunk=False).get_matching_blocks():
        for k in range(blk.size):
            align[blk.a + k] = blk.b + k
    edits = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=rec, b=cf, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        if i1 == 0:
            lo = 0
        elif (i1 - 1) in align:
            lo = align[i1 - 1] + 1
        else:
            continue
        if i2 == len(rec):
            hi = len(x)
        elif i2 in align:
            hi = align[i2]
        else:
            continue
        if lo > hi or (keep is not None and not keep(cf[j1:j2])):
            continue
        edits.append((lo, hi, cf[j1:j2]))
    out = list(x)
    last = len(x) + 1
    for lo, hi, new in sorted(edits, key=lambda e: e[0], reverse=True):
        if hi > last:  # overlapping anchors: keep the later edit only
            continue
        out[lo:hi] = new
        last = lo
    return " ".join(out)


def repair_words(source: str, text: str, vocabulary, min_ratio: float = 0.6) -> str:
    """``text`` with each word that is in neither ``vocabulary`` nor ``source`` replaced by
    the source word it most resembles (character-level :class:`difflib.SequenceMatcher`
    ratio >= ``min_ratio``); words with no such look-alike stay.

    The generator copies rare words through sub-word pieces and sometimes garbles them
    ("quixotic" -> "quotic", "self-mocking" -> "self-wcking"); such a word is nearly
    always a damaged copy of a source word. Our addition, not the paper's; AIP verifies
    the repaired sentence on hard text like every candidate.

    Examples::

        >>> repair_words("by turns grisly and engagingly quixotic .",
        ...              "by turns grisly and engagingly quotic flaws .", {"flaws", "by"})
        'by turns grisly and engagingly quixotic flaws .'
    """
    import difflib

    src = source.split()
    own = set(src)
    out = []
    for w in text.split():
        if w in vocabulary or w in own:
            out.append(w)
            continue
        best, score = w, min_ratio
        for cand in own:
            r = difflib.SequenceMatcher(a=w, b=cand, autojunk=False).ratio()
            if r >= score:
                best, score = cand, r
        out.append(best)
    return " ".join(out)

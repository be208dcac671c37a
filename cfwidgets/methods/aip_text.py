"""AIP on text: attribute-informed perturbation through a conditional text generator.

Yang, Liu, Du & Hu, "Generative Counterfactuals for Neural Networks via Attribute-Informed
Perturbation", ACM SIGKDD Explorations 23(1), 2021, arXiv 2101.06930. The image half is
:mod:`cfwidgets.methods.aip`; this file reuses its objective (:func:`aip_objective`) and
knob names.

**Idea** [paper, abstract]: counterfactuals for raw data, text included, from a generative
model conditioned on attributes: optimise the *attribute-informed latent* (latent code
``z`` and attribute code ``a`` of a conditional generator ``g(z, a)``) instead of editing
tokens, so the result is a fluent sentence close to the query that the classifier assigns
to the target class.

**Generator** [unverified: the paper's text generator could not be read offline; METHODS.md
section 3]: here the zoo's transformer ``g(z, a)`` (:mod:`cfwidgets.models.text_generator`):
``z`` is the per-position latent of the encoder states ``(B, S, k)`` (attribute words of
the source masked, which the decoder restores from ``a``), ``a`` in [0, 1]^4 = sentiment,
length bucket, negation, intensifier. It stands in for the paper's controllable generator
(Hu et al. 2017 family).

**Objective** (METHODS.md section 3; shared with image AIP, weights ours), from
``z0 = e(x)``, ``a0 = attr(x)``::

    min_{z, a}  L_cls(f(soft(g(z, a))), t) + beta_z ||z - z0||^2 + beta_a sum_i w_i |a_i - a0_i|   (1)

with ``||z - z0||^2`` taken as the *mean* squared change per latent coordinate over the
sentence's real positions (so ``beta_z`` does not depend on the sentence length or the
latent width). ``a`` stays in [0, 1] by projection.

**Gradients through discrete tokens** (METHODS.md "Text path"; the paper's mechanism is
[unverified], option (a) chosen): the decoder is teacher-forced on its own greedy decode
of the current ``(z, a)`` (one parallel pass), each position's logits become a
Gumbel-softmax (or plain softmax) distribution ``softmax((logits + g) / tau)`` with ``tau``
annealed geometrically from ``temperature`` (1.0) to ``temperature_end`` (0.3), and the
classifier reads ``probs @ E`` through its own embedding matrix (same tokenizer as the
generator). Every ``decode_every`` steps the current ``(z, a)`` is decoded to *hard* text
(greedy or beam) and re-scored by the classifier on that text: a row stops at its first
hard decode classified as the target (``p_t >= confidence``); that decode is a candidate.

**Candidates** (METHODS.md: "restarts give diverse candidates; keep the valid one closest
to x"): ``restarts`` copies per query, copy 0 from ``(z0, a0)``, the others from noisy
starts (``restart_noise``, the same noise for every query). Candidates are ranked by
validity, then closeness (word-token edit distance / source length) plus
``fluency_weight`` x ``max(0, log(ppl(x') / ppl(x)))`` under the LM when one is given,
plus ``nonword_weight`` x the share of words found in neither the source nor the review
corpora (mangled words, our addition); each decode also yields a variant with its mangled
words repaired from the source (:func:`repair_words`); the best is returned, all are in
``meta["per_row_candidates"]``. Hard decodes never repeat a word token at once nor loop
"A B A B" (:meth:`TextGenerator.generate`, ``block_repeats``) and stop at most
``length_slack`` tokens past their own source's length (our run-on guards).

**Defaults** (ours, measured; issue 11): a row stops at ``confidence=0.95`` (was 0.5),
with up to ``steps=150`` updates (was 60) and ``fluency_weight=2`` (was 0.5). A decode that
only just flips the explained model is often an ambiguous sentence that a person, or an
independent sentiment model, still reads as the source's class. On held-out Rotten
Tomatoes sentences the independent ``reviews/judge`` read 61-64 % of the counterfactuals as
the target at the old defaults (64 and 128 sentences), and 83 % of 256 at the new ones, with
a perplexity ratio of 1.33 under the independent ``reviews/fluency-judge``. In the sweep
(``experiments/text/aip_text_judge_sweep.py``, 128 sentences) confidence 0.9 gave 80 % and
0.98 gave 88 %, but more edits and a perplexity ratio of 1.75 under ``reviews/lm``. The cost of the new
defaults: about 1.7x the time per sentence, two more word edits (median 4 instead of 2)
and BLEU 55 instead of 70. A noisy restart may never reach 0.95; once a sibling restart of its
sentence has, it gets ``sibling_patience`` (20) more steps, not the whole budget.

**Classifiers with another tokenizer** (MiniLM, a user's HF model): soft one-hots over the
generator's vocabulary cannot enter their embeddings. ``search`` then picks

- ``"surrogate"``: gradients of (1) through a surrogate that shares the generator's
  vocabulary (e.g. the zoo's ``reviews/clf``), every verdict by the *target* classifier
  on hard text;
- ``"random"``: gradient-free (1 + lambda) evolution of ``(z, a)``: ``population``
  Gaussian perturbations of the current best per step, each hard-decoded and scored with
  (1) by the target classifier on the text; the best replaces the parent if it is better.

``meta["search"]`` says which ran.

**Input handling.** Sentences are normalised (:func:`cfwidgets.data.text.normalize_text`,
the generator's domain); ``x`` of the result holds the normalised text. A sentence longer
than the generator's ``max_len`` tokens is cut to the words that fit with a visible
``UserWarning`` (``long_inputs="truncate"``, the default) or refused with a ``ValueError``
(``long_inputs="refuse"``). Empty / whitespace-only / non-string input, an unknown class
name, a classifier that cannot take soft tokens with ``search="gradient"`` raise
``ValueError`` / ``TypeError`` that say what to do.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import knob
from ..data.text import BOS_ID, EOS_ID, PAD_ID, normalize_text
from ..metrics.text import word_edits
from ..models.conditional import LOCK_WEIGHT, AttributeSpec
from ..models.text_adapters import as_text_classifier, check_texts, vocab_key
from ..models.text_generator import mask_after_eos
from ..objectives import class_loss
from ..protocols import StepState
from .aip import AIP, aip_objective
from .attribute_base import Restarts
from .base import RunOutput, named_attribute_weights
from .knobs import class_loss_knob, kappa_knob
from .text_base import TextCounterfactualMethod, cut_to_fit
from .text_candidates import Decode, add_variants, first_decodes, rank, ranked_by

__all__ = ["AIPText", "TEXT_ATTRIBUTE_SPEC", "text_attribute_spec"]


def text_attribute_spec(names=("sentiment", "length", "negation", "intensifier")) -> AttributeSpec:
    """The text generator's attributes as an :class:`AttributeSpec`: all in [0, 1]
    ("binary" kind: a value in [0, 1]; ``length`` takes 0 / 0.5 / 1 for its 3 bins)."""
    names = tuple(names)
    n = len(names)
    units = tuple("bin (0, .5, 1)" if nm == "length" else "" for nm in names)
    return AttributeSpec(names, ("binary",) * n, units, (None,) * n, (0.0,) * n, (1.0,) * n,
                         (0.0,) * n, (1.0,) * n)


TEXT_ATTRIBUTE_SPEC = text_attribute_spec()

_GEN_API = ("encode", "generate", "decode_logits", "prepare_source", "decode_texts",
            "attributes_of", "attribute_names", "too_long")


def _row_seed(seed: int, text: str, restart: int) -> int:
    """A seed per (run seed, sentence, restart): the same noise for a sentence whether it
    is explained alone or in a batch."""
    h = hashlib.sha256(f"{seed}\x00{restart}\x00{text}".encode()).digest()
    return int.from_bytes(h[:7], "little")


class AIPText(TextCounterfactualMethod):
    """Attribute-Informed Perturbation for sentences (Yang et al. 2021): optimise the
    generator's latent code and attribute code so the decoded sentence flips the
    classifier.

    Args:
        classifier: the text classifier to explain (zoo model, MiniLM + head, or a HF
            model with ``tokenizer=``), see :func:`~cfwidgets.models.text_adapters.as_text_classifier`.
        generator: the conditional generator (``zoo.load("reviews/gen")``).
        lm: optional language model with ``perplexity(texts)`` (``zoo.load("reviews/lm")``)
            used to rank candidates by fluency.
        surrogate: optional differentiable classifier sharing the generator's vocabulary,
            for ``search="surrogate"`` with a classifier of another vocabulary.
        tokenizer: the tokenizer of a HF ``classifier``.

    Examples::

        from cfwidgets.methods import AIPText
        aip = AIPText.from_zoo()                       # reviews/clf + reviews/gen + reviews/lm
        res = aip.explain(["the plot drags and the jokes fall flat ."], target="positive")
        res.x_cf[0], res.meta["per_row_edits"][0], res.meta["per_row_candidates"][0]
    """

    name = "aip_text"
    title = "AIP on text (latent + attributes)"
    paper = AIP.paper

    @dataclass(frozen=True)
    class Config:
        steps: int = knob(150, 1, 2000, "Step budget: the most updates of (z, a) per sentence.")
        lr: float = knob(0.01, 1e-3, 1.0, "Adam learning rate on the latent z (gradient search).",
                         log=True)
        lr_attributes: float = knob(0.1, 1e-3, 1.0, "Adam learning rate on the attributes a (in "
                                    "[0, 1]; 0.1 crosses the range in about 10 steps).", log=True)
        confidence: float = knob(0.95, 0.5, 0.999, "A hard decode counts (and its row stops) once "
                                 "the classifier gives the target at least this probability "
                                 "(0.5: any flip, often an ambiguous sentence).")
        optimise: str = knob("both", doc="Free variables: latent and attributes (AIP), the latent "
                             "only, or the attributes only.", choices=("both", "z", "a"))
        beta_z: float = knob(0.5, 0.0, 10.0, "Weight of the latent proximity (mean squared change "
                             "per latent coordinate).")
        beta_a: float = knob(1.0, 0.0, 10.0, "Weight of the attribute proximity "
                             "sum_i w_i |a_i - a0_i|.")
        attribute_weights: tuple = knob(
            (), 0.0, LOCK_WEIGHT,
            "Cost of changing each attribute (sentiment, length, negation, intensifier); () = "
            "all 1, a {name: weight} dict is accepted; 0 = free, 100 = locked.")
        restarts: int = knob(2, 1, 8, "Copies per sentence optimised from noisy starts: each "
                             "gives a candidate; the best valid one is returned.")
        restart_noise: float = knob(0.3, 0.0, 3.0, "Std of the start noise on z0 (and the free "
                                    "attributes) of restarts 2..R.")
        sibling_patience: int = knob(20, 0, 2000, "Once one restart of a sentence reached the "
                                     "confidence, its other restarts get at most this many more "
                                     "steps to give a candidate (then they stop); 2000 = no limit.")
        loss: str = class_loss_knob()
        kappa: float = kappa_knob()
        temperature: float = knob(1.0, 0.05, 5.0, "Soft-decode temperature at the first step "
                                  "(annealed geometrically to temperature_end).")
        temperature_end: float = knob(0.3, 0.05, 5.0, "Soft-decode temperature at the last step.")
        gumbel: bool = knob(True, doc="Add Gumbel noise to the soft decodes (Gumbel-softmax); "
                            "off = softmax with temperature.")
        decode: str = knob("greedy", doc="Hard decoding of candidates.", choices=("greedy", "beam"))
        beams: int = knob(3, 1, 5, "Beam width when decode='beam'.")
        decode_every: int = knob(2, 1, 100, "Hard-decode and re-score every this many steps.")
        max_len: int = knob(48, 8, 48, "Longest decoded sentence in tokens (incl. [BOS]/[EOS]).")
        long_inputs: str = knob("truncate", doc="A sentence longer than the generator's limit: "
                                "cut it to the words that fit (with a warning) or refuse it.",
                                choices=("truncate", "refuse"))
        fluency_weight: float = knob(2.0, 0.0, 10.0, "Ranking: weight of max(0, log perplexity "
                                     "ratio) beside the normalised edit distance (needs an lm).")
        nonword_weight: float = knob(1.0, 0.0, 10.0, "Ranking: weight of the share of words that "
                                     "are in neither the source nor the review corpora (mangled "
                                     "words such as 'assemsembly'); 0 = off.")
        ending_weight: float = knob(0.0, 0.0, 10.0, "Ranking: penalty for a candidate that drops "
                                    "the source's final punctuation (the shipped generator puts a "
                                    "sentiment word there in about a third of AIP's results). "
                                    "Measured at 0.5 on 64 held-out sentences: 21 -> 13 such "
                                    "results, but mangled words 0.8 -> 2.2 % and BLEU 71 -> 66.")
        length_slack: int = knob(6, 0, 48, "Decodes stop at most this many tokens past their "
                                 "source's length (guards against run-on decodes).")
        transfer_edits: bool = knob(True, doc="Also offer each decode's changes relative to the "
                                    "generator's reconstruction applied to the source sentence (words "
                                    "the reconstruction got wrong stay as in the source), and the same "
                                    "without edits that bring in unknown words, and each decode with its "
                                    "garbled copies of source words repaired (when nonword_weight > 0); "
                                    "verified on hard text like every candidate (our addition, not the "
                                    "paper's).")
        mask_attributes: bool = knob(True, doc="Mask sentiment / negation / intensifier words in "
                                     "the source (the generator restores them from a).")
        search: str = knob("auto", doc="gradient: soft tokens through the classifier; surrogate: "
                           "gradients through the surrogate, verdict by the classifier; random: "
                           "gradient-free evolution of (z, a); auto: gradient when the classifier "
                           "shares the generator's vocabulary, else surrogate if given, else random.",
                           choices=("auto", "gradient", "surrogate", "random"))
        population: int = knob(8, 2, 64, "Random search: perturbations decoded per sentence and step.")
        search_noise: float = knob(0.3, 0.01, 3.0, "Random search: std of the perturbations of z "
                                   "(and the free attributes).")

    def __init__(self, classifier, generator, /, *, lm=None, surrogate=None, tokenizer=None,
                 device=None) -> None:
        missing = [m for m in _GEN_API if not hasattr(generator, m)]
        if missing:
            raise TypeError(f"the generator ({type(generator).__name__}) lacks {missing}: AIPText "
                            f"needs a conditional text generator such as zoo.load('reviews/gen') "
                            f"(cfwidgets.models.text_generator.TextGenerator).")
        comps: dict[str, Any] = {"generator": generator}
        if lm is not None:
            if not hasattr(lm, "perplexity"):
                raise TypeError("lm must have perplexity(texts), e.g. zoo.load('reviews/lm').")
            comps["lm"] = lm
        if surrogate is not None:
            comps["surrogate"] = as_text_classifier(surrogate)
        super().__init__(classifier, device=device, tokenizer=tokenizer, **comps)
        self._gen_key = vocab_key(generator.masker.tok)
        s = self.components.get("surrogate")
        if s is not None and s.vocab_key != self._gen_key:
            raise ValueError("the surrogate must share the generator's tokenizer (e.g. "
                             "zoo.load('reviews/clf')); this one reads another vocabulary.")
        self.attribute_spec = getattr(generator, "attribute_spec", None) or text_attribute_spec(
            generator.attribute_names)

    @property
    def generator(self):
        return self.components["generator"]

    @property
    def lm(self):
        return self.components.get("lm")

    @property
    def surrogate(self):
        return self.components.get("surrogate")

    @property
    def soft_compatible(self) -> bool:
        """Whether the classifier reads the generator's vocabulary (gradient search)."""
        clf = self.classifier_adapter
        return clf.supports_soft and clf.vocab_key == self._gen_key

    @classmethod
    def from_zoo(cls, dataset: str = "reviews", *, device="auto", classifier: str = "clf",
                 lm: bool = True, surrogate: bool | None = None, **kwargs) -> AIPText:
        """Zoo models: ``reviews/<classifier>`` (``"clf"`` or ``"minilm"``), ``reviews/gen``,
        ``reviews/lm`` (if ``lm``) and, for MiniLM, ``reviews/clf`` as surrogate (unless
        ``surrogate=False``)."""
        from .. import zoo

        if dataset != "reviews":
            raise ValueError(f"AIPText.from_zoo knows 'reviews', got {dataset!r}.")
        clf = zoo.load(f"reviews/{classifier}", device=device)
        gen = zoo.load("reviews/gen", device=device)
        kw: dict[str, Any] = {}
        if lm:
            kw["lm"] = zoo.load("reviews/lm", device=device)
        if surrogate or (surrogate is None and classifier != "clf"):
            kw["surrogate"] = zoo.load("reviews/clf", device=device)
        return cls(clf, gen, **kw, **kwargs)

    # ------------------------------------------------------------------ inputs
    def explain(self, x, target, config=None, *, callback=None, generator=None, **overrides):
        config, overrides = named_attribute_weights(self.attribute_spec, config, overrides)
        return super().explain(x, target, config, callback=callback, generator=generator, **overrides)

    def fit_inputs(self, x: Any, cfg: Any = None) -> tuple[list[str], list[int]]:
        """Normalise the sentences; cut (with a warning) or refuse those longer than the
        generator's limit (``long_inputs``)."""
        texts = [normalize_text(t) for t in check_texts(x)]
        for i, t in enumerate(texts):
            if not t:
                raise ValueError(f"x[{i}] has no words left after normalisation (letters, digits "
                                 f"and common punctuation are kept); give a sentence.")
        gen = self.generator
        limit = int(gen.config.max_len) if hasattr(gen, "config") else 48
        long = [i for i, flag in enumerate(gen.too_long(texts)) if flag]
        if long:
            mode = cfg.long_inputs if cfg is not None else "truncate"
            if mode == "refuse":
                raise ValueError(f"sentence(s) {long[:10]} exceed the generator's limit of {limit} "
                                 f"tokens; shorten them, or pass long_inputs='truncate' to cut them.")
            for i in long:
                texts[i] = cut_to_fit(texts[i], lambda t: self.generator.too_long([t])[0])
            warnings.warn(f"sentence(s) {long[:10]} exceed the generator's limit of {limit} tokens "
                          f"and were cut to the words that fit (long_inputs='truncate'); the "
                          f"result's x holds the cut text.", UserWarning, stacklevel=3)
        return texts, long

    def _resolve_search(self, cfg) -> str:
        if cfg.search == "gradient":
            if not self.soft_compatible:
                raise ValueError(
                    f"search='gradient' needs a classifier that takes soft tokens over the "
                    f"generator's vocabulary; {type(self.classifier_adapter).__name__} reads "
                    f"another vocabulary. Use search='surrogate' with AIPText(clf, gen, "
                    f"surrogate=zoo.load('reviews/clf')), or search='random' (gradient-free).")
            return "gradient"
        if cfg.search == "surrogate":
            if self.surrogate is None:
                raise ValueError("search='surrogate' needs a surrogate classifier that shares the "
                                 "generator's vocabulary: AIPText(clf, gen, surrogate=zoo.load("
                                 "'reviews/clf')); or use search='random'.")
            return "surrogate"
        if cfg.search == "random":
            return "random"
        if self.soft_compatible:
            return "gradient"
        return "surrogate" if self.surrogate is not None else "random"

    def _sentiment_index(self, k: int) -> int:
        names = [str(n).lower() for n in (self.class_names or [])]
        if "positive" in names:
            return names.index("positive")
        return 1 if k > 1 else 0

    # ------------------------------------------------------------------ the loop
    def _explain(self, texts, target: Tensor, cfg: Any, *, probs, callback, generator) -> RunOutput:
        gen = self.generator
        spec = self.attribute_spec
        dev = probs.device
        b, r_n = len(texts), cfg.restarts
        rs = Restarts(r_n, b, "cpu")  # rows restart-major: row = restart * B + query
        search = self._resolve_search(cfg)
        limit = int(getattr(getattr(gen, "config", None), "max_len", cfg.max_len))
        if cfg.max_len > limit:  # the knob's range is the zoo generator's; a smaller one caps it
            cfg = replace(cfg, max_len=limit)
        # run-on guard (our addition): a counterfactual is about as long as its query
        full_len = gen.prepare_source(texts, mask_attributes=False, normalize=False)[1].sum(1)
        caps = (full_len.cpu() + cfg.length_slack).clamp(8, cfg.max_len)  # (B,) per sentence
        seed = int(generator.initial_seed())
        pos_k = self._sentiment_index(probs.shape[1])
        with torch.no_grad():
            sent0 = (probs.argmax(1) == pos_k).float().cpu().numpy()
            a0 = spec.project(gen.attributes_of(texts, sent0).float())  # (B, A)
            src, sm = gen.prepare_source(texts, mask_attributes=bool(cfg.mask_attributes),
                                         normalize=False)
            z0, zm = gen.encode(src, sm)  # (B, S, k), (B, S)
            rec_ids = gen.generate(z0, a0, zm, max_len=cfg.max_len, mode=cfg.decode, beams=cfg.beams,
                                   max_lens=caps)
            x_rec = gen.decode_texts(rec_ids)
            probs_rec = self.score_texts(x_rec)
        weights = spec.weights(cfg.attribute_weights).to(dev)
        locked = weights >= LOCK_WEIGHT
        opt_a = cfg.optimise in ("a", "both")
        opt_z = cfg.optimise in ("z", "both")
        free_cols = spec.column_mask((~locked).float()) * float(opt_a)  # (A,)
        w_cost = torch.where(locked, torch.zeros_like(weights), weights)
        s_len, k_dim = z0.shape[1], z0.shape[2]
        # restart noise, shared by all sentences, independent of the batch's padding
        max_s = int(getattr(gen.config, "max_len", s_len)) + 2
        nz = torch.randn(r_n, max(max_s, s_len), k_dim, generator=generator)[:, :s_len] * cfg.restart_noise
        na = torch.randn(r_n, spec.dim, generator=generator) * cfg.restart_noise
        nz[0], na[0] = 0, 0
        zm_r = zm.repeat(r_n, 1)  # (N, S)
        zmf = zm_r.to(z0.dtype)[..., None]  # (N, S, 1)
        n_coord = (zm_r.sum(1).float() * k_dim).clamp_min(1.0)  # (N,)
        rows = _Rows(z0=z0.repeat(r_n, 1, 1), a0=a0.repeat(r_n, 1), mask=zm_r, maskf=zmf,
                     target=target.repeat(r_n), n_coord=n_coord, caps=caps.repeat(r_n),
                     free_cols=free_cols, w_cost=w_cost, max_s=max_s,
                     noise=[torch.Generator().manual_seed(_row_seed(seed, texts[rs.query_of(i)], rs.restart_of(i)))
                            for i in range(b * r_n)])
        with torch.no_grad():
            z_start = rows.z0 + nz.to(dev).repeat_interleave(b, 0) * zmf * float(opt_z)
            a_start = spec.project(rows.a0 + na.to(dev).repeat_interleave(b, 0) * free_cols)
            a_start = torch.where(free_cols.bool(), a_start, rows.a0)
        track = _Track(self, cfg, rows, rs, a_start, probs.shape[1], target, search, callback)
        with torch.no_grad():
            ids = gen.generate(z_start, a_start, zm_r, max_len=cfg.max_len, mode=cfg.decode,
                               beams=cfg.beams, max_lens=rows.caps)
        track.verdict(list(range(b * r_n)), ids, 0, z_start, a_start)
        track.snapshot(0)
        if search == "random":
            self._random_search(cfg, rows, track, z_start, a_start)
        else:
            diff_clf = self.classifier_adapter if search == "gradient" else self.surrogate
            self._gradient_search(cfg, rows, track, z_start, a_start, ids, diff_clf, opt_z, opt_a)
        out = self._finish(texts, target, cfg, search, probs, a0, x_rec, probs_rec, track)
        out.nonfinite = track.nonfinite  # (restarts * B,), restart-major: folded per sentence by the base
        return out

    def _gradient_search(self, cfg, rows: _Rows, track: _Track, z_start: Tensor, a_start: Tensor,
                         ids: Tensor, diff_clf, opt_z: bool, opt_a: bool) -> None:
        """Adam on (z, a) with eq. (1) through Gumbel-softmax soft decodes of the current
        greedy prefix (``diff_clf``: the classifier, or a surrogate sharing the vocabulary);
        every ``decode_every`` steps a hard decode is scored by the classifier."""
        gen, spec, dev = self.generator, self.attribute_spec, z_start.device
        n = z_start.shape[0]
        prefix = [ids[i] for i in range(n)]
        z = z_start.clone().requires_grad_(opt_z)
        a = a_start.clone().requires_grad_(opt_a)
        groups = ([{"params": [z], "lr": cfg.lr}] if opt_z else []) + (
            [{"params": [a], "lr": cfg.lr_attributes}] if opt_a else [])
        opt = torch.optim.Adam(groups)
        clf_max = int(getattr(diff_clf, "max_len", 512))
        vocab = int(diff_clf.vocab_size)
        all_rows = torch.arange(n)
        for step in range(cfg.steps):
            act = all_rows[~track.done & ~track.nonfinite & ~track.waited_out(step)]
            if act.numel() == 0:
                break
            frac = step / max(1, cfg.steps - 1)
            tau = cfg.temperature * (cfg.temperature_end / cfg.temperature) ** frac
            pre = _pad_ids([prefix[int(i)] for i in act], dev)  # (Na, T)
            with torch.enable_grad():
                z_a, a_a = z[act.to(dev)], a[act.to(dev)]
                logits = gen.decode_logits(z_a, a_a, pre[:, :-1], rows.mask[act])  # (Na, T-1, V)
                if cfg.gumbel:
                    logits = logits + self._gumbel(logits.shape, [rows.noise[int(i)] for i in act],
                                                   pre).to(logits.device, logits.dtype)
                y = torch.softmax(logits / tau, dim=-1)
                bos = F.one_hot(pre[:, :1], vocab).to(y.dtype)
                soft = torch.cat([bos, y], dim=1)[:, :clf_max]  # (Na, T, V)
                mask = _real_tokens(pre)[:, :clf_max]
                logits_c = diff_clf.forward_soft(soft, mask)
                rows_d = act.to(dev)
                parts = aip_objective(logits_c.float(), rows.target[rows_d], rows.zn(z_a, rows_d),
                                      rows.zn(rows.z0[rows_d], rows_d), a_a, rows.a0[rows_d], spec,
                                      weights=rows.w_cost, beta_z=cfg.beta_z, beta_a=cfg.beta_a,
                                      loss=cfg.loss, kappa=cfg.kappa)  # eq. (1)
                opt.zero_grad(set_to_none=True)
                parts["loss"].sum().backward()  # rows are independent
            if opt_a:
                a.grad.mul_(rows.free_cols)
            opt.step()
            if opt_a:
                with torch.no_grad():
                    a.copy_(torch.where(rows.free_cols.bool(), spec.project(a), rows.a0))
            for k in track.losses:
                v = parts[k].detach()
                track.losses[k].append(float(v[torch.isfinite(v)].mean()) if bool(torch.isfinite(v).any())
                                       else float("nan"))
            parts_rows = {int(i): {k: float(parts[k][j].detach()) for k in track.losses}
                          for j, i in enumerate(act)}
            # NaN/inf guard (shared rule of the Recorder): a row whose loss broke keeps
            # its last decode, takes no further step and is flagged in meta["nonfinite"]
            nf = ~torch.isfinite(parts["loss"].detach()).cpu()
            if bool(nf.any()):
                track.nonfinite[act[nf]] = True
                act = act[~nf]
            if act.numel() and ((step + 1) % cfg.decode_every == 0 or step == cfg.steps - 1):
                with torch.no_grad():
                    zd, ad = z.detach()[act.to(dev)], a.detach()[act.to(dev)]
                    ids = gen.generate(zd, ad, rows.mask[act], max_len=cfg.max_len, mode=cfg.decode,
                                       beams=cfg.beams, max_lens=rows.caps[act])
                for j, i in enumerate(act.tolist()):
                    prefix[i] = ids[j]
                track.verdict(act.tolist(), ids, step + 1, zd, ad)
                track.snapshot(step + 1)
            if track.report(step, parts_rows):
                return

    @staticmethod
    def _gumbel(shape, gens: list[torch.Generator], prefix: Tensor) -> Tensor:
        """Gumbel(0, 1) noise ``(Na, T-1, V)`` drawn row by row from per-row generators
        (only for the row's real positions, so padding never changes a row's noise)."""
        out = torch.zeros(shape)
        lengths = _real_tokens(prefix).sum(1).tolist()
        for j, g in enumerate(gens):
            t = max(1, min(shape[1], int(lengths[j]) - 1))
            e = torch.empty(t, shape[2]).exponential_(generator=g).clamp_(min=1e-12)
            out[j, :t] = -e.log_()
        return out

    def _random_search(self, cfg, rows: _Rows, track: _Track, z_start: Tensor, a_start: Tensor) -> None:
        """Gradient-free (1 + lambda) evolution of (z, a) scored on hard decodes: per step,
        ``population`` perturbations of each row's best, the best of them replaces it if
        its eq. (1) is lower."""
        gen, spec, dev = self.generator, self.attribute_spec, z_start.device
        n = z_start.shape[0]
        opt_z = cfg.optimise in ("z", "both")
        p = cfg.population

        def fitness(idx: Tensor, z: Tensor, a: Tensor, txt: list[str]) -> dict[str, Tensor]:
            logits = self.classifier([t if t.strip() else "." for t in txt]).float()
            lat = ((z - rows.z0[idx]) * rows.maskf[idx]).pow(2).flatten(1).sum(1) / rows.n_coord[idx]
            cls = class_loss(logits, rows.target[idx], cfg.loss, cfg.kappa)
            att = spec.cost(a, rows.a0[idx], rows.w_cost)
            return {"class": cls, "latent": lat, "attributes": att,
                    "loss": cls + cfg.beta_z * lat + cfg.beta_a * att, "probs": logits.softmax(-1)}

        with torch.no_grad():
            ids = gen.generate(z_start, a_start, rows.mask, max_len=cfg.max_len, max_lens=rows.caps)
            best = fitness(torch.arange(n, device=dev), z_start, a_start, gen.decode_texts(ids))
            z_best, a_best, f_best = z_start.clone(), a_start.clone(), best["loss"].clone()
            s_len, k_dim = z_start.shape[1:]
            for step in range(cfg.steps):
                act = torch.nonzero((~track.done & ~track.waited_out(step)).to(dev))[:, 0]
                if act.numel() == 0:
                    break
                na = act.numel()
                # perturbations drawn per row from its own generator (batch-independent), at
                # the generator's full length, then cut: the batch's padding must not change them
                ez = torch.zeros(na, p, s_len, k_dim)
                ea = torch.zeros(na, p, spec.dim)
                for j, i in enumerate(act.tolist()):
                    ez[j] = torch.randn(p, max(rows.max_s, s_len), k_dim, generator=rows.noise[i])[:, :s_len]
                    ea[j] = torch.randn(p, spec.dim, generator=rows.noise[i])
                zc = (z_best[act, None] + cfg.search_noise * ez.to(dev) * rows.maskf[act, None] * float(opt_z))
                ac = a_best[act, None] + cfg.search_noise * ea.to(dev) * rows.free_cols
                zc = zc.flatten(0, 1)  # (Na * P, S, k), row-major: row j's P perturbations together
                ac = spec.project(ac.flatten(0, 1))
                ac = torch.where(rows.free_cols.bool(), ac, rows.a0[act].repeat_interleave(p, 0))
                rows_c = act.repeat_interleave(p)
                ids = gen.generate(zc, ac, rows.mask[rows_c], max_len=cfg.max_len,
                                   max_lens=rows.caps[rows_c.cpu()])
                f = fitness(rows_c, zc, ac, gen.decode_texts(ids))
                fl = f["loss"].view(na, p)
                jbest = fl.argmin(1)
                pick = torch.arange(na, device=dev) * p + jbest  # each row's best perturbation
                better = fl.min(1).values < f_best[act]
                upd = act[better]
                z_best[upd] = zc[pick[better]]
                a_best[upd] = ac[pick[better]]
                f_best[upd] = fl.min(1).values[better]
                for k in track.losses:
                    track.losses[k].append(float(f[k].view(na, p).gather(1, jbest[:, None]).mean()))
                # the verdict on the best perturbation of each row (hard text, target model)
                track.verdict(act.tolist(), ids[pick], step + 1, zc[pick], ac[pick])
                if (step + 1) % cfg.decode_every == 0 or step == cfg.steps - 1:
                    track.snapshot(step + 1)
                parts_rows = {int(i): {k: float(f[k][int(pick[j])]) for k in track.losses}
                              for j, i in enumerate(act)}
                if track.report(step, parts_rows):
                    return

    def _finish(self, texts, target, cfg, search, probs, a0, x_rec, probs_rec, track: _Track) -> RunOutput:
        spec = self.attribute_spec
        rs = track.restarts
        # candidates per sentence: each restart's first valid decode, else its last decode
        pool = first_decodes([[track.decode_of(rs.row(r, q)) for q in range(rs.b)] for r in range(rs.r)])
        if cfg.transfer_edits:
            add_variants(pool, texts, x_rec, known_words=cfg.nonword_weight > 0, score=self.score_texts,
                         target=target, confidence=cfg.confidence)
        lm = self.lm
        ranked, ppl_src = rank(pool, texts, target, lm=lm, fluency_weight=cfg.fluency_weight,
                               nonword_weight=cfg.nonword_weight, ending_weight=cfg.ending_weight)
        chosen = [cands[0] for cands in ranked]
        x_cf = [c.text for c in chosen]
        probs_cf = torch.stack([c.probs for c in chosen]).to(probs.device)
        snapshots = track.snapshots
        steps_used = torch.tensor([c.step if c.step is not None else
                                   (snapshots[-1][0] if snapshots else 0) for c in chosen])
        restart = [c.restart for c in chosen]
        traj = [[snap[1][rs.row(restart[q], q)] for q in range(rs.b)] for snap in snapshots]
        traj_steps = [s[0] for s in snapshots]
        if traj and traj[-1] != x_cf:  # a transferred candidate won: end the path on it
            traj.append(list(x_cf))
            traj_steps.append(traj_steps[-1])
        a_cf = torch.stack([c.a for c in chosen]).float()
        # a post-processed variant is not the decode of its code: describe the returned
        # sentence instead, measured the way a0 is (text attributes, sentiment = the
        # classifier's verdict on the text), so a_cf always describes x_cf
        var = [q for q, c in enumerate(chosen) if c.kind != "decode"]
        if var:
            pos_k = self._sentiment_index(probs.shape[1])
            sent = (probs_cf[var].argmax(1) == pos_k).float().cpu().numpy()
            measured = spec.project(self.generator.attributes_of([x_cf[q] for q in var], sent).float())
            a_cf[var] = measured.to(a_cf.device, a_cf.dtype)
        meta = spec.report(a0, a_cf)
        meta.update({
            "search": SEARCHES[search],
            "search_mode": search,
            "per_row_candidates": ranked,  # Candidate records, best first
            # how each returned sentence was made: "decode" (the generator's own output)
            # or a post-processed variant of one (its a_cf is measured on the returned text)
            "per_row_kind": [c.kind for c in chosen],
            "per_row_attributes_from": ["code" if c.kind == "decode" else "text" for c in chosen],
            "per_row_edits": [word_edits(s, c) for s, c in zip(texts, x_cf, strict=True)],
            "x_rec": x_rec, "probs_rec": probs_rec.cpu(),
            "rec_keeps_class": probs_rec.argmax(1).cpu() == probs.argmax(1).cpu(),
            "a0": a0.cpu(), "a_cf": a_cf,
            "restart": torch.tensor(restart),
            "ranked_by": ranked_by(lm, cfg.fluency_weight, cfg.nonword_weight, cfg.ending_weight),
            "attribute_spec": spec.to_dict(),
        })
        if ppl_src is not None:
            meta["ppl_source"] = ppl_src
        losses = track.losses
        return RunOutput(x_cf=x_cf, probs_cf=probs_cf, trajectory=traj,
                         trajectory_steps=traj_steps,
                         losses=losses if losses["loss"] else {"loss": [float("nan")]},
                         steps=steps_used, stopped=track.stopped, meta=meta)


SEARCHES = {
    "gradient": "gradient: Gumbel-softmax soft decodes through the classifier's embedding matrix "
                "(shared vocabulary)",
    "surrogate": "surrogate: gradients through a surrogate classifier sharing the generator's "
                 "vocabulary; verdicts by the explained classifier on hard text",
    "random": "random: gradient-free (1 + lambda) evolution of (z, a); every candidate hard-decoded "
              "and scored by the explained classifier",
}


@dataclass
class _Rows:
    """What the search knows of its ``N = restarts * B`` rows (restart-major)."""

    z0: Tensor  # (N, S, k) the source's latent
    a0: Tensor  # (N, A) the source's attributes
    mask: Tensor  # (N, S) real latent positions
    maskf: Tensor  # (N, S, 1) the same as floats
    target: Tensor  # (N,)
    n_coord: Tensor  # (N,) real latent coordinates (positions x width)
    caps: Tensor  # (N,) the most tokens a decode may have (run-on guard)
    free_cols: Tensor  # (A,) 1 where an attribute may change
    w_cost: Tensor  # (A,) weights of the attribute cost (locked ones 0)
    max_s: int  # the generator's full length: noise is drawn at it, then cut
    noise: list[torch.Generator]  # per row, seeded by (run seed, sentence, restart)

    def zn(self, z: Tensor, idx: Tensor) -> Tensor:
        """Latent scaled so that ||zn - zn0||^2 is the mean squared change per coordinate."""
        return z * self.maskf[idx] * (1.0 / self.n_coord.sqrt()).view(-1, 1, 1)[idx]


class _Track:
    """The search's record per row: the current decode, its verdict, the first decode that
    reached the target (the row is then done), trajectory snapshots, loss curves, the
    callback and Stop."""

    def __init__(self, method: AIPText, cfg, rows: _Rows, restarts: Restarts, a_start: Tensor,
                 n_classes: int, target: Tensor, search: str, callback):
        n = restarts.r * restarts.b
        self.method, self.cfg, self.rows, self.restarts = method, cfg, rows, restarts
        self.target, self.search, self.callback = target, search, callback
        self.done = torch.zeros(n, dtype=torch.bool)
        self.nonfinite = torch.zeros(n, dtype=torch.bool)  # rows halted by the NaN/inf guard
        self.first_valid: list[Decode | None] = [None] * n
        # a row that never reaches the confidence returns the decode that came closest
        # (highest p_target), not merely its last one
        self.closest: list[Decode | None] = [None] * n
        self.text: list[str] = [""] * n
        self.probs = torch.zeros(n, n_classes)
        self.a = a_start.clone()
        self.snapshots: list[tuple[int, list[str], Tensor]] = []
        self.losses: dict[str, list[float]] = {"loss": [], "class": [], "latent": [], "attributes": []}
        self.stopped = False

    def verdict(self, rows: list[int], ids: Tensor, step: int, z_now: Tensor, a_now: Tensor) -> None:
        """Score hard decodes ``ids`` of ``rows``; a row is done at its first decode with
        ``p_target >= confidence``."""
        txt = self.method.generator.decode_texts(ids)
        pr = self.method.score_texts(txt).cpu()
        r = self.rows
        for j, i in enumerate(rows):
            self.text[i] = txt[j]
            self.probs[i] = pr[j]
            self.a[i] = a_now[j].detach()
            p_t = float(pr[j, int(r.target[i])])
            best = self.closest[i]
            if best is None or p_t > float(best.probs[int(r.target[i])]):
                self.closest[i] = Decode(txt[j], pr[j].clone(), a_now[j].detach().cpu().clone(), None)
            if p_t >= self.cfg.confidence and not self.done[i]:
                self.done[i] = True
                z_dist = float(((z_now[j] - r.z0[i]) * r.maskf[i]).pow(2).sum() / r.n_coord[i])
                self.first_valid[i] = Decode(txt[j], pr[j].clone(), a_now[j].detach().cpu().clone(), step, z_dist)

    def waited_out(self, step: int) -> Tensor:
        """``(N,)`` rows whose sentence had a restart reach the confidence at least
        ``sibling_patience`` steps ago (our addition: at confidence 0.95 a noisy restart
        that never gets there would otherwise run the whole budget; measured on the demo's
        4 sentences, all done by step 18: 4.0 s without the limit, 2.6 s with 20)."""
        rs = self.restarts
        never = self.cfg.steps + self.cfg.sibling_patience + 1  # no restart of it valid yet
        # the step each row became valid (its first valid decode's), the first per sentence
        at = torch.tensor([d.step if d is not None else never for d in self.first_valid])
        late = step - at.view(rs.r, rs.b).amin(0) >= self.cfg.sibling_patience
        return late.repeat(rs.r) & ~self.done

    def decode_of(self, i: int) -> Decode:
        """Row ``i``'s candidate: its first valid decode, else the one closest to the
        target (highest p_target), else its last one."""
        return self.first_valid[i] or self.closest[i] or Decode(
            self.text[i], self.probs[i].clone(), self.a[i].detach().cpu().clone(), None)

    def snapshot(self, step: int) -> None:
        self.snapshots.append((step, list(self.text), self.probs.clone()))

    def _shown(self, q: int) -> int:
        """The row shown for sentence ``q``: its first finished restart, else restart 0."""
        rs = self.restarts
        return next((rs.row(r, q) for r in range(rs.r) if bool(self.done[rs.row(r, q)])), q)

    def report(self, step: int, parts_rows: dict[int, dict[str, float]]) -> bool:
        """Show the step to the callback (one row per sentence); True (and ``stopped``) if
        it asked to stop."""
        if self.callback is None:
            return False
        rs = self.restarts
        shown = [self._shown(q) for q in range(rs.b)]
        dev = self.target.device
        st = StepState(
            step=step, total=self.cfg.steps, x_cf=[self.text[i] for i in shown],
            probs=self.probs[shown].to(dev), target=self.target,
            done=self.done.view(rs.r, rs.b).any(0).to(dev),
            losses={k: torch.tensor([parts_rows.get(i, {}).get(k, 0.0) for i in shown])
                    for k in ("loss", "class", "latent", "attributes")},
            extra={"search": self.search, "restart": [rs.restart_of(i) for i in shown],
                   "a": self.a[shown].clone()})
        self.stopped = bool(self.callback(step, st))
        return self.stopped


def _pad_ids(rows: list[Tensor], device) -> Tensor:
    """Pad 1-d id tensors (each ``[BOS] ... [EOS] [PAD]*``) to one ``(N, T)`` tensor, cut
    after the longest row's first ``[EOS]``."""
    lens = []
    for r in rows:
        e = (r == EOS_ID).nonzero()
        lens.append(int(e[0]) + 1 if e.numel() else r.numel())
    t = max(lens)
    out = torch.zeros(len(rows), t, dtype=torch.long, device=device)
    for j, (r, ln) in enumerate(zip(rows, lens, strict=True)):
        out[j, :ln] = r[:ln]
    if not bool((out[:, 0] == BOS_ID).all()):
        raise RuntimeError("decoder prefixes must start with [BOS]")
    return out


def _real_tokens(ids: Tensor) -> Tensor:
    """``(B, T)`` long: 1 on a decode's real tokens, up to and including its first [EOS]
    (:func:`~cfwidgets.models.text_generator.mask_after_eos`), 0 on pads and after."""
    not_pad = (ids != PAD_ID) | (torch.arange(ids.shape[1], device=ids.device) == 0)
    return mask_after_eos(ids) & not_pad.long()

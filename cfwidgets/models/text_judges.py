"""A judge model for text counterfactuals: a scorer that no method steers with.

A method may steer with any model, but its figures must come from models it never saw
(the project's standard: "never score a method with a model it steered with"). The text
methods steer with ``reviews/clf`` (the classifier they explain by default and the
generator's attribute-consistency critic), rank candidates with ``reviews/lm`` and decode
with ``reviews/gen``. :class:`NgramSentimentJudge` (zoo ``reviews/judge``) shares none of
that: a linear model over hashed word unigrams and bigrams (a fastText-style bag of
n-grams without the hidden layer, Joulin et al. 2017, arXiv 1607.01759), trained with seed
1 on the Rotten Tomatoes train sentences. No subword tokens, no attention, no embedding
shared with any transformer here. Its state is one tensor (safetensors in the zoo).

:class:`CharLMJudge` (zoo ``reviews/fluency-judge``) judges fluency. The only text that
neither the generator, its tokenizer nor ``reviews/lm`` saw is the 5,163 IMDB test
sentences; it is a character-level LSTM (no subword tokens, seed 1) trained on 90 % of
them, scored with SLOR so that frequent words do not pass for fluent ones. An earlier try,
a Kneser-Ney word trigram model counted on the same sentences, told shuffled words from
sentences but scored the garbled "the director keeps the tension and the paying is worth
the \" the ." as fluent as its clean form (SLOR 1.36 vs 1.39), so it was not shipped; the
character LSTM scores the garbled form 1.5x worse (``exp`` of the SLOR difference).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CharLMJudge", "NgramSentimentJudge", "char_ids", "imdb_judge_split", "ngram_features",
           "shuffled", "train_char_lm_judge"]


def _words(text: str) -> list[str]:
    from ..data.text import normalize_text

    return normalize_text(text).split()


def _bucket(feature: str, buckets: int) -> int:
    # crc32: stable across processes and Python versions (hash() is salted per process)
    return zlib.crc32(feature.encode("utf-8")) % buckets


def ngram_features(texts: Sequence[str], buckets: int) -> tuple[Tensor, Tensor]:
    """Hashed word unigrams and bigrams of each text as ``(ids, offsets)`` for
    :class:`torch.nn.EmbeddingBag` (one bag per text; an empty text gets one bucket for
    the empty sentence)."""
    ids: list[int] = []
    offsets: list[int] = []
    for t in texts:
        offsets.append(len(ids))
        w = _words(t)
        feats = [f"u:{a}" for a in w] + [f"b:{a} {b}" for a, b in zip(w, w[1:], strict=False)]
        ids.extend(_bucket(f, buckets) for f in (feats or ["<empty>"]))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


class NgramSentimentJudge(nn.Module):
    """Bag of hashed word uni- and bigrams -> sentiment logits ``(B, 2)``; a text
    classifier (``list[str] -> logits``) for judging, not for explaining.

    Examples::

        judge = zoo.load("reviews/judge")
        judge(["a gorgeous , moving film .", "dull and far too long ."]).argmax(1)  # [1, 0]
    """

    is_text_classifier = True

    def __init__(self, buckets: int = 2 ** 16, num_classes: int = 2,
                 class_names: Sequence[str] = ("negative", "positive")) -> None:
        super().__init__()
        self.buckets = int(buckets)
        self.class_names = list(class_names)
        self.num_classes = int(num_classes)
        self.bag = nn.EmbeddingBag(self.buckets, self.num_classes, mode="mean")
        nn.init.zeros_(self.bag.weight)
        self.bias = nn.Parameter(torch.zeros(self.num_classes))

    def _device(self) -> torch.device:
        return self.bias.device

    def forward(self, texts: Sequence[str]) -> Tensor:
        if isinstance(texts, str):
            raise TypeError("the judge takes a list of sentences, not one string: judge([text])")
        ids, offsets = ngram_features(list(texts), self.buckets)
        return self.bag(ids.to(self._device()), offsets.to(self._device())) + self.bias

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> Tensor:
        return self(texts).softmax(-1)


# ---------------------------------------------------------------------------- fluency
_CHARS = " !\"$%&'(),-./0123456789:;?abcdefghijklmnopqrstuvwxyz"
_BOS, _EOS, _UNK = 1, 2, 3  # 0 pads (the text models' PAD_ID); characters start at 4
_CHAR_ID = {c: 4 + i for i, c in enumerate(_CHARS)}


def _char_id(c: str) -> int:
    """A character's id (UNK outside the normalised alphabet)."""
    return _CHAR_ID.get(c, _UNK)


def char_ids(text: str, max_chars: int) -> list[int]:
    """``[BOS] chars [EOS]`` of the normalised text as ids (a character outside the
    normalised alphabet maps to UNK); cut to ``max_chars`` characters."""
    from ..data.text import normalize_text

    t = normalize_text(text)[:max_chars]
    return [_BOS] + [_char_id(c) for c in t] + [_EOS]


class CharLMJudge(nn.Module):
    """Character-level LSTM language model whose only use is judging fluency.

    It reads characters, not the generator's BPE tokens, and is trained (zoo
    ``reviews/fluency-judge``, seed 1) on the IMDB *test* sentences, which neither the
    generator, its tokenizer nor ``reviews/lm`` saw.

    **What it reports.** A language model alone rates a sentence of frequent words as
    likely: measured, the char LM (and ``reviews/lm``) found "... that doesn't us a great
    glimpse into a bad most of us doesn't know ." *more* probable per word than the clean
    sentence it garbled, because "rare glimpse" and "culture" are rarer words. SLOR (the
    syntactic log-odds ratio: Pauls & Klein 2012; Lau, Clark & Lappin 2017; Kann, Rothe &
    Filippova 2018, arXiv 1809.08731) divides out each word's frequency:
    ``SLOR(s) = (log p_LM(s) - log p_unigram(s)) / |s|`` with ``|s|`` in words, and a word
    unigram ``p_unigram`` counted on the same training text (hashed into ``buckets``; a word
    never seen is spelled out with character frequencies times the escape mass).
    :meth:`perplexity` returns ``exp(-SLOR)``, a *frequency-normalised per-word perplexity*,
    so the ratio of two sentences' values is ``exp(SLOR_source - SLOR_cf)`` (> 1: the
    counterfactual reads less fluently). :meth:`word_perplexity` is the plain per-word
    perplexity ``exp(NLL / |s|)``. ``exp(-SLOR)`` is about 0.2-0.4 for real sentences, not a
    perplexity in the hundreds: only ratios of it mean something, so ``ratio_only`` tells
    :func:`~cfwidgets.metrics.text.evaluate_text` to report the ratio alone.
    """

    ratio_only = True

    def __init__(self, emb: int = 32, hidden: int = 256, layers: int = 2, dropout: float = 0.2,
                 max_chars: int = 160, buckets: int = 2 ** 15) -> None:
        super().__init__()
        self.vocab = 4 + len(_CHARS)
        self.max_chars = int(max_chars)
        self.buckets = int(buckets)
        self.embed = nn.Embedding(self.vocab, emb, padding_idx=0)
        self.rnn = nn.LSTM(emb, hidden, layers, batch_first=True, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, self.vocab)
        # the unigram of SLOR (counted, not trained: fit_unigram); zeros = not fitted
        self.register_buffer("word_logp", torch.zeros(self.buckets))
        self.register_buffer("char_logp", torch.zeros(self.vocab))
        self.register_buffer("escape_logp", torch.zeros(()))

    def _device(self) -> torch.device:
        return self.head.weight.device

    def batch(self, texts: Sequence[str]) -> Tensor:
        """Padded ``(B, T)`` ids of the texts."""
        from .text_classifier import pad_batch

        return pad_batch([np.asarray(char_ids(t, self.max_chars)) for t in texts])[0]

    def sentence_nll(self, ids: Tensor) -> Tensor:
        """``(B,)`` summed next-character NLL of each padded row (nats)."""
        ids = ids.to(self._device())
        h, _ = self.rnn(self.drop(self.embed(ids[:, :-1])))
        logits = self.head(self.drop(h))
        tgt = ids[:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none", ignore_index=0)
        return nll.sum(1)

    @torch.no_grad()
    def fit_unigram(self, texts: Sequence[str]) -> None:
        """Count the word unigram (add-one over the hashed buckets seen) and the character
        frequencies that spell out unseen words, from ``texts`` (the training text)."""
        from collections import Counter

        words = Counter(w for t in texts for w in _words(t))
        chars = Counter(c for t in texts for w in _words(t) for c in w + " ")
        n, v = sum(words.values()), len(words)
        counts = torch.zeros(self.buckets, dtype=torch.float64)
        for w, k in words.items():
            counts[_bucket(f"w:{w}", self.buckets)] += k
        self.word_logp.copy_(torch.where(counts > 0, (counts / (n + v)).log(),
                                         torch.zeros_like(counts)).float())
        self.escape_logp.fill_(math.log(v / (n + v)))
        total = sum(chars.values()) + self.vocab
        cl = torch.full((self.vocab,), math.log(1 / total), dtype=torch.float64)
        for c, k in chars.items():
            cl[_char_id(c)] = math.log((k + 1) / total)
        self.char_logp.copy_(cl.float())

    def unigram_logp(self, texts: Sequence[str]) -> Tensor:
        """``(N,)`` log p_unigram of each normalised sentence's words (nats)."""
        if not bool(self.word_logp.any()):
            raise RuntimeError("this fluency judge has no unigram table: call fit_unigram(texts) "
                               "on its training text, or load zoo 'reviews/fluency-judge'.")
        wl, cl = self.word_logp.cpu().tolist(), self.char_logp.cpu().tolist()
        escape = float(self.escape_logp)

        def logp(w: str) -> float:
            lp = wl[_bucket(f"w:{w}", self.buckets)]
            if lp == 0.0:  # unseen: the escape mass times the spelling's character frequencies
                lp = escape + sum(cl[_char_id(c)] for c in w + " ")
            return lp

        return torch.tensor([sum(logp(w) for w in _words(t)) for t in texts], dtype=torch.float32)

    def _checked(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("perplexity needs a list of strings")
        return list(texts)

    @torch.no_grad()
    def _nll_words(self, texts: list[str], batch_size: int) -> tuple[Tensor, Tensor]:
        was = self.training
        self.eval()
        nll = [self.sentence_nll(self.batch(texts[i:i + batch_size])).float().cpu()
               for i in range(0, len(texts), batch_size)]
        self.train(was)
        n_words = torch.tensor([max(1, len(_words(t))) for t in texts], dtype=torch.float32)
        return (torch.cat(nll) if nll else torch.zeros(0)), n_words

    def bits_per_char(self, texts: Sequence[str], batch_size: int = 256) -> float:
        """Mean bits per predicted character (each character and the end mark) over
        ``texts``."""
        texts = self._checked(texts)
        nll, _ = self._nll_words(texts, batch_size)
        n = sum(len(char_ids(t, self.max_chars)) - 1 for t in texts)
        return float(nll.sum()) / max(n, 1) / math.log(2)

    def word_perplexity(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """``(N,)`` plain per-word perplexity ``exp(NLL / words)``."""
        nll, n = self._nll_words(self._checked(texts), batch_size)
        return torch.exp(nll / n)

    def slor(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """``(N,)`` SLOR per sentence (nats per word; higher = more fluent)."""
        texts = self._checked(texts)
        nll, n = self._nll_words(texts, batch_size)
        return (-nll - self.unigram_logp(texts)) / n

    def perplexity(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """``(N,)`` frequency-normalised per-word perplexity ``exp(-SLOR)`` (see the class
        docstring); what ``evaluate_text(..., fluency_judge=...)`` takes ratios of."""
        return torch.exp(-self.slor(texts, batch_size))


def imdb_judge_split(groups) -> np.ndarray:
    """Boolean mask of the held-out tenth (by review) of the IMDB test sentences that the
    fluency judge validates on; it trains on the rest."""
    from ..data.text import IMDB_TEST_EVERY

    return (np.asarray(groups) // IMDB_TEST_EVERY) % 10 == 3


def shuffled(texts: Sequence[str], seed: int = 0) -> list[str]:
    """Each sentence with its words in a random order (a fluency judge's sanity check)."""
    import random

    rng = random.Random(seed)
    return [" ".join(rng.sample(t.split(), len(t.split()))) for t in texts]


def train_char_lm_judge(model: CharLMJudge, train_texts: Sequence[str], val_texts: Sequence[str],
                        *, steps: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 1,
                        state_path=None, save_every: int = 250, log=print) -> dict:
    """Train the character LM (Adam, one-cycle schedule, gradient clipping 1.0), resuming
    from ``state_path`` when it holds a state of this run; returns held-out bits per
    character (``val_bpc``) and the step count. Ends by counting SLOR's unigram on
    ``train_texts`` (:meth:`CharLMJudge.fit_unigram`)."""
    from pathlib import Path

    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps),
                                                pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    start = 0
    path = Path(state_path) if state_path is not None else None
    if path is not None and path.exists():
        st = torch.load(path, map_location="cpu", weights_only=True)
        if st.get("steps") == steps:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            gen.set_state(st["gen"])
            start = int(st["step"])
            log(f"fluency judge: resumed at step {start}/{steps}")

    def save(step: int) -> None:
        if path is not None:
            tmp = path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "gen": gen.get_state(), "step": step,
                        "steps": steps}, tmp)
            tmp.replace(path)

    texts = list(train_texts)
    model.train()
    for step in range(start, steps):
        idx = torch.randint(len(texts), (batch_size,), generator=gen)
        ids = model.batch([texts[i] for i in idx])
        loss = model.sentence_nll(ids).sum() / (ids[:, 1:] > 0).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % save_every == 0 or step + 1 == steps:
            save(step + 1)
            log(f"fluency judge: step {step + 1}/{steps}, train {float(loss.detach()) / math.log(2):.3f} bits/char")
    model.eval()
    model.fit_unigram(texts)  # SLOR's unigram: counted on the same training text
    return {"val_bpc": round(model.bits_per_char(val_texts), 4), "steps": steps}

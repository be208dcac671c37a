"""The data side of the text generator (nanoGPT's split: model / data / train): the
attribute masker (used at explain time too, by :meth:`TextGenerator.prepare_source`) and
the in-memory training corpus with its batches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cfwidgets.data.text import (
    INTENSIFIER_WORDS,
    MASK_ID,
    NEGATION_WORDS,
    load_tokenizer,
    sentiment_lexicon,
)

__all__ = ["AttributeMasker", "GeneratorCorpus", "make_batch", "pseudo_sentiment"]

# word classes for the attribute masker
_NONE, _SENT, _NEG, _INT = 0, 1, 2, 3


class AttributeMasker:
    """Replace attribute-bearing words by one ``[MASK]`` each (per-word, per-class rates).

    Word classes: sentiment (the derived lexicon), negation, intensifier. Works on token
    ids with the Metaspace convention (a word starts at a token beginning with "▁").
    """

    def __init__(self, tokenizer=None, lexicon: dict[str, float] | None = None):
        self.tok = tokenizer if tokenizer is not None else load_tokenizer()
        lex = lexicon if lexicon is not None else sentiment_lexicon()
        vocab = self.tok.get_vocab()
        inv = {i: t for t, i in vocab.items()}
        self.starts_word = np.zeros(len(vocab), dtype=bool)
        for i, t in inv.items():
            self.starts_word[i] = t.startswith("\u2581") or i < 5
        self.word_class = {}
        for w in lex:
            self.word_class[w] = _SENT
        for w in INTENSIFIER_WORDS:
            self.word_class[w] = _INT
        for w in NEGATION_WORDS:
            self.word_class[w] = _NEG

    def word_classes(self, text: str) -> np.ndarray:
        """Class of each whitespace word of a normalised sentence."""
        out = []
        for w in text.split():
            c = self.word_class.get(w, _NONE)
            if c == _NONE and w.endswith("n't"):
                c = _NEG
            out.append(c)
        return np.asarray(out, dtype=np.int8)

    def token_words(self, ids: np.ndarray) -> np.ndarray:
        """Word index of each token of ``[BOS] ... [EOS]`` ids (-1 for specials)."""
        ids = np.asarray(ids)
        starts = self.starts_word[ids].copy()
        special = ids < 5
        starts[special] = False
        w = np.cumsum(starts) - 1
        w[special] = -1
        return w

    def mask(self, ids: np.ndarray, word_cls: np.ndarray, rates: Sequence[float],
             rng: np.random.Generator | None = None, p_token: float = 0.0,
             return_kept: bool = False):
        """Masked copy of ``ids``: each word of class c (1..3) is replaced by a single
        ``[MASK]`` with probability ``rates[c - 1]``; other real tokens are replaced by
        ``[MASK]`` with probability ``p_token``. ``rng=None``: deterministic (rate >= 0.5
        masks, below does not; no token noise). ``return_kept``: also return an int8 array
        over ``ids``: 1 where the token survived unmasked (a "copy" position), 0 where its
        attribute word was masked, -1 where token noise masked it."""
        ids = np.asarray(ids)
        tw = self.token_words(ids)
        n_words = int(tw.max()) + 1 if len(tw) else 0
        wc = np.zeros(n_words, dtype=np.int8)
        m = min(n_words, len(word_cls))
        wc[:m] = word_cls[:m]
        r = np.asarray([0.0] + list(rates))[wc]
        if rng is None:
            masked_word = r >= 0.5
        else:
            masked_word = rng.random(n_words) < r
        out = []
        kept = np.ones(len(ids), dtype=np.int8)
        prev = -2
        for j, (t, w) in enumerate(zip(ids.tolist(), tw.tolist(), strict=True)):
            if w >= 0 and masked_word[w]:
                if w != prev:
                    out.append(MASK_ID)
                prev = w
                kept[j] = 0
                continue
            prev = w
            if rng is not None and p_token > 0 and w >= 0 and rng.random() < p_token:
                out.append(MASK_ID)
                kept[j] = -1
            else:
                out.append(t)
        out = np.asarray(out, dtype=np.int32)
        return (out, kept) if return_kept else out




class GeneratorCorpus:
    """Tokenized sentences with word classes and attribute codes (in memory)."""

    def __init__(self, texts, attrs, masker: AttributeMasker, max_len: int):
        tok = masker.tok
        enc = tok.backend_tokenizer.encode_batch(list(texts))
        self.ids: list[np.ndarray] = []
        self.wcls: list[np.ndarray] = []
        keep = []
        for i, (t, e) in enumerate(zip(texts, enc, strict=True)):
            if len(e.ids) > max_len:
                continue
            self.ids.append(np.asarray(e.ids, dtype=np.int32))
            self.wcls.append(masker.word_classes(t))
            keep.append(i)
        self.keep = np.asarray(keep)
        self.attrs = torch.as_tensor(np.asarray(attrs)[self.keep], dtype=torch.float32)
        self.lengths = np.array([len(s) for s in self.ids])

    def __len__(self):
        return len(self.ids)


def pseudo_sentiment(clf, texts: Sequence[str], cache: Path | None,
                      log) -> np.ndarray:
    """Classifier P(positive) for many sentences, cached as .npy next to ``cache``."""
    if cache is not None and cache.exists():
        arr = np.load(cache)
        if len(arr) == len(texts):
            return arr
    log(f"[gen] scoring {len(texts)} sentences with the classifier (pseudo-labels)")
    clf.eval()
    p = torch.softmax(clf.predict_texts(list(texts), batch_size=512), -1)[:, 1].numpy()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npy")
        np.save(tmp, p.astype(np.float32))
        os.replace(tmp, cache)
    return p.astype(np.float32)


def make_batch(corpus: GeneratorCorpus, idx: Sequence[int], masker: AttributeMasker,
                rng: np.random.Generator, rates, p_token: float):
    src, tgt, kept = [], [], []
    for i in idx:
        ids = corpus.ids[i]
        tgt.append(ids)
        m, k = masker.mask(ids, corpus.wcls[i], rates, rng=rng, p_token=p_token,
                           return_kept=True)
        src.append(m)
        kept.append(k)
    return src, tgt, kept, corpus.attrs[torch.as_tensor(list(idx))]

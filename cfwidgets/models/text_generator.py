"""Transformer conditional text generator ``g(z, a)`` for attribute-informed text
counterfactuals (AIP, Yang et al., arXiv 2101.06930).

What it is (choices made by measurement; figures in the report of issue 7):

* A BART-style encoder-decoder built from a ``transformers.BartConfig`` (no hub
  download): ``BartEncoder`` and ``BartDecoder`` with one shared token embedding, the
  output layer tied to it, the shared 4k BPE tokenizer, sentences up to ``max_len`` = 48
  tokens.
* **Latent code** ``z``: the encoder states pushed through a per-position linear
  bottleneck and a LayerNorm, ``z = LN(W_down h)``, shape ``(B, S, latent_dim)`` with a
  padding mask ``(B, S)``. A single pooled vector collapsed to a plain language model in
  earlier measurements; a *set* of states gives the decoder something to copy through
  cross-attention, so reconstruction works. Training adds Gaussian noise to ``z`` so that
  nearby codes decode to nearby sentences, which is what a latent-space search (AIP)
  needs.
* **Attribute code** ``a`` in [0, 1]^4 (sentiment, length, negation, intensifier;
  :data:`cfwidgets.data.text.ATTRIBUTE_NAMES`): linearly embedded as extra memory slots
  the decoder cross-attends to, and added to every decoder input embedding.
* **Making the code matter.** A denoising copier ignores a control code (measured), so
  the source is *partly deleted*: the words that carry the attribute (a sentiment
  lexicon derived from the training data, :func:`cfwidgets.data.text.sentiment_lexicon`,
  plus the negation and intensifier word lists) are replaced by one ``[MASK]`` each, with
  probability ``p_attr_mask``, and the decoder must restore them from ``a`` (the
  "delete, then generate with the target attribute" idea of Li et al. 2018, "Delete,
  Retrieve, Generate"). At explain time the same words are masked (``mask_attributes``).
* **Attribute consistency** (Hu et al. 2017, "Toward Controlled Generation of Text"): a
  frozen sentiment classifier (:class:`~cfwidgets.models.text_classifier.TextClassifier`,
  same tokenizer) judges *soft* decodes made with the flipped sentiment code; the
  cross-entropy to the flipped label trains the decoder to honour it. Soft decodes are
  Gumbel-softmax distributions over the vocabulary from one teacher-forced decoder pass
  on a fixed prefix (the source sentence during training, the model's own greedy decode
  at explain time), so no slow sequential unroll is needed. Hu et al. unroll with soft
  embeddings instead; :meth:`TextGenerator.soft_decode` offers that too
  (``prefix="soft"``).

API (all batched; shapes in comments)::

    z, z_mask = gen.encode(src_ids, src_mask)                 # (B, S, k), (B, S)
    logits = gen.decode_logits(z, a, dec_ids, z_mask)          # (B, T, V) next-token logits
    ids = gen.generate(z, a, z_mask, max_len=48)               # (B, T') greedy / beam / sample
    probs, mask = gen.soft_decode(z, a, z_mask, tau=0.5)       # (B, T, V) differentiable

    src_ids, src_mask = gen.prepare_source(texts)              # normalise, tokenize, mask
    texts = gen.decode_texts(ids)

Training: :func:`train_text_generator` (resumable, checkpointed); evaluation:
:func:`evaluate_text_generator` (teacher-forced token accuracy, greedy exact match and
BLEU, attribute control rate judged by the classifier).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cfwidgets.data.text import (
    ATTRIBUTE_NAMES,
    BOS_ID,
    EOS_ID,
    INTENSIFIER_WORDS,
    MASK_ID,
    NEGATION_WORDS,
    PAD_ID,
    load_tokenizer,
    normalize_text,
    sentiment_lexicon,
    text_attributes,
)
from cfwidgets.models.text_classifier import (
    LengthBucketSampler,
    TextClassifier,
    _transformers,
    export_model,
    import_model,
    load_checkpoint,
    pad_batch,
    save_checkpoint,
)

__all__ = [
    "TextGeneratorConfig",
    "TextGenerator",
    "AttributeMasker",
    "train_text_generator",
    "evaluate_text_generator",
    "gumbel_softmax",
]

# word classes for the attribute masker
_NONE, _SENT, _NEG, _INT = 0, 1, 2, 3


@dataclass
class TextGeneratorConfig:
    """Size and conditioning of :class:`TextGenerator`.

    ``latent_dim``: width of the per-position latent ``z`` (0 = the encoder states
    themselves, width ``d_model``); ``attr_slots``: memory slots made from ``a``.
    """

    vocab_size: int = 4096
    d_model: int = 192
    encoder_layers: int = 2
    decoder_layers: int = 2
    heads: int = 4
    ffn_dim: int = 768
    max_len: int = 48
    dropout: float = 0.1
    latent_dim: int = 64
    attr_slots: int = 2
    attribute_names: list[str] = field(default_factory=lambda: list(ATTRIBUTE_NAMES))


def gumbel_softmax(logits: Tensor, tau: float = 1.0, gumbel: bool = True,
                   generator: torch.Generator | None = None, hard: bool = False) -> Tensor:
    """``softmax((logits + g) / tau)`` with Gumbel noise ``g`` (none if ``gumbel=False``);
    ``hard=True`` gives straight-through one-hots. Noise is drawn on the CPU with
    ``generator`` (reproducible across devices)."""
    if gumbel:
        # Gumbel(0, 1) = -log(Exp(1))
        e = torch.empty(logits.shape).exponential_(generator=generator).clamp_(min=1e-12)
        logits = logits - e.log_().to(logits.device, logits.dtype)
    y = torch.softmax(logits / tau, dim=-1)
    if hard:
        idx = y.argmax(-1, keepdim=True)
        y_hard = torch.zeros_like(y).scatter_(-1, idx, 1.0)
        y = y_hard - y.detach() + y
    return y


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


def token_mask(tokenizer, size: int, keep: Callable[[str], bool]) -> Tensor:
    """Bool ``(size,)`` over a ``tokenizers``-backed tokenizer's ids: True where
    ``keep(token_string)`` holds."""
    m = torch.zeros(size, dtype=torch.bool)
    for tok, i in tokenizer.backend_tokenizer.get_vocab().items():
        if i < size and keep(tok):
            m[i] = True
    return m


class TextGenerator(nn.Module):
    """Attribute-conditioned encoder-decoder; see the module docstring.

    Examples::

        >>> gen = TextGenerator(TextGeneratorConfig())
        >>> src, src_mask = gen.prepare_source(["the jokes fall flat ."])
        >>> z, z_mask = gen.encode(src, src_mask)              # (1, S, 64)
        >>> a = torch.tensor([[1.0, 0.0, 0.0, 0.0]])             # positive, short
        >>> ids = gen.generate(z, a, z_mask)                    # (1, T)
        >>> gen.decode_texts(ids)
    """

    def __init__(self, config: TextGeneratorConfig | None = None):
        super().__init__()
        self.config = cfg = config or TextGeneratorConfig()
        tf = _transformers()
        bcfg = tf.BartConfig(
            vocab_size=cfg.vocab_size, d_model=cfg.d_model, encoder_layers=cfg.encoder_layers,
            decoder_layers=cfg.decoder_layers, encoder_attention_heads=cfg.heads,
            decoder_attention_heads=cfg.heads, encoder_ffn_dim=cfg.ffn_dim,
            decoder_ffn_dim=cfg.ffn_dim, max_position_embeddings=cfg.max_len + 2,
            dropout=cfg.dropout, attention_dropout=0.0, activation_dropout=0.0,
            scale_embedding=True, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
            eos_token_id=EOS_ID, decoder_start_token_id=BOS_ID, is_encoder_decoder=True)
        from transformers.models.bart.modeling_bart import BartDecoder, BartEncoder

        self.bart_config = bcfg
        self.encoder = BartEncoder(bcfg)
        self.decoder = BartDecoder(bcfg)
        self.decoder.embed_tokens = self.encoder.embed_tokens  # one shared embedding
        d, k, n_a = cfg.d_model, cfg.latent_dim or cfg.d_model, len(cfg.attribute_names)
        if cfg.latent_dim:
            self.down = nn.Linear(d, k)
            self.up = nn.Linear(k, d)
        else:
            self.down = nn.Identity()
            self.up = nn.Identity()
        self.z_norm = nn.LayerNorm(k, elementwise_affine=False)
        self.attr_mem = nn.Linear(n_a, cfg.attr_slots * d)
        self.attr_in = nn.Linear(n_a, d)
        self.final_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.attribute_names = list(cfg.attribute_names)
        self._masker: AttributeMasker | None = None

    # ------------------------------------------------------------------ basics
    @property
    def embed(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    @property
    def device(self) -> torch.device:
        return self.final_bias.device

    @property
    def masker(self) -> AttributeMasker:
        if self._masker is None:
            self._masker = AttributeMasker()
        return self._masker

    def _check_a(self, a: Tensor, b: int) -> Tensor:
        n_a = len(self.attribute_names)
        if a.ndim != 2 or a.shape != (b, n_a):
            raise ValueError(f"attribute code a must be ({b}, {n_a}) ({self.attribute_names}), "
                             f"got {tuple(a.shape)}")
        return a.to(self.device, self.final_bias.dtype)

    # ------------------------------------------------------------------ encoder side
    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        """Source ids ``(B, S)`` (usually from :meth:`prepare_source`) -> latent
        ``z (B, S, k)`` and its mask ``(B, S)``. ``z`` is what AIP perturbs."""
        if attention_mask is None:
            attention_mask = (input_ids != PAD_ID).long()
        if input_ids.shape[1] > self.config.max_len + 2:
            raise ValueError(f"source longer than the generator's limit "
                             f"({input_ids.shape[1]} > {self.config.max_len} tokens)")
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.z_norm(self.down(h)), attention_mask

    def memory(self, z: Tensor, a: Tensor, z_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``[attribute slots; W_up z]`` -> memory ``(B, slots + S, d)`` and its mask."""
        b = z.shape[0]
        a = self._check_a(a, b)
        slots = self.attr_mem(a).view(b, self.config.attr_slots, self.config.d_model)
        mem = torch.cat([slots, self.up(z)], dim=1)
        mask = torch.cat([torch.ones(b, self.config.attr_slots, dtype=z_mask.dtype,
                                     device=z_mask.device), z_mask], dim=1)
        return mem, mask

    # ------------------------------------------------------------------ decoder side
    def _dec_inputs(self, a: Tensor, ids: Tensor | None = None,
                    probs: Tensor | None = None) -> Tensor:
        emb = self.embed(ids) if probs is None else (
            probs @ self.embed.weight) * self.embed.embed_scale  # (B, T, d)
        return emb + self.attr_in(a).unsqueeze(1)

    def _run_decoder(self, mem, mem_mask, inputs_embeds, attention_mask=None,
                     past=None, use_cache=False):
        out = self.decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                           encoder_hidden_states=mem, encoder_attention_mask=mem_mask,
                           past_key_values=past, use_cache=use_cache)
        logits = out.last_hidden_state @ self.embed.weight.T + self.final_bias
        return logits, out.past_key_values

    def decode_logits(self, z: Tensor, a: Tensor, decoder_input_ids: Tensor,
                      z_mask: Tensor | None = None, decoder_mask: Tensor | None = None,
                      decoder_input_probs: Tensor | None = None) -> Tensor:
        """Teacher-forced next-token logits ``(B, T, V)`` for decoder inputs ``(B, T)``
        starting with ``[BOS]`` (or soft inputs ``decoder_input_probs (B, T, V)``)."""
        if z_mask is None:
            z_mask = torch.ones(z.shape[:2], dtype=torch.long, device=z.device)
        a = self._check_a(a, z.shape[0])
        mem, mem_mask = self.memory(z, a, z_mask)
        emb = self._dec_inputs(a, decoder_input_ids, decoder_input_probs)
        logits, _ = self._run_decoder(mem, mem_mask, emb, decoder_mask)
        return logits

    @torch.no_grad()
    def generate(self, z: Tensor, a: Tensor, z_mask: Tensor | None = None,
                 max_len: int | None = None, mode: str = "greedy", beams: int = 1,
                 temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None, block_repeats: bool = True,
                 max_lens: Tensor | None = None) -> Tensor:
        """Decode token ids ``(B, T)`` (``[BOS] ... [EOS]``, padded) from ``(z, a)``.

        ``mode``: ``"greedy"``, ``"sample"`` (``temperature``, optional ``top_k``, noise
        from ``generator``) or ``"beam"`` (``beams`` hypotheses, length-normalised).
        ``block_repeats``: never repeat a word token at once ("culture culture") or close
        an "A B A B" loop of them (see :meth:`_repeat_blockable`); punctuation (". . .")
        may repeat. ``max_lens (B,)``: a cap per row (tokens incl. ``[BOS]``/``[EOS]``; a
        row at its cap gets ``[EOS]``), so a row's decode does not depend on its batch.
        """
        if mode not in ("greedy", "sample", "beam"):
            raise ValueError(f"mode must be 'greedy', 'sample' or 'beam', got {mode!r}")
        caps = self._caps(max_lens, z.shape[0], max_len or self.config.max_len, z.device)
        if mode == "beam" and beams > 1:
            return self._beam_search(z, a, z_mask, max_len, beams, block_repeats, caps)
        max_len = max_len or self.config.max_len
        b = z.shape[0]
        if z_mask is None:
            z_mask = torch.ones(z.shape[:2], dtype=torch.long, device=z.device)
        a = self._check_a(a, b)
        mem, mem_mask = self.memory(z, a, z_mask)
        cur = torch.full((b, 1), BOS_ID, dtype=torch.long, device=z.device)
        out = [cur]
        done = torch.zeros(b, dtype=torch.bool, device=z.device)
        past = None
        for _ in range(max_len - 1):
            emb = self._dec_inputs(a, cur)
            logits, past = self._run_decoder(mem, mem_mask, emb, past=past, use_cache=True)
            lg = logits[:, -1].masked_fill(self._forbidden(lg_dim=logits.shape[-1]),
                                           float("-inf"))
            if block_repeats:
                lg = self._block_repeat(lg, torch.cat(out, dim=1))
            if mode == "sample":
                lg = lg / max(temperature, 1e-6)
                if top_k:
                    kth = lg.topk(top_k, dim=-1).values[:, -1:]
                    lg = lg.masked_fill(lg < kth, float("-inf"))
                p = torch.softmax(lg.float(), -1).cpu()
                nxt = torch.multinomial(p, 1, generator=generator).to(z.device).view(b)
            else:
                nxt = lg.argmax(-1)
            nxt = torch.where(caps <= len(out) + 1, torch.full_like(nxt, EOS_ID), nxt)
            nxt = torch.where(done, torch.full_like(nxt, PAD_ID), nxt)
            out.append(nxt.view(b, 1))
            done = done | (nxt == EOS_ID)
            cur = nxt.view(b, 1)
            if bool(done.all()):
                break
        ids = torch.cat(out, dim=1)
        # force an [EOS] on rows that ran out of length
        if not bool(done.all()):
            ids = torch.cat([ids, torch.full((b, 1), PAD_ID, dtype=torch.long,
                                             device=ids.device)], dim=1)
            ids[~done, -1] = EOS_ID
        return ids

    @staticmethod
    def _caps(max_lens, b: int, max_len: int, device) -> Tensor:
        """Per-row length caps ``(B,)``: ``max_lens`` clipped to ``[3, max_len]``."""
        if max_lens is None:
            return torch.full((b,), max_len, dtype=torch.long, device=device)
        caps = torch.as_tensor(max_lens, dtype=torch.long).to(device).view(-1)
        if caps.numel() != b:
            raise ValueError(f"max_lens needs one cap per row ({b}), got {caps.numel()}")
        return caps.clamp(3, max_len)

    def _beam_search(self, z, a, z_mask, max_len, beams, block_repeats=True, caps=None):
        max_len = max_len or self.config.max_len
        b = z.shape[0]
        if z_mask is None:
            z_mask = torch.ones(z.shape[:2], dtype=torch.long, device=z.device)
        a = self._check_a(a, b)
        # expand every row to `beams` hypotheses
        zr = z.repeat_interleave(beams, 0)
        ar = a.repeat_interleave(beams, 0)
        mr = z_mask.repeat_interleave(beams, 0)
        mem, mem_mask = self.memory(zr, ar, mr)
        seqs = torch.full((b * beams, 1), BOS_ID, dtype=torch.long, device=z.device)
        score = torch.zeros(b, beams, device=z.device)
        score[:, 1:] = float("-inf")  # all beams start identical: keep one
        done = torch.zeros(b * beams, dtype=torch.bool, device=z.device)
        lengths = torch.ones(b * beams, device=z.device)
        for _ in range(max_len - 1):
            # no cache: beams reorder; sentences are short, so this stays cheap enough
            logits, _ = self._run_decoder(mem, mem_mask, self._dec_inputs(ar, seqs))
            lg = logits[:, -1].float().masked_fill(self._forbidden(logits.shape[-1]),
                                                   float("-inf"))
            if block_repeats:
                lg = self._block_repeat(lg, seqs)
            logp = torch.log_softmax(lg, -1)  # (b*beams, V)
            V = logp.shape[-1]
            if caps is not None:
                at_cap = caps.repeat_interleave(beams) <= seqs.shape[1] + 1
                logp[at_cap] = torch.where(torch.arange(V, device=logp.device) == EOS_ID,
                                           0.0, float("-inf"))
            logp[done] = float("-inf")
            logp[done, PAD_ID] = 0.0
            cand = (score.view(-1, 1) + logp).view(b, beams * V)
            top = cand.topk(beams, dim=-1)
            src = top.indices // V
            tokn = top.indices % V
            base = (torch.arange(b, device=z.device) * beams).view(b, 1)
            flat_src = (base + src).view(-1)
            seqs = torch.cat([seqs[flat_src], tokn.view(-1, 1)], dim=1)
            done = done[flat_src] | (tokn.view(-1) == EOS_ID) | (tokn.view(-1) == PAD_ID)
            lengths = lengths[flat_src] + (tokn.view(-1) != PAD_ID).float()
            score = top.values
            if bool(done.all()):
                break
        norm = score / lengths.view(b, beams).clamp_min(1.0)
        best = norm.argmax(-1)
        idx = torch.arange(b, device=z.device) * beams + best
        ids = seqs[idx]
        fin = (ids == EOS_ID).any(1)
        if not bool(fin.all()):
            ids = torch.cat([ids, torch.full((b, 1), PAD_ID, dtype=torch.long,
                                             device=ids.device)], dim=1)
            ids[~fin, -1] = EOS_ID
        return ids

    def _repeat_blockable(self) -> Tensor:
        """Bool ``(V,)``: tokens with a letter (``▁that``, ``ative``), the ones
        :meth:`generate` does not loop on. Measured on the 8,530 review sentences: 0.9 %
        repeat such a token at once ("really really", "ahhhh") and 0.2 % have an
        "A B A B" loop ("j . r . r ."); the degenerate decodes this guards against loop
        for the rest of the sentence ("culture culture ...", "ativeativeative")."""
        cached = getattr(self, "_repeat_mask", None)
        if cached is None or cached.device != self.device:
            m = token_mask(self.masker.tok, self.config.vocab_size,
                           lambda tok: any(c.isalpha() for c in tok))
            cached = self._repeat_mask = m.to(self.device)
        return cached

    def _block_repeat(self, lg: Tensor, seq: Tensor) -> Tensor:
        """Logits ``(N, V)`` after the ids so far ``seq (N, T)``, with -inf on the token
        that would repeat the last one ("A A") or close an "A B A B" loop, where that
        token is blockable (see :meth:`_repeat_blockable`)."""
        blk = self._repeat_blockable()
        if lg.shape[-1] != blk.numel():
            return lg
        rows = torch.arange(lg.shape[0], device=lg.device)
        ninf = torch.full_like(lg[:, 0], float("-inf"))
        prev = seq[:, -1]
        lg = lg.index_put((rows, prev), torch.where(blk[prev], ninf, lg[rows, prev]))
        if seq.shape[1] >= 3:
            b2 = seq[:, -2]
            loop = blk[b2] & (seq[:, -1] == seq[:, -3])
            lg = lg.index_put((rows, b2), torch.where(loop, ninf, lg[rows, b2]))
        return lg

    def _forbidden(self, lg_dim: int) -> Tensor:
        """Tokens never generated: [PAD], [UNK], [BOS], [MASK]."""
        f = torch.zeros(lg_dim, dtype=torch.bool, device=self.device)
        f[[PAD_ID, 1, BOS_ID, MASK_ID]] = True
        return f

    def soft_decode(self, z: Tensor, a: Tensor, z_mask: Tensor | None = None,
                    steps: int | None = None, tau: float = 0.5, gumbel: bool = True,
                    prefix: str | Tensor = "greedy",
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Differentiable decode: token distributions ``(B, T, V)`` and mask ``(B, T)``.

        Row ``t`` of the output is the (Gumbel-)softmax of the logits for position ``t``;
        position 0 is a one-hot ``[BOS]``, and the row of the first ``[EOS]`` is kept in
        the mask, so the result can go straight into
        ``TextClassifier.forward_soft(probs, mask)``.

        ``prefix``: ``"greedy"`` (default) teacher-forces one parallel decoder pass on the
        model's own greedy decode of ``(z, a)`` (computed without gradient); a tensor of
        ids ``(B, T)`` uses that prefix; ``"soft"`` unrolls ``steps`` positions feeding
        each step's soft distribution back as the next input (Hu et al. 2017; slower,
        gradient through the whole path). ``tau``: temperature; ``gumbel``: add noise.
        """
        b = z.shape[0]
        if z_mask is None:
            z_mask = torch.ones(z.shape[:2], dtype=torch.long, device=z.device)
        steps = steps or self.config.max_len
        if isinstance(prefix, str) and prefix == "soft":
            a = self._check_a(a, b)
            mem, mem_mask = self.memory(z, a, z_mask)
            V = self.config.vocab_size
            bos = F.one_hot(torch.full((b, 1), BOS_ID, device=z.device), V).to(z.dtype)
            seq = bos
            for _ in range(steps - 1):
                logits, _ = self._run_decoder(mem, mem_mask, self._dec_inputs(a, probs=seq))
                y = gumbel_softmax(logits[:, -1:], tau, gumbel, generator)
                seq = torch.cat([seq, y], dim=1)
            hard = seq.argmax(-1)
            return seq, self._mask_after_eos(hard)
        if isinstance(prefix, str):
            if prefix != "greedy":
                raise ValueError(f"prefix must be 'greedy', 'soft' or a tensor, got {prefix!r}")
            prefix = self.generate(z.detach(), a.detach(), z_mask, max_len=steps)
        ids = prefix.to(z.device)
        logits = self.decode_logits(z, a, ids[:, :-1], z_mask)  # (B, T-1, V)
        y = gumbel_softmax(logits, tau, gumbel, generator)
        bos = F.one_hot(ids[:, :1], self.config.vocab_size).to(y.dtype)
        probs = torch.cat([bos, y], dim=1)  # (B, T, V)
        return probs, self._mask_after_eos(ids)

    @staticmethod
    def _mask_after_eos(ids: Tensor) -> Tensor:
        """1 up to and including the first [EOS] (or all, if none), 0 after."""
        is_eos = (ids == EOS_ID).long()
        after = (is_eos.cumsum(1) - is_eos) > 0
        return (~after).long()

    # ------------------------------------------------------------------ text helpers
    def prepare_source(self, texts: Sequence[str], mask_attributes: bool | Sequence[float] = True,
                       normalize: bool = True) -> tuple[Tensor, Tensor]:
        """Strings -> encoder input ``(B, S)`` and mask, attribute words masked.

        ``mask_attributes``: True masks sentiment, negation and intensifier words (what
        the generator was trained to restore from ``a``); False masks none; a triple gives
        per-class thresholds. Longer inputs are truncated to ``max_len`` tokens (check
        :meth:`too_long` first to warn the user).
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("prepare_source needs a list of strings")
        if normalize:
            texts = [normalize_text(t) for t in texts]
        if mask_attributes is True:
            rates = (1.0, 1.0, 1.0)
        elif mask_attributes is False:
            rates = (0.0, 0.0, 0.0)
        else:
            rates = tuple(float(r) for r in mask_attributes)
        tok = self.masker.tok
        seqs = []
        for t in texts:
            ids = np.asarray(tok.backend_tokenizer.encode(t).ids, dtype=np.int32)
            ids = self.masker.mask(ids, self.masker.word_classes(t), rates, rng=None)
            if len(ids) > self.config.max_len:
                ids = np.concatenate([ids[: self.config.max_len - 1], [EOS_ID]]).astype(np.int32)
            seqs.append(ids)
        ids, mask = pad_batch(seqs)
        return ids.to(self.device), mask.to(self.device)

    def too_long(self, texts: Sequence[str]) -> list[bool]:
        """Which strings exceed the generator's ``max_len`` tokens after normalisation."""
        tok = self.masker.tok
        return [len(tok.backend_tokenizer.encode(normalize_text(t)).ids) > self.config.max_len
                for t in texts]

    def attributes_of(self, texts: Sequence[str], sentiment: Sequence[float]) -> Tensor:
        """The attribute code ``a (B, 4)`` of sentences given their sentiment in [0, 1]."""
        return torch.as_tensor(text_attributes([normalize_text(t) for t in texts],
                                               np.asarray(sentiment)), device=self.device)

    def decode_texts(self, ids: Tensor) -> list[str]:
        """Token ids -> strings (special tokens dropped, cut at the first [EOS])."""
        tok = self.masker.tok
        out = []
        for row in ids.tolist():
            if EOS_ID in row:
                row = row[: row.index(EOS_ID)]
            out.append(tok.decode([t for t in row if t >= 5], skip_special_tokens=True))
        return out

    def export(self, path: str | Path, meta: dict | None = None) -> None:
        """Write ``path.safetensors`` + ``path.json``."""
        export_model(self, path, asdict(self.config), meta or {})

    @classmethod
    def load(cls, path: str | Path) -> TextGenerator:
        """Read what :meth:`export` wrote (eval mode)."""
        sd, cfg, meta = import_model(path)
        model = cls(TextGeneratorConfig(**cfg))
        model.load_state_dict(sd)
        model.meta = meta
        return model.eval()


# --------------------------------------------------------------------------------------
# data for training
# --------------------------------------------------------------------------------------


class _GenCorpus:
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


def _pseudo_sentiment(clf: TextClassifier, texts: Sequence[str], cache: Path | None,
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
        import os

        os.replace(tmp, cache)
    return p.astype(np.float32)


def _make_batch(corpus: _GenCorpus, idx: Sequence[int], masker: AttributeMasker,
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


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_text_generator(gen: TextGenerator, texts: Sequence[str],
                            sentiment: Sequence[float], clf: TextClassifier | None = None,
                            batch_size: int = 128, mask_attributes=True,
                            mode: str = "greedy", beams: int = 1,
                            return_texts: bool = False) -> dict:
    """Quality gates of the generator on normalised sentences.

    * ``token_acc``: teacher-forced next-token accuracy (source masked as at explain time)
      and ``token_acc_unmasked`` (nothing masked);
    * ``exact`` / ``bleu``: greedy (or beam) reconstruction with the true code vs source
      (sacrebleu corpus BLEU);
    * with ``clf``: ``control``: share of sentences whose decode with the *flipped*
      sentiment code is classified as the flipped label; ``recon_agree``: share whose
      reconstruction keeps the classifier's label of the source; ``flip_bleu``: BLEU of
      the flipped decodes to the sources (content kept);
    * ``runon``: share of decodes (reconstructions and flips) more than 3 words longer than
      their source; ``repetition``: mean share of repeated word bigrams in them.

    ``return_texts`` adds the lists ``sources``, ``recons`` and ``flips``.
    """
    import sacrebleu

    from cfwidgets.metrics.text import repetition

    was = gen.training
    gen.eval()
    texts = list(texts)
    sent = np.asarray(sentiment, dtype=np.float32)
    keep = [i for i, t in enumerate(gen.too_long(texts)) if not t]
    texts = [texts[i] for i in keep]
    sent = sent[keep]
    tok = gen.masker.tok
    n_tok = {True: 0, False: 0}
    n_ok = {True: 0, False: 0}
    recon, flipped, hyps_src = [], [], []
    want = []
    for i in range(0, len(texts), batch_size):
        bt = texts[i:i + batch_size]
        bs = sent[i:i + batch_size]
        a = gen.attributes_of(bt, bs)
        tgt, tm = pad_batch([np.asarray(tok.backend_tokenizer.encode(t).ids, dtype=np.int32)
                             for t in bt])
        tgt, tm = tgt.to(gen.device), tm.to(gen.device)
        for masked in (True, False):
            src, sm = gen.prepare_source(bt, mask_attributes=mask_attributes if masked else False,
                                         normalize=False)
            z, zm = gen.encode(src, sm)
            logits = gen.decode_logits(z, a, tgt[:, :-1], zm)
            real = tm[:, 1:].bool()
            n_ok[masked] += int(((logits.argmax(-1) == tgt[:, 1:]) & real).sum())
            n_tok[masked] += int(real.sum())
            if masked:
                ids = gen.generate(z, a, zm, mode=mode, beams=beams)
                recon += gen.decode_texts(ids)
                a2 = a.clone()
                a2[:, 0] = (a[:, 0] < 0.5).float()
                ids2 = gen.generate(z, a2, zm, mode=mode, beams=beams)
                flipped += gen.decode_texts(ids2)
                want += a2[:, 0].long().tolist()
        hyps_src += bt
    out = {"n": len(texts),
           "token_acc": n_ok[True] / max(n_tok[True], 1),
           "token_acc_unmasked": n_ok[False] / max(n_tok[False], 1),
           "exact": float(np.mean([r == s for r, s in zip(recon, hyps_src, strict=True)])),
           "bleu": sacrebleu.corpus_bleu(recon, [hyps_src], tokenize="none").score,
           "flip_bleu": sacrebleu.corpus_bleu(flipped, [hyps_src], tokenize="none").score,
           "runon": float(np.mean([len(r.split()) > len(s.split()) + 3
                                   for r, s in zip(recon + flipped, hyps_src + hyps_src,
                                                   strict=True)])),
           "repetition": float(repetition(recon + flipped).mean())}
    if clf is not None:
        clf.eval()
        p_src = clf.predict_texts(hyps_src).argmax(1)
        p_rec = clf.predict_texts([r or "." for r in recon]).argmax(1)
        p_flip = clf.predict_texts([r or "." for r in flipped]).argmax(1)
        w = torch.as_tensor(want)
        out["control"] = float((p_flip == w).float().mean())
        out["recon_agree"] = float((p_rec == p_src).float().mean())
        out["flip_changed_label"] = float((p_flip != p_src).float().mean())
    if return_texts:
        out.update(sources=hyps_src, recons=recon, flips=flipped)
    out["examples"] = [{"source": s, "recon": r, "flipped": f}
                       for s, r, f in list(zip(hyps_src, recon, flipped, strict=True))[:8]]
    gen.train(was)
    return out


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def train_text_generator(
    checkpoint: str | Path,
    classifier: TextClassifier | str | Path | None,
    *,
    config: TextGeneratorConfig | None = None,
    steps: int = 20000,
    max_seconds: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
    warmup: int = 300,
    p_attr_mask: Sequence[float] = (0.9, 0.5, 0.5),
    p_token_mask: float = 0.1,
    p_word_dropout: float = 0.1,
    latent_noise: float = 0.1,
    consistency_weight: float = 0.5,
    consistency_start: int = 500,
    consistency_every: int = 2,
    consistency_tau: float = 0.5,
    consistency_prefix: str = "source",
    copy_weight: float = 1.0,
    eos_weight: float = 0.0,
    consistency_positions: str = "all",
    protect_punctuation: bool = False,
    rt_fraction: float = 0.25,
    sentiment_source: str = "classifier",
    eval_every: int = 1000,
    eval_n: int = 400,
    log_every: int = 100,
    max_imdb: int | None = None,
    save_every_s: float = 180.0,
    log: Callable[[str], None] | None = print,
) -> tuple[TextGenerator, dict]:
    """Train (or resume) the conditional generator; returns ``(model, metrics)``.

    Each step: a batch of sentences (a share ``rt_fraction`` from the Rotten Tomatoes
    train split, the rest from the IMDB train sentences), attribute words masked in the
    source (``p_attr_mask`` for sentiment / negation / intensifier words, plus
    ``p_token_mask`` random tokens), Gaussian noise ``latent_noise`` on ``z``, decoder
    inputs dropped to ``[MASK]`` with ``p_word_dropout``; loss = reconstruction
    cross-entropy + ``consistency_weight`` x attribute consistency (every
    ``consistency_every`` steps from step ``consistency_start``; the frozen classifier
    judges Gumbel-softmax decodes made with the flipped sentiment code, teacher-forced on
    the source (``consistency_prefix="source"``) or the model's greedy decode
    (``"greedy"``)). With the source prefix, ``copy_weight`` x cross-entropy keeps the
    flipped decode's *unmasked* tokens (and its ``[EOS]``) equal to the source, so only
    the masked attribute words change (without it, measured: the flipped code sprayed
    sentiment words over copy positions and skipped ``[EOS]``, "... dull dull dull").
    ``eos_weight`` x cross-entropy keeps only the source's ``[EOS]`` under the flipped code,
    and the classifier is shown a one-hot ``[EOS]`` there instead of the decoder's
    distribution. Measured: without it (``copy_weight=0``) the classifier rewarded a
    sentiment word in place of ``[EOS]``, and after 4,500 steps most greedy decodes ran on
    past the sentence ("... philip glass . culture culture culture"; exact match 4 %).
    ``consistency_positions="masked"`` shows the classifier the source's own tokens except
    at the masked attribute words, so the code can only act there (with ``"all"``,
    measured: the decoder learned to put a sentiment word where the final "." was,
    "... philip glass culture", and that leaked into reconstructions with the true code).
    ``protect_punctuation`` extends the ``[EOS]`` treatment (``eos_weight``) to the source's
    punctuation tokens, so the code cannot learn to overwrite the final "." either, while
    every word position stays open to it.
    AdamW, linear warm-up then cosine decay to 10%.

    Sentiment code: gold labels for Rotten Tomatoes sentences; for IMDB sentences the
    classifier's P(positive) (``sentiment_source="classifier"``, computed once and cached)
    or the weak review label (``"weak"``). Resumes from ``checkpoint``; saves every
    ``save_every_s`` seconds (atomically), after evaluations, and at the end.
    ``max_seconds`` caps this call (resume later with the same arguments). ``max_imdb``
    keeps only the first IMDB sentences (smoke tests); ``log_every``: history interval.
    """
    from cfwidgets.data.text import load_imdb_sentences, load_reviews

    say = log or (lambda s: None)
    checkpoint = Path(checkpoint)
    torch.manual_seed(seed)
    config = config or TextGeneratorConfig()
    ck = load_checkpoint(checkpoint)
    if ck is not None:
        config = TextGeneratorConfig(**ck["config"])
    gen = TextGenerator(config)
    masker = gen.masker

    clf = None
    if classifier is not None:
        clf = TextClassifier.load(classifier) if isinstance(classifier, (str, Path)) else classifier
        clf.eval()
        for p in clf.parameters():
            p.requires_grad_(False)
        if clf.config.vocab_size != config.vocab_size:
            raise ValueError("classifier and generator must share the tokenizer (vocab sizes "
                             f"{clf.config.vocab_size} vs {config.vocab_size})")
    if consistency_positions not in ("all", "masked"):
        raise ValueError(f"consistency_positions must be 'all' or 'masked', got {consistency_positions!r}")
    if consistency_weight > 0 and clf is None:
        raise ValueError("consistency_weight > 0 needs a classifier (or set it to 0)")

    rt = load_reviews("train")
    rt_test = load_reviews("test")
    im = load_imdb_sentences("train")
    if max_imdb is not None:
        im = im.subset(slice(0, int(max_imdb)))
    if sentiment_source == "classifier" and clf is not None:
        cache = (checkpoint.parent / "imdb_train_pseudo_sentiment.npy"
                 if max_imdb is None else None)
        im_sent = _pseudo_sentiment(clf, im.texts, cache, say)
    elif sentiment_source in ("weak", "classifier"):
        im_sent = im.labels.astype(np.float32)
    else:
        raise ValueError(f"sentiment_source must be 'classifier' or 'weak', got {sentiment_source!r}")
    im_attr = text_attributes(im.texts, im_sent)
    rt_corpus = _GenCorpus(rt.texts, rt.attributes, masker, config.max_len)
    im_corpus = _GenCorpus(im.texts, im_attr, masker, config.max_len)
    say(f"[gen] corpus: {len(rt_corpus)} RT + {len(im_corpus)} IMDB sentences "
        f"(<= {config.max_len} tokens); params {sum(p.numel() for p in gen.parameters())}")

    opt = torch.optim.AdamW(gen.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    rt_sampler = LengthBucketSampler(rt_corpus.lengths, max(1, int(batch_size * rt_fraction)),
                                     seed=seed + 1)
    im_sampler = LengthBucketSampler(im_corpus.lengths,
                                     batch_size - max(1, int(batch_size * rt_fraction)),
                                     seed=seed + 2)
    state = {"step": 0, "elapsed": 0.0, "history": [], "evals": []}
    if ck is not None:
        gen.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        rt_sampler.load_state(ck["rt_sampler"])
        im_sampler.load_state(ck["im_sampler"])
        state = ck["state"]
        say(f"[gen] resumed {checkpoint} at step {state['step']}")
    rng = np.random.default_rng(seed * 1000 + state["step"])
    gumbel_gen = torch.Generator().manual_seed(seed + 3 + state["step"])
    hp = {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup,
          "p_attr_mask": list(p_attr_mask), "p_token_mask": p_token_mask,
          "p_word_dropout": p_word_dropout, "latent_noise": latent_noise,
          "consistency_weight": consistency_weight, "consistency_start": consistency_start,
          "consistency_every": consistency_every, "consistency_tau": consistency_tau,
          "consistency_prefix": consistency_prefix, "copy_weight": copy_weight,
          "eos_weight": eos_weight, "consistency_positions": consistency_positions,
          "protect_punctuation": protect_punctuation,
          "rt_fraction": rt_fraction,
          "sentiment_source": sentiment_source, "seed": seed, "max_imdb": max_imdb}

    t0 = time.time()
    last_save = t0

    def elapsed():
        return state["elapsed"] + time.time() - t0

    def save():
        st = dict(state)
        st["elapsed"] = elapsed()
        save_checkpoint(checkpoint, {
            "config": asdict(config), "hparams": hp, "state": st, "model": gen.state_dict(),
            "opt": opt.state_dict(), "rt_sampler": rt_sampler.state(),
            "im_sampler": im_sampler.state()})

    def run_eval():
        if eval_n <= 0:
            return {"step": state["step"], "elapsed": elapsed()}
        ev = evaluate_text_generator(gen, rt_test.texts[:eval_n], rt_test.labels[:eval_n], clf)
        n_im = min(200, eval_n)
        ev_im = evaluate_text_generator(gen, load_imdb_sentences("test").texts[:n_im],
                                        np.full(n_im, 0.5), None)
        rec = {k: v for k, v in ev.items() if k != "examples"}
        rec.update({"imdb_token_acc": ev_im["token_acc"], "imdb_exact": ev_im["exact"],
                    "step": state["step"], "elapsed": elapsed()})
        state["evals"].append(rec)
        say("[gen eval] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in rec.items()))
        for ex in ev["examples"][:4]:
            say(f"   src : {ex['source']}\n   rec : {ex['recon']}\n   flip: {ex['flipped']}")
        return rec

    # punctuation-only tokens (no letter or digit), for protect_punctuation
    punct = token_mask(masker.tok, config.vocab_size, lambda tok: not any(c.isalnum() for c in tok))
    punct[[PAD_ID, 1, BOS_ID, EOS_ID, MASK_ID]] = False  # special tokens
    gen.train()
    run = {}
    out_of_time = False
    while state["step"] < steps:
        if max_seconds is not None and time.time() - t0 > max_seconds:
            out_of_time = True
            break
        s = state["step"]
        cur_lr = lr * min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (
            1 + math.cos(math.pi * min(1.0, s / max(steps, 1)))))
        for g in opt.param_groups:
            g["lr"] = cur_lr
        t_step = time.time()
        b1 = _make_batch(rt_corpus, next(rt_sampler).tolist(), masker, rng, p_attr_mask,
                         p_token_mask)
        b2 = _make_batch(im_corpus, next(im_sampler).tolist(), masker, rng, p_attr_mask,
                         p_token_mask)
        src, sm = pad_batch(b1[0] + b2[0])
        tgt, tm = pad_batch(b1[1] + b2[1])
        pos_kind, _ = pad_batch([(k + 1).astype(np.int32) for k in b1[2] + b2[2]])  # 0 = pad
        kept = pos_kind == 2  # copied tokens
        attr_slot = pos_kind == 1  # tokens of masked attribute words
        a = torch.cat([b1[3], b2[3]])
        z, zm = gen.encode(src, sm)
        if latent_noise > 0:
            z = z + latent_noise * torch.randn_like(z)
        dec_in = tgt[:, :-1].clone()
        if p_word_dropout > 0:
            drop = (torch.rand(dec_in.shape) < p_word_dropout) & (dec_in > 4)
            dec_in[drop] = MASK_ID
        logits = gen.decode_logits(z, a, dec_in, zm)
        real = tm[:, 1:].bool()
        rec_loss = F.cross_entropy(logits[real], tgt[:, 1:][real])
        loss = rec_loss
        stats = {"rec": rec_loss.item(),
                 "acc": float((logits.argmax(-1)[real] == tgt[:, 1:][real]).float().mean())}
        if (consistency_weight > 0 and s >= consistency_start
                and s % max(consistency_every, 1) == 0):
            a2 = a.clone()
            a2[:, 0] = (a[:, 0] < 0.5).float()
            if consistency_prefix == "greedy":
                gen.eval()
                prefix = gen.generate(z.detach(), a2, zm)
                gen.train()
                probs, pmask = gen.soft_decode(z, a2, zm, tau=consistency_tau, gumbel=True,
                                               prefix=prefix, generator=gumbel_gen)
            else:  # teacher-forced on the source sentence
                logits2 = gen.decode_logits(z, a2, tgt[:, :-1], zm)  # (B, T-1, V)
                y = gumbel_softmax(logits2, consistency_tau, True, gumbel_gen)
                # positions where the classifier reads the source's own token
                fixed = torch.zeros_like(real)
                if consistency_positions == "masked":
                    # everywhere except the masked attribute words' tokens: only they can
                    # carry the flipped code
                    fixed = ~(attr_slot[:, 1:] & real)
                if eos_weight > 0:
                    # the sentence ends where the source ends, whatever the code says
                    # (and, with protect_punctuation, keeps its punctuation)
                    at_eos = (tgt[:, 1:] == EOS_ID) & real
                    if protect_punctuation:
                        at_eos = at_eos | (punct[tgt[:, 1:]] & real)
                    eos_loss = F.cross_entropy(logits2[at_eos], tgt[:, 1:][at_eos])
                    loss = loss + eos_weight * eos_loss
                    stats["eos"] = eos_loss.item()
                    fixed = fixed | at_eos
                if consistency_positions == "masked" or eos_weight > 0:
                    y = torch.where(fixed.unsqueeze(-1),
                                    F.one_hot(tgt[:, 1:], config.vocab_size).to(y.dtype), y)
                probs = torch.cat([F.one_hot(tgt[:, :1], config.vocab_size).to(y.dtype), y], 1)
                pmask = tm
                if copy_weight > 0:
                    # keep the unmasked (copied) tokens, [EOS] included, under the flipped
                    # code: only the masked attribute words are free to change
                    cp = kept[:, 1:].bool() & real
                    copy_loss = F.cross_entropy(logits2[cp], tgt[:, 1:][cp])
                    loss = loss + copy_weight * copy_loss
                    stats["copy"] = copy_loss.item()
            cl = clf.forward_soft(probs[:, : clf.config.max_len], pmask[:, : clf.config.max_len])
            con_loss = F.cross_entropy(cl, a2[:, 0].long())
            loss = loss + consistency_weight * con_loss
            stats["con"] = con_loss.item()
            stats["con_acc"] = float((cl.argmax(1) == a2[:, 0].long()).float().mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        opt.step()
        stats["sec"] = time.time() - t_step
        state["step"] += 1
        for k, v in stats.items():
            run[k] = v if k not in run else 0.98 * run[k] + 0.02 * v
        if state["step"] % max(log_every, 1) == 0:
            rec = {"step": state["step"], "elapsed": elapsed(), "lr": cur_lr, **run}
            state["history"].append(rec)
            say("[gen] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in rec.items()))
        if eval_every and state["step"] % eval_every == 0:
            run_eval()
            gen.train()
            save()
            last_save = time.time()
        elif time.time() - last_save > save_every_s:
            save()
            last_save = time.time()
    if out_of_time:
        save()
        say(f"[gen] stopped after max_seconds at step {state['step']}; resume with the same "
            f"checkpoint ({checkpoint})")
        gen.eval()
        return gen, state["evals"][-1] if state["evals"] else {}
    if (state.get("final") or {}).get("step") != state["step"]:
        rec = run_eval()
        rec.update({"params": sum(p.numel() for p in gen.parameters()), "hparams": hp})
        state["final"] = rec
        save()
    gen.eval()
    return gen, state["final"]


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

Split the nanoGPT way: this file is the model; the masking and the training corpus are
:mod:`cfwidgets.models.text_generator_data`; training (options in one
:class:`~cfwidgets.zoo.text_generator_train.TrainConfig`) and evaluation are
:mod:`cfwidgets.zoo.text_generator_train` (the zoo layer: they score with the metrics).
"""

from __future__ import annotations

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
    MASK_ID,
    PAD_ID,
    normalize_text,
    text_attributes,
)
from cfwidgets.models.text_classifier import (
    _transformers,
    export_model,
    import_model,
    pad_batch,
)
from cfwidgets.models.text_generator_data import AttributeMasker

__all__ = [
    "TextGeneratorConfig",
    "TextGenerator",
    "AttributeMasker",
    "gumbel_softmax",
    "token_mask",
    "mask_after_eos",
]


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


def mask_after_eos(ids: Tensor) -> Tensor:
    """``(B, T)`` long: 1 up to and including each row's first [EOS] (all, if none), 0
    after it."""
    is_eos = (ids == EOS_ID).long()
    after = (is_eos.cumsum(1) - is_eos) > 0
    return (~after).long()


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
            return seq, mask_after_eos(hard)
        if isinstance(prefix, str):
            if prefix != "greedy":
                raise ValueError(f"prefix must be 'greedy', 'soft' or a tensor, got {prefix!r}")
            prefix = self.generate(z.detach(), a.detach(), z_mask, max_len=steps)
        ids = prefix.to(z.device)
        logits = self.decode_logits(z, a, ids[:, :-1], z_mask)  # (B, T-1, V)
        y = gumbel_softmax(logits, tau, gumbel, generator)
        bos = F.one_hot(ids[:, :1], self.config.vocab_size).to(y.dtype)
        probs = torch.cat([bos, y], dim=1)  # (B, T, V)
        return probs, mask_after_eos(ids)

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

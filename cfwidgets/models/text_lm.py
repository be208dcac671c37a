"""A tiny GPT-2 language model over the shared tokenizer, for fluency metrics.

Text counterfactuals are scored for fluency by their perplexity under a language model
trained *separately* from the generator and the classifier (METHODS.md, text metrics):
a GPT-2 architecture (Radford et al. 2019) built from a ``transformers.GPT2Config`` (no
hub download), trained on the Rotten Tomatoes train sentences and the IMDB train
sentences. ``perplexity(texts)`` gives one number per sentence (``exp`` of the mean
next-token negative log-likelihood over the sentence's tokens and its ``[EOS]``); the
"grammar proxy" of a counterfactual is its perplexity divided by its source's.

Examples::

    >>> from cfwidgets.models.text_lm import TextLM, TextLMConfig
    >>> lm = TextLM(TextLMConfig())
    >>> lm.perplexity(["the jokes fall flat ."]).shape
    torch.Size([1])
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cfwidgets.data.text import PAD_ID, normalize_text
from cfwidgets.models.text_classifier import (
    LengthBucketSampler,
    ResumableRun,
    _transformers,
    encode_texts,
    export_model,
    import_model,
    load_checkpoint,
    pad_batch,
)

__all__ = ["TextLMConfig", "TextLM", "train_text_lm"]


@dataclass
class TextLMConfig:
    """Size of the LM (defaults: 3 layers, d = 128, 4 heads, ~1.1M parameters)."""

    vocab_size: int = 4096
    n_embd: int = 128
    n_layer: int = 3
    n_head: int = 4
    max_len: int = 64
    dropout: float = 0.1


class TextLM(nn.Module):
    """GPT-2 LM; ``forward(input_ids, attention_mask) -> logits (B, T, V)``."""

    def __init__(self, config: TextLMConfig | None = None):
        super().__init__()
        self.config = cfg = config or TextLMConfig()
        tf = _transformers()
        gcfg = tf.GPT2Config(vocab_size=cfg.vocab_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                             n_head=cfg.n_head, n_positions=cfg.max_len, resid_pdrop=cfg.dropout,
                             embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                             bos_token_id=2, eos_token_id=3, pad_token_id=PAD_ID)
        self.gpt = tf.GPT2LMHeadModel(gcfg)

    @property
    def device(self) -> torch.device:
        return self.gpt.lm_head.weight.device

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(f"the LM takes at most {self.config.max_len} tokens, got "
                             f"{input_ids.shape[1]}")
        return self.gpt(input_ids=input_ids, attention_mask=attention_mask).logits

    def token_nll(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sentence summed NLL (nats) of tokens 1..T and the number of those tokens."""
        logits = self(input_ids, attention_mask)[:, :-1]
        tgt = input_ids[:, 1:]
        m = attention_mask[:, 1:].to(logits.dtype)
        nll = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")  # (B, T-1)
        return (nll * m).sum(1), m.sum(1)

    @torch.no_grad()
    def perplexity(self, texts: Sequence[str], batch_size: int = 256,
                   normalize: bool = True) -> Tensor:
        """Per-sentence perplexity ``(N,)`` (texts normalised first; longer ones are
        truncated to ``max_len`` tokens)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("perplexity needs a list of strings")
        was = self.training
        self.eval()
        if normalize:
            texts = [normalize_text(t) for t in texts]
        ids, _ = encode_texts(list(texts), self.config.max_len)
        out = []
        for i in range(0, len(ids), batch_size):
            x, m = pad_batch(ids[i:i + batch_size])
            s, n = self.token_nll(x.to(self.device), m.to(self.device))
            out.append(torch.exp(s / n.clamp_min(1)).float().cpu())
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0)

    def export(self, path: str | Path, meta: dict | None = None) -> None:
        export_model(self, path, asdict(self.config), meta or {})

    @classmethod
    def load(cls, path: str | Path) -> TextLM:
        sd, cfg, meta = import_model(path)
        model = cls(TextLMConfig(**cfg))
        model.load_state_dict(sd)
        model.meta = meta
        return model.eval()


@torch.no_grad()
def _corpus_ppl(lm: TextLM, ids: list[np.ndarray], batch_size: int = 256) -> float:
    """Corpus perplexity: exp(total NLL / total tokens)."""
    was = lm.training
    lm.eval()
    tot, n = 0.0, 0.0
    for i in range(0, len(ids), batch_size):
        x, m = pad_batch(ids[i:i + batch_size])
        s, c = lm.token_nll(x, m)
        tot += float(s.sum())
        n += float(c.sum())
    lm.train(was)
    return math.exp(tot / max(n, 1.0))


def train_text_lm(
    checkpoint: str | Path,
    *,
    config: TextLMConfig | None = None,
    steps: int = 6000,
    max_seconds: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 2e-3,
    warmup: int = 200,
    rt_fraction: float = 0.25,
    max_imdb: int | None = None,
    eval_every: int = 1000,
    save_every_s: float = 180.0,
    log: Callable[[str], None] | None = print,
) -> tuple[TextLM, dict]:
    """Train (or resume) the LM; returns ``(model, metrics)`` with the corpus perplexity
    of the Rotten Tomatoes test sentences (``test_ppl``). Batches mix ``rt_fraction``
    Rotten Tomatoes train sentences with IMDB train sentences; AdamW with warm-up and
    cosine decay; checkpoint every ``save_every_s`` s (atomic), resumable."""
    from cfwidgets.data.text import load_imdb_sentences, load_reviews

    say = log or (lambda s: None)
    torch.manual_seed(seed)
    ck = load_checkpoint(checkpoint)
    config = TextLMConfig(**ck["config"]) if ck is not None else (config or TextLMConfig())
    lm = TextLM(config)
    rt_ids, _ = encode_texts(load_reviews("train").texts, config.max_len)
    te_ids, _ = encode_texts(load_reviews("test").texts, config.max_len)
    im = load_imdb_sentences("train")
    if max_imdb is not None:
        im = im.subset(slice(0, int(max_imdb)))
    im_ids, _ = encode_texts(im.texts, config.max_len)
    n_rt = max(1, int(batch_size * rt_fraction))
    rt_s = LengthBucketSampler(np.array([len(s) for s in rt_ids]), n_rt, seed=seed + 1)
    im_s = LengthBucketSampler(np.array([len(s) for s in im_ids]), batch_size - n_rt,
                               seed=seed + 2)
    opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    resumable = ResumableRun(checkpoint, ck, lm, opt, {"rt_sampler": rt_s, "im_sampler": im_s},
                             {"step": 0, "elapsed": 0.0, "history": []}, {"config": asdict(config)},
                             tag="lm", say=say)
    state, elapsed, save, t0 = resumable.state, resumable.elapsed, resumable.save, resumable.t0

    lm.train()
    run = None
    while state["step"] < steps:
        if max_seconds is not None and time.time() - t0 > max_seconds:
            save()
            say(f"[lm] stopped after max_seconds at step {state['step']} (resumable)")
            lm.eval()
            return lm, {}
        s = state["step"]
        cur = lr * min(1.0, (s + 1) / warmup) * (0.05 + 0.95 * 0.5 * (
            1 + math.cos(math.pi * s / max(steps, 1))))
        for g in opt.param_groups:
            g["lr"] = cur
        x, m = pad_batch([rt_ids[i] for i in next(rt_s).tolist()] +
                         [im_ids[i] for i in next(im_s).tolist()])
        tot, n = lm.token_nll(x, m)
        loss = tot.sum() / n.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
        if state["step"] % 100 == 0:
            state["history"].append({"step": state["step"], "loss": run, "elapsed": elapsed()})
        if eval_every and state["step"] % eval_every == 0:
            ppl = _corpus_ppl(lm, te_ids)
            state["history"][-1]["test_ppl"] = ppl
            say(f"[lm] step {state['step']} loss {run:.3f} RT test ppl {ppl:.1f} "
                f"({elapsed():.0f} s)")
            save()
        else:
            resumable.save_if_due(save_every_s)
    metrics = state.get("metrics")
    if not metrics or metrics.get("steps") != state["step"]:
        metrics = {"test_ppl": _corpus_ppl(lm, te_ids), "steps": state["step"],
                   "params": sum(p.numel() for p in lm.parameters()), "seconds": elapsed(),
                   "seed": seed}
        state["metrics"] = metrics
        save()
    lm.eval()
    return lm, metrics

"""Training and evaluation of the text generator (nanoGPT's train.py): every training
option in one :class:`TrainConfig`, one function that trains (resumable, checkpointed),
one that measures. In the zoo layer because it scores with :mod:`cfwidgets.metrics`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.text import BOS_ID, EOS_ID, MASK_ID, PAD_ID, text_attributes
from ..metrics.text import repetition
from ..models.text_classifier import (
    LengthBucketSampler,
    ResumableRun,
    TextClassifier,
    load_checkpoint,
    pad_batch,
)
from ..models.text_generator import TextGenerator, TextGeneratorConfig, gumbel_softmax, token_mask
from ..models.text_generator_data import GeneratorCorpus, make_batch, pseudo_sentiment

__all__ = ["TrainConfig", "train_text_generator", "evaluate_text_generator", "reconstruction_step",
           "consistency_step"]




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




@dataclass(frozen=True)
class TrainConfig:
    """Every option of :func:`train_text_generator` (defaults: the function's historic
    defaults; the zoo recipe ``reviews/gen`` sets its own). Invalid values raise
    ``ValueError`` when the config is made, before any data is loaded.

    Each step: a batch of sentences (a share ``rt_fraction`` from the Rotten Tomatoes
    train split, the rest from the IMDB train sentences), attribute words masked in the
    source (``p_attr_mask`` for sentiment / negation / intensifier words, plus
    ``p_token_mask`` random tokens), Gaussian noise ``latent_noise`` on ``z``, decoder
    inputs dropped to ``[MASK]`` with ``p_word_dropout``; loss = reconstruction
    cross-entropy + ``consistency_weight`` x attribute consistency (every
    ``consistency_every`` steps from step ``consistency_start``; the frozen classifier
    judges Gumbel-softmax decodes (``consistency_tau``) made with the flipped sentiment
    code, teacher-forced on the source (``consistency_prefix="source"``) or the model's
    greedy decode (``"greedy"``)). With the source prefix, ``copy_weight`` x cross-entropy
    keeps the flipped decode's *unmasked* tokens (and its ``[EOS]``) equal to the source, so
    only the masked attribute words change (without it, measured: the flipped code sprayed
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
    every word position stays open to it. AdamW (``lr``), linear warm-up (``warmup``
    steps) then cosine decay to 10% over ``steps``.

    Sentiment code: gold labels for Rotten Tomatoes sentences; for IMDB sentences the
    classifier's P(positive) (``sentiment_source="classifier"``, computed once and cached)
    or the weak review label (``"weak"``). ``eval_every`` / ``eval_n``: evaluation interval
    and size (0 = none); ``log_every``: history interval; ``save_every_s``: checkpoint
    interval; ``max_seconds`` caps one call (resume later with the same options);
    ``max_imdb`` keeps only the first IMDB sentences (smoke tests).
    """

    steps: int = 20000
    max_seconds: float | None = None
    seed: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 300
    p_attr_mask: tuple[float, float, float] = (0.9, 0.5, 0.5)
    p_token_mask: float = 0.1
    p_word_dropout: float = 0.1
    latent_noise: float = 0.1
    consistency_weight: float = 0.5
    consistency_start: int = 500
    consistency_every: int = 2
    consistency_tau: float = 0.5
    consistency_prefix: str = "source"
    copy_weight: float = 1.0
    eos_weight: float = 0.0
    consistency_positions: str = "all"
    protect_punctuation: bool = False
    rt_fraction: float = 0.25
    sentiment_source: str = "classifier"
    eval_every: int = 1000
    eval_n: int = 400
    log_every: int = 100
    max_imdb: int | None = None
    save_every_s: float = 180.0

    def __post_init__(self):
        object.__setattr__(self, "p_attr_mask", tuple(float(p) for p in self.p_attr_mask))
        for name, allowed in (("consistency_positions", ("all", "masked")),
                              ("consistency_prefix", ("source", "greedy")),
                              ("sentiment_source", ("classifier", "weak"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if len(self.p_attr_mask) != 3:
            raise ValueError("p_attr_mask needs 3 rates (sentiment, negation, intensifier words), "
                             f"got {self.p_attr_mask}")
        if not 0 < self.rt_fraction <= 1 or self.batch_size < 2:
            raise ValueError(f"need 0 < rt_fraction <= 1 and batch_size >= 2, got {self.rt_fraction}, "
                             f"{self.batch_size}")

    def hparams(self) -> dict:
        """What a checkpoint records as its training recipe (the options that shape the
        weights; not the logging / time ones)."""
        skip = ("max_seconds", "eval_every", "eval_n", "log_every", "save_every_s")
        hp = {k: v for k, v in asdict(self).items() if k not in skip}
        hp["p_attr_mask"] = list(self.p_attr_mask)
        return hp

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to 10% of ``lr`` at ``steps``."""
        return self.lr * min(1.0, (step + 1) / self.warmup) * (0.1 + 0.9 * 0.5 * (
            1 + math.cos(math.pi * min(1.0, step / max(self.steps, 1)))))

    def consistency_due(self, step: int) -> bool:
        return (self.consistency_weight > 0 and step >= self.consistency_start
                and step % max(self.consistency_every, 1) == 0)


def reconstruction_step(gen: TextGenerator, cfg: TrainConfig, src, sm, tgt, tm, a):
    """Encode the masked source, noise the latent, drop decoder inputs, decode: the
    reconstruction cross-entropy. Returns ``(loss, stats, z, zm, real)`` (``real``:
    ``(B, T-1)`` target positions that are real tokens)."""
    z, zm = gen.encode(src, sm)
    if cfg.latent_noise > 0:
        z = z + cfg.latent_noise * torch.randn_like(z)
    dec_in = tgt[:, :-1].clone()
    if cfg.p_word_dropout > 0:
        drop = (torch.rand(dec_in.shape) < cfg.p_word_dropout) & (dec_in > 4)
        dec_in[drop] = MASK_ID
    logits = gen.decode_logits(z, a, dec_in, zm)
    real = tm[:, 1:].bool()
    rec_loss = F.cross_entropy(logits[real], tgt[:, 1:][real])
    stats = {"rec": rec_loss.item(),
             "acc": float((logits.argmax(-1)[real] == tgt[:, 1:][real]).float().mean())}
    return rec_loss, stats, z, zm, real


def consistency_step(gen: TextGenerator, clf: TextClassifier, cfg: TrainConfig, *, z, zm, a, tgt, tm,
                     real, kept, attr_slot, punct, gumbel_gen) -> tuple[Tensor, dict, Tensor]:
    """The attribute-consistency term (Hu et al. 2017) with its guards, on decodes made
    with the flipped sentiment code. Returns ``(loss, stats, probs)``: the term already
    weighted (consistency + copy + eos), its parts, and the ``(B, T, V)`` soft sentence
    the classifier read."""
    vocab = gen.config.vocab_size
    a2 = a.clone()
    a2[:, 0] = (a[:, 0] < 0.5).float()
    loss = torch.zeros(())
    stats: dict[str, float] = {}
    if cfg.consistency_prefix == "greedy":
        gen.eval()
        prefix = gen.generate(z.detach(), a2, zm)
        gen.train()
        probs, pmask = gen.soft_decode(z, a2, zm, tau=cfg.consistency_tau, gumbel=True,
                                       prefix=prefix, generator=gumbel_gen)
    else:  # teacher-forced on the source sentence
        logits2 = gen.decode_logits(z, a2, tgt[:, :-1], zm)  # (B, T-1, V)
        y = gumbel_softmax(logits2, cfg.consistency_tau, True, gumbel_gen)
        # positions where the classifier reads the source's own token
        fixed = torch.zeros_like(real)
        if cfg.consistency_positions == "masked":
            # everywhere except the masked attribute words' tokens: only they can carry the
            # flipped code
            fixed = ~(attr_slot[:, 1:] & real)
        if cfg.eos_weight > 0:
            # the sentence ends where the source ends, whatever the code says (and, with
            # protect_punctuation, keeps its punctuation)
            at_eos = (tgt[:, 1:] == EOS_ID) & real
            if cfg.protect_punctuation:
                at_eos = at_eos | (punct[tgt[:, 1:]] & real)
            eos_loss = F.cross_entropy(logits2[at_eos], tgt[:, 1:][at_eos])
            loss = loss + cfg.eos_weight * eos_loss
            stats["eos"] = eos_loss.item()
            fixed = fixed | at_eos
        if cfg.consistency_positions == "masked" or cfg.eos_weight > 0:
            y = torch.where(fixed.unsqueeze(-1), F.one_hot(tgt[:, 1:], vocab).to(y.dtype), y)
        probs = torch.cat([F.one_hot(tgt[:, :1], vocab).to(y.dtype), y], 1)
        pmask = tm
        if cfg.copy_weight > 0:
            # keep the unmasked (copied) tokens, [EOS] included, under the flipped code:
            # only the masked attribute words are free to change
            cp = kept[:, 1:].bool() & real
            copy_loss = F.cross_entropy(logits2[cp], tgt[:, 1:][cp])
            loss = loss + cfg.copy_weight * copy_loss
            stats["copy"] = copy_loss.item()
    cl = clf.forward_soft(probs[:, : clf.config.max_len], pmask[:, : clf.config.max_len])
    con_loss = F.cross_entropy(cl, a2[:, 0].long())
    loss = loss + cfg.consistency_weight * con_loss
    stats["con"] = con_loss.item()
    stats["con_acc"] = float((cl.argmax(1) == a2[:, 0].long()).float().mean())
    return loss, stats, probs


def punctuation_tokens(tokenizer, vocab_size: int) -> Tensor:
    """``(V,)`` bool: punctuation-only tokens (no letter or digit), special tokens excluded
    (what ``protect_punctuation`` keeps)."""
    punct = token_mask(tokenizer, vocab_size, lambda tok: not any(c.isalnum() for c in tok))
    punct[[PAD_ID, 1, BOS_ID, EOS_ID, MASK_ID]] = False
    return punct


def train_text_generator(
    checkpoint: str | Path,
    classifier: TextClassifier | str | Path | None,
    *,
    config: TextGeneratorConfig | None = None,
    train: TrainConfig | None = None,
    log: Callable[[str], None] | None = print,
    **options,
) -> tuple[TextGenerator, dict]:
    """Train (or resume) the conditional generator; returns ``(model, metrics)``.

    ``config``: the model's size; ``train``: the training options (:class:`TrainConfig`),
    any of which may also be given by keyword (``steps=60`` overrides ``train.steps``).
    Resumes from ``checkpoint``; saves every ``save_every_s`` seconds (atomically), after
    evaluations, and at the end.
    """
    from cfwidgets.data.text import load_imdb_sentences, load_reviews

    cfg = replace(train or TrainConfig(), **options)
    say = log or (lambda s: None)
    checkpoint = Path(checkpoint)
    torch.manual_seed(cfg.seed)
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
    if cfg.consistency_weight > 0 and clf is None:
        raise ValueError("consistency_weight > 0 needs a classifier (or set it to 0)")

    rt = load_reviews("train")
    rt_test = load_reviews("test")
    im = load_imdb_sentences("train")
    if cfg.max_imdb is not None:
        im = im.subset(slice(0, int(cfg.max_imdb)))
    if cfg.sentiment_source == "classifier" and clf is not None:
        cache = (checkpoint.parent / "imdb_train_pseudo_sentiment.npy"
                 if cfg.max_imdb is None else None)
        im_sent = pseudo_sentiment(clf, im.texts, cache, say)
    else:  # the weak review labels (or no classifier to score with)
        im_sent = im.labels.astype(np.float32)
    im_attr = text_attributes(im.texts, im_sent)
    rt_corpus = GeneratorCorpus(rt.texts, rt.attributes, masker, config.max_len)
    im_corpus = GeneratorCorpus(im.texts, im_attr, masker, config.max_len)
    say(f"[gen] corpus: {len(rt_corpus)} RT + {len(im_corpus)} IMDB sentences "
        f"(<= {config.max_len} tokens); params {sum(p.numel() for p in gen.parameters())}")

    opt = torch.optim.AdamW(gen.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.98))
    n_rt = max(1, int(cfg.batch_size * cfg.rt_fraction))
    rt_sampler = LengthBucketSampler(rt_corpus.lengths, n_rt, seed=cfg.seed + 1)
    im_sampler = LengthBucketSampler(im_corpus.lengths, cfg.batch_size - n_rt, seed=cfg.seed + 2)
    hp = cfg.hparams()
    resumable = ResumableRun(checkpoint, ck, gen, opt,
                             {"rt_sampler": rt_sampler, "im_sampler": im_sampler},
                             {"step": 0, "elapsed": 0.0, "history": [], "evals": []},
                             {"config": asdict(config), "hparams": hp}, tag="gen", say=say)
    state, elapsed, save, t0 = resumable.state, resumable.elapsed, resumable.save, resumable.t0
    rng = np.random.default_rng(cfg.seed * 1000 + state["step"])
    gumbel_gen = torch.Generator().manual_seed(cfg.seed + 3 + state["step"])

    def run_eval():
        if cfg.eval_n <= 0:
            return {"step": state["step"], "elapsed": elapsed()}
        ev = evaluate_text_generator(gen, rt_test.texts[:cfg.eval_n], rt_test.labels[:cfg.eval_n], clf)
        n_im = min(200, cfg.eval_n)
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

    punct = punctuation_tokens(masker.tok, config.vocab_size)
    gen.train()
    run = {}
    out_of_time = False
    while state["step"] < cfg.steps:
        if cfg.max_seconds is not None and time.time() - t0 > cfg.max_seconds:
            out_of_time = True
            break
        s = state["step"]
        cur_lr = cfg.lr_at(s)
        for g in opt.param_groups:
            g["lr"] = cur_lr
        t_step = time.time()
        b1 = make_batch(rt_corpus, next(rt_sampler).tolist(), masker, rng, cfg.p_attr_mask, cfg.p_token_mask)
        b2 = make_batch(im_corpus, next(im_sampler).tolist(), masker, rng, cfg.p_attr_mask, cfg.p_token_mask)
        src, sm = pad_batch(b1[0] + b2[0])
        tgt, tm = pad_batch(b1[1] + b2[1])
        pos_kind, _ = pad_batch([(k + 1).astype(np.int32) for k in b1[2] + b2[2]])  # 0 = pad
        a = torch.cat([b1[3], b2[3]])
        loss, stats, z, zm, real = reconstruction_step(gen, cfg, src, sm, tgt, tm, a)
        if cfg.consistency_due(s):
            con, con_stats, _ = consistency_step(
                gen, clf, cfg, z=z, zm=zm, a=a, tgt=tgt, tm=tm, real=real,
                kept=pos_kind == 2,  # copied tokens
                attr_slot=pos_kind == 1,  # tokens of masked attribute words
                punct=punct, gumbel_gen=gumbel_gen)
            loss = loss + con
            stats.update(con_stats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        opt.step()
        stats["sec"] = time.time() - t_step
        state["step"] += 1
        for k, v in stats.items():
            run[k] = v if k not in run else 0.98 * run[k] + 0.02 * v
        if state["step"] % max(cfg.log_every, 1) == 0:
            rec = {"step": state["step"], "elapsed": elapsed(), "lr": cur_lr, **run}
            state["history"].append(rec)
            say("[gen] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in rec.items()))
        if cfg.eval_every and state["step"] % cfg.eval_every == 0:
            run_eval()
            gen.train()
            save()
        else:
            resumable.save_if_due(cfg.save_every_s)
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

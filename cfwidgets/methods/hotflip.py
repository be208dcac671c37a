"""HotFlip-style word substitution: the text baseline (the analogue of the pixel baseline).

Ebrahimi, Rao, Lowd & Dou, "HotFlip: White-Box Adversarial Examples for Text
Classification", ACL 2018, arXiv 1712.06751.

**Idea** [paper]: represent the text by one-hot vectors; the change of the loss when the
token at position ``i`` flips from ``a`` to ``b`` is estimated to first order by the
directional derivative along ``e_b - e_a``::

    delta L(i, a -> b) ~= (e_b - e_a)^T  dL/de_i                                      (1)

where ``e`` are rows of the embedding matrix and ``dL/de_i`` the gradient of the loss
with respect to the embedding at ``i`` (one backward pass scores every swap). A beam
search over a few flips finds a small edit that changes the label [paper: "beam search"
over flips; budget as a fraction of the length; character-level flips in the paper, word
level as an extension].

**Here** (choices): word-level flips in the *classifier's* vocabulary: only tokens that
form a whole word (one token) are swapped, and only for whole-word tokens (``▁word`` in
the shared BPE, no ``##`` pieces in WordPiece), so the edit is a word substitution; the
loss is cross-entropy to the target class. At each flip, estimate (1) for all allowed
(position, token) pairs, keep the ``per_position`` best tokens per position and the
``candidates`` best pairs per hypothesis, evaluate those *exactly* (one forward pass each,
batched), and keep the ``beam`` best hypotheses per sentence. A sentence stops at the
first flip depth where a hypothesis reaches ``p_t >= confidence``; the verdict is
re-scored on the decoded text. Punctuation, special tokens and ``excluded_words`` are
never flipped in or out; a position is flipped at most once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import knob
from ..metrics.text import word_edits
from ..protocols import StepState
from .base import RunOutput
from .text_base import TextCounterfactualMethod, cut_to_fit

__all__ = ["HotFlip"]


class HotFlip(TextCounterfactualMethod):
    """Gradient-guided word substitution (HotFlip-like) in the classifier's vocabulary.

    Works with every text classifier adapter (the zoo transformer, MiniLM + head, a HF
    model): it needs only input embeddings and gradients.

    Examples::

        from cfwidgets import zoo
        from cfwidgets.methods import HotFlip
        hf = HotFlip(zoo.load("reviews/clf"))
        res = hf.explain(["the jokes fall flat ."], target="positive", max_flips=3)
        res.x_cf, res.meta["per_row_flips"]
    """

    name = "hotflip"
    title = "HotFlip (word substitution)"
    paper = ("Ebrahimi, Rao, Lowd & Dou, HotFlip: White-Box Adversarial Examples for Text "
             "Classification, ACL 2018, arXiv 1712.06751")

    @dataclass(frozen=True)
    class Config:
        max_flips: int = knob(5, 1, 20, "The most word substitutions per sentence (the step "
                              "budget: one flip per step).")
        beam: int = knob(3, 1, 10, "Hypotheses kept per sentence after each flip (beam search).")
        candidates: int = knob(40, 1, 400, "Swaps per hypothesis and flip scored exactly (the best "
                               "first-order estimates).")
        per_position: int = knob(5, 1, 50, "At most this many replacement tokens per position "
                                 "among the candidates.")
        confidence: float = knob(0.5, 0.5, 0.999, "Stop a sentence once a hypothesis reaches this "
                                 "target probability (0.5 = as soon as the label flips, for 2 classes).")
        skip_punctuation: bool = knob(True, doc="Never flip punctuation (or special tokens) in "
                                      "or out.")

    def __init__(self, classifier, /, *, tokenizer=None, excluded_words: Sequence[str] = (),
                 device=None) -> None:
        super().__init__(classifier, device=device, tokenizer=tokenizer)
        self.excluded_words = tuple(excluded_words)
        self._excluded_ids = self._word_ids(self.excluded_words)

    @classmethod
    def from_zoo(cls, dataset: str = "reviews", *, device="auto", classifier: str = "clf",
                 **kwargs) -> HotFlip:
        """``classifier``: ``"clf"`` (the zoo transformer) or ``"minilm"`` (MiniLM + head)."""
        from .. import zoo

        if dataset != "reviews":
            raise ValueError(f"HotFlip.from_zoo knows 'reviews', got {dataset!r}.")
        return cls(zoo.load(f"reviews/{classifier}", device=device), **kwargs)

    def fit_inputs(self, x: Any, cfg: Any = None) -> tuple[list[str], list[int]]:
        """Validate the sentences; cut those longer than the classifier's ``max_len`` tokens
        to the words that fit, with a ``UserWarning`` (the classifier would only read that
        much; the result's ``x`` holds the cut text so the diff is fair)."""
        texts, _ = super().fit_inputs(x, cfg)
        clf = self.classifier_adapter

        def too_long(t: str) -> bool:
            return len(clf.tokenizer(t, truncation=False)["input_ids"]) > clf.max_len

        long = [i for i, t in enumerate(texts) if too_long(t)]
        for i in long:
            texts[i] = cut_to_fit(texts[i], too_long)
        if long:
            warnings.warn(f"sentence(s) {long[:10]} exceed the classifier's {clf.max_len} tokens and "
                          f"were cut to the words that fit; the result's x holds the cut text.",
                          UserWarning, stacklevel=3)
        return texts, long

    def _word_ids(self, words: Sequence[str]) -> Tensor:
        clf = self.classifier_adapter
        vocab = clf.tokenizer.get_vocab()
        ids = []
        for w in words:
            for form in (w, "\u2581" + w, "\u0120" + w):
                if form in vocab:
                    ids.append(vocab[form])
        return torch.tensor(sorted(set(ids)), dtype=torch.long)

    # ------------------------------------------------------------------ masks
    def _allowed_tokens(self, cfg) -> Tensor:
        """``(V,)`` bool: tokens that may be flipped in."""
        clf = self.classifier_adapter
        ok = clf.word_start.clone()
        if cfg.skip_punctuation:
            ok &= ~clf.punctuation
        for i in clf.special_ids:
            if 0 <= i < ok.numel():
                ok[i] = False
        unk = getattr(clf.tokenizer, "unk_token_id", None)
        mask_id = getattr(clf.tokenizer, "mask_token_id", None)
        for i in (unk, mask_id):
            if i is not None and 0 <= i < ok.numel():
                ok[i] = False
        if self._excluded_ids.numel():
            ok[self._excluded_ids] = False
        return ok

    def _allowed_positions(self, ids: list[int], flipped: set[int], cfg, allowed_tok: Tensor) -> list[int]:
        """Positions holding a one-token word that may be flipped out."""
        clf = self.classifier_adapter
        start = clf.word_start
        special = set(clf.special_ids)
        punct = clf.punctuation
        out = []
        for i, t in enumerate(ids):
            if t in special or i in flipped or not bool(start[t]):
                continue
            nxt = ids[i + 1] if i + 1 < len(ids) else None
            if nxt is not None and nxt not in special and not bool(start[nxt]):
                continue  # the word continues: not a one-token word
            if cfg.skip_punctuation and bool(punct[t]):
                continue
            if self._excluded_ids.numel() and bool((self._excluded_ids == t).any()):
                continue
            out.append(i)
        return out

    # ------------------------------------------------------------------ the loop
    def _forward(self, seqs: list[list[int]]) -> Tensor:
        from ..models.text_adapters import _pad

        clf = self.classifier_adapter
        pad = getattr(clf.tokenizer, "pad_token_id", 0) or 0
        ids, mask = _pad(seqs, pad, clf.device)
        return clf.forward_ids(ids, mask)

    def _explain(self, texts, target: Tensor, cfg: Any, *, probs, callback, generator) -> RunOutput:
        clf = self.classifier_adapter
        dev = clf.device
        b = len(texts)
        ids0, mask0 = clf.tokenize(texts)
        seqs0 = [r[: int(m.sum())].tolist() for r, m in zip(ids0.cpu(), mask0.cpu(), strict=True)]
        allowed_tok = self._allowed_tokens(cfg).to(dev)
        E = clf.embedding_matrix  # (V, d)
        tgt = target.tolist()
        # per row: list of hypotheses (ids, flipped positions, flips list, loss)
        with torch.no_grad():
            l0 = F.cross_entropy(self._forward(seqs0).float(), target, reduction="none")
        beams: list[list[dict]] = [[{"ids": s, "flipped": set(), "flips": [], "loss": float(l0[r])}]
                                   for r, s in enumerate(seqs0)]
        best = [bm[0] for bm in beams]
        best_probs = probs.clone()
        done = torch.zeros(b, dtype=torch.bool)
        nan_seen = torch.zeros(b, dtype=torch.bool)  # rows that met a NaN/inf candidate score
        nonfinite = torch.zeros(b, dtype=torch.bool)  # rows ended because only such were left
        steps_used = torch.full((b,), cfg.max_flips, dtype=torch.long)
        trajectory = [list(texts)]
        traj_steps = [0]
        loss_curve: list[float] = [float(l0.mean())]
        stopped = False
        for depth in range(1, cfg.max_flips + 1):
            active = [r for r in range(b) if not done[r]]
            if not active:
                break
            hyps = [(r, h) for r in active for h in beams[r]]
            seqs = [h["ids"] for _, h in hyps]
            # ---- gradient of the loss w.r.t. the input embeddings (one backward pass)
            from ..models.text_adapters import _pad

            pad = getattr(clf.tokenizer, "pad_token_id", 0) or 0
            ids, mask = _pad(seqs, pad, dev)
            emb = E[ids].detach().requires_grad_(True)  # (H, T, d)
            with torch.enable_grad():
                logits = clf.forward_embeds(emb, mask)
                tgt_h = torch.tensor([tgt[r] for r, _ in hyps], device=dev)
                loss = F.cross_entropy(logits.float(), tgt_h, reduction="sum")
                (grad,) = torch.autograd.grad(loss, emb)
            # eq. (1): delta[h, i, w] = g_i . e_w - g_i . e_{a_i}
            with torch.no_grad():
                cand_seqs, owners = [], []
                for k, (r, h) in enumerate(hyps):
                    pos = self._allowed_positions(h["ids"], h["flipped"], cfg, allowed_tok)
                    if not pos:
                        continue
                    g = grad[k, pos].float()  # (P, d)
                    own = (g * E[ids[k, pos]].float()).sum(-1, keepdim=True)  # (P, 1)
                    d = g @ E.float().T - own  # (P, V)
                    d[:, ~allowed_tok] = float("inf")
                    d[torch.arange(len(pos)), ids[k, pos]] = float("inf")  # not the same token
                    top = d.topk(min(cfg.per_position, d.shape[1]), dim=1, largest=False)
                    flat_v = top.values.flatten()
                    n = min(cfg.candidates, int(torch.isfinite(flat_v).sum()))
                    if n == 0:
                        continue
                    pick = flat_v.topk(n, largest=False).indices
                    for j in pick.tolist():
                        p_i, c_i = divmod(j, top.indices.shape[1])
                        i, w = pos[p_i], int(top.indices[p_i, c_i])
                        new = list(h["ids"])
                        old = new[i]
                        new[i] = w
                        cand_seqs.append(new)
                        owners.append((r, h, i, old, w))
                if cand_seqs:
                    lg = torch.cat([self._forward(cand_seqs[s:s + 256]).float()
                                    for s in range(0, len(cand_seqs), 256)])
                    pc = lg.softmax(-1)
                    tg = torch.tensor([tgt[o[0]] for o in owners], device=dev)
                    lc = F.cross_entropy(lg, tg, reduction="none")
            # ---- new beams: the best exact losses per sentence (distinct sequences)
            per_row: dict[int, list] = {r: [] for r in active}
            for k, (r, h, i, old, w) in enumerate(owners if cand_seqs else []):
                lval = float(lc[k])
                if not math.isfinite(lval):  # guard: a NaN/inf score never enters a beam
                    nan_seen[r] = True
                    continue
                per_row[r].append((lval, k, h, i, old, w))
            for r in active:
                cands = sorted(per_row[r], key=lambda c: c[0])
                seen, nb = set(), []
                for lval, k, h, i, old, w in cands:
                    key = tuple(cand_seqs[k])
                    if key in seen:
                        continue
                    seen.add(key)
                    nb.append({"ids": cand_seqs[k], "flipped": h["flipped"] | {i},
                               "flips": h["flips"] + [(i, old, w)], "loss": lval,
                               "p": pc[k], "pt": float(pc[k, tgt[r]])})
                    if len(nb) >= cfg.beam:
                        break
                if not nb:  # nothing left to flip: the sentence ends here
                    nonfinite[r] = bool(nan_seen[r])
                    done[r] = False
                    steps_used[r] = depth - 1
                    beams[r] = []
                    continue
                beams[r] = nb
                hit = [h for h in nb if h["pt"] >= cfg.confidence]
                top_h = max(hit, key=lambda h: h["pt"]) if hit else nb[0]
                best[r] = top_h
                best_probs[r] = top_h["p"]
                if hit:
                    done[r] = True
                    steps_used[r] = depth
            texts_now = [clf.decode_ids([h["ids"]])[0] for h in best]
            trajectory.append(texts_now)
            traj_steps.append(depth)
            cur_loss = torch.tensor([h["loss"] for h in best])
            loss_curve.append(float(cur_loss.mean()))
            if callback is not None:
                state = StepState(step=depth - 1, total=cfg.max_flips, x_cf=texts_now,
                                  probs=best_probs.detach(), target=target, done=done.clone().to(dev),
                                  losses={"loss": cur_loss, "class": cur_loss},
                                  extra={"flips": [len(h["flips"]) for h in best]})
                if callback(depth - 1, state):
                    stopped = True
                    # rows still searching made `depth` flips, not the budget
                    for r in active:
                        if beams[r] and not done[r]:
                            steps_used[r] = depth
                    break
            # sentences with nothing left to flip are finished (unsuccessfully)
            for r in range(b):
                if not beams[r] and not done[r]:
                    done[r] = True
        x_cf = [clf.decode_ids([h["ids"]])[0] for h in best]
        probs_cf = self.score_texts(x_cf)  # the verdict on the hard text
        flips = []
        for h in best:
            flips.append([{"position": i, "from": clf.decode_ids([[o]])[0], "to": clf.decode_ids([[w]])[0]}
                          for i, o, w in h["flips"]])
        meta = {
            "search": "first-order estimate (HotFlip, eq. 1) + beam search over word substitutions "
                      "in the classifier's vocabulary",
            "per_row_flips": flips,
            "num_flips": torch.tensor([len(h["flips"]) for h in best]),
            "per_row_edits": [word_edits(s, c) for s, c in zip(texts, x_cf, strict=True)],
            "excluded_words": list(self.excluded_words),
        }
        return RunOutput(x_cf=x_cf, probs_cf=probs_cf, trajectory=trajectory,
                         trajectory_steps=traj_steps, losses={"loss": loss_curve, "class": loss_curve},
                         steps=steps_used, stopped=stopped, meta=meta,
                         nonfinite=nonfinite)

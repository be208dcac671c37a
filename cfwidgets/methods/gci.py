"""GCI: Generative Counterfactual Introspection. Liu, Kailkhura, Loveland & Han,
"Generative Counterfactual Introspection for Explainable Deep Learning", IEEE GlobalSIP
2019, arXiv 1907.03077.

**Idea** [paper, abstract]: a generative model performs salient, semantic *edits* of the
input; the introspection question is "what meaningful change would make the classifier
answer ``t``?". The answer is an edited image plus the list of attribute changes;
aggregated over many queries (:func:`cfwidgets.analysis.rank_attributes`) it shows what
the classifier relies on. Shown on MNIST and CelebA.

**Editor** [unverified: the paper's method section could not be read offline; a search of
the stored pages (arXiv id + method phrases) found only abstracts]. The paper uses an attribute-
conditioned GAN editor ``G(x, a')`` (StarGAN/AttGAN family). Here the editor is the zoo's
conditional VAE (:class:`cfwidgets.models.ConditionalVAE`), ``G(x, a') = g(e(x), a')``
with ``a0 = r(x)``: a stand-in trained in minutes on CPU (see that module for how it is
made to obey ``a``). Any generator with the conditional-generator protocol works.

**Objective** [unverified form, METHODS.md section 2]: only the attribute vector moves::

    min_a'  L_cls(f(G(x, a')), t) + lambda * sum_i w_i |a'_i - a_i|           (1)

``L_cls`` cross-entropy (or the margin hinge), ``lambda`` = ``sparsity_weight`` (default
0.5, METHODS.md says 1: with the stand-in VAE's blurrier decodes, lambda = 1 left 18% of 40
held-out digits at the equilibrium of the two terms before they flipped, 82% vs 92% flip
rate; lambda = 0.3 flips no more and changes more attributes), ``w_i`` =
``attribute_weights`` (0 = free; ``>= 100`` = locked: the attribute is not optimised).
The L1 makes the edit sparse: few attributes move. Units of ``|a'_i - a_i|``: standard
deviations for continuous attributes (the generator's z-scoring), probability mass moved
(total variation, 0..1) for a categorical attribute such as the digit.

**Schedule** (choose, since the paper's is unverified): Adam on ``a'`` (lr 0.05), at most
``steps`` updates, each query stops as soon as ``p_t >= confidence`` (shared loop).
Range constraints by projection after each step (choose): continuous attributes are
clipped to the generator's bounds (the data range), categorical blocks projected onto the
probability simplex. METHODS.md suggests a sigmoid/softmax parameterisation for
binary/categorical attributes; projection is used instead because Adam on logits needs
tens of steps to leave a saturated one-hot, while a projected step moves probability
mass linearly and keeps the L1 cost of (1) meaningful.

**Restarts** [METHODS.md: "restarts from a plus small noise"]: ``restarts`` > 1 runs
copies; per query the valid copy with the smallest cost (1) wins. Copy 2 starts with every
categorical attribute at the uniform mixture (choose: on the relaxed simplex the
classifier's gradient is nearly flat at a one-hot start, because a faint second template
barely changes the image; measured on the shapes: from the query's one-hot shape 33% of
the unbiased classifier's decisions did not flip although the decoded target shape is
classified as the target 90% of the time); copies 3.. start from ``a0`` plus Gaussian
noise (``restart_noise`` std; the same noise for every query, so a batch equals one-by-one).

The result's ``meta`` carries the attribute values before and after by name in natural
units (``attributes_before`` / ``attributes_after`` / ``attribute_deltas``), changes in
comparable units (``attribute_changes``), readable lines (``per_row_changes``), the
latent ``z0``, ``a0`` and ``a_cf``, the attribute path (``a_path``, one row per
trajectory snapshot) and the reconstruction ``x_rec = G(x, a0)`` with its probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import knob
from ..models.conditional import LOCK_WEIGHT, check_conditional_generator, spec_of
from ..objectives import class_loss
from ..protocols import StepState
from .base import CounterfactualMethod, Recorder, RunOutput

__all__ = ["GCI"]


def _uniform_categoricals(spec, a: Tensor) -> Tensor:
    """``a`` with every categorical block replaced by the uniform distribution."""
    out = a.clone()
    for k, sl in zip(spec.kinds, spec.slices, strict=True):
        if k == "categorical":
            out[:, sl] = 1.0 / (sl.stop - sl.start)
    return out


class GCI(CounterfactualMethod):
    """Generative Counterfactual Introspection: the sparsest attribute edit that flips
    the classifier (Liu et al. 2019).

    Examples::

        from cfwidgets import data
        from cfwidgets.methods import GCI
        gci = GCI.from_zoo("mnist")                    # mnist/cnn + mnist/cvae
        x = data.load_mnist("test").x[:8]
        res = gci.explain(x, target=7, attribute_weights={"digit": 100})  # style only
        res.meta["per_row_changes"][0]   # e.g. ['slant +14.2 deg', 'thickness -0.6 px']
    """

    name = "gci"
    title = "GCI (attributes)"
    paper = ("Liu, Kailkhura, Loveland & Han, Generative Counterfactual Introspection for "
             "Explainable Deep Learning, IEEE GlobalSIP 2019, arXiv 1907.03077")

    @dataclass(frozen=True)
    class Config:
        steps: int = knob(300, 1, 2000, "Step budget: the most updates of the attributes per query.")
        lr: float = knob(0.05, 1e-3, 0.5, "Adam learning rate on the attribute vector "
                         "(standard deviations / probability per step).", log=True)
        confidence: float = knob(0.99, 0.5, 0.9999,
                                 "Stop a query once the target probability reaches this value.")
        sparsity_weight: float = knob(
            0.5, 0.0, 10.0, "lambda: weight of the L1 attribute change (eq. 1). Larger = fewer, "
            "smaller attribute changes (and fewer flips).")
        attribute_weights: tuple = knob(
            (), 0.0, LOCK_WEIGHT,
            "Cost of changing each attribute, one per generator attribute (() = all 1; a "
            "{name: weight} dict is accepted too). 0 = free, 100 = locked (not optimised).")
        restarts: int = knob(1, 1, 8, "Copies optimised from a0 + noise; the valid one with the "
                             "smallest attribute cost wins.")
        restart_noise: float = knob(0.5, 0.0, 3.0, "Std of the start noise of restarts 2..R "
                                    "(standard deviations / probability).")
        loss: str = knob("ce", doc="Class term: cross-entropy or the margin hinge.",
                         choices=("ce", "hinge"))
        kappa: float = knob(2.0, 0.0, 20.0, "Margin of the hinge class term (unused with 'ce').")
        record_every: int = knob(0, 0, 1000, "Keep a trajectory snapshot every this many steps "
                                 "(0 = about 25 snapshots over the budget).")

    def __init__(self, classifier, generator, /, *, device=None) -> None:
        check_conditional_generator(generator)
        super().__init__(classifier, device=device, generator=generator)
        gshape = getattr(generator, "input_shape", None)
        cshape = getattr(classifier, "input_shape", None)
        if gshape is not None and cshape is not None and tuple(gshape) != tuple(cshape):
            raise ValueError(f"the generator makes images of shape {tuple(gshape)} but the classifier "
                             f"expects {tuple(cshape)}.")

    @property
    def generator(self):
        return self.components["generator"]

    @property
    def attribute_spec(self):
        return spec_of(self.generator)

    @classmethod
    def from_zoo(cls, dataset: str = "mnist", *, device="auto", **kwargs) -> GCI:
        """``dataset``: ``"mnist"`` (mnist/cnn + mnist/cvae), ``"shapes"`` (shapes/cnn +
        shapes/cvae) or ``"shapes-biased"`` (shapes-biased/cnn + shapes/cvae)."""
        from .. import zoo

        gen = {"mnist": "mnist/cvae", "shapes": "shapes/cvae", "shapes-biased": "shapes/cvae"}
        if dataset not in gen:
            raise ValueError(f"GCI.from_zoo knows {sorted(gen)}, got {dataset!r}.")
        return cls(zoo.load(f"{dataset}/cnn", device=device), zoo.load(gen[dataset], device=device), **kwargs)

    def explain(self, x, target, config=None, *, callback=None, generator=None, **overrides):
        # a {name: weight} dict is turned into the tuple knob (one value per attribute)
        w = overrides.get("attribute_weights")
        if isinstance(w, Mapping):
            overrides["attribute_weights"] = tuple(self.attribute_spec.weights(dict(w)).tolist())
        if isinstance(config, Mapping) and isinstance(config.get("attribute_weights"), Mapping):
            config = dict(config, attribute_weights=tuple(
                self.attribute_spec.weights(dict(config["attribute_weights"])).tolist()))
        return super().explain(x, target, config, callback=callback, generator=generator, **overrides)

    # ------------------------------------------------------------------ the loop
    def _explain(self, x: Tensor, target: Tensor, cfg: Any, *, probs, callback, generator) -> RunOutput:
        gen = self.generator
        spec = spec_of(gen)
        dev = x.device
        weights = spec.weights(cfg.attribute_weights).to(dev)  # (A,)
        locked = weights >= LOCK_WEIGHT
        free_cols = spec.column_mask((~locked).float())  # (dim,)
        b, r = x.shape[0], cfg.restarts
        with torch.no_grad():
            a0 = spec.project(gen.attributes(x))  # (B, dim)
            z0 = gen.encode(x)  # (B, Dz), fixed: GCI edits attributes only
            x_rec = gen.decode(z0, a0)
            probs_rec = self.classifier(x_rec).softmax(-1)
        # restarts: copy r starts at a0 + noise_r (noise shared by all queries)
        noise = torch.randn(r, spec.dim, generator=generator) * cfg.restart_noise
        noise[0] = 0
        a0r = a0.repeat(r, 1)  # (R*B, dim), copy k = rows k*B .. (k+1)*B
        z0r = z0.repeat(r, 1)
        tr = target.repeat(r)
        with torch.no_grad():
            start = spec.project(a0r + noise.to(dev).repeat_interleave(b, 0) * free_cols)
            if r > 1:  # copy 2: categorical blocks start from the uniform mixture
                start[b:2 * b] = _uniform_categoricals(spec, a0)
            start = torch.where(free_cols.bool(), start, a0r)
        a = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([a], lr=cfg.lr)
        w_cost = torch.where(locked, torch.zeros_like(weights), weights)

        sel_state: dict = {}

        def select(done: Tensor, cost: Tensor, p_t: Tensor) -> Tensor:
            """(B,) index into the R*B rows: the cheapest done copy, else the most confident."""
            done_, cost_, p_ = done.view(r, b), cost.view(r, b), p_t.view(r, b)
            score = torch.where(done_, cost_, 1e6 - p_)
            return score.argmin(0) * b + torch.arange(b, device=dev)

        def wrapped(step: int, state: StepState) -> bool | None:
            if callback is None:
                return None
            idx = select(state.done, sel_state["cost"], state.target_prob)
            sub = StepState(step=step, total=state.total, x_cf=state.x_cf[idx], probs=state.probs[idx],
                            target=target, done=state.done.view(r, b).any(0),
                            losses={k: v[idx] for k, v in state.losses.items()},
                            extra={"a": sel_state["a"][idx], "restart": idx // b})
            return callback(step, sub)

        rec = Recorder(tr, cfg.steps, cfg.confidence, cfg.record_every or None,
                       wrapped if callback is not None else None)
        a_frozen = a.detach().clone()
        a_path: list[Tensor] = []

        def track(before_done: Tensor, n_traj: int, a_now: Tensor) -> None:
            nonlocal a_frozen
            newly = rec.done & ~before_done
            a_frozen = torch.where(newly[:, None], a_now, a_frozen)
            if len(rec.trajectory) > n_traj:
                a_path.append(torch.where(rec.done[:, None], a_frozen, a_now).clone())

        for step in range(cfg.steps):
            x_cf = gen.decode(z0r, a)
            logits = self.classifier(x_cf)
            cls_term = class_loss(logits, tr, cfg.loss, cfg.kappa)
            cost = spec.cost(a, a0r, w_cost)
            loss = cls_term + cfg.sparsity_weight * cost  # (R*B,)  eq. (1)
            sel_state["cost"] = cost.detach()
            sel_state["a"] = a.detach()
            before, n_traj = rec.done.clone(), len(rec.trajectory)
            stop = rec.observe(step, x_cf, logits.softmax(-1),
                               {"loss": loss, "class": cls_term, "attributes": cost})
            track(before, n_traj, a.detach())
            if stop:
                break
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # rows are independent: each gets its own gradient
            a.grad.mul_(free_cols)
            opt.step()
            with torch.no_grad():
                a.copy_(torch.where(free_cols.bool(), spec.project(a), a0r))
        with torch.no_grad():
            a_last = a.detach()
            x_last = gen.decode(z0r, a_last)
            probs_last = self.classifier(x_last).softmax(-1)
        before, n_traj = rec.done.clone(), len(rec.trajectory)
        x_out, p_out = rec.finish(x_last, probs_last)
        track(before, n_traj, a_last)
        a_out = torch.where(rec.done[:, None], a_frozen, a_last)
        cost_out = spec.cost(a_out, a0r, w_cost)
        p_t = p_out.gather(1, tr[:, None])[:, 0]
        idx = select(rec.done, cost_out, p_t)
        out = rec.output(x_out[idx], p_out[idx])
        out.trajectory = [t[idx] for t in out.trajectory]
        out.steps, out.nonfinite = out.steps[idx], out.nonfinite[idx]
        a_cf = a_out[idx]
        meta = spec.report(a0, a_cf)
        meta.update({
            "a0": a0, "a_cf": a_cf, "z0": z0, "z_cf": z0,
            "a_path": torch.stack([p[idx] for p in a_path], 1),  # (B, T, dim)
            "x_rec": x_rec, "probs_rec": probs_rec,
            # False where the generator's reconstruction G(x, a0) is already classified
            # differently from x: its counterfactual says more about the generator than f
            "rec_keeps_class": probs_rec.argmax(1) == probs.argmax(1),
            "restart": idx // b,
            "locked": [n for n, lk in zip(spec.names, locked.tolist(), strict=True) if lk],
            "attribute_spec": spec.to_dict(),
        })
        out.meta = meta
        return out

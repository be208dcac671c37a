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

**Plateau stop** (a deviation: the paper's loop runs to ``confidence`` or ``steps``):
``patience=50`` with ``patience_move=0.002`` (the defaults) ends a query that the
classifier already assigns to the target once (1)'s value has not improved by 1 % in 50
steps *and* its image has not moved by more than 0.002 per pixel (mean) in that time.
With the sparsity term the search often settles below ``confidence`` and would run all
``steps``. The move condition is there for the synthetic shapes: on the loss alone
(``patience_move=0``) it stopped rows whose categorical shape code was still relaxing back
while the loss barely moved, and the independent judge read the query's shape on 26 of 29
valid counterfactuals (``tests/test_attributes_shapes.py`` wants >= 90 %; 27 of 29 with the
move condition, as with no plateau stop). Measured on the 40 digits of
``benchmarks/figures.py`` (``benchmarks/results/figures_gci_aip_patience0.json`` against
``figures_gci_aip_patience50_move0.002.json``), digit code free: mean steps 300 -> 216 /
229 / 221 per query (runner-up / far / random; 145-159 on the loss alone), validity and the
oracle's agreement as with patience 0 but for one far row (oracle 65 -> 67.5 %); locked:
300 -> 248-276 steps, figures unchanged. ``patience=0`` restores the paper's loop.

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

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._active import ActiveRows
from ..config import knob
from ..objectives import class_loss
from .attribute_base import AttributeMethod, FrozenAtDone, Restarts
from .base import Recorder, RunOutput
from .knobs import (
    attribute_weights_knob,
    class_loss_knob,
    confidence_knob,
    kappa_knob,
    patience_knob,
    patience_move_knob,
    record_every_knob,
    restart_noise_knob,
    restarts_knob,
)

__all__ = ["GCI"]


def _uniform_categoricals(spec, a: Tensor) -> Tensor:
    """``a`` with every categorical block replaced by the uniform distribution."""
    out = a.clone()
    for k, sl in zip(spec.kinds, spec.slices, strict=True):
        if k == "categorical":
            out[:, sl] = 1.0 / (sl.stop - sl.start)
    return out


class GCI(AttributeMethod):
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
        confidence: float = confidence_knob()
        sparsity_weight: float = knob(
            0.5, 0.0, 10.0, "lambda: weight of the L1 attribute change (eq. 1). Larger = fewer, "
            "smaller attribute changes (and fewer flips).")
        attribute_weights: tuple = attribute_weights_knob()
        restarts: int = restarts_knob("the valid one with the smallest attribute cost wins")
        restart_noise: float = restart_noise_knob("a0 (standard deviations / probability)")
        loss: str = class_loss_knob()
        kappa: float = kappa_knob()
        patience: int = patience_knob(50)
        patience_move: float = patience_move_knob(0.002)
        record_every: int = record_every_knob()

    # ------------------------------------------------------------------ the loop
    def _explain(self, x: Tensor, target: Tensor, cfg: Any, *, probs, callback, generator) -> RunOutput:
        gen, spec, dev = self.generator, self.attribute_spec, x.device
        locked, w_cost = self._costs(cfg, spec, dev)  # (A,) each
        free_cols = spec.column_mask((~locked).float())  # (dim,)
        b, r = x.shape[0], cfg.restarts
        a0, z0, x_rec, probs_rec = self._encode(x, spec)  # z0 stays fixed: GCI edits attributes only
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
        # per query: the cheapest copy that reached the target, else the most confident
        restarts = Restarts(r, b, dev)
        rec = Recorder(tr, cfg.steps, cfg.confidence, cfg.record_every or None,
                       restarts.callback(callback, target), patience=cfg.patience,
                       patience_move=cfg.patience_move)
        frozen = FrozenAtDone(a=a)  # a copy's attributes stop where it reached the target

        # copies that reached the target leave the computation (ActiveRows); full-batch
        # values go to the recorder, the restarts' selection and the frozen variables
        rows = ActiveRows(opt, {"a": a}, {"z0": z0r, "a0": a0r, "target": tr})
        # the models as the loop runs them: BatchNorm folded, channels-last (cfwidgets._fused)
        f, gen = self._loop_model(self.classifier), self._loop_model(gen)
        for step in range(cfg.steps):
            rows.update(rec)
            a, z0l, a0l, tl = rows.params["a"], rows.consts["z0"], rows.consts["a0"], rows.consts["target"]
            x_cf = gen.decode(z0l, a)
            logits = f(x_cf)
            cls_term = class_loss(logits, tl, cfg.loss, cfg.kappa)
            cost = spec.cost(a, a0l, w_cost)
            loss = cls_term + cfg.sparsity_weight * cost  # (L,)  eq. (1)
            a_full = rows.full_param("a")
            restarts.live(rows.full("cost", cost), a=a_full)
            frozen.mark(rec)
            stop = rec.observe(step, rows.full("x", x_cf), rows.full("probs", logits.softmax(-1)),
                               rows.full_all({"loss": loss, "class": cls_term, "attributes": cost}))
            frozen.track(rec, a=a_full)
            if stop:
                break
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # rows are independent: each gets its own gradient
            a.grad.mul_(free_cols)
            opt.step()
            with torch.no_grad():
                a.copy_(torch.where(free_cols.bool(), spec.project(a), a0l))
        with torch.no_grad():
            a_last = rows.full_param("a")
            x_act = gen.decode(rows.consts["z0"], rows.params["a"])
            x_last = rows.full("x", x_act)
            probs_last = rows.full("probs", f(x_act).softmax(-1))
        frozen.mark(rec)
        x_out, p_out = rec.finish(x_last, probs_last)
        frozen.track(rec, a=a_last)
        a_out = frozen.final(rec.finished, "a", a_last)
        cost_out = spec.cost(a_out, a0r, w_cost)
        p_t = p_out.gather(1, tr[:, None])[:, 0]
        idx = restarts.best(rec.done, cost_out, p_t)
        out = restarts.select_output(rec.output(x_out[idx], p_out[idx]), idx)
        a_cf = a_out[idx]
        meta = spec.report(a0, a_cf)
        meta.update({
            "a0": a0, "a_cf": a_cf, "z0": z0, "z_cf": z0,
            "a_path": frozen.path_of("a", idx),  # (B, T, dim)
        })
        meta.update(self._shared_meta(spec, x_rec, probs_rec, probs, restarts.restart_of(idx), locked))
        if cfg.patience:
            meta["settled"] = rec.settled[idx]
        out.meta = meta
        return out

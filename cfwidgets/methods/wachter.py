"""Pixel-space counterfactuals: the baseline of Wachter, Mittelstadt & Russell,
"Counterfactual Explanations without Opening the Black Box: Automated Decisions and the
GDPR", Harvard Journal of Law & Technology 31(2), 2018 (arXiv 1711.00399).

Objective (the paper's eq. (3) with the distance of its eq. (5), L1): the paper minimises
``lambda * (f(x') - y')^2 + d(x, x')``. Here the classifier gives logits over K classes,
so the prediction term is the cross-entropy to the target class, and we divide by
``lambda`` so the knob is the weight of the distance::

    min_x'  CE(f(x'), t) + proximity_weight * mean_i |x'_i - x_i|      x' in [0, 1]

Deviations (documented): the paper uses the median-absolute-deviation-weighted L1 on
tabular features; on pixels every feature has the same scale, so the plain per-pixel L1
(mean over pixels) is used. The paper increases ``lambda`` until the prediction is close
enough; like every method here we instead stop each row as soon as ``p_t(x') >=
confidence`` (METHODS.md, shared loop). Adam on the pixels, projected back into [0, 1]
after each step. With ``proximity_weight = 0`` this is plain gradient descent on the
classifier in pixel space: the "conventional adversarial" arm of the diffeomorphic
comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._active import ActiveRows
from ..config import knob
from ..objectives import class_loss, l1_distance
from .base import CounterfactualMethod, Recorder, RunOutput
from .knobs import class_loss_knob, confidence_knob, record_every_knob

__all__ = ["Wachter"]


class Wachter(CounterfactualMethod):
    """Pixel-space counterfactual search (Wachter et al. 2018).

    Examples::

        from cfwidgets import zoo, data
        from cfwidgets.methods import Wachter
        clf = zoo.load("mnist/cnn")
        x = data.load_mnist("test").x[:8]
        res = Wachter(clf).explain(x, target=3, steps=200)
        res.success.float().mean()
    """

    name = "wachter"
    title = "Wachter (pixels)"
    paper = ("Wachter, Mittelstadt & Russell, Counterfactual Explanations without Opening the "
             "Black Box, Harvard JOLT 2018, arXiv 1711.00399")

    @dataclass(frozen=True)
    class Config:
        steps: int = knob(500, 1, 5000, "Step budget: the most updates per query.")
        lr: float = knob(0.01, 1e-4, 0.5, "Learning rate on the pixels.", log=True)
        proximity_weight: float = knob(
            1.0, 0.0, 10.0,
            "Weight of the L1 distance to the query (per-pixel mean). 0 = plain adversarial "
            "ascent in pixel space.")
        confidence: float = confidence_knob()
        loss: str = class_loss_knob()
        optimizer: str = knob("adam", doc="Optimiser on the pixels.", choices=("adam", "sgd"))
        record_every: int = record_every_knob()

    def __init__(self, classifier, /, *, device=None) -> None:
        super().__init__(classifier, device=device)

    @classmethod
    def from_zoo(cls, dataset: str = "mnist", *, device="auto", **kwargs) -> Wachter:
        from .. import zoo

        return cls(zoo.load(f"{dataset}/cnn", device=device), **kwargs)

    def _explain(self, x: Tensor, target: Tensor, cfg: Any, *, probs, callback, generator) -> RunOutput:
        x_cf = x.clone().requires_grad_(True)
        if cfg.optimizer == "adam":
            opt = torch.optim.Adam([x_cf], lr=cfg.lr)
        else:
            opt = torch.optim.SGD([x_cf], lr=cfg.lr)
        rec = Recorder(target, cfg.steps, cfg.confidence, cfg.record_every or None, callback)
        # rows that reached the target (or turned non-finite) leave the computation
        rows = ActiveRows(opt, {"x_cf": x_cf}, {"x": x, "target": target})
        f = self._loop_model(self.classifier)  # BatchNorm folded (cfwidgets._fused)
        for step in range(cfg.steps):
            rows.update(rec)
            x_cf, x0, t = rows.params["x_cf"], rows.consts["x"], rows.consts["target"]
            logits = f(x_cf)
            cls_term = class_loss(logits, t, cfg.loss)
            prox = l1_distance(x_cf, x0)
            loss = cls_term + cfg.proximity_weight * prox  # (L,) active rows
            if rec.observe(step, rows.full("x", x_cf), rows.full("probs", logits.softmax(-1)),
                           rows.full_all({"loss": loss, "class": cls_term, "l1": prox})):
                break
            opt.zero_grad(set_to_none=True)
            # rows are independent (Adam is element-wise), so the sum gives each row its
            # own gradient: batch results equal one-by-one results
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                x_cf.clamp_(0.0, 1.0)
        with torch.no_grad():
            probs_last = rows.full("probs", f(rows.params["x_cf"]).softmax(-1))
        x_out, p_out = rec.finish(rows.full_param("x_cf"), probs_last)
        return rec.output(x_out, p_out)

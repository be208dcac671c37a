"""GANMEX counterfactual baselines: Shih, Tien & Karnin, "GANMEX: One-vs-One Attributions
using GAN-based Model Explainability", ICML 2021 (arXiv 2011.06015); code
``pinjutien/GANMEX`` (TF-GAN StarGAN estimator).

GANMEX answers "why class ``c`` and not ``t``?". A class-conditional translator ``G(x, t)``
is trained *with the classifier under explanation inside the adversarial game* (the
critic's class head is the frozen classifier; see :mod:`cfwidgets.zoo.recipes.ganmex` for
the authors' loss weights), so ``G(x, t)`` is the closest realistic sample that the
classifier assigns to ``t``. Nothing is optimised per query: one forward pass of the
translator gives the counterfactual, which :mod:`cfwidgets.attribution` uses as the
*baseline* of Integrated Gradients, DeepLIFT, occlusion and the like.

As a counterfactual method (same verb as the others) :meth:`GANMEX.explain` returns
``x_cf = G(x, t)``. Knob ``steps`` (default 1) also evaluates points on the straight path
``x + a (G(x, t) - x)``, ``a = k / steps`` (the path Integrated Gradients integrates along),
as the trajectory, so a widget can show how the classifier's belief moves from ``x`` to the
baseline; the result is always the path's end unless a callback stops the walk early.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import knob
from ..objectives import class_loss, l1_distance
from ..protocols import StepState
from .base import CounterfactualMethod, RunOutput

__all__ = ["GANMEX", "translator_of"]


def translator_of(obj: Any) -> nn.Module:
    """The translator module of a :class:`GANMEX` method, or ``obj`` itself when it is a
    module called as ``obj(x, target)``."""
    if isinstance(obj, GANMEX):
        return obj.translator
    if isinstance(obj, nn.Module):
        return obj
    raise TypeError(f"expected a GANMEX method or a translator module G(x, t), got "
                    f"{type(obj).__name__}; e.g. GANMEX.from_zoo('mnist').")


class GANMEX(CounterfactualMethod):
    """The GANMEX counterfactual ``G(x, t)`` of a trained translator.

    Examples::

        from cfwidgets import data
        from cfwidgets.methods.ganmex import GANMEX
        m = GANMEX.from_zoo("mnist")
        x = data.load_mnist("test").x[:8]
        res = m.explain(x, target=8)
        res.success.float().mean(), res.x_cf.shape
    """

    name = "ganmex"
    title = "GANMEX (translator)"
    paper = ("Shih, Tien & Karnin, GANMEX: One-vs-One Attributions using GAN-based Model "
             "Explainability, ICML 2021, arXiv 2011.06015")

    @dataclass(frozen=True)
    class Config:
        steps: int = knob(
            1, 1, 512,
            "Points evaluated on the straight path from x to G(x, t) (1 = the translation "
            "only); they form the trajectory. The result is the path's end, G(x, t).")

    def __init__(self, classifier: nn.Module, translator: nn.Module, /, *, device=None) -> None:
        if not isinstance(translator, nn.Module):
            raise TypeError(f"translator must be an nn.Module G(x, target) -> x', got "
                            f"{type(translator).__name__}.")
        k_t = getattr(translator, "num_classes", None)
        k_c = len(getattr(classifier, "class_names", None) or []) or None
        if k_t is not None and k_c is not None and k_t != k_c:
            raise ValueError(f"the translator knows {k_t} classes but the classifier has {k_c}: "
                             f"use the translator trained against this classifier.")
        super().__init__(classifier, device=device, translator=translator)

    @property
    def translator(self) -> nn.Module:
        return self.components["translator"]

    @classmethod
    def from_zoo(cls, dataset: str = "mnist", *, device="auto", **kwargs) -> GANMEX:
        """Classifier ``<dataset>/cnn`` and the translator ``<dataset>/ganmex`` trained
        against it (``"mnist"``, ``"fashion"``, ``"shapes"``)."""
        from .. import zoo

        name = f"{dataset}/ganmex"
        if name not in zoo.recipes():
            have = sorted(r.split("/")[0] for r in zoo.recipes() if r.endswith("/ganmex"))
            raise ValueError(f"no GANMEX translator for {dataset!r}; available: {have}.")
        return cls(zoo.load(f"{dataset}/cnn", device=device), zoo.load(name, device=device), **kwargs)

    def _explain(self, x: Tensor, target: Tensor, cfg: Any, *, probs, callback, generator) -> RunOutput:
        with torch.no_grad():
            baseline = self.translator(x, target).clamp(0.0, 1.0)
            traj, steps_at, losses = [], [], {"loss": [], "class": [], "l1": []}
            x_cf, probs_cf, stopped = baseline, None, False
            for k in range(cfg.steps):
                a = (k + 1) / cfg.steps
                point = baseline if k == cfg.steps - 1 else x + a * (baseline - x)
                logits = self.classifier(point)
                p = logits.softmax(-1)
                ce, l1 = class_loss(logits, target), l1_distance(point, x)
                for key, v in (("loss", ce), ("class", ce), ("l1", l1)):
                    losses[key].append(v.mean())
                traj.append(point)
                steps_at.append(k)
                x_cf, probs_cf = point, p
                if callback is not None:
                    state = StepState(step=k, total=cfg.steps, x_cf=point, probs=p, target=target,
                                      done=torch.full_like(target, k == cfg.steps - 1, dtype=torch.bool),
                                      losses={"loss": ce, "class": ce, "l1": l1},
                                      extra={"alpha": a, "baseline": baseline})
                    if callback(k, state):
                        stopped = True
                        break
        used = torch.full_like(target, len(steps_at))
        return RunOutput(x_cf=x_cf, probs_cf=probs_cf, trajectory=traj, trajectory_steps=steps_at,
                         losses=losses, steps=used, stopped=stopped,
                         meta={"baseline": baseline, "path_alphas": [(k + 1) / cfg.steps
                                                                     for k in steps_at]})

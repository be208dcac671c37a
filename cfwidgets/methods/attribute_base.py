"""What the attribute methods (GCI, AIP) share: a classifier and an
attribute-conditioned generator in the constructor, ``attribute_weights`` by name, the
zoo pairs, and the restart bookkeeping.

Restarts: a batch of ``B`` queries is optimised as ``R`` stacked copies, restart-first: row
``k * B + i`` is copy ``k`` of query ``i``. Per query the *best* copy is the cheapest one
that reached the target (``cost``: the method's own proximity), else the most confident
one. The variables of a copy freeze when it reaches the target (its counterfactual is
then final), so the returned variables and their path stop there too.

Examples::

    rs = Restarts(r, b, device)
    cb = rs.callback(callback, target)      # live previews show the best copy per query
    ...                                      # each step: rs.live(cost=..., a=a.detach())
    idx = rs.best(rec.done, cost, p_target)  # (B,) rows into the R*B stack
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..models.conditional import LOCK_WEIGHT, AttributeSpec, check_conditional_generator, spec_of
from ..protocols import StepCallback, StepState
from .base import CounterfactualMethod, named_attribute_weights

__all__ = ["AttributeMethod", "Restarts", "FrozenAtDone"]

#: zoo generator of each data set the attribute methods know (classifier: <dataset>/cnn)
ZOO_GENERATORS = {"mnist": "mnist/cvae", "shapes": "shapes/cvae", "shapes-biased": "shapes/cvae"}


class AttributeMethod(CounterfactualMethod):
    """Base of GCI and AIP: ``Method(classifier, generator)`` with a conditional generator
    (:func:`~cfwidgets.models.conditional.check_conditional_generator`) whose images fit
    the classifier; ``attribute_weights`` may be a ``{name: weight}`` dict."""

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
    def attribute_spec(self) -> AttributeSpec:
        return spec_of(self.generator)

    @classmethod
    def from_zoo(cls, dataset: str = "mnist", *, device="auto", **kwargs):
        """``dataset``: ``"mnist"`` (mnist/cnn + mnist/cvae), ``"shapes"`` (shapes/cnn +
        shapes/cvae) or ``"shapes-biased"`` (shapes-biased/cnn + shapes/cvae)."""
        from .. import zoo

        if dataset not in ZOO_GENERATORS:
            raise ValueError(f"{cls.__name__}.from_zoo knows {sorted(ZOO_GENERATORS)}, got {dataset!r}.")
        return cls(zoo.load(f"{dataset}/cnn", device=device), zoo.load(ZOO_GENERATORS[dataset], device=device),
                   **kwargs)

    def explain(self, x, target, config=None, *, callback=None, generator=None, **overrides):
        config, overrides = named_attribute_weights(self.attribute_spec, config, overrides)
        return super().explain(x, target, config, callback=callback, generator=generator, **overrides)

    # ------------------------------------------------------------------ loop parts
    @staticmethod
    def _costs(cfg: Any, spec: AttributeSpec, device) -> tuple[Tensor, Tensor]:
        """``(A,)`` which attributes are locked (weight ``>= LOCK_WEIGHT``: not optimised)
        and the weights ``w_i`` the attribute cost uses (locked ones at 0)."""
        weights = spec.weights(cfg.attribute_weights).to(device)
        locked = weights >= LOCK_WEIGHT
        return locked, torch.where(locked, torch.zeros_like(weights), weights)

    @torch.no_grad()
    def _encode(self, x: Tensor, spec: AttributeSpec) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``a0 = attr(x)`` (B, dim), ``z0 = e(x)`` (B, Dz), the reconstruction
        ``G(z0, a0)`` and its class probabilities."""
        gen = self.generator
        a0 = spec.project(gen.attributes(x))
        z0 = gen.encode(x)
        x_rec = gen.decode(z0, a0)
        return a0, z0, x_rec, self.classifier(x_rec).softmax(-1)

    @staticmethod
    def _shared_meta(spec: AttributeSpec, x_rec: Tensor, probs_rec: Tensor, probs: Tensor,
                     restart: Tensor, locked: Tensor) -> dict:
        return {
            "x_rec": x_rec, "probs_rec": probs_rec,
            # False where the generator's reconstruction G(x, a0) is already classified
            # differently from x: its counterfactual says more about the generator than f
            "rec_keeps_class": probs_rec.argmax(1) == probs.argmax(1),
            "restart": restart,
            "locked": [n for n, lk in zip(spec.names, locked.tolist(), strict=True) if lk],
            "attribute_spec": spec.to_dict(),
        }


class Restarts:
    """``R`` copies of ``B`` queries, stacked restart-first."""

    def __init__(self, restarts: int, batch: int, device: torch.device | str):
        self.r, self.b = int(restarts), int(batch)
        self.device = device
        self._live: dict[str, Tensor] = {}

    def best(self, done: Tensor, cost: Tensor, p_target: Tensor) -> Tensor:
        """``(B,)`` index into the ``R*B`` rows: the cheapest done copy, else the most
        confident (``done``, ``cost``, ``p_target`` are ``(R*B,)``)."""
        r, b = self.r, self.b
        score = torch.where(done.view(r, b), cost.view(r, b), 1e6 - p_target.view(r, b))
        return score.argmin(0) * b + torch.arange(b, device=self.device)

    def restart_of(self, idx):
        """Which copy row(s) ``idx`` are (int or tensor)."""
        return idx // self.b

    def query_of(self, idx):
        """Which query row(s) ``idx`` belong to (int or tensor)."""
        return idx % self.b

    def row(self, restart: int, query: int) -> int:
        """The row of copy ``restart`` of query ``query``."""
        return restart * self.b + query

    def live(self, cost: Tensor, **extra: Tensor) -> None:
        """This step's ``cost`` (``(R*B,)``, for the selection) and the variables the
        callback shows (``extra``, each ``(R*B, ...)``), detached."""
        self._live = {"cost": cost, **extra}

    def callback(self, callback: StepCallback | None, target: Tensor) -> StepCallback | None:
        """``callback`` seen per query: each step shows the best copy of every query, its
        variables in ``state.extra`` plus ``restart``; ``None`` stays ``None``."""
        if callback is None:
            return None

        def wrapped(step: int, state: StepState) -> bool | None:
            live = self._live
            idx = self.best(state.done, live["cost"], state.target_prob)
            extra = {k: v[idx] for k, v in live.items() if k != "cost"}
            extra["restart"] = self.restart_of(idx)
            sub = StepState(step=step, total=state.total, x_cf=state.x_cf[idx], probs=state.probs[idx],
                            target=target, done=state.done.view(self.r, self.b).any(0),
                            losses={k: v[idx] for k, v in state.losses.items()}, extra=extra)
            return callback(step, sub)

        return wrapped

    @staticmethod
    def select_output(out, idx: Tensor):
        """Keep rows ``idx`` of a :class:`~cfwidgets.methods.base.RunOutput`'s
        trajectory, steps and non-finite flags (in place; returns ``out``)."""
        out.trajectory = [t[idx] for t in out.trajectory]
        out.steps, out.nonfinite = out.steps[idx], out.nonfinite[idx]
        return out


class FrozenAtDone:
    """Optimised variables frozen at the step their row reached the target (or settled on a
    loss plateau, ``Recorder(patience=...)``), and their
    path sampled wherever the recorder takes a trajectory snapshot::

        frozen.mark(rec)                  # before a recorder step
        stop = rec.observe(...)
        frozen.track(rec, a=a.detach())   # after it
    """

    def __init__(self, **start: Tensor):
        self.frozen = {k: v.detach().clone() for k, v in start.items()}
        self.path: dict[str, list[Tensor]] = {k: [] for k in start}
        self._before: tuple[Tensor, int] | None = None

    @staticmethod
    def _rows(mask: Tensor, like: Tensor) -> Tensor:
        return mask.view(-1, *([1] * (like.ndim - 1)))

    def mark(self, rec) -> None:
        """Remember which rows were finished (reached the target or settled) and how many
        snapshots there were."""
        self._before = (rec.finished.clone(), len(rec.trajectory))

    def track(self, rec, **now: Tensor) -> None:
        """Freeze the rows that became done since :meth:`mark`; append ``now`` (frozen
        rows at their frozen value) to the path if the recorder took a snapshot."""
        before_done, n_traj = self._before
        finished = rec.finished
        newly = finished & ~before_done
        snapshot = len(rec.trajectory) > n_traj
        for k, v in now.items():
            self.frozen[k] = torch.where(self._rows(newly, v), v, self.frozen[k])
            if snapshot:
                self.path[k].append(torch.where(self._rows(finished, v), self.frozen[k], v).clone())

    def final(self, done: Tensor, name: str, last: Tensor) -> Tensor:
        """``name`` per row: frozen where ``done``, else its last value."""
        return torch.where(self._rows(done, last), self.frozen[name], last)

    def path_of(self, name: str, idx: Tensor) -> Tensor:
        """``(B, T, ...)`` the path of ``name`` for rows ``idx``."""
        return torch.stack([p[idx] for p in self.path[name]], 1)

"""The typed result every method returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["CounterfactualResult"]


@dataclass(frozen=True)
class CounterfactualResult:
    """Counterfactuals for a batch of queries, and how they were made.

    Tensors are detached and on the CPU. For text methods ``x``/``x_cf`` are lists of
    strings and ``trajectory`` is a list (one entry per snapshot) of such lists.

    Attributes:
        x: queries ``(B, C, H, W)``.
        x_cf: counterfactuals, same shape. For a row that never reached ``confidence``
            this is the last iterate (``success`` tells whether the class flipped).
        target: ``(B,)`` target classes.
        probs, probs_cf: ``(B, K)`` class probabilities of ``x`` and ``x_cf``.
        trajectory: ``(T, B, C, H, W)`` snapshots along the path (first = start).
        trajectory_steps: the step index of each snapshot.
        losses: name -> per-step mean value (the total is ``"loss"``).
        steps: ``(B,)`` steps each row used (the step where it reached confidence,
            or the budget).
        stopped: ``True`` when a callback (e.g. the widget's Stop) ended the run early.
        meta: method, config, seed, device, wall time, version, and method-specific data.
    """

    x: Any
    x_cf: Any
    target: Tensor
    probs: Tensor
    probs_cf: Tensor
    trajectory: Any = None
    trajectory_steps: list[int] = field(default_factory=list)
    losses: dict[str, list[float]] = field(default_factory=dict)
    steps: Tensor | None = None
    stopped: bool = False
    meta: dict = field(default_factory=dict)

    # ----------------------------------------------------------------- derived
    @property
    def pred(self) -> Tensor:
        """``(B,)`` predicted class of the queries."""
        return self.probs.argmax(1)

    @property
    def pred_cf(self) -> Tensor:
        """``(B,)`` predicted class of the counterfactuals."""
        return self.probs_cf.argmax(1)

    @property
    def success(self) -> Tensor:
        """``(B,)`` bool: the counterfactual is classified as the target."""
        return self.pred_cf == self.target

    @property
    def target_prob(self) -> Tensor:
        return self.probs_cf.gather(1, self.target[:, None].long())[:, 0]

    @property
    def is_text(self) -> bool:
        return isinstance(self.x, list)

    @property
    def method(self) -> str:
        return self.meta.get("method", "?")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i) -> CounterfactualResult:
        """The result restricted to row(s) ``i`` (keeps the batch dimension): an int, a
        slice, a sequence of row indices or a boolean mask of ``len(result)``."""
        if isinstance(i, int):
            if not -len(self) <= i < len(self):
                raise IndexError(f"row {i} out of range for a result of {len(self)} rows")
            i = slice(i, i + 1 if i != -1 else None)
        if not isinstance(i, slice):
            i = _row_list(i, len(self))

        def take(v):
            if v is None:
                return None
            return _take(v, i)

        traj = self.trajectory
        if traj is not None:
            traj = traj[:, _as_index(i)] if isinstance(traj, Tensor) else [_take(t, i) for t in traj]
        return replace(
            self,
            x=take(self.x),
            x_cf=take(self.x_cf),
            target=take(self.target),
            probs=take(self.probs),
            probs_cf=take(self.probs_cf),
            trajectory=traj,
            steps=take(self.steps),
            meta=_slice_meta(self.meta, i, len(self)),
        )

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:  # cheap: never renders images
        ok = int(self.success.sum())
        return (
            f"CounterfactualResult(method={self.method!r}, n={len(self)}, "
            f"success={ok}/{len(self)}, stopped={self.stopped}, "
            f"time={self.meta.get('wall_time_s', float('nan')):.2f}s)"
        )

    def _repr_html_(self) -> str:
        """Static fallback: before/after/difference images and probabilities as HTML,
        so exported notebooks and nbval runs show the result without a kernel."""
        from ._html import result_html

        return result_html(self)

    def to_dict(self) -> dict:
        """Plain-python summary (for JSON / streaming to disk); text results also carry
        ``x`` and ``x_cf`` (images stay out: save them with the tensors)."""
        out = {
            "method": self.method,
            "target": self.target.tolist(),
            "pred": self.pred.tolist(),
            "pred_cf": self.pred_cf.tolist(),
            "success": self.success.tolist(),
            "target_prob": self.target_prob.tolist(),
            "steps": None if self.steps is None else self.steps.tolist(),
            "stopped": self.stopped,
        }
        nonfinite = self.meta.get("nonfinite")
        if isinstance(nonfinite, Tensor):  # rows stopped for NaN/inf (see explain)
            out["nonfinite"] = nonfinite.tolist()
        if isinstance(self.x, list):  # text: the sentences themselves are small
            out["x"], out["x_cf"] = list(self.x), list(self.x_cf)
        meta = {k: _plain(v) for k, v in self.meta.items()}
        out["meta"] = {k: v for k, v in meta.items() if _jsonable(v)}
        return out


def _row_list(i, n: int) -> list[int]:
    """Row indices from a sequence of ints or a boolean mask of length ``n``."""
    t = torch.as_tensor(i)
    if t.dtype == torch.bool:
        if t.shape != (n,):
            raise IndexError(f"a boolean mask must have {n} entries, got shape {tuple(t.shape)}")
        t = t.nonzero().flatten()
    if t.ndim != 1 or t.is_floating_point():
        raise IndexError("index a result with an int, a slice, row indices or a boolean mask")
    rows = [int(r) for r in t]
    bad = [r for r in rows if not -n <= r < n]
    if bad:
        raise IndexError(f"rows {bad[:5]} out of range for a result of {n} rows")
    return rows


def _as_index(i):
    return i if isinstance(i, slice) else torch.as_tensor(i, dtype=torch.long)


def _take(v, i):
    """Rows ``i`` (a slice or a list of row indices) of a tensor or a list."""
    if isinstance(i, slice):
        return v[i]
    if isinstance(v, Tensor):
        return v[_as_index(i).to(v.device)]
    return [v[r] for r in i]


def _slice_meta(meta: dict, i, n: int) -> dict:
    """Slice per-row entries of ``meta`` (tensors or lists of length n)."""
    out = {}
    for k, v in meta.items():
        if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == n:
            out[k] = _take(v, i)
        elif isinstance(v, list) and len(v) == n and k.startswith("per_row"):
            out[k] = _take(v, i)
        elif isinstance(v, dict) and k.startswith("per_row"):
            out[k] = {kk: (_take(vv, i) if hasattr(vv, "__getitem__") else vv) for kk, vv in v.items()}
        else:
            out[k] = v
    return out


def _plain(v: Any) -> Any:
    """Records with a ``to_dict()`` (e.g. AIP-text's candidates), in lists too, as dicts."""
    if isinstance(v, list):
        return [_plain(x) for x in v]
    to_dict = getattr(v, "to_dict", None)
    return to_dict() if callable(to_dict) and not isinstance(v, (type, Tensor)) else v


def _jsonable(v: Any) -> bool:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return True
    if isinstance(v, (list, tuple)):
        return all(_jsonable(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _jsonable(x) for k, x in v.items())
    return False


def stack_results(results: list[CounterfactualResult]) -> CounterfactualResult:
    """Concatenate results of the same method along the batch dimension."""
    if not results:
        raise ValueError("stack_results needs at least one result")
    first = results[0]
    if first.is_text:
        cat = lambda vs: sum(vs, [])  # noqa: E731
    else:
        cat = lambda vs: torch.cat(vs)  # noqa: E731
    traj = None
    if all(isinstance(r.trajectory, Tensor) for r in results):
        t = min(r.trajectory.shape[0] for r in results)
        traj = torch.cat([r.trajectory[:t] for r in results], dim=1)
    return replace(
        first,
        x=cat([r.x for r in results]),
        x_cf=cat([r.x_cf for r in results]),
        target=torch.cat([r.target for r in results]),
        probs=torch.cat([r.probs for r in results]),
        probs_cf=torch.cat([r.probs_cf for r in results]),
        trajectory=traj,
        steps=None if first.steps is None else torch.cat([r.steps for r in results]),
        stopped=any(r.stopped for r in results),
        meta=_stack_flags(first.meta, results),
    )


def _stack_flags(meta: dict, results: list[CounterfactualResult]) -> dict:
    """``meta`` with the per-row ``nonfinite`` flags of all results concatenated."""
    flags = [r.meta.get("nonfinite") for r in results]
    if all(isinstance(f, Tensor) for f in flags):
        return dict(meta, nonfinite=torch.cat(flags))
    return meta

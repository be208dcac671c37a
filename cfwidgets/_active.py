"""Per-row early stopping in the computation: rows that have finished leave the batch.

The :class:`~cfwidgets.methods.base.Recorder` freezes each row's answer at the step it
reaches the target, but a loop that keeps passing the whole batch through its models
pays for every row until the slowest one stops. :class:`ActiveRows` keeps the tensors a
step loop works on sliced to the rows still searching:

- the optimised leaf tensors (replaced by smaller leaves) and their optimiser state
  (per-element buffers such as Adam's ``exp_avg`` / ``exp_avg_sq`` or SGD's momentum are
  sliced with them; a shared step count is kept), so the remaining rows continue exactly
  as they would have in the full batch;
- the per-row constants (the query, the target, start latents, ...);
- and it scatters the active rows' results back into full-batch tensors, so the Recorder
  and the callback still see ``(B, ...)`` and ``finish`` / ``output`` are unchanged.

When to compact costs no extra device sync: the Recorder counts its halted rows where it
already syncs to test "all rows done" (every step on a CPU, every ``sync_every`` steps on
a GPU); only a step that actually compacts reads the mask of rows to keep (one
``nonzero``). Rows that halted since that count are still computed (and ignored by the
Recorder) until the next one.

Results: each row's arithmetic is the same as in the full batch; a smaller batch can
change a model's float rounding (batched kernels block the work differently), ~1e-6 on
the zoo's models, the same noise :meth:`CounterfactualMethod.explain` describes between
a batch and one-by-one calls. Loss curves: a row that left holds its last computed
values (on a CPU those of the step it halted at; on a GPU up to ``sync_every - 1`` steps
later), where without compaction it would have kept moving.

Usage in a step loop::

    rows = ActiveRows(opt, params={"x_cf": x_cf}, consts={"x": x, "target": target})
    for step in range(steps):
        rows.update(rec)                      # drop rows the recorder saw halt
        x_cf, x0, t = rows.params["x_cf"], rows.consts["x"], rows.consts["target"]
        logits = f(x_cf); loss = ...          # (L,) over the active rows
        if rec.observe(step, rows.full("x", x_cf), rows.full("probs", logits.softmax(-1)),
                       rows.full_all({"loss": loss})):
            break
        loss.sum().backward(); opt.step()
    rec.finish(rows.full_param("x_cf"), ...)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ._utils import detached

__all__ = ["ActiveRows"]


class ActiveRows:
    """The rows of a batch still being optimised, and a loop's tensors sliced to them.

    Args:
        optimizer: the optimiser over ``params`` (its state is sliced with them), or
            ``None`` for a loop without one.
        params: name -> optimised leaf tensor, ``(B, ...)``. After a compaction
            ``self.params[name]`` is a new, smaller leaf; read it each step.
        consts: name -> per-row constant ``(B, ...)``; ``self.consts[name]`` is its active rows.
        min_drop: compact only once the rows that halted since the last compaction are at
            least this fraction of the active rows (0 = whenever any row halted).
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None, params: Mapping[str, Tensor],
                 consts: Mapping[str, Tensor] | None = None, *, min_drop: float = 0.0) -> None:
        if not 0.0 <= float(min_drop) < 1.0:
            raise ValueError(f"min_drop must be a fraction in [0, 1), got {min_drop!r}.")
        self.optimizer = optimizer
        self.params: dict[str, Tensor] = dict(params)
        self._consts_full: dict[str, Tensor] = dict(consts or {})
        self.consts: dict[str, Tensor] = dict(self._consts_full)
        sizes = {t.shape[0] for t in (*self.params.values(), *self._consts_full.values())}
        if len(sizes) != 1:
            raise ValueError(f"params and consts must share their first (batch) dimension, got sizes "
                             f"{sorted(sizes)}.")
        self.batch = sizes.pop()
        self.min_drop = float(min_drop)
        #: ``(L,)`` full-batch indices of the active rows, ``None`` while every row is active
        self.idx: Tensor | None = None
        self.n_active = self.batch
        self.compactions = 0
        self._param_full: dict[str, Tensor] = {}  # rows that left keep their last values here
        self._buf: dict[str, Tensor] = {}

    # ----------------------------------------------------------------- compaction
    def update(self, rec) -> bool:
        """Compact if the recorder's last sync counted enough newly halted rows (reads
        ``rec.n_halted``, a host int, and ``rec.halted``); True when it compacted."""
        if not self.worth_dropping(getattr(rec, "n_halted", None)):
            return False
        self.keep(~rec.halted)
        return True

    def worth_dropping(self, n_halted: int | None) -> bool:
        """Whether ``n_halted`` halted rows of the full batch (a host int, from a sync the
        loop makes anyway; ``None``: not known) call for a compaction under ``min_drop``
        (never when every row halted: the loop ends then)."""
        if n_halted is None:
            return False
        newly = n_halted - (self.batch - self.n_active)
        return 0 < newly and n_halted < self.batch and newly >= math.ceil(self.min_drop * self.n_active)

    def take(self, t: Tensor) -> Tensor:
        """The active rows of a full-batch tensor ``t``."""
        return t if self.idx is None else t.index_select(0, self.idx)

    def keep(self, mask: Tensor) -> None:
        """Keep only the active rows where ``mask`` (``(B,)`` bool, full batch) is True."""
        if self.idx is None:
            local = mask.nonzero()[:, 0]
            new_idx = local
        else:
            local = mask.index_select(0, self.idx).nonzero()[:, 0]
            new_idx = self.idx.index_select(0, local)
        for name, p in self.params.items():
            self._param_full[name] = self.full_param(name).clone()
            new = p.detach().index_select(0, local).requires_grad_(p.requires_grad)
            self._swap(p, new, local)
            self.params[name] = new
        self.consts = {k: v.index_select(0, new_idx) for k, v in self._consts_full.items()}
        self.idx = new_idx
        self.n_active = int(new_idx.shape[0])
        self.compactions += 1

    def _swap(self, old: Tensor, new: Tensor, local: Tensor) -> None:
        """Put ``new`` in ``old``'s place in the optimiser, with its state sliced."""
        opt = self.optimizer
        if opt is None:
            return
        for group in opt.param_groups:
            group["params"] = [new if q is old else q for q in group["params"]]
        state = opt.state.pop(old, None)
        if not state:
            return
        sliced = {}
        for k, v in state.items():
            if isinstance(v, Tensor) and v.shape == old.shape:
                sliced[k] = v.index_select(0, local)  # element-wise buffer of the param
            elif isinstance(v, Tensor) and v.ndim > 0:
                raise ValueError(
                    f"{type(opt).__name__} keeps state {k!r} of shape {tuple(v.shape)} for a "
                    f"parameter of shape {tuple(old.shape)}: it is not element-wise, so rows "
                    f"cannot leave the batch; use Adam or SGD.")
            else:
                sliced[k] = v  # shared, e.g. Adam's step count
        opt.state[new] = sliced

    # ------------------------------------------------------------------ scattering
    def full(self, name: str, t: Tensor) -> Tensor:
        """``t`` (active rows) as a full-batch tensor, detached; rows that left hold their
        last value under ``name`` (zeros if there was none)."""
        t = detached(t)
        if self.idx is None:
            self._buf[name] = t
            return t
        buf = self._buf.get(name)
        if buf is None or buf.shape[1:] != t.shape[1:] or buf.dtype != t.dtype:
            buf = t.new_zeros((self.batch, *t.shape[1:]))
        buf = buf.index_copy(0, self.idx, t)
        self._buf[name] = buf
        return buf

    def full_all(self, terms: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """:meth:`full` of each per-row term (``(L, ...)``); terms shared by the batch (0-d)
        pass unchanged."""
        return {k: (self.full(k, v) if v.ndim and v.shape[0] == self.n_active else v)
                for k, v in terms.items()}

    def full_param(self, name: str) -> Tensor:
        """The optimised tensor ``name`` over the full batch (detached): active rows at
        their current value, rows that left where they were when they left."""
        p = self.params[name].detach()
        if self.idx is None:
            return p
        return self._param_full[name].index_copy(0, self.idx, p)

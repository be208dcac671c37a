"""Per-row early stopping in the computation (cfwidgets/_active.py): rows that reached the
target leave the batch, the remaining rows continue exactly as in the full batch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cfwidgets._active import ActiveRows
from cfwidgets.methods import Wachter
from cfwidgets.methods.base import Recorder


class _RowCounter(nn.Module):
    """Wraps a classifier and records the batch size of every forward pass."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.input_shape = getattr(inner, "input_shape", None)
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(int(x.shape[0]))
        return self.inner(x)


def _linear_clf(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        net[1].weight.mul_(8)  # confident: a target probability of 0.9 is reachable
    net.input_shape = (1, 4, 4)
    return net.eval()


def _easy_and_hard(clf, n_easy=3, n_hard=2):
    """Queries whose runner-up class is close (flip in a few steps) and far."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 4, 4, generator=g)
    with torch.no_grad():
        p = clf(x).softmax(-1)
    top2 = p.topk(2, 1)
    gap = top2.values[:, 0] - top2.values[:, 1]
    order = gap.argsort()
    idx = torch.cat([order[:n_easy], order[-n_hard:]])
    return x[idx], top2.indices[idx, 1]


def test_finished_rows_leave_the_classifier_batch():
    counter = _RowCounter(_linear_clf())
    x, t = _easy_and_hard(counter.inner)
    res = Wachter(counter).explain(x, t, steps=200, lr=0.02, confidence=0.9, proximity_weight=0.0)
    steps = res.steps
    assert bool(res.success.all()), "setup: every row should flip within the budget"
    assert int(steps.min()) + 5 < int(steps.max()), "setup: rows must finish at different steps"
    loop = counter.sizes[1:]  # the first call is explain()'s own prediction of x
    # while no row is done the whole batch runs; after the last row stops, only it ran
    assert loop[0] == len(x)
    # each step after a row finished saw the rows still searching, not the batch
    for s in range(int(steps.max()) + 1):
        expected = int((steps >= s).sum())  # a row done at step k was computed at k, dropped at k+1
        assert loop[s] == expected, (s, loop[s], expected)
    assert sum(loop) < len(x) * (int(steps.max()) + 1)


def test_compacted_run_equals_full_batch_adam_exactly():
    """Element-wise per-row problem: the remaining rows of a compacted run follow the
    full-batch run bit for bit (sliced Adam state, shared step count)."""
    torch.manual_seed(0)
    b, d = 6, 5
    goal = torch.randn(b, d)
    start = torch.randn(b, d)

    def run(drop_at):
        p = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([p], lr=0.1)
        rows = ActiveRows(opt, {"p": p}, {"goal": goal})
        for step in range(30):
            if step == drop_at:
                rows.keep(torch.tensor([True, False, True, True, False, True]))
            if step == drop_at + 7:  # a second compaction: full-batch mask, indices composed
                rows.keep(torch.tensor([True, True, False, True, True, True]))
            p, gl = rows.params["p"], rows.consts["goal"]
            opt.zero_grad(set_to_none=True)
            ((p - gl) ** 2 * torch.arange(1, d + 1)).sum().backward()
            opt.step()
        return rows, rows.full_param("p")

    rows_full, full = run(drop_at=-1)
    rows_cut, cut = run(drop_at=10)
    assert rows_cut.n_active == 3 and rows_cut.params["p"].shape == (3, d)
    assert rows_cut.idx.tolist() == [0, 3, 5] and rows_cut.compactions == 2
    kept = torch.tensor([0, 3, 5])
    assert torch.equal(cut[kept], full[kept])
    # the rows that left are where they were when they left, not where the full run took them
    assert not torch.allclose(cut[[1, 2, 4]], full[[1, 2, 4]])


def test_recorder_count_drives_compaction_and_min_drop():
    target = torch.zeros(8, dtype=torch.long)
    rec = Recorder(target, 10, 0.9)
    x = torch.zeros(8, 2, requires_grad=True)
    rows = ActiveRows(torch.optim.SGD([x], lr=0.1), {"x": x}, min_drop=0.5)
    assert not rows.update(rec)  # no sync yet: nothing known
    probs = torch.full((8, 2), 0.5)
    probs[:3] = torch.tensor([1.0, 0.0])  # 3 rows reach the target
    rec.observe(0, x, probs, {})
    assert rec.n_halted == 3
    assert not rows.update(rec)  # 3 < 50 % of 8
    probs[3] = torch.tensor([1.0, 0.0])
    rec.observe(1, x, probs, {})
    assert rows.update(rec) and rows.n_active == 4
    assert rows.idx.tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="min_drop"):
        ActiveRows(None, {"x": x}, min_drop=1.5)


def test_non_elementwise_optimizer_state_is_refused():
    p = torch.zeros(4, 3, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.1)
    rows = ActiveRows(opt, {"p": p})
    opt.state[p]["odd"] = torch.zeros(7)
    with pytest.raises(ValueError, match="element-wise"):
        rows.keep(torch.tensor([True, False, True, True]))


@pytest.mark.parametrize("name", ["diffeomorphic-vae", "gci", "aip"])
def test_other_methods_shrink_the_batch(name):
    """Every method on ActiveRows passes fewer rows through the classifier once some rows
    finished (the conformance cases: zoo models, 4 digits, runner-up targets)."""
    from method_cases import CASES

    case = CASES[name]()
    m = case.method
    counter = _RowCounter(m.classifier)
    m.classifier = counter
    res = m.explain(case.x, case.target, **{**case.fast, "steps": 60, "confidence": 0.9})
    steps = res.steps
    assert int(steps.min()) + 1 < int(steps.max()), f"setup: rows must finish apart ({steps.tolist()})"
    # the step loop's calls (the path metadata classifies T x B snapshots at once)
    loop = [s for s in counter.sizes if s <= len(case.x)]
    assert loop[0] == len(case.x)  # explain()'s prediction of x: the whole batch
    assert min(loop) < len(case.x)  # after some rows finished, only the others ran
    assert sum(loop) < len(case.x) * (int(steps.max()) + 1)


def test_gan_inversion_drops_converged_rows():
    """invert_generator: rows whose MSE fell below tol leave the decoder's batch (checked
    every 10 steps), and each row's code is what it gets inverted alone."""
    from cfwidgets.models.gan import invert_generator

    torch.manual_seed(0)
    w = torch.randn(6, 16) * 0.3
    sizes: list[int] = []

    def decode(z):
        sizes.append(int(z.shape[0]))
        return torch.sigmoid(z @ w).view(-1, 1, 4, 4)

    z_true = torch.randn(5, 6)
    x = decode(z_true).detach()
    z0 = z_true + torch.tensor([0.05, 0.05, 2.0, 2.0, 3.0])[:, None] * torch.randn(5, 6)
    sizes.clear()
    z, mse = invert_generator(decode, x, z0, steps=400, lr=0.05, tol=1e-4)
    assert bool((mse < 1e-4).all()), "setup: every row converges"
    assert sizes[0] == 5 and min(sizes) < 5
    assert sum(sizes) < 5 * len(sizes)
    for i in range(5):
        zi, mi = invert_generator(decode, x[i:i + 1], z0[i:i + 1], steps=400, lr=0.05, tol=1e-4)
        assert torch.allclose(zi[0], z[i], atol=1e-5), i


def _plateau_run(patience, steps=120):
    """A loop of 3 rows through the Recorder with hand-made losses and probabilities: row 0
    reaches the confidence at step 10; row 1 is on the target class but its loss stops
    falling at step 20 (a plateau below the confidence); row 2 never reaches the target
    class and is flat from the start."""
    target = torch.tensor([1, 1, 1])
    rec = Recorder(target, steps, 0.99, None, None, patience=patience)
    for step in range(steps):
        x = torch.full((3, 1, 2, 2), float(step))
        p1 = torch.tensor([0.995 if step >= 10 else 0.6, 0.9, 0.2])
        probs = torch.stack([1 - p1, p1], 1)
        loss = torch.tensor([1.0 / (step + 1), max(1.0 - step / 20, 0.05), 2.0])
        # noise far below the 1 % tolerance must not keep a settled row going
        loss[1] += 1e-5 * ((-1) ** step)
        if rec.observe(step, x, probs, {"loss": loss}):
            break
    return rec, rec.finish(x, probs)


def test_plateau_stop_halts_a_valid_row_whose_loss_stopped_falling():
    rec, (x_cf, _) = _plateau_run(patience=25)
    assert rec.settled.tolist() == [False, True, False]
    assert rec.done.tolist() == [True, False, False]
    # row 1's loss last fell by 1 % at step 19 (0.05 from then on): it settles at 19 + 25
    assert rec.steps_used.tolist() == [10, 44, 120]
    # it keeps the iterate of the step it settled at (x = step here); row 2, never on the
    # target class, ran the whole budget
    assert x_cf[:, 0, 0, 0].tolist() == [10.0, 44.0, 119.0]
    rec0, (x0, _) = _plateau_run(patience=0)
    assert not bool(rec0.settled.any()) and rec0.steps_used.tolist() == [10, 120, 120]


def test_plateau_stop_waits_for_an_iterate_that_still_moves_with_patience_move():
    """``patience_move``: a row whose loss is flat but whose iterate still drifts (e.g. a
    categorical code relaxing back) is not on a plateau until the drift stops."""
    target = torch.tensor([1, 1])

    def run(move):
        rec = Recorder(target, 150, 0.99, None, None, patience=25, patience_move=move)
        probs = torch.tensor([[0.1, 0.9], [0.1, 0.9]])
        for step in range(150):
            # row 0 drifts by 0.01 a step until step 60, row 1 never moves; both losses are
            # flat from step 20 on
            x = torch.tensor([min(step, 60) * 0.01, 0.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
            loss = torch.full((2,), max(1.0 - step / 20, 0.05))
            if rec.observe(step, x, probs, {"loss": loss}):
                break
        return rec

    assert run(0.0).steps_used.tolist() == [44, 44]
    # row 0 moved by more than 0.05 since its last progress every 5 or 6 steps (float
    # rounding decides), the last time in steps 55-60: it settles 25 steps after that
    s0, s1 = run(0.05).steps_used.tolist()
    assert 80 <= s0 <= 85 and s1 == 44, (s0, s1)
    with pytest.raises(ValueError, match="patience_move"):
        Recorder(target, 10, 0.9, patience=5, patience_move=-1.0)


def test_plateau_stop_refuses_bad_settings():
    with pytest.raises(ValueError, match="patience"):
        Recorder(torch.tensor([0]), 10, 0.9, patience=-1)
    with pytest.raises(ValueError, match="patience_tol"):
        Recorder(torch.tensor([0]), 10, 0.9, patience=5, patience_tol=1.5)


def test_loss_curves_average_the_finite_rows_and_keep_shared_terms():
    """The curves are reduced when read: per step, the mean of a per-row term over the rows
    where it is finite (NaN when no row is), a term shared by the batch as given."""
    rec = Recorder(torch.tensor([1, 1]), 3, 0.99)
    probs = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    rows = [torch.tensor([1.0, 3.0]), torch.tensor([2.0, float("nan")]),
            torch.tensor([float("inf"), float("nan")])]
    for step, v in enumerate(rows):
        rec.observe(step, torch.zeros(2, 1, 1, 1), probs, {"loss": v, "lr": torch.tensor(0.1 * step)})
    curve = [float(c) for c in rec.losses["loss"]]
    assert curve[:2] == [2.0, 2.0] and math.isnan(curve[2])
    assert [round(float(c), 6) for c in rec.losses["lr"]] == [0.0, 0.1, 0.2]


@pytest.mark.parametrize("name", ["wachter", "gci", "diffeomorphic-vae"])
def test_recorder_quiet_path_equals_the_exact_masks(name, monkeypatch):
    """On a CPU the Recorder skips its per-row masks on a step where one host read says
    nothing happened; a run that takes the exact masks every step ends the same, row for
    row: answers, steps, probabilities, settled rows and loss curves (the conformance
    cases: zoo models, 4 digits, runner-up targets, rows that finish apart)."""
    from method_cases import CASES

    def run():
        case = CASES[name]()
        return case.method.explain(case.x, case.target, **{**case.fast, "steps": 60, "confidence": 0.9})

    quiet = run()
    monkeypatch.setattr(Recorder, "_quiet", lambda self, *a: False)
    exact = run()
    assert int(quiet.steps.min()) + 1 < int(quiet.steps.max()), f"setup: rows must finish apart ({quiet.steps.tolist()})"
    assert torch.equal(quiet.x_cf, exact.x_cf) and torch.equal(quiet.probs_cf, exact.probs_cf)
    assert quiet.steps.tolist() == exact.steps.tolist()
    for key in ("settled", "nonfinite"):
        if key in exact.meta:
            assert torch.equal(quiet.meta[key], exact.meta[key]), key
    assert quiet.losses.keys() == exact.losses.keys()
    for k in exact.losses:
        assert torch.equal(torch.tensor(quiet.losses[k]).nan_to_num(-1.0), torch.tensor(exact.losses[k]).nan_to_num(-1.0)), k

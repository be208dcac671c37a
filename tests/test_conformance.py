"""The conformance suite: every registered method passes the same checks.

Driven by tests/method_cases.py (one small set-up per method / variant).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from method_cases import CASES

from cfwidgets.config import knobs, validate
from cfwidgets.methods import METHODS
from cfwidgets.result import CounterfactualResult

CASE_NAMES = sorted(CASES)


@pytest.fixture(scope="module", params=CASE_NAMES)
def case(request):
    return CASES[request.param]()


def _is_text(case) -> bool:
    return isinstance(case.x, list)


def _run(case, x=None, target=None, **kw):
    args = {**case.fast, **kw}
    return case.method.explain(case.x if x is None else x, case.target if target is None else target, **args)


# ------------------------------------------------------------------ registry / knobs
def test_every_registered_method_has_a_case():
    for name in METHODS:
        assert any(c == name or c.startswith(name + "-") for c in CASES), (
            f"method {name!r} has no conformance case in tests/method_cases.py"
        )


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_knob_has_range_and_doc(name):
    cls = METHODS[name]
    assert dataclasses.is_dataclass(cls.Config)
    params = cls.Config.__dataclass_params__
    assert params.frozen, f"{name}.Config must be a frozen dataclass"
    for k in knobs(cls.Config):
        assert k.doc and len(k.doc) > 10, f"{name}.{k.name} needs a doc"
        if k.kind in ("int", "float"):
            assert k.min is not None and k.max is not None, f"{name}.{k.name} needs min and max"
            assert k.min <= k.default <= k.max or (k.default is None and k.optional)
        elif k.kind == "sequence":
            assert k.min is not None and k.max is not None, f"{name}.{k.name} needs min and max"
        elif k.kind == "choice":
            assert k.default in k.choices
        else:
            assert k.kind == "bool" or k.optional, f"{name}.{k.name}: unsupported knob kind {k.kind}"
    validate(cls.Config())  # defaults are in range
    assert cls.paper, f"{name} must cite its paper"


# ------------------------------------------------------------------------ behaviour
def test_result_types_cpu_detached(case):
    res = _run(case)
    assert isinstance(res, CounterfactualResult)
    n = len(case.x)
    assert len(res) == n and res.target.shape == (n,)
    assert res.probs.shape == res.probs_cf.shape and res.probs.shape[0] == n
    tensors = [res.target, res.probs, res.probs_cf]
    if not _is_text(case):
        tensors += [res.x, res.x_cf]
        assert res.x_cf.shape == case.x.shape
        assert float(res.x_cf.min()) >= -1e-6 and float(res.x_cf.max()) <= 1 + 1e-6
        assert res.trajectory is not None and res.trajectory.shape[1:] == case.x.shape
        assert len(res.trajectory_steps) == res.trajectory.shape[0]
    for t in tensors:
        assert t.device.type == "cpu" and not t.requires_grad
    assert torch.allclose(res.probs_cf.sum(1), torch.ones(n), atol=1e-4)
    assert res.meta["method"] in METHODS
    assert res.meta["config"] and "seed" in res.meta and res.meta["wall_time_s"] > 0
    assert "loss" in res.losses and len(res.losses["loss"]) >= 1
    assert repr(res).startswith("CounterfactualResult(")
    assert "<table" in res._repr_html_()


def test_batch_equals_one_by_one(case):
    batch = _run(case)
    singles = [_run(case, case.x[i:i + 1], case.target[i:i + 1]) for i in range(len(case.x))]
    for i, single in enumerate(singles):
        assert int(single.pred_cf[0]) == int(batch.pred_cf[i]), f"row {i}: batch and single disagree"
        if _is_text(case):  # the sentence itself, not only its class
            assert single.x_cf[0] == batch.x_cf[i], f"row {i}: {single.x_cf[0]!r} != {batch.x_cf[i]!r}"
        else:
            diff = (single.x_cf[0] - batch.x_cf[i]).abs().mean().item()
            change = (batch.x_cf[i] - batch.x[i]).abs().mean().item()
            assert diff <= case.batch_rtol * change + 1e-4, (
                f"row {i}: mean |batch - single| = {diff:.2e} vs change {change:.2e}")
            # and the batch's row i is single run i's counterfactual, not another row's
            others = [(s.x_cf[0] - batch.x_cf[i]).abs().mean().item() for j, s in enumerate(singles) if j != i]
            assert diff < min(others), f"row {i}: batch row is nearer another query's single run"


def test_same_seed_same_result(case):
    a = _run(case, generator=123)
    b = _run(case, generator=123)
    if _is_text(case):
        assert a.x_cf == b.x_cf
    else:
        assert torch.allclose(a.x_cf, b.x_cf, atol=1e-6)
    assert a.meta["seed"] == 123


def test_explain_keeps_no_per_call_state_on_the_method(case):
    # two widgets may share one method object: whatever one call learns (e.g. which rows
    # were cut to fit) goes into its result, never onto the method
    before = dict(vars(case.method))
    _run(case)
    added = sorted(set(vars(case.method)) - set(before))
    changed = sorted(k for k in before if vars(case.method)[k] is not before[k])
    assert not added and not changed, f"explain() set {added + changed} on the method"


def test_callback_stops_early_and_result_says_so(case):
    seen = []

    def cb(step, state):
        seen.append(step)
        assert state.probs.shape[0] == len(case.x)
        assert state.done.dtype == torch.bool
        return step >= 2

    res = _run(case, callback=cb)
    assert res.stopped is True
    assert seen[-1] == 2 and len(seen) <= 3 + 1
    assert "stopped" in res._repr_html_()


def test_to_device_roundtrip(case):
    m = case.method
    models = m.modules()
    # every model the method holds is one that .to() moves: the classifier and each
    # nn.Module component (a model left behind would meet its inputs on another device)
    held = [m.classifier] + [v for v in m.components.values() if isinstance(v, torch.nn.Module)]
    assert {id(v) for v in held} <= {id(v) for v in models.values()}, sorted(models)
    calls = []

    def spy(name, orig):
        def to(*a, **k):
            calls.append((name, a, k))
            return orig(*a, **k)
        return to

    for name, mod in models.items():
        mod.to = spy(name, mod.to)
    try:
        assert m.to("cpu") is m
    finally:
        for mod in models.values():
            del mod.to
    assert sorted(c[0] for c in calls) == sorted(models), calls
    assert all(torch.device(c[1][0]) == torch.device("cpu") for c in calls), calls
    assert m.device.type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        m.to("cuda")
        res = _run(case)
        assert res.x_cf.device.type == "cpu" and res.meta["device"].startswith("cuda")
        m.to("cpu")


def test_models_untouched_and_mode_restored(case):
    clf = case.method.classifier
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    requires = {k: p.requires_grad for k, p in clf.named_parameters()}
    clf.train()
    try:
        with pytest.warns(UserWarning, match="train mode"):
            _run(case)
        assert clf.training, "the classifier's train mode must be restored"
    finally:
        clf.eval()
    after = clf.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"explain() changed the classifier's {k}"
    assert all(p.grad is None for p in clf.parameters()), "gradients leaked into the classifier"
    after_req = {k: p.requires_grad for k, p in clf.named_parameters()}
    assert after_req == requires, "explain() changed which classifier parameters require grad"


# ------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors(case):
    if _is_text(case):
        pytest.skip("text methods have their own bad-input tests")
    x, t = case.x, case.target
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        _run(case, x[0], t[:1])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        _run(case, bad)
    with pytest.raises(TypeError, match="uint8"):
        _run(case, (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _run(case, x * 255)
    with pytest.raises(ValueError, match="out of range"):
        _run(case, target=torch.full_like(t, 99))
    with pytest.raises(ValueError, match="already predicts"):
        _run(case, target=case.method.classifier(x).argmax(1))
    with pytest.raises(ValueError, match="one class or one per row"):
        _run(case, target=t[:2])
    with pytest.raises(TypeError, match="unknown option"):
        _run(case, no_such_knob=1)
    with pytest.raises(ValueError, match="must be"):
        _run(case, steps=-5)


def test_probability_classifier_is_refused(case):
    if _is_text(case):
        pytest.skip("text methods have their own bad-input tests")
    clf = case.method.classifier

    class Softmaxed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = clf
            self.input_shape = getattr(clf, "input_shape", None)

        def forward(self, x):
            return self.inner(x).softmax(-1)

    m = copy.copy(case.method)
    m.classifier = Softmaxed()
    with pytest.raises(ValueError, match="probabilities"):
        m.explain(case.x, case.target, **case.fast)

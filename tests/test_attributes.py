"""GCI / AIP on digits: flip rates, sparsity, locks, meta, knobs; the attribute spec and
the AIP objective. Uses the shipped (or cached) zoo checkpoints: mnist/cnn, mnist/cvae."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from cfwidgets import zoo
from cfwidgets.data import load_mnist, morphometrics
from cfwidgets.methods import AIP, GCI
from cfwidgets.metrics import evaluate
from cfwidgets.metrics.attributes import ATTRIBUTE_METRICS, attrs_changed, top_share
from cfwidgets.models.conditional import LOCK_WEIGHT, AttributeSpec, project_simplex

N_HELD_OUT = 40  # held-out digits, 4 per class


@lru_cache(maxsize=1)
def models():
    return (zoo.load("mnist/cnn", device="cpu", progress=False),
            zoo.load("mnist/cvae", device="cpu", progress=False))


@lru_cache(maxsize=1)
def queries():
    clf, _ = models()
    x = load_mnist("test").subset(N_HELD_OUT, seed=3).x
    with torch.no_grad():
        t = clf(x).topk(2, dim=1).indices[:, 1]
    return x, t


@lru_cache(maxsize=4)
def run(method: str, **knobs):
    clf, gen = models()
    x, t = queries()
    cls = GCI if method == "gci" else AIP
    return cls(clf, gen).explain(x, t, **knobs)


# ------------------------------------------------------------------ pure pieces
def test_project_simplex():
    v = torch.tensor([[0.2, 0.9, -0.3], [1.0, 1.0, 1.0], [0.0, 0.0, 5.0]])
    p = project_simplex(v)
    assert torch.allclose(p.sum(1), torch.ones(3))
    assert (p >= 0).all()
    assert torch.allclose(p[1], torch.full((3,), 1 / 3))
    assert torch.allclose(p[2], torch.tensor([0.0, 0.0, 1.0]))
    one_hot = torch.eye(3)
    assert torch.allclose(project_simplex(one_hot), one_hot)


def _spec() -> AttributeSpec:
    return AttributeSpec(names=("size", "on", "kind"), kinds=("continuous", "binary", "categorical"),
                         units=("px", "", ""), categories=(None, None, ("a", "b", "c")),
                         mean=(10.0, 0.0, 0.0), std=(2.0, 1.0, 1.0), low=(-2.0, 0.0, 0.0), high=(2.0, 1.0, 1.0))


def test_spec_natural_roundtrip_changes_and_cost():
    s = _spec()
    assert s.dim == 5 and s.sizes == [1, 1, 3]
    nat = torch.tensor([[12.0, 1.0, 2.0], [8.0, 0.0, 0.0]])
    a = s.from_natural(nat)
    assert torch.allclose(s.to_natural(a), nat)
    a1 = a.clone()
    a1[0, 0] += 1.0  # +1 std = +2 px
    a1[0, 2:] = torch.tensor([0.5, 0.5, 0.0])  # half the mass from c to a and b
    ch = s.changes(a, a1)
    assert torch.allclose(ch[0], torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(s.natural_deltas(a, a1)[0], torch.tensor([2.0, 0.0, 1.0]))
    w = s.weights({"size": 3.0})
    assert torch.allclose(s.cost(a1, a, w), torch.tensor([4.0, 0.0]))
    assert s.project(torch.tensor([[5.0, 2.0, 0.2, 0.9, -0.3]]))[0, :2].tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="one weight per attribute"):
        s.weights((1.0, 2.0))
    with pytest.raises(ValueError, match="unknown attribute"):
        s.weights({"colour": 1.0})
    lines = s.describe(a, a1)[0]
    assert lines[0] == "size +2.00 px" and "kind c" in lines[1]


def test_aip_objective_terms():
    from cfwidgets.methods.aip import aip_objective

    s = _spec()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([1, 1])
    z0 = torch.zeros(2, 3)
    z = torch.ones(2, 3)
    a0 = s.from_natural(torch.tensor([[10.0, 0.0, 0.0], [10.0, 0.0, 0.0]]))
    a = a0.clone()
    a[:, 0] += 0.5
    parts = aip_objective(logits, target, z, z0, a, a0, s, beta_z=0.1, beta_a=2.0)
    assert torch.allclose(parts["latent"], torch.tensor([3.0, 3.0]))
    assert torch.allclose(parts["attributes"], torch.tensor([0.5, 0.5]))
    expect = parts["class"] + 0.1 * 3.0 + 2.0 * 0.5
    assert torch.allclose(parts["loss"], expect)
    assert parts["class"][0] > parts["class"][1]


# ------------------------------------------------------------------- on digits
# GCI moves only the attributes; since mnist/cvae version 3 (a latent read off the image
# alone) its digit code re-labels 68 % of digits instead of 75 %, and GCI flips 34 of these
# 40 (96 of the figures' 100): its bar is 0.85 (measured 0.85), AIP's 0.9 (measured 1.0)
@pytest.mark.parametrize(("method", "bar"), [("gci", 0.85), ("aip", 0.9)])
def test_flip_rate_on_held_out_digits(method, bar):
    res = run(method)
    rate = float(res.success.float().mean())
    assert rate >= bar, f"{method} flip rate {rate:.2f} on {N_HELD_OUT} held-out digits"


def test_aip_reaches_the_runner_up_with_the_digit_code_locked():
    """Issue 11, item 4: with the digit code locked AIP still flips the held-out digits to
    their runner-up class through the latent, and the independent oracle (mnist/oracle, a
    model no method steers with) reads most of them as that class; GCI, which has only the
    attributes to move, reaches far fewer (style alone rarely makes another digit)."""
    clf, gen = models()
    x, t = queries()
    lock = {"attribute_weights": {"digit": LOCK_WEIGHT}}
    res = AIP(clf, gen).explain(x, t, **lock)
    assert not bool(res.meta["class_code_changed"].any())
    assert float(res.meta["latent_distance"].min()) > 0
    valid = float(res.success.float().mean())
    oracle = zoo.load("mnist/oracle", device="cpu", progress=False)
    with torch.no_grad():
        agree = float((oracle(res.x_cf).argmax(1) == t).float().mean())
    assert valid >= 0.9, valid  # measured 1.0
    assert agree >= 0.6, agree  # measured 0.725
    gci = GCI(clf, gen).explain(x, t, **lock)
    assert float(gci.success.float().mean()) < valid - 0.3  # measured 0.3


def test_gci_change_is_sparse_in_attribute_space():
    res = run("gci")
    ok = res.success
    top2 = float(top_share(res, 2)[ok].mean())
    n_changed = float(attrs_changed(res)[ok].mean())
    assert top2 >= 0.8, f"the two largest attribute changes carry only {top2:.0%} of the change"
    assert n_changed <= 3.0, f"{n_changed:.1f} of 6 attributes changed on average"
    row = evaluate(res, extra=ATTRIBUTE_METRICS)
    assert row["top1_share"] > 0.5 and row["attr_l1"] > 0


def test_meta_carries_attributes_by_name_in_natural_units():
    res = run("gci")
    m = res.meta
    assert m["attribute_names"] == ["thickness", "slant", "width", "height", "area", "digit"]
    assert m["attribute_units"][:2] == ["px", "deg"]
    before, after, delta = m["attributes_before"], m["attributes_after"], m["attribute_deltas"]
    assert before.shape == after.shape == (len(res), 6)
    # the continuous "before" values are the measured morphometrics of the query
    x, _ = queries()
    assert torch.allclose(before[:, :5], morphometrics(x), atol=1e-3)
    assert torch.allclose(delta[:, :5], after[:, :5] - before[:, :5], atol=1e-4)
    # the digit is reported by index; the query's class according to the generator
    assert ((before[:, 5] >= 0) & (before[:, 5] <= 9)).all()
    assert isinstance(m["per_row_changes"][0], list)
    assert m["a_path"].shape[:2] == (len(res), len(res.trajectory_steps))
    one = res[2]
    assert one.meta["attributes_after"].shape == (1, 6)
    assert one.meta["per_row_changes"] == [m["per_row_changes"][2]]


def test_locking_keeps_an_attribute_and_still_flips():
    base = run("gci")
    # lock the continuous attribute GCI changes most when free
    ch = base.meta["attribute_changes"][:, :5].abs().mean(0)
    name = base.meta["attribute_names"][int(ch.argmax())]
    clf, gen = models()
    x, t = queries()
    x, t, base = x[:20], t[:20], base[:20]
    gci = GCI(clf, gen)
    res = gci.explain(x, t, attribute_weights={name: LOCK_WEIGHT})
    i = res.meta["attribute_names"].index(name)
    assert (res.meta["attribute_changes"][:, i] == 0).all()  # not optimised at all
    # re-measured on the images: the locked attribute stays near the reconstruction's value
    spec = gci.attribute_spec
    moved = (morphometrics(res.x_cf)[:, i] - morphometrics(res.meta["x_rec"])[:, i]).abs() / spec.std[i]
    free_moved = (morphometrics(base.x_cf)[:, i] - morphometrics(base.meta["x_rec"])[:, i]).abs() / spec.std[i]
    assert float(moved.median()) <= 0.25, f"locked {name} moved {float(moved.median()):.2f} std"
    assert float(moved.mean()) < float(free_moved.mean())
    assert float(res.success.float().mean()) >= 0.8


def test_digit_locked_gives_style_only_explanations():
    clf, gen = models()
    x, t = queries()
    res = GCI(clf, gen).explain(x[:8], t[:8], attribute_weights={"digit": LOCK_WEIGHT}, steps=60)
    assert (res.meta["attribute_changes"][:, 5] == 0).all()
    assert all("digit" not in " ".join(c) for c in res.meta["per_row_changes"])
    assert res.meta["locked"] == ["digit"]


def test_aip_optimise_modes():
    clf, gen = models()
    x, t = queries()
    aip = AIP(clf, gen)
    rz = aip.explain(x[:4], t[:4], optimise="z", steps=40)
    assert torch.equal(rz.meta["a_cf"], rz.meta["a0"])
    assert float(rz.meta["latent_distance"].max()) > 0
    ra = aip.explain(x[:4], t[:4], optimise="a", steps=40)
    assert torch.equal(ra.meta["z_cf"], ra.meta["z0"])
    assert float(ra.meta["attribute_changes"].abs().sum()) > 0


def test_restarts_pick_a_valid_copy_and_batch_equals_single():
    clf, gen = models()
    x, t = queries()
    gci = GCI(clf, gen)
    res = gci.explain(x[:3], t[:3], restarts=3, steps=60)
    assert res.meta["restart"].shape == (3,)
    single = gci.explain(x[1:2], t[1:2], restarts=3, steps=60)
    assert torch.allclose(single.meta["a_cf"][0], res.meta["a_cf"][1], atol=1e-4)


def test_bad_attribute_weights_raise_clear_errors():
    clf, gen = models()
    x, t = queries()
    gci = GCI(clf, gen)
    with pytest.raises(ValueError, match="one weight per attribute"):
        gci.explain(x[:1], t[:1], attribute_weights=(1.0, 2.0), steps=2)
    with pytest.raises(ValueError, match="unknown attribute"):
        gci.explain(x[:1], t[:1], attribute_weights={"colour": 2.0}, steps=2)
    with pytest.raises(TypeError, match="conditional generator"):
        GCI(clf, torch.nn.Linear(2, 2))


def test_generator_control_quality_recorded():
    _, gen = models()
    ctrl = gen.zoo_meta["metrics"]["control"]
    for name in ("thickness", "slant", "area"):
        assert ctrl[name]["corr"] >= 0.8, (name, ctrl[name])
        assert ctrl[name]["class_kept"] >= 0.85, (name, ctrl[name])
    assert ctrl["digit"]["accuracy"] >= 0.6  # 0.682: the latent carries part of the class


# AIP's plateau stop acts where a proximity term balances the class term; at its default
# beta_z = 0 the rows reach the confidence or keep moving (none settled on these 40), so
# AIP is tested with a latent proximity (the former defaults beta_z = 0.1, lr = 0.05)
PLATEAU_KNOBS = {"gci": {}, "aip": {"beta_z": 0.1, "lr": 0.05}}


@pytest.mark.parametrize("method", ["gci", "aip"])
def test_plateau_stop_cuts_the_steps_and_keeps_the_answers(method):
    """The default plateau stop (``patience=50``, ``patience_move=0.002``): queries settled
    where the class and sparsity terms balance (and the image stopped moving) end early,
    flagged, and the batch's validity and predictions stay as with ``patience=0``."""
    knobs = PLATEAU_KNOBS[method]
    full, early = run(method, patience=0, **knobs), run(method, **knobs)
    assert "settled" not in full.meta and int(full.steps.float().mean()) == 300, full.steps
    settled = early.meta["settled"]
    assert float(settled.float().mean()) >= 0.3, settled
    assert bool((early.steps[settled] < 300).all())
    assert float(early.steps.float().mean()) < 0.9 * 300, early.steps
    assert float(early.success.float().mean()) >= float(full.success.float().mean()) - 0.05
    assert float((early.pred_cf == full.pred_cf).float().mean()) >= 0.9
    assert float((early.x_cf - full.x_cf).abs().mean()) < 0.02

"""Diffeomorphic counterfactuals: the shipped generative models, the method, the paper's
claim (latent counterfactuals convince an independent oracle and stay probable under the
flow; pixel ones do not), the manifold metrics and the widget.

Everything here loads the shipped checkpoints (no full training); the reduced-budget
retrains of these recipes run in tests/test_zoo.py.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from cfwidgets import zoo
from cfwidgets.data import load_fashion, load_mnist
from cfwidgets.methods import Wachter
from cfwidgets.methods.diffeomorphic import DiffeomorphicCounterfactual, compare_pixel_space
from cfwidgets.metrics import evaluate
from cfwidgets.metrics.manifold import (
    bits_per_dim_cf,
    decoder_tangent_basis,
    manifold_metrics,
    random_tangent_fraction,
    tangent_fraction,
)

warnings.filterwarnings("ignore", message=".*torch.lu.*")

# the fixed sample of the claim tests: held-out digits (balanced over classes) and a
# random target != the CNN's prediction for each (seeded), the same pairs for every arm
N_PAIRS = 40


def _load(name):
    return zoo.load(name, device="cpu", progress=False)


@pytest.fixture(scope="module")
def clf():
    return _load("mnist/cnn")


@pytest.fixture(scope="module")
def flow():
    return _load("mnist/flow")


@pytest.fixture(scope="module")
def vae():
    return _load("mnist/vae")


@pytest.fixture(scope="module")
def gan():
    return _load("mnist/gan")


@pytest.fixture(scope="module")
def pairs(clf):
    te = load_mnist("test").subset(N_PAIRS, seed=0)
    with torch.no_grad():
        pred = clf(te.x).argmax(1)
    g = torch.Generator().manual_seed(0)
    target = (pred + torch.randint(1, 10, (N_PAIRS,), generator=g)) % 10
    return te.x, target


@pytest.fixture(scope="module")
def results(clf, flow, vae, pairs):
    """Flow, VAE and pixel counterfactuals of the same pairs with the paper's loss (the class
    term alone, ``prior_weight=0``, run to 0.99 or the budget, ``patience=0``: these tests
    check the paper's claims; the default's pull towards likely latents is checked by target
    kind below), other knobs default."""
    x, t = pairs
    paper = {"prior_weight": 0.0, "patience": 0}
    out = {"flow": DiffeomorphicCounterfactual(clf, flow).explain(x, t, **paper),
           "vae": DiffeomorphicCounterfactual(clf, vae, density_model=flow).explain(x, t, **paper)}
    cfg = DiffeomorphicCounterfactual.Config()
    out["pixels"] = Wachter(clf).explain(x, t, steps=cfg.steps, lr=cfg.lr, confidence=cfg.confidence,
                                         proximity_weight=0.0)
    return out


# ------------------------------------------------------------------ shipped models
@pytest.mark.parametrize("name", ["mnist/flow", "fashion/flow", "mnist/vae", "mnist/gan"])
def test_shipped_weights_load_without_cache(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CFWIDGETS_CACHE", str(tmp_path))
    m = zoo.load(name, device="cpu", train=False, progress=False)
    assert m.zoo_meta["source"] == "shipped"
    assert not m.zoo_meta["reduced"]
    assert zoo.get_recipe(name).check(m.zoo_meta["metrics"]) is None


@pytest.mark.parametrize("name,loader", [("mnist/flow", load_mnist), ("fashion/flow", load_fashion)])
def test_flow_round_trip_and_density(name, loader):
    flow = _load(name)
    x = loader("test").x[:64]
    with torch.no_grad():
        z = flow.encode(x)
        x_back = flow.decode(z)
        assert z.shape == (64, 784)
        assert (x_back - x).abs().max() < 1e-4
        # change of variables both ways: log p from the inverse pass == from the forward pass
        _, lp_fwd = flow.decode_with_log_prob(z)
        lp_inv = flow.log_prob(x)
        assert torch.allclose(lp_fwd, lp_inv, rtol=1e-4, atol=0.5)
        # the recorded held-out bits/dim is what the shipped weights give (other noise draw)
        from cfwidgets.zoo.recipes.generative import flow_test_bpd

        bpd = flow_test_bpd(flow, loader("test").x[:500], seed=7)
    recorded = flow.zoo_meta["metrics"]["test_bpd"]
    assert abs(bpd - recorded) < 0.1, (bpd, recorded)
    assert bpd < {"mnist/flow": 2.2, "fashion/flow": 4.2}[name]


def test_gan_inversion_warm_start_beats_random(gan):
    x = load_mnist("test").x[:16]
    _, mse_enc = gan.invert(x, steps=100, tol=0.0, init="encoder")
    _, mse_rnd = gan.invert(x, steps=100, tol=0.0, init="random", generator=torch.Generator().manual_seed(0))
    assert mse_enc.mean() < mse_rnd.mean()
    assert mse_enc.mean() < 0.03
    assert all(p.grad is None for p in gan.parameters()), "inversion must not touch the weights' grads"


# ---------------------------------------------------------------------- the method
def test_flow_counterfactuals_reach_the_target(results):
    """>= 90% of held-out (digit, random target) pairs within the default budget."""
    res = results["flow"]
    assert res.success.float().mean() >= 0.9
    assert res.meta["config"]["steps"] == DiffeomorphicCounterfactual.Config().steps


@pytest.mark.slow
def test_flow_counterfactuals_convince_the_independent_oracle_by_target_kind(clf, flow):
    """Issue 11's bars for the flow, with the default knobs, on 40 held-out digits: the
    independent oracle (``mnist/oracle``, no method steers with it) reads the flow's
    counterfactual as the target for >= 70 % of runner-up targets and >= 50 % of far
    ones ((label + 3) mod 10). Measured: 97.5 / 72.5 % (the paper's pure class ascent,
    ``prior_weight=0``: 65 / 40 %); and no more than 2 of the 80 rows flagged unstable."""
    oracle = _load("mnist/oracle")
    te = load_mnist("test").subset(40, seed=0)
    x, y = te.x, torch.as_tensor(te.y)
    with torch.no_grad():
        p = clf(x)
    runner_up = p.topk(2, 1).indices[:, 1]
    far = (y + 3) % 10
    far = torch.where(far == p.argmax(1), (far + 1) % 10, far)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = DiffeomorphicCounterfactual(clf, flow).explain(
            torch.cat([x, x]), torch.cat([runner_up, far]), path_density=False)
    agree = evaluate(res[:40], oracle=oracle)["oracle"], evaluate(res[40:], oracle=oracle)["oracle"]
    assert res.success.float().mean() >= 0.95, res.success
    assert agree[0] >= 0.7 and agree[1] >= 0.5, agree
    assert int(res.meta["unstable"].sum()) <= 2, res.meta["unstable"]


def test_paper_claim_oracle_agrees_more_for_latent_counterfactuals(results):
    oracle = _load("mnist/oracle")
    agree = {k: evaluate(r, oracle=oracle)["oracle"] for k, r in results.items()}
    assert agree["flow"] >= agree["pixels"] + 0.3, agree
    assert agree["vae"] >= agree["pixels"] + 0.3, agree


def test_paper_claim_latent_counterfactuals_are_more_probable(results, flow):
    """Scored alike (metrics.manifold: 8-bit grid, dequantised), latent counterfactuals
    stay within a bit per pixel of the real digits they came from; pixel ones do not. The
    old raw scoring had counterfactuals look *more* probable than real digits (2.97 vs
    3.5): that was the grid artefact. Measured on these 40 pairs: queries 1.78, flow 2.53,
    VAE 2.02, pixels 10.2 (medians; means are swamped by a few rows in the thousands)."""
    from cfwidgets.metrics.manifold import bits_per_dim_query

    bpd = {k: bits_per_dim_cf(r, flow) for k, r in results.items()}
    med = {k: float(v.median()) for k, v in bpd.items()}
    query = float(bits_per_dim_query(results["flow"], flow).median())
    assert med["flow"] < med["pixels"] - 3.0, med
    assert med["vae"] < med["pixels"] - 3.0, med
    assert med["flow"] <= query + 1.0, (med, query)
    assert med["vae"] <= query + 0.5, (med, query)
    assert med["pixels"] > query + 5.0, (med, query)


def test_tangent_fraction_latent_above_pixels(results):
    """Judged by mnist/vae-judge (a fully connected VAE, another seed), never by the VAE
    the VAE arm steered with."""
    judge = _load("mnist/vae-judge")
    frac = {k: tangent_fraction(r, judge).mean().item() for k, r in results.items()}
    assert frac["vae"] > frac["pixels"] + 0.2, frac
    assert frac["flow"] > frac["pixels"] + 0.05, frac
    assert frac["pixels"] < 0.6


def test_result_meta_and_path(results):
    res = results["flow"]
    b, t = len(res), len(res.trajectory_steps)
    assert res.meta["z0"].shape == res.meta["z_cf"].shape == (b, 784)
    assert res.meta["path_bpd"].shape == res.meta["path_target_prob"].shape == (b, t)
    # the flow's round-trip guard: every row checked, flagged exactly where it fails
    assert res.meta["roundtrip_error"].shape == (b,)
    assert torch.equal(res.meta["unstable"], ~(res.meta["roundtrip_error"] <= 1e-3))
    # the paper's loss: 1 to 4 of 40 rows measured (the default's pull: none, checked above)
    assert int(res.meta["unstable"].sum()) <= 4
    assert torch.allclose(res.meta["x_rec"], res.x, atol=1e-4)  # the flow's exact inverse
    # the path ends at the counterfactual
    assert torch.allclose(res.trajectory[-1], res.x_cf)
    assert torch.allclose(res.meta["path_target_prob"][:, -1], res.target_prob, atol=1e-4)
    vae_res = results["vae"]
    assert vae_res.meta["rec_mse"].shape == (b,) and "path_bpd" in vae_res.meta  # density from the flow
    # slicing keeps per-row meta aligned
    one = res[3]
    assert one.meta["z_cf"].shape == (1, 784) and one.meta["path_bpd"].shape == (1, t)


def test_callback_sees_latent_and_log_density(clf, flow, pairs):
    x, t = pairs
    seen = {}

    def cb(step, state):
        seen["z"] = state.extra["z"].shape
        seen["lp"] = state.extra["log_density"].shape
        return step >= 1

    res = DiffeomorphicCounterfactual(clf, flow).explain(x[:3], t[:3], callback=cb)
    assert res.stopped and seen == {"z": (3, 784), "lp": (3,)}


def test_straight_through_clip_matches_the_authors_code(clf, vae, pairs):
    """The authors clip x.data, so the gradient passes as if unclipped; clamp's gradient is
    zero wherever g(z) leaves [0, 1]. On a generator whose every pixel lies above 1 the
    clamp arm cannot move z at all and the straight-through arm must."""

    class Saturated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = vae
            self.latent_dim = vae.latent_dim

        def encode(self, x):
            return self.vae.encode(x)

        def decode(self, z):  # pixel values in (1.05, 1.55): all clipped to 1 (at exactly
            return 1.05 + 0.5 * self.vae.decode(z)  # 1.0 clamp would still pass a gradient

    x, t = pairs
    m = DiffeomorphicCounterfactual(clf, Saturated(), kind="vae")
    # prior_weight=0: the prior's pull would move z whatever the class term's gradient
    st = m.explain(x[:3], t[:3], steps=5, clip_gradient="straight_through", prior_weight=0.0)
    cl = m.explain(x[:3], t[:3], steps=5, clip_gradient="clamp", prior_weight=0.0)
    assert float(cl.meta["latent_distance"].max()) == 0.0
    assert float(st.meta["latent_distance"].min()) > 0.0
    assert float(st.x_cf.min()) >= 0 and float(st.x_cf.max()) <= 1


def test_gan_counterfactuals_and_deviation_flag(clf, gan, pairs):
    x, t = pairs
    m = DiffeomorphicCounterfactual(clf, gan)
    assert m.kind == "gan"
    res = m.explain(x[:6], t[:6], steps=300, gan_inversion_steps=200)
    assert res.meta["inversion_mse"].shape == (6,)
    assert float(res.meta["inversion_mse"].mean()) < 0.03
    assert res.success.float().mean() >= 0.5


def test_compare_pixel_space_one_call(clf, flow, pairs):
    x, t = pairs
    out = compare_pixel_space(DiffeomorphicCounterfactual(clf, flow), x[:3], t[:3], steps=60)
    assert list(out) == ["pixels", "flow"]
    assert out["pixels"].meta["config"]["proximity_weight"] == 0.0
    assert out["pixels"].meta["bpd_cf"].shape == (3,) and out["flow"].meta["bpd_cf"].shape == (3,)


def test_from_zoo_and_clear_errors():
    m = DiffeomorphicCounterfactual.from_zoo("mnist", generator="vae", device="cpu")
    assert m.kind == "vae" and m.density_model is not None
    with pytest.raises(ValueError, match="available"):
        DiffeomorphicCounterfactual.from_zoo("fashion", generator="vae", device="cpu")
    with pytest.raises(ValueError, match="generator must be"):
        DiffeomorphicCounterfactual.from_zoo("mnist", generator="diffusion")
    with pytest.raises(TypeError, match="encode"):
        DiffeomorphicCounterfactual(_load("mnist/cnn"), torch.nn.Linear(3, 3))


# ----------------------------------------------------------------------- metrics
def test_tangent_basis_is_orthonormal_and_spans_the_jacobian(vae):
    z0 = vae.encode(load_mnist("test").x[:2])
    q = decoder_tangent_basis(vae.decode, z0)
    assert q.shape == (2, 784, 16)
    eye = torch.eye(16).expand(2, 16, 16)
    assert torch.allclose(q.transpose(1, 2) @ q, eye, atol=1e-4)
    # a small latent step's image change lies (to first order) in the span
    dz = 1e-3 * torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        d = (vae.decode(z0 + dz) - vae.decode(z0)).reshape(2, -1)
    proj = torch.einsum("bpd,bp->bd", q, d)
    assert (proj.norm(dim=1) / d.norm(dim=1)).min() > 0.99
    assert math.isclose(random_tangent_fraction(16), 4 / 28)


def test_manifold_metrics_plug_into_evaluate(results, flow, vae):
    row = evaluate(results["flow"], extra=manifold_metrics(flow, vae))
    assert {"bpd_cf", "delta_bpd", "tangent"} <= set(row)


# ------------------------------------------------------------------------ widget
def test_widget_runs_each_generator_and_the_pixel_baseline(clf, flow, vae, gan):
    from cfwidgets.widgets.diffeomorphic import DiffeomorphicWidget

    w = DiffeomorphicWidget(clf, {"flow": flow, "vae": vae, "gan": gan}, load_mnist("test").x[:5],
                            oracle=_load("mnist/oracle"), defaults={"steps": 40, "gan_inversion_steps": 30})
    assert w.generator == "flow"
    w.pixel_baseline = True
    res = w.run(block=True)
    assert res is not None and w.pixel_result is not None
    assert "bits/dim" in w.manifold_view.value and "pixels" in w.manifold_view.value
    assert "<svg" in w.path_view.value
    for g in ("vae", "gan", "pixels"):
        w.generator = g
        r = w.run(block=True)
        assert r is not None and w.error is None, w.error
    assert w.result.meta["config"]["proximity_weight"] == 0.0  # the pixel arm
    assert repr(w).startswith("DiffeomorphicWidget(")

# The reduced-budget retrains of mnist/flow, fashion/flow, mnist/vae and mnist/gan run in
# tests/test_zoo.py (every recipe against its reduced_check), not twice.


def test_flow_rows_on_a_loss_plateau_settle_early_with_the_same_answer(clf, flow, pairs):
    """The plateau stop (default ``patience=100``). Asked for p = 0.9999, rows that the
    prior's pull holds below it would run the whole budget; with the stop they end once their
    loss has stopped falling, flagged ``settled``, with answers the CNN and the oracle read
    as the run to the budget does."""
    x, t = pairs[0][:6], pairs[1][:6]
    m = DiffeomorphicCounterfactual(clf, flow)
    knobs = dict(confidence=0.9999, steps=600, path_density=False)
    full = m.explain(x, t, patience=0, **knobs)
    early = m.explain(x, t, **knobs)
    plateau = full.steps == 600
    assert int(plateau.sum()) >= 3, f"setup: most rows should stay below 0.9999: {full.steps.tolist()}"
    assert "settled" not in full.meta
    settled = early.meta["settled"]
    assert int(settled.sum()) >= 3, (settled.tolist(), early.steps.tolist())
    assert bool((early.steps[settled] < 600).all())
    assert float(early.steps.float().mean()) < 0.85 * float(full.steps.float().mean()), (
        early.steps.tolist(), full.steps.tolist())
    assert bool(early.success.all()) and bool(full.success.all())
    p_full = full.probs_cf.gather(1, t[:, None])[:, 0]
    p_early = early.probs_cf.gather(1, t[:, None])[:, 0]
    assert float((p_full - p_early).abs().max()) < 0.05, (p_full.tolist(), p_early.tolist())
    oracle = _load("mnist/oracle")
    with torch.no_grad():
        same = oracle(early.x_cf).argmax(1) == oracle(full.x_cf).argmax(1)
    assert int(same.sum()) >= 5, same.tolist()
    assert float((early.x_cf - full.x_cf).abs().mean()) < 0.03

"""The loop copies of cfwidgets/_fused.py: BatchNorm folded, channels-last convolutions.
Same function as the model given, the model itself untouched, a new copy when its weights
change, and the model itself wherever a copy could behave differently."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cfwidgets import zoo
from cfwidgets._fused import FusedCache, fused_copy
from cfwidgets.data import load_mnist
from cfwidgets.methods import Wachter


def _load(name):
    m = zoo.load(name, device="cpu", progress=False)
    return m.eval()


@pytest.fixture(scope="module")
def digits():
    te = load_mnist("test").subset(16, seed=3)
    return te.x, torch.as_tensor(te.y)


def _value_and_input_grad(model, x, call=None):
    call = call or (lambda m, v: m(v))
    v = x.clone().requires_grad_(True)
    out = call(model, v)
    (g,) = torch.autograd.grad(out.float().square().sum(), v)
    return out.detach(), g


def test_cnn_copy_is_the_same_function_without_batchnorm(digits):
    x, _ = digits
    clf = _load("mnist/cnn")
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    fused = fused_copy(clf)
    assert fused is not clf
    # folded: no BatchNorm left on the main path, and the convolutions run channels-last
    trunk_bn = [m for m in fused.trunk if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert trunk_bn == []
    assert fused.trunk[4].weight.is_contiguous(memory_format=torch.channels_last)
    assert fused.trunk[0].weight.stride()[1] == 1  # one input channel, channels-last strides too
    out, grad = _value_and_input_grad(clf, x)
    out_f, grad_f = _value_and_input_grad(fused, x)
    assert torch.allclose(out, out_f, atol=1e-4, rtol=1e-4)
    assert torch.allclose(grad, grad_f, atol=1e-4, rtol=1e-3)
    # the model given is untouched: its BatchNorm layers, weights and layout
    assert isinstance(clf.trunk[1], nn.BatchNorm2d)
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())
    given = {id(p) for p in clf.parameters()}
    assert not any(p.requires_grad for p in fused.parameters() if id(p) not in given)


def test_gan_generator_folds_transposed_convolutions():
    gen = _load("mnist/gan")
    fused = fused_copy(gen)
    assert fused is not gen
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.generator.net)
    assert fused.encoder is gen.encoder  # (nothing to fold there: shared, not copied)
    z = torch.randn(8, gen.latent_dim, generator=torch.Generator().manual_seed(0))
    out, grad = _value_and_input_grad(gen, z, lambda m, v: m.decode(v))
    out_f, grad_f = _value_and_input_grad(fused, z, lambda m, v: m.decode(v))
    assert torch.allclose(out, out_f, atol=1e-4)
    assert torch.allclose(grad, grad_f, atol=1e-3, rtol=1e-3)
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gen.modules())
    n_bn_fused = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert n_bn >= 2 and n_bn_fused < n_bn
    # new weights never ask for a gradient (the loop wants the latent's only)
    given = {id(p) for p in gen.parameters()}
    assert not any(p.requires_grad for p in fused.parameters() if id(p) not in given)


def test_linear_batchnorm_pair_keeps_its_meaning_on_3d_input():
    """BatchNorm1d after a Linear normalises the features of (N, F) input but dimension 1 of
    (N, C, L) input: the folded pair must only be used for the former."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 2)
    net.eval()
    fused = fused_copy(net)
    assert fused is not net
    x2, x3 = torch.randn(5, 6), torch.randn(5, 6, 6)
    assert torch.allclose(fused(x2), net(x2), atol=1e-5)
    assert torch.allclose(fused(x3), net(x3), atol=1e-6)


def test_grouped_transposed_convolution_is_left_alone():
    torch.manual_seed(2)
    net = nn.Sequential(nn.ConvTranspose2d(4, 4, 3, groups=2), nn.BatchNorm2d(4))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].weight.uniform_(0.5, 2)
    net.eval()
    fused = fused_copy(net)
    x = torch.randn(2, 4, 5, 5)
    assert isinstance(fused[1], nn.BatchNorm2d)
    assert torch.allclose(fused(x), net(x), atol=1e-6)


def test_hooks_and_train_mode_get_the_model_itself(digits):
    """A user's probe (a forward hook) must see the loop's passes; a model in train mode
    is not folded (its BatchNorm is not a fixed map)."""
    x, y = digits
    clf = _load("mnist/cnn")
    seen = []
    handle = clf.trunk[4].register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    try:
        assert fused_copy(clf) is clf
        Wachter(clf).explain(x[:4], (y[:4] + 1) % 10, steps=5)
        assert len(seen) >= 6  # explain's own pass, five steps' passes and the answer's
    finally:
        handle.remove()
    clf.train()
    assert fused_copy(clf) is clf
    clf.eval()
    assert fused_copy(clf) is not clf


def test_shared_python_state_still_sees_every_call():
    """Only changed submodules are new: a wrapper that logs its calls in a list logs the
    copy's calls too."""

    class Logged(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, []

        def forward(self, x):
            self.calls.append(x.shape[0])
            return self.inner(x)

    logged = Logged(_load("mnist/cnn")).eval()
    fused = fused_copy(logged)
    assert fused is not logged and fused.inner is not logged.inner
    fused(torch.rand(3, 1, 28, 28))
    assert logged.calls == [3]


def test_cache_follows_weight_changes(digits):
    x, _ = digits
    clf = _load("mnist/cnn")
    cache = FusedCache()
    first = cache.get(clf)
    assert cache.get(clf) is first  # kept while the weights stay
    with torch.no_grad():
        clf.trunk[1].running_mean.add_(0.5)  # a folded BatchNorm's statistics, in place
    second = cache.get(clf)
    assert second is not first
    with torch.no_grad():
        assert torch.allclose(second(x), clf(x), atol=1e-4)
        assert not torch.allclose(first(x), clf(x), atol=1e-2)
    clf.load_state_dict(_load("mnist/cnn").state_dict())
    with torch.no_grad():
        assert torch.allclose(cache.get(clf)(x), clf(x), atol=1e-4)


def test_fusion_can_be_switched_off(monkeypatch):
    clf = _load("mnist/cnn")
    monkeypatch.setenv("CFWIDGETS_FUSE", "0")
    assert FusedCache().get(clf) is clf
    monkeypatch.setenv("CFWIDGETS_FUSE", "1")
    assert FusedCache().get(clf) is not clf


def test_text_and_plain_mlp_models_are_not_copied():
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    assert fused_copy(mlp) is mlp


def test_wachter_answers_match_with_and_without_folding(digits, monkeypatch):
    """The loop on the folded copy flips the same digits with the same size of change."""
    x, y = digits
    clf = _load("mnist/cnn")
    target = (y + 1) % 10
    monkeypatch.setenv("CFWIDGETS_FUSE", "0")
    plain = Wachter(clf).explain(x, target, steps=150)
    monkeypatch.setenv("CFWIDGETS_FUSE", "1")
    m = Wachter(clf)
    fused = m.explain(x, target, steps=150)
    assert m._loop_model(clf) is not clf  # (the copy was in use)
    assert torch.equal(plain.success, fused.success)
    assert int(fused.success.sum()) >= 12
    l1 = lambda r: (r.x_cf - r.x).abs().flatten(1).mean(1)  # noqa: E731
    assert torch.allclose(l1(plain), l1(fused), rtol=0.05, atol=2e-3)
    # the answers are the given model's decisions
    with torch.no_grad():
        p = clf(fused.x_cf).softmax(-1)
    assert torch.allclose(p, fused.probs_cf, atol=1e-4)


def test_a_method_pickles_after_a_run_and_runs_again(digits):
    """Batch runs send methods to worker processes and Ray tasks: the loop copies it keeps
    must not stop it from pickling, and the unpickled method makes its own."""
    import pickle

    x, y = digits
    m = Wachter(_load("mnist/cnn"))
    first = m.explain(x[:4], (y[:4] + 1) % 10, steps=20)
    assert m._loop_model(m.classifier) is not m.classifier
    twin = pickle.loads(pickle.dumps(m))
    again = twin.explain(x[:4], (y[:4] + 1) % 10, steps=20)
    assert torch.allclose(first.x_cf, again.x_cf, atol=1e-5)


def test_disc_keeps_its_batchnorm_statistics_on_the_loop_copy(digits, monkeypatch):
    """DISC's BN-statistics term hooks the classifier's BatchNorm layers: its copy keeps them
    (channels-last convolutions only), so the term sees the same inputs as without copies."""
    from cfwidgets.methods import DISC

    x, y = digits
    clf = _load("mnist/cnn")
    knobs = dict(steps=12, init_fit_steps=10, stage_steps=8)
    target = (y[:4] + 1) % 10
    curves = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("CFWIDGETS_FUSE", flag)
        m = DISC(clf, uncertainty=_load("mnist/duq"))
        curves[flag] = m.explain(x[:4], target, **knobs).losses["bn"]
        if flag == "1":
            run = m._loop_model(clf, fold=False)
            assert run is not clf and run.trunk[1] is clf.trunk[1]  # shared BatchNorm, copied conv
            assert run.trunk[4].weight.is_contiguous(memory_format=torch.channels_last)
    fit = 10  # the fit's steps carry no BN term; the first search step's must agree
    a, b = torch.tensor(curves["0"][fit]), torch.tensor(curves["1"][fit])
    assert float(a.abs().max()) > 0
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_a_hook_added_after_the_copy_was_made_gets_the_model_itself():
    """A probe registered after a first run must see the next run's passes: the kept copy
    is not used while the model is hooked, and is used again once the hook is gone."""
    clf = _load("mnist/cnn")
    cache = FusedCache()
    first = cache.get(clf)
    assert first is not clf
    handle = clf.trunk[4].register_forward_hook(lambda m, i, o: None)
    try:
        assert cache.get(clf) is clf
    finally:
        handle.remove()
    assert cache.get(clf) is not clf

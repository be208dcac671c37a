"""Faults that used to pass silently or fail cryptically (issue 18): each case gets a clear
error up front or correct handling. One test (or one parametrised case) per fault."""

from __future__ import annotations

import copy
import json
import math
import pathlib
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cfwidgets import zoo
from cfwidgets.cli import main
from cfwidgets.methods import Wachter
from cfwidgets.methods.base import CounterfactualMethod, Recorder, RunOutput
from cfwidgets.zoo import core

TESTS = Path(__file__).parent


# ------------------------------------------------------------------------ helpers
class TinyClassifier(nn.Module):
    """A fixed linear classifier on (1, 6, 6) images with 3 classes (no zoo needed)."""

    input_shape = (1, 6, 6)

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = nn.Linear(36, 3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(3, 36, generator=g) * 2)
            self.lin.bias.copy_(torch.tensor([2.0, 0.0, -1.0]))

    def forward(self, x):
        return self.lin(x.flatten(1))


class NaNAfter(nn.Module):
    """Wraps a classifier; from its ``after``-th call on, row ``row``'s logits are NaN
    (a model that breaks down mid-run). It sees positions only, so it breaks that row
    while the batch is the one of its first call: a halted row leaves the step loop's
    batch (ActiveRows) and the rows behind it move up."""

    def __init__(self, inner, after: int, row: int = 0):
        super().__init__()
        self.inner, self.after, self.row, self.calls = inner, after, row, 0
        self.input_shape = getattr(inner, "input_shape", None)
        self.batch: int | None = None

    def forward(self, x):
        self.calls += 1
        self.batch = self.batch or x.shape[0]
        out = self.inner(x)
        if self.calls > self.after and x.shape[0] == self.batch > self.row:
            out = out.clone()
            out[self.row] = float("nan")
        return out


def tiny_queries(n: int = 3):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 6, 6, generator=g)
    clf = TinyClassifier()
    with torch.no_grad():
        target = clf(x).topk(2, dim=1).indices[:, 1]
    return clf, x, target


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CFWIDGETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ZOO_FAKE_LOG", str(tmp_path / "trainings.log"))
    sys.path.insert(0, str(TESTS))
    import zoo_fake  # noqa: F401  (registers test/fake)

    core._STATE_CACHE.clear()
    yield tmp_path / "cache"
    core._STATE_CACHE.clear()


def _trainings(tmp_path: Path) -> int:
    log = tmp_path / "trainings.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


# ------------------------------------------------------- silent: NaN in the step loop
def test_classifier_turning_nan_mid_run_halts_that_row_and_says_so():
    clf, x, t = tiny_queries()
    good = Wachter(clf).explain(x, t, steps=15, lr=0.05, confidence=0.9999)
    bad_clf = NaNAfter(clf, after=4, row=0)  # call 1 = the initial prediction, 2.. = steps 0..
    with pytest.warns(UserWarning, match=r"row\(s\) \[0\] turned non-finite"):
        res = Wachter(bad_clf).explain(x, t, steps=15, lr=0.05, confidence=0.9999)
    assert res.meta["nonfinite"].tolist() == [True, False, False]
    assert bool(torch.isfinite(res.x_cf).all()) and bool(torch.isfinite(res.probs_cf).all())
    assert int(res.steps[0]) == 2, "the row keeps its last finite iterate (after 2 updates)"
    # the other rows are untouched by row 0's breakdown
    assert torch.allclose(res.x_cf[1:], good.x_cf[1:], atol=1e-6)
    assert not bool(good.meta["nonfinite"].any())
    assert all(math.isfinite(v) for v in res.losses["loss"])
    from cfwidgets.result import stack_results

    both = stack_results([good, res])
    assert both.meta["nonfinite"].tolist() == [False] * 3 + [True, False, False]
    assert res[0].meta["nonfinite"].tolist() == [True] and res[1:].meta["nonfinite"].tolist() == [False, False]


def test_recorder_halts_a_row_whose_loss_alone_turns_nonfinite():
    target = torch.tensor([0, 0])
    rec = Recorder(target, steps=5, confidence=0.99)
    probs = torch.tensor([[0.4, 0.6], [0.4, 0.6]])
    for step in range(3):
        x = torch.full((2, 1, 2, 2), float(step))
        loss = torch.tensor([1.0, float("inf") if step == 1 else 1.0])
        rec.observe(step, x, probs, {"loss": loss})
    x_cf, _ = rec.finish(torch.full((2, 1, 2, 2), 9.0), probs)
    out = rec.output(x_cf, probs)
    assert out.nonfinite.tolist() == [False, True]
    assert float(x_cf[1].max()) == 1.0, "row 1 keeps the iterate of the step its loss broke"
    assert float(x_cf[0].max()) == 9.0 and out.steps.tolist() == [5, 1]


@pytest.mark.parametrize("sync_every", [1, 8])  # the CPU's per-step flag path, and the GPU's
def test_recorder_finiteness_per_row_matches_isfinite(sync_every):
    """The guard's row reductions (aminmax, ``v - v``) flag exactly the rows
    ``isfinite`` would: one bad element of either sign, both infinities in one row, NaN
    in the probabilities or a loss term alone; never a finite row at float32's limits."""
    big = torch.finfo(torch.float32).max
    rows = [dict(), dict(x=(0, float("inf"))), dict(x=(3, float("-inf"))), dict(x=(1, float("nan"))),
            dict(x=(0, float("inf")), x2=(2, float("-inf"))), dict(x=(0, big), x2=(1, -big)),
            dict(p=float("nan")), dict(loss=float("nan")), dict(term=float("inf"))]
    b = len(rows)
    x = torch.rand(b, 1, 2, 2)
    probs = torch.full((b, 2), 0.5)
    loss, term = torch.ones(b), torch.ones(b, 3)
    for i, r in enumerate(rows):
        for key in ("x", "x2"):
            if key in r:
                x.view(b, -1)[i, r[key][0]] = r[key][1]
        if "p" in r:
            probs[i, 1] = r["p"]
        if "loss" in r:
            loss[i] = r["loss"]
        if "term" in r:
            term[i, 2] = r["term"]
    rec = Recorder(torch.zeros(b, dtype=torch.long), steps=4, confidence=0.99, sync_every=sync_every)
    rec.observe(0, torch.zeros(b, 1, 2, 2), torch.full((b, 2), 0.5), {"loss": torch.ones(b)})
    rec.observe(1, x, probs, {"loss": loss, "class": loss.clone(), "term": term})
    want = ~(torch.isfinite(x).flatten(1).all(1) & torch.isfinite(probs).all(1)
             & torch.isfinite(loss) & torch.isfinite(term).all(1))
    assert rec.nonfinite.tolist() == want.tolist() == [False, True, True, True, True, False, True, True, True]
    # a row whose iterate and probabilities are finite keeps this step's iterate even when
    # a loss term broke; one whose iterate broke keeps the step before
    x_cf, _ = rec.finish(torch.zeros(b, 1, 2, 2), probs.nan_to_num(0.5))
    assert rec.last_finite.tolist() == [4, 0, 0, 0, 0, 4, 0, 1, 1]
    assert bool(torch.isfinite(x_cf).all())
    # a shared (0-d) term that breaks halts every live row
    rec2 = Recorder(torch.zeros(2, dtype=torch.long), steps=3, confidence=0.99, sync_every=sync_every)
    rec2.observe(0, torch.zeros(2, 1), torch.full((2, 2), 0.5), {"loss": torch.ones(2), "kl": torch.tensor(float("nan"))})
    assert rec2.nonfinite.tolist() == [True, True]


def test_nonfinite_output_of_any_method_is_flagged():
    """The generic output check: a method without the Recorder returning NaN rows."""

    class Broken(CounterfactualMethod):
        name = "broken"
        paper = "none"

        from dataclasses import dataclass

        @dataclass(frozen=True)
        class Config:
            pass

        def _explain(self, x, target, cfg, *, probs, callback, generator):
            x_cf = x.clone()
            x_cf[1] = float("nan")  # a NaN image ...
            p = probs.clone()
            p[2] = float("nan")  # ... and NaN probabilities for another row
            return RunOutput(x_cf=x_cf, probs_cf=p)

    clf, x, t = tiny_queries()
    with pytest.warns(UserWarning, match="non-finite"):
        res = Broken(clf).explain(x, t)
    assert res.meta["nonfinite"].tolist() == [False, True, True]
    assert res.to_dict()["nonfinite"] == [False, True, True]


def test_aip_text_row_whose_loss_turns_nan_is_halted_and_flagged(monkeypatch):
    pytest.importorskip("transformers")
    from method_cases import review_queries

    from cfwidgets.methods import AIPText

    texts, target = review_queries()
    clf = zoo.load("reviews/clf", device="cpu", train=False, progress=False)
    try:
        gen = zoo.load("reviews/gen", device="cpu", train=False, progress=False)
    except zoo.ZooError as e:
        pytest.skip(f"reviews/gen not available: {e}")
    method = AIPText(clf, gen)
    adapter = method.classifier_adapter
    real = adapter.forward_soft
    calls = []

    def broken(soft, mask):  # the differentiable path breaks down for the first sentence
        out = real(soft, mask)
        calls.append(1)
        if len(calls) >= 2 and out.shape[0] == len(texts):  # while sentence 0 is still active
            out = out.clone()
            out[0] = float("nan")
        return out

    monkeypatch.setattr(adapter, "forward_soft", broken)
    with pytest.warns(UserWarning, match=r"row\(s\) \[0\] turned non-finite"):
        res = method.explain(texts, target, steps=4, decode_every=1, restarts=1, confidence=0.999)
    assert res.meta["nonfinite"].tolist() == [True] + [False] * (len(texts) - 1)
    assert all(isinstance(t, str) for t in res.x_cf) and bool(torch.isfinite(res.probs_cf).all())
    assert all(math.isfinite(v) for v in res.losses["loss"])


# ------------------------------------------------------ silent: sigmoid probabilities
def test_sigmoid_outputs_are_warned_about_up_front():
    clf, x, t = tiny_queries()

    class Sigmoid(nn.Module):
        input_shape = clf.input_shape

        def forward(self, v):
            return clf(v).sigmoid()

    with pytest.warns(UserWarning, match=r"sigmoid probabilities.*can then pass probability 0\.58"):
        Wachter(Sigmoid()).explain(x, t, steps=5)
    # the advised escape for genuine logits in [0, 1] (a constant shift) is quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CounterfactualMethod._check_logits(torch.tensor([[0.2, 0.7, 0.1]]) - 1, 1)


# -------------------------------------- silent: a generator of another data set / shape
@pytest.mark.parametrize("pair", [("mnist/cnn", "shapes/cvae"), ("shapes/cnn", "mnist/cvae")])
@pytest.mark.parametrize("method", ["AIP", "GCI"])
def test_generator_of_another_dataset_is_refused(pair, method):
    from cfwidgets import methods

    clf = zoo.load(pair[0], device="cpu", train=False, progress=False)
    gen = zoo.load(pair[1], device="cpu", train=False, progress=False)
    with pytest.raises(ValueError, match="different data sets"):
        getattr(methods, method)(clf, gen)


def test_compatible_pairs_still_build_and_the_tag_can_be_overridden():
    from cfwidgets.methods import AIP

    gen = zoo.load("shapes/cvae", device="cpu", train=False, progress=False)
    AIP(zoo.load("shapes-biased/cnn", device="cpu", train=False, progress=False), gen)  # same images
    clf = zoo.load("mnist/cnn", device="cpu", train=False, progress=False)
    gen.zoo_meta["dataset"] = "mnist"  # the escape the error names: the pairing is intended
    AIP(clf, gen)


def test_diffeomorphic_generator_of_another_dataset_or_shape_is_refused():
    from cfwidgets.methods.diffeomorphic import DiffeomorphicCounterfactual

    clf = zoo.load("fashion/cnn", device="cpu", train=False, progress=False)
    flow = zoo.load("mnist/flow", device="cpu", train=False, progress=False)
    with pytest.raises(ValueError, match="different data sets"):
        DiffeomorphicCounterfactual(clf, flow)

    class RGB(nn.Module):
        input_shape = (3, 28, 28)

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def encode(self, x):
            return x.flatten(1)

        def decode(self, z):
            return z.view(-1, 3, 28, 28)

    with pytest.raises(ValueError, match="3 vs 1 channels"):
        DiffeomorphicCounterfactual(zoo.load("mnist/cnn", device="cpu", train=False, progress=False),
                                    RGB(), kind="vae")


def test_class_conditioned_generator_with_other_classes_is_refused():
    from cfwidgets.methods import AIP

    clf = zoo.load("mnist/cnn", device="cpu", train=False, progress=False)
    gen = copy.deepcopy(zoo.load("mnist/cvae", device="cpu", train=False, progress=False))
    del gen.zoo_meta  # a user's model: no zoo tag, only its attribute spec
    spec = gen.attribute_spec
    cats = list(spec.categories)
    cats[-1] = tuple(str(i) for i in range(5))  # a digit attribute for 0..4 only
    fake_spec = copy.copy(spec)
    object.__setattr__(fake_spec, "categories", tuple(cats))

    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.input_shape = inner.input_shape
            self.attribute_names = inner.attribute_names
            self.attribute_spec = fake_spec

        def encode(self, x):
            return self.inner.encode(x)

        def decode(self, z, a):
            return self.inner.decode(z, a)

        def attributes(self, x):
            return self.inner.attributes(x)

    with pytest.raises(ValueError, match="disagree on the classes"):
        AIP(clf, Wrapped(gen))


# ------------------------------------------------- silent: HotFlip steps when stopped
def test_hotflip_stopped_by_callback_reports_the_flips_made():
    pytest.importorskip("transformers")
    from method_cases import review_queries

    from cfwidgets.methods import HotFlip

    texts, target = review_queries()
    clf = zoo.load("reviews/clf", device="cpu", train=False, progress=False)
    res = HotFlip(clf).explain(texts, target, max_flips=6, beam=2, candidates=10, confidence=0.999,
                               callback=lambda step, state: step >= 1)
    assert res.stopped
    assert res.steps.tolist() == res.meta["num_flips"].tolist()
    assert max(res.steps.tolist()) == 2  # stopped after the second flip, not the budget of 6


# ------------------------------------------------------------ cryptic: knob types
def test_integral_floats_and_numpy_scalars_are_accepted_as_ints():
    clf, x, t = tiny_queries()
    m = Wachter(clf)
    for steps in (5.0, np.int64(5), np.float32(5), torch.tensor(5)):
        res = m.explain(x, t, steps=steps, lr=np.float64(0.05))
        cfg = res.meta["config"]
        assert cfg["steps"] == 5 and type(cfg["steps"]) is int
        assert type(cfg["lr"]) is float
        json.dumps(cfg)
    with pytest.raises(TypeError, match="whole number"):
        m.explain(x, t, steps=5.5)
    with pytest.raises(TypeError, match="whole number"):
        m.explain(x, t, steps=float("inf"))


def test_non_callable_callback_is_refused_before_any_work():
    clf, x, t = tiny_queries()
    counting = NaNAfter(clf, after=10**9)
    with pytest.raises(TypeError, match="callback must be a function"):
        Wachter(counting).explain(x, t, steps=5, callback=5)
    assert counting.calls == 0, "refused up front, before the model ran"


def test_non_callable_callback_is_refused_by_text_methods():
    pytest.importorskip("transformers")
    from cfwidgets.methods import HotFlip

    clf = zoo.load("reviews/clf", device="cpu", train=False, progress=False)
    with pytest.raises(TypeError, match="callback must be a function"):
        HotFlip(clf).explain(["the film is dull ."], 1, callback="stop")


# ------------------------------------------------------- cryptic: inputs with grads
def test_wachter_accepts_inputs_that_require_grad():
    clf, x, t = tiny_queries()
    ref = Wachter(clf).explain(x, t, steps=10, lr=0.05)
    leaf = x.clone().requires_grad_(True)
    res = Wachter(clf).explain(leaf, t, steps=10, lr=0.05)
    assert torch.allclose(res.x_cf, ref.x_cf) and leaf.grad is None
    non_leaf = leaf * 1.0
    res = Wachter(clf).explain(non_leaf, t, steps=10, lr=0.05)
    assert torch.allclose(res.x_cf, ref.x_cf) and not res.x_cf.requires_grad


# ----------------------------------------------------------- cryptic: meta device
def test_meta_device_models_inputs_and_targets_are_refused_clearly():
    clf, x, t = tiny_queries()
    with pytest.raises(ValueError, match="'meta' device"):
        Wachter(copy.deepcopy(clf).to("meta"))
    m = Wachter(clf)
    with pytest.raises(ValueError, match="x is on the 'meta' device"):
        m.explain(x.to("meta"), t, steps=3)
    with pytest.raises(ValueError, match="target is on the 'meta' device"):
        m.explain(x, t.to("meta"), steps=3)
    moved = Wachter(copy.deepcopy(clf))
    moved.classifier.to("meta")  # moved after construction
    with pytest.raises(ValueError, match="'meta' device"):
        moved.explain(x, t, steps=3)


# ------------------------------------------------------------------ cryptic: zoo cache
@pytest.mark.parametrize("bad", ["[]", "null", '"x"', '{"name": 5}'])
def test_ill_typed_cache_metadata_never_blocks_shipped_weights(cache, bad):
    w, meta_path = core.cache_paths("mnist/cnn")
    shipped_w, _ = core.shipped_paths("mnist/cnn")
    w.write_bytes(shipped_w.read_bytes())
    meta_path.write_text(bad)
    with pytest.warns(UserWarning, match="unreadable metadata.*moved aside"):
        model = zoo.load("mnist/cnn", device="cpu", train=False, progress=False)
    assert model.zoo_meta["source"] == "shipped"
    assert not meta_path.exists() and (meta_path.parent / (meta_path.name + ".broken")).exists()
    assert zoo.info("mnist/cnn")["status"] == "shipped"
    core._STATE_CACHE.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # set aside once: the next load is quiet
        zoo.load("mnist/cnn", device="cpu", train=False, progress=False)


def test_ill_typed_cache_metadata_is_retrained_when_nothing_is_shipped(cache):
    zoo.load("test/fake", progress=False)
    _, meta_path = zoo.cache_paths("test/fake")
    meta_path.write_text("[]")
    core._STATE_CACHE.clear()
    assert zoo.info("test/fake")["status"] == "not built"
    with pytest.warns(UserWarning, match="unreadable metadata"):
        m = zoo.load("test/fake", progress=False)
    assert torch.all(m.weight == 1.0) and _trainings(cache.parent) == 2
    assert zoo.info("test/fake")["status"] == "cached"


def test_loading_shipped_weights_never_creates_the_cache(cache):
    zoo.load("mnist/cnn", device="cpu", train=False, progress=False)
    zoo.info("mnist/cnn")
    assert not (cache / "zoo").exists()


def test_read_only_cache_still_loads_shipped_weights(cache, monkeypatch):
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *a, **k):
        if str(self).startswith(str(cache)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    model = zoo.load("mnist/cnn", device="cpu", train=False, progress=False)
    assert model.zoo_meta["source"] == "shipped"
    # a recipe that must train: trained in memory, with a warning that it cannot cache
    with pytest.warns(UserWarning, match="cannot write the zoo cache"):
        m = zoo.load("test/fake", progress=False)
    assert torch.all(m.weight == 1.0)
    with pytest.raises(zoo.ZooError, match="CFWIDGETS_CACHE"):
        zoo.build("test/fake", progress=False)


def test_cache_path_that_is_a_file_still_loads_shipped_weights(cache, monkeypatch):
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("not a folder")
    model = zoo.load("mnist/cnn", device="cpu", train=False, progress=False)
    assert model.zoo_meta["source"] == "shipped"
    assert zoo.info("mnist/cnn")["status"] == "shipped"
    with pytest.warns(UserWarning, match="cannot write the zoo cache"):
        zoo.load("test/fake", progress=False)


# ------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("argv, says", [
    (["explain", "--n", "-1"], "--n must be >= 0"),
    (["demo", "--n", "-1"], "--n must be >= 1"),
    (["demo", "--steps", "-2"], "--steps must be >= 0"),
    (["explain", "--knobs", "{steps: 20"], "--knobs is not valid JSON"),
    (["explain", "--knobs", "[20]"], "--knobs must be a JSON object"),
    (["explain", "--knobs", '{"steps": 20.5}'], "whole number"),
    (["explain", "--knobs", '{"stpes": 20}'], "unknown option"),
    (["explain", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["explain", "--dataset", "reviews"], "holds sentences"),
    (["demo", "--dataset", "reviews"], "holds sentences"),
    (["explain", "--method", "hotflip"], "explains sentences"),
    (["explain", "--method", "nope"], "unknown method"),
    (["explain", "--dataset", "digits8"], "no classifier"),
    (["explain", "--split", "val"], "--split must be"),
    (["zoo", "info", "nope/x"], "unknown zoo recipe"),
])
def test_cli_bad_arguments_exit_nonzero_with_one_line(argv, says, tmp_path, capsys):
    out = ["--out", str(tmp_path / "o.jsonl")] if argv[0] == "explain" else (
        ["--out", str(tmp_path / "o")] if argv[0] == "demo" else [])
    rc = main(argv + out)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


# -------------------------------------------------------------- batch vs single
def test_batch_vs_single_float_noise_is_as_documented():
    """The explain docstring (and README) say batched and single forward passes differ by
    float noise below 1e-4 (that Adam can amplify): measure it on the zoo's models."""
    from cfwidgets.data import load_mnist

    doc = CounterfactualMethod.explain.__doc__
    assert "1e-4" in doc and "one-by-one" in doc
    readme = (TESTS.parent / "README.md").read_text()
    assert "float noise" in readme
    x = load_mnist("test").x[:8]
    with torch.no_grad():
        for name in ("mnist/cnn", "mnist/cvae", "mnist/flow"):
            m = zoo.load(name, device="cpu", train=False, progress=False)
            f = m.encode if hasattr(m, "encode") else m
            batch = f(x)
            single = torch.cat([f(x[i:i + 1]) for i in range(len(x))])
            assert (batch - single).abs().max().item() < 1e-4, name

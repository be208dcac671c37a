"""The model zoo: caching, verification, corruption, staleness, locking, shipped weights,
and every recipe still learning at a reduced budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from cfwidgets import zoo
from cfwidgets.zoo import core

TESTS = Path(__file__).parent


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CFWIDGETS_CACHE", str(tmp_path / "cache"))
    log = tmp_path / "trainings.log"
    monkeypatch.setenv("ZOO_FAKE_LOG", str(log))
    import zoo_fake  # noqa: F401  (registers test/fake)

    core._STATE_CACHE.clear()
    yield tmp_path
    core._STATE_CACHE.clear()


def _trainings(tmp_path) -> int:
    log = tmp_path / "trainings.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_train_once_then_load_from_cache(cache):
    m1 = zoo.load("test/fake", progress=False)
    assert _trainings(cache) == 1
    w, meta_path = zoo.cache_paths("test/fake")
    meta = json.loads(meta_path.read_text())
    for key in ("version", "sha256", "data_fingerprint", "seed", "metrics", "train_seconds", "config"):
        assert key in meta
    m2 = zoo.load("test/fake", progress=False)
    assert _trainings(cache) == 1, "second load must not retrain"
    assert torch.equal(m1.weight, m2.weight) and m2.zoo_meta["source"] == "cache"
    # a fresh copy each time: changing one never changes the next load
    with torch.no_grad():
        m2.weight.add_(5)
    assert torch.equal(zoo.load("test/fake", progress=False).weight, m1.weight)
    assert not m2.training
    assert zoo.info("test/fake")["status"] == "cached"


def test_corrupted_file_is_retrained_not_used(cache):
    zoo.load("test/fake", progress=False)
    w, _ = zoo.cache_paths("test/fake")
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF
    w.write_bytes(bytes(data))
    core._STATE_CACHE.clear()
    with pytest.warns(UserWarning, match="corrupted"):
        m = zoo.load("test/fake", progress=False)
    assert _trainings(cache) == 2
    assert torch.all(m.weight == 1.0)
    # the rewritten checkpoint verifies again
    core._STATE_CACHE.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zoo.load("test/fake", progress=False)
    assert _trainings(cache) == 2


def test_truncated_and_garbage_files_are_retrained(cache):
    zoo.load("test/fake", progress=False)
    w, meta_path = zoo.cache_paths("test/fake")
    w.write_bytes(b"not a safetensors file")
    core._STATE_CACHE.clear()
    with pytest.warns(UserWarning, match="retraining"):
        zoo.load("test/fake", progress=False)
    meta_path.write_text("{ broken json")
    core._STATE_CACHE.clear()
    with pytest.warns(UserWarning, match="unreadable metadata"):
        zoo.load("test/fake", progress=False)
    assert _trainings(cache) == 3


def test_stale_version_or_data_is_retrained(cache, monkeypatch):
    zoo.load("test/fake", progress=False)
    monkeypatch.setenv("ZOO_FAKE_DATA", "data-v2")
    core._STATE_CACHE.clear()
    with pytest.warns(UserWarning, match="stale: trained on other data"):
        zoo.load("test/fake", progress=False)
    assert _trainings(cache) == 2
    _, meta_path = zoo.cache_paths("test/fake")
    meta = json.loads(meta_path.read_text())
    meta["version"] = 0
    meta_path.write_text(json.dumps(meta))
    core._STATE_CACHE.clear()
    with pytest.warns(UserWarning, match="stale: recipe version"):
        zoo.load("test/fake", progress=False)
    assert _trainings(cache) == 3


def test_load_without_training_raises(cache):
    with pytest.raises(zoo.ZooError, match="zoo build test/fake"):
        zoo.load("test/fake", train=False)
    with pytest.raises(KeyError, match="unknown zoo recipe"):
        zoo.load("nope/nothing")


def test_reduced_build_never_touches_the_cache(cache):
    m = zoo.build("test/fake", reduced=True, progress=False)
    assert torch.all(m.weight == 0.5) and m.zoo_meta["reduced"] is True
    assert not zoo.cache_paths("test/fake")[0].exists()


def test_concurrent_builds_share_one_training(cache):
    """Two processes (two kernels) load the same recipe at once: a file lock makes one
    train while the other waits, then loads the verified result."""
    env = dict(os.environ, ZOO_FAKE_SLEEP="1.5", PYTHONPATH=str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import zoo_fake, torch; from cfwidgets import zoo; "
            "m = zoo.load('test/fake', progress=False); assert torch.all(m.weight == 1.0); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "ok"
    assert _trainings(cache) == 1, "the second process must wait for the lock and load"
    w, meta_path = zoo.cache_paths("test/fake")
    assert json.loads(meta_path.read_text())["sha256"] == core._sha256(w)
    assert not list(w.parent.glob("*.tmp")), "no temporary files left behind"


def test_shipped_weights_verify_and_load_without_training(tmp_path, monkeypatch):
    """Every shipped checkpoint verifies (hash, version, data) and loads with an empty cache."""
    monkeypatch.setenv("CFWIDGETS_CACHE", str(tmp_path / "empty"))
    core._STATE_CACHE.clear()
    shipped = sorted(core.SHIPPED_DIR.glob("*.json"))
    assert shipped, "the package ships no weights"
    total = sum(p.stat().st_size for p in core.SHIPPED_DIR.iterdir())
    # 40.4 MB with the fluency judge (issue 11); the limit keeps the wheel small
    assert total < 48 * 2**20, f"shipped weights are {total / 2**20:.1f} MB (limit 48 MB)"
    names = [json.loads(p.read_text())["name"] for p in shipped]
    for name in names:
        if name not in zoo.recipes():
            continue  # a recipe module whose optional dependency is missing
        model = zoo.load(name, device="cpu", train=False, progress=False)
        assert model.zoo_meta["source"] == "shipped" and not model.zoo_meta["reduced"]
        recipe = zoo.get_recipe(name)
        if recipe.check is not None:
            assert recipe.check(model.zoo_meta["metrics"]) is None, f"{name} ships below its quality gate"
    core._STATE_CACHE.clear()


def test_mnist_cnn_quality():
    clf = zoo.load("mnist/cnn", device="cpu", progress=False)
    assert clf.zoo_meta["metrics"]["test_accuracy"] >= 0.95
    from cfwidgets.data import load_mnist
    from cfwidgets.zoo.training import accuracy

    te = load_mnist("test")
    assert accuracy(clf, te.x, te.y) >= 0.95  # measured now, not only recorded


def test_external_digit_recognizer_is_a_real_classifier():
    import importlib.util

    if importlib.util.find_spec("digit_recognizer") is None:
        pytest.skip("pip install --no-deps digit-recognizer-py")
    from cfwidgets.data import load_mnist
    from cfwidgets.zoo.training import accuracy

    clf = zoo.load_external("digit-recognizer", device="cpu")
    te = load_mnist("test")
    assert accuracy(clf, te.x, te.y) > 0.9
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in clf.modules())


def _real_recipes():
    return [n for n in zoo.recipes() if not n.startswith("test/")]


@pytest.mark.slow
@pytest.mark.parametrize("name", _real_recipes())
def test_every_recipe_still_learns_at_reduced_budget(name):
    recipe = zoo.get_recipe(name)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = zoo.build(name, reduced=True, device="cpu", progress=False)
    metrics = model.zoo_meta["metrics"]
    assert recipe.reduced_check is not None, f"{name} needs a reduced_check quality gate"
    problem = recipe.reduced_check(metrics)
    assert problem is None, f"{name} at reduced budget: {problem} ({metrics})"

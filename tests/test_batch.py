"""Explaining a data set (cfwidgets.batch, ``cfwidgets explain``): chunks stream to disk as
batches finish, a run killed with SIGKILL resumes to the same rows as an uninterrupted one,
mixed configurations are refused, results read back; on the shipped mnist/cnn with a few
Wachter steps."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cfwidgets import zoo
from cfwidgets.batch import MixedRunError, _chunk_seed, explain_dataset, load_results
from cfwidgets.cli import main
from cfwidgets.data import load_mnist
from cfwidgets.methods import Wachter

ROOT = Path(__file__).resolve().parent.parent
FAST = {"steps": 5}
COLUMNS = ("index", "x", "x_cf", "label", "target", "pred", "pred_cf", "success", "skipped")


class _Stop(Exception):
    pass


def _stop_after(k: int, seen: list | None = None):
    def on_chunk(info):
        if seen is not None:
            seen.append(info["chunk"])
        if info["done"] >= k:
            raise _Stop

    return on_chunk


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _assert_same_rows(a, b):
    assert len(a) == len(b)
    for k in COLUMNS:
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    for k, v in a.metrics.items():
        assert torch.equal(v, b.metrics[k]), k


def _run(out, **kw):
    args = {"target": "next", "batch_size": 4, "n": 12, "device": "cpu", "progress": False, **FAST}
    args.update(kw)
    return explain_dataset("wachter", "mnist", out=out, **args)


# ------------------------------------------------------------------------ streaming
def test_chunks_are_on_disk_as_each_batch_finishes(tmp_path):
    """After each batch the chunk file exists, the manifest lists it and load_results reads
    the rows so far; an interrupted run keeps its finished chunks and a rerun computes only
    the rest."""
    out = tmp_path / "run"
    seen = []

    def on_chunk(info):
        seen.append(info["chunk"])
        assert info["path"].exists()
        m = _manifest(out)
        assert [c["chunk"] for c in m["chunks"]] == seen and not m["complete"]
        part = load_results(out)
        assert len(part) == info["rows"][1] and not part.complete
        assert part.index.tolist() == list(range(info["rows"][1]))
        if info["done"] == 2:
            raise _Stop

    with pytest.raises(_Stop):
        _run(out, on_chunk=on_chunk)
    assert seen == [0, 1] and len(load_results(out)) == 8
    again = []
    _run(out, on_chunk=lambda info: again.append(info["chunk"]))
    assert again == [2]  # chunks 0 and 1 were not recomputed
    res = load_results(out)
    assert res.complete and res.index.tolist() == list(range(12))


# --------------------------------------------------------------------------- resume
_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from cfwidgets.batch import explain_dataset
explain_dataset("wachter", "mnist", "random", out=sys.argv[1], n=24, batch_size=4, device="cpu",
                progress=False, steps=30, confidence=0.9999)
"""


def _subprocess(script: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(script), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    p = _subprocess(script, ref)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()

    p = _subprocess(script, killed)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill -9 once the first chunk is recorded
        if (killed / "manifest.json").exists() and _manifest(killed)["chunks"]:
            break
        assert p.poll() is None, p.stderr.read().decode()
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)  # (random targets: each batch must be seeded on its own)
    assert p.wait(timeout=60) == -signal.SIGKILL
    m = _manifest(killed)
    assert not m["complete"] and 1 <= len(m["chunks"]) < 6, "the kill did not land mid-run"
    before = {c["file"]: (killed / c["file"]).stat().st_mtime_ns for c in m["chunks"]}

    p = _subprocess(script, killed)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    for f, mtime in before.items():  # finished chunks are kept, not recomputed
        assert (killed / f).stat().st_mtime_ns == mtime
    assert not list(killed.glob("*.tmp"))
    a, b = load_results(ref), load_results(killed)
    assert a.complete and b.complete and len(b) == 24
    _assert_same_rows(a, b)


def test_resume_redoes_a_chunk_the_manifest_missed(tmp_path):
    """A kill between a chunk's rename and the manifest's rewrite leaves a chunk file the
    manifest does not list, and a kill mid-write a half-written temporary file: the rerun
    computes both chunks again (never reading the temporary file), none is left, and the
    rows equal an uninterrupted run."""
    out = tmp_path / "run"
    with pytest.raises(_Stop):
        _run(out, on_chunk=_stop_after(2))
    m = _manifest(out)
    m["chunks"] = m["chunks"][:1]
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "chunk-000002.safetensors.tmp").write_bytes(b"half a chunk")
    redone = []
    _run(out, on_chunk=lambda info: redone.append(info["chunk"]))
    assert redone == [1, 2]
    assert not list(out.glob("*.tmp"))
    _run(tmp_path / "ref")
    _assert_same_rows(load_results(out), load_results(tmp_path / "ref"))


# ------------------------------------------------------------------ mixed configs
def test_a_folder_refuses_a_run_of_another_configuration(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(_Stop):
        _run(out, on_chunk=_stop_after(1))
    manifest = (out / "manifest.json").read_text()
    clf = zoo.load("mnist/cnn", device="cpu")
    other_clf = copy.deepcopy(clf)
    with torch.no_grad():
        next(other_clf.parameters()).add_(1e-3)  # same architecture, other weights
    other = Wachter(other_clf)
    te = load_mnist("test")
    changed = te.x.clone()
    changed[3] = 1 - changed[3]
    cases = [
        ({"batch_size": 3}, "batch_size"),
        ({"steps": 6}, "config"),
        ({"target": "runner-up"}, "target"),
        ({"seed": 1}, "seed"),
        ({"n": 8}, "n:"),
    ]
    for kw, says in cases:
        with pytest.raises(MixedRunError, match=says):
            _run(out, **kw)
    with pytest.raises(MixedRunError, match="models"):
        explain_dataset(other, te, "next", out=out, batch_size=4, n=12, device="cpu",
                        progress=False, **FAST)
    with pytest.raises(MixedRunError, match="data"):
        explain_dataset("wachter", dataclasses.replace(te, x=changed), "next", out=out, batch_size=4, n=12,
                        device="cpu", progress=False, **FAST)
    with pytest.raises(MixedRunError, match="method"):
        explain_dataset(_Renamed(clf), te, "next", out=out, batch_size=4, n=12, device="cpu",
                        progress=False, **FAST)
    assert (out / "manifest.json").read_text() == manifest  # nothing was written
    assert len(load_results(out)) == 4


class _Renamed(Wachter):
    name = "wachter-renamed"


# ---------------------------------------------------------------------- round trip
def test_load_results_round_trip_equals_explain_on_each_batch(tmp_path):
    out = _run(tmp_path / "run", n=10)
    res = load_results(out)
    te = load_mnist("test")
    clf = zoo.load("mnist/cnn", device="cpu")
    method = Wachter(clf)
    assert torch.equal(res.x, te.x[:10]) and torch.equal(res.label, te.y[:10])
    assert torch.equal(res.target, (te.y[:10] + 1) % 10)
    for i, (a, b) in enumerate([(0, 4), (4, 8), (8, 10)]):
        ok = ~res.skipped[a:b]
        direct = method.explain(te.x[a:b][ok], res.target[a:b][ok], generator=_chunk_seed(0, i), **FAST)
        assert torch.equal(res.x_cf[a:b][ok], direct.x_cf)
        assert torch.equal(res.success[a:b][ok], direct.success)
        assert torch.equal(res.metrics["steps"][a:b][ok], direct.steps)
        assert torch.allclose(res.metrics["l1"][a:b][ok], (direct.x_cf - direct.x).flatten(1).abs().mean(1))
        assert torch.allclose(res.metrics["target_prob"][a:b][ok], direct.target_prob)
    assert torch.equal(res.metrics["validity"], res.success.float())
    assert res.meta["method"] == "wachter" and res.meta["config"]["steps"] == 5
    assert res.meta["seed"] == 0 and res.meta["version"] and res.meta["target"] == "next"
    assert res.meta["batch_size"] == 4 and res.meta["n"] == 10 and res.complete


def test_target_rules(tmp_path):
    te = load_mnist("test")
    clf = zoo.load("mnist/cnn", device="cpu")
    with torch.no_grad():
        probs = clf(te.x[:8]).softmax(-1)
    up = load_results(_run(tmp_path / "up", n=8, target="runner-up", steps=1))
    assert torch.equal(up.target, probs.topk(2, dim=1).indices[:, 1]) and not up.skipped.any()
    r1 = load_results(_run(tmp_path / "r1", n=8, target="random", steps=1))
    r2 = load_results(_run(tmp_path / "r2", n=8, target="random", steps=1))
    assert torch.equal(r1.target, r2.target) and (r1.target != probs.argmax(1)).all()
    r3 = load_results(_run(tmp_path / "r3", n=8, target="random", steps=1, seed=5))
    assert not torch.equal(r1.target, r3.target)
    k = int(probs.argmax(1)[2])  # rows already predicted as K are skipped, kept in place
    fixed = load_results(_run(tmp_path / "k", n=8, target=k, steps=1))
    same = probs.argmax(1) == k
    assert torch.equal(fixed.skipped, same) and (fixed.target == k).all()
    assert torch.equal(fixed.x_cf[same], fixed.x[same]) and not fixed.success[same].any()
    assert (fixed.metrics["steps"][same] == 0).all() and (fixed.metrics["steps"][~same] == 1).all()
    with pytest.raises(ValueError, match="out of range"):
        _run(tmp_path / "bad", target=10)
    with pytest.raises(ValueError, match="needs labels"):
        explain_dataset(Wachter(clf), te.x[:4], "next", out=tmp_path / "nolabels", progress=False)
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------ CLI
def test_cli_explain_writes_resumes_and_refuses(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["explain", "--n", "6", "--batch-size", "4", "--knobs", '{"steps": 5}', "--device", "cpu",
            "--out", str(out)]
    assert main(argv) == 0
    res = load_results(out)
    assert len(res) == 6 and res.complete and res.meta["target"] == "next"
    mtimes = [p.stat().st_mtime_ns for p in sorted(out.glob("chunk-*"))]
    assert main(argv) == 0  # a finished run: nothing recomputed
    assert [p.stat().st_mtime_ns for p in sorted(out.glob("chunk-*"))] == mtimes
    capsys.readouterr()
    for extra, says in [(["--batch-size", "3"], f"error: {out} holds a run with another configuration"),
                        (["--target", "up"], "--target must be one of"),
                        (["--target", "10"], "out of range")]:
        assert main(argv + extra) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, err
    (tmp_path / "file").write_text("x")
    assert main(argv[:-1] + [str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_second_writer_is_refused_while_a_run_holds_the_folder(tmp_path):
    from filelock import FileLock

    from cfwidgets.batch import RunBusyError

    out = tmp_path / "run"
    out.mkdir()
    with FileLock(str(out / ".lock")):  # as a running explain_dataset holds it
        with pytest.raises(RunBusyError, match="another process is writing"):
            _run(out)
        assert not (out / "manifest.json").exists()
    _run(out, n=4)  # released: the run goes ahead
    assert load_results(out).complete


def test_a_methods_dataset_knobs_apply_unless_the_caller_sets_them(tmp_path):
    """Diffeomorphic's path density (a flow pass per snapshot and row, never stored by a
    data-set run) is off in explain_dataset by default, on when asked for, and the
    folder's identity records what ran."""
    from cfwidgets.methods.diffeomorphic import DiffeomorphicCounterfactual

    method = DiffeomorphicCounterfactual.from_zoo("mnist", generator="vae", device="cpu")
    assert method.density_model is not None  # a flow is there to score the path with
    seen = []
    original = method._path_meta

    def spy(rec, x, x_out, cfg):
        out = original(rec, x, x_out, cfg)
        seen.append((cfg.path_density, "path_bpd" in out))
        return out

    method._path_meta = spy
    args = {"target": "next", "batch_size": 4, "n": 4, "device": "cpu", "progress": False, "steps": 3}
    explain_dataset(method, "mnist", out=tmp_path / "default", **args)
    explain_dataset(method, "mnist", out=tmp_path / "asked", path_density=True, **args)
    assert seen == [(False, False), (True, True)]
    assert _manifest(tmp_path / "default")["identity"]["config"]["resolved"]["path_density"] is False
    assert DiffeomorphicCounterfactual.Config().path_density is True  # explain() keeps it

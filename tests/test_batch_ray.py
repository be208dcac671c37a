"""``explain_dataset(backend="ray")`` on a local two-worker Ray cluster: the folder equals
the single-process run row for row, a run started locally resumes on Ray, and a worker that
dies mid-batch is retried by Ray (``max_retries``) without a duplicated or missing row."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray", reason="pip install 'cfwidgets[ray]'")

from cfwidgets import zoo  # noqa: E402
from cfwidgets.batch import explain_dataset, load_results  # noqa: E402
from cfwidgets.methods import Wachter  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FAST = {"steps": 100}  # enough for some rows to reach their target
COLUMNS = ("index", "x", "x_cf", "label", "target", "pred", "pred_cf", "success", "skipped")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with two CPU worker slots (torch pinned to one thread per worker,
    as in the single-process reference below, so results compare bit for bit)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}})
    # pickle this module's classes by value: Ray's workers cannot import tests/ as a package
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def _run(out, **kw):
    # "random": targets drawn from each batch's seed, so a wrongly seeded batch shows
    args = {"target": "random", "batch_size": 4, "n": 12, "device": "cpu", "progress": False, **FAST}
    args.update(kw)
    return explain_dataset(args.pop("method", "wachter"), "mnist", out=out, **args)


def _backends(out) -> list[str]:
    """Where each chunk of the folder was computed (the manifest records it)."""
    return [c["backend"] for c in json.loads((Path(out) / "manifest.json").read_text())["chunks"]]


def _assert_same_rows(a, b):
    assert len(a) == len(b) == a.meta["n"]
    for k in COLUMNS:
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    for k, v in a.metrics.items():
        assert torch.equal(v, b.metrics[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return load_results(_run(tmp_path_factory.mktemp("local") / "run"))
    finally:
        torch.set_num_threads(threads)


def test_ray_run_equals_the_single_process_run(cluster, reference, tmp_path):
    out = _run(tmp_path / "ray", backend="ray")
    res = load_results(out)
    assert res.complete and res.meta["chunks"] == 3 and _backends(out) == ["ray"] * 3
    _assert_same_rows(reference, res)
    assert res.success[res.explained].any()  # the comparison is not between two empty runs


def test_a_local_run_resumes_on_ray(cluster, reference, tmp_path):
    out = tmp_path / "mixed"
    seen: list[int] = []

    class Stop(Exception):
        pass

    def stop_after_one(info):
        seen.append(info["chunk"])
        raise Stop

    with pytest.raises(Stop):
        _run(out, on_chunk=stop_after_one)
    assert seen == [0] and not load_results(out).complete
    redone: list[int] = []
    _run(out, backend="ray", on_chunk=lambda info: redone.append(info["chunk"]))
    assert sorted(redone) == [1, 2]  # chunk 0 is not recomputed
    assert _backends(out) == ["local", "ray", "ray"]
    _assert_same_rows(reference, load_results(out))


class DiesOnce(Wachter):
    """Wachter whose worker process dies (os._exit, as a lost node would) the first time it
    meets the batch holding row 4; the marker file says it already died once."""

    marker: str = ""

    def explain(self, x, target, **kw):
        if not os.path.exists(self.marker) and len(x) and float(x.sum()) == self._row4_sum:
            Path(self.marker).write_text("died")
            os._exit(1)
        return super().explain(x, target, **kw)


def _dies_once(tmp_path, reference):
    m = DiesOnce(zoo.load("mnist/cnn", device="cpu"))
    m.marker = str(tmp_path / "died.txt")
    # the rows of chunk 1 that are explained (the chunk's non-skipped rows)
    ok = ~reference.skipped[4:8]
    m._row4_sum = float(reference.x[4:8][ok].sum())
    return m


def test_a_dead_worker_is_retried_by_ray(cluster, reference, tmp_path):
    out = explain_dataset(_dies_once(tmp_path, reference), "mnist", "random", out=tmp_path / "retry",
                          batch_size=4, n=12, device="cpu", progress=False, backend="ray",
                          max_retries=2, **FAST)
    assert (tmp_path / "died.txt").exists()  # a worker really died
    _assert_same_rows(reference, load_results(out))


def test_without_retries_the_dead_worker_fails_the_run_and_the_rest_resumes(cluster, reference, tmp_path):
    out = tmp_path / "noretry"
    with pytest.raises(Exception, match="(?i)died|worker|crash|exit"):
        explain_dataset(_dies_once(tmp_path, reference), "mnist", "random", out=out, batch_size=4, n=12,
                        device="cpu", progress=False, backend="ray", max_retries=0, **FAST)
    assert not load_results(out).complete
    # the same arguments again (the marker is there now: no second death) finish the run
    explain_dataset(_dies_once(tmp_path, reference), "mnist", "random", out=out, batch_size=4, n=12,
                    device="cpu", progress=False, backend="ray", max_retries=0, **FAST)
    _assert_same_rows(reference, load_results(out))


def test_bad_backend_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        _run(tmp_path / "a", backend="dask")
    with pytest.raises(ValueError, match="backend='ray'"):
        _run(tmp_path / "b", address="auto")
    with pytest.raises(ValueError, match="max_retries must be >= 0"):
        _run(tmp_path / "c", backend="ray", max_retries=-1)


def test_cli_backend_ray_joins_the_running_cluster(cluster, reference, tmp_path, capsys):
    from cfwidgets.cli import main

    out = tmp_path / "cli"
    rc = main(["explain", "--method", "wachter", "--dataset", "mnist", "--target", "random",
               "--n", "12", "--batch-size", "4", "--device", "cpu", "--knobs", '{"steps": 100}',
               "--backend", "ray", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert _backends(out) == ["ray"] * 3
    _assert_same_rows(reference, load_results(out))
    rc = main(["explain", "--n", "4", "--address", "auto", "--out", str(tmp_path / "x")])
    assert rc == 2 and "backend='ray'" in capsys.readouterr().err

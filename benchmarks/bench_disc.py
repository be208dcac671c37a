"""DISC: seconds per counterfactual by batch size, and where the time goes.

    python benchmarks/bench_disc.py [--batches 1 4 16 64] [--prior inr] [--device auto]
                                    [--threads 0] [--profile] [--steps 100]

Every run uses a fixed budget (``confidence`` 0.9999, so no row stops early): the fit of
the prior, the progressive stages and ``--steps`` final updates, on the zoo's DUQ
classifier. Prints the wall time per counterfactual for each batch size and each prior,
then (``--profile``) a torch.profiler table of the operators that take the time for one
batch. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import torch

from cfwidgets import zoo
from cfwidgets._utils import resolve_device, sync
from cfwidgets.methods.disc import DISC


def _queries(clf, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    # held-out digits, repeated to the batch size (the data are only the benchmark's input)
    from cfwidgets.data import load_mnist

    x = load_mnist("test").x[torch.arange(n) * 7 % 1000].to(device)
    with torch.no_grad():
        t = clf(x).topk(2, 1).indices[:, 1]
    return x, t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--priors", nargs="+", default=["pixels", "dip", "inr"])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--profile", action="store_true", help="torch.profiler table for one batch")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    clf = zoo.load("mnist/duq", device=dev, progress=False)
    method = DISC(clf)
    knobs = {"steps": a.steps, "confidence": 0.9999}
    print(f"DISC on {dev} ({torch.get_num_threads()} threads), fixed budget: fit "
          f"{DISC.Config.init_fit_steps} + stages {len(DISC.Config.stage_levels)} x "
          f"{DISC.Config.stage_steps} + final {a.steps} updates")
    print(f"{'prior':7s} {'batch':>5s} {'s / batch':>10s} {'s / cf':>9s} {'updates / s':>12s}")
    for prior in a.priors:
        for b in a.batches:
            x, t = _queries(clf, b, dev)
            method.explain(x[:1], t[:1], prior=prior, steps=2, stage_steps=2, init_fit_steps=2)  # warm-up
            sync(dev)
            t0 = time.perf_counter()
            res = method.explain(x, t, prior=prior, **knobs)
            sync(dev)
            wall = time.perf_counter() - t0
            n_up = res.meta["stage_steps"][-1]
            print(f"{prior:7s} {b:5d} {wall:10.2f} {wall / b:9.3f} {n_up / wall:12.1f}", flush=True)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile, record_function

        b = max(a.batches)
        x, t = _queries(clf, b, dev)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        for prior in a.priors:
            with profile(activities=acts) as prof, record_function(f"disc_{prior}"):
                method.explain(x, t, prior=prior, steps=min(a.steps, 30), stage_steps=10,
                               init_fit_steps=20, confidence=0.9999)
            key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
            print(f"\n== profile: prior {prior}, batch {b} ==")
            print(prof.key_averages().table(sort_by=key, row_limit=14))


if __name__ == "__main__":
    main()

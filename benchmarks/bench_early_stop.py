"""Seconds per counterfactual one at a time vs batched, with the methods' default knobs
(rows stop at their own ``confidence``: the figure is time-to-flip, not throughput).

    python benchmarks/bench_early_stop.py [--methods wachter,vae,flow,gan] [--n 100]
                                          [--sizes 1,16,64,100] [--single-n 100]
                                          [--threads 1] [--device cpu] [--out FILE.json]

The digits: a class-balanced seeded subset of the MNIST test split (``subset(n, seed=0)``,
as bench_peers.py), target ``(label + 1) mod 10`` (the next class when that is already the
prediction). Batch size ``B``: the ``n`` digits explained in consecutive batches of ``B``;
size 1: the first ``--single-n`` digits one call each. Each method is warmed up first
(one short call); loading is not timed. Before ActiveRows every row of a batch was
computed until the batch's slowest row stopped; with it, finished rows leave the batch,
so a batch should cost at most about what its rows cost one at a time.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch


def _method(name: str, dev):
    from cfwidgets.methods import AIP, GCI, DiffeomorphicCounterfactual, Wachter

    if name == "wachter":
        return Wachter.from_zoo("mnist", device=dev)
    if name in ("flow", "vae", "gan"):
        return DiffeomorphicCounterfactual.from_zoo("mnist", generator=name, device=dev)
    return {"gci": GCI, "aip": AIP}[name].from_zoo("mnist", device=dev)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--methods", default="wachter,vae,flow,gan")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--sizes", default="1,16,64,100")
    p.add_argument("--single-n", type=int, default=None, help="digits timed one at a time (default n)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--label", default="", help="free text stored with the figures (e.g. the commit)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    if a.threads:
        torch.set_num_threads(a.threads)
    from cfwidgets._utils import resolve_device, sync
    from cfwidgets.data import load_mnist

    dev = resolve_device(a.device)
    import cfwidgets

    print(f"cfwidgets from {Path(cfwidgets.__file__).parent}", flush=True)
    te = load_mnist("test").subset(a.n, seed=0)
    rows = []
    for name in a.methods.split(","):
        m = _method(name, dev)
        x = te.x.to(dev)
        with torch.no_grad():
            pred = m.classifier(x).argmax(1).cpu()
        t = (te.y + 1) % 10
        t = torch.where(t == pred, (t + 1) % 10, t)
        m.explain(x[:2], t[:2], steps=2)  # warm-up: lazy imports, first kernels
        for size in (int(s) for s in a.sizes.split(",")):
            n = (a.single_n or a.n) if size == 1 else a.n
            sync(dev)
            t0 = time.perf_counter()
            res = [m.explain(x[i:i + size], t[i:i + size]) for i in range(0, n, size)]
            sync(dev)
            wall = time.perf_counter() - t0
            steps = torch.cat([r.steps for r in res]).float()
            row = {"method": name, "batch": size, "n": n, "device": str(dev), "threads": a.threads,
                   "seconds": wall, "s_per_cf": wall / n,
                   "validity": float(torch.cat([r.success for r in res]).float().mean()),
                   "steps_mean": float(steps.mean()), "steps_max": float(steps.max())}
            rows.append(row)
            print(f"{name:8s} batch {size:4d}  n {n:4d}  {row['s_per_cf']:.3f} s/cf  valid "
                  f"{row['validity']:.2f}  steps mean {row['steps_mean']:.0f} max {row['steps_max']:.0f}",
                  flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"label": a.label, "n": a.n, "digits": "load_mnist('test').subset(n, seed=0)",
                                           "target": "(label + 1) mod 10", "knobs": "defaults",
                                           "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

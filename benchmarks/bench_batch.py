"""Counterfactuals per second by method and batch size, with peak memory.

    python benchmarks/bench_batch.py [--methods wachter,vae,gan,gci,aip,disc]
                                     [--sizes 1,4,16,64,256,1024] [--steps 50]
                                     [--device auto] [--threads 0]
                                     [--out benchmarks/results/batch.json]

Each (method, batch size) runs in a fresh Python process (so peak memory is that run's:
the process's maximum resident set on the CPU, ``torch.cuda.max_memory_allocated`` on a
GPU) on the first ``size`` MNIST test digits with the runner-up class as target and a
fixed number of steps: early stopping is all but switched off (``confidence`` at its
maximum, 0.9999, so rows run (nearly) every step) and the figure is throughput, not
time-to-flip. The zoo's shipped weights are used; the first call of each process
(loading, one warm-up step) is not timed. A point repeats its run while the repeats took
under 3 s (at most 7) and reports the median: a batch of one runs 50 steps in a tenth of a
second, where one run is mostly noise on a shared machine.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, resource, sys, time, warnings
import torch
warnings.filterwarnings("ignore")
from cfwidgets import zoo
from cfwidgets.data import load_mnist
from cfwidgets.methods import get_method
from cfwidgets._utils import resolve_device, sync
name, size, steps, device, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
if threads:
    torch.set_num_threads(threads)
dev = resolve_device(device)
gen = name.split("-", 1)[1] if name.startswith("diffeomorphic-") else None
method = get_method(name.split("-")[0]).from_zoo("mnist", device=dev, **({"generator": gen} if gen else {}))
te = load_mnist("test")
x = te.x[:size]
with torch.no_grad():
    t = method.classifier(x.to(dev)).topk(2, 1).indices[:, 1].cpu()
from cfwidgets.config import knobs as knob_specs
knobs = {"steps": steps}
spec = {k.name: k for k in knob_specs(method.Config)}
if "confidence" in spec:  # the highest allowed: rows (almost) never stop early
    knobs["confidence"] = spec["confidence"].max
method.explain(x[:1], t[:1], steps=1)  # warm-up: lazy imports, first kernels
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
walls = []
while len(walls) < 7 and sum(walls) < 3.0:  # small batches: the median of repeats, not one short run
    sync(dev)
    t0 = time.perf_counter()
    res = method.explain(x, t, **knobs)
    sync(dev)
    walls.append(time.perf_counter() - t0)
wall = sorted(walls)[len(walls) // 2]
peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps({"method": name, "batch": size, "steps": steps, "device": str(dev),
                  "seconds": wall, "cf_per_s": size / wall, "peak_mb": peak,
                  "validity": float(res.success.float().mean()), "repeats": len(walls)}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--methods", default="wachter,vae,gan,gci,aip")
    p.add_argument("--sizes", default="1,4,16,64,256,1024")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch.json"))
    a = p.parse_args(argv)
    alias = {"vae": "diffeomorphic-vae", "gan": "diffeomorphic-gan", "flow": "diffeomorphic-flow"}
    rows = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    for m in a.methods.split(","):
        for size in (int(s) for s in a.sizes.split(",")):
            cmd = [sys.executable, "-c", CHILD, alias.get(m, m), str(size), str(a.steps), a.device,
                   str(a.threads)]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode:
                print(f"{m} batch {size}: failed\n{r.stderr[-1500:]}", flush=True)
                continue
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row["arm"], row["process_s"] = m, time.perf_counter() - t0
            rows.append(row)
            print(f"{m:<8} batch {size:>5}: {row['cf_per_s']:9.2f} cf/s  {row['seconds']:8.2f} s  "
                  f"peak {row['peak_mb']:7.0f} MB  ({a.steps} steps, {row['device']})", flush=True)
    base = {r["arm"]: r["cf_per_s"] for r in rows if r["batch"] == 1}
    lines = ["| method | batch | cf / s | x batch 1 | peak MB |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        ratio = r["cf_per_s"] / base[r["arm"]] if r["arm"] in base else float("nan")
        lines.append(f"| {r['arm']} | {r['batch']} | {r['cf_per_s']:.3g} | {ratio:.3g}x | {r['peak_mb']:.0f} |")
    print("\n" + "\n".join(lines))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": a.steps, "load": os.getloadavg()[0], "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

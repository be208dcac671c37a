"""Each method with its loop models as given and as :mod:`cfwidgets._fused` runs them
(BatchNorm folded into the layer before it, channels-last convolutions).

    python benchmarks/bench_fused.py [--methods wachter,vae,gan,flow,gci,aip,disc] [--n 100]
                                     [--repeats 3] [--threads 1] [--device cpu] [--out FILE.json]

The digits and targets of bench_peers.py (a class-balanced seeded subset of the MNIST test
split, target ``(label + 1) mod 10``), one batch of ``n`` with each method's default knobs,
so the figure is time to a counterfactual (rows stop at their own ``confidence``), as in
the peers' table. Per method one instance, warmed up on 4 digits in both settings; then
``repeats`` pairs, the order within a pair swapped every repeat (``CFWIDGETS_FUSE=0`` turns
the copies off). Prints the median seconds per counterfactual of each setting, their ratio
and the ratio of each pair, with validity, mean steps and mean L1 of each setting: the
fused models compute the same functions up to float rounding, which can move a row's
path by a step or two. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("wachter", "vae", "gan", "flow", "gci", "aip", "disc")


def _method(name: str, dev):
    from cfwidgets import zoo
    from cfwidgets.methods import AIP, DISC, GCI, DiffeomorphicCounterfactual, Wachter

    clf = zoo.load("mnist/cnn", device=dev, progress=False)
    if name == "wachter":
        return Wachter(clf)
    if name in ("flow", "vae", "gan"):
        return DiffeomorphicCounterfactual(clf, zoo.load(f"mnist/{name}", device=dev, progress=False))
    if name == "disc":  # as in the peers' table: the manifold term from mnist/duq
        return DISC(clf, uncertainty=zoo.load("mnist/duq", device=dev, progress=False))
    return {"gci": GCI, "aip": AIP}[name](clf, zoo.load("mnist/cvae", device=dev, progress=False))


def _run(method, x, target, fused: bool) -> tuple[float, object]:
    from cfwidgets._utils import sync

    os.environ["CFWIDGETS_FUSE"] = "1" if fused else "0"
    sync(x.device)
    t0 = time.perf_counter()
    res = method.explain(x, target)
    sync(x.device)
    return time.perf_counter() - t0, res


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(a.threads)
    from cfwidgets._utils import resolve_device
    from cfwidgets.data import load_mnist

    dev = resolve_device(a.device)
    te = load_mnist("test").subset(a.n, seed=0)
    x, y = te.x.to(dev), torch.as_tensor(te.y).to(dev)
    rows = []
    for name in [s for s in a.methods.split(",") if s]:
        m = _method(name, dev)
        with torch.no_grad():
            pred = m.classifier(x).argmax(1)
        t = (y + 1) % 10
        target = torch.where(t == pred, (t + 1) % 10, t)
        for fused in (False, True):  # warm-up (and the copies made)
            _run(m, x[:4], target[:4], fused)
        secs: dict[bool, list[float]] = {False: [], True: []}
        last: dict[bool, object] = {}
        for r in range(a.repeats):
            for fused in ((False, True) if r % 2 == 0 else (True, False)):
                s, last[fused] = _run(m, x, target, fused)
                secs[fused].append(s / a.n)
        os.environ.pop("CFWIDGETS_FUSE", None)

        def figures(res) -> dict:
            return {"valid": float((res.probs_cf.argmax(1) == res.target).float().mean()),
                    "mean_steps": float(res.steps.float().mean()),
                    "l1": float((res.x_cf - res.x).abs().flatten(1).mean(1).mean())}

        row = {"method": name,
               "as_given_s_per_cf": statistics.median(secs[False]),
               "fused_s_per_cf": statistics.median(secs[True]),
               "pair_ratios": [g / f for g, f in zip(secs[False], secs[True], strict=True)],
               "as_given": figures(last[False]), "fused": figures(last[True])}
        row["speedup"] = row["as_given_s_per_cf"] / row["fused_s_per_cf"]
        rows.append(row)
        print(f"{name:<8} as given {row['as_given_s_per_cf']:.4f} s/cf  fused {row['fused_s_per_cf']:.4f} s/cf  "
              f"x{row['speedup']:.2f} (pairs {', '.join(f'{q:.2f}' for q in row['pair_ratios'])})  "
              f"valid {row['as_given']['valid']:.0%} / {row['fused']['valid']:.0%}  "
              f"steps {row['as_given']['mean_steps']:.1f} / {row['fused']['mean_steps']:.1f}  "
              f"L1 {row['as_given']['l1']:.4f} / {row['fused']['l1']:.4f}", flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {dev}"
    print("\n| method | as given, s / cf | fused, s / cf | speed-up | valid (given / fused) | mean steps |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['method']} | {r['as_given_s_per_cf']:.4f} | {r['fused_s_per_cf']:.4f} | {r['speedup']:.2f}x | "
              f"{r['as_given']['valid']:.0%} / {r['fused']['valid']:.0%} | "
              f"{r['as_given']['mean_steps']:.1f} / {r['fused']['mean_steps']:.1f} |")
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"n": a.n, "threads": a.threads, "repeats": a.repeats,
                                   "machine": machine, "load_at_end": os.getloadavg()[0],
                                   "rows": rows}, indent=1))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""CPU (or GPU) time per counterfactual of GCI and AIP (and Wachter for reference).

    python benchmarks/bench_attributes.py [--dataset mnist] [--n 100] [--steps 300]
                                          [--device cpu] [--threads 1]

For each method: seconds per counterfactual one query at a time (the widget's case) and
for one batch of ``n`` queries, steps used (median), flip rate, attribute L1 and the share
of the change carried by the largest attribute change. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _queries(dataset: str, n: int):
    from cfwidgets.data import load_mnist, load_shapes

    d = load_mnist("test") if dataset == "mnist" else load_shapes("test")
    return d.subset(n, seed=0).x


def bench(dataset: str = "mnist", n: int = 100, steps: int = 300, device: str = "cpu",
          singles: int = 10) -> list[dict]:
    from cfwidgets import zoo
    from cfwidgets.methods import AIP, GCI, Wachter
    from cfwidgets.metrics.attributes import attr_l1, top_share

    clf = zoo.load(f"{dataset}/cnn", device=device, progress=False)
    gen_name = "mnist/cvae" if dataset == "mnist" else "shapes/cvae"
    gen = zoo.load(gen_name, device=device, progress=False)
    x = _queries(dataset.replace("-biased", ""), n)
    with torch.no_grad():
        t = clf(x.to(device)).topk(2, dim=1).indices[:, 1].cpu()
    methods = {"gci": GCI(clf, gen), "aip": AIP(clf, gen), "wachter": Wachter(clf)}
    rows = []
    for name, m in methods.items():
        m.explain(x[:2], t[:2], steps=5)  # warm-up (first optimiser step imports modules)
        t0 = time.perf_counter()
        res = m.explain(x, t, steps=steps)
        batch_s = (time.perf_counter() - t0) / n
        single = []
        for i in range(min(singles, n)):
            t0 = time.perf_counter()
            m.explain(x[i:i + 1], t[i:i + 1], steps=steps)
            single.append(time.perf_counter() - t0)
        row = {"method": name, "device": device, "n": n, "steps_budget": steps,
               "s_per_cf_single": statistics.median(single), "s_per_cf_batch": batch_s,
               "median_steps": float(res.steps.float().median()),
               "flip_rate": float(res.success.float().mean())}
        if "attribute_changes" in res.meta:
            row["attr_l1"] = float(attr_l1(res).mean())
            row["top1_share"] = float(top_share(res, 1).mean())
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
              flush=True)
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="mnist", choices=("mnist", "shapes", "shapes-biased"))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--device", default="cpu")
    p.add_argument("--singles", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {a.device}")
    bench(a.dataset, a.n, a.steps, a.device, a.singles)

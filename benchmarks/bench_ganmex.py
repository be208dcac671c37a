"""GANMEX: what a counterfactual baseline, an attribution and its evaluation cost.

    python benchmarks/bench_ganmex.py [--dataset mnist] [--batches 1 4 16 64 256]
                                      [--n 8] [--methods integrated_gradients deeplift occlusion]
                                      [--baselines zero blur ... ganmex] [--device auto]
                                      [--threads 0] [--repeats 3]
                                      [--out benchmarks/results/ganmex.json]

Three tables (median of ``--repeats`` timed runs after one warm-up, device synchronised):

1. the translator ``G(x, t)`` (one forward pass: the GANMEX counterfactual baseline), ms per
   counterfactual by batch size;
2. ``attribute(...)`` of ``f_c - f_t`` for ``--n`` held-out digits against their runner-up
   class, ms per image by baseline and attribution method, end to end (the baseline is made
   inside the call: ``wachter`` runs a 300-step Wachter search, ``eg`` averages 8 references),
   with the baseline's own construction time beside it;
3. the perturbation curves (20 steps + 1, deletion; and deletion + insertion as
   ``perturbation_scores``), ms per image.

Figures only; nothing is asserted. Writes the rows as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import torch

from cfwidgets._utils import resolve_device, sync
from cfwidgets.attribution import (
    BASELINES,
    attribute,
    make_baseline,
    perturbation_curves,
    perturbation_scores,
)
from cfwidgets.data import load_dataset
from cfwidgets.methods.ganmex import GANMEX

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("integrated_gradients", "deeplift", "occlusion")
SHORT = {"integrated_gradients": "IG", "deeplift": "DeepLift", "occlusion": "Occlusion"}


def timed(fn, dev: torch.device, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    sync(dev)
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def queries(g: GANMEX, dataset: str, n: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` held-out images (a seeded spread over the test split, which is stored by
    class), their predicted class and their runner-up class."""
    x = load_dataset(dataset, "test").x
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:n]].to(dev)
    with torch.no_grad():
        top = g.classifier(x).topk(2, 1).indices
    return x, top[:, 0], top[:, 1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    p.add_argument("--n", type=int, default=8, help="images per attribution / curve batch")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--baselines", nargs="+", default=list(BASELINES))
    p.add_argument("--ig-steps", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ganmex.json"))
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    g = GANMEX.from_zoo(a.dataset, device=dev)
    clf, tr = g.classifier, g.translator
    print(f"GANMEX on {a.dataset}, {dev} ({torch.get_num_threads()} threads), median of "
          f"{a.repeats} after a warm-up")

    # 1. the translator
    x_all, _, t_all = queries(g, a.dataset, max(a.batches), dev)
    trans = []
    print(f"\n{'batch':>6s} {'ms / batch':>11s} {'ms / cf':>9s} {'cf / s':>9s}")
    for b in a.batches:
        x, t = x_all[:b], t_all[:b]

        def run(x=x, t=t):
            with torch.no_grad():
                tr(x, t)

        wall = timed(run, dev, a.repeats)
        trans.append({"batch": b, "seconds": wall, "ms_per_cf": 1e3 * wall / b, "cf_per_s": b / wall})
        print(f"{b:6d} {1e3 * wall:11.2f} {1e3 * wall / b:9.3f} {b / wall:9.1f}", flush=True)

    # 2. attributions by baseline and method
    x, c, t = queries(g, a.dataset, a.n, dev)
    attr_rows = []
    head = "".join(f"{SHORT.get(m, m):>11s}" for m in a.methods)
    print(f"\nattribute(), {a.n} images, ms per image (IG {a.ig_steps} steps; occlusion 4x4 window, "
          f"stride 2)\n{'baseline':11s} {'build':>9s}{head}")
    for base in a.baselines:
        build = timed(lambda base=base: make_baseline(base, clf, x, t, translator=g), dev, a.repeats)
        row = {"baseline": base, "n": a.n, "build_ms_per_image": 1e3 * build / a.n}
        cells = []
        for m in a.methods:
            wall = timed(lambda base=base, m=m: attribute(clf, x, t, baseline=base, method=m, translator=g,
                                                          source=c, n_steps=a.ig_steps, generator=0),
                         dev, a.repeats)
            row[f"{m}_ms_per_image"] = 1e3 * wall / a.n
            cells.append(f"{1e3 * wall / a.n:11.1f}")
        attr_rows.append(row)
        print(f"{base:11s} {1e3 * build / a.n:9.2f}" + "".join(cells), flush=True)

    # 3. the perturbation curves (of the GANMEX IG maps)
    maps, b = attribute(clf, x, t, baseline="ganmex", translator=g, source=c, n_steps=a.ig_steps,
                        return_baseline=True)
    one = timed(lambda: perturbation_curves(clf, x, maps, b, t, c, steps=20), dev, a.repeats)
    both = timed(lambda: perturbation_scores(clf, x, maps, b, t, c, steps=20), dev, a.repeats)
    curves = {"n": a.n, "steps": 20, "deletion_ms_per_image": 1e3 * one / a.n,
              "deletion_and_insertion_ms_per_image": 1e3 * both / a.n}
    print(f"\nperturbation curves, {a.n} images, 21 points: deletion {1e3 * one / a.n:.2f} ms / image, "
          f"deletion + insertion (perturbation_scores) {1e3 * both / a.n:.2f} ms / image")

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dataset": a.dataset, "device": str(dev), "threads": torch.get_num_threads(),
                               "repeats": a.repeats, "ig_steps": a.ig_steps, "load": os.getloadavg()[0],
                               "translator": trans, "attribute": attr_rows, "curves": curves}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

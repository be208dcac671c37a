"""Sweep one Diffeomorphic knob on the 40 held-out digits of ``benchmarks/figures.py``
(issue 11, item 3: flow counterfactuals that read as digits).

For each value of ``--knob`` (default ``prior_weight``) and target kind, prints validity, the
independent judges' agreement (``mnist/oracle``, ``digit-recognizer-py``), the bits/dim under
``mnist/flow`` (the flow arm steers with this flow, so that column is its own view), L1,
unstable rows and steps. Measured with it (flow arm, runner-up / far, oracle agreement):
prior_weight 0: 65 / 40 %, 1: 75 / 47.5 %, 3: 85 / 62.5 %, 10: 95 / 77.5 %. A first try, the
flow's own continuous bits/dim of g(z) as the pull (weight 0.3), pushed pixels to the
logit transform's edges: 35 of 40 rows unstable, validity 35 %; it was dropped.

    python experiments/flow_realism_knobs.py --weights 0,3,10 --kinds runner-up,far [--arm vae]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from figures import _targets  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--weights", default="0,1,3")
    ap.add_argument("--knob", default="prior_weight")
    ap.add_argument("--kinds", default="runner-up,far")
    ap.add_argument("--extra", default="", help="more knobs, k=v,k=v")
    ap.add_argument("--arm", default="flow", choices=("flow", "vae", "gan"))
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from cfwidgets import zoo
    from cfwidgets.data import load_mnist
    from cfwidgets.methods.diffeomorphic import DiffeomorphicCounterfactual
    from cfwidgets.metrics import evaluate, oracle_agreement

    load = lambda name: zoo.load(name, device="cpu", progress=False)  # noqa: E731
    clf, oracle, flow = load("mnist/cnn"), load("mnist/oracle"), load("mnist/flow")
    external = zoo.load_external("digit-recognizer", device="cpu")
    te = load_mnist("test").subset(a.n, seed=0)
    x, y = te.x, torch.as_tensor(te.y)
    extra = {}
    for kv in filter(None, a.extra.split(",")):
        k, v = kv.split("=")
        extra[k] = float(v)
    rows = []
    m = DiffeomorphicCounterfactual(clf, load(f"mnist/{a.arm}"), density_model=flow)
    kind_of = type(getattr(DiffeomorphicCounterfactual.Config(), a.knob))  # int knobs stay ints
    for kind in a.kinds.split(","):
        t = _targets(clf, x, y, kind)
        for w in [kind_of(float(s)) for s in a.weights.split(",")]:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = m.explain(x, t, path_density=False, **{a.knob: w}, **extra)
            ev = evaluate(r, oracle=oracle)  # validity, oracle, l1, steps: the shared metrics
            row = {"arm": a.arm, "kind": kind, a.knob: w, **extra,
                   **{k: ev[k] for k in ("validity", "oracle", "l1", "steps")},
                   "external": float(oracle_agreement(r, external).float().mean()),
                   "bpd_cf": float(r.meta["bpd_cf"].median()),
                   "bpd_query": float(r.meta["bpd"].median()),
                   "unstable": int(r.meta["unstable"].sum()) if "unstable" in r.meta else None,
                   "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"n": a.n, "judges": {"oracle": "mnist/oracle",
                               "external": "digit-recognizer-py", "bpd": "mnist/flow (steered with)"},
                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

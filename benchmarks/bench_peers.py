"""cfwidgets against the peers on the same classifier and the same test digits.

    bash benchmarks/peers/setup.sh                # once: the peers' own virtual environments
    python benchmarks/bench_peers.py [--n 100] [--peers omnixai,alibi-cf,alibi-proto]
                                     [--methods wachter,wachter-single,flow,vae,gan,gci,aip,ganmex,disc]
                                     [--threads 1]
                                     [--out benchmarks/results/peers.json]

The digits are a class-balanced seeded subset of the MNIST test split; each gets the target
``(label + 1) mod 10`` (the next class when that is already the prediction), the rule the
issue's measurements used. The classifier is the zoo's ``mnist/cnn``: OmniXAI takes it as a
PyTorch module; alibi (TensorFlow) gets a Keras port with the same weights, and each peer
script reports the largest logit difference to PyTorch's on these digits.

Per arm: seconds per counterfactual (the peers one image at a time, as they work; the
toolkit's methods as one batch, and Wachter also one image at a time), the share for which
a counterfactual was returned at all, validity on the requested target (the explained CNN),
"any flip" (a class other than the original), mean L1, oracle agreement (``mnist/oracle``,
an MLP of another seed that no method steers with), external agreement (the CNN in
``digit-recognizer-py``, trained outside this project) and IM1 (``mnist/ae``, class
autoencoders no method uses). A peer that returned nothing for a digit counts as invalid
there and is scored on the query itself. Figures only; nothing is asserted.

All arms run in the same period with torch/TF limited to ``--threads`` threads, so the
ratios hold on a busy machine even when the seconds do not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / ".peers"
PEERS = {  # arm -> (venv, script, methods argument)
    "omnixai": ("omnixai", "run_omnixai.py", None),
    "alibi-cf": ("alibi", "run_alibi.py", "cf"),
    "alibi-proto": ("alibi", "run_alibi.py", "proto"),
}
METHODS = ("wachter", "wachter-single", "flow", "vae", "gan", "gci", "aip", "ganmex", "disc")


def _targets(clf, x, y):
    with torch.no_grad():
        pred = clf(x).argmax(1)
    t = (y + 1) % 10
    return torch.where(t == pred, (t + 1) % 10, t)


def _peer(arm: str, inp: Path, tmp: Path, threads: int) -> dict:
    venv, script, methods = PEERS[arm]
    py = PEERS_DIR / venv / "bin" / "python"
    if not py.exists():
        raise FileNotFoundError(f"{py} missing: run bash benchmarks/peers/setup.sh first")
    out = tmp / f"{arm}.npz"
    cmd = [str(py), str(ROOT / "benchmarks" / "peers" / script), str(inp), str(out)]
    if methods:
        cmd += ["--methods", methods]
    env = {"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads),
           "TF_NUM_INTEROP_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t0
    d = np.load(out)
    key = "" if arm == "omnixai" else methods + "_"
    return {"x_cf": d[f"{key}x_cf"], "seconds": d[f"{key}seconds"], "logit_gap": float(d["logit_gap"]),
            "process_wall_s": wall, **({"fit_s": float(d["proto_fit_seconds"])} if arm == "alibi-proto" else {})}


def _score(name, x, x_cf, target, models, extra_meta) -> dict:
    from cfwidgets.metrics import evaluate, oracle_agreement
    from cfwidgets.result import CounterfactualResult

    clf, oracle, ae, external = models
    found = ~torch.isnan(x_cf).flatten(1).any(1)
    x_cf = torch.where(found[:, None, None, None], torch.nan_to_num(x_cf), x).clamp(0, 1)
    with torch.no_grad():
        probs, probs_cf = clf(x).softmax(-1), clf(x_cf).softmax(-1)
    res = CounterfactualResult(x=x, x_cf=x_cf, target=target, probs=probs, probs_cf=probs_cf)
    row = evaluate(res, autoencoders=ae, oracle=oracle)
    row = {k: v for k, v in row.items() if k in ("validity", "l1", "im1", "oracle")}
    if external is not None:
        row["external"] = float(oracle_agreement(res, external).float().mean())
    row.update(arm=name, returned=float(found.float().mean()),
               any_flip=float((probs_cf.argmax(1) != probs.argmax(1)).float().mean()), **extra_meta)
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "peers.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    from cfwidgets import zoo
    from cfwidgets.data import load_mnist
    from cfwidgets.methods import AIP, DISC, GANMEX, GCI, Wachter
    from cfwidgets.methods.diffeomorphic import DiffeomorphicCounterfactual

    def load(name):
        return zoo.load(name, device="cpu", progress=False)

    clf, oracle, ae = load("mnist/cnn"), load("mnist/oracle"), load("mnist/ae")
    try:
        external = zoo.load_external("digit-recognizer", device="cpu")
    except (ImportError, OSError, FileNotFoundError) as e:
        print(f"no external judge: {e}")
        external = None
    models = (clf, oracle, ae, external)
    te = load_mnist("test").subset(a.n, seed=0)
    x, y = te.x, torch.as_tensor(te.y)
    target = _targets(clf, x, y)
    train = load_mnist("train").subset(1000, seed=1)  # CFProto's k-d trees (alibi's example: all)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inp = tmp / "in.npz"
        with torch.no_grad():
            logits = clf(x).numpy()
        norm = np.array([float(clf._mean), float(clf._std)])  # ConvNet normalises its input
        np.savez(inp, x=x.numpy(), target=target.numpy(), logits=logits, train_x=train.x.numpy(), norm=norm,
                 **{f"w:{k}": v.numpy() for k, v in clf.state_dict().items()})
        for arm in [s for s in a.peers.split(",") if s]:
            print(f"running {arm} on {a.n} digits ...", flush=True)
            r = _peer(arm, inp, tmp, a.threads)
            meta = {"seconds_per_cf": float(np.mean(r["seconds"])), "batched": False,
                    "logit_gap": r["logit_gap"], **({"fit_s": r["fit_s"]} if "fit_s" in r else {})}
            rows.append(_score(arm, x, torch.from_numpy(r["x_cf"]).float(), target, models, meta))
            print(_fmt(rows[-1]), flush=True)
    cvae = load("mnist/cvae")
    for arm in [s for s in a.methods.split(",") if s]:
        t0 = time.perf_counter()
        if arm == "wachter":
            res = Wachter(clf).explain(x, target)
        elif arm == "wachter-single":
            parts = [Wachter(clf).explain(x[i:i + 1], target[i:i + 1]) for i in range(len(x))]
            x_cf = torch.cat([r.x_cf for r in parts])
        elif arm in ("vae", "gan", "flow"):
            res = DiffeomorphicCounterfactual(clf, load(f"mnist/{arm}")).explain(x, target)
        elif arm == "ganmex":  # the translator trained against this same CNN
            res = GANMEX(clf, load("mnist/ganmex")).explain(x, target)
        elif arm == "disc":
            # the same CNN as every arm; its manifold term from a separate DUQ model of the
            # digits (mnist/duq's certainty; the README's DISC figures explain mnist/duq)
            res = DISC(clf, uncertainty=load("mnist/duq")).explain(x, target)
        else:
            res = {"gci": GCI, "aip": AIP}[arm](clf, cvae).explain(x, target)
        secs = (time.perf_counter() - t0) / len(x)
        if arm != "wachter-single":
            x_cf = res.x_cf
        rows.append(_score(f"cfwidgets {arm}", x, x_cf, target, models,
                           {"seconds_per_cf": secs, "batched": arm != "wachter-single"}))
        print(_fmt(rows[-1]), flush=True)
    single = {r["arm"]: r["seconds_per_cf"] for r in rows if not r["batched"]}
    if "omnixai" in single:
        for r in rows:
            r["speedup_vs_omnixai"] = single["omnixai"] / r["seconds_per_cf"]
    print("\n" + _table(rows))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": a.n, "threads": a.threads, "target": "(label + 1) mod 10",
                               "judges": {"oracle": "mnist/oracle", "im1": "mnist/ae",
                                          "external": "digit-recognizer-py"},
                               "machine": _machine(), "rows": rows}, indent=1))
    print(f"wrote {out}")


def _machine() -> str:
    import os
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"


def _fmt(r: dict) -> str:
    return (f"{r['arm']:<22} {r['seconds_per_cf']:8.3f} s/cf  returned {r['returned']:5.0%}  "
            f"valid {r['validity']:5.0%}  any-flip {r['any_flip']:5.0%}  L1 {r['l1']:.3f}  "
            f"oracle {r['oracle']:5.0%}  external {r.get('external', float('nan')):5.0%}  "
            f"IM1 {r.get('im1', float('nan')):.3f}")


def _table(rows: list[dict]) -> str:
    head = "| arm | s / cf | x vs OmniXAI | returned | valid (target) | any flip | L1 | oracle | external | IM1 |"
    lines = [head, "|" + " --- |" * 10]
    for r in rows:
        sp = r.get("speedup_vs_omnixai")
        lines.append(f"| {r['arm']} | {r['seconds_per_cf']:.3g} | {'' if sp is None else f'{sp:.3g}x'} | "
                     f"{r['returned']:.0%} | {r['validity']:.0%} | {r['any_flip']:.0%} | {r['l1']:.3f} | "
                     f"{r['oracle']:.0%} | {r.get('external', float('nan')):.0%} | {r.get('im1', float('nan')):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

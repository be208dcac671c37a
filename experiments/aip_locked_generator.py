"""Issue 11, item 4: which conditional generator lets AIP flip a digit with its class code
locked? Trains a variant of ``mnist/cvae`` (recipe overrides) into a scratch folder, then
runs GCI and AIP, digit code free and locked, on held-out digits and prints validity, the
independent oracle's agreement (``mnist/oracle``), the share whose class code changed, L1
and the mean steps.

Usage::

    python experiments/aip_locked_generator.py --out /tmp/cvae-x --set encoder_sees_attributes=false \
        --set class_dropout=0.5 --set z_dim=16 [--n 40] [--kinds runner-up,far]
    python experiments/aip_locked_generator.py --shipped      # the shipped mnist/cvae
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from figures import _targets  # noqa: E402  (same targets as the README's figures)


def _value(v: str):
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _grid(path: str, x, grids, oracle, n: int = 16) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1 + len(grids), n, figsize=(n * 0.8, (1 + len(grids)) * 0.95))
    for j in range(n):
        axes[0, j].imshow(x[j, 0], cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_ylabel("query", fontsize=6)
    for i, (name, res) in enumerate(grids, 1):
        with torch.no_grad():
            o = oracle(res.x_cf).argmax(1)
        for j in range(n):
            axes[i, j].imshow(res.x_cf[j, 0], cmap="gray", vmin=0, vmax=1)
            ok = bool(res.success[j]) and int(o[j]) == int(res.target[j])
            axes[i, j].set_title(f"{int(res.target[j])}{'+' if ok else '-'}", fontsize=6)
        axes[i, 0].set_ylabel(name, fontsize=6)
    for a in axes.flat:
        a.set_xticks([]), a.set_yticks([])
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/cvae-variant")
    ap.add_argument("--set", action="append", default=[], help="recipe override K=V")
    ap.add_argument("--shipped", action="store_true")
    ap.add_argument("--load", action="store_true", help="load the variant already trained in --out")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0, help="subset seed (the tests use 3)")
    ap.add_argument("--kinds", default="runner-up")
    ap.add_argument("--arms", default="gci,gci-locked,aip,aip-locked")
    ap.add_argument("--knob", action="append", default=[], help="method knob K=V (all arms)")
    ap.add_argument("--aip-knob", action="append", default=[], help="AIP knob K=V (AIP arms only)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--png", default=None, help="save a grid: query / counterfactual per arm")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    from cfwidgets import zoo
    from cfwidgets.data import load_mnist
    from cfwidgets.methods import AIP, GCI
    from cfwidgets.metrics import evaluate

    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k: _value(v) for k, v in overrides.items()}
    t0 = time.perf_counter()
    if args.shipped:
        cvae = zoo.load("mnist/cvae", device="cpu")
    elif args.load:  # by hand, not zoo.build: a variant of an older recipe version loads too
        from safetensors.torch import load_file

        meta = json.loads((Path(args.out) / "mnist__cvae.json").read_text())
        cvae = zoo.get_recipe("mnist/cvae").make_model(meta["config"])
        cvae.load_state_dict(load_file(Path(args.out) / "mnist__cvae.safetensors"))
        cvae.zoo_meta = meta
    else:
        cvae = zoo.build("mnist/cvae", out_dir=args.out, device="cpu", progress=False, force=True, **overrides)
    cvae.eval()
    train_s = time.perf_counter() - t0
    m = cvae.zoo_meta["metrics"]
    print(f"trained in {train_s:.0f} s; rec mse {m['test_rec_mse']:.4f}; class kept "
          f"{m.get('reconstruction_class_kept', float('nan')):.3f}; digit control "
          f"{m['control']['digit']['accuracy']:.3f}", flush=True)
    clf, oracle = zoo.load("mnist/cnn", device="cpu"), zoo.load("mnist/oracle", device="cpu")
    te = load_mnist("test").subset(args.n, seed=args.seed)
    x, y = te.x, torch.as_tensor(te.y)
    knobs = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.knob)}
    aip_knobs = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.aip_knob)}
    rows, grids = [], []
    for kind in args.kinds.split(","):
        t = _targets(clf, x, y, kind)
        for arm in args.arms.split(","):
            cls = {"gci": GCI, "aip": AIP}[arm.split("-")[0]]
            lock = {"attribute_weights": {"digit": 100.0}} if arm.endswith("locked") else {}
            t1 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = cls(clf, cvae).explain(x, t, **lock, **knobs, **(aip_knobs if cls is AIP else {}))
            row = evaluate(res, oracle=oracle)
            row.update(arm=arm, kind=kind, seconds=round(time.perf_counter() - t1, 1),
                       class_code_changed=float(res.meta["class_code_changed"].float().mean()),
                       latent_distance=float(res.meta.get("latent_distance", torch.zeros(1)).mean()))
            rows.append(row)
            grids.append((f"{kind} {arm}", res))
            print(f"{kind:9s} {arm:11s} valid {row['validity']:.3f} oracle {row['oracle']:.3f} "
                  f"code {row['class_code_changed']:.2f} L1 {row['l1']:.3f} "
                  f"dz {row['latent_distance']:.2f} steps {row.get('steps', float('nan')):.0f} "
                  f"{row['seconds']:.0f} s", flush=True)
    if args.png:
        _grid(args.png, x, grids, oracle)
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": overrides, "metrics": m, "rows": rows},
                                              indent=1, default=str))


if __name__ == "__main__":
    main()

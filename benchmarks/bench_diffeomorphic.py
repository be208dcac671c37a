"""Diffeomorphic counterfactuals: throughput and the toolkit's overhead per step.

    python benchmarks/bench_diffeomorphic.py [--batches 1,4,16,64,256] [--steps 20]
                                             [--device cpu] [--threads 0] [--cf-batch 32]

Three tables (figures only; nothing is asserted):

1. **step throughput**: seconds per optimisation step and latent steps per second for
   flow / VAE / GAN / pixels at each batch size (``steps`` steps, confidence 0.9999 so
   rows rarely stop early);
2. **overhead**: the method's time per step divided by a bare hand-written loop of the
   same algorithm (``x = clip(g(z))`` with the straight-through clip, ``CE(f(x), t)``,
   backward, Adam step on ``z``): what the toolkit adds (Recorder bookkeeping, active
   set, callback plumbing, trajectory). The aim is <= 1.1. The GAN's inversion is left
   out (``gan_inversion_steps = 0``, encoder start) so both loops do the same work;
3. **counterfactuals per second** with the default knobs (confidence 0.99, up to 1000
   steps, GAN inversion included) on ``cf-batch`` held-out digits with random targets.

Timings interleave the two loops and keep the fastest of ``--repeats`` runs: the machines
this runs on are often shared.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", message=".*torch.lu.*")


def _setup(device: str):
    from cfwidgets import zoo

    clf = zoo.load("mnist/cnn", device=device, progress=False)
    gens = {g: zoo.load(f"mnist/{g}", device=device, progress=False) for g in ("flow", "vae", "gan")}
    return clf, gens


def _queries(n: int, clf, device: str, seed: int = 0):
    from cfwidgets.data import load_mnist

    te = load_mnist("test")
    idx = torch.arange(n) % len(te)
    x = te.x[idx].to(device)
    with torch.no_grad():
        pred = clf(x).argmax(1)
    g = torch.Generator().manual_seed(seed)
    t = (pred + torch.randint(1, 10, (n,), generator=g).to(device)) % 10
    return x, t


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_loop(clf, decode, z0, t, steps: int, lr: float = 0.05) -> None:
    """The algorithm with nothing around it."""
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        g = decode(z)
        x = g + (g.clamp(0, 1) - g).detach()
        loss = F.cross_entropy(clf(x), t, reduction="none").sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def bench(batches=(1, 4, 16, 64, 256), steps: int = 20, device: str = "cpu", repeats: int = 3,
          cf_batch: int = 32) -> dict:
    from cfwidgets.methods import Wachter
    from cfwidgets.methods.base import prepared
    from cfwidgets.methods.diffeomorphic import DiffeomorphicCounterfactual

    clf, gens = _setup(device)
    methods = {k: DiffeomorphicCounterfactual(clf, g) for k, g in gens.items()}
    methods["pixels"] = Wachter(clf)
    fast = {"confidence": 0.9999, "record_every": 1000, "steps": steps}
    out = {"steps": [], "overhead": [], "cfs": []}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    print("\n# step throughput and overhead (method / bare loop), confidence 0.9999, "
          f"{steps} steps")
    print(f"{'arm':7} {'batch':>5} {'s/step':>9} {'z-steps/s':>10} {'bare s/step':>11} {'ratio':>6}")
    for b in batches:
        x, t = _queries(b, clf, device)
        for name, m in methods.items():
            kw = dict(fast)
            if name == "pixels":
                kw["proximity_weight"] = 0.0
                kw.pop("record_every")
                kw["record_every"] = 1000
            else:
                kw["path_density"] = False
                if name == "gan":
                    kw["gan_inversion_steps"] = 0
            try:
                m.explain(x[:1], t[:1], **{**kw, "steps": 2})  # warm-up
                if name == "pixels":
                    z0, decode = x, (lambda z: z)
                else:
                    with torch.no_grad():
                        z0 = m.generative_model.encode(x)
                    decode = m.generative_model.decode
                best_m, best_b = float("inf"), float("inf")
                for _ in range(repeats):
                    _sync(device)
                    t0 = time.perf_counter()
                    m.explain(x, t, **kw)
                    _sync(device)
                    best_m = min(best_m, time.perf_counter() - t0)
                    with prepared(m.modules().values()):
                        _sync(device)
                        t0 = time.perf_counter()
                        bare_loop(m.classifier, decode, z0, t, steps)
                        _sync(device)
                        best_b = min(best_b, time.perf_counter() - t0)
            except RuntimeError as e:  # out of memory at large batches
                print(f"{name:7} {b:5d} failed: {str(e)[:80]}")
                continue
            # the method also encodes (and decodes z0 once) outside the loop: count it in
            per_step, bare_step = best_m / steps, best_b / steps
            row = {"arm": name, "batch": b, "s_per_step": per_step, "z_steps_per_s": b / per_step,
                   "bare_s_per_step": bare_step, "ratio": per_step / bare_step}
            out["steps"].append(row)
            print(f"{name:7} {b:5d} {per_step:9.4f} {b / per_step:10.1f} {bare_step:11.4f} "
                  f"{per_step / bare_step:6.2f}", flush=True)

    print(f"\n# counterfactuals per second, default knobs, {cf_batch} digits, random targets")
    print(f"{'arm':7} {'cf/s':>7} {'flip':>5} {'median steps':>12} {'wall s':>7}")
    x, t = _queries(cf_batch, clf, device, seed=1)
    for name, m in methods.items():
        kw = {"proximity_weight": 0.0, "lr": 0.05, "steps": 1000} if name == "pixels" else {}
        t0 = time.perf_counter()
        res = m.explain(x, t, **kw)
        wall = time.perf_counter() - t0
        row = {"arm": name, "cf_per_s": cf_batch / wall, "flip": float(res.success.float().mean()),
               "median_steps": float(res.steps.float().median()), "wall_s": wall}
        out["cfs"].append(row)
        print(f"{name:7} {row['cf_per_s']:7.2f} {row['flip']:5.0%} {row['median_steps']:12.0f} "
              f"{wall:7.1f}", flush=True)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--batches", default="1,4,16,64,256")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cf-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    bench(tuple(int(b) for b in a.batches.split(",")), a.steps, a.device, a.repeats, a.cf_batch)

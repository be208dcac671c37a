"""Benchmarks that ship with the package (``cfwidgets bench``); the scripts in the
repository's ``benchmarks/`` folder call these and add more.

Figures are printed, never asserted: speed is measured, not tested.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from ._fused import fused_copy, fusion_enabled
from ._utils import resolve_device, sync

__all__ = ["bench_wachter", "hand_written_wachter", "timeit"]


def hand_written_wachter(clf, x, target, steps: int, lr: float, proximity_weight: float,
                         confidence: float):
    """The Wachter loop written plainly in torch, with the same stopping rule as the
    toolkit (each row frozen when p_t >= confidence; stop when all rows are done).
    The reference for the toolkit's overhead."""
    for p in clf.parameters():
        p.requires_grad_(False)
    x_cf = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x_cf], lr=lr)
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    frozen = x.clone()
    for _ in range(steps):
        logits = clf(x_cf)
        p_t = logits.softmax(-1).gather(1, target[:, None])[:, 0]
        now = (p_t >= confidence) & ~done
        frozen = torch.where(now[:, None, None, None], x_cf.detach(), frozen)
        done = done | now
        if bool(done.all()):
            break
        loss = F.cross_entropy(logits, target, reduction="none") + proximity_weight * (
            x_cf - x).abs().flatten(1).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            x_cf.clamp_(0, 1)
    return torch.where(done[:, None, None, None], frozen, x_cf.detach())


def timeit(fn, repeats: int, device) -> list[float]:
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def bench_wachter(n: int = 100, steps: int = 100, device="auto", repeats: int = 3,
                  confidence: float = 0.9999, one_by_one: int = 20) -> dict:
    """Time the Wachter method on the zoo CNN: per counterfactual one at a time and as one
    batch of ``n``, against :func:`hand_written_wachter`. ``confidence`` defaults to
    0.9999 so both loops run (nearly) the full ``steps``: the figures compare loop
    overhead, not luck in early stopping.

    The overhead ratios give the hand-written loop the model the toolkit's loop runs (the
    CNN with its BatchNorm folded, :mod:`cfwidgets._fused`), so they compare loops, not
    models; ``batch_ratio_vs_plain`` is the toolkit against the same hand-written loop on
    the CNN as trained (what writing the loop yourself would cost)."""
    from . import zoo
    from .data import load_mnist
    from .methods import Wachter

    dev = resolve_device(device)
    plain = zoo.load("mnist/cnn", device=dev, progress=False).eval()
    # what the toolkit's loop runs (the model itself with CFWIDGETS_FUSE=0)
    clf = fused_copy(plain) if fusion_enabled() else plain
    x = load_mnist("test").x[:n].to(dev)
    with torch.no_grad():
        target = clf(x).topk(2, dim=1).indices[:, 1]
    method = Wachter(plain)
    knobs = dict(steps=steps, lr=0.01, proximity_weight=1.0, confidence=confidence)

    def tool_batch():
        return method.explain(x, target, **knobs)

    def hand_batch():
        return hand_written_wachter(clf, x, target, steps, 0.01, 1.0, confidence)

    def hand_plain_batch():
        return hand_written_wachter(plain, x, target, steps, 0.01, 1.0, confidence)

    k = min(one_by_one, n)

    def tool_single():
        for i in range(k):
            method.explain(x[i:i + 1], target[i:i + 1], **knobs)

    def hand_single():
        for i in range(k):
            hand_written_wachter(clf, x[i:i + 1], target[i:i + 1], steps, 0.01, 1.0, confidence)

    tool_batch()  # warm-up
    hand_batch()
    # interleave, and swap which goes first every repeat (A B B A ...): drift on a noisy
    # machine then hits both alike, and neither always runs right after the other (a fixed
    # order measured the batch at 1.11-1.16 where alternating gave 1.02 on the same machine)
    tb, hb, pb, ts, hs = [], [], [], [], []
    for i in range(repeats):
        pairs = [(tool_batch, tb), (hand_batch, hb), (hand_plain_batch, pb)]
        singles = [(tool_single, ts), (hand_single, hs)]
        if i % 2:
            pairs.reverse()
            singles.reverse()
        for fn, out in pairs + singles:
            out += timeit(fn, 1, dev)
    med = statistics.median
    res = tool_batch()
    out = {
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "n": n,
        "steps": steps,
        "batch_tool_s_per_cf": med(tb) / n,
        "batch_hand_s_per_cf": med(hb) / n,
        "batch_ratio": med(tb) / med(hb),
        "batch_hand_plain_s_per_cf": med(pb) / n,
        "batch_ratio_vs_plain": med(tb) / med(pb),
        "folded": clf is not plain,
        "single_tool_s_per_cf": med(ts) / k,
        "single_hand_s_per_cf": med(hs) / k,
        "single_ratio": med(ts) / med(hs),
        # the fastest run of each: on a shared machine the least disturbed estimate
        "batch_ratio_min": min(tb) / min(hb),
        "single_ratio_min": min(ts) / min(hs),
        "flip_rate": float(res.success.float().mean()),
        "l1_per_pixel": float((res.x_cf - res.x).abs().mean()),
    }
    print(f"Wachter on mnist/cnn, {n} test digits, {steps} steps, device {dev}, "
          f"{out['threads']} thread(s), median of {repeats}")
    print(f"  one batch of {n}:   toolkit {out['batch_tool_s_per_cf'] * 1e3:7.2f} ms/cf   "
          f"hand-written {out['batch_hand_s_per_cf'] * 1e3:7.2f} ms/cf   ratio {out['batch_ratio']:.3f} "
          f"(fastest runs: {out['batch_ratio_min']:.3f})")
    print(f"  the same hand-written loop on the CNN as trained: {out['batch_hand_plain_s_per_cf'] * 1e3:7.2f} ms/cf"
          f"   toolkit / that {out['batch_ratio_vs_plain']:.3f}"
          + ("" if out["folded"] else "   (CFWIDGETS_FUSE=0: both on the CNN as trained)"))
    print(f"  one at a time ({k}): toolkit {out['single_tool_s_per_cf'] * 1e3:7.2f} ms/cf   "
          f"hand-written {out['single_hand_s_per_cf'] * 1e3:7.2f} ms/cf   ratio {out['single_ratio']:.3f} "
          f"(fastest runs: {out['single_ratio_min']:.3f})")
    print(f"  flip rate {out['flip_rate']:.2%}, L1 per pixel {out['l1_per_pixel']:.4f}")
    return out

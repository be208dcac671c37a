"""GANMEX on the synthetic shapes: how much of a one-vs-one map lies in the region that
defines "this shape and not that one", for every ordered pair of classes, under several
definitions of that region (figures only; tests/test_ganmex.py asserts the issue's bar).

    python experiments/ganmex_shapes_region.py [--n 48] [--baselines zero ganmex mdts blur]

For a test shape of class ``c`` (classified correctly) and a target ``t``, with
``A = render(c, f)`` and ``B = render(t, f)`` (same six factors, the ground truth):

- ``diff``: ``|A - B| > 0.1`` dilated by 1 px (``shapes_difference_region(...,
  exclude_shared=False)``, the region before the fix);
- ``diff_excl_shared``: ``diff`` without the ink both shapes share (``A > 0.1`` and
  ``B > 0.1``; ``shapes_difference_region``'s default now): the dilation otherwise hands
  the shared strokes back to the region;
- ``target_only``: the target shape's ink that ``x`` lacks (``B > 0.1``, ``A <= 0.1``,
  dilated 1 px, shared ink left out): what a one-vs-one map should point at as "missing
  for t";
- ``shared``: the shared ink itself (the part that does *not* separate the classes; lower
  is better).

Prints the mean share of |attribution| (IG, 32 steps) in each region per pair and overall.
"""

from __future__ import annotations

import argparse
import itertools
import warnings

import torch
import torch.nn.functional as F

from cfwidgets import zoo
from cfwidgets.attribution import attribute, mass_in_region, shapes_difference_region
from cfwidgets.data import load_dataset
from cfwidgets.data.shapes import SHAPE_CLASSES, render_shapes
from cfwidgets.methods.ganmex import GANMEX


def regions(c, f, t, thr: float = 0.1) -> dict[str, torch.Tensor]:
    a, b = render_shapes(c, f) > thr, render_shapes(t, f) > thr
    shared = a & b
    diff = shapes_difference_region(c, f, t, threshold=thr, exclude_shared=False)
    tonly = F.max_pool2d((b & ~a).float(), 3, stride=1, padding=1).bool() & ~shared
    return {"diff": diff, "diff_excl_shared": shapes_difference_region(c, f, t, threshold=thr),
            "target_only": tonly, "shared": shared}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--baselines", nargs="+", default=["zero", "ganmex", "mdts", "blur"])
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    m = GANMEX(zoo.load("shapes/cnn", device="cpu", progress=False),
               zoo.load("shapes/ganmex", device="cpu", train=False, progress=False))
    te = load_dataset("shapes", "test")
    x, y, f = te.x[:a.n], te.y[:a.n], te.extra["factors"][:a.n]
    with torch.no_grad():
        keep = m.classifier(x).argmax(1) == y
    x, y, f = x[keep], y[keep], f[keep]
    print(f"{int(keep.sum())}/{a.n} test shapes classified correctly; IG 32 steps")
    names = list(regions(y[:1], f[:1], (y[:1] + 1) % 4))
    rows = {}
    for dt in (1, 2, 3):
        t = (y + dt) % 4
        reg = regions(y, f, t)
        ink = x[:, 0] > 0.1
        shared_ink = (reg["shared"][:, 0] & ink).flatten(1).sum(1) / ink.flatten(1).sum(1)
        for bname in a.baselines:
            attr = attribute(m.classifier, x, t, baseline=bname, translator=m, n_steps=32, data=None)
            for r in names:
                share = mass_in_region(attr, reg[r])
                for k in range(len(x)):
                    rows.setdefault((int(y[k]), int(t[k]), bname, r), []).append(float(share[k]))
        for k in range(len(x)):
            rows.setdefault((int(y[k]), int(t[k]), "-", "shared_ink"), []).append(float(shared_ink[k]))
    mean = {k: sum(v) / len(v) for k, v in rows.items()}
    pairs = sorted({(c, t) for c, t, *_ in rows})
    print(f"\n{'pair':18s} {'n':>3s} {'shared ink':>10s}  " + "  ".join(
        f"{r + ' ' + b:>24s}" for r, b in itertools.product(names, a.baselines)))
    for c, t in pairs:
        n = len(rows[(c, t, "-", "shared_ink")])
        cells = "  ".join(f"{mean[(c, t, b, r)]:24.3f}" for r, b in itertools.product(names, a.baselines))
        print(f"{SHAPE_CLASSES[c] + ' / ' + SHAPE_CLASSES[t]:18s} {n:3d} {mean[(c, t, '-', 'shared_ink')]:10.3f}  {cells}")
    print("\noverall (mean over every pair's rows):")
    for r in names:
        vals = {b: [v for (c, t, bb, rr), vs in rows.items() if bb == b and rr == r for v in vs]
                for b in a.baselines}
        print(f"  {r:18s} " + "  ".join(f"{b} {sum(v) / len(v):.3f}" for b, v in vals.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does a longer-trained (or less tied) shapes translator put IG mass where the shapes differ?

Trains ``shapes/ganmex`` with overrides into its own folder (resumable: run again after an
interruption), then measures what ``tests/test_ganmex.py::test_shapes_mass_in_the_class_
defining_region`` measures: on 48 test shapes (the CNN's correct ones), targets (y + 1) % 4,
the share of |IG| inside the region where the two shapes differ, GANMEX vs zero baseline.

    python experiments/shapes_translator_region.py OUT_DIR steps=3000 id_weight=100
"""
from __future__ import annotations

import json
import sys
import time

import torch

from cfwidgets import zoo
from cfwidgets.attribution import attribute
from cfwidgets.attribution.evaluation import mass_in_region, shapes_difference_region
from cfwidgets.data.images import load_dataset
from cfwidgets.methods.ganmex import GANMEX


def region_shares(translator, n=48, n_steps=32):
    clf = zoo.load("shapes/cnn", device="cpu", progress=False)
    m = GANMEX(clf, translator)
    te = load_dataset("shapes", "test")
    x, y, f = te.x[:n], te.y[:n], te.extra["factors"][:n]
    with torch.no_grad():
        keep = clf(x).argmax(1) == y
    x, y, f = x[keep], y[keep], f[keep]
    t = (y + 1) % 4
    region = shapes_difference_region(y, f, t)
    out = {}
    for baseline in ("ganmex", "zero", "blur"):
        a = attribute(clf, x, t, baseline=baseline, translator=m, n_steps=n_steps)
        out[baseline] = round(float(mass_in_region(a, region).mean()), 4)
    with torch.no_grad():
        b = translator(x, t)
        out["success"] = round(float((clf(b).argmax(1) == t).float().mean()), 4)
    return out


if __name__ == "__main__":
    out_dir = sys.argv[1]
    overrides = {}
    for kv in sys.argv[2:]:
        k, v = kv.split("=")
        overrides[k] = float(v) if "." in v or "e" in v else int(v)
    t0 = time.time()
    tr = zoo.build("shapes/ganmex", out_dir=out_dir, device="cpu", progress=True, **overrides)
    meta = tr.zoo_meta["metrics"]
    res = {"overrides": overrides, "train_s": round(time.time() - t0, 1),
           "judge_agreement": meta.get("judge_agreement"), "success": meta.get("success"),
           "mean_l1": meta.get("mean_l1"), "region": region_shares(tr.eval())}
    print(json.dumps(res))
    with open(f"{out_dir}/region.json", "w") as fh:
        json.dump(res, fh, indent=1)

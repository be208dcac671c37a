"""Every quality figure the README states, regenerated in one run, each with its judge and
sample size named (figures only; nothing is asserted: the tests assert the bars).

    python benchmarks/figures.py [--n 40] [--kinds runner-up,far,random,next] [--text-n 256]
                                 [--methods wachter,flow,vae,gan,gci,gci-locked,aip,aip-locked,
                                            ganmex,disc]
                                 [--out benchmarks/results/figures.json] [--no-text]
                                 [--knob K=V ...]   (e.g. --knob patience=0)

Images: ``n`` held-out MNIST digits (a class-balanced seeded subset of the test split),
each with a target of every kind:

- ``runner-up``: the explained CNN's second most likely class (the nearest decision);
- ``far``: ``(label + 3) mod 10`` (a class the digit is not near);
- ``random``: a seeded random class other than the CNN's prediction;
- ``next``: ``(label + 1) mod 10`` (the rule a reviewer used on issue 11).

Per method and target kind: validity (the explained CNN, ``mnist/cnn``, by definition),
oracle agreement (``mnist/oracle``: an MLP of another seed that no method steers with) and
``external`` agreement (the CNN that ships in ``digit-recognizer-py``, a model this project
did not train; where that package is missing the column is left out),
the median bits/dim of the counterfactuals and of the queries under ``mnist/flow`` (scored
alike: 8-bit grid, dequantised; the flow arm steers with this flow, so read its figure as
its own view), the tangent fraction (``mnist/vae-judge``, which no method uses), and for
GCI / AIP the share whose class code changed. ``-locked`` arms lock the digit code
(``attribute_weights={"digit": 100}``). ``ganmex`` is the GANMEX translator's counterfactual
baseline (``mnist/ganmex``, trained against ``mnist/cnn``). ``disc`` explains ``mnist/duq``
(the CNN trunk with a DUQ head: DISC's manifold term needs the classifier's uncertainty), so
its targets are computed from ``mnist/duq`` by the same rules and its validity is that
model's.

Text (``--text-n`` held-out review sentences, target = the other class): AIP-text and
HotFlip explaining ``reviews/clf``; flip rate (the explained model), agreement of the
independent ``reviews/judge``, perplexity ratio under the independent
``reviews/fluency-judge`` (a character LSTM trained on text no text model here saw) and,
beside it, under ``reviews/lm`` (which AIP-text ranks candidates with: its own view, and
labelled so). AIP-text's rows are also split by how the returned sentence was made: the
generator's own decodes and the post-processed variants (``meta["per_row_kind"]``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore", message=".*torch.lu.*")

IMAGE_ARMS = ("wachter", "flow", "vae", "gan", "gci", "gci-locked", "aip", "aip-locked", "ganmex", "disc")


def _targets(clf, x, y, kind: str, seed: int = 0):
    with torch.no_grad():
        p = clf(x)
    pred = p.argmax(1)
    if kind == "runner-up":
        return p.topk(2, 1).indices[:, 1]
    if kind == "far":
        t = (y + 3) % 10
        return torch.where(t == pred, (t + 1) % 10, t)
    if kind == "next":
        t = (y + 1) % 10
        return torch.where(t == pred, (t + 1) % 10, t)
    if kind == "random":
        g = torch.Generator().manual_seed(seed)
        return (pred + torch.randint(1, 10, (len(x),), generator=g)) % 10
    raise ValueError(f"unknown target kind {kind!r}")


def image_figures(n: int, kinds, arms, device: str = "cpu", overrides: dict | None = None) -> list[dict]:
    from cfwidgets import zoo
    from cfwidgets.data import load_mnist
    from cfwidgets.methods import AIP, DISC, GANMEX, GCI, Wachter
    from cfwidgets.methods.diffeomorphic import DiffeomorphicCounterfactual
    from cfwidgets.metrics import evaluate, oracle_agreement
    from cfwidgets.metrics.manifold import bits_per_dim_query, manifold_metrics

    def load(name):
        return zoo.load(name, device=device, progress=False)

    clf, oracle, flow = load("mnist/cnn"), load("mnist/oracle"), load("mnist/flow")
    judge_vae, cvae = load("mnist/vae-judge"), load("mnist/cvae")
    te = load_mnist("test").subset(n, seed=0)
    x, y = te.x.to(device), torch.as_tensor(te.y).to(device)
    extra = dict(manifold_metrics(flow, judge_vae))
    try:  # a classifier trained elsewhere, as a second judge
        external = zoo.load_external("digit-recognizer", device=device)

        def ext(r):
            return oracle_agreement(r, external)

        ext.judge = "digit-recognizer-py (external)"
        extra["external"] = ext
    except (ImportError, OSError, FileNotFoundError) as e:
        print(f"no external judge: {e}")
    cfg = DiffeomorphicCounterfactual.Config()
    lock = {"attribute_weights": {"digit": 100.0}}

    def knobs(cls) -> dict:  # the --knob overrides this method has, as the knob's type
        fields = vars(cls.Config())

        def cast(k, v):
            kind = type(fields[k])
            return v.lower() in ("1", "true", "yes") if kind is bool else kind(v)

        return {k: cast(k, v) for k, v in (overrides or {}).items() if k in fields}

    def run(arm, t, kind):
        if arm == "wachter":  # the diffeomorphic paper's pixel arm: same budget, no proximity
            return Wachter(clf).explain(x, t, steps=cfg.steps, lr=cfg.lr, confidence=cfg.confidence,
                                        proximity_weight=0.0)
        if arm == "ganmex":
            return GANMEX(clf, load("mnist/ganmex")).explain(x, t)
        if arm == "disc":  # explains mnist/duq, with targets of its own (see the docstring)
            duq = load("mnist/duq")
            return DISC(duq).explain(x, _targets(duq, x, y, kind))
        if arm in ("flow", "vae", "gan"):
            return DiffeomorphicCounterfactual(clf, load(f"mnist/{arm}")).explain(
                x, t, **knobs(DiffeomorphicCounterfactual))
        cls = {"gci": GCI, "aip": AIP}[arm.split("-")[0]]
        return cls(clf, cvae).explain(x, t, **(lock if arm.endswith("locked") else {}), **knobs(cls))

    rows = []
    for kind in kinds:
        t = _targets(clf, x, y, kind)
        for arm in arms:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = run(arm, t, kind)
            row = evaluate(res, oracle=oracle, extra=extra)
            row.update(arm=arm, target_kind=kind, seconds=round(time.perf_counter() - t0, 1),
                       bpd_query=float(bits_per_dim_query(res, flow).median()))
            if "class_code_changed" in res.meta:
                row["class_code_changed"] = float(res.meta["class_code_changed"].float().mean())
            if "unstable" in res.meta:
                row["unstable"] = float(res.meta["unstable"].float().mean())
            rows.append(row)
            print(_fmt(row), flush=True)
    return rows


def text_figures(n: int) -> list[dict]:
    from cfwidgets import zoo
    from cfwidgets.data.text import load_reviews
    from cfwidgets.methods import AIPText, HotFlip
    from cfwidgets.metrics.text import evaluate_text

    def load(name):
        return zoo.load(name, device="cpu", train=False, progress=False)

    clf, gen, lm, judge = load("reviews/clf"), load("reviews/gen"), load("reviews/lm"), load("reviews/judge")
    fluency = load("reviews/fluency-judge")
    texts = [t for t in load_reviews("test").texts if 6 <= len(t.split()) <= 25][:n]
    with torch.no_grad():
        target = 1 - clf(texts).argmax(1)
    rows = []
    for arm, m in (("aip_text", AIPText(clf, gen, lm=lm)), ("hotflip", HotFlip(clf))):
        t0 = time.perf_counter()
        res = m.explain(texts, target)
        seconds = round(time.perf_counter() - t0, 1)
        row = evaluate_text(res, lm=lm, judge=judge, fluency_judge=fluency, similarity_model=False)
        row.update(arm=arm, seconds=seconds)
        kinds = res.meta.get("per_row_kind")
        if kinds is not None:
            row["share_raw_decodes"] = sum(k == "decode" for k in kinds) / max(1, len(kinds))
        rows.append(row)
        print(_fmt(row), flush=True)
        for part, keep in (("raw decodes", "decode"), ("variants", None)):
            idx = [i for i, k in enumerate(kinds or []) if (k == keep if keep else k != "decode")]
            if idx:
                sub = evaluate_text(res[idx], lm=lm, judge=judge, fluency_judge=fluency,
                                    similarity_model=False)
                sub.update(arm=f"{arm} ({part})")
                rows.append(sub)
                print(_fmt(sub), flush=True)
    return rows


def _fmt(row: dict) -> str:
    keys = ("target_kind", "arm", "n", "validity", "oracle", "external", "bpd_cf", "bpd_query", "tangent",
            "class_code_changed", "unstable", "flip_rate", "judge_agreement", "judge_ppl_ratio", "ppl_ratio",
            "edit_distance", "share_raw_decodes", "seconds")
    parts = []
    for k in keys:
        if k in row:
            v = row[k]
            parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return "  ".join(parts) + f"  judges={row.get('judges')}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--kinds", default="runner-up,far,random,next")
    ap.add_argument("--methods", default=",".join(IMAGE_ARMS))
    ap.add_argument("--text-n", type=int, default=256)
    ap.add_argument("--no-text", action="store_true")
    ap.add_argument("--text-only", action="store_true", help="only the text rows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/figures.json")
    ap.add_argument("--knob", action="append", default=[], metavar="K=V",
                    help="a knob for every image arm whose method has it (repeatable), e.g. patience=0")
    a = ap.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in a.knob)
    if a.threads:
        torch.set_num_threads(a.threads)
    arms = [m for m in a.methods.split(",") if m]
    unknown = sorted(set(arms) - set(IMAGE_ARMS))
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {list(IMAGE_ARMS)}")
    out = {"n_images": 0 if a.text_only else a.n, "knobs": overrides,
           "image": [] if a.text_only else image_figures(a.n, a.kinds.split(","), arms,
                                                          overrides=overrides)}
    if not a.no_text:
        out["n_sentences"] = a.text_n
        out["text"] = text_figures(a.text_n)
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Sweep AIP-text knobs against the independent judge (issue 11 item 5).

python experiments/text/aip_text_judge_sweep.py [--n 64] [--knob K=V ...] [--arm NAME]

Runs AIP-text on the first N held-out Rotten Tomatoes sentences (6-25 words, the same rows
as benchmarks/figures.py) towards the class the explained model (reviews/clf) does not
give, and prints validity, the agreement of reviews/judge (never steered with), the
perplexity ratio under reviews/fluency-judge (independent; when built) and reviews/lm
(AIP-text ranks with it), mangled-word and repeated-bigram rates, edits and seconds. Knobs repeat: --knob confidence=0.9.
"""
import argparse
import json
import time

import torch

from cfwidgets import zoo
from cfwidgets.data.text import load_reviews
from cfwidgets.methods import AIPText
from cfwidgets.metrics.text import evaluate_text


def _val(v):
    for f in (int, float):
        try:
            return f(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--knob", action="append", default=[])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--show", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    kn = {k: _val(v) for k, v in (s.split("=", 1) for s in a.knob)}
    load = lambda n: zoo.load(n, device="cpu", train=False, progress=False)  # noqa: E731
    clf, gen, lm, judge = load("reviews/clf"), load("reviews/gen"), load("reviews/lm"), load("reviews/judge")
    try:
        fluency = load("reviews/fluency-judge")
    except zoo.ZooError:
        fluency = None
    texts = [t for t in load_reviews("test").texts if 6 <= len(t.split()) <= 25][: a.n]
    with torch.no_grad():
        target = 1 - clf(texts).argmax(1)
    t0 = time.perf_counter()
    res = AIPText(clf, gen, lm=lm).explain(texts, target, **kn)
    sec = time.perf_counter() - t0
    row = evaluate_text(res, lm=lm, judge=judge, fluency_judge=fluency, similarity_model=False)
    kinds = res.meta.get("per_row_kind") or []
    out = {"knobs": kn, "n": row["n"], "flip": round(row["flip_rate"], 3),
           "judge": round(row.get("judge_agreement", float("nan")), 3),
           "judge_ppl_ratio": round(row.get("judge_ppl_ratio", float("nan")), 3),
           "ppl_ratio": round(row["ppl_ratio"], 3), "edits_med": row["edit_distance_median"],
           "nonword": round(row["nonword_rate_cf"], 4), "repeat": round(row["repetition_cf"], 4),
           "bleu": round(row["bleu"], 1), "raw_decodes": sum(k == "decode" for k in kinds),
           "s_per_sentence": round(sec / len(texts), 2)}
    print(json.dumps(out), flush=True)
    with torch.no_grad():
        jp = judge(list(res.x_cf)).argmax(1)
    for i in range(a.show):
        print(int(target[i]), int(jp[i]), "|", res.x[i], "=>", res.x_cf[i])


if __name__ == "__main__":
    main()

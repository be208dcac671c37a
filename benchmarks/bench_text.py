"""CPU (or GPU) time per sentence of AIP-text and the HotFlip baseline, with their metrics.

    python benchmarks/bench_text.py [--n 32] [--steps 60] [--classifier clf|minilm]
                                    [--device cpu] [--threads 1] [--singles 5] [--max-words 25]

The first ``n`` held-out Rotten Tomatoes sentences of at most ``--max-words`` words, each
asked for the other class. For each method: seconds per sentence one at a time (the
widget's case, median of ``--singles``) and in one batch of ``n``; then the shared text
metrics on the batch (flip rate on hard text, word edit distance absolute / per length,
self-BLEU, MiniLM cosine, perplexity ratio under reviews/lm, repeated bigrams and mangled
words of the counterfactuals). Figures only; nothing is
asserted. Uses the zoo models (shipped weights; they train on first use otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def bench(n: int = 32, steps: int = 60, classifier: str = "clf", device: str = "cpu",
          singles: int = 5, max_words: int = 25, similarity: bool = True) -> list[dict]:
    from cfwidgets import zoo
    from cfwidgets.data.text import load_reviews
    from cfwidgets.methods import AIPText, HotFlip
    from cfwidgets.metrics.text import evaluate_text

    clf = zoo.load(f"reviews/{classifier}", device=device, progress=False)
    gen = zoo.load("reviews/gen", device=device, progress=False)
    lm = zoo.load("reviews/lm", device=device, progress=False)
    kw = {"surrogate": zoo.load("reviews/clf", device=device, progress=False)} if classifier != "clf" else {}
    texts = [t for t in load_reviews("test").texts if len(t.split()) <= max_words][:n]
    with torch.no_grad():
        target = 1 - clf(texts).argmax(1).cpu()
    methods = {"aip_text": (AIPText(clf, gen, lm=lm, **kw), {"steps": steps}),
               "hotflip": (HotFlip(clf), {})}
    rows = []
    for name, (m, knobs) in methods.items():
        m.explain(texts[:2], target[:2], **{**knobs, **({"steps": 2} if "steps" in knobs else {})})  # warm-up
        t0 = time.perf_counter()
        res = m.explain(texts, target, **knobs)
        batch_s = (time.perf_counter() - t0) / len(texts)
        single = []
        for i in range(min(singles, len(texts))):
            t0 = time.perf_counter()
            m.explain(texts[i:i + 1], target[i:i + 1], **knobs)
            single.append(time.perf_counter() - t0)
        row = {"method": name, "classifier": classifier, "device": device, "n": len(texts),
               "s_per_sentence_single": statistics.median(single), "s_per_sentence_batch": batch_s}
        metrics = evaluate_text(res, lm=lm, similarity_model=similarity)
        row.update({k: metrics[k] for k in ("flip_rate", "edit_distance", "edit_distance_median",
                                            "edit_distance_norm", "bleu", "ppl_ratio",
                                            "repetition_cf", "nonword_rate_cf") if k in metrics})
        if similarity:
            row["similarity"] = metrics["similarity"]
        if "search_mode" in res.meta:
            row["search"] = res.meta["search_mode"]
        row["median_steps"] = float(res.steps.float().median())
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
              flush=True)
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--classifier", default="clf", choices=("clf", "minilm"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: keep)")
    p.add_argument("--singles", type=int, default=5)
    p.add_argument("--max-words", type=int, default=25)
    p.add_argument("--no-similarity", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {a.device}")
    return bench(a.n, a.steps, a.classifier, a.device, a.singles, a.max_words, not a.no_similarity)


if __name__ == "__main__":
    main()

"""The comparison dashboard: time from "Run all" to a full grid, for the image methods on
one held-out digit (the widget's own path: CompareWidget.run, cells filled, table drawn).

    python benchmarks/bench_compare.py [--budget 100] [--digits 3] [--device cpu]

Prints, per digit, the seconds from the call to a full grid (widget.timings["run_all_s"])
and each method's own seconds; then the median over the digits. The first digit also pays
torch's one-off imports (the widget warms them up in the background on creation; this
script waits for that warm-up first, as a person picking a target would).

Three set-ups, each on the same digits: one method after another with 1 torch thread, the
same with 2 torch threads, and 2 methods at once (``workers=2``) with 1 torch thread each.
Figures only; nothing is asserted.
"""

import argparse
import statistics
import time

import torch

from cfwidgets import data
from cfwidgets.widgets import CompareWidget

SETUPS = {"sequential, 1 thread": (1, 1), "sequential, 2 threads": (1, 2),
          "2 methods at once, 1 thread each": (2, 1)}

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=int, default=100, help="steps per method")
    p.add_argument("--digits", type=int, default=3, help="held-out digits timed one after another")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    test = data.load_mnist("test")
    t0 = time.perf_counter()
    w = CompareWidget(data=test, budget=a.budget, device=a.device)
    print(f"widget ready in {time.perf_counter() - t0:.1f} s (models from the zoo); "
          f"methods: {list(w.comparison.cells)}; {a.budget} steps each; device {a.device}")
    time.sleep(5)  # let the background warm-up finish
    medians = {}
    for label, (workers, threads) in SETUPS.items():
        torch.set_num_threads(threads)
        w.workers = workers
        totals = []
        for i in range(a.digits):
            w.index_slider.value = i * 100
            comp = w.run(block=True)
            total = w.timings["run_all_s"]
            totals.append(total)
            per = ", ".join(f"{n} {c.time_s:.2f}" for n, c in comp.cells.items())
            ok = sum(c.status == "done" for c in comp.cells.values())
            print(f"[{label}] digit #{i * 100} (label {int(test.y[i * 100])} -> target {w.target}): "
                  f"Run all -> full grid {total:.2f} s ({ok}/{len(comp.cells)} done; {per})")
        medians[label] = statistics.median(totals)
    for label, m in medians.items():
        print(f"median Run all -> full grid over {a.digits} digits, {label}: {m:.2f} s")

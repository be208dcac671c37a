"""Wachter baseline: toolkit vs a hand-written torch loop of the same algorithm.

    python benchmarks/bench_wachter.py [--n 100] [--steps 100] [--device auto] [--threads 2]

Prints seconds per counterfactual one digit at a time and as one batch, the ratio
toolkit / hand-written (aim <= 1.05), flip rate and L1. Figures only; nothing is asserted.
"""

import argparse

import torch

from cfwidgets.bench import bench_wachter

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    bench_wachter(n=a.n, steps=a.steps, device=a.device, repeats=a.repeats)

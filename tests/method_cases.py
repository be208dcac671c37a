"""Small, fast set-ups of every registered method for the conformance suite.

Add one builder per method: ``CASES["<method name>"] = builder`` where ``builder()``
returns a :class:`Case`. A method with several variants (e.g. generators) can add
several entries (``"diffeomorphic-flow"``, ...): the key only names the case.
The suite (tests/test_conformance.py) runs every case through the same checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import Tensor

from cfwidgets.methods.base import CounterfactualMethod


@dataclass
class Case:
    method: CounterfactualMethod
    x: Tensor  # (B >= 3, C, H, W) queries, or a list of strings for text methods
    target: Tensor  # (B,) targets different from the current predictions
    fast: dict = field(default_factory=dict)  # knob overrides that keep a run short
    # "a batch equals one-by-one": per row, mean |x_cf(batch) - x_cf(single)| must stay
    # below batch_rtol * mean |x_cf - x| + 1e-4. Rows are mathematically independent, but
    # float noise (1e-7) in batched convolutions is amplified by tens of Adam steps.
    batch_rtol: float = 0.05
    # a classifier that accepts the same inputs (for the "returns probabilities" check)
    classifier: Callable | None = None


CASES: dict[str, Callable[[], Case]] = {}


@lru_cache(maxsize=None)
def mnist_queries(n: int = 4) -> tuple[Tensor, Tensor]:
    """``n`` held-out MNIST digits and their runner-up classes as targets."""
    from cfwidgets import zoo
    from cfwidgets.data import load_mnist

    clf = zoo.load("mnist/cnn", device="cpu", progress=False)
    te = load_mnist("test")
    idx = torch.arange(0, 1000, 1000 // n)[:n]
    x = te.x[idx]
    with torch.no_grad():
        target = clf(x).topk(2, dim=1).indices[:, 1]
    return x, target


def _wachter() -> Case:
    from cfwidgets import zoo
    from cfwidgets.methods import Wachter

    clf = zoo.load("mnist/cnn", device="cpu", progress=False)
    x, t = mnist_queries()
    return Case(Wachter(clf), x, t, fast={"steps": 30, "lr": 0.05}, classifier=clf)


CASES["wachter"] = _wachter


def _attribute_method(cls_name: str, **fast) -> Callable[[], Case]:
    """GCI / AIP on digits with the zoo's conditional VAE (mnist/cvae)."""

    def build() -> Case:
        from cfwidgets import methods, zoo

        clf = zoo.load("mnist/cnn", device="cpu", progress=False)
        gen = zoo.load("mnist/cvae", device="cpu", progress=False)
        x, t = mnist_queries()
        return Case(getattr(methods, cls_name)(clf, gen), x, t, fast={"steps": 20, **fast},
                    classifier=clf)

    return build


CASES["gci"] = _attribute_method("GCI")
CASES["aip"] = _attribute_method("AIP")
CASES["aip-restarts"] = _attribute_method("AIP", restarts=2)

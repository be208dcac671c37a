"""Small, fast set-ups of every registered method for the conformance suite.

Add one builder per method: ``CASES["<method name>"] = builder`` where ``builder()``
returns a :class:`Case`. A method with several variants (e.g. generators) can add
several entries (``"diffeomorphic-flow"``, ...): the key only names the case.
The suite (tests/test_conformance.py) runs every case through the same checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

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


@cache
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


@cache
def review_queries(n: int = 3) -> tuple[list[str], Tensor]:
    """``n`` short held-out review sentences and the other class as targets (the shipped
    reviews/clf; the case is skipped where the text models are not available)."""
    import pytest

    from cfwidgets import zoo
    from cfwidgets.data.text import load_reviews

    try:
        clf = zoo.load("reviews/clf", device="cpu", train=False, progress=False)
    except (KeyError, zoo.ZooError) as e:
        pytest.skip(f"text models not available: {e}")
    texts = [t for t in load_reviews("test").texts if 6 <= len(t.split()) <= 14][:n]
    with torch.no_grad():
        target = 1 - clf(texts).argmax(1)
    return texts, target


def _text_method(cls_name: str, **fast) -> Callable[[], Case]:
    """HotFlip / AIP-text on review sentences with the shipped text models."""

    def build() -> Case:
        import pytest

        from cfwidgets import methods, zoo

        x, t = review_queries()
        clf = zoo.load("reviews/clf", device="cpu", train=False, progress=False)
        if cls_name == "HotFlip":
            method = methods.HotFlip(clf)
        else:
            try:
                gen = zoo.load("reviews/gen", device="cpu", train=False, progress=False)
            except zoo.ZooError as e:
                pytest.skip(f"reviews/gen not available: {e}")
            method = methods.AIPText(clf, gen)
        return Case(method, x, t, fast=fast, classifier=clf)

    return build


# confidence near 1 so that no sentence finishes before the Stop test's third step
CASES["hotflip"] = _text_method("HotFlip", max_flips=4, beam=2, candidates=10, confidence=0.999)
CASES["aip_text"] = _text_method("AIPText", steps=4, decode_every=2, restarts=1, confidence=0.999)
CASES["aip_text-restarts"] = _text_method("AIPText", steps=4, decode_every=2, restarts=2,
                                          confidence=0.999, decode="beam", beams=2)


def _diffeomorphic(generator: str, **fast) -> Callable[[], Case]:
    """Diffeomorphic counterfactuals with the zoo's flow / VAE / GAN (shipped weights)."""

    def build() -> Case:
        from cfwidgets import zoo
        from cfwidgets.methods.diffeomorphic import DiffeomorphicCounterfactual

        clf = zoo.load("mnist/cnn", device="cpu", progress=False)
        gen = zoo.load(f"mnist/{generator}", device="cpu", progress=False)
        x, t = mnist_queries()
        # batch vs single: the decoded images are never exactly 0 in the background, so
        # the CNN's max-pool meets near-ties whose winner (= where the gradient goes)
        # depends on 1e-7 float noise of batched convolutions; Adam's first steps are
        # +-lr whatever the gradient's size, so such rows take visibly different (equally
        # valid) paths. Same class, same stopping rule; the pixel tolerance is looser.
        # The flow's are the most sensitive, and more so with the default adam_beta2 = 0.9
        # (Adam's steps stay near +-lr longer): measured on these 4 queries, the largest
        # |batch - single| / change was 0.76 (0.26 with beta2 = 0.999). A row mix-up is
        # caught apart from the tolerance: each batch row must be nearest its own single run.
        rtol = 0.9 if generator == "flow" else 0.6
        return Case(DiffeomorphicCounterfactual(clf, gen), x, t,
                    fast={"steps": 40, "path_density": False, **fast}, batch_rtol=rtol,
                    classifier=clf)

    return build


CASES["diffeomorphic-flow"] = _diffeomorphic("flow")
CASES["diffeomorphic-vae"] = _diffeomorphic("vae", confidence=0.9)
CASES["diffeomorphic-gan"] = _diffeomorphic("gan", confidence=0.9, gan_inversion_steps=20)


def _ganmex() -> Case:
    """GANMEX with the shipped MNIST translator; 8 points on the path to G(x, t) so the
    callback test has steps to stop at (the result is the translation, one forward pass)."""
    from cfwidgets import zoo
    from cfwidgets.methods.ganmex import GANMEX

    clf = zoo.load("mnist/cnn", device="cpu", progress=False)
    tr = zoo.load("mnist/ganmex", device="cpu", progress=False)
    x, t = mnist_queries()
    return Case(GANMEX(clf, tr), x, t, fast={"steps": 8}, batch_rtol=0.01, classifier=clf)


CASES["ganmex"] = _ganmex


def _disc(classifier: str, prior: str) -> Callable[[], Case]:
    """DISC on the shipped DUQ classifier (its own certainty is the manifold term) and on
    the plain BN CNN (the energy stand-in); a short budget in every stage."""

    def build() -> Case:
        import warnings

        from cfwidgets import zoo
        from cfwidgets.data import load_mnist
        from cfwidgets.methods.disc import DISC

        clf = zoo.load(classifier, device="cpu", progress=False)
        x = load_mnist("test").x[torch.arange(0, 1000, 250)]
        with torch.no_grad():
            t = clf(x).topk(2, dim=1).indices[:, 1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the stand-in's notice for mnist/cnn
            method = DISC(clf)
        return Case(method, x, t, fast={"prior": prior, "steps": 12, "stage_steps": 4, "init_fit_steps": 6},
                    batch_rtol=0.05, classifier=clf)

    return build


CASES["disc"] = _disc("mnist/duq", "inr")
CASES["disc-cnn-dip"] = _disc("mnist/cnn", "dip")

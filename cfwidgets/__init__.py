"""cfwidgets: generative counterfactual explanations of neural classifiers.

Batched PyTorch implementations of counterfactual methods from the literature, a model zoo
of small offline-trained models, shared metrics, and JupyterLab widgets.

Examples::

    from cfwidgets import zoo, data
    from cfwidgets.methods import Wachter
    clf = zoo.load("mnist/cnn")
    x = data.load_mnist("test").x[:4]
    result = Wachter(clf).explain(x, target=3)
"""

from __future__ import annotations

import importlib

from ._version import __version__

# the subpackages, bottom layer first (tests/test_layers.py checks the list is complete)
_SUBMODULES = ("data", "models", "metrics", "zoo", "methods", "analysis", "attribution", "viz", "widgets")

__all__ = ["__version__", *_SUBMODULES, "CounterfactualResult", "explain"]


def __getattr__(name: str):
    # lazy: `import cfwidgets` stays fast; submodules load on first use
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "CounterfactualResult":
        from .result import CounterfactualResult

        return CounterfactualResult
    if name == "explain":
        return explain
    raise AttributeError(f"module 'cfwidgets' has no attribute {name!r}")


def explain(x, target, method: str = "wachter", dataset: str = "mnist", *, device="auto", **knobs):
    """One-call convenience: build ``method`` with its default zoo models for ``dataset``
    and explain ``x`` for ``target``."""
    from .methods import get_method

    return get_method(method).from_zoo(dataset, device=device).explain(x, target, **knobs)

"""The model zoo: ``zoo.load("mnist/cnn")`` trains on first use, then loads in < 1 s.

See :mod:`cfwidgets.zoo.core` for how checkpoints are verified and cached.
"""

from .core import (
    RECIPE_MODULES,
    Recipe,
    TrainContext,
    ZooError,
    build,
    cache_paths,
    get_recipe,
    info,
    load,
    recipes,
    register,
    shipped_paths,
    status,
)

__all__ = [
    "RECIPE_MODULES",
    "Recipe",
    "TrainContext",
    "ZooError",
    "build",
    "cache_paths",
    "get_recipe",
    "info",
    "load",
    "load_external",
    "recipes",
    "register",
    "shipped_paths",
    "status",
]


def load_external(name: str = "digit-recognizer", *, device="auto"):
    """Classifiers trained elsewhere, loaded from files other packages ship.

    ``"digit-recognizer"``: the MNIST CNN of ``digit-recognizer-py`` (no BatchNorm).
    """
    from .._utils import resolve_device

    if name != "digit-recognizer":
        raise KeyError(f"unknown external model {name!r}; available: ['digit-recognizer']")
    from ..models.classifiers import load_digit_recognizer

    return load_digit_recognizer().to(resolve_device(device))

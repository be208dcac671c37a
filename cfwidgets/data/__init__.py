"""Offline data: MNIST-5k, Fashion-MNIST, digits 8x8, synthetic shapes, review sentences,
and morphometric attributes of digits."""

from .attributes import MORPHO_NAMES, MORPHO_UNITS, AttributeScaler, digit_attributes, morphometrics
from .images import (
    DATASETS,
    FASHION_CLASSES,
    MNIST_CLASSES,
    ImageDataset,
    load_dataset,
    load_digits8,
    load_fashion,
    load_mnist,
)
from .shapes import (
    FACTOR_RANGES,
    SHAPE_CLASSES,
    SHAPE_FACTORS,
    load_shapes,
    make_shapes,
    render_shapes,
)

__all__ = [
    "DATASETS", "FASHION_CLASSES", "MNIST_CLASSES", "ImageDataset", "load_dataset", "load_digits8",
    "load_fashion", "load_mnist", "MORPHO_NAMES", "MORPHO_UNITS", "AttributeScaler",
    "digit_attributes", "morphometrics", "FACTOR_RANGES", "SHAPE_CLASSES", "SHAPE_FACTORS",
    "load_shapes", "make_shapes", "render_shapes", "load_reviews",
]


def load_reviews(*args, **kwargs):
    """Labelled movie-review sentences (needs the ``text`` extra); see :mod:`cfwidgets.data.text`."""
    from .text import load_reviews as _load

    return _load(*args, **kwargs)

"""What "still learns" means for the attribute generator: an untrained one is far worse."""

from __future__ import annotations

import pytest
import torch

from cfwidgets import zoo

pytestmark = pytest.mark.slow


# The reduced-budget retrains of these recipes run in tests/test_zoo.py against each recipe's
# ``reduced_check`` (the same bars that used to be asserted here); this file keeps the
# reference point that makes those bars meaningful.


def test_untrained_generator_is_worse():
    """The reduced run really learned: a fresh model reconstructs far worse."""
    from cfwidgets.data import load_mnist

    fresh = zoo.get_recipe("mnist/cvae").make_model(zoo.get_recipe("mnist/cvae").config)
    x = load_mnist("test").x[:200]
    with torch.no_grad():
        mu = fresh.encode_with(x, torch.zeros(200, fresh.a_dim))[0]
        mse = float((fresh.decode(mu, torch.zeros(200, fresh.a_dim)) - x).pow(2).mean())
    assert mse > 0.08

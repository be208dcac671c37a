"""The attribute generator's training is what makes it work: the shipped mnist/cvae
reconstructs held-out digits far better than the same architecture untrained.

The reduced-budget retrains of these recipes run in tests/test_zoo.py against each
recipe's ``reduced_check``; this file checks the shipped model against the untrained
reference point that makes those bars meaningful (the old form asserted only that the
untrained model is bad, which no change to the recipe or the shipped weights could fail).
"""

from __future__ import annotations

import pytest
import torch

from cfwidgets import zoo

pytestmark = pytest.mark.slow


def test_shipped_generator_beats_the_untrained_one():
    from cfwidgets.data import load_mnist

    recipe = zoo.get_recipe("mnist/cvae")
    torch.manual_seed(0)
    fresh = recipe.make_model(recipe.config).eval()
    shipped = zoo.load("mnist/cvae", device="cpu", train=False, progress=False)
    x = load_mnist("test").x[:200]

    def mse(model) -> float:
        with torch.no_grad():
            a = model.attributes(x)
            return float((model.decode(model.encode_with(x, a)[0], a) - x).pow(2).mean())

    m_fresh, m_shipped = mse(fresh), mse(shipped)
    assert m_shipped < 0.03, m_shipped
    assert m_shipped < 0.25 * m_fresh, (m_shipped, m_fresh)

"""Offline data loaders, synthetic shapes and morphometric attributes."""

from __future__ import annotations

import math

import pytest
import torch

from cfwidgets.data import (
    FACTOR_RANGES,
    MORPHO_NAMES,
    SHAPE_FACTORS,
    AttributeScaler,
    load_dataset,
    load_digits8,
    load_fashion,
    load_mnist,
    load_shapes,
    make_shapes,
    morphometrics,
    render_shapes,
)


def test_mnist_split_is_deterministic_stratified_and_disjoint():
    tr, te = load_mnist("train"), load_mnist("test")
    assert tr.x.shape == (4000, 1, 28, 28) and te.x.shape == (1000, 1, 28, 28)
    assert tr.x.dtype == torch.float32 and 0 <= float(tr.x.min()) and float(tr.x.max()) <= 1
    assert torch.equal(te.y.bincount(), torch.full((10,), 100))
    assert torch.equal(tr.y.bincount(), torch.full((10,), 400))
    # disjoint: no test image appears in train
    flat_tr = {hash(r.numpy().tobytes()) for r in tr.x.flatten(1)}
    assert sum(hash(r.numpy().tobytes()) in flat_tr for r in te.x.flatten(1)) < 5  # mnist has rare duplicates
    assert torch.equal(load_mnist("test").x, te.x)
    assert te.fingerprint() == load_mnist("test").fingerprint()
    assert len(load_mnist("all")) == 5000


def test_bad_split_name():
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation")
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("cifar10")


def test_fashion_loads_or_says_how_to_install(tmp_path, monkeypatch):
    try:
        te = load_fashion("test")
    except FileNotFoundError as e:  # pragma: no cover - CI installs the package
        assert "apt-get install dataset-fashion-mnist" in str(e)
    else:
        assert te.x.shape == (10000, 1, 28, 28) and te.class_names[0] == "T-shirt/top"
        assert float(te.x.max()) <= 1.0
    import cfwidgets.data.images as images

    images._fashion_arrays.cache_clear()
    monkeypatch.setenv("CFWIDGETS_FASHION_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion("train")
    images._fashion_arrays.cache_clear()


def test_digits8():
    tr, te = load_digits8("train"), load_digits8("test")
    assert tr.x.shape[1:] == (1, 8, 8) and len(tr) + len(te) == 1797
    assert float(tr.x.max()) <= 1.0


def test_subset_is_balanced_and_deterministic():
    te = load_mnist("test")
    a, b = te.subset(50), te.subset(50)
    assert torch.equal(a.x, b.x) and torch.equal(a.y.bincount(minlength=10), torch.full((10,), 5))


# ------------------------------------------------------------------------- shapes
def test_shapes_render_ground_truth_and_balance():
    d = make_shapes(400, seed=3)
    assert d.x.shape == (400, 1, 28, 28) and d.y.bincount().tolist() == [100] * 4
    f = d.extra["factors"]
    for j, name in enumerate(SHAPE_FACTORS):
        lo, hi = FACTOR_RANGES[name]
        assert lo <= float(f[:, j].min()) and float(f[:, j].max()) <= hi
    # the renderer is the ground truth: re-rendering gives the same images
    assert torch.allclose(render_shapes(d.y, f), d.x)
    # brightness is the maximum intensity; stroke width shows up in the thickness estimate
    assert torch.allclose(d.x.flatten(1).amax(1), f[:, 5], atol=0.05)  # thin strokes: anti-aliasing
    thick = morphometrics(d.x)[:, 0]
    assert torch.corrcoef(torch.stack([thick, f[:, 4]]))[0, 1] > 0.9
    # same seed, same data; another seed, other data
    assert torch.equal(make_shapes(40, seed=3).x, make_shapes(40, seed=3).x)
    assert not torch.equal(make_shapes(40, seed=3).x, make_shapes(40, seed=4).x)


def test_biased_shapes_tie_brightness_to_class():
    d = make_shapes(800, seed=0, bias="brightness")
    b = d.extra["factors"][:, SHAPE_FACTORS.index("brightness")]
    means = torch.stack([b[d.y == k].mean() for k in range(4)])
    assert torch.all(means[1:] > means[:-1])  # class k gets the k-th brightness band
    unbiased = make_shapes(800, seed=0)
    bu = unbiased.extra["factors"][:, 5]
    spread = torch.stack([bu[unbiased.y == k].mean() for k in range(4)])
    assert float(spread.max() - spread.min()) < 0.05
    with pytest.raises(ValueError, match="bias must be one of"):
        make_shapes(10, bias="colour")


def test_load_shapes_splits():
    tr, te = load_shapes("train"), load_shapes("test")
    assert len(tr) == 8000 and len(te) == 2000
    assert not torch.equal(tr.x[:10], te.x[:10])


# --------------------------------------------------------------------- attributes
def _stroke(width: float, angle_deg: float = 0.0) -> torch.Tensor:
    """A vertical bar of a given width, sheared by an angle: an ideal '1'."""
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    shear = math.tan(math.radians(angle_deg))
    centre = 13.5 - shear * (ys - 13.5)  # top leans right for a positive angle
    img = ((xs - centre).abs() <= width / 2).float() * ((ys >= 4) & (ys <= 23)).float()
    return img[None, None]


def test_morphometrics_on_ideal_strokes():
    names = MORPHO_NAMES
    for w in (2.0, 4.0):
        a = morphometrics(_stroke(w - 1e-3))[0]
        assert abs(a[names.index("thickness")] - w) < 0.6
        assert abs(a[names.index("height")] - 20) < 0.5
        assert abs(a[names.index("slant")]) < 1.0
    right = morphometrics(_stroke(3, angle_deg=20))[0]
    left = morphometrics(_stroke(3, angle_deg=-20))[0]
    assert 12 < right[names.index("slant")] < 28 and -28 < left[names.index("slant")] < -12
    # deslanting: width of a slanted bar is close to the upright bar's width
    upright = morphometrics(_stroke(3))[0]
    assert abs(right[names.index("width")] - upright[names.index("width")]) < 2.0
    blank = morphometrics(torch.zeros(1, 1, 28, 28))
    assert torch.equal(blank, torch.zeros(1, 5))


def test_morphometrics_respond_to_real_edits():
    x = load_mnist("test").x[:64]
    base = morphometrics(x)
    thick = morphometrics(torch.nn.functional.max_pool2d(x, 3, 1, 1))
    i = MORPHO_NAMES.index("thickness")
    assert float((thick[:, i] > base[:, i]).float().mean()) > 0.95
    a = MORPHO_NAMES.index("area")
    assert float((thick[:, a] > base[:, a]).float().mean()) == 1.0
    with pytest.raises(ValueError, match="grey images"):
        morphometrics(torch.zeros(2, 3, 28, 28))


def test_attribute_scaler_roundtrip():
    vals = morphometrics(load_mnist("train").x[:500])
    sc = AttributeScaler.fit(vals, MORPHO_NAMES)
    z = sc.transform(vals)
    assert torch.allclose(z.mean(0), torch.zeros(5), atol=1e-4)
    assert torch.allclose(sc.inverse(z), vals, atol=1e-3)
    text = sc.describe(torch.tensor([-0.8, 12.0, 0.0, 0.0, 3.0]), {"thickness": "px", "slant": "deg"})
    assert text[0] == "thickness -0.80 px" and text[1] == "slant +12.00 deg" and len(text) == 3

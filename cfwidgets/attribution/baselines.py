"""Baselines of path and perturbation attributions, for the one-vs-one question "why class
``c`` and not ``t``?" (GANMEX, Shih, Tien & Karnin, ICML 2021, arXiv 2011.06015).

=============  ================================================================================
baseline       what replaces ``x``
=============  ================================================================================
zero           a black image (the most common choice)
blur           ``x`` blurred by a Gaussian (``blur_sigma`` px, reflect padding)
noise          uniform noise in [0, 1] (seeded)
train_mean     the mean training image
mdts           the minimum-distance training sample of the target class (L2), the paper's MDTS
eg             ``eg_samples`` random training images of the target class, the references of
               Expected Gradients (Erion et al. 2021); attributions average over them
wachter        the Wachter et al. counterfactual of ``x`` for ``t`` (pixel-space search)
ganmex         the GANMEX counterfactual ``G(x, t)`` (needs ``translator``)
=============  ================================================================================

Only ``mdts``, ``eg``, ``wachter`` and ``ganmex`` depend on the target class: they are the
one-vs-one baselines. A baseline comes back as ``(B, R, C, H, W)``: ``R`` references per
row (1 for every kind but ``eg``).

The EG references are drawn from the target class here (the one-vs-one use the GANMEX
paper compares against); Erion et al. draw them from all training images.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BASELINES", "make_baseline", "gaussian_blur", "training_data"]

BASELINES = ("zero", "blur", "noise", "train_mean", "mdts", "eg", "wachter", "ganmex")


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` images (kernel of +-3 sigma, reflect
    padding where the image is large enough, else replicate)."""
    if sigma <= 0:
        return x.clone()
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    mode = "reflect" if r < min(x.shape[-2:]) else "replicate"
    h = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(h, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def training_data(classifier: nn.Module, data: Any = None) -> tuple[Tensor, Tensor]:
    """``(x, y)`` training images and labels: ``data`` as an ``ImageDataset`` or a pair, or,
    for a zoo classifier (``zoo_meta["name"] == "<dataset>/..."``), its training split."""
    if data is not None:
        if hasattr(data, "x") and hasattr(data, "y"):
            return data.x, data.y
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return torch.as_tensor(data[0]), torch.as_tensor(data[1])
        raise TypeError("data must be an ImageDataset or a pair (x, y) of training images and labels.")
    name = getattr(classifier, "zoo_meta", {}).get("name", "")
    if "/" in name:
        from ..data.images import load_dataset

        ds = load_dataset(name.split("/")[0].split("-")[0], "train")
        return ds.x, ds.y
    raise ValueError("this baseline needs training data: pass data=(x_train, y_train) (or an "
                     "ImageDataset); only zoo classifiers find their training split themselves.")


def _mdts(x: Tensor, target: Tensor, x_tr: Tensor, y_tr: Tensor) -> Tensor:
    out = torch.empty_like(x)
    flat = x.flatten(1)
    for t in target.unique().tolist():
        rows = (target == t).nonzero()[:, 0]
        pool = x_tr[y_tr == t].to(x.device, x.dtype)
        if len(pool) == 0:
            raise ValueError(f"the training data hold no image of class {t}.")
        d = torch.cdist(flat[rows], pool.flatten(1))
        out[rows] = pool[d.argmin(1)]
    return out


def _eg(x: Tensor, target: Tensor, x_tr: Tensor, y_tr: Tensor, n: int,
        generator: torch.Generator) -> Tensor:
    out = x.new_empty((x.shape[0], n) + tuple(x.shape[1:]))
    for i, t in enumerate(target.tolist()):
        pool = (y_tr == t).nonzero()[:, 0]
        if len(pool) == 0:
            raise ValueError(f"the training data hold no image of class {t}.")
        pick = pool[torch.randint(0, len(pool), (n,), generator=generator)]
        out[i] = x_tr[pick].to(x.device, x.dtype)
    return out


def make_baseline(kind: str | Tensor, classifier: nn.Module, x: Tensor, target: Tensor, *,
                  translator: Any = None, data: Any = None, generator: torch.Generator | None = None,
                  blur_sigma: float = 4.0, eg_samples: int = 8, wachter_steps: int = 300) -> Tensor:
    """The baseline ``kind`` for queries ``x`` and targets ``target`` as ``(B, R, C, H, W)``."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    if isinstance(kind, Tensor):
        b = kind.to(x.device, x.dtype)
        if b.shape == x.shape[1:]:
            b = b.expand_as(x)
        if b.shape == x.shape:
            return b[:, None].clone()
        if b.ndim == 5 and b.shape[0] == x.shape[0] and b.shape[2:] == x.shape[1:]:
            return b.clone()
        raise ValueError(f"a baseline tensor must have x's shape {tuple(x.shape)}, one image "
                         f"{tuple(x.shape[1:])}, or (B, R, C, H, W); got {tuple(b.shape)}.")
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; choose one of {list(BASELINES)} or pass a tensor.")
    if kind == "zero":
        b = torch.zeros_like(x)
    elif kind == "blur":
        b = gaussian_blur(x, blur_sigma).clamp(0, 1)
    elif kind == "noise":
        b = torch.rand(x.shape, generator=g).to(x.device, x.dtype)
    elif kind in ("train_mean", "mdts", "eg"):
        x_tr, y_tr = training_data(classifier, data)
        if kind == "train_mean":
            b = x_tr.float().mean(0, keepdim=True).to(x.device, x.dtype).expand_as(x).clone()
        elif kind == "mdts":
            b = _mdts(x, target, x_tr, y_tr.to(torch.long))
        else:
            return _eg(x, target, x_tr, y_tr.to(torch.long), int(eg_samples), g)
    elif kind == "wachter":
        from ..methods.wachter import Wachter

        res = Wachter(classifier).explain(x, target, steps=wachter_steps, generator=g)
        b = res.x_cf.to(x.device, x.dtype)
    else:  # ganmex
        if translator is None:
            raise ValueError("the 'ganmex' baseline needs translator=: a GANMEX method "
                             "(GANMEX.from_zoo('mnist')) or its translator module.")
        from ..methods.ganmex import translator_of

        tr = translator_of(translator)
        was = tr.training
        tr.eval()
        try:
            with torch.no_grad():
                b = tr(x, target).clamp(0, 1)
        finally:
            tr.train(was)
    return b[:, None]

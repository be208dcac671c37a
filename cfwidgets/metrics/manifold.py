"""Data-manifold measures of counterfactuals (the diffeomorphic-counterfactual papers'
quantitative checks, METHODS.md §1).

Per-row functions return ``(B,)`` CPU tensors and plug into
:func:`cfwidgets.metrics.evaluate` through ``extra=`` (see :func:`manifold_metrics`):

- **bits/dim under a flow** (:func:`bits_per_dim_cf`, :func:`bits_per_dim_query`,
  :func:`delta_bits_per_dim`): the exact density of a normalizing flow trained on the
  data, ``-log2 p(x') / D + 8``, with every image scored the same way (snapped to the 8-bit
  grid, dequantised as in training, averaged over 4 noise draws:
  :meth:`~cfwidgets.models.flows.MultiscaleGlow.bits_per_dim`), so real digits (on the grid)
  and counterfactuals (off it) are comparable; held-out digits score what the zoo records.
  Lower is more probable; adversarial pixel noise raises it by several bits per pixel,
  changes along the data manifold keep it near the data's range. ``delta`` =
  ``bpd(x') - bpd(x)``.
- **tangent-space fraction** (:func:`tangent_fraction`):
  ``||P_T (x' - x_s)|| / ||x' - x_s||`` with ``P_T`` the orthogonal projector onto the
  column space of the VAE decoder's Jacobian ``J = dg/dz`` at ``z0 = mu(x)`` (the encoder
  mean of the query) and ``x_s`` the start of the path (see below).

Why this estimate of the tangent space: the papers' Riemannian argument (a latent gradient
step is a data-space step under ``J J^T``, which suppresses the components normal to the
generator's image) is stated in terms of exactly this Jacobian; a VAE decoder with a 16-d
latent gives a 784 x 16 matrix per query, computed with one forward-mode pass
(``torch.func.jacfwd``, 16 tangents) and orthonormalised by a thin QR: milliseconds per
image on a CPU. A flow's Jacobian is 784 x 784 and full rank (its "tangent space" is
everything), and a local PCA of neighbouring training images needs a neighbour search
and a bandwidth choice; the decoder Jacobian needs neither. The same VAE judges every
method (pixel, flow, VAE, GAN), so the figures are comparable; a random direction scores
about ``sqrt(16 / 784) = 0.14``. Caveat: the tangent space is that of the VAE's manifold
at the *query*, a first-order picture; long paths curve away from it, so the fraction
of even a perfectly on-manifold path is below 1.

Start of the path ``x_s``: for pixel and flow counterfactuals it is the query ``x``; VAE
and GAN paths start at the reconstruction ``g(z0)`` (``result.meta["x_rec"]``), and
measuring from ``x`` would mix the reconstruction residual (mostly off-manifold detail)
into the change. ``reference="query"`` measures from ``x`` for every method instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..result import CounterfactualResult
from .core import judge_name

__all__ = [
    "bits_per_dim_cf",
    "bits_per_dim_query",
    "delta_bits_per_dim",
    "decoder_tangent_basis",
    "tangent_fraction",
    "random_tangent_fraction",
    "manifold_metrics",
]


def _device(m: nn.Module) -> torch.device:
    for p in m.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def _bpd(flow: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    was = flow.training
    flow.eval()
    dev = _device(flow)
    out = [flow.bits_per_dim(x[i:i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)]
    flow.train(was)
    return torch.cat(out)


def bits_per_dim_cf(result: CounterfactualResult, flow: nn.Module) -> Tensor:
    """Bits/dim of the counterfactuals under ``flow`` (lower = more probable)."""
    return _bpd(flow, result.x_cf)


def bits_per_dim_query(result: CounterfactualResult, flow: nn.Module) -> Tensor:
    """Bits/dim of the queries under ``flow``."""
    return _bpd(flow, result.x)


def delta_bits_per_dim(result: CounterfactualResult, flow: nn.Module) -> Tensor:
    """``bpd(x') - bpd(x)``: how many bits per pixel less probable the counterfactual is."""
    return _bpd(flow, result.x_cf) - _bpd(flow, result.x)


def decoder_tangent_basis(decoder: Callable[[Tensor], Tensor], z0: Tensor) -> Tensor:
    """Orthonormal bases ``Q (B, P, d)`` of the column spaces of ``J = d decoder / dz`` at
    each row of ``z0 (B, d)`` (``P`` = pixels), by forward-mode autodiff and a thin QR."""
    from torch.func import jacfwd, vmap

    def one(z: Tensor) -> Tensor:  # (d,) -> (P,)
        return decoder(z[None])[0].reshape(-1)

    with torch.no_grad():
        jac = vmap(jacfwd(one))(z0)  # (B, P, d)
    q, _ = torch.linalg.qr(jac.double(), mode="reduced")
    return q.float()


def _start(result: CounterfactualResult, reference: str) -> Tensor:
    if reference == "query":
        return result.x
    if reference != "start":
        raise ValueError(f"reference must be 'start' or 'query', got {reference!r}")
    x_rec = result.meta.get("x_rec")
    return x_rec if isinstance(x_rec, Tensor) and x_rec.shape == result.x.shape else result.x


@torch.no_grad()
def tangent_fraction(result: CounterfactualResult, vae: nn.Module, *, reference: str = "start",
                     eps: float = 1e-12) -> Tensor:
    """``||P_T d|| / ||d||`` per row, ``d = x' - x_s``, ``P_T`` from the VAE decoder's
    Jacobian at the encoder mean of the query (module docstring). 1 = the change lies in
    the (linearised) data manifold; about ``sqrt(d_latent / 784)`` for random noise."""
    dev = _device(vae)
    was = vae.training
    vae.eval()
    x = result.x.to(dev)
    z0 = vae.encode(x)
    q = decoder_tangent_basis(vae.decode, z0)  # (B, P, d)
    d = (result.x_cf.to(dev) - _start(result, reference).to(dev)).reshape(len(x), -1)  # (B, P)
    proj = torch.einsum("bpd,bp->bd", q, d)
    vae.train(was)
    return (proj.norm(dim=1) / (d.norm(dim=1) + eps)).cpu()


def random_tangent_fraction(latent_dim: int, pixels: int = 784) -> float:
    """Expected fraction for an isotropic random change: ``sqrt(d / P)``."""
    return math.sqrt(latent_dim / pixels)


def manifold_metrics(flow: nn.Module | None = None, vae: nn.Module | None = None,
                     *, reference: str = "start") -> dict[str, Callable[[CounterfactualResult], Tensor]]:
    """``extra=`` metrics for :func:`cfwidgets.metrics.evaluate`: ``bpd_cf`` and
    ``delta_bpd`` with a flow (medians over the batch), ``tangent`` with a VAE.

    Examples::

        from cfwidgets.metrics import evaluate
        from cfwidgets.metrics.manifold import manifold_metrics
        row = evaluate(res, oracle=zoo.load("mnist/oracle"), autoencoders=zoo.load("mnist/ae"),
                       extra=manifold_metrics(zoo.load("mnist/flow"), zoo.load("mnist/vae")))
    """
    out: dict[str, Callable[[CounterfactualResult], Tensor]] = {}
    if flow is not None:
        # bits/dim are summarised by the median in evaluate(): log-densities are heavy-
        # tailed (measured: one flow counterfactual of 40 at 9,743 bits/dim, a real figure
        # that float64 confirms; pixel counterfactuals up to 5,754), so a mean says little
        def bpd(r):
            return bits_per_dim_cf(r, flow)

        def dbpd(r):
            return delta_bits_per_dim(r, flow)

        bpd.aggregate = dbpd.aggregate = "median"
        bpd.judge = dbpd.judge = judge_name(flow)
        out["bpd_cf"], out["delta_bpd"] = bpd, dbpd
    if vae is not None:
        def tangent(r):
            return tangent_fraction(r, vae, reference=reference)

        tangent.judge = judge_name(vae)
        out["tangent"] = tangent
    return out

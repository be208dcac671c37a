"""Multi-scale Glow normalizing flow for 28x28 grey images, built on ``normflows``.

Why ``normflows`` (Stimper et al., JOSS 2023, arXiv 2302.12014): it is a maintained
PyTorch library whose image flows (``GlowBlock`` = affine coupling + invertible 1x1
convolution + ActNorm; ``Squeeze``/``Merge`` for the multi-scale split;
``MultiscaleFlow``; the RealNVP ``Logit`` pre-transform) are exactly the pieces the
diffeomorphic-counterfactual papers use (Glow / RealNVP), each with a forward *and* an
inverse that return log-determinants, and tested for invertibility. ``zuko`` is the other
candidate; its flows target vectors (autoregressive / coupling over features), not
multi-scale convolutional image flows, so it would mean hand-writing the image layers.

Layout (``levels = 2``; 28 = 2 * 14 = 4 * 7, so two squeezes are all 28x28 allows)::

    x (1, 28, 28) in [0, 1]
      -> logit(alpha + (1 - 2 alpha) x)                       (Logit pre-transform)
      -> squeeze (4, 14, 14) -> K Glow blocks -> split: z_1 (2, 14, 14) leaves
      -> squeeze (8, 7, 7)   -> K Glow blocks -> z_0 (8, 7, 7)
    z = [z_0, z_1] ~ N(0, I), flattened to (B, 784) by :meth:`MultiscaleGlow.encode`.

Bounded coupling scales. Glow's coupling ``x2 = z2 / sigmoid(s + 2) + t`` (normflows'
``scale_map="sigmoid"``) contracts in the density direction ``x -> z``, which is all that
maximum likelihood looks at, but it may *divide* by a scale near 0 in the generation
direction ``z -> x``. A flow trained that way on 8-bit digits (whose dequantised
background lives in slivers of width 1/256) had exactly that: a latent step of norm 0.03
along the classifier's gradient sent ``g(z)`` to inf/NaN within a few coupling layers,
so gradient ascent in its coordinates failed at the first Adam step (the "exploding
inverse" of Behrmann et al., AISTATS 2021, arXiv 2006.09347). Here every coupling uses
``scale = exp(c * tanh(s / c))`` with ``c = max_log_scale`` (RealNVP's exp map, bounded):
each coupling is bi-Lipschitz in both directions, and the same normflows layers are
composed exactly as in its ``GlowBlock`` (affine coupling, invertible 1x1 convolution
with LU weights, ActNorm).

The base distribution is a fixed standard normal (not normflows' learned ``GlowBase``) so
that latent step sizes have one meaning: an Adam step of ``lr = 0.05`` moves each latent
coordinate by about 5% of its prior standard deviation.

Density conventions: ``log_prob(x)`` is the continuous log-density on ``[0, 1]^784``;
``continuous_bits_per_dim(x) = -log_prob(x) / (784 ln 2) + 8`` is the usual discrete figure
for 8-bit data dequantised with uniform noise ``(x * 255 + u) / 256`` (training uses that
noise; held-out bits/dim are measured with it too). ``bits_per_dim(x)`` scores any image
that way: snapped to the 8-bit grid, dequantised, averaged over a few noise draws (so real
digits and counterfactuals are measured alike).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._utils import require


@contextlib.contextmanager
def _quiet_torch_lu():
    """normflows' LU-parametrised 1x1 convolution calls ``torch.lu`` when it is built,
    which torch deprecates with a long warning on every load; the call is correct, so the
    warning is silenced while the layers are built, and the caller's filters stay as they
    were (nothing changes at import)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.lu is deprecated.*", category=UserWarning)
        yield


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantisation of [0, 1] images holding 8-bit values: ``(255 x + u) / 256``,
    ``u ~ U[0, 1)``. The noise is drawn on the CPU (seeded) and moved to ``x``'s device."""
    u = torch.rand(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    return (x * 255.0 + u) / 256.0


class _BoundedScale(nn.Module):
    """Wraps a coupling network: its scale outputs (odd channels, normflows' layout) pass
    through ``c * tanh(s / c)``, so every coupling scales by a factor in ``[e^-c, e^c]``
    in both directions."""

    def __init__(self, net: nn.Module, bound: float) -> None:
        super().__init__()
        self.net = net
        self.bound = float(bound)

    def forward(self, h: Tensor) -> Tensor:
        out = self.net(h)
        shift, s = out[:, 0::2], out[:, 1::2]
        s = self.bound * torch.tanh(s / self.bound)
        return torch.stack([shift, s], dim=2).flatten(1, 2)  # interleave back


class MultiscaleGlow(nn.Module):
    """Glow (Kingma & Dhariwal 2018, arXiv 1807.03039) in the multi-scale layout of
    RealNVP (Dinh et al. 2017, arXiv 1605.08803), from ``normflows`` components.

    ``encode(x) -> z`` is the exact inverse ``g^-1`` and ``decode(z) -> x`` the generator
    ``g``; ``decode(encode(x)) == x`` up to float rounding (about 1e-6 in float32).

    Args:
        input_shape: ``(C, H, W)``; H and W divisible by ``2 ** levels``.
        levels: number of scales (squeeze + K blocks [+ split]).
        blocks: Glow blocks per level (an int or one per level, finest level first).
        hidden: hidden channels of each coupling network (int or one per level).
        alpha: Logit pre-transform's margin, ``logit(alpha + (1 - 2 alpha) x)``.
        max_log_scale: bound ``c`` on every coupling's log-scale, ``s = c tanh(s_raw / c)``
            with ``scale = exp(s)`` (module docstring: why). ``None`` = normflows'
            ``GlowBlock`` with its unbounded ``scale_map`` (``"sigmoid"`` by default).

    Examples::

        flow = MultiscaleGlow(blocks=8, hidden=64)
        z = flow.encode(x)                # (B, 784)
        x_back = flow.decode(z)           # (B, 1, 28, 28)
        flow.bits_per_dim(x)              # (B,)
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        levels: int = 2,
        blocks: int | Sequence[int] = 8,
        hidden: int | Sequence[int] = 64,
        alpha: float = 0.05,
        scale_map: str = "sigmoid",
        max_log_scale: float | None = 2.0,
    ) -> None:
        super().__init__()
        nf = require("normflows", "flows", "normalizing-flow models")
        c, h, w = (int(s) for s in input_shape)
        if h % (2 ** levels) or w % (2 ** levels):
            raise ValueError(f"image size {h}x{w} must be divisible by 2**levels = {2 ** levels}")
        self.input_shape = (c, h, w)
        self.levels = levels
        blocks = [blocks] * levels if isinstance(blocks, int) else list(blocks)
        hidden = [hidden] * levels if isinstance(hidden, int) else list(hidden)
        if len(blocks) != levels or len(hidden) != levels:
            raise ValueError("blocks and hidden need one entry per level")
        self.alpha = alpha
        self.max_log_scale = max_log_scale
        # normflows orders levels from the coarsest (index 0, sampled first) to the finest.
        # Level i (coarsest = 0) works on c * 2 ** (levels + 1 - i) channels at
        # h / 2 ** (levels - i); its trailing Squeeze (forward = z -> x direction) un-squeezes.
        q0, flows, merges = [], [], []
        self.latent_shapes: list[tuple[int, int, int]] = []
        with _quiet_torch_lu():  # (builds normflows layers)
            for i in range(levels):
                fine = levels - 1 - i  # index into the finest-first knobs
                ch = c * 2 ** (levels + 1 - i)
                level_flows = []
                for _ in range(blocks[fine]):
                    if max_log_scale is None:  # normflows' Glow block as is
                        level_flows.append(nf.flows.GlowBlock(ch, hidden[fine], scale=True,
                                                              scale_map=scale_map, split_mode="channel"))
                        continue
                    # the same three normflows layers as GlowBlock, with a bounded coupling scale
                    net = nf.nets.ConvNet2d([(ch + 1) // 2, hidden[fine], hidden[fine], 2 * (ch // 2)],
                                            [3, 1, 3], 0.0, True)
                    level_flows += [
                        nf.flows.AffineCouplingBlock(_BoundedScale(net, max_log_scale), scale=True,
                                                     scale_map="exp", split_mode="channel"),
                        nf.flows.Invertible1x1Conv(ch, use_lu=True),
                        nf.flows.ActNorm((ch, 1, 1)),
                    ]
                level_flows.append(nf.flows.Squeeze())
                flows.append(level_flows)
                if i == 0:
                    shape = (ch, h // 2 ** levels, w // 2 ** levels)
                else:
                    merges.append(nf.flows.Merge())
                    shape = (c * 2 ** (levels - i), h // 2 ** (levels - i), w // 2 ** (levels - i))
                self.latent_shapes.append(shape)
                q0.append(nf.distributions.DiagGaussian(shape, trainable=False))
        self.flow = nf.MultiscaleFlow(q0, flows, merges, transform=nf.transforms.Logit(alpha),
                                      class_cond=False)
        self.latent_sizes = [math.prod(s) for s in self.latent_shapes]
        self.latent_dim = sum(self.latent_sizes)
        self.dims = c * h * w

    # ------------------------------------------------------------------ latents
    def _split(self, z: Tensor) -> list[Tensor]:
        parts = torch.split(z, self.latent_sizes, dim=1)
        return [p.reshape(z.shape[0], *s) for p, s in zip(parts, self.latent_shapes, strict=True)]

    def _join(self, zs: list[Tensor]) -> Tensor:
        return torch.cat([zz.reshape(zz.shape[0], -1) for zz in zs], dim=1)

    def encode(self, x: Tensor) -> Tensor:
        """Exact inverse ``z = g^-1(x)``: ``(B, C, H, W)`` in [0, 1] -> ``(B, D)``."""
        zs, _ = self.flow.inverse_and_log_det(x)
        return self._join(zs)

    def decode(self, z: Tensor) -> Tensor:
        """The generator ``x = g(z)``: ``(B, D)`` -> ``(B, C, H, W)`` in (0, 1)-ish (the
        Logit pre-transform's sigmoid gives ``(-alpha, 1 + alpha) / (1 - 2 alpha)``)."""
        x, _ = self.flow.forward_and_log_det(self._split(z))
        return x

    def decode_with_log_prob(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``x = g(z)`` and ``log p(x)`` from the same forward pass (change of variables:
        ``log p(x) = log N(z) - log |det dg/dz|``); ``(B, D) -> ((B, C, H, W), (B,))``."""
        x, log_det = self.flow.forward_and_log_det(self._split(z))
        return x, self.log_prob_latent(z) - log_det

    def encode_with_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        zs, log_det = self.flow.inverse_and_log_det(x)
        return self._join(zs), log_det

    # ------------------------------------------------------------------ density
    def log_prob_latent(self, z: Tensor) -> Tensor:
        """``log N(z; 0, I)`` per row."""
        return -0.5 * (z.pow(2).sum(1) + z.shape[1] * math.log(2 * math.pi))

    def log_prob(self, x: Tensor) -> Tensor:
        """Continuous log-density of ``x`` on ``[0, 1]^D``, per row ``(B,)``. Values are
        clamped into [0, 1] first (the Logit pre-transform is finite there)."""
        z, log_det = self.encode_with_logdet(x.clamp(0.0, 1.0))
        return self.log_prob_latent(z) + log_det

    def bits_per_dim(self, x: Tensor, *, draws: int = 4, seed: int = 0) -> Tensor:
        """Bits per pixel of ``x`` as an 8-bit image, per row ``(B,)`` (lower = more likely).

        Every image is scored the same way, whatever its values: snapped to the 8-bit grid
        (``round(255 x) / 255``), then dequantised with uniform noise exactly as in
        training (:func:`dequantize`), ``-log2 p / D + 8`` averaged over ``draws`` noise
        draws. The noise comes from ``seed`` and has one image's shape, shared by every
        row, so a row's score does not depend on the batch it is in.

        Why: the flow's density is continuous and was fitted to dequantised data, whose
        values fill each 8-bit bin. Scored raw, an image on the grid (a real digit: every
        pixel sits on a bin's edge) looks far less probable than the same image moved off
        the grid: on 32 held-out digits, 3.56 bits/dim raw against 2.07 dequantised. Raw
        scores therefore ranked counterfactuals (off the grid) above the real digits they
        came from. For data on the grid and ``draws=1`` this is the training figure.

        Very large values are real, not overflow: the density direction ``x -> z`` is the
        stable one, and a float64 copy of the flow gives the same figures (checked on the
        counterfactuals that scored 9,743 and 5,754 bits/dim: equal to 5 digits).
        """
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        q = torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0
        g = torch.Generator().manual_seed(int(seed))
        total = 0.0
        for _ in range(int(draws)):
            u = torch.rand(q.shape[1:], generator=g).to(device=q.device, dtype=q.dtype)
            total = total + self.continuous_bits_per_dim((q * 255.0 + u) / 256.0)
        return total / int(draws)

    def continuous_bits_per_dim(self, x: Tensor) -> Tensor:
        """``-log2 p(x) / D + 8`` of the continuous density at ``x`` itself (no snapping,
        no noise): the figure for already dequantised data. To compare images (real ones
        on the 8-bit grid with counterfactuals off it) use :meth:`bits_per_dim`."""
        return -self.log_prob(x) / (self.dims * math.log(2.0)) + 8.0

    def roundtrip_error(self, x: Tensor) -> Tensor:
        """``(B,)`` largest pixel error of ``decode(encode(x))``: about 1e-6 where both
        directions are numerically sound in this dtype, order 1 where the generator
        direction ``z -> x`` is not (it can divide by small coupling scales)."""
        return (self.decode(self.encode(x)) - x).abs().flatten(1).amax(1)

    def forward(self, x: Tensor) -> Tensor:
        """Negative log-likelihood per row (the training loss)."""
        return -self.log_prob(x)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 0.8, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images from ``g(T * eps)``, ``eps ~ N(0, I)`` drawn on the CPU."""
        dev = next(self.parameters()).device
        eps = torch.randn(n, self.latent_dim, generator=generator).to(dev)
        return self.decode(temperature * eps).clamp(0, 1)

"""A small DCGAN (Radford et al. 2016, arXiv 1511.06434) for 28x28 grey images, plus the
two ways to find a latent code for a given image.

- :func:`invert_generator`: optimisation-based inversion, the diffeomorphic-counterfactual
  authors' routine [code: ``annahdo/counterfactuals``, ``gans/utils.py``]: Adam on ``z``
  (lr 0.1) minimising ``MSE(clip(G(z), 0, 1), x)``, up to 5000 steps, stopping once the
  MSE is below ``1e-2``. Batched here, with every row stopping on its own.
- :meth:`DCGAN.encode`: a trained encoder ``E(x) ~ z`` used as a warm start for that
  inversion. **Deviation** from the paper (which starts from a random ``z``): it makes the
  inversion converge in tens rather than thousands of steps; ``init="random"`` restores
  the paper's behaviour.

The checkpoint holds the generator and the encoder only; the discriminator exists only
while training (see ``cfwidgets.zoo.recipes.generative.train_gan``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._active import ActiveRows

__all__ = ["Generator", "Discriminator", "LatentEncoder", "DCGAN", "invert_generator"]


class Generator(nn.Module):
    """``z (B, nz) -> x (B, 1, 28, 28)`` in (0, 1): linear to 7x7, two stride-2
    transposed convolutions, BatchNorm + ReLU (DCGAN's recipe), sigmoid output."""

    def __init__(self, nz: int = 64, width: int = 64, channels: int = 1) -> None:
        super().__init__()
        self.nz, self.width = nz, width
        self.fc = nn.Sequential(nn.Linear(nz, 2 * width * 49, bias=False),
                                nn.BatchNorm1d(2 * width * 49), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),  # 14
            nn.ConvTranspose2d(width, channels, 4, 2, 1),  # 28
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], 2 * self.width, 7, 7)
        return torch.sigmoid(self.net(h))


class Discriminator(nn.Module):
    """``x -> logit`` with spectral normalisation (stabilises training on 4k images)."""

    def __init__(self, width: int = 64, channels: int = 1) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(channels, width, 4, 2, 1)), nn.LeakyReLU(0.2),  # 14
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),  # 7
            nn.Flatten(), sn(nn.Linear(2 * width * 49, 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2 - 1)[:, 0]


class LatentEncoder(nn.Module):
    """``x -> z``: a conv net trained to invert the generator (warm start only)."""

    def __init__(self, nz: int = 64, width: int = 32, channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),  # 14
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),  # 7
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * 49, nz),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2 - 1)


class DCGAN(nn.Module):
    """Generator + warm-start encoder, with the decoder/encoder vocabulary of the other
    generative models: ``decode(z)``, ``encode(x)`` (approximate) and ``invert(x)``
    (optimisation, the paper's way).

    Examples::

        gan = zoo.load("mnist/gan")
        z, mse = gan.invert(x)                      # (B, 64), (B,)
        x_rec = gan.decode(z)
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), nz: int = 64, width: int = 64,
                 enc_width: int = 32) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        if (h, w) != (28, 28):
            raise ValueError(f"DCGAN is built for 28x28 images, got {h}x{w}")
        self.input_shape = (c, h, w)
        self.latent_dim = nz
        self.generator = Generator(nz, width, c)
        self.encoder = LatentEncoder(nz, enc_width, c)

    def decode(self, z: Tensor) -> Tensor:
        """``(B, nz) -> (B, 1, 28, 28)`` in (0, 1)."""
        return self.generator(z)

    def encode(self, x: Tensor) -> Tensor:
        """The encoder's estimate of ``z`` (an approximate inverse; see :meth:`invert`)."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def invert(self, x: Tensor, *, steps: int = 5000, lr: float = 0.1, tol: float = 1e-2,
               init: str = "encoder", generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Optimisation-based inversion (see :func:`invert_generator`); ``init`` is
        ``"encoder"`` (warm start, a deviation) or ``"random"`` (the paper's)."""
        if init == "encoder":
            with torch.no_grad():
                z0 = self.encode(x)
        elif init == "random":
            z0 = torch.randn(x.shape[0], self.latent_dim, generator=generator).to(x)
        else:
            raise ValueError(f"init must be 'encoder' or 'random', got {init!r}")
        return invert_generator(self.decode, x, z0, steps=steps, lr=lr, tol=tol)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        dev = self.generator.fc[0].weight.device
        return self.decode(torch.randn(n, self.latent_dim, generator=generator).to(dev))


def invert_generator(decode, x: Tensor, z0: Tensor, *, steps: int = 5000, lr: float = 0.1,
                     tol: float = 1e-2) -> tuple[Tensor, Tensor]:
    """Find ``z`` with ``clip(decode(z), 0, 1) ~ x`` by Adam on ``z``, per row stopping
    once ``MSE < tol``.

    Rows are independent (Adam is element-wise; the summed loss gives each row its own
    gradient) and each row's code is frozen at the step its MSE first fell below ``tol``,
    so a batch gives the same codes as one-by-one calls. Returns ``(z (B, D), mse (B,))``.
    Whether all rows converged is checked every 10 steps (one device sync each); the rows
    that converged then leave the batch (:class:`~cfwidgets._active.ActiveRows`).
    """
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    b = x.shape[0]
    done = torch.zeros(b, dtype=torch.bool, device=x.device)
    z_out = z0.detach().clone()
    mse_out = torch.full((b,), float("inf"), device=x.device)
    rows = ActiveRows(opt, {"z": z}, {"x": x})  # converged rows leave the batch
    drop = False
    with torch.enable_grad():
        for step in range(steps + 1):
            if drop:  # the last check found newly converged rows
                rows.keep(~done)
                drop = False
            z = rows.params["z"]
            x_hat = decode(z).clamp(0.0, 1.0)
            mse = F.mse_loss(x_hat, rows.consts["x"], reduction="none").flatten(1).mean(1)  # (L,)
            mse_full = rows.full("mse", mse)  # rows that left hold their last (< tol) value
            live = ~done
            z_out = torch.where(live[:, None], rows.full_param("z"), z_out)
            mse_out = torch.where(live, mse_full, mse_out)
            done = done | (mse_full < tol)
            if step == steps:
                break
            if step % 10 == 0:
                n_done = int(done.sum())
                if n_done == b:
                    break
                drop = rows.worth_dropping(n_done)
            # gradient with respect to z only: never accumulates in the generator's weights;
            # rows that converged since the last check get none
            (z.grad,) = torch.autograd.grad((mse * (~rows.take(done)).float()).sum(), [z])
            opt.step()
    return z_out, mse_out

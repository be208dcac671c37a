"""A small convolutional VAE for 28x28 grey images (Kingma & Welling 2014, arXiv 1312.6114).

Used as approximately diffeomorphic coordinates for counterfactuals (Dombrowski et al.,
arXiv 2206.05075: ``z0`` = the encoder mean, ``x' = g(z)``) and, through its decoder's
Jacobian, as the tangent space of the data manifold in the metrics.

No BatchNorm anywhere: the decoder is a plain deterministic function of ``z`` (its
Jacobian is well defined and identical in train and eval mode).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvVAE", "MlpVAE"]


class ConvVAE(nn.Module):
    """Conv encoder ``x -> (mu, log_var)``, conv decoder ``z -> Bernoulli logits``.

    ``encode(x)`` returns the mean ``mu`` (the paper's ``z0``); ``decode(z)`` returns
    pixel means ``sigmoid(logits)`` in (0, 1).

    Examples::

        vae = ConvVAE(latent_dim=16)
        z = vae.encode(x)            # (B, 16)
        x_rec = vae.decode(z)        # (B, 1, 28, 28)
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 width: int = 32) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        if (h, w) != (28, 28):
            raise ValueError(f"ConvVAE is built for 28x28 images, got {h}x{w}")
        self.input_shape = (c, h, w)
        self.latent_dim = latent_dim
        self.width = width
        self.enc = nn.Sequential(
            nn.Conv2d(c, width, 4, 2, 1), nn.LeakyReLU(0.2),  # 14
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),  # 7
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.to_stats = nn.Linear(2 * width * 49, 2 * latent_dim)
        self.fc = nn.Linear(latent_dim, 2 * width * 49)
        self.dec = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),  # 14
            nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, 2, 1),  # 28
        )

    def encode_stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, 28, 28) -> (mu, log_var)``, each ``(B, D)``."""
        mu, log_var = self.to_stats(self.enc(x * 2 - 1)).chunk(2, dim=1)
        return mu, log_var.clamp(-12, 6)

    def encode(self, x: Tensor) -> Tensor:
        """The encoder mean ``mu(x)``: ``(B, C, H, W) -> (B, D)``."""
        return self.encode_stats(x)[0]

    def decode_logits(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], 2 * self.width, 7, 7)
        return self.dec(h)

    def decode(self, z: Tensor) -> Tensor:
        """``(B, D) -> (B, C, 28, 28)`` pixel means in (0, 1)."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of ``x`` through the mean (deterministic)."""
        return self.decode(self.encode(x))

    def elbo_terms(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Per-row ``(reconstruction NLL, KL)`` in nats with a Bernoulli likelihood on the
        (continuous) grey values; the noise of the reparameterisation is drawn on the CPU."""
        mu, log_var = self.encode_stats(x)
        eps = torch.randn(mu.shape, generator=generator).to(mu)
        z = mu + eps * torch.exp(0.5 * log_var)
        logits = self.decode_logits(z)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(1)
        return rec, kl

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        dev = next(self.parameters()).device
        return self.decode(torch.randn(n, self.latent_dim, generator=generator).to(dev))


class MlpVAE(ConvVAE):
    """The same VAE interface with fully connected encoder and decoder (no convolutions).

    The zoo's ``mnist/vae-judge``: another architecture (and seed) than the ``mnist/vae``
    that Diffeomorphic counterfactuals steer with, so its decoder's tangent space can
    judge every method, the VAE arm included, without judging a method by its own model.

    Examples::

        vae = MlpVAE(latent_dim=16, hidden=256)
        vae.decode(vae.encode(x)).shape      # (B, 1, 28, 28)
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 hidden: int = 512) -> None:
        nn.Module.__init__(self)
        c, h, w = (int(s) for s in input_shape)
        self.input_shape = (c, h, w)
        self.latent_dim = latent_dim
        self.hidden = hidden
        d = c * h * w
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ELU(),
                                 nn.Linear(hidden, hidden), nn.ELU())
        self.to_stats = nn.Linear(hidden, 2 * latent_dim)
        self.dec = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ELU(),
                                 nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, d))

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.dec(z).view(z.shape[0], *self.input_shape)

"""Small convolutional autoencoders, used for the realism scores IM1/IM2 of
Van Looveren & Klaise ("Interpretable Counterfactual Explanations Guided by Prototypes",
arXiv 1907.02584): one autoencoder per class plus one on all data."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ConvAutoencoder", "ClassAutoencoders"]


class ConvAutoencoder(nn.Module):
    """28x28 -> 7x7xC code -> 28x28, sigmoid output in [0, 1]."""

    def __init__(self, in_channels: int = 1, width: int = 16, code_channels: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),  # 14
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),  # 7
            nn.Conv2d(2 * width, code_channels, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(code_channels, 2 * width, 3, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # 14
            nn.ConvTranspose2d(width, in_channels, 4, stride=2, padding=1),  # 28
        )

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, 28, 28) -> (B, C, 28, 28)
        return self.decode(self.encode(x))


class ClassAutoencoders(nn.Module):
    """``K`` class-specific autoencoders plus one trained on all classes, in one module.

    ``reconstruct(x, k)`` runs row i through autoencoder ``k[i]`` (``k = -1`` or
    ``None`` selects the all-data autoencoder).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16,
                 code_channels: int = 4, class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.per_class = nn.ModuleList(
            ConvAutoencoder(in_channels, width, code_channels) for _ in range(num_classes)
        )
        self.all = ConvAutoencoder(in_channels, width, code_channels)

    def reconstruct(self, x: Tensor, k: Tensor | int | None = None) -> Tensor:
        if k is None or (isinstance(k, int) and k < 0):
            return self.all(x)
        if isinstance(k, int):
            return self.per_class[k](x)
        out = torch.empty_like(x)
        for c in k.unique().tolist():
            rows = k == c
            out[rows] = self.all(x[rows]) if c < 0 else self.per_class[c](x[rows])
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.all(x)

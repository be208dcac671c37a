"""Image classifiers: inputs ``(B, C, H, W)`` in [0, 1] -> logits ``(B, K)``.

Every model normalises internally, carries ``input_shape`` and ``class_names`` and returns
logits (never probabilities), so methods can check inputs and show class names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["ConvNet", "MLPClassifier", "ExternalDigitCNN", "load_digit_recognizer"]


class _ImageClassifier(nn.Module):
    def __init__(self, input_shape: Sequence[int], class_names: Sequence[str], mean: float, std: float):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.class_names = [str(c) for c in class_names]
        self.register_buffer("_mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("_std", torch.tensor(float(std)), persistent=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalise(self, x: Tensor) -> Tensor:
        return (x - self._mean) / self._std


class ConvNet(_ImageClassifier):
    """A small CNN with BatchNorm: [conv3x3-BN-ReLU] x ``convs_per_stage``, maxpool, per
    stage; then a BN-MLP head.

    BatchNorm is deliberate: DISC (deep model inversion) matches the statistics stored in
    its running averages. ``features(x)`` exposes the penultimate representation (for DUQ
    heads and feature-space metrics).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        class_names: Sequence[str] = tuple(str(i) for i in range(10)),
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.2,
        mean: float = 0.1307,
        std: float = 0.3081,
        convs_per_stage: int = 1,
    ) -> None:
        super().__init__(input_shape, class_names, mean, std)
        c_in, h, w = self.input_shape
        layers: list[nn.Module] = []
        for c in channels:
            for _ in range(convs_per_stage):
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                           nn.ReLU(inplace=True)]
                c_in = c
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * h * w, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.out = nn.Linear(hidden, self.num_classes)

    def features(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, hidden)
        return self.head(self.trunk(self.normalise(x)))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, K)
        return self.out(self.features(x))


class MLPClassifier(_ImageClassifier):
    """A fully connected classifier (the independent "oracle" of the diffeomorphic paper's
    evaluation uses a different architecture and seed than the explained CNN)."""

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        class_names: Sequence[str] = tuple(str(i) for i in range(10)),
        hidden: Sequence[int] = (512, 256),
        dropout: float = 0.2,
        mean: float = 0.1307,
        std: float = 0.3081,
    ) -> None:
        super().__init__(input_shape, class_names, mean, std)
        d = 1
        for s in self.input_shape:
            d *= s
        layers: list[nn.Module] = [nn.Flatten()]
        for hdim in hidden:
            layers += [nn.Linear(d, hdim), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = hdim
        layers.append(nn.Linear(d, self.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, K)
        return self.net(self.normalise(x))


class ExternalDigitCNN(_ImageClassifier):
    """The 3-conv MNIST CNN whose weights ship in the ``digit-recognizer-py`` package
    (trained elsewhere, no BatchNorm): a model this project did not train. The layer
    layout mirrors that package's state-dict keys so its file loads unchanged."""

    def __init__(self) -> None:
        super().__init__((1, 28, 28), [str(i) for i in range(10)], 0.1307, 0.3081)
        self.conv_layers = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc_layers = nn.Sequential(nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, 28, 28) -> (B, 10)
        h = self.conv_layers(self.normalise(x))
        return self.fc_layers(h.flatten(1))


def load_digit_recognizer(path: str | Path | None = None) -> ExternalDigitCNN:
    """Load the CNN of ``digit-recognizer-py`` (``pip install --no-deps digit-recognizer-py``;
    its package imports torchvision, so we read the weight file directly, with
    ``weights_only=True``)."""
    if path is None:
        import importlib.util

        spec = importlib.util.find_spec("digit_recognizer")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(
                "digit-recognizer-py is not installed: pip install --no-deps digit-recognizer-py "
                "(--no-deps: its torchvision requirement does not import beside torch's CPU build)."
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "models" / "handwriting_model.pth"
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weight file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = ExternalDigitCNN()
    model.load_state_dict(state)
    return model.eval()

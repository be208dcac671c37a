"""Image classifiers: inputs ``(B, C, H, W)`` in [0, 1] -> logits ``(B, K)``.

Every model normalises internally, carries ``input_shape`` and ``class_names`` and returns
logits (never probabilities), so methods can check inputs and show class names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["ConvNet", "DUQConvNet", "MLPClassifier", "ExternalDigitCNN", "load_digit_recognizer"]


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


class DUQConvNet(ConvNet):
    """The :class:`ConvNet` trunk with a DUQ head: Deterministic Uncertainty Quantification,
    van Amersfoort, Smith, Teh & Gal, "Uncertainty Estimation Using a Single Deep
    Deterministic Model", ICML 2020 (arXiv 2003.02037).

    Per class ``c`` a matrix ``W_c`` (``embedding x hidden``) maps the features ``h(x)`` to
    an embedding compared with the class centroid ``e_c`` by an RBF kernel::

        K_c(x) = exp(-||W_c h(x) - e_c||^2 / (2 n sigma^2))        n = embedding size

    ``K_c`` in (0, 1] is the model's certainty that ``x`` is of class ``c``; a point far from
    every centroid (off the data) has low certainty for all classes. The centroids are
    exponential moving averages of the class embeddings (buffers ``centroid_sums`` /
    ``centroid_counts``, updated by :meth:`update_centroids` during training, never by the
    forward pass). ``forward`` returns ``log K_c`` as the logits (so the softmax is the
    normalised kernel and every method can use it); :meth:`certainty` returns ``K``.
    """

    def __init__(self, *args, embedding: int = 64, length_scale: float = 0.1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        hidden = self.out.in_features
        k = self.num_classes
        del self.out
        self.embedding = int(embedding)
        self.length_scale = float(length_scale)
        self.W = nn.Parameter(torch.randn(self.embedding, k, hidden) * (1.0 / hidden) ** 0.5)
        self.register_buffer("centroid_counts", torch.full((k,), 13.0))
        self.register_buffer("centroid_sums", torch.randn(self.embedding, k) * 13.0)

    @property
    def centroids(self) -> Tensor:  # (embedding, K)
        return self.centroid_sums / self.centroid_counts

    def embed(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, embedding, K)
        return torch.einsum("mkd,bd->bmk", self.W, self.features(x))

    def log_certainty(self, x: Tensor) -> Tensor:  # (B, K), <= 0
        diff = self.embed(x) - self.centroids
        return -(diff ** 2).mean(1) / (2 * self.length_scale ** 2)

    def certainty(self, x: Tensor) -> Tensor:  # (B, K) in (0, 1]
        return self.log_certainty(x).exp()

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, K)
        return self.log_certainty(x)

    @torch.no_grad()
    def update_centroids(self, x: Tensor, y: Tensor, gamma: float = 0.99) -> None:
        """One EMA step of the centroids on a labelled batch (DUQ's update rule)."""
        onehot = torch.nn.functional.one_hot(y, self.num_classes).to(self.W.dtype)  # (B, K)
        z = self.embed(x)  # (B, m, K)
        self.centroid_counts.mul_(gamma).add_((1 - gamma) * onehot.sum(0))
        self.centroid_sums.mul_(gamma).add_((1 - gamma) * torch.einsum("bmk,bk->mk", z, onehot))


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

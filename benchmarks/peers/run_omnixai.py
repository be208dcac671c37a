"""Runs in the OmniXAI venv (benchmarks/peers/setup.sh): OmniXAI's vision
CounterfactualExplainer (a Wachter-style search with a binary search on the loss weight)
on the digits of ``IN.npz``, one image at a time as the library works, with its default
settings. It takes the PyTorch CNN itself (rebuilt here from the exported weights; the
logits are checked against the exporter's). It has no target class: it stops at any class
other than the prediction, so the caller scores validity on the requested target.

    python run_omnixai.py IN.npz OUT.npz
"""

import sys
import time

import numpy as np
import torch
import torch.nn as nn


class Normalise(nn.Module):
    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


def cnn(w: dict, norm) -> nn.Module:
    """The zoo's mnist/cnn layout (cfwidgets.models.classifiers.ConvNet), eval mode."""
    m = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 10))
    names = {"0": "trunk.0", "1": "trunk.1", "4": "trunk.4", "5": "trunk.5",
             "9": "head.1", "10": "head.2", "12": "out"}
    sd = {}
    for k in m.state_dict():
        layer, rest = k.split(".", 1)
        sd[k] = torch.from_numpy(w[f"{names[layer]}.{rest}"])
    m.load_state_dict(sd)
    return nn.Sequential(Normalise(float(norm[0]), float(norm[1])), m).eval()


def main(inp: str, out: str) -> None:
    from omnixai.data.image import Image
    from omnixai.explainers.vision import CounterfactualExplainer

    torch.set_num_threads(1)
    d = np.load(inp)
    w = {k[2:]: d[k] for k in d.files if k.startswith("w:")}
    model = cnn(w, d["norm"])
    x = d["x"].astype(np.float32)  # (N, 1, 28, 28) in [0, 1]
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    logit_gap = float(np.abs(logits - d["logits"]).max())

    def pre(img: Image):  # OmniXAI hands (N, H, W[, C]) images: back to (N, 1, 28, 28)
        return torch.from_numpy(img.to_numpy().reshape(-1, 1, 28, 28).astype(np.float32))

    explainer = CounterfactualExplainer(model=model, preprocess_function=pre)
    x_cf = np.full_like(x, np.nan)
    seconds = np.zeros(len(x))
    for i in range(len(x)):
        t0 = time.perf_counter()
        e = explainer.explain(Image(data=x[i, 0][None], batched=True), kwargs=False)
        seconds[i] = time.perf_counter() - t0
        cf = e.get_explanations()[0]["cf"]
        if cf is not None:
            x_cf[i, 0] = np.asarray(cf, dtype=np.float32).reshape(28, 28)
    np.savez(out, x_cf=x_cf, seconds=seconds, logit_gap=logit_gap,
             settings=np.array("OmniXAI 1.3.1 vision CounterfactualExplainer, defaults (c=10, kappa=10, "
                               "binary_search_steps=5, learning_rate=1e-2, num_iterations=100)"))


if __name__ == "__main__":
    main(*sys.argv[1:3])

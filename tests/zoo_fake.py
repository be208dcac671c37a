"""A tiny recipe for testing the zoo's mechanics (cache, verification, locking).

Importing this module registers ``test/fake``. Each training appends a line to the file
named by ``$ZOO_FAKE_LOG`` so tests can count trainings across processes.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from cfwidgets.zoo import Recipe, register


def _make(cfg):
    return nn.Linear(4, 2)


def _train(model, cfg, ctx):
    log = os.environ.get("ZOO_FAKE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
    time.sleep(cfg.get("sleep", 0.0))
    with torch.no_grad():
        model.weight.fill_(cfg.get("value", 1.0))
        model.bias.zero_()
    return {"value": cfg.get("value", 1.0)}


VERSION = int(os.environ.get("ZOO_FAKE_VERSION", "1"))

RECIPE = register(Recipe(
    name="test/fake",
    version=VERSION,
    description="a linear layer filled with a constant (zoo mechanics tests)",
    make_model=_make,
    train=_train,
    config={"value": 1.0, "sleep": float(os.environ.get("ZOO_FAKE_SLEEP", "0"))},
    reduced={"value": 0.5},
    data_fingerprint=lambda: os.environ.get("ZOO_FAKE_DATA", "data-v1"),
))

"""Recipes for the image classifiers and the realism autoencoders.

=====================  =========================================================
recipe                 model
=====================  =========================================================
mnist/cnn              ConvNet (BatchNorm) on MNIST-5k train (4,000 digits)
mnist/oracle           MLPClassifier, another seed: the independent judge
mnist/duq              the mnist/cnn trunk with a DUQ (RBF) head: DISC's uncertainty
mnist/ae               10 class autoencoders + 1 on all digits (IM1 / IM2)
fashion/cnn            ConvNet on Fashion-MNIST (60,000)
fashion/oracle         MLPClassifier on Fashion-MNIST
fashion/ae             class autoencoders on Fashion-MNIST
shapes/cnn             ConvNet on the synthetic shapes (4 classes)
shapes/ae              class autoencoders on the shapes
=====================  =========================================================
"""

from __future__ import annotations

from functools import cache

from ...data.images import load_dataset
from ...models.autoencoder import ClassAutoencoders
from ...models.classifiers import ConvNet, DUQConvNet, MLPClassifier
from ..core import Recipe, register
from ..training import take, train_class_autoencoders, train_classifier, train_duq

# normalisation constants per data set (mean, std of the training pixels)
NORMALISATION = {"mnist": (0.1307, 0.3081), "fashion": (0.2860, 0.3530), "shapes": (0.0882, 0.2167)}


@cache
def _fingerprint(dataset: str) -> str:
    a, b = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    return a.fingerprint() + b.fingerprint()


def _fp(dataset: str):
    return lambda: _fingerprint(dataset)


def _classes(dataset: str) -> list[str]:
    return load_dataset(dataset, "test").class_names


def _cnn_model(dataset: str):
    def make(cfg: dict):
        mean, std = NORMALISATION[dataset]
        return ConvNet((1, 28, 28), _classes(dataset), channels=tuple(cfg["channels"]),
                       hidden=cfg["hidden"], mean=mean, std=std,
                       convs_per_stage=cfg.get("convs_per_stage", 1))
    return make


def _mlp_model(dataset: str):
    def make(cfg: dict):
        mean, std = NORMALISATION[dataset]
        return MLPClassifier((1, 28, 28), _classes(dataset), hidden=tuple(cfg["hidden"]), mean=mean, std=std)
    return make


def _train_clf(dataset: str):
    def train(model, cfg, ctx):
        tr, te = load_dataset(dataset, "train"), load_dataset(dataset, "test")
        return train_classifier(model, tr.x, tr.y, te.x, te.y, cfg, ctx)
    return train


def _ae_model(dataset: str):
    def make(cfg: dict):
        names = _classes(dataset)
        return ClassAutoencoders(len(names), 1, cfg["width"], cfg["code_channels"], names)
    return make


def _train_ae(dataset: str):
    def train(model, cfg, ctx):
        tr, te = load_dataset(dataset, "train"), load_dataset(dataset, "test")
        x, y = take(cfg.get("n_train"), tr.x, tr.y, seed=ctx.seed)
        return train_class_autoencoders(model, x, y, te.x, te.y, cfg, ctx)
    return train


def _min_acc(threshold: float):
    def check(metrics: dict) -> str | None:
        acc = metrics.get("test_accuracy", 0.0)
        return None if acc >= threshold else f"test accuracy {acc:.3f} < {threshold}"
    return check


def _ae_check(metrics: dict) -> str | None:
    if metrics["own_class_mse"] >= 0.8 * metrics["other_class_mse"]:
        return (f"class autoencoders barely prefer their own class (mse {metrics['own_class_mse']} "
                f"vs {metrics['other_class_mse']} on other classes)")
    if metrics["test_mse_all"] > 0.03:
        return f"all-data autoencoder reconstructs poorly (test mse {metrics['test_mse_all']})"
    return None


def _ae_reduced_check(metrics: dict) -> str | None:
    # a few dozen updates: must beat predicting the background (mse ~0.1 on MNIST)
    if metrics["test_mse_all"] > 0.07:
        return f"all-data autoencoder did not learn (test mse {metrics['test_mse_all']})"
    return None


for _ds, _cnn_epochs, _cnn_gate, _n in (("mnist", 6, 0.95, None), ("fashion", 3, 0.88, 20000),
                                         ("shapes", 4, 0.97, None)):
    register(Recipe(
        name=f"{_ds}/cnn",
        version=1,
        description=f"ConvNet with BatchNorm (2 conv stages + BN-MLP head) on {_ds}",
        make_model=_cnn_model(_ds),
        train=_train_clf(_ds),
        config={"channels": [32, 64], "convs_per_stage": 1, "hidden": 128, "epochs": _cnn_epochs, "lr": 3e-3,
                "batch_size": 64, "n_train": _n},
        reduced={"epochs": 1, "n_train": 2000},
        data_fingerprint=_fp(_ds),
        check=_min_acc(_cnn_gate),
        reduced_check=_min_acc(0.6),
        seed=0,
        kind="classifier",
    ))
    register(Recipe(
        name=f"{_ds}/ae",
        version=2,
        description=f"class-wise + all-data conv autoencoders on {_ds} (realism IM1/IM2)",
        make_model=_ae_model(_ds),
        train=_train_ae(_ds),
        config={"width": 16, "code_channels": 4, "steps": 300, "steps_all": 800, "lr": 3e-3,
                "batch_size": 64, "n_train": _n},
        reduced={"steps": 40, "steps_all": 60, "n_train": 2000},
        data_fingerprint=_fp(_ds),
        check=_ae_check,
        reduced_check=_ae_reduced_check,
        seed=0,
        kind="autoencoder",
    ))

for _ds, _gate, _n in (("mnist", 0.93, None), ("fashion", 0.85, 20000)):
    register(Recipe(
        name=f"{_ds}/oracle",
        version=1,
        description=f"MLP classifier on {_ds}, another architecture and seed than {_ds}/cnn: "
                    f"the independent judge of counterfactuals",
        make_model=_mlp_model(_ds),
        train=_train_clf(_ds),
        config={"hidden": [512, 256], "epochs": 10, "lr": 2e-3, "batch_size": 64, "n_train": _n},
        reduced={"epochs": 2, "n_train": 2000},
        data_fingerprint=_fp(_ds),
        check=_min_acc(_gate),
        reduced_check=_min_acc(0.6),
        seed=1,
        kind="classifier",
    ))


def _duq_model(cfg: dict):
    mean, std = NORMALISATION["mnist"]
    return DUQConvNet((1, 28, 28), _classes("mnist"), channels=tuple(cfg["channels"]), hidden=cfg["hidden"],
                      mean=mean, std=std, embedding=cfg["embedding"], length_scale=cfg["length_scale"],
                      dropout=cfg.get("dropout", 0.0))


def _train_duq(model, cfg, ctx):
    tr, te = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    # out-of-distribution images for the certainty check only (never trained on)
    ood = load_dataset("fashion", "test").x[:1000]
    return train_duq(model, tr.x, tr.y, te.x, te.y, cfg, ctx, x_ood=ood)


def _duq_check(threshold: float, auroc: float):
    def check(metrics: dict) -> str | None:
        bad = _min_acc(threshold)(metrics)
        if bad is None and metrics.get("ood_auroc", 1.0) < auroc:
            bad = f"certainty separates digits from Fashion-MNIST with AUROC {metrics['ood_auroc']} < {auroc}"
        return bad
    return check


# DISC's manifold-consistency term needs the classifier's own uncertainty: the same trunk
# as mnist/cnn (BatchNorm included) with the RBF head and gradient penalty of DUQ.
register(Recipe(
    name="mnist/duq",
    version=1,
    description="ConvNet trunk (BatchNorm) of mnist/cnn with a DUQ RBF head (van Amersfoort et al. "
                "2020): a classifier that knows its certainty",
    make_model=_duq_model,
    train=_train_duq,
    config={"channels": [32, 64], "hidden": 128, "embedding": 64, "length_scale": 0.1, "dropout": 0.0, "epochs": 10,
            "lr": 3e-3, "batch_size": 64, "gradient_penalty": 0.05, "gamma": 0.99, "n_train": None},
    reduced={"epochs": 2, "n_train": 2000},
    data_fingerprint=lambda: _fingerprint("mnist") + _fingerprint("fashion"),
    check=_duq_check(0.95, 0.8),
    reduced_check=_min_acc(0.3),
    seed=0,
    kind="classifier",
))

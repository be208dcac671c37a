"""Plain training loops shared by the image recipes (classifiers, autoencoders)."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core import TrainContext

__all__ = ["augment", "train_classifier", "train_duq", "accuracy", "train_class_autoencoders", "batches", "take"]


def augment(x: Tensor, generator: torch.Generator, shift: float = 2.0, degrees: float = 8.0,
            scale: float = 0.08) -> Tensor:
    """Random small affine jitter (translation in px, rotation, scale), vectorised."""
    b, _, h, w = x.shape
    r = torch.rand(b, 4, generator=generator).to(x.device) * 2 - 1
    ang = torch.deg2rad(r[:, 0] * degrees)
    s = 1 + r[:, 1] * scale
    tx, ty = r[:, 2] * shift * 2 / w, r[:, 3] * shift * 2 / h
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def take(n, *tensors, seed: int = 0):
    """The first-``n`` subset of aligned tensors, drawn at random (seeded) rather than by
    position: the stored data sets are ordered by class, so ``x[:n]`` of a reduced budget
    would hold only the first classes. ``n`` of None (or >= the length) returns them as is,
    so full-budget recipes see exactly the stored data."""
    total = len(tensors[0])
    if n is None or int(n) >= total:
        return tensors if len(tensors) > 1 else tensors[0]
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: int(n)].sort().values
    out = tuple(t[idx] for t in tensors)
    return out if len(out) > 1 else out[0]


def batches(n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True):
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size].to(dev))
        correct += int((logits.argmax(1).cpu() == y[i:i + batch_size]).sum())
    model.train(was)
    return correct / max(1, len(x))


def _classifier_setup(model: nn.Module, x: Tensor, y: Tensor, cfg: dict, ctx: TrainContext):
    """What the softmax and DUQ classifier trainers share: the training subset
    (``n_train``), AdamW (``lr``, ``weight_decay``) and a one-cycle schedule over every
    batch of ``epochs`` epochs. Returns ``(x, y, epochs, batch_size, opt, sched, total_steps)``."""
    epochs = int(cfg["epochs"])
    bs = int(cfg.get("batch_size", 64))
    x, y = take(cfg.get("n_train"), x, y, seed=ctx.seed)
    lr = cfg.get("lr", 2e-3)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.get("weight_decay", 1e-4))
    total = epochs * math.ceil(len(x) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, total))
    return x, y, epochs, bs, opt, sched, total


def train_classifier(model: nn.Module, x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor,
                     cfg: dict, ctx: TrainContext) -> dict:
    """Adam + cosine schedule + label smoothing + affine jitter; returns metrics."""
    from tqdm.auto import tqdm

    dev = ctx.device
    g = torch.Generator().manual_seed(ctx.seed)
    x, y, epochs, bs, opt, sched, total = _classifier_setup(model, x, y, cfg, ctx)
    n = len(x)
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc=ctx.name, disable=not ctx.progress, leave=False, mininterval=2.0)
    model.train()
    for _ in range(epochs):
        for idx in batches(n, bs, g):
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            if cfg.get("augment", True):
                xb = augment(xb, g).clamp(0, 1)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=cfg.get("label_smoothing", 0.05))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    acc = accuracy(model, x_test, y_test)
    train_acc = accuracy(model, x[:2000], y[:2000])
    ctx.say(f"test accuracy {acc:.4f} (train {train_acc:.4f}) after {time.perf_counter() - t0:.1f} s")
    return {"test_accuracy": round(acc, 4), "train_accuracy": round(train_acc, 4),
            "n_train": n, "n_test": len(x_test)}


def train_class_autoencoders(model, x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor,
                             cfg: dict, ctx: TrainContext) -> dict:
    """Train each class autoencoder on its class only and ``model.all`` on everything.

    A fixed number of Adam updates per autoencoder (``steps``; ``steps_all`` for the
    all-data one) on random batches, binary cross-entropy on the logits (MSE on a sigmoid
    output stalls at "predict the background" for MNIST-like data).
    """
    from tqdm.auto import tqdm

    dev = ctx.device
    g = torch.Generator().manual_seed(ctx.seed)
    bs = int(cfg.get("batch_size", 64))
    jobs = [(k, ae, x[y == k], x_test[y_test == k]) for k, ae in enumerate(model.per_class)]
    jobs.append((-1, model.all, x, x_test))
    metrics = {}
    bar = tqdm(total=len(jobs), desc=ctx.name, disable=not ctx.progress, leave=False, mininterval=2.0)
    model.train()
    for k, ae, xk, xk_test in jobs:
        steps = int(cfg["steps"] if k >= 0 else cfg.get("steps_all", cfg["steps"]))
        opt = torch.optim.Adam(ae.parameters(), lr=cfg.get("lr", 3e-3))
        for _ in range(steps):
            xb = xk[torch.randint(0, len(xk), (bs,), generator=g)].to(dev)
            loss = F.binary_cross_entropy_with_logits(ae.decoder(ae.encoder(xb)), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            ae.eval()
            mse = F.mse_loss(ae(xk_test.to(dev)), xk_test.to(dev)).item()
        metrics[f"test_mse_{'all' if k < 0 else k}"] = round(mse, 5)
        bar.update(1)
    bar.close()
    model.eval()
    # the point of class autoencoders: own class reconstructs better than other classes
    with torch.no_grad():
        own, other = [], []
        for k in range(len(model.per_class)):
            xs = x_test[y_test == k][:50].to(dev)
            own.append(F.mse_loss(model.per_class[k](xs), xs).item())
            other.append(F.mse_loss(model.per_class[(k + 1) % len(model.per_class)](xs), xs).item())
    metrics["own_class_mse"] = round(sum(own) / len(own), 5)
    metrics["other_class_mse"] = round(sum(other) / len(other), 5)
    ctx.say(f"class AE mse own {metrics['own_class_mse']:.4f} vs other {metrics['other_class_mse']:.4f}")
    return metrics


def _auroc(pos: Tensor, neg: Tensor) -> float:
    """Area under the ROC curve of scores ``pos`` (should be high) against ``neg``."""
    scores = torch.cat([pos, neg])
    ranks = scores.argsort().argsort().double() + 1
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_duq(model, x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, cfg: dict,
              ctx: TrainContext, x_ood: Tensor | None = None) -> dict:
    """Train a :class:`~cfwidgets.models.DUQConvNet` as in DUQ (van Amersfoort et al.,
    ICML 2020): binary cross-entropy between the kernel values ``K_c(x)`` and the one-hot
    labels, plus the two-sided gradient penalty ``lambda * (||d sum_c K_c / dx||^2 - 1)^2``,
    and after each update an EMA step of the class centroids (in eval mode, without
    gradients). Deviation: Adam with a one-cycle schedule instead of the paper's SGD with
    momentum, and an EMA factor ``gamma`` of 0.99 instead of 0.999, because the budget is
    a few hundred updates (0.999 would keep the random initial centroids), and after
    training one pass that sets each centroid to its class's mean embedding (``final_centroids``).

    Metrics: accuracy, mean max certainty on test digits, and (given ``x_ood``) the AUROC
    of max certainty separating test digits from out-of-distribution images.
    """
    dev = ctx.device
    g = torch.Generator().manual_seed(ctx.seed)
    lam = float(cfg.get("gradient_penalty", 0.05))
    gamma = float(cfg.get("gamma", 0.99))
    x, y, epochs, bs, opt, sched, total = _classifier_setup(model, x, y, cfg, ctx)
    n = len(x)
    t0 = time.perf_counter()
    start = 0
    state = ctx.load_state()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        g.set_state(state["gen"])
        start = int(state["epoch"])
        ctx.say(f"resuming at epoch {start}")
    last = torch.zeros(())
    for epoch in range(start, epochs):
        for idx in batches(n, bs, g):
            model.train()
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            if cfg.get("augment", True):
                xb = augment(xb, g).clamp(0, 1)
            xb.requires_grad_(lam > 0)
            log_k = model.log_certainty(xb)
            k = log_k.exp()
            onehot = F.one_hot(yb, model.num_classes).float()
            # binary cross-entropy on K written in log K: at initialisation K is ~exp(-75),
            # where a clamped BCE on K would pass no gradient at all
            log_not_k = torch.log1p(-k.clamp(max=1 - 1e-6))
            loss = -(onehot * log_k + (1 - onehot) * log_not_k).mean()
            if lam > 0:
                (grad,) = torch.autograd.grad(k.sum(), xb, create_graph=True)
                loss = loss + lam * ((grad.flatten(1).pow(2).sum(1) - 1) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            model.eval()
            model.update_centroids(xb.detach(), yb, gamma)
            last = loss.detach()
        ctx.say(f"epoch {epoch + 1}/{epochs} loss {float(last):.4f} ({time.perf_counter() - t0:.0f} s)")
        ctx.save_state({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": g.get_state(), "epoch": epoch + 1})
    model.eval()
    if cfg.get("final_centroids", True):
        # the EMA's fixed point: each centroid set to the class mean of the embeddings of the
        # (un-augmented) training digits under the final weights. A few hundred updates leave
        # the EMA trailing the moving embeddings; one pass without gradients removes the lag.
        with torch.no_grad():
            sums = torch.zeros_like(model.centroid_sums)
            counts = torch.zeros_like(model.centroid_counts)
            for i in range(0, n, 500):
                xb, yb = x[i:i + 500].to(dev), y[i:i + 500].to(dev)
                onehot = F.one_hot(yb, model.num_classes).to(sums.dtype)
                sums += torch.einsum("bmk,bk->mk", model.embed(xb), onehot)
                counts += onehot.sum(0)
            model.centroid_sums.copy_(sums)
            model.centroid_counts.copy_(counts)
    acc = accuracy(model, x_test, y_test)
    with torch.no_grad():
        cert = model.certainty(x_test.to(dev)).max(1).values.cpu()
    metrics = {"test_accuracy": round(acc, 4), "train_accuracy": round(accuracy(model, x[:2000], y[:2000]), 4),
               "mean_max_certainty": round(float(cert.mean()), 4), "n_train": n, "n_test": len(x_test)}
    if x_ood is not None:
        with torch.no_grad():
            c_ood = model.certainty(x_ood.to(dev)).max(1).values.cpu()
        metrics["ood_auroc"] = round(_auroc(cert, c_ood), 4)
        metrics["mean_max_certainty_ood"] = round(float(c_ood.mean()), 4)
    ctx.say(f"DUQ: {metrics}")
    return metrics

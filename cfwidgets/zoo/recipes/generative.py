"""Recipes for the generative models of the diffeomorphic counterfactuals (METHODS.md §1).

=====================  =========================================================
recipe                 model
=====================  =========================================================
mnist/flow             multi-scale Glow (normflows) on MNIST-5k train, +-1 px shifts
fashion/flow           the same Glow on Fashion-MNIST's 60,000 training images
mnist/vae              convolutional VAE, 16 latents, on MNIST-5k train
mnist/vae-judge        fully connected VAE, 16 latents, seed 1: judges the tangent fraction
mnist/gan              DCGAN generator (nz = 64) + an encoder for warm-starting inversion
=====================  =========================================================

Flows are the slow recipes: their full budget is a background job of tens of minutes on
a CPU (resumable: state is saved through ``ctx.save_state`` every ``save_every_s``
seconds and picked up by the next ``zoo.build``). Tests retrain every recipe at a
reduced budget (a smaller network, a few dozen updates) only to prove that it learns.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from ...data.images import load_dataset
from ..core import Recipe, TrainContext, register
from ..training import take
from .images import _fp

__all__ = ["train_flow", "train_vae", "train_gan", "flow_test_bpd"]


# ------------------------------------------------------------------------ helpers
def _random_shift(x: torch.Tensor, g: torch.Generator, pixels: int = 1) -> torch.Tensor:
    """Shift each image by an integer offset in ``[-pixels, pixels]`` (zero fill): keeps
    pixel values on the 8-bit grid, unlike an interpolating affine jitter."""
    if pixels <= 0:
        return x
    b, _, h, w = x.shape
    pad = F.pad(x, (pixels, pixels, pixels, pixels))
    off = torch.randint(0, 2 * pixels + 1, (b, 2), generator=g)
    rows = (off[:, 0:1] + torch.arange(h)[None]).to(x.device)  # (B, H)
    cols = (off[:, 1:2] + torch.arange(w)[None]).to(x.device)  # (B, W)
    idx_b = torch.arange(b, device=x.device)[:, None, None]
    out = pad[idx_b, 0, rows[:, :, None], cols[:, None, :]]  # (B, H, W)
    return out[:, None]


def _lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 2% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _sample_png(images: torch.Tensor, nrow: int = 8) -> bytes:
    from ..._png import grid_png

    return grid_png(images, nrow=nrow, scale=2)


# -------------------------------------------------------------------------- flows
def _flow_model(cfg: dict):
    from ...models.flows import MultiscaleGlow

    return MultiscaleGlow((1, 28, 28), levels=cfg["levels"], blocks=tuple(cfg["blocks"]),
                          hidden=tuple(cfg["hidden"]), alpha=cfg["alpha"],
                          max_log_scale=cfg.get("max_log_scale"))


@torch.no_grad()
def flow_test_bpd(model, x: torch.Tensor, seed: int = 0, batch_size: int = 250) -> float:
    """Mean bits/dim of ``x`` (8-bit images in [0, 1]) under ``model``, with uniform
    dequantisation noise from ``seed``."""
    from ...models.flows import dequantize

    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    total, n = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb = dequantize(x[i:i + batch_size].to(dev), g)
        total += float(model.continuous_bits_per_dim(xb).sum())
        n += len(xb)
    model.train(was)
    return total / max(1, n)


def train_flow(model, cfg: dict, ctx: TrainContext, dataset: str) -> dict:
    """Maximum likelihood on dequantised images (Adam, warm-up + cosine, grad clipping);
    resumable through ``ctx.save_state`` / ``ctx.load_state``."""
    from ...models.flows import dequantize

    dev = ctx.device
    tr, te = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    x_tr = take(cfg.get("n_train"), tr.x, seed=ctx.seed)
    x_te = take(cfg.get("n_test"), te.x, seed=ctx.seed + 1)
    n = len(x_tr)
    total = int(cfg["steps"])
    bs = int(cfg["batch_size"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    g = torch.Generator().manual_seed(ctx.seed)
    step, elapsed, history, notes = 0, 0.0, [], []
    state = ctx.load_state()
    if state is not None and int(state.get("step", total)) < total:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
        except (KeyError, RuntimeError, ValueError) as e:  # another architecture: start over
            ctx.say(f"ignoring incompatible training state ({str(e)[:80]})")
            state = None
    if state is not None and int(state.get("step", total)) < total:
        g.set_state(state["rng"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        history = [tuple(h) for h in state["history"].tolist()]
        notes = [str(v) for v in state.get("notes", [])]
        if int(state["total"]) != total:  # the budget was changed between runs
            notes.append(f"budget changed from {int(state['total'])} to {total} steps at step {step}")
        ctx.say(f"resumed at step {step}/{total} ({elapsed:.0f} s trained so far)")
    else:
        with torch.no_grad():  # ActNorm's data-dependent initialisation on a larger batch
            model.log_prob(dequantize(x_tr[torch.randperm(n, generator=g)[:512]].to(dev), g))
    model.train()
    order = torch.randperm(n, generator=g)
    pos = 0
    t_start = time.perf_counter() - elapsed
    last_save = time.perf_counter()
    window: list[float] = []
    log_every = max(1, min(100, total // 20))
    dims = model.dims * math.log(2.0)
    while step < total:
        if pos + bs > n:
            order, pos = torch.randperm(n, generator=g), 0
        xb = x_tr[order[pos:pos + bs]]
        pos += bs
        if cfg.get("shift", 0):
            xb = _random_shift(xb, g, int(cfg["shift"]))
        xb = dequantize(xb.to(dev), g)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, total, cfg["lr"], int(cfg["warmup"]))
        loss = -model.log_prob(xb).mean() / dims + 8.0  # train bits/dim
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.get("clip", 5.0))
        opt.step()
        step += 1
        window.append(float(loss.detach()))
        if step % log_every == 0 or step == total:
            running = sum(window) / len(window)
            window = []
            history.append((step, running, time.perf_counter() - t_start))
            ctx.say(f"step {step}/{total} train bpd {running:.3f} "
                    f"({time.perf_counter() - t_start:.0f} s)")
        if time.perf_counter() - last_save > cfg.get("save_every_s", 120) and step < total:
            ctx.save_state({"model": model.state_dict(), "opt": opt.state_dict(), "rng": g.get_state(),
                            "step": step, "total": total,
                            "elapsed": time.perf_counter() - t_start,
                            "history": torch.tensor(history, dtype=torch.float64).reshape(-1, 3),
                            "notes": notes})
            last_save = time.perf_counter()
    seconds = time.perf_counter() - t_start
    model.eval()
    bpd = flow_test_bpd(model, x_te, seed=1)
    bpd_train = flow_test_bpd(model, x_tr[:len(x_te)], seed=1)
    init_bpd = history[0][1] if history else float("nan")
    gsamp = torch.Generator().manual_seed(0)
    ctx.artifacts["samples.png"] = _sample_png(model.sample(64, temperature=0.7, generator=gsamp))
    # round trip x -> z -> x on held-out images: in float64 (the exactness of the
    # inverse; what the quality gate checks) and in float32 (what a float32 run sees: a
    # few images lose digits where coupling scales are small, see models.flows)
    import copy

    xr = x_te[:256].to(dev)
    with torch.no_grad():
        err32 = (model.decode(model.encode(xr)) - xr).abs().flatten(1).amax(1)
        m64 = copy.deepcopy(model).double()
        rt = float((m64.decode(m64.encode(xr.double())) - xr.double()).abs().max())
        del m64
    ctx.say(f"held-out bits/dim {bpd:.3f} (train {bpd_train:.3f}); round trip max err {rt:.1e} "
            f"(float64), {float(err32.max()):.1e} (float32); "
            f"{step} steps in {seconds:.0f} s")
    return {"test_bpd": round(bpd, 4), "train_bpd": round(bpd_train, 4),
            "first_logged_train_bpd": round(init_bpd, 4), "steps": step,
            "batch_size": bs, "n_train": n, "n_test": len(x_te),
            "train_seconds_total": round(seconds, 1), "roundtrip_max_abs_err": rt,
            "roundtrip_max_abs_err_f32": float(err32.max()),
            "roundtrip_median_abs_err_f32": float(err32.median()), "notes": notes,
            "history": [[int(s), round(b, 4), round(t, 1)] for s, b, t in history]}


def _flow_check(limit: float):
    def check(m: dict) -> str | None:
        if m["roundtrip_max_abs_err"] > 1e-4:
            return f"flow round trip error {m['roundtrip_max_abs_err']:.1e} > 1e-4"
        return None if m["test_bpd"] < limit else f"held-out bits/dim {m['test_bpd']:.3f} >= {limit}"
    return check


def _flow_reduced_check(m: dict) -> str | None:
    # learning = the held-out figure is far below where training started
    if not m["test_bpd"] < m["first_logged_train_bpd"] - 0.5:
        return (f"flow did not learn: held-out {m['test_bpd']:.3f} bits/dim vs "
                f"{m['first_logged_train_bpd']:.3f} at the start")
    return None


# max_log_scale: bounded coupling scales (see models.flows: version 1 used Glow's unbounded
# sigmoid scale, and its generator direction exploded under gradient ascent in z)
_FLOW_ARCH = {"levels": 2, "blocks": [8, 10], "hidden": [64, 128], "alpha": 0.05, "max_log_scale": 2.0}
_FLOW_REDUCED = {"blocks": [2, 2], "hidden": [16, 32], "steps": 100, "warmup": 10, "lr": 3e-3,
                 "n_train": 1024, "n_test": 256, "batch_size": 32}

# budgets: 1500 updates of 64 images each (MNIST: 24 epochs of 4,000 digits; Fashion: 1.6
# epochs of 60,000), about 35-60 min per flow on 2 shared CPU cores
for _ds, _steps, _shift, _gate in (("mnist", 1500, 1, 2.2), ("fashion", 1500, 0, 4.2)):
    register(Recipe(
        name=f"{_ds}/flow",
        version=2,
        description=(f"multi-scale Glow (normflows layers, bounded coupling scales; 2 levels x "
                     f"8/10 blocks) on {_ds}: "
                     f"exact log-density and inverse, for diffeomorphic counterfactuals"),
        make_model=_flow_model,
        train=(lambda ds: (lambda model, cfg, ctx: train_flow(model, cfg, ctx, ds)))(_ds),
        config=dict(_FLOW_ARCH, steps=_steps, batch_size=64, lr=1e-3, warmup=200, clip=5.0,
                    shift=_shift, n_train=None, n_test=None, save_every_s=120),
        reduced=dict(_FLOW_REDUCED),
        data_fingerprint=_fp(_ds),
        check=_flow_check(_gate),
        reduced_check=_flow_reduced_check,
        seed=0,
        kind="flow",
    ))


# ---------------------------------------------------------------------------- VAE
def _vae_model(cfg: dict):
    from ...models.vae import ConvVAE

    return ConvVAE((1, 28, 28), latent_dim=cfg["latent_dim"], width=cfg["width"])


def train_vae(model, cfg: dict, ctx: TrainContext, dataset: str = "mnist") -> dict:
    """ELBO (Bernoulli likelihood on grey values, beta = 1), Adam, +-1 px shifts."""
    dev = ctx.device
    tr, te = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    x_tr = take(cfg.get("n_train"), tr.x, seed=ctx.seed)
    x_te = take(cfg.get("n_test"), te.x, seed=ctx.seed + 1)
    n = len(x_tr)
    g = torch.Generator().manual_seed(ctx.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    bs, epochs = int(cfg["batch_size"]), int(cfg["epochs"])
    total = epochs * math.ceil(n / bs)
    step, t0, first = 0, time.perf_counter(), None
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(bs):
            xb = _random_shift(x_tr[idx], g, int(cfg.get("shift", 0))).to(dev)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, cfg["lr"], 50)
            rec, kl = model.elbo_terms(xb, g)
            loss = (rec + kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if first is None:
                first = float(loss.detach())
        ctx.say(f"epoch loss {float(loss.detach()):.1f} nats ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    with torch.no_grad():
        gt = torch.Generator().manual_seed(1)
        rec, kl = model.elbo_terms(x_te.to(dev), gt)
        mse = float(F.mse_loss(model(x_te.to(dev)), x_te.to(dev)))
        ctx.artifacts["samples.png"] = _sample_png(torch.cat([
            model.sample(48, torch.Generator().manual_seed(0)),
            x_te[:8].to(dev), model(x_te[:8].to(dev))]))
    neg_elbo = float((rec + kl).mean())
    ctx.say(f"held-out -ELBO {neg_elbo:.1f} nats, recon MSE {mse:.4f}, KL {float(kl.mean()):.1f}")
    return {"test_neg_elbo_nats": round(neg_elbo, 2), "test_kl_nats": round(float(kl.mean()), 2),
            "test_recon_mse": round(mse, 5), "first_train_loss": round(first or float("nan"), 2),
            "steps": step, "n_train": n, "train_seconds_total": round(time.perf_counter() - t0, 1)}


def _vae_check(limit: float):
    def check(m: dict) -> str | None:
        return None if m["test_recon_mse"] < limit else f"VAE reconstruction MSE {m['test_recon_mse']:.4f} >= {limit}"
    return check


def _vae_reduced_check(m: dict) -> str | None:
    if not m["test_neg_elbo_nats"] < 0.6 * m["first_train_loss"]:
        return f"VAE did not learn: -ELBO {m['test_neg_elbo_nats']} vs {m['first_train_loss']} at the start"
    return None


register(Recipe(
    name="mnist/vae",
    version=1,
    description="convolutional VAE (16 latents, Bernoulli decoder) on MNIST-5k train",
    make_model=_vae_model,
    train=train_vae,
    config={"latent_dim": 16, "width": 32, "epochs": 40, "batch_size": 64, "lr": 2e-3, "shift": 1,
            "n_train": None, "n_test": None},
    reduced={"epochs": 2, "n_train": 1024, "n_test": 256},
    data_fingerprint=_fp("mnist"),
    check=_vae_check(0.03),
    reduced_check=_vae_reduced_check,
    seed=0,
    kind="vae",
))


def _mlp_vae_model(cfg: dict):
    from ...models.vae import MlpVAE

    return MlpVAE((1, 28, 28), latent_dim=cfg["latent_dim"], hidden=cfg["hidden"])


# the judge of the tangent-space measure: another architecture (fully connected) and seed
# than mnist/vae, which the Diffeomorphic VAE arm steers with; same latent size, so a random
# direction scores the same sqrt(16 / 784)
register(Recipe(
    name="mnist/vae-judge",
    version=1,
    description="fully connected VAE (16 latents, seed 1) on MNIST-5k train: judges the "
                "tangent-space fraction of every method; no method steers with it",
    make_model=_mlp_vae_model,
    train=train_vae,
    config={"latent_dim": 16, "hidden": 256, "epochs": 60, "batch_size": 64, "lr": 1e-3, "shift": 1,
            "n_train": None, "n_test": None},
    reduced={"epochs": 3, "n_train": 1024, "n_test": 256},
    data_fingerprint=_fp("mnist"),
    check=_vae_check(0.04),
    reduced_check=_vae_reduced_check,
    seed=1,
    kind="judge",
))


# ---------------------------------------------------------------------------- GAN
def _gan_model(cfg: dict):
    from ...models.gan import DCGAN

    return DCGAN((1, 28, 28), nz=cfg["nz"], width=cfg["width"], enc_width=cfg["enc_width"])


@torch.no_grad()
def _recalibrate_bn(gen, nz: int, g: torch.Generator, dev, batches: int = 50, bs: int = 256) -> None:
    """Re-estimate the generator's BatchNorm running statistics as exact averages over
    fresh prior samples (the running averages of GAN training lag behind the weights)."""
    bns = [m for m in gen.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    gen.train()
    for _ in range(batches):
        gen(torch.randn(bs, nz, generator=g).to(dev))
    for m in bns:
        m.momentum = 0.1
    gen.eval()


def train_gan(model, cfg: dict, ctx: TrainContext, dataset: str = "mnist") -> dict:
    """DCGAN with the non-saturating loss (Goodfellow et al. 2014) and a spectrally
    normalised discriminator; shifts of +-2 px on real *and* fake images before the
    discriminator (differentiable augmentation, so 4k digits suffice). Then the
    warm-start encoder: ``||G(E(x)) - x||^2`` on real digits + ``||E(G(z)) - z||^2``."""
    from ...models.gan import Discriminator

    dev = ctx.device
    tr, te = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    x_tr = take(cfg.get("n_train"), tr.x, seed=ctx.seed)
    x_te = take(cfg.get("n_test"), te.x, seed=ctx.seed + 1)
    n = len(x_tr)
    g = torch.Generator().manual_seed(ctx.seed)
    G, E, nz = model.generator, model.encoder, model.latent_dim
    D = Discriminator(cfg["width"], 1).to(dev)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg["lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg["lr"], betas=(0.5, 0.999))
    bs, steps = int(cfg["batch_size"]), int(cfg["steps"])
    shift = int(cfg.get("shift", 2))
    t0 = time.perf_counter()
    G.train()
    D.train()
    pos, order = 0, torch.randperm(n, generator=g)

    def aug(x):
        return _random_shift(x, g, shift) if shift else x

    log_every = max(1, steps // 10)
    for step in range(steps):
        if pos + bs > n:
            pos, order = 0, torch.randperm(n, generator=g)
        real = x_tr[order[pos:pos + bs]].to(dev)
        pos += bs
        z = torch.randn(bs, nz, generator=g).to(dev)
        fake = G(z)
        d_loss = (F.softplus(-D(aug(real))) + F.softplus(D(aug(fake.detach())))).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-D(aug(fake))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if (step + 1) % log_every == 0:
            ctx.say(f"step {step + 1}/{steps} D {float(d_loss.detach()):.3f} "
                    f"G {float(g_loss.detach()):.3f} ({time.perf_counter() - t0:.0f} s)")
    _recalibrate_bn(G, nz, g, dev)
    for p in G.parameters():
        p.requires_grad_(False)
    # ---- encoder (warm start for the inversion; a deviation from the paper, see models.gan)
    opt_e = torch.optim.Adam(E.parameters(), lr=cfg["enc_lr"])
    E.train()
    first_e = None
    for _ in range(int(cfg["enc_steps"])):
        idx = torch.randint(0, n, (bs,), generator=g)
        real = x_tr[idx].to(dev)
        z = torch.randn(bs, nz, generator=g).to(dev)
        with torch.no_grad():
            fake = G(z)
        loss = F.mse_loss(G(E(real)), real) * 10 + F.mse_loss(E(fake), z) * 0.1
        opt_e.zero_grad(set_to_none=True)
        loss.backward()
        opt_e.step()
        if first_e is None:
            first_e = float(loss.detach())
    for p in G.parameters():
        p.requires_grad_(True)
    model.eval()
    # ---- evaluation: reconstruction through the encoder and after the paper's inversion
    xe = x_te[:200].to(dev)
    with torch.no_grad():
        enc_mse = float(F.mse_loss(model(xe), xe))
    z_inv, inv_mse = model.invert(xe, steps=int(cfg.get("eval_inversion_steps", 300)), lr=0.1, tol=0.0)
    inv_mse_mean = float(inv_mse.mean())
    with torch.no_grad():
        real_score = float(torch.sigmoid(D(xe)).mean())
        fake_score = float(torch.sigmoid(D(model.sample(200, torch.Generator().manual_seed(1)))).mean())
        ctx.artifacts["samples.png"] = _sample_png(torch.cat([
            model.sample(48, torch.Generator().manual_seed(0)), xe[:8], model.decode(z_inv[:8])]))
    ctx.say(f"encoder MSE {enc_mse:.4f}; after inversion {inv_mse_mean:.4f}; "
            f"D(real) {real_score:.2f} D(fake) {fake_score:.2f}")
    return {"encoder_recon_mse": round(enc_mse, 5), "inversion_recon_mse": round(inv_mse_mean, 5),
            "encoder_first_loss": round(first_e or float("nan"), 4),
            "d_real": round(real_score, 3), "d_fake": round(fake_score, 3), "steps": steps,
            "n_train": n, "train_seconds_total": round(time.perf_counter() - t0, 1)}


def _gan_check(limit: float):
    def check(m: dict) -> str | None:
        return None if m["inversion_recon_mse"] < limit else (
            f"GAN inversion MSE {m['inversion_recon_mse']:.4f} >= {limit}")
    return check


def _gan_reduced_check(m: dict) -> str | None:
    # learning = the generator + encoder reconstruct far better than a blank image (~0.1)
    return None if m["encoder_recon_mse"] < 0.09 else f"GAN did not learn (encoder MSE {m['encoder_recon_mse']})"


register(Recipe(
    name="mnist/gan",
    version=1,
    description="DCGAN (nz = 64, spectral-norm critic, shift augmentation) on MNIST-5k train, "
                "with an encoder that warm-starts the optimisation inversion",
    make_model=_gan_model,
    train=train_gan,
    config={"nz": 64, "width": 64, "enc_width": 32, "steps": 2500, "batch_size": 64, "lr": 2e-4,
            "shift": 2, "enc_steps": 1200, "enc_lr": 1e-3, "eval_inversion_steps": 300,
            "n_train": None, "n_test": None},
    reduced={"steps": 150, "enc_steps": 100, "eval_inversion_steps": 20, "n_train": 1024, "n_test": 200},
    data_fingerprint=_fp("mnist"),
    check=_gan_check(0.03),
    reduced_check=_gan_reduced_check,
    seed=0,
    kind="gan",
))

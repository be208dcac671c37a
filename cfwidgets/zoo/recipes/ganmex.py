"""Recipes for the GANMEX translators (METHODS.md §4, corrected from the authors' code).

=====================  =========================================================
recipe                 model
=====================  =========================================================
mnist/ganmex           Translator G(x, t) trained against the frozen mnist/cnn
fashion/ganmex         the same against fashion/cnn
shapes/ganmex          TemplateTranslator (structured: reads the shape's factors and
                       redraws the target's outline in place), initialised from
                       shapes/cvae, trained in the same game against shapes/cnn
=====================  =========================================================

Training (the authors' ``pinjutien/GANMEX``, TF-GAN StarGAN estimator, ``train.py`` /
``train_lib.py``), every weight a recipe knob:

- critic: WGAN loss ``D(fake) - D(real)`` + ``gp_weight`` (10) x the two-sided gradient
  penalty ``(||grad D(x_hat)|| - 1)^2`` on random interpolates of real and fake. Its class
  head is the frozen classifier under explanation (only the real/fake head trains, so
  StarGAN's class loss on real images has nothing to update and is left out);
- generator: ``-D(G(x, t))`` + ``id_weight`` (100) x ``mean |x - G(x, t)|`` (the
  self-consistency term) + ``cls_weight`` (1000) x ``CE(f(G(x, t)), t)`` with ``f`` the frozen
  classifier + ``rec_weight`` (0: StarGAN's cycle term, switched off by the authors) x
  ``mean |x - G(G(x, t), c)|``;
- Adam with betas (0.9, 0.999), one critic step per generator step; targets drawn
  uniformly among the classes other than the label.

**Deviations.** Batch 64 at 28x28 (authors: 6 at 256 px) and a few thousand steps (theirs:
up to 1e6). The authors' learning rates (generator 2e-5, critic 1e-4) do not reach the
success gate within a CPU budget of minutes; the recipe multiplies both by ``lr_scale``
(keeping their 1:5 ratio) and records it in the metadata (see the recipe's comment for the
measurement).

Metadata: on held-out images, for every class other than the one predicted, the share of
translations the classifier assigns to the requested class (``success``, gated >= 0.9), the
share an independent judge assigns to it (``judge_agreement``: ``<ds>/oracle``, an MLP of
another seed; for shapes the factor regressor ``shapes/factors``, trained on fresh
renders), and the mean L1 change.

Shipped (600 steps at batch 64, 1 thread on 2 shared cores): mnist success 1.00, judge
0.85, mean L1 0.11 (6.6 min); fashion 1.00, 0.58, 0.16 (17 min; blob-like edits, the
weakest); shapes (the structured ``TemplateTranslator``, initialised from ``shapes/cvae``,
300 steps at the authors' learning rates) 1.00, 1.00, 0.09 (1 min). The convolutional shapes translator shipped before
(600 steps: 1.00, 0.68, 0.08) erased outlines and drew target strokes away from where the
target shape would be; its IG maps put less mass where the two shapes differ than the zero
baseline's (0.40 against 0.42), the structured one 0.77.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.images import load_dataset
from ...models.translator import PatchCritic, TemplateTranslator, Translator
from ..core import Recipe, TrainContext, register
from ..training import take
from .images import _classes, _fingerprint

__all__ = ["train_translator", "translation_report", "judge_for"]


class _ShapeJudge(nn.Module):
    """The shape logits of the ``shapes/factors`` regressor (its last categorical block)."""

    def __init__(self, net: nn.Module, k: int) -> None:
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, -self.k:]


def judge_for(dataset: str, device="cpu") -> tuple[nn.Module, str]:
    """The independent judge of ``dataset``'s translations and its zoo name."""
    from .. import load

    if dataset == "shapes":
        return _ShapeJudge(load("shapes/factors", device=device, progress=False),
                           len(_classes("shapes"))).eval(), "shapes/factors"
    return load(f"{dataset}/oracle", device=device, progress=False), f"{dataset}/oracle"


@torch.no_grad()
def translation_report(translator: nn.Module, classifier: nn.Module, judge: nn.Module | None,
                       x: Tensor, batch_size: int = 256) -> dict:
    """Translate every ``x`` to every class other than the classifier's prediction; the
    classifier's success rate, the judge's agreement and the mean L1 change."""
    dev = next(translator.parameters()).device
    k = translator.num_classes
    hits = agree = agree_hit = l1 = n = 0.0
    for i in range(0, len(x), max(1, batch_size // (k - 1))):
        xb = x[i:i + max(1, batch_size // (k - 1))].to(dev)
        pred = classifier(xb).argmax(1)
        targets = torch.arange(k, device=dev)[None].expand(len(xb), k)
        keep = targets != pred[:, None]
        rows = torch.arange(len(xb), device=dev)[:, None].expand(len(xb), k)[keep]
        t = targets[keep]
        out = translator(xb[rows], t)
        ok = classifier(out).argmax(1) == t
        hits += float(ok.sum())
        if judge is not None:
            j = judge(out).argmax(1) == t
            agree += float(j.sum())
            agree_hit += float((j & ok).sum())
        l1 += float((out - xb[rows]).abs().flatten(1).mean(1).sum())
        n += len(t)
    rep = {"success": round(hits / n, 4), "mean_l1": round(l1 / n, 4), "n_translations": int(n),
           "n_images": len(x)}
    if judge is not None:
        rep["judge_agreement"] = round(agree / n, 4)
        rep["judge_agreement_of_successes"] = round(agree_hit / max(1.0, hits), 4)
    return rep


def _gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, g: torch.Generator) -> Tensor:
    """Two-sided WGAN-GP term ``(||grad_x D(x_hat)||_2 - 1)^2`` (Gulrajani et al. 2017)."""
    a = torch.rand(real.shape[0], 1, 1, 1, generator=g).to(real.device)
    x_hat = (a * real + (1 - a) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def _other_class(y: Tensor, k: int, g: torch.Generator) -> Tensor:
    """A uniformly drawn class different from each ``y``."""
    return (y + torch.randint(1, k, y.shape, generator=g)) % k


def train_translator(model: Translator, cfg: dict, ctx: TrainContext, dataset: str) -> dict:
    """Train ``model`` against the frozen ``<dataset>/cnn`` (see the module docstring) with
    at most ``cfg["threads"]`` CPU threads (the caller's setting is restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(int(cfg.get("threads", 2)), before)))
    try:
        return _train(model, cfg, ctx, dataset)
    finally:
        torch.set_num_threads(before)


def _train(model: Translator, cfg: dict, ctx: TrainContext, dataset: str) -> dict:
    from .. import load

    dev = ctx.device
    if cfg.get("init_from"):  # the structured shapes translator starts from the CVAE's weights
        model.g.load_state_dict(load(str(cfg["init_from"]), device="cpu", progress=ctx.progress).state_dict())
        model.to(dev)
    clf = load(f"{dataset}/cnn", device=dev, progress=ctx.progress).eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    tr, te = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    x_tr, y_tr = take(cfg.get("n_train"), tr.x, tr.y, seed=ctx.seed)
    x_te = take(cfg.get("n_eval"), te.x, seed=ctx.seed + 1)
    n, k = len(x_tr), model.num_classes
    g = torch.Generator().manual_seed(ctx.seed)
    critic = PatchCritic(model.input_shape[0], int(cfg["critic_width"])).to(dev)
    scale = float(cfg["lr_scale"])
    betas = (float(cfg["beta1"]), float(cfg["beta2"]))
    opt_g = torch.optim.Adam(model.parameters(), lr=float(cfg["g_lr"]) * scale, betas=betas)
    opt_d = torch.optim.Adam(critic.parameters(), lr=float(cfg["d_lr"]) * scale, betas=betas)
    bs, steps = int(cfg["batch_size"]), int(cfg["steps"])
    w_gp, w_id, w_cls, w_rec = (float(cfg[key]) for key in ("gp_weight", "id_weight", "cls_weight",
                                                             "rec_weight"))
    log_every = max(1, steps // 10)
    history, start, elapsed = [], 0, 0.0
    order, pos = torch.randperm(n, generator=g), 0
    state = ctx.load_state()
    if state is not None and (int(state.get("steps", -1)) != steps or int(state["step"]) >= steps):
        state = None  # another budget: start over
    if state is not None:  # resume an interrupted run of the same budget
        fresh = [copy.deepcopy(m.state_dict()) for m in (model, critic)]
        try:
            model.load_state_dict(state["model"])
            critic.load_state_dict(state["critic"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
        except (KeyError, RuntimeError, ValueError) as e:  # another architecture: start over
            ctx.say(f"ignoring incompatible training state ({str(e)[:80]})")
            model.load_state_dict(fresh[0])
            critic.load_state_dict(fresh[1])
            state = None
    if state is not None:
        g.set_state(state["rng"])
        start, elapsed, pos = int(state["step"]), float(state["elapsed"]), int(state["pos"])
        order = state["order"]
        history = [[int(h[0]), *h[1:]] for h in state["history"].tolist()]
        ctx.say(f"resumed at step {start}/{steps} ({elapsed:.0f} s trained so far)")
    t0 = time.perf_counter() - elapsed
    last_save = time.perf_counter()
    model.train()
    critic.train()
    for step in range(start, steps):
        if pos + bs > n:
            order, pos = torch.randperm(n, generator=g), 0
        idx = order[pos:pos + bs]
        pos += bs
        real, y = x_tr[idx].to(dev), y_tr[idx]
        t = _other_class(y, k, g).to(dev)
        # ---- critic: Wasserstein estimate + gradient penalty
        fake = model(real, t)
        d_loss = critic(fake.detach()).mean() - critic(real).mean()
        gp = _gradient_penalty(critic, real, fake.detach(), g)
        opt_d.zero_grad(set_to_none=True)
        (d_loss + w_gp * gp).backward()
        opt_d.step()
        # ---- generator: fool the critic, stay close to x, be classified as t
        adv = -critic(fake).mean()
        ident = (fake - real).abs().mean()
        cls = F.cross_entropy(clf(fake), t)
        g_loss = adv + w_id * ident + w_cls * cls
        if w_rec > 0:
            g_loss = g_loss + w_rec * (model(fake, y.to(dev)) - real).abs().mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if (step + 1) % log_every == 0 or step == steps - 1:
            with torch.no_grad():
                acc = float((clf(fake).argmax(1) == t).float().mean())
            history.append([step + 1, round(float(d_loss.detach()), 4), round(float(ident.detach()), 4),
                            round(float(cls.detach()), 4), round(acc, 3), round(time.perf_counter() - t0, 1)])
            ctx.say(f"step {step + 1}/{steps} W {-history[-1][1]:.3f} L1 {history[-1][2]:.4f} "
                    f"CE {history[-1][3]:.4f} batch success {acc:.2f} ({time.perf_counter() - t0:.0f} s)")
        if time.perf_counter() - last_save > float(cfg.get("save_every_s", 120)) and step + 1 < steps:
            ctx.save_state({"model": model.state_dict(), "critic": critic.state_dict(),
                            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                            "rng": g.get_state(), "order": order, "pos": pos, "step": step + 1,
                            "steps": steps, "elapsed": time.perf_counter() - t0,
                            "history": torch.tensor(history, dtype=torch.float64).reshape(-1, 6)})
            last_save = time.perf_counter()
    seconds = time.perf_counter() - t0
    model.eval()
    critic.eval()
    judge, judge_name = judge_for(dataset, dev)
    rep = translation_report(model, clf, judge, x_te)
    with torch.no_grad():
        xs = x_te[torch.linspace(0, len(x_te) - 1, 8).long()].to(dev)
        grid = [xs] + [model(xs, torch.full((8,), c, device=dev)) for c in range(k)]
        from .generative import _sample_png

        ctx.artifacts["samples.png"] = _sample_png(torch.stack(grid, 1).flatten(0, 1), nrow=k + 1)
    ctx.say(f"held-out: success {rep['success']:.3f}, judge ({judge_name}) agrees "
            f"{rep.get('judge_agreement', float('nan')):.3f}, mean L1 {rep['mean_l1']:.4f}; "
            f"{steps} steps in {seconds:.0f} s")
    return {**rep, "judge": judge_name, "classifier": f"{dataset}/cnn", "steps": steps,
            "n_train": n, "effective_g_lr": float(cfg["g_lr"]) * scale,
            "effective_d_lr": float(cfg["d_lr"]) * scale, "train_seconds_total": round(seconds, 1),
            "history_columns": ["step", "critic_loss", "l1", "ce", "batch_success", "seconds"],
            "history": history}


def _check(gate: float, judge_gate: float):
    def check(m: dict) -> str | None:
        if m["success"] < gate:
            return f"translator success {m['success']:.3f} < {gate}"
        if m.get("judge_agreement", 1.0) < judge_gate:
            return f"judge agrees with only {m['judge_agreement']:.3f} of the translations"
        return None
    return check


def _reduced_check(m: dict) -> str | None:
    # chance is 1/(K-1) of translations landing on the requested class; an untrained
    # translator outputs a grey blur that the classifier gives to a single class
    return None if m["success"] >= 0.5 else f"reduced translator did not learn (success {m['success']})"


def _reduced_structured_check(m: dict) -> str | None:
    # the structured translator starts from shapes/cvae (success and judge ~1.0 before any
    # step): at the reduced budget the test is that the game does not break it
    if m["success"] < 0.9 or m.get("judge_agreement", 0.0) < 0.8:
        return (f"reduced structured translator lost its translations (success {m['success']}, "
                f"judge {m.get('judge_agreement')})")
    return None


def _translator_fingerprint(dataset: str, also: tuple[str, ...] = ()):
    """The data *and* the classifier the translator was trained against (and the model it
    starts from, ``also``): retraining any of them makes the translator stale."""
    def fp() -> str:
        from ..core import info

        parts = [_fingerprint(dataset)]
        for name in (f"{dataset}/cnn", *also):
            parts.append(f"{name}:{str(info(name).get('sha256', 'unbuilt'))[:16]}")
        return ":".join(parts)
    return fp


def _make(dataset: str):
    def make(cfg: dict) -> nn.Module:
        if cfg.get("structured"):
            from .attributes import attribute_spec

            return TemplateTranslator(attribute_spec(dataset), _classes(dataset), z_dim=int(cfg["z_dim"]),
                                      width=int(cfg["width"]), enc_hidden=cfg.get("enc_hidden"),
                                      dec_hidden=cfg.get("dec_hidden"))
        return Translator((1, 28, 28), _classes(dataset), width=int(cfg["width"]),
                          blocks=int(cfg["blocks"]), residual=bool(cfg.get("residual", True)),
                          upsample=str(cfg.get("upsample", "transposed")))
    return make


#: the authors' loss weights and optimiser; ``lr_scale`` is this project's deviation
AUTHORS = {"gp_weight": 10.0, "id_weight": 100.0, "rec_weight": 0.0, "cls_weight": 1000.0,
           "g_lr": 2e-5, "d_lr": 1e-4, "beta1": 0.9, "beta2": 0.999}

# Measured on MNIST (2 shared CPU cores, residual translator, batch 64):
# - the authors' learning rates (lr_scale 1): after 120 steps the batch success was 0.12
#   and the class term still 4.2 (it was 0.22 at lr_scale 10): too slow for a budget of a
#   few hundred steps, hence lr_scale 10 (generator 2e-4, critic 1e-3; the 1:5 ratio kept);
# - self-consistency weight 100 at lr_scale 10: the class term won and the mean L1 change
#   settled at 0.24 (a digit's ink covers ~0.13 of the image: the translations were
#   repainted images, not edits). The authors' flag note for this weight says "Current
#   Best = 1000"; the shipped recipes use that value.
_BASE = dict(AUTHORS, id_weight=1000.0, width=16, blocks=3, residual=True, upsample="nearest",
             critic_width=32,
             batch_size=64, n_train=None, n_eval=200, threads=1)

# shapes: the structured translator (models.translator.TemplateTranslator), initialised
# from shapes/cvae (same layout: z_dim 2, encoder 32, template decoder 128 / 256), then
# trained in the same game. Measured on the 48 test shapes of tests/test_ganmex.py before
# any GANMEX step (the CVAE's encoder and decoder with the class swapped): classifier
# success 1.00, judge 1.00, IG mass in the differing region 0.78 (zero baseline 0.42).
# It trains at the authors' learning rates (lr_scale 1): at the x10 the convolutional
# translators need, 300 steps of the self-consistency term dimmed the redrawn outlines
# (fainter ink is closer in L1 to an x of another shape): G(x, y) moved 0.060 from x
# instead of 0.033, the mass in the region fell to 0.67 instead of 0.77, and the share of
# translations closer to the true render of the target shape than x is to 0.72 instead
# of 0.91 (32 test shapes).
_SHAPES = {"structured": True, "init_from": "shapes/cvae", "z_dim": 2, "width": 32, "enc_hidden": 32,
           "dec_hidden": [128, 256]}
for _ds, _steps, _scale, _gate, _jgate, _extra, _version in (
        ("mnist", 600, 10.0, 0.9, 0.5, {}, 1),
        ("fashion", 600, 10.0, 0.9, 0.5, {}, 1),
        ("shapes", 300, 1.0, 0.9, 0.5, _SHAPES, 2)):
    register(Recipe(
        name=f"{_ds}/ganmex",
        version=_version,
        description=(f"GANMEX translator G(x, t) (StarGAN-style, scaled to 28x28) trained with the "
                     f"frozen {_ds}/cnn as the critic's class head" if not _extra else
                     f"GANMEX translator G(x, t) (structured: {_ds}/cvae's outline templates redrawn in "
                     f"place) trained with the frozen {_ds}/cnn as the critic's class head"),
        make_model=_make(_ds),
        train=(lambda ds: (lambda model, cfg, ctx: train_translator(model, cfg, ctx, ds)))(_ds),
        config=dict(_BASE, steps=_steps, lr_scale=_scale, **_extra),
        reduced=({"steps": 120, "n_train": 2000, "n_eval": 40, "width": 8, "blocks": 1} if not _extra
                 else {"steps": 40, "n_train": 2000, "n_eval": 40}),
        data_fingerprint=_translator_fingerprint(_ds, (_extra["init_from"],) if _extra else ()),
        check=_check(_gate, _jgate),
        reduced_check=_reduced_structured_check if _extra else _reduced_check,
        seed=0,
        kind="translator",
        requires=(f"{_ds}/cnn", *((_extra["init_from"],) if _extra else ())),
    ))

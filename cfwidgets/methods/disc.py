"""DISC: counterfactuals by deep model inversion, with nothing but the classifier.

Thiagarajan, Narayanaswamy, Rajan, Liang, Chaudhari & Spanias, "Designing Counterfactual
Generators using Deep Model Inversion", NeurIPS 2021 (arXiv 2109.14274).

The user has a trained classifier ``f`` and no training data and no generative model.
DISC inverts ``f`` itself: the image is rendered by a prior ``x' = render(theta)`` and
``theta`` is optimised so that ``f`` predicts the target while the statistics of the
features ``f`` computes on ``x'`` match those stored in its BatchNorm layers (the only
"data" a trained network carries). Terms of the objective, each a knob (0 / False turns
it off, which gives the paper's ablation: plain deep inversion, then each addition)::

    L = w_cls L_stage(f(x'), t)                        target class, per stage (see below)
      + a_bn  sum_l ||mu_l(x') - mu_l|| + ||var_l(x') - var_l||    BN feature statistics
      + a_tv  TV(x') + a_l2 mean(x'^2)                 image priors          [DeepInversion]
      + w_mc  L_mc(x', t)                              manifold consistency           [DISC]
      + w_prox mean |x' - x|                           proximity to the query

* **BatchNorm prior** (DeepInversion, Yin et al. CVPR 2020, the form of METHODS.md):
  forward hooks on every BatchNorm layer read its input; per image, the spatial mean and
  variance of each channel are compared with the layer's running statistics (L2 norms
  over channels, summed over layers). Deviation: DeepInversion uses the statistics of the
  whole synthesised batch; here they are per image so that the rows of a batch stay
  independent (a batch gives the same answers as one-by-one calls, like every method
  here). A ``BatchNorm1d`` layer has one value per channel and image (no spatial extent),
  so there each image's standardised features ``z = (h - mu) / sigma`` are asked to have
  mean 0 and mean square 1 across channels, the per-image analogue [our choice].
  The hooks are removed after every run, also on error or Stop.
* **Image priors** [paper]: ``prior="pixels"`` (the ablation: ``theta`` is the image),
  ``"dip"`` (deep image prior: a small conv encoder-decoder maps fixed noise to the image,
  its weights are ``theta``) or ``"inr"`` (implicit neural representation: a coordinate
  MLP on Fourier features of the pixel coordinates). Each query gets its own network
  (grouped convolutions / batched matrix products), so rows are independent. As METHODS.md
  prescribes for query-based counterfactuals, DIP and INR are first fitted to reproduce
  the query (``init_fit_steps`` of ``||render - x||^2``) [the paper's exact initialisation
  is unverified]. Sizes are scaled to 28x28 (the paper works at 64-128 px); the DIP uses
  per-image instance normalisation (without any normalisation it collapsed to a black
  image within the fit; a batch norm would couple the rows).
* **Manifold consistency** [paper: the term exists and uses the classifier's uncertainty,
  DUQ models per the supplement; its exact form is unverified, METHODS.md §5(b)]:
  ``L_mc = 1 - K_t(x')`` where ``K_t`` is the DUQ certainty of the target class (van
  Amersfoort et al., ICML 2020), from the classifier itself when it has a DUQ head
  (``certainty``; the zoo's ``mnist/duq``) or from the ``uncertainty`` model passed to the
  constructor. A DUQ certainty is high only near a class centroid in feature space, so
  unlike the softmax it cannot be raised by drifting off the data. **Stand-in** for a
  plain softmax classifier (no uncertainty head): the free-energy gap
  ``relu(E(x') - E(x))`` with ``E = -logsumexp f`` (Liu et al., NeurIPS 2020: low energy =
  in-distribution), i.e. the counterfactual may not be less "familiar" to ``f`` than the
  query. The result's ``meta["manifold_term"]`` says which was used.
* **Progressive optimisation** [paper names it; schedule unverified, the one of METHODS.md
  §5(c)]: with ``progressive=True`` the target probability is raised in stages
  ``stage_levels`` (e.g. 0.3, 0.6): stage ``s`` minimises ``(log p_t(x') - log q_s)^2``
  for ``stage_steps`` updates (two-sided: ``p_t`` is held at ``q_s`` while the priors and
  the proximity shape the change; a one-sided hinge let Adam's momentum carry ``p_t`` to
  0.7-0.98 in the first stage), and the DUQ manifold term asks only ``K_t >= q_s``
  (``relu(q_s - K_t)``); the last stage is the usual cross-entropy to ``t`` with
  ``1 - K_t``, until ``confidence``. Each stage's end is a frame of the
  trajectory (``meta["stage_steps"]``). For the INR, Fourier frequencies are unlocked
  coarse-to-fine over the stages.

Adam on ``theta``; after a DIP / INR fit the search starts a fresh Adam [our choice: the
fit's moment estimates made the first search steps ~3x too large, see ``_explain``].
Rows that reached ``confidence`` leave the computation (``ActiveRows``: the prior's
per-row parameters and their Adam state are sliced, the answers unchanged). Measured on 16
held-out digits, runner-up targets, 1 thread: 5.77 -> 5.10 s at ``confidence=0.9`` and
7.58 -> 5.87 s at 0.95; at the default 0.99 the rows of ``benchmarks/figures.py`` (40
digits) run the whole budget anyway (mean 518-527 of 530 steps: the priors and the
proximity hold p_t at 0.94-0.97), so nothing changes there. ``patience`` (default 0, the
paper's loop) is the shared plateau stop, in the final stage only; at 100 it ended no row
of those 40 (the final stage's loss keeps falling by more than 1 % per 100 steps). The
method never touches a data loader; the classifier (its weights,
BatchNorm statistics and mode) is left exactly as it was.

What the text search confirmed of the paper (abstract, introduction, figure 1 caption):
the three additions over DeepInversion (stronger priors, manifold consistency, progressive
optimisation), INR as the prior of figure 1, "progressive change in predictions" as the
user's hypothesis, and the decision-boundary and corruption-robustness claims; the method
section's formulas were not found, hence the [unverified] tags above.

Measured here (notebooks/05_disc.ipynb: 16 held-out digits, runner-up targets, judged by
mnist/oracle and mnist/ae): flip rate 1.00 for every ablation row; oracle agreement 0.62
(deep inversion on pixels) -> 0.88 (DISC, INR) / 0.94 (DISC, DIP), Wachter 0.12; IM1 1.03
-> 0.94 (INR) / 0.95 (DIP). About 1-1.5 s per counterfactual in batches of 16 on one shared
CPU core (benchmarks/bench_disc.py).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._active import ActiveRows
from ..config import knob
from ..objectives import class_loss, l1_distance, total_variation
from .base import CounterfactualMethod, Recorder, RunOutput
from .knobs import confidence_knob, patience_knob

__all__ = ["DISC", "bn_layers", "BNStatistics"]

_BN = nn.modules.batchnorm._BatchNorm


def bn_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``model`` that carry running statistics."""
    return [m for m in model.modules()
            if isinstance(m, _BN) and m.track_running_stats and m.running_mean is not None]


class BNStatistics:
    """Forward hooks on BatchNorm layers that turn each input into a per-image loss:
    the distance of its statistics to the layer's running statistics (see the module
    docstring). Use as a context manager: the hooks are removed on exit, whatever happens.
    ``loss()`` sums the layers' ``(B,)`` terms of the latest forward pass."""

    def __init__(self, layers: list[nn.Module], first_layer_weight: float = 1.0) -> None:
        self.layers = layers
        self.first_layer_weight = first_layer_weight
        self.handles: list[Any] = []
        self.terms: list[Tensor] = []
        self.active = True

    def _hook(self, index: int):
        def hook(module, inputs, output):
            if not self.active:
                return
            h = inputs[0].float()
            mu = module.running_mean.float()
            var = module.running_var.float()
            if h.ndim > 2:  # per image: spatial statistics of each channel
                flat = h.flatten(2)
                m = flat.mean(2)
                # E[h^2] - E[h]^2 rather than var(): the profile (benchmarks/bench_disc.py) had
                # aten::var as the largest single op of a pixel run (20 %); this form costs
                # half as much, forward and backward, and the activations are O(1) (no
                # cancellation to fear in float32)
                v = (flat.pow(2).mean(2) - m.pow(2)).clamp_min(0)
                term = (m - mu).norm(dim=1) + (v - var).norm(dim=1)
            else:  # BatchNorm1d: standardised features, mean 0 / mean square 1 over channels
                z = (h - mu) / (var + module.eps).sqrt()
                term = z.mean(1).abs() + (z.pow(2).mean(1) - 1).abs()
            w = self.first_layer_weight if index == 0 else 1.0
            self.terms.append(w * term)
        return hook

    def __enter__(self) -> BNStatistics:
        for i, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.terms.clear()

    def reset(self) -> None:
        self.terms = []

    def loss(self, batch: int, device) -> Tensor:
        if not self.terms:
            return torch.zeros(batch, device=device)
        return torch.stack(self.terms).sum(0)


# --------------------------------------------------------------------------- priors
# Each prior renders images from per-row parameters held *outside* it (name -> tensor of
# batch-first shape ``(L, ...)``), so that rows that finished can leave the computation
# (``ActiveRows`` slices the parameters and their Adam state); ``init_params`` gives the
# starting values for the whole batch, ``render`` / ``project`` work on whatever rows are
# passed in.
class _PixelPrior(nn.Module):
    """``theta`` is the image itself (clipped to [0, 1] after each step)."""

    def __init__(self, x: Tensor) -> None:
        super().__init__()
        self.register_buffer("x0", x.clone())

    def init_params(self) -> dict[str, Tensor]:
        return {"img": self.x0.clone()}

    def render(self, params: dict[str, Tensor]) -> Tensor:
        return params["img"]

    @torch.no_grad()
    def project(self, params: dict[str, Tensor], frozen: Tensor | None = None) -> None:
        params["img"].clamp_(0.0, 1.0)


def _grouped_conv_weight(groups: int, c_out: int, c_in: int, k: int, gen: torch.Generator) -> Tensor:
    # one draw repeated for every group: each query's network starts from the same weights,
    # so a row's result does not depend on its position in the batch (batch = one-by-one);
    # batch-first (B, c_out, c_in, k, k), viewed as a grouped convolution's weight
    bound = 1.0 / math.sqrt(c_in * k * k)
    w = (torch.rand(c_out, c_in, k, k, generator=gen) * 2 - 1) * bound * math.sqrt(3)
    return w.unsqueeze(0).repeat(groups, 1, 1, 1, 1)


class _DIPPrior(nn.Module):
    """Deep image prior (Ulyanov, Vedaldi & Lempitsky, CVPR 2018) scaled to 28x28: fixed
    noise -> conv -> strided conv (14x14) -> conv -> upsample -> conv (+ skip) -> sigmoid.
    One network per query: the L networks of the rows passed in run as one grouped
    convolution (groups = L), so their weights and gradients never mix. Normalisation is
    per image (instance norm): a batch norm would couple the rows."""

    def __init__(self, batch: int, shape: tuple[int, int, int], width: int, gen: torch.Generator,
                 noise_channels: int = 8) -> None:
        super().__init__()
        c, h, w = shape
        self.width, self.c = width, c
        noise = torch.rand(1, noise_channels, h, w, generator=gen) * 0.1  # the same for every row
        self.register_buffer("noise", noise)
        specs = {"enc1": (width, noise_channels), "down": (width, width), "mid": (width, width),
                 "up": (width, width), "out": (c, 2 * width)}
        self._init = {}
        for k, (co, ci) in specs.items():
            self._init[f"w_{k}"] = _grouped_conv_weight(batch, co, ci, 3, gen)
            self._init[f"b_{k}"] = torch.zeros(batch, co)

    def init_params(self) -> dict[str, Tensor]:
        dev = self.noise.device
        return {k: v.to(dev).clone() for k, v in self._init.items()}

    @staticmethod
    def _conv(params: dict[str, Tensor], name: str, x: Tensor, stride: int = 1) -> Tensor:
        w, b = params[f"w_{name}"], params[f"b_{name}"]
        n = w.shape[0]
        return F.conv2d(x, w.reshape(n * w.shape[1], *w.shape[2:]), b.reshape(-1), stride=stride,
                        padding=1, groups=n)

    def render(self, params: dict[str, Tensor]) -> Tensor:
        n = params["w_enc1"].shape[0]

        def act(h: Tensor) -> Tensor:
            # instance normalisation (each channel of each image over its pixels: rows stay
            # independent) keeps the activations alive, then LeakyReLU as in DIP
            return F.leaky_relu(F.instance_norm(h), 0.2)

        e1 = act(self._conv(params, "enc1", self.noise.repeat(1, n, 1, 1)))
        d = act(self._conv(params, "down", e1, stride=2))
        d = act(self._conv(params, "mid", d))
        u = F.interpolate(d, size=e1.shape[-2:], mode="bilinear", align_corners=False)
        u = act(self._conv(params, "up", u))
        # skip connection: concatenate per group (L groups of width channels each)
        cat = torch.cat([e1.view(n, self.width, *e1.shape[-2:]),
                         u.view(n, self.width, *u.shape[-2:])], 1).view(1, -1, *e1.shape[-2:])
        out = self._conv(params, "out", cat)
        return torch.sigmoid(out).view(n, self.c, *out.shape[-2:])

    def project(self, params: dict[str, Tensor], frozen: Tensor | None = None) -> None:
        pass


class _INRPrior(nn.Module):
    """Implicit neural representation: per query, an MLP from Fourier features
    ``[sin 2 pi B u, cos 2 pi B u]`` of the pixel coordinates ``u`` in [-1, 1]^2 to the
    pixel (Tancik et al., NeurIPS 2020, Gaussian ``B`` with scale ``fourier_scale``).
    Frequencies are sorted by norm; ``set_band(frac)`` lets only the first-layer weights of
    the lowest fraction change (coarse-to-fine over the progressive stages: the fitted query
    keeps every frequency, the *change* gains higher ones stage by stage; masking the
    features instead would blur the fitted query at the first stage): ``project`` puts the
    weights outside the band back to ``frozen`` (their values at the stage's start). The L
    MLPs of the rows passed in run as batched matmuls."""

    def __init__(self, batch: int, shape: tuple[int, int, int], width: int, n_freq: int, scale: float,
                 gen: torch.Generator) -> None:
        super().__init__()
        c, h, w = shape
        self.c, self.h, self.w = c, h, w
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        coords = torch.stack([xs, ys], -1).view(-1, 2)  # (HW, 2)
        freqs = torch.randn(2, n_freq, generator=gen) * scale
        freqs = freqs[:, freqs.norm(dim=0).argsort()]
        proj = 2 * math.pi * coords @ freqs  # (HW, F)
        self.register_buffer("feats", torch.cat([proj.sin(), proj.cos()], 1))  # (HW, 2F)
        self.register_buffer("mask", torch.ones(2 * n_freq, dtype=torch.bool))  # rows free to move
        self.n_freq = n_freq
        self.n_layers = 3
        dims = [2 * n_freq, width, width, c]
        self._init = {}
        for i, (di, do) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            bound = math.sqrt(6.0 / di) if i < len(dims) - 2 else math.sqrt(1.0 / di)
            w0 = (torch.rand(1, di, do, generator=gen) * 2 - 1) * bound / 2  # the same start per row
            self._init[f"w{i}"] = w0.repeat(batch, 1, 1)
            self._init[f"b{i}"] = torch.zeros(batch, 1, do)

    def init_params(self) -> dict[str, Tensor]:
        dev = self.feats.device
        return {k: v.to(dev).clone() for k, v in self._init.items()}

    def set_band(self, frac: float) -> bool:
        """Free the lowest ``frac`` of the frequencies; True when some stay held (the caller
        then keeps the first layer's current weights as ``frozen`` for ``project``)."""
        k = max(1, round(self.n_freq * min(1.0, max(0.0, frac))))
        m = torch.zeros(self.n_freq, dtype=torch.bool, device=self.mask.device)
        m[:k] = True
        self.mask.copy_(torch.cat([m, m]))
        return not bool(self.mask.all())

    def render(self, params: dict[str, Tensor]) -> Tensor:
        n = params["w0"].shape[0]
        h = self.feats.expand(n, -1, -1)
        for i in range(self.n_layers):
            h = torch.baddbmm(params[f"b{i}"], h, params[f"w{i}"])
            if i < self.n_layers - 1:
                h = F.relu(h)
        img = torch.sigmoid(h)  # (L, HW, C)
        return img.transpose(1, 2).reshape(n, self.c, self.h, self.w)

    @torch.no_grad()
    def project(self, params: dict[str, Tensor], frozen: Tensor | None = None) -> None:
        if frozen is not None:  # undo the step on the frequencies outside the band
            w = params["w0"]
            w.copy_(torch.where(self.mask[None, :, None], w, frozen))


# -------------------------------------------------------------------------- method
class DISC(CounterfactualMethod):
    """Deep Inversion for Synthesizing Counterfactuals (Thiagarajan et al., NeurIPS 2021).

    Needs only the classifier, which must have BatchNorm layers (their running statistics
    are the data prior). Its manifold-consistency term uses the classifier's DUQ certainty
    when it has one (``classifier.certainty``), else the ``uncertainty`` model given here
    (a DUQ model of the same data), else a documented stand-in (the free-energy gap).

    Examples::

        from cfwidgets import zoo, data
        from cfwidgets.methods import DISC
        disc = DISC.from_zoo("mnist")          # explains mnist/duq, its own uncertainty
        x = data.load_mnist("test").x[:4]
        res = disc.explain(x, target=3)
        res.success.float().mean(), res.meta["stage_steps"]
    """

    name = "disc"
    title = "DISC (deep inversion)"
    paper = ("Thiagarajan, Narayanaswamy, Rajan, Liang, Chaudhari & Spanias, Designing "
             "Counterfactual Generators using Deep Model Inversion, NeurIPS 2021, arXiv 2109.14274")

    @dataclass(frozen=True)
    class Config:
        prior: str = knob("inr", doc="Image parameterisation: pixels (the ablation), dip (deep image "
                          "prior: a small conv net from fixed noise) or inr (coordinate MLP on Fourier "
                          "features).", choices=("pixels", "dip", "inr"))
        steps: int = knob(300, 1, 5000, "Step budget of the final stage (cross-entropy to the target, "
                          "stopping at `confidence`).")
        progressive: bool = knob(True, doc="Progressive optimisation: raise the target probability in the "
                                 "stages `stage_levels` before the final stage.")
        stage_levels: tuple = knob((0.3, 0.6), 0.05, 0.95, "Target probabilities of the intermediate "
                                   "stages (increasing), used when `progressive` is on.")
        stage_steps: int = knob(40, 1, 2000, "Updates per intermediate stage.")
        init_fit_steps: int = knob(150, 0, 1000, "Updates fitting the DIP / INR to reproduce the query "
                                   "before the search (pixels start at the query and skip it).")
        lr: float = knob(0.01, 1e-4, 0.5, "Adam learning rate on the prior's parameters "
                         "(pixels use 5x this value).", log=True)
        w_cls: float = knob(1.0, 0.0, 10.0, "Weight of the target-class term.")
        a_bn: float = knob(0.05, 0.0, 1.0, "Weight of the BatchNorm feature-statistics prior (0 = off).")
        bn_first_layer: float = knob(2.0, 0.0, 10.0, "Extra weight of the first BatchNorm layer "
                                     "(DeepInversion up-weights it).")
        a_tv: float = knob(0.5, 0.0, 10.0, "Weight of the total-variation image prior (squared-L2 TV, "
                           "mean over pixels; 0 = off).")
        a_l2: float = knob(0.0, 0.0, 1.0, "Weight of the l2 image prior mean(x'^2) (0 = off).")
        w_mc: float = knob(1.0, 0.0, 10.0, "Weight of the manifold-consistency term (DUQ certainty of the "
                           "target, or the energy stand-in; 0 = off).")
        w_prox: float = knob(1.0, 0.0, 10.0, "Weight of the L1 proximity to the query (per-pixel mean).")
        dip_width: int = knob(16, 4, 64, "Channels of the DIP network.")
        inr_width: int = knob(64, 8, 256, "Hidden width of the INR's MLP.")
        inr_frequencies: int = knob(64, 4, 256, "Number of Fourier frequencies of the INR.")
        fourier_scale: float = knob(4.0, 1.0, 20.0, "Scale of the INR's Gaussian Fourier frequencies.")
        confidence: float = confidence_knob()
        patience: int = patience_knob(0)
        record_every: int = knob(0, 0, 1000, "Keep a trajectory snapshot every this many steps (0 = about "
                                 "25 snapshots); every stage's end is a snapshot too.")

    @classmethod
    def split_budget(cls, budget: int) -> dict[str, int]:
        """Knobs giving the default run (INR prior, progressive) ``budget`` updates in all:
        the query fit, the intermediate stages and the final stage keep their default
        shares (150 : 40 : 40 : 300). The comparison dashboard gives every method the same
        budget through this."""
        cfg = cls.Config()
        n_stages = len(cfg.stage_levels)
        total = cfg.init_fit_steps + n_stages * cfg.stage_steps + cfg.steps
        fit = int(budget * cfg.init_fit_steps / total)
        stage = max(1, int(budget * cfg.stage_steps / total))
        return {"init_fit_steps": fit, "stage_steps": stage,
                "steps": max(1, budget - fit - n_stages * stage)}

    def __init__(self, classifier, /, uncertainty: nn.Module | None = None, *, device=None) -> None:
        if uncertainty is not None and not callable(getattr(uncertainty, "certainty", None)):
            raise TypeError(
                f"uncertainty must be a DUQ-style model with a certainty(x) -> (B, K) method in "
                f"(0, 1] (e.g. zoo.load('mnist/duq')), got {type(uncertainty).__name__}.")
        comps = {} if uncertainty is None else {"uncertainty": uncertainty}
        super().__init__(classifier, device=device, **comps)
        if not isinstance(classifier, nn.Module) or not bn_layers(classifier):
            raise ValueError(
                f"DISC inverts the classifier using the running statistics of its BatchNorm layers, "
                f"and {type(classifier).__name__} has none (with running statistics): without them "
                f"only the image priors remain and the result is plain image-space optimisation "
                f"(Deep Dream). Use a classifier with BatchNorm (e.g. zoo.load('mnist/duq') or "
                f"'mnist/cnn'), or the Wachter pixel baseline (cfwidgets.methods.Wachter) for a "
                f"model without it.")
        if self._certainty_model() is None:
            warnings.warn(
                f"DISC: {type(classifier).__name__} has no DUQ certainty head (certainty(x)), so the "
                f"manifold-consistency term is the documented stand-in, the free-energy gap "
                f"relu(E(x') - E(x)); for the paper's term explain a DUQ classifier "
                f"(zoo.load('mnist/duq')) or pass uncertainty=zoo.load('mnist/duq').",
                UserWarning, stacklevel=2)

    @classmethod
    def from_zoo(cls, dataset: str = "mnist", *, device="auto", **kwargs) -> DISC:
        from .. import zoo

        if dataset == "mnist":
            return cls(zoo.load("mnist/duq", device=device), **kwargs)
        # the zoo has a DUQ classifier for MNIST only: elsewhere the BN CNN with the energy
        # stand-in for the manifold term (DISC's __init__ warns)
        return cls(zoo.load(f"{dataset}/cnn", device=device), **kwargs)

    # ------------------------------------------------------------------ pieces
    def _certainty_model(self) -> nn.Module | None:
        unc = self.components.get("uncertainty")
        if unc is not None:
            return unc
        if callable(getattr(self.classifier, "certainty", None)):
            return self.classifier
        return None

    def _manifold_term(self, x_cf: Tensor, logits: Tensor, target: Tensor, energy0: Tensor,
                       level: float = 1.0, run: nn.Module | None = None) -> Tensor:
        """``1 - K_t(x')`` (DUQ), or ``relu(level - K_t)`` in a progressive stage of target
        level ``level`` (certain of the target at least to the stage's level, no push
        beyond it: our choice, so that the stages stay progressive); the energy stand-in
        for a classifier without a certainty head. ``run``: the copy of the certainty model
        the loop runs (``_loop_model``), default the model itself."""
        model = self._certainty_model()
        if model is self.classifier and hasattr(model, "log_certainty"):
            # the classifier's logits are log K: no second forward pass
            k_t = logits.gather(1, target[:, None])[:, 0].exp()
        elif model is not None:
            k_t = (model if run is None else run).certainty(x_cf).gather(1, target[:, None])[:, 0]
        else:
            energy = -torch.logsumexp(logits, 1)
            return F.relu(energy - energy0)
        return F.relu(level - k_t)

    def _make_prior(self, x: Tensor, cfg: Any, gen: torch.Generator) -> nn.Module:
        b, shape = x.shape[0], tuple(x.shape[1:])
        if cfg.prior == "pixels":
            prior = _PixelPrior(x)
        elif cfg.prior == "dip":
            prior = _DIPPrior(b, shape, cfg.dip_width, gen)
        else:
            prior = _INRPrior(b, shape, cfg.inr_width, cfg.inr_frequencies, cfg.fourier_scale, gen)
        return prior.to(x.device)

    @contextlib.contextmanager
    def _hooks(self, cfg: Any, model: nn.Module | None = None) -> Iterator[BNStatistics]:
        """The BN-statistics hooks on ``model`` (default the classifier): the loop's copy
        keeps the classifier's BatchNorm layers themselves (``fold=False``)."""
        model = self.classifier if model is None else model
        stats = BNStatistics(bn_layers(model) if cfg.a_bn > 0 else [], cfg.bn_first_layer)
        with stats:
            yield stats

    # ------------------------------------------------------------------- loop
    def _explain(self, x: Tensor, target: Tensor, cfg: Any, *, probs, callback, generator) -> RunOutput:
        levels = tuple(float(q) for q in cfg.stage_levels) if cfg.progressive else ()
        if any(b <= a for a, b in zip(levels[:-1], levels[1:], strict=False)):
            raise ValueError(f"stage_levels must increase, got {levels}; e.g. (0.3, 0.6).")
        prior = self._make_prior(x, cfg, generator)
        fit = 0 if cfg.prior == "pixels" else int(cfg.init_fit_steps)
        # (name, steps, level): level None = plain cross-entropy until `confidence`
        stages = ([("fit", fit, None)] if fit else []) + [
            (f"stage {i + 1} (p_t {q:g})", int(cfg.stage_steps), q) for i, q in enumerate(levels)
        ] + [("final", int(cfg.steps), None)]
        total = sum(s for _, s, _ in stages)
        rec = Recorder(target, total, cfg.confidence, cfg.record_every or None, callback,
                       patience=cfg.patience)
        lr = cfg.lr * (5 if cfg.prior == "pixels" else 1)
        params = {k: v.requires_grad_(True) for k, v in prior.init_params().items()}
        with torch.no_grad():
            energy0 = -torch.logsumexp(self.classifier(x), 1)
        # rows that finished leave the computation (ActiveRows slices the prior's per-row
        # parameters and their Adam state); the Recorder still sees the full batch
        rows = ActiveRows(torch.optim.Adam(list(params.values()), lr=lr), params,
                          {"x": x, "target": target, "energy0": energy0})
        stage_ends: list[int] = []
        stage_frames: list[Tensor] = []
        stage_names: list[str] = []
        step = 0
        ended = False
        search_stages = [s for s in stages if s[0] != "fit"]
        # the models as the loop runs them (cfwidgets._fused): channels-last convolutions,
        # and BatchNorm folded except in the classifier while the BN-statistics term
        # (a_bn > 0) hooks its BatchNorm layers, which the copy then shares with it
        f = self._loop_model(self.classifier, fold=not cfg.a_bn > 0)
        unc = self._certainty_model()
        unc_run = None if unc is None or unc is self.classifier else self._loop_model(unc)
        with self._hooks(cfg, f) as stats:
            for name, n_steps, level in stages:
                is_fit = name == "fit"
                frozen_full = None  # the INR's first-layer weights held outside the band
                if isinstance(prior, _INRPrior):
                    if is_fit or not levels:
                        prior.set_band(1.0)
                    else:  # coarse-to-fine: stage i of n unlocks (i+1)/n of the frequencies
                        i = search_stages.index((name, n_steps, level))
                        if prior.set_band((i + 1) / len(search_stages)):
                            frozen_full = rows.full_param("w0").clone()
                # the plateau stop (patience) only in the final stage: the fit and the
                # intermediate stages have fixed lengths and losses of their own
                rec.restart_plateau(active=level is None and not is_fit)
                if is_fit:  # the fit needs neither the BN hooks nor the classifier's gradient
                    stats.active = False
                for _ in range(n_steps):
                    rows.update(rec)
                    xa, ta = rows.consts["x"], rows.consts["target"]
                    x_cf = prior.render(rows.params)
                    stats.reset()
                    if is_fit:  # reproduce the query; the classifier is not consulted
                        fit_err = (x_cf - xa).flatten(1).pow(2).mean(1)
                        terms = {"loss": fit_err, "fit": fit_err}
                        loss, p_full = fit_err, probs
                    else:
                        logits = f(x_cf)
                        p = logits.softmax(-1)
                        if level is None:
                            cls_term = class_loss(logits, ta, "ce")
                        else:
                            # two-sided: hold p_t at the stage's level (METHODS.md 5(c))
                            logp_t = logits.log_softmax(-1).gather(1, ta[:, None])[:, 0]
                            cls_term = (logp_t - math.log(level)).pow(2)
                        bn = stats.loss(x_cf.shape[0], x.device)
                        tv = total_variation(x_cf, 2)
                        l2 = x_cf.flatten(1).pow(2).mean(1)
                        mc = self._manifold_term(x_cf, logits, ta, rows.consts["energy0"],
                                                 1.0 if level is None else level, unc_run)
                        prox = l1_distance(x_cf, xa)
                        loss = (cfg.w_cls * cls_term + cfg.a_bn * bn + cfg.a_tv * tv + cfg.a_l2 * l2
                                + cfg.w_mc * mc + cfg.w_prox * prox)
                        terms = {"loss": loss, "class": cls_term, "bn": bn, "tv": tv, "l2": l2,
                                 "manifold": mc, "l1": prox}
                        p_full = rows.full("probs", p)
                    if rec.observe(step, rows.full("x_cf", x_cf), p_full, rows.full_all(terms),
                                   extra={"stage": name}):
                        ended = True
                        break
                    opt = rows.optimizer
                    opt.zero_grad(set_to_none=True)
                    # per-row losses on per-row parameters: the sum gives each row its gradient
                    loss.sum().backward()
                    opt.step()
                    prior.project(rows.params, None if frozen_full is None else rows.take(frozen_full))
                    step += 1
                stats.active = cfg.a_bn > 0
                with torch.no_grad():  # what a viewer sees: rows that finished stay frozen
                    now = rows.full("x_cf", prior.render(rows.params))
                    frame = rec._view(now) if rec.x_final is not None else now.clone()
                stage_ends.append(step)
                stage_frames.append(frame)
                stage_names.append(name)
                if ended:
                    break
                if is_fit:
                    # A fresh Adam for the search. Carried over from the fit, Adam's second
                    # moments are tiny (the fit's gradients were), so the first search steps
                    # moved every INR weight by ~3x lr and the stage-1 frame became a grey
                    # texture. Measured on 48 held-out digits (runner-up targets): stage-1
                    # frames correlating < 0.5 with the query 12.5 % -> 2.1 % (median
                    # correlation 0.72 -> 0.83); oracle agreement 0.875 -> 0.854, IM1 0.938 ->
                    # 0.954, L1 0.092 -> 0.085. A fresh Adam at 0.3x lr kept every stage-1
                    # frame near the query but dropped oracle agreement to 0.75.
                    rows.optimizer = torch.optim.Adam(list(rows.params.values()), lr=lr)
            with torch.no_grad():
                stats.active = False
                x_act = prior.render(rows.params).detach()
                x_last = rows.full("x_cf", x_act)
                probs_last = rows.full("probs", f(x_act).softmax(-1))
        x_out, p_out = rec.finish(x_last, probs_last)
        # every stage's end is a frame of the path (the widget's slider steps through them)
        for at, frame in zip(stage_ends, stage_frames, strict=True):
            if at not in rec.trajectory_steps:
                pos = sum(1 for s_ in rec.trajectory_steps if s_ < at)
                rec.trajectory.insert(pos, frame)
                rec.trajectory_steps.insert(pos, at)
        manifold = ("duq (classifier)" if unc is self.classifier else
                    "duq (uncertainty model)" if unc is not None else "energy stand-in")
        return rec.output(x_out, p_out, stage_steps=stage_ends, stage_names=stage_names,
                          stage_frames=torch.stack(stage_frames, 0), manifold_term=manifold,
                          prior=cfg.prior)

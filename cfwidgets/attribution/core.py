"""One-vs-one attributions with a choice of baseline, computed by Captum.

``attribute(classifier, x, target, baseline=..., method=...)`` explains the logit
difference ``f_c(x) - f_t(x)`` between the source class ``c`` (default: the predicted
class) and the target ``t``, as the GANMEX paper does (Shih, Tien & Karnin, ICML 2021,
arXiv 2011.06015): positive attribution = the pixel argues for ``c`` over ``t``. For the
path methods the completeness property then reads ``sum A = (f_c - f_t)(x) - (f_c - f_t)(b)``.

Attribution methods are Captum's implementations (``pip install cfwidgets[attribution]``):

======================  =======================================================
method                  Captum class and what the baseline does there
======================  =======================================================
integrated_gradients    ``IntegratedGradients``: the path's start
deeplift                ``DeepLift`` (rescale rule): the reference input
occlusion               ``Occlusion``: the values a sliding window is replaced by
gradient_shap           ``GradientShap``: the reference distribution (EG-style
                        random points on the paths; ``n_samples``)
feature_ablation        ``FeatureAblation``: per-pixel replacement values
======================  =======================================================

With several references per row (the ``eg`` baseline) every method but ``gradient_shap``
is run once per reference and averaged (for DeepLIFT that is DeepLiftShap).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ..methods.base import check_images, prepared
from .baselines import make_baseline

__all__ = ["attribute", "ATTRIBUTION_METHODS", "LogitDifference", "source_and_target"]

ATTRIBUTION_METHODS = ("integrated_gradients", "deeplift", "occlusion", "gradient_shap",
                       "feature_ablation")


class LogitDifference(nn.Module):
    """``x, c, t -> f_c(x) - f_t(x)`` per row (``c``, ``t`` are ``(B,)`` class indices, passed
    as Captum's additional forward arguments so they follow its internal batching)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor, source: Tensor, target: Tensor) -> Tensor:
        logits = self.classifier(x)
        return logits.gather(1, source[:, None])[:, 0] - logits.gather(1, target[:, None])[:, 0]


def _captum():
    try:
        import captum.attr as ca
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise ImportError("cfwidgets.attribution needs Captum: pip install 'cfwidgets[attribution]' "
                          "(or pip install captum).") from e
    return ca


def _classes(value: Any, batch: int, k: int, what: str, dev) -> Tensor:
    t = torch.as_tensor(value).long()
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{what} must be one class or one per row, shape ({batch},); got {tuple(t.shape)}.")
    if bool(((t < 0) | (t >= k)).any()):
        raise ValueError(f"{what} {t.tolist()} out of range: the classifier has {k} classes.")
    return t.to(dev)


def source_and_target(classifier: nn.Module, x: Tensor, target: Any, source: Any = None
                      ) -> tuple[Tensor, Tensor]:
    """Checked ``(source, target)`` class tensors; ``source`` defaults to the prediction."""
    with torch.no_grad():
        logits = classifier(x)
    k = logits.shape[1]
    t = _classes(target, x.shape[0], k, "target", x.device)
    c = logits.argmax(1) if source is None else _classes(source, x.shape[0], k, "source", x.device)
    if bool((c == t).any()):
        rows = (c == t).nonzero()[:, 0].tolist()
        raise ValueError(f"target equals the source class for row(s) {rows[:10]}: a one-vs-one "
                         f"attribution needs two different classes.")
    return c, t


def _no_inplace(model: nn.Module) -> nn.Module:
    """DeepLIFT hooks the non-linearities; in-place ReLUs break its hooks, so it runs on a
    copy whose activations are out of place (the user's model is never modified)."""
    if not any(getattr(m, "inplace", False) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for m in model.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    return model


def _one(method: str, model: nn.Module, x: Tensor, b: Tensor, args: tuple, *, n_steps: int,
         window: int, stride: int, internal_batch_size: int | None) -> Tensor:
    ca = _captum()
    if method == "integrated_gradients":
        return ca.IntegratedGradients(model).attribute(
            x, baselines=b, additional_forward_args=args, n_steps=n_steps,
            internal_batch_size=internal_batch_size)
    if method == "deeplift":
        with warnings.catch_warnings():
            # Captum's notes that it set requires_grad itself and hooks the non-linearities
            # (on the out-of-place copy, see _no_inplace): nothing for the user to do
            warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require")
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            return ca.DeepLift(model).attribute(x, baselines=b, additional_forward_args=args)
    if method == "occlusion":
        c = x.shape[1]
        return ca.Occlusion(model).attribute(
            x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride), baselines=b,
            additional_forward_args=args, perturbations_per_eval=16)
    if method == "feature_ablation":
        return ca.FeatureAblation(model).attribute(x, baselines=b, additional_forward_args=args,
                                                   perturbations_per_eval=64)
    raise AssertionError(method)


def attribute(classifier: nn.Module, x: Tensor, target: Any, baseline: str | Tensor = "ganmex",
              method: str = "integrated_gradients", translator: Any = None, *, source: Any = None,
              data: Any = None, n_steps: int = 64, window: int = 4, stride: int = 2,
              n_samples: int = 32, blur_sigma: float = 4.0, eg_samples: int = 8,
              generator: torch.Generator | int | None = None,
              internal_batch_size: int | None = 512, return_baseline: bool = False):
    """Attribution of ``f_c - f_t`` at ``x`` relative to ``baseline``; a tensor of ``x``'s
    shape (with ``return_baseline=True``, the pair ``(attribution, baseline)`` with the
    baseline as ``(B, R, C, H, W)``).

    Args:
        classifier: logits model ``(B, C, H, W) -> (B, K)``.
        x: ``(B, C, H, W)`` images in [0, 1].
        target: the class ``t`` to contrast with (one for all rows or one per row).
        baseline: a name in :data:`~cfwidgets.attribution.baselines.BASELINES` or a tensor.
        method: one of :data:`ATTRIBUTION_METHODS`.
        translator: a :class:`~cfwidgets.methods.ganmex.GANMEX` method (or its translator
            module); needed only for ``baseline="ganmex"``.
        source: the class ``c`` (default: the classifier's prediction).
        data: training images and labels for ``train_mean`` / ``mdts`` / ``eg`` (a zoo
            classifier finds its own).
        n_steps: Integrated Gradients' steps; ``window``/``stride``: occlusion patch (px);
            ``n_samples``: GradientShap samples; ``blur_sigma``, ``eg_samples``: baselines.
        generator: seed or CPU generator for the random baselines and GradientShap.

    Examples::

        from cfwidgets import zoo, data
        from cfwidgets.attribution import attribute
        from cfwidgets.methods.ganmex import GANMEX
        g = GANMEX.from_zoo("mnist")
        x = data.load_mnist("test").x[:4]
        a = attribute(g.classifier, x, target=8, baseline="ganmex", translator=g)
    """
    if method not in ATTRIBUTION_METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {list(ATTRIBUTION_METHODS)}.")
    for name, v, lo in (("n_steps", n_steps, 2), ("window", window, 1), ("stride", stride, 1),
                        ("n_samples", n_samples, 1)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}.")
    x = check_images(x, getattr(classifier, "input_shape", None))
    dev = next((p.device for p in classifier.parameters()), torch.device("cpu")) \
        if isinstance(classifier, nn.Module) else torch.device("cpu")
    x = x.to(dev)
    from .._utils import make_generator

    gen, _ = make_generator(generator)
    modules = [classifier] if isinstance(classifier, nn.Module) else []
    with prepared(modules):
        c, t = source_and_target(classifier, x, target, source)
        b = make_baseline(baseline, classifier, x, t, translator=translator, data=data,
                          generator=gen, blur_sigma=blur_sigma, eg_samples=eg_samples)
        model = LogitDifference(_no_inplace(classifier) if method == "deeplift" else classifier)
        args = (c, t)
        if method == "gradient_shap":
            ca = _captum()
            refs = b.flatten(0, 1) if b.shape[1] == 1 else None
            # GradientShap draws one reference per sample from a shared distribution; to keep
            # each row's own references (one-vs-one), run it row by row
            outs = []
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                for i in range(x.shape[0]):
                    ref = b[i] if refs is None else refs[i:i + 1]
                    outs.append(ca.GradientShap(model).attribute(
                        x[i:i + 1], baselines=ref, n_samples=n_samples, stdevs=0.0,
                        additional_forward_args=(c[i:i + 1], t[i:i + 1])))
            attr = torch.cat(outs)
        else:
            attr = torch.stack([
                _one(method, model, x, b[:, r].contiguous(), args, n_steps=n_steps, window=window,
                     stride=stride, internal_batch_size=internal_batch_size)
                for r in range(b.shape[1])]).mean(0)
    attr = attr.detach()
    return (attr, b) if return_baseline else attr

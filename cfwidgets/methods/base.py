"""The base class every counterfactual method derives from.

It owns what all methods share and no paper's algorithm: input checking with errors that
say what to do, eval-mode and gradient hygiene around the user's models (restored
afterwards), seeds, devices, timing, and packing a :class:`CounterfactualResult`.
A method implements ``_explain`` (the paper's loop) and usually ``from_zoo``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .._fused import FusedCache
from .._utils import detached, make_generator, module_device, resolve_device, sync
from ..config import merge, to_dict
from ..protocols import StepCallback, StepState
from ..result import CounterfactualResult

__all__ = ["CounterfactualMethod", "RunOutput", "Recorder", "check_callback", "check_images", "prepared"]


@dataclass
class RunOutput:
    """What ``_explain`` hands back to the base class (tensors may be on the device)."""

    x_cf: Any
    probs_cf: Tensor
    trajectory: list = field(default_factory=list)  # list of (B, ...) snapshots
    trajectory_steps: list[int] = field(default_factory=list)
    losses: dict[str, list] = field(default_factory=dict)  # name -> list of 0-d tensors
    steps: Tensor | None = None
    stopped: bool = False
    meta: dict = field(default_factory=dict)
    #: (B,) bool: rows whose loss or output turned NaN/inf (stopped at their last finite
    #: iterate by the Recorder); ``None`` when the method does not track it
    nonfinite: Tensor | None = None


class CounterfactualMethod(ABC):
    """Base class: models go in the constructor, knobs go in :meth:`explain`.

    Subclasses set ``name``, ``Config`` (a frozen dataclass of :func:`~cfwidgets.config.knob`
    fields), ``paper`` and implement ``_explain``.
    """

    name: ClassVar[str] = "base"
    title: ClassVar[str] = ""  # human-readable name for widgets and reports
    paper: ClassVar[str] = ""  # citation (title, venue, arXiv id)
    Config: ClassVar[type]
    modality: ClassVar[str] = "image"
    #: whether asking for the class the model already predicts is allowed
    allow_same_class: ClassVar[bool] = False
    #: knob values :func:`cfwidgets.batch.explain_dataset` uses unless its caller sets them:
    #: work for figures that a data-set run does not store (e.g. a density along the path)
    dataset_knobs: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, classifier: nn.Module, /, *, device=None, **components: Any) -> None:
        if not callable(classifier):
            raise TypeError(
                f"classifier must be a callable nn.Module returning logits, got "
                f"{type(classifier).__name__}."
            )
        self.classifier = classifier
        self.components: dict[str, Any] = dict(components)
        self.class_names: list[str] | None = getattr(classifier, "class_names", None)
        if device is not None:
            self.to(device)
        self._check_devices()
        self._check_compatible()

    def __getstate__(self) -> dict:
        # the loop copies (weakly keyed, so not picklable) are remade on first use: a
        # method pickled for a Ray task or a worker process travels without them
        state = self.__dict__.copy()
        state.pop("_fused_cache", None)
        return state

    def _loop_model(self, model, *, fold: bool = True):
        """What a step loop should run for ``model`` (the classifier or a component): an
        eval-mode copy with BatchNorm folded (unless ``fold=False``) and channels-last
        convolutions when that applies (:mod:`cfwidgets._fused`; the same function up to
        float rounding, about 1e-6 on the zoo's models), else ``model`` itself. Call it
        inside :func:`prepared` (the models are in eval mode there); the copy is kept until
        the model's weights change."""
        cache = self.__dict__.get("_fused_cache")
        if cache is None:
            cache = self.__dict__.setdefault("_fused_cache", FusedCache())
        return cache.get(model, fold=fold)

    # ------------------------------------------------------------------ devices
    def modules(self) -> dict[str, nn.Module]:
        """The torch modules this method uses (classifier first)."""
        out = {}
        if isinstance(self.classifier, nn.Module):
            out["classifier"] = self.classifier
        for k, v in self.components.items():
            if isinstance(v, nn.Module):
                out[k] = v
        return out

    @property
    def device(self) -> torch.device:
        for m in self.modules().values():
            return module_device(m)
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> CounterfactualMethod:
        """Move every model of this method to ``device`` (``"auto"`` picks CUDA if present)."""
        dev = resolve_device(device)
        for m in self.modules().values():
            m.to(dev)
        return self

    def _check_devices(self) -> None:
        devs = {name: module_device(m) for name, m in self.modules().items()}
        on_meta = [k for k, v in devs.items() if v.type == "meta"]
        if on_meta:
            raise ValueError(
                f"{', '.join(on_meta)} of {type(self).__name__} is on the 'meta' device (shapes "
                f"only, no weights: e.g. built under `with torch.device('meta')` or by "
                f"from_pretrained(low_cpu_mem_usage=...)); materialise it first, e.g. "
                f"model.to_empty(device='cpu') then model.load_state_dict(...).")
        if len(set(devs.values())) > 1:
            listing = ", ".join(f"{k} on {v}" for k, v in devs.items())
            raise ValueError(
                f"the models of {type(self).__name__} are on different devices ({listing}); "
                f"move them together, e.g. {type(self).__name__}(..., device='cpu') or "
                f"method.to('cuda')."
            )

    def _check_compatible(self) -> None:
        """Refuse a generator (or any other model of the method) made for other data than
        the classifier: another image shape or channel count, another class list, or
        another data set according to the zoo metadata (``zoo_meta``)."""
        clf = self.classifier
        cls_shape = getattr(clf, "input_shape", None)
        cls_tag = _dataset_tag(clf)
        cls_classes = _class_count(clf)
        cls_names = getattr(clf, "class_names", None)
        for name, comp in self.components.items():
            what = f"the {name} ({_describe(comp)}) and the classifier ({_describe(clf)})"
            shape = getattr(comp, "input_shape", None)
            if shape is not None and cls_shape is not None and tuple(shape) != tuple(cls_shape):
                ch = (f" ({shape[0]} vs {cls_shape[0]} channels)"
                      if len(shape) == len(cls_shape) == 3 and shape[0] != cls_shape[0] else "")
                raise ValueError(
                    f"{what} do not fit: the {name} works on images of shape {tuple(shape)} but the "
                    f"classifier expects {tuple(cls_shape)} (C, H, W){ch}; use a {name} trained on "
                    f"the classifier's data.")
            tag = _dataset_tag(comp)
            if tag is not None and cls_tag is not None and tag.split("-")[0] != cls_tag.split("-")[0]:
                raise ValueError(
                    f"{what} come from different data sets ({tag!r} vs {cls_tag!r}): the "
                    f"counterfactuals would edit attributes of other data. Use the {name} of the "
                    f"classifier's data set (e.g. {type(self).__name__}.from_zoo({cls_tag!r})); if "
                    f"the pairing is intended, set {name}.zoo_meta['dataset'] = {cls_tag!r}.")
            n = _class_count(comp)
            if n is not None and cls_classes is not None and n != cls_classes:
                raise ValueError(
                    f"{what} disagree on the classes: the {name} declares {n}, the classifier "
                    f"{cls_classes}; use a {name} conditioned on the classifier's classes.")
            cats = _class_like_categories(comp, cls_names)
            if cats is not None:
                attr, values = cats
                raise ValueError(
                    f"{what} disagree on the classes: the {name}'s attribute {attr!r} has the "
                    f"categories {list(values)}, the classifier the classes {list(cls_names)}; use a "
                    f"{name} conditioned on the classifier's classes.")

    # ------------------------------------------------------------- construction
    @classmethod
    def from_zoo(cls, dataset: str = "mnist", *, device="auto", **kwargs) -> CounterfactualMethod:
        """Build the method with the project's default zoo models for ``dataset``."""
        raise NotImplementedError(f"{cls.__name__} has no default zoo models")

    # ------------------------------------------------------------------ explain
    def explain(
        self,
        x: Tensor,
        target: int | Sequence[int] | Tensor | str,
        config: Any = None,
        *,
        callback: StepCallback | None = None,
        generator: torch.Generator | int | None = None,
        **overrides: Any,
    ) -> CounterfactualResult:
        """Counterfactuals of ``x`` for class ``target``.

        Args:
            x: a batch of queries, ``(B, C, H, W)`` floats in [0, 1].
            target: one class for the whole batch, or ``(B,)`` classes (ints or names).
            config: a ``self.Config`` (or dict); keyword ``overrides`` replace its fields.
            callback: ``callback(step, StepState) -> bool``; ``True`` stops the run (the
                partial result is returned with ``stopped=True``).
            generator: a CPU ``torch.Generator`` or an int seed (default 0): same seed,
                same result.

        Returns:
            a :class:`~cfwidgets.result.CounterfactualResult` on the CPU. Rows whose loss or
            output turned NaN/inf are stopped at their last finite iterate and flagged in
            ``meta["nonfinite"]`` (with a warning).

        Batches: rows are optimised independently (per-row losses, element-wise Adam), so a
        batch is mathematically the same as one-by-one calls, and it predicts the same class
        for every row. It is not bit-identical: a model's batched and single forward passes
        differ by float noise (measured below 1e-4: ~1e-6 for the zoo's CNN and CVAE,
        ~3e-5 for the flow's encoder), and Adam's first steps, about ``lr`` whatever the
        gradient's size, can turn that into a visibly different, equally valid path for a
        few rows (issue 18 saw pixel differences up to 0.16 for AIP and 1.0 for
        Diffeomorphic between a batch of 8 and 8 single calls). For bit-identical results
        across batch sizes, call one row at a time.
        """
        cfg = merge(self.Config, config, overrides)
        check_callback(callback)
        self._check_devices()
        dev = self.device
        x = self.check_inputs(x).to(dev)
        gen, seed = make_generator(generator)
        with prepared(self.modules().values()) as switched:
            with torch.no_grad():
                logits = self.classifier(x)
            self._check_logits(logits, x.shape[0])
            probs = logits.float().softmax(-1)
            target_t = self.check_target(target, x.shape[0], probs.shape[1]).to(dev)
            self._refuse_same_class(target_t, probs,
                                    advice=" (e.g. the runner-up: probs.topk(2).indices[:, 1])")
            out, wall = self._timed_explain(x, target_t, cfg, probs, callback, gen, dev)
        return self._pack(x, target_t, probs, out, cfg, seed, wall, switched)

    def _refuse_same_class(self, target_t: Tensor, probs: Tensor, *,
                           detail: Callable[[list[int]], str] | None = None, advice: str = "") -> None:
        """Unless the method allows it, a ValueError naming the rows whose target is the
        class the model already predicts (``detail(rows)`` follows the row list)."""
        if self.allow_same_class:
            return
        same = target_t == probs.argmax(1)
        if bool(same.any()):
            rows = same.nonzero()[:, 0].tolist()
            raise ValueError(
                f"target equals the class the model already predicts for row(s) "
                f"{rows[:10]}{detail(rows) if detail else ''}; a counterfactual needs a different "
                f"class{advice}.")

    def _timed_explain(self, x: Any, target_t: Tensor, cfg: Any, probs: Tensor, callback,
                       gen: torch.Generator, dev: torch.device) -> tuple[RunOutput, float]:
        """``_explain`` with the device synchronised around it; its output and wall seconds."""
        sync(dev)
        t0 = time.perf_counter()
        out = self._explain(x, target_t, cfg, probs=probs, callback=callback, generator=gen)
        sync(dev)
        return out, time.perf_counter() - t0

    @abstractmethod
    def _explain(
        self,
        x: Tensor,
        target: Tensor,
        cfg: Any,
        *,
        probs: Tensor,
        callback: StepCallback | None,
        generator: torch.Generator,
    ) -> RunOutput:
        """The paper's algorithm on checked inputs (on the method's device)."""

    # ----------------------------------------------------------------- checking
    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The ``(C, H, W)`` the models expect, when known."""
        for m in self.modules().values():
            shape = getattr(m, "input_shape", None)
            if shape is not None:
                return tuple(shape)
        return None

    def check_inputs(self, x: Any) -> Tensor:
        """Validate a batch of images; return it as a float tensor."""
        return check_images(x, self.input_shape)

    def check_target(self, target: Any, batch: int, num_classes: int) -> Tensor:
        """Validate ``target``: an int/name for all rows or one per row, in ``[0, K)``."""
        if isinstance(target, str) or (
            isinstance(target, (list, tuple)) and target and isinstance(target[0], str)
        ):
            names = self.class_names
            if names is None:
                raise ValueError("target given by name, but the classifier has no class_names; "
                                 "pass class indices instead.")
            items = [target] if isinstance(target, str) else list(target)
            idx = []
            for t in items:
                if t not in names:
                    raise ValueError(f"unknown class name {t!r}; known: {list(names)}.")
                idx.append(list(names).index(t))
            target = idx if len(idx) > 1 or not isinstance(target, str) else idx[0]
        if isinstance(target, Tensor):
            if target.device.type == "meta":
                raise ValueError("target is on the 'meta' device (a shape without values); pass "
                                 "class indices as ints, a list or a tensor on the CPU/GPU.")
            t = target.detach().cpu()
        else:
            try:
                t = torch.as_tensor(target)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(f"target must be an int or a sequence of ints, got {target!r}.") from e
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
            if t.dtype.is_floating_point and bool((t == t.round()).all()) and bool(t.isfinite().all()):
                t = t.long()
            else:
                raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}.")
        t = t.long()
        if t.ndim == 0:
            t = t.expand(batch).clone()
        if t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(
                f"target must be one class or one per row: expected shape ({batch},), "
                f"got {tuple(t.shape)}."
            )
        bad = (t < 0) | (t >= num_classes)
        if bool(bad.any()):
            raise ValueError(
                f"target {t[bad].tolist()} out of range: the classifier has {num_classes} "
                f"classes (0..{num_classes - 1})."
            )
        return t

    @staticmethod
    def _check_logits(logits: Any, batch: int) -> None:
        if not isinstance(logits, Tensor):
            raise TypeError(
                f"the classifier returned {type(logits).__name__}; it must return a tensor "
                f"of logits (B, K). Wrap HF models so that they return `.logits`."
            )
        if logits.ndim != 2 or logits.shape[0] != batch:
            raise ValueError(
                f"the classifier must return logits of shape (B, K) = ({batch}, K), "
                f"got {tuple(logits.shape)}."
            )
        if not logits.dtype.is_floating_point:
            raise TypeError(f"the classifier returned dtype {logits.dtype}; logits must be floats.")
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("the classifier returned NaN/inf logits for these inputs.")
        if logits.shape[1] < 2:
            raise ValueError("the classifier must have at least 2 classes.")
        looks_like_probs = bool(((logits >= 0) & (logits <= 1)).all()) and bool(
            torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=1e-3)
        )
        if looks_like_probs:
            raise ValueError(
                "the classifier seems to return probabilities (rows in [0, 1] summing to 1); "
                "counterfactual losses need logits: remove the final softmax (or wrap it: "
                "lambda x: model(x).clamp_min(1e-12).log())."
            )
        if bool(((logits >= 0) & (logits <= 1)).all()):
            # read as logits, sigmoid outputs cap every softmax probability at
            # e / (e + K - 1) (0.23 for 10 classes, 0.73 for 2): the search can never become
            # confident. A warning, not an error: an untrained model's genuine logits may
            # also all lie in [0, 1] on a small batch (nothing tells the two apart for sure).
            k = logits.shape[1]
            warnings.warn(
                f"the classifier's outputs all lie in [0, 1] without summing to 1: they look like "
                f"sigmoid probabilities (a final torch.sigmoid or a multi-label head). Read as "
                f"logits, no class can then pass probability {math.e / (math.e + k - 1):.2f}, so "
                f"the search cannot reach its confidence. Counterfactual methods need logits: "
                f"remove the sigmoid (or wrap it: lambda x: torch.logit(model(x).clamp(1e-6, "
                f"1 - 1e-6))). If these really are logits that happen to lie in [0, 1], shift "
                f"them to silence this (softmax ignores a constant): lambda x: model(x) - 1.",
                UserWarning, stacklevel=3)

    # ------------------------------------------------------------------ packing
    def _pack(self, x, target, probs, out: RunOutput, cfg, seed, wall, switched) -> CounterfactualResult:
        def cpu(v):
            return v.detach().cpu() if isinstance(v, Tensor) else v

        traj = None
        if out.trajectory:
            if isinstance(out.trajectory[0], Tensor):
                traj = torch.stack([cpu(t) for t in out.trajectory])
            else:
                traj = list(out.trajectory)
        losses = {
            k: torch.stack([torch.as_tensor(v) for v in vals]).detach().float().cpu().tolist()
            if vals and isinstance(vals[0], Tensor) else list(vals)
            for k, vals in out.losses.items()
        }
        from .._version import __version__

        meta = {
            "method": self.name,
            "title": self.title or self.name,
            "paper": self.paper,
            "config": to_dict(cfg),
            "seed": seed,
            "device": str(self.device),
            "wall_time_s": wall,
            "time_per_cf_s": wall / max(1, len(target)),
            "version": __version__,
            "class_names": self.class_names,
        }
        if switched:
            meta["switched_to_eval"] = switched
        meta.update({k: cpu(v) for k, v in out.meta.items()})
        meta["nonfinite"] = self._nonfinite_rows(out, len(target))
        return CounterfactualResult(
            x=cpu(x),
            x_cf=cpu(out.x_cf),
            target=cpu(target),
            probs=cpu(probs),
            probs_cf=cpu(out.probs_cf),
            trajectory=traj,
            trajectory_steps=list(out.trajectory_steps),
            losses=losses,
            steps=cpu(out.steps),
            stopped=out.stopped,
            meta=meta,
        )

    def _nonfinite_rows(self, out: RunOutput, n: int) -> Tensor:
        """``(n,)`` bool on the CPU: rows the loop's guard stopped for NaN/inf (the
        Recorder's flags; several copies of a row, e.g. restarts, count if any did) or whose
        returned counterfactual / probabilities are not finite. Warns when any is set."""
        flags = torch.zeros(n, dtype=torch.bool)
        if out.nonfinite is not None:
            f = out.nonfinite.detach().bool().cpu().flatten()
            if f.numel() == n:
                flags |= f
            elif f.numel() % n == 0:  # copies stacked copy-major (restarts)
                flags |= f.view(-1, n).any(0)
        p = torch.as_tensor(out.probs_cf).detach().float().cpu()
        if p.ndim == 2 and p.shape[0] == n:
            flags |= ~torch.isfinite(p).all(1)
        if isinstance(out.x_cf, Tensor) and out.x_cf.ndim >= 1 and out.x_cf.shape[0] == n:
            flags |= ~torch.isfinite(out.x_cf.detach().cpu()).flatten(1).all(1)
        if bool(flags.any()):
            rows = flags.nonzero()[:, 0].tolist()
            warnings.warn(
                f"{type(self).__name__}: row(s) {rows[:10]}{' ...' if len(rows) > 10 else ''} turned "
                f"non-finite (NaN/inf in the loss or in a model's output) during the search; they "
                f"were stopped at their last finite iterate (where the method keeps one) and are "
                f"flagged in result.meta['nonfinite']. Check the models for numerical problems "
                f"(log of 0, division by 0, overflow) or lower the learning rate.",
                UserWarning, stacklevel=4)
        return flags

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={type(v).__name__}" for k, v in self.modules().items())
        return f"{type(self).__name__}({parts}, device={self.device})"


# ---------------------------------------------------------------------- helpers
def _describe(m: Any) -> str:
    meta = getattr(m, "zoo_meta", None)
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"zoo {name!r}" if isinstance(name, str) else type(m).__name__


def _dataset_tag(m: Any) -> str | None:
    """The data set a model was trained on, from its zoo metadata: ``zoo_meta['dataset']``
    when set, else the recipe name's prefix (``"mnist/cvae"`` -> ``"mnist"``)."""
    meta = getattr(m, "zoo_meta", None)
    if not isinstance(meta, dict):
        return None
    tag = meta.get("dataset")
    if isinstance(tag, str) and tag:
        return tag
    name = meta.get("name")
    if isinstance(name, str) and "/" in name:
        return name.split("/", 1)[0]
    return None


def _class_count(m: Any) -> int | None:
    """The number of classes a model declares (``num_classes`` or ``class_names``)."""
    n = getattr(m, "num_classes", None)
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    names = getattr(m, "class_names", None)
    if isinstance(names, (list, tuple)) and names:
        return len(names)
    return None


def _class_like_categories(m: Any, class_names: Sequence[str] | None):
    """``(attribute, categories)`` of a categorical attribute of ``m`` that names some of
    the classifier's classes but not exactly them (a class-conditioned generator for
    another class list), else ``None``."""
    spec = getattr(m, "attribute_spec", None)
    if spec is None or not class_names:
        return None
    try:
        items = list(zip(spec.names, spec.kinds, spec.categories, strict=True))
    except (AttributeError, TypeError, ValueError):
        return None
    wanted = [str(c) for c in class_names]
    for attr, kind, cats in items:
        if kind != "categorical" or not cats:
            continue
        cats = [str(c) for c in cats]
        if set(cats) & set(wanted) and sorted(cats) != sorted(wanted):
            return attr, cats
    return None


def check_images(x: Any, input_shape: tuple[int, ...] | None = None) -> Tensor:
    """Validate a batch of images ``(B, C, H, W)`` of floats in [0, 1]."""
    if not isinstance(x, Tensor):
        try:
            import numpy as np

            if isinstance(x, np.ndarray):
                x = torch.from_numpy(x)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(
                f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}."
            ) from None
    # detached: an input that is part of the user's autograd graph (requires_grad=True)
    # must neither be optimised in place nor receive gradients from the search
    x = x.detach()
    if x.device.type == "meta":
        raise ValueError("x is on the 'meta' device (a shape without values); pass real images, "
                         "e.g. a tensor on the CPU or the GPU.")
    if not x.dtype.is_floating_point:
        hint = " (for uint8 images use x.float() / 255)" if x.dtype == torch.uint8 else ""
        raise TypeError(f"x must be a float tensor in [0, 1], got dtype {x.dtype}{hint}.")
    if x.ndim != 4:
        hint = ""
        if input_shape is not None and tuple(x.shape) == tuple(input_shape):
            hint = " For a single image pass x[None] (or x.unsqueeze(0))."
        elif x.ndim == 2:
            hint = " For a single grey image pass x[None, None]."
        raise ValueError(
            f"x must have shape (B, C, H, W), got {tuple(x.shape)}.{hint}"
        )
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (B = 0).")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"x has images of shape {tuple(x.shape[1:])} but the models expect "
            f"{tuple(input_shape)} (C, H, W)."
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf values.")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(
            f"x must be scaled to [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); "
            f"cfwidgets models normalise internally."
        )
    return x.float()


def named_attribute_weights(spec: Any, config: Any, overrides: dict) -> tuple[Any, dict]:
    """``attribute_weights`` given as ``{name: weight}`` (in the overrides or a config
    mapping) turned into the tuple knob, one value per attribute of ``spec`` (an
    :class:`~cfwidgets.models.conditional.AttributeSpec`); other values pass unchanged."""
    w = overrides.get("attribute_weights")
    if isinstance(w, Mapping):
        overrides = dict(overrides, attribute_weights=tuple(spec.weights(dict(w)).tolist()))
    if isinstance(config, Mapping) and isinstance(config.get("attribute_weights"), Mapping):
        config = dict(config, attribute_weights=tuple(spec.weights(dict(config["attribute_weights"])).tolist()))
    return config, overrides


def check_callback(callback: Any) -> None:
    """A TypeError up front when ``callback`` is given but cannot be called."""
    if callback is not None and not callable(callback):
        raise TypeError(
            f"callback must be a function callback(step, state) -> bool (True stops the run) or "
            f"None, got {type(callback).__name__} {callback!r:.40}.")


_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd,
                   nn.modules.instancenorm._InstanceNorm)


# The state `prepared` saved, per parameter / submodule, with how many runs hold it: two
# methods that share a model (the dashboard and the demo run methods on threads) must not
# restore it under each other. The first run in saves and freezes, the last one out restores.
_PREPARED_LOCK = threading.Lock()
_PREPARED_GRAD: dict[int, list] = {}   # id(param) -> [holders, param, requires_grad before]
_PREPARED_MODE: dict[int, list] = {}   # id(module) -> [holders, module, training before]


@contextlib.contextmanager
def prepared(modules) -> Iterator[list[str]]:
    """Eval mode and frozen parameters for the duration; restores both afterwards.

    A model in train mode would make explanations random (dropout) and would update
    BatchNorm running statistics in place (corrupting a cached model); it is switched to
    eval with a warning and switched back on exit. Parameters get ``requires_grad=False``
    so no gradient ever accumulates in the user's model.

    Safe when runs on several threads share a model: the state from before the first run
    is what the last one to finish restores.
    """
    modules = list(modules)
    # one walk over the submodules (this runs twice per explain call: one query at a time
    # its bookkeeping was a visible share of a short run), parameters from each submodule's
    # own table
    subs_of = [list(m.modules()) for m in modules]
    subs = list({id(sub): sub for ms in subs_of for sub in ms}.values())
    params = list({id(p): p for sub in subs for p in sub.parameters(recurse=False)}.values())
    with _PREPARED_LOCK:
        # warn only where train mode changes the output: dropout and normalisation layers
        switched = [type(m).__name__ for m, ms in zip(modules, subs_of, strict=True)
                    if any(sub.training and isinstance(sub, _MODE_DEPENDENT) for sub in ms)]
        for table, objs, state in ((_PREPARED_MODE, subs, "training"), (_PREPARED_GRAD, params, "requires_grad")):
            for obj in objs:
                held = table.get(id(obj))
                if held is None:
                    table[id(obj)] = [1, obj, getattr(obj, state)]
                else:
                    held[0] += 1
        for sub in subs:
            if sub.training:  # (nn.Module.__setattr__ is slow: set only what changes)
                sub.training = False
        for p in params:
            if p.requires_grad:
                p.requires_grad_(False)
    if switched:
        warnings.warn(
            f"{', '.join(switched)} was in train mode; cfwidgets switched it to eval() for "
            f"this explanation and restored it afterwards. Call model.eval() yourself to "
            f"silence this.",
            UserWarning,
            stacklevel=4,
        )
    try:
        yield switched
    finally:
        with _PREPARED_LOCK:
            for table, objs, state in ((_PREPARED_MODE, subs, "training"), (_PREPARED_GRAD, params, "requires_grad")):
                for obj in objs:
                    held = table[id(obj)]
                    held[0] -= 1
                    if held[0] == 0:
                        del table[id(obj)]
                        if getattr(obj, state) != held[2]:
                            setattr(obj, state, held[2])


class Recorder:
    """Bookkeeping of the shared loop: per-row "done" masks, freezing each row's
    counterfactual at the step it first reached ``confidence``, trajectory snapshots,
    loss curves, callback and Stop.

    It is also the loop's guard against NaN/inf: a row whose iterate, probabilities or any
    loss term turns non-finite is *halted* (like a finished row: it keeps its last finite
    iterate and stops counting steps) and flagged in ``nonfinite`` (the result's
    ``meta["nonfinite"]``, with a warning), instead of carrying NaN to the end.

    With ``patience`` > 0 a row also halts once it *settles*: the classifier assigns it to
    the target and its ``"loss"`` term has not fallen below ``(1 - patience_tol)`` times its
    best value for ``patience`` steps (a loss plateau below ``confidence``: e.g. a class
    term balanced by a prior or sparsity term). It keeps the iterate it settled at, counts
    the steps to there, and is flagged in ``settled`` (the result's ``meta["settled"]``).
    Rows that do not reach the target class never settle: they may still escape. With
    ``patience_move`` > 0 an iterate that moved by more than that (mean absolute change per
    element) since the row's last progress counts as progress too: a flat loss over an
    image that still changes (a relaxed categorical code finding its way back) is not a
    plateau. A staged loop calls :meth:`restart_plateau` where its loss changes meaning.

    It never forces a device sync except to count the halted rows (every ``sync_every``
    steps: all halted ends the loop, and :class:`~cfwidgets._active.ActiveRows`
    drops them from the computation) and when the callback itself asks for numbers. On a
    CPU (``sync_every=1``, where reading a value costs no sync) it reads one flag a step,
    "did any value turn non-finite, or a live row reach ``confidence``?", and skips the
    per-row masks and the count when neither happened.

    Usage in a method's loop::

        rec = Recorder(target, steps, confidence, record_every, callback)
        for step in range(steps):
            x_cf = render(state); logits = f(x_cf); ...
            if rec.observe(step, x_cf, logits.softmax(-1), {"loss": loss_rows}):
                break
            loss.backward(); opt.step()
        rec.finish(final_x_cf, final_probs)
    """

    def __init__(
        self,
        target: Tensor,
        steps: int,
        confidence: float,
        record_every: int | None = None,
        callback: StepCallback | None = None,
        *,
        sync_every: int | None = None,
        extra_frames: dict | None = None,
        patience: int = 0,
        patience_tol: float = 0.01,
        patience_move: float = 0.0,
    ) -> None:
        self.target = target
        self.total = steps
        self.confidence = confidence
        self.record_every = record_every or max(1, steps // 25)
        self.callback = callback
        dev = target.device
        self.sync_every = sync_every or (1 if dev.type == "cpu" else 8)
        self.done = torch.zeros_like(target, dtype=torch.bool)
        self.nonfinite = torch.zeros_like(target, dtype=torch.bool)
        self.steps_used = torch.full_like(target, steps)
        self.last_finite = torch.zeros_like(target)  # step of each row's last finite iterate
        if int(patience) < 0 or not 0.0 <= float(patience_tol) < 1.0:
            raise ValueError(f"patience must be >= 0 and patience_tol in [0, 1), got {patience!r}, "
                             f"{patience_tol!r}.")
        self.patience = int(patience)
        self.patience_tol = float(patience_tol)
        if not float(patience_move) >= 0.0:
            raise ValueError(f"patience_move must be >= 0, got {patience_move!r}.")
        self.patience_move = float(patience_move)
        self._x_ref: Tensor | None = None  # each row's iterate at its last progress (patience_move)
        #: rows halted on a loss plateau (valid, below ``confidence``)
        self.settled = torch.zeros_like(target, dtype=torch.bool)
        self._best: Tensor | None = None  # each row's best "loss" so far (patience)
        self._plateau_on = True  # restart_plateau(active=False) holds the plateau stop
        self._best_step = torch.zeros_like(target)
        self.x_final: Tensor | None = None
        self.probs_final: Tensor | None = None
        self._live = torch.ones_like(self.done)  # not halted (= ~halted, kept by _freeze)
        self._target_col = target[:, None]
        self._event = True  # a row may have halted since the last count (see observe)
        self.trajectory: list = []
        self.trajectory_steps: list[int] = []
        self._terms: dict[str, list[Tensor]] = {}  # name -> the observed terms, per step
        self.stopped = False
        self.ended_at: int | None = None
        #: halted rows at the last sync (a host int; ``None`` before the first)
        self.n_halted: int | None = None

    @property
    def halted(self) -> Tensor:
        """``(B,)`` bool: rows that no longer change (finished, or non-finite)."""
        return self.finished | self.nonfinite

    @property
    def finished(self) -> Tensor:
        """``(B,)`` bool: rows whose answer is final, reached ``confidence`` or settled."""
        return self.done | self.settled

    @property
    def losses(self) -> dict[str, list[Tensor]]:
        """name -> the loss curve, one 0-d tensor per observed step: a per-row term's mean
        over the rows where it is finite (NaN where none is), a shared term as given."""
        return {k: self._curve(v) for k, v in self._terms.items()}

    def _curve(self, terms: list[Tensor]) -> list[Tensor]:
        b = self.nonfinite.shape[0]
        per_row = [bool(v.ndim) and v.shape[0] == b for v in terms]
        if all(per_row) and len({v.shape for v in terms}) == 1:
            v = torch.stack(terms).reshape(len(terms), b, -1).float().mean(2)  # (T, B)
            return list(torch.where(torch.isfinite(v), v, float("nan")).nanmean(1).unbind(0))
        out = []
        for v, rows in zip(terms, per_row, strict=True):
            if rows:
                v = v.reshape(b, -1).float().mean(1)
                v = torch.where(torch.isfinite(v), v, float("nan")).nanmean()
            out.append(v.mean() if v.ndim else v)
        return out

    def _freeze(self, x: Tensor, probs: Tensor, step: int, losses: dict[str, Tensor] | None = None) -> None:
        """Update the masks and the frozen copies (in place: no allocation per step beyond
        the masks, which matters on CPU where every large allocation is an mmap).

        ``x_final``/``probs_final`` hold, per row, the iterate where it reached confidence,
        else its latest finite iterate."""
        with torch.no_grad():  # losses: already detached by observe
            self._freeze_rows(detached(x), detached(probs), step, losses or {})

    def _freeze_rows(self, x: Tensor, probs: Tensor, step: int, losses: dict[str, Tensor]) -> None:
        if self.x_final is None:
            self.x_final = x.clone()
            self.probs_final = probs.clone()
            self._conf_t = torch.tensor(self.confidence, dtype=probs.dtype, device=probs.device)
            self._below_t = torch.tensor(-1.0, dtype=probs.dtype, device=probs.device)
        # One query at a time this method's cost is its op count (in the loop, between a
        # model's forward and backward, each op costs several microseconds), so it uses few
        # ops and no Python scalars (an op with a Python number wraps and copies it first).
        live = self._live
        p_t = probs.gather(1, self._target_col).view(-1)
        shape = (-1,) + (1,) * (x.ndim - 1)
        if self.sync_every == 1 and self._quiet(x, probs, losses, live, p_t):
            # the common step on a CPU: no live row reached the target and every value is
            # finite, so only the live rows' copies move
            torch.where(live.view(shape), x, self.x_final, out=self.x_final)
            torch.where(live[:, None], probs, self.probs_final, out=self.probs_final)
            self.last_finite.masked_fill_(live, step)
            stay = live
            self._event = False
        else:
            finite, ok_all = self._finite_rows(x, probs, losses)
            upd = live & finite  # keep this iterate: finite and the row is still moving
            newly = upd & (p_t >= self._conf_t)
            torch.where(upd.view(shape), x, self.x_final, out=self.x_final)
            torch.where(upd[:, None], probs, self.probs_final, out=self.probs_final)
            self.last_finite.masked_fill_(upd, step)
            self.steps_used.masked_fill_(newly, step)
            self.done |= newly
            going = live & ~newly  # still moving unless non-finite now
            stay = going & ok_all
            self.nonfinite |= going ^ stay  # live, not newly done, some value non-finite
            self._event = True
        if self.patience and self._plateau_on and "loss" in losses:
            self._settle(step, losses["loss"], probs, stay, x)
            stay = stay & ~self.settled
            self._event = True
        self._live = stay

    def _quiet(self, x: Tensor, probs: Tensor, losses: dict[str, Tensor], live: Tensor,
               p_t: Tensor) -> bool:
        """One host read (free on a CPU): True when every value is finite and no live row
        reached ``confidence``. A sum is finite only if all its terms are; it can also
        overflow on finite values or see a halted row's old NaN, which only sends the step
        down the exact path."""
        sums = [x.sum(), probs.sum(), *(v.sum() for v in losses.values())]
        sums.append(torch.where(live, p_t, self._below_t).amax())
        if len({v.dtype for v in sums}) > 1:
            sums = [v.double() for v in sums]
        *vals, top = torch.stack(sums).tolist()
        return all(map(math.isfinite, vals)) and top < self.confidence

    def _finite_rows(self, x: Tensor, probs: Tensor, losses: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(B,)`` masks: the iterate and its probabilities are finite; and so is every
        loss term. Row reductions, not ``isfinite(x)`` (three temporaries of x's size: on a
        CPU a large temporary is freshly mapped memory): aminmax carries NaN and +-inf into
        a row's min / max, ``v - v`` is 0 for a finite ``v`` and NaN otherwise, and
        ``s == s`` is False for NaN. Columns: min, max, sum of probs, then per-row terms."""
        b = x.shape[0]
        lo, hi = torch.aminmax(x.reshape(b, -1), dim=1)
        cols = [lo, hi, probs.sum(1)]
        ok = None
        for v in losses.values():
            if v.ndim == 1 and v.shape[0] == b:
                cols.append(v)
            elif v.ndim >= 1 and v.shape[0] == b:  # per-row terms of several elements
                f = torch.isfinite(v).reshape(b, -1).all(1)
                ok = f if ok is None else ok & f
            else:  # a term shared by the batch
                f = torch.isfinite(v).all()
                ok = f if ok is None else ok & f
        if len({c.dtype for c in cols}) > 1:
            cols = [c.float() for c in cols]
        z = torch.stack(cols, 1)
        z = z - z  # (B, C): 0 where finite, NaN elsewhere
        s_xp = z[:, :3].sum(1)
        finite = s_xp == s_xp  # the iterate and its probabilities
        if len(cols) > 3:
            s_all = z.sum(1)
            ok_all = s_all == s_all  # ... and the per-row loss terms
        else:
            ok_all = finite
        if ok is not None:
            ok_all = ok_all & ok
        return finite, ok_all

    def restart_plateau(self, active: bool = True) -> None:
        """Forget each row's best loss and switch the plateau stop on (``active``) or off
        from the next step: for a staged loop whose ``"loss"`` changes meaning between
        stages (a best value of one stage's loss says nothing about the next one's)."""
        self._best = None
        self._plateau_on = bool(active)

    def _settle(self, step: int, loss: Tensor, probs: Tensor, live: Tensor, x: Tensor) -> None:
        """The plateau stop: halt ``live`` rows of the target class whose loss has not
        improved by ``patience_tol`` (relative to its best) for ``patience`` steps; with
        ``patience_move``, a row whose iterate ``x`` (already detached) moved by more than
        that (mean absolute change per element) since its last progress counts as
        progressing too."""
        if loss.ndim == 0 or loss.shape[0] != live.shape[0]:
            return  # a term shared by the batch says nothing about one row
        loss = loss.reshape(loss.shape[0], -1).float().sum(1)
        if self._best is None:
            self._best = loss.clone()
            self._best_step.fill_(step)
            if self.patience_move:
                self._x_ref = x.clone()
            return
        better = live & (loss < self._best - self.patience_tol * self._best.abs())
        torch.where(better, loss, self._best, out=self._best)
        if self.patience_move:
            moved = (x - self._x_ref).abs().reshape(x.shape[0], -1).mean(1) > self.patience_move
            better = better | (live & moved)
            shape = (-1,) + (1,) * (x.ndim - 1)
            torch.where(better.view(shape), x, self._x_ref, out=self._x_ref)
        self._best_step.masked_fill_(better, step)
        on_target = probs.argmax(1) == self.target
        now = live & on_target & (step - self._best_step >= self.patience)
        self.steps_used.masked_fill_(now, step)
        self.settled |= now

    def _view(self, x: Tensor) -> Tensor:
        """The current iterate with halted rows frozen (what a viewer should see)."""
        shape = (-1,) + (1,) * (x.ndim - 1)
        return torch.where(self._live.view(shape), x.detach(), self.x_final)

    def observe(self, step: int, x: Tensor, probs: Tensor, losses: dict[str, Tensor],
                extra: dict | None = None) -> bool:
        """Record the iterate after ``step`` updates; return True to end the loop."""
        losses = {k: detached(v) for k, v in losses.items()}
        self._freeze(x, probs, step, losses)
        # the loss curves are reduced once, when read (``losses``): per step only the
        # detached terms are kept (the per-step reduction was a third of the loop's
        # bookkeeping on a small classifier, one query at a time)
        for k, v in losses.items():
            self._terms.setdefault(k, []).append(v)
        if step % self.record_every == 0:
            self.trajectory.append(self._view(x))
            self.trajectory_steps.append(step)
        if self.callback is not None:
            state = StepState(
                step=step, total=self.total, x_cf=self._view(x), probs=probs.detach(),
                target=self.target, done=self.done.clone(),
                losses=dict(losses), extra=extra or {},
            )
            if self.callback(step, state):
                self.stopped = True
                self.ended_at = step
                return True
        if (step + 1) % self.sync_every == 0:
            # the loop's one sync: how many rows halted (all -> end; ActiveRows reads the count)
            if self._event or self.n_halted is None:  # else no row halted since the last count
                self.n_halted = self._live.shape[0] - int(self._live.sum())
            if self.n_halted == self._live.shape[0]:
                self.ended_at = step
                return True
        return False

    def finish(self, x: Tensor, probs: Tensor) -> tuple[Tensor, Tensor]:
        """Close the loop with the final iterate (the state after the last update, which
        equals the last observed one when the loop ended early); return
        ``(x_cf, probs_cf)``: each row frozen where it first reached ``confidence``, or at
        its last finite iterate if it turned non-finite, else this final iterate."""
        step = self.total if self.ended_at is None else self.ended_at
        self._freeze(x, probs, step)
        assert self.x_final is not None and self.probs_final is not None
        # every row's frozen copy is now its answer (rows still moving were just updated)
        x_cf = self.x_final.clone()
        p_cf = self.probs_final.clone()
        if not self.trajectory_steps or self.trajectory_steps[-1] != step:
            self.trajectory.append(x_cf.clone())
            self.trajectory_steps.append(step)
        # rows that never reached confidence used every update that was applied (or, when
        # they turned non-finite, the updates up to their last finite iterate)
        used = torch.where(self.nonfinite, self.last_finite, torch.full_like(self.steps_used, step))
        self.steps_used = torch.where(self.finished, self.steps_used, used)
        return x_cf, p_cf

    def output(self, x_cf: Tensor, probs_cf: Tensor, **meta) -> RunOutput:
        return RunOutput(
            x_cf=x_cf,
            probs_cf=probs_cf,
            trajectory=self.trajectory,
            trajectory_steps=self.trajectory_steps,
            losses=self.losses,
            steps=self.steps_used,
            stopped=self.stopped,
            meta={**meta, **({"settled": self.settled} if self.patience else {})},
            nonfinite=self.nonfinite,
        )

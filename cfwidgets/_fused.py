"""Copies of a model for the step loops: BatchNorm folded into the layer before it, image
convolutions in channels-last layout.

A counterfactual loop runs the classifier (and often a generator) forward and backward
hundreds of times in eval mode. There a BatchNorm layer is a fixed per-channel affine map,
so it can be folded into the convolution or linear layer that feeds it (the fused layer
computes the same function; only float rounding changes, ~1e-6 on the zoo's CNN), and
oneDNN's convolutions run faster on channels-last weights (not those of a model with
transposed convolutions, measured below). Measured on the zoo's
``mnist/cnn``, one thread, 100 digits, forward and backward to the input: 67 ms as
trained, 35 ms fused and channels-last (``benchmarks/bench_fused.py`` measures whole
methods).

:func:`fused_copy` never touches the model it is given: it returns a new top module that
shares every unchanged submodule and attribute with it (so a model that keeps state in a
mutable Python object, a list of calls or a cache dict, still sees every call), and returns the model itself when
there is nothing to gain (no BatchNorm after a layer it can fold into and no channels-last
gain: e.g. the text models, the VAE) or when the result could differ from it: hooks on any
submodule (someone is watching the original's activations, such as DISC's BatchNorm
statistics or a user's probe) or a module in train mode.

:class:`FusedCache` keeps one copy per model and makes a new one when the model's weights
change (in place, by ``load_state_dict`` or an optimiser, or by a move to another device).

Set ``CFWIDGETS_FUSE=0`` in the environment to run every loop on the models as given (the
overhead benchmark does, to compare like with like against a hand-written loop).
"""

from __future__ import annotations

import copy
import os
import weakref

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

__all__ = ["FusedCache", "fused_copy", "fusion_enabled"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def fusion_enabled() -> bool:
    """False when the environment sets ``CFWIDGETS_FUSE`` to 0 / false / no / off."""
    return os.environ.get("CFWIDGETS_FUSE", "1").strip().lower() not in ("0", "false", "no", "off")


class _LinearBN(nn.Module):
    """``bn(linear(x))`` with the pair folded for 2-d input ``(N, features)``, the only
    shape on which ``BatchNorm1d`` normalises the linear layer's outputs; other shapes
    (``(N, C, L)``: BatchNorm1d then normalises dimension 1) run the original pair."""

    def __init__(self, linear: nn.Linear, bn: nn.BatchNorm1d) -> None:
        super().__init__()
        self.fused = fuse_linear_bn_eval(linear, bn).requires_grad_(False)
        self.linear, self.bn = linear, bn

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return self.fused(x)
        return self.bn(self.linear(x))


def _foldable(bn: nn.Module) -> bool:
    return (isinstance(bn, _BatchNorm) and bn.track_running_stats and bn.running_mean is not None
            and not bn.training)


def _fold(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
    """The fused replacement of ``layer`` followed by ``bn`` (new parameters that do not
    require gradients: a loop wants the input's gradient only), or None when they do not
    fold."""
    if not _foldable(bn) or layer.training or _parametrized(layer):
        return None
    if isinstance(layer, _CONV) and bn.num_features == layer.out_channels:
        return fuse_conv_bn_eval(layer, bn).requires_grad_(False)
    if isinstance(layer, _CONV_T) and bn.num_features == layer.out_channels and layer.groups == 1:
        # (torch scales a transposed weight (in, out / groups, ...) per output channel
        # correctly only for one group)
        return fuse_conv_bn_eval(layer, bn, transpose=True).requires_grad_(False)
    if isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and bn.num_features == layer.out_features:
        return _LinearBN(layer, bn)
    return None


def _parametrized(m: nn.Module) -> bool:
    return bool(getattr(m, "parametrizations", None))


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


def _run_as_given(model: nn.Module) -> bool:
    """Whether a copy could behave differently from ``model``: a module in train mode, or a
    hook (on a submodule, or global) watching the original's passes."""
    return (any(m.training or _hooked(m) for m in model.modules())
            or bool(torch.nn.modules.module._global_forward_hooks
                    or torch.nn.modules.module._global_forward_pre_hooks))


def _channels_last(layer: nn.Module) -> nn.Module:
    """A copy of a 2-d convolution whose weight is channels-last (same values; the copy
    shares everything else with ``layer``)."""
    twin = copy.copy(layer)
    twin._parameters = {k: None if p is None else nn.Parameter(
        # (.to, not .contiguous: with one input channel a weight is contiguous in both
        # layouts, .contiguous keeps its strides and oneDNN then picks the NCHW kernels for
        # the whole network; .to sets channels-last strides)
        p.detach().to(memory_format=torch.channels_last) if p.dim() == 4 else p.detach(),
        requires_grad=False) for k, p in layer._parameters.items()}
    return twin


def _rebuilt(m: nn.Module, channels_last: bool, fold: bool = True) -> nn.Module:
    """``m`` with each foldable (layer, BatchNorm) pair of its ``nn.Sequential`` containers
    (adjacent entries: the one container whose data flow its order states) folded when
    ``fold``, and its 2-d convolutions channels-last when ``channels_last``; every
    unchanged submodule, and every other attribute, is shared with ``m`` (a model that counts its calls in a list still does).
    ``m`` itself when nothing changes."""
    kids = dict(m._modules)
    if fold and isinstance(m, nn.Sequential):
        names = list(kids)
        for a, b in zip(names, names[1:], strict=False):
            la, lb = kids[a], kids[b]
            if la is not None and lb is not None and isinstance(lb, _BatchNorm):
                fused = _fold(la, lb)
                if fused is not None:
                    kids[a], kids[b] = fused, nn.Identity()
    for name, child in kids.items():
        if child is not None and child is m._modules[name]:
            kids[name] = _rebuilt(child, channels_last, fold)
        if channels_last and isinstance(kids[name], nn.Conv2d):
            kids[name] = _channels_last(kids[name])
    if all(kids[k] is m._modules[k] for k in kids):
        return m
    twin = copy.copy(m)  # (a shallow copy: the new table of submodules is all that differs)
    twin._modules = kids
    return twin


def fused_copy(model: nn.Module, *, fold: bool = True) -> nn.Module:
    """``model`` as a step loop should run it: each BatchNorm folded into the convolution
    or linear layer before it (within an ``nn.Sequential``; not with ``fold=False``, for a
    loop that watches the BatchNorm layers' inputs) and, unless the model has transposed
    convolutions, its 2-d convolutions' weights channels-last. The result shares every
    unchanged submodule with ``model`` (with ``fold=False``: its BatchNorm layers) and
    never alters it; it is ``model`` itself when there is nothing to gain or the result
    could behave differently (see the module docstring). New parameters do not require
    gradients."""
    if not isinstance(model, nn.Module) or _run_as_given(model):
        return model
    # channels-last where it paid, measured one thread, 100 rows, forward + backward: the
    # zoo's CNN 50 -> 35 ms (after folding), its flow 352 -> 247 ms; a model with transposed
    # convolutions it did not help (the VAE's decoder 27.7 -> 28.8 ms, the GAN's 40.7 -> 40.2)
    subs = list(model.modules())
    cl = (any(isinstance(m, nn.Conv2d) for m in subs)
          and not any(isinstance(m, nn.ConvTranspose2d) for m in subs))
    return _rebuilt(model, cl, fold)  # (the model itself when nothing folds and cl is off)


def _signature(model: nn.Module) -> tuple:
    """Changes when any weight of ``model`` changes: in place (a tensor's version counter),
    by a new tensor (``load_state_dict(assign=True)``, ``.to()``) or by a new submodule."""
    return tuple((t.data_ptr(), t._version, t.device) for t in
                 (*model.parameters(), *model.buffers()))


class FusedCache:
    """One :func:`fused_copy` per model, remade when the model's weights change.

    Holds the models weakly: a cache never keeps a model alive.
    """

    def __init__(self) -> None:
        self._copies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, model, *, fold: bool = True):
        """The copy of ``model`` the loop should run (``model`` itself when fusion is off,
        or has nothing to offer); ``fold``: as :func:`fused_copy`'s."""
        if not isinstance(model, nn.Module) or not fusion_enabled():
            return model
        sig = _signature(model)
        held = self._copies.setdefault(model, {})
        got = held.get(fold)
        if got is not None and got[0] == sig and not _run_as_given(model):
            return got[1]
        twin = fused_copy(model, fold=fold)
        if twin is model:  # (asked again next time: hooks and train mode come and go)
            held.pop(fold, None)
        else:
            held[fold] = (sig, twin)
        return twin

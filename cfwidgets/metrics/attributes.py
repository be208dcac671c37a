"""Attribute-space metrics for attribute-conditioned counterfactuals (GCI, AIP) and the
control quality of conditional generators.

Per-row functions take a :class:`~cfwidgets.result.CounterfactualResult` whose ``meta``
carries ``attribute_changes`` (``(B, A)``, comparable units: standard deviations for
continuous attributes, probability mass moved for categorical ones) and return ``(B,)``
tensors, so they plug into :func:`cfwidgets.metrics.evaluate` via ``extra=``::

    evaluate(res, extra=ATTRIBUTE_METRICS)

Definitions:

- ``attr_l1``: ``sum_i |delta_i|`` (comparable units).
- ``attrs_changed``: number of attributes with ``|delta_i| > tol`` (``tol = 0.1``).
- ``top1_share``: the share of ``attr_l1`` carried by the largest single change (1.0 =
  all change in one attribute); ``top2_share`` likewise for the two largest.

For methods without attribute metadata (e.g. Wachter's pixels), measure the attributes
on the images instead: :func:`measured_changes` with a measurement function (the
morphometrics for digits, a factor regressor for shapes).

:func:`control_report` scores how well a conditional generator obeys its attributes:
change one attribute by a set amount, decode, re-measure with an independent judge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..result import CounterfactualResult

__all__ = [
    "attribute_changes",
    "attr_l1",
    "attrs_changed",
    "top_share",
    "measured_changes",
    "ATTRIBUTE_METRICS",
    "control_report",
    "format_control",
]


def attribute_changes(result: CounterfactualResult) -> Tensor:
    """``(B, A)`` attribute changes of an attribute method's result (comparable units)."""
    ch = result.meta.get("attribute_changes")
    if ch is None:
        raise ValueError(
            f"result of method {result.method!r} carries no attribute changes; use "
            f"measured_changes(result, measure, scale) for methods that do not edit attributes.")
    return ch.float()


def attr_l1(result: CounterfactualResult) -> Tensor:
    return attribute_changes(result).abs().sum(1)


def attrs_changed(result: CounterfactualResult, tol: float = 0.1) -> Tensor:
    return (attribute_changes(result).abs() > tol).float().sum(1)


def top_share(result: CounterfactualResult | Tensor, k: int = 1) -> Tensor:
    """Share of the total absolute change carried by the ``k`` largest attribute changes."""
    ch = result if isinstance(result, Tensor) else attribute_changes(result)
    ch = ch.abs()
    total = ch.sum(1)
    top = ch.topk(min(k, ch.shape[1]), dim=1).values.sum(1)
    return torch.where(total > 1e-8, top / total.clamp_min(1e-8), torch.ones_like(total))


ATTRIBUTE_METRICS: dict[str, Callable[[CounterfactualResult], Tensor]] = {
    "attr_l1": attr_l1,
    "attrs_changed": attrs_changed,
    "top1_share": lambda r: top_share(r, 1),
    "top2_share": lambda r: top_share(r, 2),
}


@torch.no_grad()
def measured_changes(result: CounterfactualResult, measure: Callable[[Tensor], Tensor],
                     scale: Tensor | Sequence[float] | None = None) -> Tensor:
    """``(B, A)`` change of measured attributes between ``x`` and ``x_cf`` (divided by
    ``scale``, e.g. the training standard deviations, when given)."""
    d = measure(result.x_cf) - measure(result.x)
    if scale is not None:
        d = d / torch.as_tensor(scale, dtype=d.dtype)
    return d


# --------------------------------------------------------------------- generator control
@torch.no_grad()
def control_report(
    generator,
    x: Tensor,
    judge: Callable[[Tensor], Tensor],
    *,
    classifier: Callable[[Tensor], Tensor] | None = None,
    deltas: Sequence[float] = (-1.5, -0.75, 0.75, 1.5),
    batch_size: int = 250,
) -> dict:
    """How well ``generator`` controls each attribute, judged independently.

    For every continuous attribute ``i`` and every ``delta`` (standard deviations): decode
    ``g(e(x), a0 + delta * e_i)`` (clipped to the attribute's bounds) and
    ``g(e(x), a0)``; ``judge`` measures both (``(N, n_continuous)`` in natural units, in
    the spec's continuous order); the *achieved* change is their difference in standard
    deviations. Reported per attribute:

    - ``corr``: correlation of requested and achieved change; ``gain``: least-squares slope;
    - ``mae_std`` / ``mae``: mean |achieved - requested| in std / natural units;
    - ``off_target``: mean |achieved change| of the *other* continuous attributes;
    - ``class_kept``: share where ``classifier`` predicts the same class on the edit as on
      the unedited decode (edits of nuisance attributes must keep the identity).

    For a categorical attribute: set each other category (one-hot) and report
    ``accuracy`` = share where ``classifier`` (when given) predicts the requested category.
    """
    spec = generator.attribute_spec
    dev = next(generator.parameters()).device
    cont = [i for i, k in enumerate(spec.kinds) if k == "continuous"]
    std = torch.tensor([spec.std[i] for i in cont])
    rows: dict[str, dict] = {}
    a0_all, z0_all, ref_all, pred_ref = [], [], [], []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].to(dev)
        a0 = generator.attributes(xb)
        z0 = generator.encode_with(xb, a0)[0]
        ref = generator.decode(z0, a0)
        a0_all.append(a0)
        z0_all.append(z0)
        ref_all.append(ref)
        if classifier is not None:
            pred_ref.append(classifier(ref).argmax(1))
    a0, z0, ref = torch.cat(a0_all), torch.cat(z0_all), torch.cat(ref_all)
    m_ref = judge(ref).cpu()
    pref = torch.cat(pred_ref).cpu() if pred_ref else None

    def decode_all(a: Tensor) -> Tensor:
        return torch.cat([generator.decode(z0[s:s + batch_size], a[s:s + batch_size])
                          for s in range(0, len(a), batch_size)])

    for j, i in enumerate(cont):
        sl = spec.slices[i]
        req, ach, off, kept = [], [], [], []
        for d in deltas:
            a = a0.clone()
            a[:, sl] = (a[:, sl] + d).clamp(spec.low[i], spec.high[i])
            requested = (a[:, sl] - a0[:, sl])[:, 0].cpu()
            out = decode_all(a)
            m = judge(out).cpu()
            achieved = (m - m_ref) / std
            req.append(requested)
            ach.append(achieved[:, j])
            others = [k for k in range(len(cont)) if k != j]
            off.append(achieved[:, others].abs().mean(1) if others else torch.zeros(len(a)))
            if classifier is not None:
                p = torch.cat([classifier(out[s:s + batch_size]).argmax(1)
                               for s in range(0, len(out), batch_size)]).cpu()
                kept.append((p == pref).float())
        r, a_ = torch.cat(req), torch.cat(ach)
        rc, ac = r - r.mean(), a_ - a_.mean()
        corr = float((rc * ac).sum() / (rc.norm() * ac.norm()).clamp_min(1e-8))
        gain = float((r * a_).sum() / (r * r).sum().clamp_min(1e-8))
        mae_std = float((a_ - r).abs().mean())
        row = {"corr": round(corr, 3), "gain": round(gain, 3), "mae_std": round(mae_std, 3),
               "mae": round(mae_std * float(std[j]), 3), "unit": spec.units[i],
               "off_target": round(float(torch.cat(off).mean()), 3)}
        if kept:
            row["class_kept"] = round(float(torch.cat(kept).mean()), 3)
        rows[spec.names[i]] = row
    if classifier is not None:
        for i, (name, k) in enumerate(zip(spec.names, spec.kinds, strict=True)):
            if k != "categorical":
                continue
            sl = spec.slices[i]
            hits, n = 0.0, 0
            for c in range(sl.stop - sl.start):
                a = a0.clone()
                a[:, sl] = 0
                a[:, sl.start + c] = 1
                mask = (a0[:, sl].argmax(1) != c).cpu()
                out = decode_all(a)
                p = torch.cat([classifier(out[s:s + batch_size]).argmax(1)
                               for s in range(0, len(out), batch_size)]).cpu()
                hits += float(((p == c) & mask).sum())
                n += int(mask.sum())
            rows[name] = {"accuracy": round(hits / max(1, n), 3), "unit": "category"}
    return rows


def format_control(report: dict, order: Sequence[str] | None = None) -> str:
    """A small text table of :func:`control_report` (rows in ``order``, e.g. the
    generator's ``attribute_names``, when given)."""
    cols = ["corr", "gain", "mae_std", "mae", "unit", "off_target", "class_kept", "accuracy"]
    used = [c for c in cols if any(c in r for r in report.values())]
    lines = ["attribute   " + "  ".join(f"{c:>10}" for c in used)]
    names = [n for n in (order or ()) if n in report] + [n for n in report if n not in (order or ())]
    for name in names:
        r = report[name]
        lines.append(f"{name:<11} " + "  ".join(f"{str(r.get(c, '')):>10}" for c in used))
    return "\n".join(lines)

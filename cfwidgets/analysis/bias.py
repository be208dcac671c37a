"""Bias discovery with attribute counterfactuals: the use GCI was made for (Liu et al.,
arXiv 1907.03077: counterfactual edits "reveal interesting properties of the given
classifiers", e.g. reliance on attributes that should not matter).

:func:`rank_attributes` explains many queries with an attribute method (GCI or AIP) and
aggregates the attribute changes of the *successful* counterfactuals into a ranking:

- ``mean_abs_change``: mean ``|delta_i|`` in comparable units (standard deviations for
  continuous attributes, probability mass moved for categorical ones): the paper's
  aggregate (METHODS.md, GCI "Metrics"). This orders the ranking.
- ``share_changed``: share of counterfactuals that change attribute ``i`` by more than
  ``tol``.
- ``mean_change``: the signed mean change in natural units (the direction).
- ``sufficiency`` (optional, ``sufficiency=True``): the flip rate when *only* attribute ``i``
  may change (all others locked). A complementary, causal reading: "changing brightness
  alone flips 96% of the decisions".

Honesty notes. The ranking is relative to the generator's attribute set: an attribute the
generator does not model cannot be found. The generator must be trained on data where the
attributes vary independently of the class (``shapes/cvae`` is trained on *unbiased*
shapes), otherwise it cannot render "a bright circle" and the analysis would see the
generator's bias, not the classifier's. When the class itself is an attribute (the shape,
the digit), an unbiased classifier ranks it first: there is no cheaper path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["AttributeRanking", "rank_attributes", "aggregate"]


@dataclass
class AttributeRanking:
    """Aggregated attribute changes of many counterfactuals (see the module docstring)."""

    names: list[str]
    units: list[str]
    mean_abs_change: Tensor  # (A,) comparable units, over successful counterfactuals
    mean_change: Tensor  # (A,) natural units (categorical: mass moved)
    share_changed: Tensor  # (A,)
    flip_rate: float
    n: int
    n_success: int  # valid (and, by default, faithful) counterfactuals aggregated
    sufficiency: Tensor | None = None  # (A,) flip rate with only attribute i free
    method: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def order(self) -> list[int]:
        return torch.argsort(self.mean_abs_change, descending=True).tolist()

    @property
    def ranking(self) -> list[str]:
        """Attribute names, most relied-on first."""
        return [self.names[i] for i in self.order]

    def table(self) -> list[dict]:
        rows = []
        for rank, i in enumerate(self.order, 1):
            row = {"rank": rank, "attribute": self.names[i],
                   "mean |change|": round(float(self.mean_abs_change[i]), 3),
                   "changed in": f"{float(self.share_changed[i]):.0%}",
                   "mean change": f"{float(self.mean_change[i]):+.3g} {self.units[i]}".rstrip()}
            if self.sufficiency is not None:
                row["flips alone"] = f"{float(self.sufficiency[i]):.0%}"
            rows.append(row)
        return rows

    def __repr__(self) -> str:
        top = ", ".join(f"{self.names[i]} {float(self.mean_abs_change[i]):.2f}" for i in self.order[:3])
        return (f"AttributeRanking(method={self.method!r}, n={self.n}, flip_rate={self.flip_rate:.0%}, "
                f"top: {top})")

    def _repr_html_(self) -> str:
        rows = self.table()
        head = "".join(f"<th>{k}</th>" for k in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in r.values()) + "</tr>" for r in rows)
        cap = (f"{self.method}: flip rate {self.flip_rate:.0%} on {self.n} queries; "
               f"{self.n_success} valid counterfactuals with a faithful reconstruction, ranked by "
               f"mean |change|")
        return (f'<table class="cfw-table"><caption>{cap}</caption><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")

    def plot(self, ax=None, title: str | None = None):
        """Horizontal bars of ``mean_abs_change`` (most relied-on on top)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 0.35 * len(self.names) + 0.8))
        order = self.order[::-1]
        ax.barh([self.names[i] for i in order], [float(self.mean_abs_change[i]) for i in order],
                color="#4c72b0")
        ax.set_xlabel("mean |change| (std; categorical: mass moved)")
        ax.set_title(title or f"{self.method}: what flips the decision")
        return ax


def _runner_up(classifier, x: Tensor, batch_size: int) -> Tensor:
    dev = next(iter(classifier.parameters())).device
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            out.append(classifier(x[s:s + batch_size].to(dev)).topk(2, dim=1).indices[:, 1].cpu())
    return torch.cat(out)


def rank_attributes(method, x: Tensor, target: Tensor | int | None = None, *, tol: float = 0.1,
                    sufficiency: bool = False, faithful_only: bool = True, batch_size: int = 256,
                    generator=0, **knobs) -> AttributeRanking:
    """Explain every query in ``x`` and rank the attributes by how much the valid
    counterfactuals change them.

    Args:
        method: a GCI or AIP instance (any method whose result carries
            ``attribute_changes`` in its meta).
        x: queries ``(N, C, H, W)``.
        target: target class(es); default: each query's runner-up class.
        tol: the change (comparable units) above which an attribute counts as changed.
        faithful_only: aggregate only queries whose reconstruction keeps the class (see
            :func:`aggregate`).
        sufficiency: also run once per attribute with every *other* attribute locked and
            report the flip rate (costs one extra pass per attribute).
        knobs: passed to ``method.explain`` (e.g. ``steps``, ``sparsity_weight``).

    Examples::

        gci = GCI.from_zoo("shapes-biased")
        rank_attributes(gci, load_shapes("test").x[:200]).ranking  # ['brightness', ...]
    """
    from ..models.conditional import LOCK_WEIGHT
    from ..result import stack_results

    if target is None:
        target = _runner_up(method.classifier, x, batch_size)
    target = torch.as_tensor(target)
    if target.ndim == 0:
        target = target.expand(len(x)).clone()

    def run(**extra):
        parts = [method.explain(x[s:s + batch_size], target[s:s + batch_size], generator=generator,
                                **{**knobs, **extra}) for s in range(0, len(x), batch_size)]
        res = parts[0] if len(parts) == 1 else stack_results(parts)
        if len(parts) > 1:  # stack_results keeps the first meta: concatenate the per-row parts
            for key in ("attribute_changes", "attribute_deltas", "rec_keeps_class"):
                res.meta[key] = torch.cat([p.meta[key] for p in parts])
        return res

    res = run()
    spec = method.attribute_spec
    a = len(spec)
    out = aggregate(res, tol=tol, faithful_only=faithful_only)
    out.meta.update({"target": target, "knobs": dict(knobs)})
    if sufficiency:
        base = dict(knobs).get("attribute_weights") or (1.0,) * a
        base = spec.weights(base)
        rates = []
        for i in range(a):
            w = torch.full((a,), LOCK_WEIGHT)
            w[i] = base[i] if base[i] < LOCK_WEIGHT else 1.0
            r = run(attribute_weights=tuple(w.tolist()))
            rates.append(float(r.success.float().mean()))
        out.sufficiency = torch.tensor(rates)
    return out


def aggregate(result, tol: float = 0.1, faithful_only: bool = True) -> AttributeRanking:
    """An :class:`AttributeRanking` from one (batched) attribute result: mean ``|change|``
    over its valid counterfactuals (see the module docstring). ``faithful_only``: skip
    queries whose reconstruction ``G(x, a0)`` the classifier already labels differently
    from ``x`` (their "counterfactual" starts on the other side: it measures the
    generator's error, not the classifier)."""
    m = result.meta
    if "attribute_changes" not in m:
        raise ValueError(f"result of {result.method!r} carries no attribute changes (use GCI or AIP).")
    ok = result.success
    faithful = m.get("rec_keeps_class")
    if faithful_only and faithful is not None:
        ok = ok & faithful.bool()
    ch = m["attribute_changes"][ok].float()
    nat = m["attribute_deltas"][ok].float()
    a = len(m["attribute_names"])
    if len(ch):
        mean_abs, mean, share = ch.abs().mean(0), nat.mean(0), (ch.abs() > tol).float().mean(0)
    else:
        mean_abs = mean = share = torch.zeros(a)
    return AttributeRanking(
        names=list(m["attribute_names"]), units=list(m["attribute_units"]), mean_abs_change=mean_abs,
        mean_change=mean, share_changed=share, flip_rate=float(result.success.float().mean()),
        n=len(result), n_success=int(ok.sum()), method=m.get("title", result.method),
        meta={"tol": tol, "faithful_share": None if faithful is None else float(faithful.float().mean())},
    )

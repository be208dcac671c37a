"""Metrics every counterfactual result goes through.

Per-row functions return ``(B,)`` tensors; :func:`evaluate` averages them into one table
row per method. Definitions:

- **validity**: ``argmax f(x') == t`` (the flip rate when averaged); ``target_prob`` =
  ``p_t(x')``; ``confident`` = ``p_t(x') >= confidence``.
- **proximity**: ``l1`` = mean ``|x' - x|`` per pixel; ``l1_sum`` = its sum per image;
  ``l2`` = Euclidean distance per image.
- **sparsity**: share of pixels with ``|x' - x| > tau`` (``tau = 0.05`` by default);
  lower means a sparser change.
- **realism** (Van Looveren & Klaise, arXiv 1907.02584, section 4.3), with class
  autoencoders ``AE_k`` and an all-data ``AE``::

      IM1 = ||x' - AE_t(x')||^2 / (||x' - AE_c(x')||^2 + eps)
      IM2 = ||AE_t(x') - AE(x')||^2 / (||x'||_1 + eps)

  ``t`` is the counterfactual's class and ``c`` the query's original class; lower is
  better for both (the counterfactual looks like the target class's data).
- **oracle agreement**: an independently trained classifier also predicts ``t`` on ``x'``.
- **judges**: ``evaluate`` names the model behind each judged figure (``row["judges"]``:
  oracle, autoencoders, and any ``extra`` metric with a ``judge`` attribute), so a figure
  is never silently scored by a model the method steered with.
- **cost**: wall time per counterfactual and steps used (from the result).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..result import CounterfactualResult

__all__ = [
    "validity",
    "target_probability",
    "l1",
    "l1_sum",
    "l2",
    "sparsity",
    "im1",
    "im2",
    "oracle_agreement",
    "oracle_prediction",
    "evaluate",
    "compare",
    "judge_name",
    "format_table",
]


def _flat(a: Tensor) -> Tensor:
    return a.reshape(a.shape[0], -1)


def validity(result: CounterfactualResult) -> Tensor:
    return result.success.float()


def target_probability(result: CounterfactualResult) -> Tensor:
    return result.target_prob


def l1(result: CounterfactualResult) -> Tensor:
    return _flat(result.x_cf - result.x).abs().mean(1)


def l1_sum(result: CounterfactualResult) -> Tensor:
    return _flat(result.x_cf - result.x).abs().sum(1)


def l2(result: CounterfactualResult) -> Tensor:
    return _flat(result.x_cf - result.x).norm(dim=1)


def sparsity(result: CounterfactualResult, tau: float = 0.05) -> Tensor:
    return (_flat(result.x_cf - result.x).abs() > tau).float().mean(1)


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def im1(result: CounterfactualResult, autoencoders, eps: float = 1e-8) -> Tensor:
    """IM1 with :class:`~cfwidgets.models.ClassAutoencoders`: lower = closer to the target
    class's data than to the original class's."""
    dev = _device_of(autoencoders)
    x_cf = result.x_cf.to(dev)
    t = result.target.to(dev)
    c = result.pred.to(dev)
    rt = _flat(x_cf - autoencoders.reconstruct(x_cf, t)).pow(2).sum(1)
    rc = _flat(x_cf - autoencoders.reconstruct(x_cf, c)).pow(2).sum(1)
    return (rt / (rc + eps)).cpu()


@torch.no_grad()
def im2(result: CounterfactualResult, autoencoders, eps: float = 1e-8) -> Tensor:
    """IM2: distance between the target-class and all-data reconstructions, scaled by the
    counterfactual's L1 norm (lower = more like the data of the target class)."""
    dev = _device_of(autoencoders)
    x_cf = result.x_cf.to(dev)
    t = result.target.to(dev)
    rt = autoencoders.reconstruct(x_cf, t)
    ra = autoencoders.reconstruct(x_cf, None)
    return (_flat(rt - ra).pow(2).sum(1) / (_flat(x_cf).abs().sum(1) + eps)).cpu()


@torch.no_grad()
@torch.no_grad()
def oracle_prediction(result: CounterfactualResult, oracle: nn.Module) -> Tensor:
    """``(B,)`` the class an independent classifier gives each counterfactual (in eval
    mode; the oracle's own mode is restored)."""
    was = oracle.training
    oracle.eval()
    try:
        return oracle(result.x_cf.to(_device_of(oracle))).argmax(1).cpu()
    finally:
        oracle.train(was)


def oracle_agreement(result: CounterfactualResult, oracle: nn.Module) -> Tensor:
    """1 where an independent classifier also predicts the target on the counterfactual."""
    return (oracle_prediction(result, oracle) == result.target).float()


MetricFn = Callable[[CounterfactualResult], Tensor]


def judge_name(model) -> str:
    """How a judge model is named in a metrics row: its zoo name (``model.zoo_meta``),
    else its class name (a model the zoo did not make)."""
    meta = getattr(model, "zoo_meta", None)
    if isinstance(meta, dict) and meta.get("name"):
        return str(meta["name"])
    return type(model).__name__


def evaluate(
    result: CounterfactualResult,
    *,
    autoencoders=None,
    oracle: nn.Module | None = None,
    tau: float = 0.05,
    extra: Mapping[str, MetricFn] | None = None,
    per_row: bool = False,
) -> dict:
    """One table row (means over the batch) of every metric that applies.

    Args:
        result: an image counterfactual result.
        autoencoders: class autoencoders (zoo ``"<dataset>/ae"``) for IM1/IM2.
        oracle: an independent classifier (zoo ``"<dataset>/oracle"``).
        tau: the pixel-change threshold of ``sparsity``.
        extra: further ``name -> fn(result) -> (B,)`` metrics (method-specific ones). A
            function with ``fn.aggregate = "median"`` is summarised by its median instead of
            its mean (heavy-tailed figures such as bits/dim).
        per_row: return the ``(B,)`` tensors instead of means.

    Examples::

        row = evaluate(res, autoencoders=zoo.load("mnist/ae"), oracle=zoo.load("mnist/oracle"))
    """
    if result.is_text:
        raise ValueError("evaluate() is for images; use cfwidgets.metrics.text for text results.")
    rows: dict[str, Tensor] = {
        "validity": validity(result),
        "target_prob": target_probability(result),
        "l1": l1(result),
        "l1_sum": l1_sum(result),
        "l2": l2(result),
        "sparsity": sparsity(result, tau),
    }
    if result.steps is not None:
        rows["steps"] = result.steps.float()
    if autoencoders is not None:
        rows["im1"] = im1(result, autoencoders)
        rows["im2"] = im2(result, autoencoders)
    if oracle is not None:
        rows["oracle"] = oracle_agreement(result, oracle)
    judges: dict[str, str] = {}
    if autoencoders is not None:
        judges["im1"] = judges["im2"] = judge_name(autoencoders)
    if oracle is not None:
        judges["oracle"] = judge_name(oracle)
    for name, fn in (extra or {}).items():
        rows[name] = fn(result).float().cpu()
        if getattr(fn, "judge", None):
            judges[name] = str(fn.judge)
    if per_row:
        return rows
    out: dict = {"method": result.meta.get("title", result.method), "n": len(result)}
    medians = {k for k, fn in (extra or {}).items() if getattr(fn, "aggregate", "mean") == "median"}
    out.update({k: float(v.median() if k in medians else v.mean()) for k, v in rows.items()})
    # which model produced each judged figure, so a reader can check it is not the model
    # the method steered with (format_table leaves this column out)
    out["judges"] = judges
    out["time_per_cf_s"] = float(result.meta.get("time_per_cf_s", float("nan")))
    if result.stopped:
        out["stopped"] = True
    return out


def compare(results: Mapping[str, CounterfactualResult] | Sequence[CounterfactualResult], **kw) -> list[dict]:
    """:func:`evaluate` every result (same keyword arguments); a list of table rows."""
    items = results.items() if isinstance(results, Mapping) else [(None, r) for r in results]
    rows = []
    for name, res in items:
        row = evaluate(res, **kw)
        if name is not None:
            row["method"] = name
        rows.append(row)
    return rows


_FORMATS = {"validity": "{:.0%}", "oracle": "{:.0%}", "target_prob": "{:.3f}", "l1": "{:.4f}",
            "l1_sum": "{:.1f}", "l2": "{:.2f}", "sparsity": "{:.1%}", "im1": "{:.3f}", "im2": "{:.4f}",
            "steps": "{:.0f}", "time_per_cf_s": "{:.3f}", "n": "{:d}"}


def format_table(rows: Sequence[dict], fmt: str = "text") -> str:
    """Render table rows as aligned text, markdown or HTML."""
    if not rows:
        return ""
    cols: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in cols and not isinstance(v, (dict, list)):  # e.g. "judges"
                cols.append(k)

    def cell(r, k):
        v = r.get(k, "")
        if isinstance(v, float):
            f = _FORMATS.get(k, "{:.4g}")
            try:
                return f.format(v)
            except ValueError:
                return f"{v:.4g}"
        return str(v)

    table = [[cell(r, k) for k in cols] for r in rows]
    if fmt == "html":
        head = "".join(f"<th>{c}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in table)
        return f'<table class="cfw-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in table]
        return "\n".join(lines)
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table]
    return "\n".join(lines)

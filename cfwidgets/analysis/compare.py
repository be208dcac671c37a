"""Every registered method on the same input, the same target and the same budget: the
runs and the metrics rows behind the comparison dashboard
(:class:`cfwidgets.widgets.CompareWidget`), its exports and the ``cfwidgets demo`` report.

No widgets and no HTML here (HTML: :mod:`cfwidgets.viz.compare`), so a script, the command
line and the dashboard run the same code and cannot disagree.

- :func:`registered` lists the methods of :data:`cfwidgets.methods.METHODS` for a modality,
  so a method registered later appears in every comparison without a change here.
- :func:`build_methods` makes each from its zoo models (``Method.from_zoo(dataset)``); a
  method that has none for the data set becomes a cell that says why.
- :func:`load_judges` loads the independent judges: for images the class autoencoders
  ``<ds>/ae`` (realism IM1/IM2) and the oracle ``<ds>/oracle``; for text the sentiment
  judge ``reviews/judge`` and the fluency judge ``reviews/fluency-judge`` (a character LM
  trained on text no text model saw). :func:`run_comparison` refuses
  to score a method with a judge that is one of its own models.
- :func:`run_comparison` runs the methods one after another, or ``workers`` at a time on
  threads (torch releases the GIL in its kernels). That pays when the batches are too small
  for torch's own threads: ``cfwidgets demo`` (6 digits, one torch thread per method, two
  at a time, the text methods beside them) took 27.8 s instead of 38.3 s on the 2-core
  machine (medians of 3). Methods may share models: :func:`~cfwidgets.methods.base.prepared`
  restores a shared model's flags only when the last run that uses it ends.
  Each method gets the same budget (:func:`budget_overrides`), a callback (progress and
  Stop for all: one ``threading.Event``), and its errors are kept in its cell while the
  others run on.

Examples::

    from cfwidgets import data
    from cfwidgets.analysis.compare import build_methods, load_judges, run_comparison
    x = data.load_mnist("test").x[:1]
    comp = run_comparison(build_methods("image", "mnist"), x, target=3, budget=100,
                          judges=load_judges("mnist"))
    comp.rows(sort_by="oracle")          # one metrics row per method, best first
    comp.to_dict()                       # plain data (lists, floats, strings)
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..config import knobs
from ..methods import METHODS, SKIPPED
from ..methods.base import CounterfactualMethod
from ..metrics.core import evaluate, judge_name
from ..protocols import StepState
from ..result import CounterfactualResult

__all__ = ["BUDGET_KNOBS", "Cell", "Comparison", "Judges", "budget_overrides", "build_methods",
           "load_judges", "new_comparison", "registered", "run_comparison", "score", "SORT_KEYS"]

#: the knob that is a method's step budget, in order of preference
BUDGET_KNOBS = ("steps", "max_flips")

#: metrics the table sorts by -> True where higher is better
SORT_KEYS = {"validity": True, "target_prob": True, "l1": False, "l2": False, "sparsity": False,
             "im1": False, "im2": False, "oracle": True, "flip_rate": True, "judge_agreement": True,
             "edit_distance": False, "bleu": True, "ppl_ratio": False, "time_s": False}


def registered(modality: str = "image") -> list[str]:
    """Names of the registered methods for ``modality`` (``"image"`` or ``"text"``), in
    registry order."""
    if modality not in ("image", "text"):
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}.")
    return [n for n, c in METHODS.items() if getattr(c, "modality", "image") == modality]


def budget_overrides(method: CounterfactualMethod | type, budget: int | None) -> dict[str, int]:
    """``{knob: value}`` giving ``method`` the step budget ``budget`` through its budget knob
    (:data:`BUDGET_KNOBS`), clipped to the knob's range; ``{}`` for ``None`` or a method
    without one. A method class with a ``split_budget(budget) -> dict`` classmethod (its
    updates come from several knobs) splits the budget itself."""
    if budget is None:
        return {}
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int (steps per method) or None, got {budget!r}.")
    cls = method if isinstance(method, type) else type(method)
    split = getattr(cls, "split_budget", None)
    if callable(split):  # a method whose updates come from several knobs (DISC's stages)
        return dict(split(budget))
    by_name = {k.name: k for k in knobs(cls.Config)}
    for name in BUDGET_KNOBS:
        k = by_name.get(name)
        if k is not None:
            lo = int(k.min) if k.min is not None else 1
            hi = int(k.max) if k.max is not None else budget
            return {name: max(lo, min(hi, budget))}
    return {}


@dataclass
class Judges:
    """The models that score every method alike; none of them may be steered with.

    ``autoencoders`` / ``oracle`` (images: IM1/IM2 and oracle agreement), ``judge`` / ``lm``
    (text: judge agreement and the perplexity ratio; :func:`load_judges` gives
    ``reviews/fluency-judge`` as ``lm``)."""

    autoencoders: Any = None
    oracle: Any = None
    judge: Any = None
    lm: Any = None

    def names(self) -> dict[str, str]:
        out = {}
        for key, m in (("realism", self.autoencoders), ("oracle", self.oracle),
                       ("judge", self.judge), ("fluency", self.lm)):
            if m is not None:
                out[key] = judge_name(m)
        return out

    def models(self) -> list:
        return [m for m in (self.autoencoders, self.oracle, self.judge, self.lm) if m is not None]


def load_judges(dataset: str, *, device: str = "auto") -> Judges:
    """The independent judges of ``dataset`` from the zoo (those that exist)."""
    from .. import zoo

    have = zoo.recipes()
    if dataset in ("reviews", "imdb"):
        # fluency: the character LM trained on text no text model saw (AIP-text ranks its
        # candidates with reviews/lm, so that one would leave AIP-text's row unjudged)
        lm_name = next((n for n in ("reviews/fluency-judge", "reviews/lm") if n in have), None)
        return Judges(judge=zoo.load("reviews/judge") if "reviews/judge" in have else None,
                      lm=zoo.load(lm_name, device=device) if lm_name else None)
    return Judges(
        autoencoders=zoo.load(f"{dataset}/ae", device=device) if f"{dataset}/ae" in have else None,
        oracle=zoo.load(f"{dataset}/oracle", device=device) if f"{dataset}/oracle" in have else None)


def build_methods(names: str | Sequence[str] | None = None, dataset: str = "mnist", *,
                  device: str = "auto") -> dict[str, CounterfactualMethod | BaseException]:
    """``{name: method}`` built with each method's zoo models for ``dataset``.

    ``names``: method names, a modality (``"image"``, ``"text"``: every registered method of
    it) or ``None`` (the modality of ``dataset``). A method that cannot be built (no zoo
    models for the data set, a missing extra) maps to its exception, which its cell shows."""
    if names is None:
        names = "text" if dataset in ("reviews", "imdb") else "image"
    if isinstance(names, str):
        names = registered(names) if names in ("image", "text") else [names]
    out: dict[str, CounterfactualMethod | BaseException] = {}
    for name in names:
        if name in SKIPPED and name not in METHODS:
            out[name] = ImportError(f"{name} is not available: {SKIPPED[name]}")
            continue
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; registered: {sorted(METHODS)}.")
        try:
            out[name] = METHODS[name].from_zoo(dataset, device=device)
        except Exception as e:  # noqa: BLE001 - kept for the method's cell
            out[name] = e
    return out


@dataclass
class Cell:
    """One method's run: its status (``pending``, ``running``, ``done``, ``stopped``,
    ``failed``, ``not run``), result, metrics row, error and progress."""

    name: str
    title: str
    method: CounterfactualMethod | None = None
    status: str = "pending"
    result: CounterfactualResult | None = None
    row: dict | None = None
    error: str | None = None
    traceback: str | None = None
    overrides: dict = field(default_factory=dict)
    step: int = 0
    total: int = 0
    time_s: float = float("nan")

    def to_dict(self) -> dict:
        res = self.result
        out: dict[str, Any] = {"name": self.name, "title": self.title, "status": self.status,
                               "error": self.error, "budget": dict(self.overrides),
                               "time_s": self.time_s, "metrics": _plain(self.row)}
        if res is not None:
            out["x_cf"] = list(res.x_cf) if res.is_text else res.x_cf.tolist()
            out["pred_cf"] = res.pred_cf.tolist()
            out["success"] = res.success.tolist()
            out["target_prob"] = res.target_prob.tolist()
            out["stopped"] = bool(res.stopped)
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Tensor):
        return v.tolist()
    return v


@dataclass
class Comparison:
    """The methods' cells on one input (or a batch) and target, with the judges' names."""

    x: Any
    target: Tensor
    modality: str
    cells: dict[str, Cell]
    judges: dict[str, str]
    budget: int | None
    class_names: list[str] | None = None
    time_s: float = float("nan")

    @property
    def done(self) -> bool:
        return all(c.status not in ("pending", "running") for c in self.cells.values())

    def rows(self, sort_by: str | None = None, descending: bool | None = None) -> list[dict]:
        """One metrics row per method that produced a result (``method`` = its title,
        ``time_s`` = wall seconds), sorted by ``sort_by``
        (default order: higher first where higher is better, see :data:`SORT_KEYS`); rows
        without the key go last."""
        rows = [dict(c.row) for c in self.cells.values() if c.row is not None]
        if sort_by is None:
            return rows
        if not any(sort_by in r for r in rows) and sort_by not in SORT_KEYS:
            raise ValueError(f"cannot sort by {sort_by!r}; metrics: {sorted({k for r in rows for k in r})}.")
        desc = SORT_KEYS.get(sort_by, True) if descending is None else bool(descending)

        def key(r):
            v = r.get(sort_by)
            ok = isinstance(v, (int, float)) and v == v
            return (0 if ok else 1, (-v if desc else v) if ok else 0.0)

        return sorted(rows, key=key)

    def errors(self) -> dict[str, str]:
        return {n: c.error for n, c in self.cells.items() if c.error}

    def to_dict(self) -> dict:
        """Plain data for code (JSON-ready): input, target, judges, budget and every cell."""
        x = list(self.x) if self.modality == "text" else self.x.tolist()
        return {"modality": self.modality, "x": x, "target": self.target.tolist(),
                "class_names": self.class_names, "budget": self.budget, "judges": dict(self.judges),
                "time_s": self.time_s, "methods": {n: c.to_dict() for n, c in self.cells.items()}}


def score(result: CounterfactualResult, judges: Judges | None) -> dict:
    """The metrics row of one result, judged by ``judges`` (plus ``time_s``)."""
    j = judges or Judges()
    if result.is_text:
        from ..metrics.text import evaluate_text

        row = evaluate_text(result, lm=j.lm, judge=j.judge, similarity_model=False,
                            fluency=j.lm is not None)
    else:
        row = evaluate(result, autoencoders=j.autoencoders, oracle=j.oracle)
    row["time_s"] = float(result.meta.get("wall_time_s", float("nan")))
    return row


def _zoo_name(model) -> str | None:
    meta = getattr(model, "zoo_meta", None)
    return str(meta["name"]) if isinstance(meta, dict) and meta.get("name") else None


def _steered_by(method: CounterfactualMethod, judges: Judges) -> list[str]:
    """The judges that are one of ``method``'s own models (the same object, or the same
    zoo model loaded twice)."""
    mods = list(method.modules().values())
    own_ids = {id(m) for m in mods}
    own_names = {n for n in map(_zoo_name, mods) if n}
    return [judge_name(j) for j in judges.models()
            if id(j) in own_ids or (_zoo_name(j) is not None and _zoo_name(j) in own_names)]


StepHook = Callable[[str, int, StepState], None]


def run_comparison(
    methods: Mapping[str, CounterfactualMethod | BaseException],
    x: Any,
    target: int | Sequence[int] | Tensor,
    *,
    budget: int | None = None,
    judges: Judges | None = None,
    seed: int = 0,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    stop: threading.Event | None = None,
    on_start: Callable[[Cell], None] | None = None,
    on_step: StepHook | None = None,
    on_done: Callable[[Cell], None] | None = None,
    comparison: Comparison | None = None,
    workers: int = 1,
) -> Comparison:
    """Run every method on ``x`` for ``target`` with the same ``budget``, one after another
    (``workers > 1``: that many at once, on threads; see the module docstring for when
    that pays).

    Args:
        methods: ``{name: method}`` (e.g. from :func:`build_methods`); an exception in
            place of a method becomes a failed cell.
        x: images ``(B, C, H, W)`` or sentences; ``target``: one class or ``(B,)``.
        budget: steps per method (through :func:`budget_overrides`); ``None``: each
            method's own default.
        judges: the independent scorers (:func:`load_judges`).
        overrides: further knobs per method name, e.g. ``{"diffeomorphic": {"lr": 0.1}}``.
        stop: set it (from any thread) to stop the running method after its current step
            and skip those not started (``status="not run"``).
        on_start: ``fn(cell)`` as a method starts.
        on_done: ``fn(cell)`` as a method ends (done, stopped or failed).
        on_step: ``fn(name, step, state)`` after every step.
        comparison: fill this one (a widget shows its cells before the run starts).

    A method that raises is recorded in its cell (``status="failed"``, ``error``,
    ``traceback``) and the others run on. With ``workers > 1`` methods may share a model
    (the classifier) at once; that is safe for models in eval mode (the zoo's are; a
    method switches a model left in train mode to eval for its call, which two threads
    would race on).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1 (methods run at once), got {workers!r}.")
    stop = stop or threading.Event()
    judges = judges or Judges()
    comp = comparison or new_comparison(methods, x, target, budget=budget, judges=judges)
    t_all = time.perf_counter()

    def run_one(cell: Cell) -> None:
        if cell.status != "pending":  # failed at construction
            if on_done:
                on_done(cell)
            return
        if stop.is_set():
            cell.status = "not run"
            if on_done:
                on_done(cell)
            return
        cell.status = "running"
        cell.step = 0
        if on_start:
            on_start(cell)
        t0 = time.perf_counter()

        def cb(step: int, state: StepState) -> bool:
            cell.step, cell.total = step + 1, int(state.total)
            if on_step:
                on_step(cell.name, step, state)
            return stop.is_set()

        try:
            # a judge the method steers with (e.g. AIP-text ranks its candidates with the
            # fluency LM) does not score it: its figures are left out of this row
            mine = _steered_by(cell.method, judges)
            own_judges = Judges(**{f: (None if m is not None and judge_name(m) in mine else m)
                                   for f, m in vars(judges).items()})
            knobs_ = {**cell.overrides, **dict((overrides or {}).get(cell.name, {}))}
            res = cell.method.explain(x, comp.target, callback=cb, generator=seed, **knobs_)
            cell.result = res
            cell.row = score(res, own_judges)
            cell.row["method"] = cell.title
            if mine:
                cell.row["not_judged_by"] = mine
            cell.status = "stopped" if res.stopped else "done"
        except Exception as e:  # noqa: BLE001 - kept in the cell; the others run on
            cell.status = "failed"
            cell.error = f"{type(e).__name__}: {e}"
            cell.traceback = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        cell.time_s = time.perf_counter() - t0
        if on_done:
            on_done(cell)

    cells = list(comp.cells.values())
    if workers == 1:
        for cell in cells:
            run_one(cell)
    else:
        # threads: torch releases the GIL inside its kernels, so two methods can use two
        # cores (give torch one thread each, torch.set_num_threads(1), or they oversubscribe)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cfwidgets-compare") as ex:
            list(ex.map(run_one, cells))
    comp.time_s = time.perf_counter() - t_all
    return comp


def new_comparison(methods: Mapping[str, CounterfactualMethod | BaseException], x: Any,
                   target: int | Sequence[int] | Tensor, *, budget: int | None = None,
                   judges: Judges | None = None) -> Comparison:
    """The cells (all ``pending``, or ``failed`` for an exception in place of a method) of a
    comparison about to run; :func:`run_comparison` fills them."""
    if not methods:
        raise ValueError("no methods to compare: pass {name: method}, e.g. build_methods('image', 'mnist').")
    modality = "text" if isinstance(x, (list, tuple)) else "image"
    n = len(x)
    t = torch.as_tensor(target).long().reshape(-1).cpu()
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"target must be one class or one per input ({n}), got {t.numel()}.")
    cells: dict[str, Cell] = {}
    names = None
    for name, m in methods.items():
        if isinstance(m, BaseException):
            cls = METHODS.get(name)
            cells[name] = Cell(name, (cls.title if cls else "") or name, status="failed",
                               error=f"{type(m).__name__}: {m}")
            continue
        if not isinstance(m, CounterfactualMethod):
            raise TypeError(f"methods[{name!r}] must be a CounterfactualMethod, got {type(m).__name__}.")
        if getattr(m, "modality", "image") != modality:
            cells[name] = Cell(name, m.title or name, m, status="failed",
                               error=f"ValueError: {name} explains {m.modality}, the input is {modality}.")
            continue
        names = names or m.class_names
        cells[name] = Cell(name, m.title or name, m, overrides=budget_overrides(m, budget))
    return Comparison(x=x, target=t, modality=modality, cells=cells,
                      judges=(judges or Judges()).names(), budget=budget, class_names=names)

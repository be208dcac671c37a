"""Explaining a whole data set: batches streamed to disk as they finish, and resumed.

:func:`explain_dataset` runs an image method over the first ``n`` rows of a data set in
fixed batches and writes each finished batch as one chunk; :func:`load_results` reads the
folder back. An interrupted run (Ctrl-C, a crash, ``kill -9``) started again with the same
arguments skips the chunks already on disk and computes only the rest, and the output
equals an uninterrupted run row for row.

Storage (one folder per run)::

    out/manifest.json                  the run's identity, metadata, finished chunks
    out/chunk-000000.safetensors       rows [0, B): one tensor per column
    out/chunk-000001.safetensors       rows [B, 2B) ...

Why safetensors chunks and not Parquet: pyarrow is not a dependency (nor installed in the
project's environment), while ``safetensors`` already is; a chunk is columnar (one
contiguous tensor per column: images, targets, per-row metrics), memory-mappable, has no
pickle, and loads straight into torch. The columns are ``index, x, x_cf, label, target,
pred, pred_cf, probs, probs_cf, success, skipped, target_prob, l1, l2, steps, nonfinite``.

Crash safety: a chunk is written to a temporary file, flushed to disk and renamed into
place (atomic on POSIX), then the manifest is rewritten the same way with the chunk
listed. A chunk that is not listed (a kill between the two renames) or whose size does not
match is computed again; a temporary file left by a kill is overwritten when its chunk
is. Each batch is seeded from ``(seed, chunk number)``, so a batch's result does not
depend on whether the batches before it ran in the same process. One process at a time
may write a folder (a file lock).

Where the batches run (``backend=``): ``"local"`` runs them one after another in this
process; ``"ray"`` makes each batch a Ray task (Ray schedules them over the cluster's CPUs
or GPUs and retries a task whose worker died, ``max_retries``) while this process stays
the only writer: it stores each chunk as its task finishes. A chunk's content depends only
on the method, the data rows and the chunk's seed, so both backends write the same rows.

Targets (``target=``):

- ``"next"``: ``(label + 1) mod K`` (needs labels);
- ``"runner-up"``: the classifier's second most probable class;
- ``"random"``: uniform over the classes other than the classifier's prediction, seeded
  per batch;
- an ``int`` K: class K for every row; a ``(N,)`` tensor: one class per row.

A row whose target is the class the classifier already predicts (possible with ``"next"``
for a misclassified row, and with a fixed K for the rows predicted as K) has no
counterfactual to search for: it is **skipped**, not refused, so one such row does not stop
a data-set run. It stays in the output (so rows keep their data-set index) with
``skipped = True``, ``x_cf = x``, ``success = False``, ``steps = 0``; leave skipped rows out
of summaries (``res.explained`` is the mask of the others). Methods that allow the same
class (``allow_same_class``) skip nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["explain_dataset", "load_results", "DatasetResults", "MixedRunError", "RunBusyError", "TARGET_RULES"]

#: the named target rules (an int or a tensor of classes is also accepted)
TARGET_RULES = ("next", "random", "runner-up")
#: where the batches run (see ``explain_dataset(backend=...)``)
BACKENDS = ("local", "ray")
FORMAT = "cfwidgets-batch/1"
MANIFEST = "manifest.json"
_TMP = ".tmp"


class MixedRunError(ValueError):
    """The output folder holds a run made with another configuration."""


class RunBusyError(RuntimeError):
    """Another process is writing to the output folder."""


@dataclass(frozen=True)
class DatasetResults:
    """A data-set run read back by :func:`load_results` (tensors on the CPU, rows in
    data-set order).

    Attributes:
        index: ``(N,)`` row numbers in the data set.
        x, x_cf: ``(N, C, H, W)`` queries and counterfactuals (``x_cf = x`` for skipped rows).
        label: ``(N,)`` the data set's labels (-1 where the data had none).
        target, pred, pred_cf: ``(N,)`` target class, prediction of ``x`` and of ``x_cf``.
        success: ``(N,)`` bool, ``pred_cf == target`` (False for skipped rows).
        skipped: ``(N,)`` bool, rows whose target was already the prediction.
        metrics: per-row ``validity, target_prob, l1, l2, steps, nonfinite`` and ``probs``,
            ``probs_cf`` ``(N, K)``.
        meta: method, config, seed, version, target rule, batch size, data, device,
            ``complete`` (False for an interrupted run: only its finished chunks are here).
    """

    index: Tensor
    x: Tensor
    x_cf: Tensor
    label: Tensor
    target: Tensor
    pred: Tensor
    pred_cf: Tensor
    success: Tensor
    skipped: Tensor
    metrics: dict
    meta: dict

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def explained(self) -> Tensor:
        """``(N,)`` bool: the rows that were searched (not skipped)."""
        return ~self.skipped

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    def __repr__(self) -> str:
        ok = int(self.success.sum())
        return (f"DatasetResults(method={self.meta.get('method')!r}, rows={len(self)}/"
                f"{self.meta.get('n')}, success={ok}, skipped={int(self.skipped.sum())}, "
                f"complete={self.complete})")


# ------------------------------------------------------------------ explain_dataset
def explain_dataset(
    method: Any,
    data: Any,
    target: str | int | Tensor = "next",
    *,
    out: str | os.PathLike,
    batch_size: int = 256,
    n: int | None = None,
    split: str = "test",
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = True,
    on_chunk: Callable[[dict], Any] | None = None,
    backend: str = "local",
    address: str | None = None,
    max_retries: int = 3,
    **knobs: Any,
) -> Path:
    """Explain the first ``n`` rows of ``data`` batch by batch, streaming each finished
    batch to the folder ``out``; resume an interrupted run there.

    Args:
        method: a registered method name (built with ``from_zoo`` for the data set, so
            ``data`` must then be a data-set name or an ``ImageDataset``) or a
            :class:`~cfwidgets.methods.CounterfactualMethod`.
        data: a data-set name (``"mnist"``, loaded with ``split``), an ``ImageDataset``, a
            pair ``(x, y)`` or a tensor ``x`` of images ``(N, C, H, W)`` (no labels: then
            ``target="next"`` is refused).
        target: ``"next"``, ``"random"``, ``"runner-up"``, a class index, or ``(N,)``
            classes (see the module docstring; rows already predicted as their target
            are skipped and flagged).
        out: the run's folder (created). A folder holding a run of another configuration
            (method, models, knobs, target rule, batch size, seed, data, ``n``, device type)
            raises :class:`MixedRunError`.
        batch_size: rows per batch, and per chunk on disk.
        n: the first ``n`` rows (``None`` = all).
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"``. A method instance is moved there only
            when a device is named; with ``"auto"`` it stays where it is.
        seed: run seed; batch ``i`` is explained with a seed derived from ``(seed, i)``.
        progress: show a progress bar (rows).
        on_chunk: called as ``on_chunk(info)`` after each chunk is safely on disk, with
            ``info = {"chunk", "rows": (start, stop), "path", "done", "total"}``.
        backend: ``"local"`` (this process, batch after batch) or ``"ray"``: each batch is
            a Ray task (one GPU per task when ``device`` is CUDA, else one CPU), scheduled and
            retried by Ray (``max_retries`` on a lost worker); this process writes the chunks
            as the tasks finish, so the store, its identity and the resume logic are the same
            (a run started on one backend resumes on the other). Needs ``pip install ray``.
        address: the Ray cluster to join (``"auto"``, ``"ray://host:10001"``); ``None``
            joins the cluster this process is already connected to, or starts a local one.
        max_retries: Ray's retries of a task whose worker died (ignored locally).
        **knobs: the method's knobs (e.g. ``steps=200``), the same for every batch. A
            method's ``dataset_knobs`` apply unless given here (Diffeomorphic:
            ``path_density=False``, since the path is not stored).

    Returns:
        the folder (read it with :func:`load_results`).

    Examples::

        from cfwidgets.batch import explain_dataset, load_results
        explain_dataset("wachter", "mnist", "next", out="runs/wachter", n=1000, steps=200)
        res = load_results("runs/wachter")
        res.success[res.explained].float().mean()
    """
    from ._utils import resolve_device

    _check_int("batch_size", batch_size, 1)
    if n is not None:
        _check_int("n", n, 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
    if on_chunk is not None and not callable(on_chunk):
        raise TypeError(f"on_chunk must be callable, got {type(on_chunk).__name__}.")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}.")
    if address is not None and backend != "ray":
        raise ValueError(f"address={address!r} names a Ray cluster: pass backend='ray' with it.")
    _check_int("max_retries", max_retries, 0)
    if backend == "ray":
        _import_ray()  # refuse before any work when Ray is missing
    x_all, y_all, data_desc = _resolve_data(data, split)
    total = x_all.shape[0] if n is None else min(n, x_all.shape[0])
    method = _resolve_method(method, data_desc, device)
    if method.modality != "image":
        raise ValueError(f"{type(method).__name__} explains {method.modality}; explain_dataset runs "
                         f"image methods (explain sentences with method.explain(texts, target)).")
    rule = _check_target(target, y_all, total)
    knobs = {**method.dataset_knobs, **knobs}  # the method's data-set defaults, unless set
    dev = method.device if device == "auto" else resolve_device(device)
    if total:  # the class count, to refuse a class >= K before the folder is made
        with torch.no_grad():
            k = method.classifier(x_all[:1].to(dev)).shape[-1]
        _check_classes(rule, k, total)
    identity = {
        "format": FORMAT,
        "method": method.name,
        "method_class": f"{type(method).__module__}.{type(method).__qualname__}",
        "models": _models_fingerprint(method),
        "config": _config_of(method, knobs),
        "target": _describe_target(target),
        "batch_size": batch_size,
        "seed": seed,
        "n": total,
        "data": {**data_desc, "sha256": _data_fingerprint(x_all[:total], y_all, total)},
        "device_type": dev.type,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        manifest = _open_manifest(out, identity, method)
        done = _finished_chunks(out, manifest)
        chunks = [(i, s, min(s + batch_size, total)) for i, s in enumerate(range(0, total, batch_size))]
        bar = _bar(progress, total, sum(stop - start for i, start, stop in chunks if i in done),
                   method.name)
        todo = [c for c in chunks if c[0] not in done]

        def store(i: int, start: int, stop: int, cols: dict[str, Tensor], wall: float) -> None:
            _store_chunk(out, manifest, i, start, stop, cols, wall, backend)
            done.add(i)
            if bar is not None:
                bar.update(stop - start)
            if on_chunk is not None:
                on_chunk({"chunk": i, "rows": (start, stop), "path": out / f"chunk-{i:06d}.safetensors",
                          "done": len(done), "total": len(chunks)})

        try:
            if backend == "ray":
                _run_on_ray(method, x_all, y_all, rule, todo, seed, knobs, dev, address, max_retries,
                            store)
            else:
                for i, start, stop in todo:
                    t0 = time.perf_counter()
                    cols = _explain_chunk(method, x_all[start:stop],
                                          None if y_all is None else y_all[start:stop],
                                          rule, start, _chunk_seed(seed, i), knobs)
                    store(i, start, stop, cols, time.perf_counter() - t0)
        finally:
            if bar is not None:
                bar.close()
        if not manifest["complete"]:
            manifest["complete"] = True
            _write_json(out / MANIFEST, manifest)
    return out


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}.")


def _store_chunk(out: Path, manifest: dict, i: int, start: int, stop: int,
                 cols: dict[str, Tensor], wall: float, backend: str) -> None:
    """Write chunk ``i`` (temporary file, fsync, atomic rename), then list it in the
    manifest the same way: a kill between the two leaves the chunk unlisted (redone)."""
    from safetensors.torch import save_file

    path = out / f"chunk-{i:06d}.safetensors"
    tmp = path.with_name(path.name + _TMP)
    save_file(cols, str(tmp), metadata={"chunk": str(i), "rows": f"{start}:{stop}"})
    _fsync(tmp)
    os.replace(tmp, path)
    manifest["chunks"] = [c for c in manifest["chunks"] if c["chunk"] != i] + [{
        "chunk": i, "file": path.name, "rows": [start, stop],
        "bytes": path.stat().st_size, "wall_s": round(wall, 4), "backend": backend}]
    manifest["chunks"].sort(key=lambda c: c["chunk"])
    _write_json(out / MANIFEST, manifest)


# ------------------------------------------------------------------------------ Ray
def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("backend='ray' needs Ray: pip install 'cfwidgets[ray]' (or pip install "
                          "ray), or use backend='local'.") from None
    return ray


def _ray_chunk(method, x: Tensor, y: Tensor | None, rule, start: int, seed: int, knobs: dict,
               device_type: str) -> tuple[dict[str, Tensor], float]:
    """A Ray task: one batch on the worker's device (Ray sets the worker's visible GPU)."""
    if device_type == "cuda":
        method.to("cuda")
    t0 = time.perf_counter()
    cols = _explain_chunk(method, x, y, rule, start, seed, knobs)
    return cols, time.perf_counter() - t0


def _run_on_ray(method, x_all: Tensor, y_all: Tensor | None, rule, todo: list, seed: int,
                knobs: dict, dev: torch.device, address: str | None, max_retries: int,
                store: Callable) -> None:
    """Each batch of ``todo`` as a Ray task; results are stored as they arrive (any order:
    the manifest lists chunks by number). At most twice the cluster's task slots are in
    flight, so the object store holds a bounded number of batches."""
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    if not todo:
        return
    gpu = dev.type == "cuda"
    slots = ray.cluster_resources().get("GPU" if gpu else "CPU", 1.0)
    task = ray.remote(num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1,
                      max_retries=max_retries)(_ray_chunk)
    ref_method = ray.put(method.to("cpu") if gpu else method)  # CPU copy: the worker moves it
    pending: dict[Any, tuple[int, int, int]] = {}
    queue = list(todo)
    limit = max(2, int(2 * slots))
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                i, start, stop = queue.pop(0)
                ref = task.remote(ref_method, x_all[start:stop],
                                  None if y_all is None else y_all[start:stop], rule, start,
                                  _chunk_seed(seed, i), knobs, dev.type)
                pending[ref] = (i, start, stop)
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, start, stop = pending.pop(ref)
                try:
                    cols, wall = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    raise RuntimeError(f"batch {i} (rows {start}:{stop}) failed on Ray: "
                                       f"{e.cause!r}") from e.cause
                store(i, start, stop, cols, wall)
    finally:
        for ref in pending:
            ray.cancel(ref)
        if gpu:
            method.to(dev)


def _resolve_data(data: Any, split: str) -> tuple[Tensor, Tensor | None, dict]:
    """``(x, y or None, description)`` of the accepted data forms."""
    from .data import load_dataset
    from .data.images import ImageDataset

    if isinstance(data, str):
        data = load_dataset(data, split)
    if isinstance(data, ImageDataset):
        return data.x, data.y, {"name": data.name, "split": data.split}
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        x = _as_images(x)
        y = torch.as_tensor(y)
        if y.dtype.is_floating_point or y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"labels y must be {x.shape[0]} integer classes (shape ({x.shape[0]},)), "
                             f"got dtype {y.dtype}, shape {tuple(y.shape)}.")
        return x, y.long(), {"name": None, "split": None}
    if isinstance(data, Tensor):
        return _as_images(data), None, {"name": None, "split": None}
    raise TypeError(f"data must be a data-set name, an ImageDataset, a pair (x, y) or a tensor of "
                    f"images, got {type(data).__name__}.")


def _as_images(x: Any) -> Tensor:
    from .methods.base import check_images

    return check_images(x)


def _resolve_method(method: Any, data_desc: dict, device):
    from .methods import CounterfactualMethod, get_method

    if isinstance(method, str):
        try:
            cls = get_method(method)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if not data_desc.get("name"):
            raise ValueError(f"method={method!r} is built from the zoo of a named data set; with "
                             f"tensors as data pass a method instance, e.g. "
                             f"{cls.__name__}(classifier).")
        return cls.from_zoo(data_desc["name"], device=device)
    if isinstance(method, CounterfactualMethod):
        if device != "auto":
            method.to(device)
        return method
    raise TypeError(f"method must be a method name or a CounterfactualMethod, got "
                    f"{type(method).__name__}.")


def _check_target(target: Any, y: Tensor | None, total: int):
    """The target rule, checked up front: a name, an int or a ``(>= total,)`` tensor."""
    if isinstance(target, str):
        if target not in TARGET_RULES:
            raise ValueError(f"target must be one of {list(TARGET_RULES)}, a class index or a tensor "
                             f"of classes, got {target!r}.")
        if target == "next" and y is None:
            raise ValueError("target='next' is (label + 1) mod K and needs labels: pass data as "
                             "(x, y) or an ImageDataset, or use target='runner-up' or 'random'.")
        return target
    if isinstance(target, bool):
        raise TypeError("target must be a rule name, a class index or a tensor, got a bool.")
    if isinstance(target, int):
        if target < 0:
            raise ValueError(f"target class must be >= 0, got {target}.")
        return target
    if isinstance(target, Tensor):
        t = target.detach().cpu()
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"a target tensor must hold integer classes, got dtype {t.dtype}.")
        if t.ndim == 0:
            return int(t)
        if t.ndim != 1 or t.shape[0] < total:
            raise ValueError(f"a target tensor must give one class per row: shape (N,) with N >= "
                             f"{total} rows to explain, got {tuple(t.shape)}.")
        return t.long()
    raise TypeError(f"target must be one of {list(TARGET_RULES)}, an int or a tensor, got "
                    f"{type(target).__name__}.")


def _describe_target(target: Any) -> Any:
    if isinstance(target, Tensor) and target.ndim >= 1:
        t = target.detach().cpu().long().contiguous()
        return {"tensor_sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]}
    return int(target) if isinstance(target, Tensor) else target


def _chunk_seed(seed: int, chunk: int) -> int:
    """The seed of batch ``chunk``: a hash of the run seed and the chunk number."""
    digest = hashlib.sha256(f"cfwidgets-batch:{seed}:{chunk}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _check_classes(rule: Any, k: int, total: int) -> None:
    """A fixed class, or the first ``total`` classes of a target tensor, must lie in [0, K)."""
    if isinstance(rule, int) and rule >= k:
        raise ValueError(f"target class {rule} out of range: the classifier has {k} classes "
                         f"(0..{k - 1}).")
    if isinstance(rule, Tensor):
        t = rule[:total]
        bad = (t < 0) | (t >= k)
        if bool(bad.any()):
            raise ValueError(f"target classes {t[bad].tolist()[:10]} out of range: the classifier "
                             f"has {k} classes (0..{k - 1}).")


def _chunk_targets(rule: Any, probs: Tensor, y: Tensor | None, start: int, g: torch.Generator) -> Tensor:
    """``(B,)`` targets of one batch under ``rule`` (CPU; classes checked up front)."""
    b, k = probs.shape
    pred = probs.argmax(1)
    if rule == "next":
        return (y + 1) % k
    if rule == "runner-up":
        return probs.topk(2, dim=1).indices[:, 1]
    if rule == "random":  # uniform over the K-1 classes other than the prediction
        return (pred + torch.randint(1, k, (b,), generator=g)) % k
    if isinstance(rule, int):
        return torch.full((b,), rule, dtype=torch.long)
    return rule[start:start + b]


@torch.no_grad()
def _explain_chunk(method, x: Tensor, y: Tensor | None, rule, start: int, seed: int,
                   knobs: dict) -> dict[str, Tensor]:
    """One batch: targets, the search on the rows not skipped, the chunk's columns."""
    b = x.shape[0]
    dev = method.device
    probs = method.classifier(x.to(dev)).float().softmax(-1).cpu()
    g = torch.Generator().manual_seed(seed)
    target = _chunk_targets(rule, probs, y, start, g).long()
    pred = probs.argmax(1)
    skipped = (target == pred) if not method.allow_same_class else torch.zeros(b, dtype=torch.bool)
    x_cf, probs_cf = x.clone(), probs.clone()
    steps = torch.zeros(b, dtype=torch.long)
    nonfinite = torch.zeros(b, dtype=torch.bool)
    keep = (~skipped).nonzero()[:, 0]
    if len(keep):
        with torch.enable_grad():
            res = method.explain(x[keep], target[keep], generator=seed, **knobs)
        x_cf[keep] = res.x_cf.to(x_cf.dtype)
        probs_cf[keep] = res.probs_cf.float()
        steps[keep] = (res.steps.long() if res.steps is not None
                       else torch.full((len(keep),), -1, dtype=torch.long))
        nf = res.meta.get("nonfinite")
        if isinstance(nf, Tensor):
            nonfinite[keep] = nf.bool()
    pred_cf = probs_cf.argmax(1)
    diff = (x_cf - x).flatten(1)
    return {
        "index": torch.arange(start, start + b, dtype=torch.long),
        "x": x.contiguous(),
        "x_cf": x_cf.contiguous(),
        "label": (y.long() if y is not None else torch.full((b,), -1, dtype=torch.long)).contiguous(),
        "target": target.contiguous(),
        "pred": pred.contiguous(),
        "pred_cf": pred_cf.contiguous(),
        "probs": probs.contiguous(),
        "probs_cf": probs_cf.contiguous(),
        "success": ((pred_cf == target) & ~skipped).contiguous(),
        "skipped": skipped.contiguous(),
        "target_prob": probs_cf.gather(1, target[:, None])[:, 0].contiguous(),
        "l1": diff.abs().mean(1).contiguous(),
        "l2": diff.norm(dim=1).contiguous(),
        "steps": steps.contiguous(),
        "nonfinite": nonfinite.contiguous(),
    }


# ---------------------------------------------------------------- identity, manifest
def _config_of(method, knobs: dict) -> dict:
    """The method's full config with ``knobs`` applied (unknown knobs raise here, before
    any work), plus the knobs as given (dict-valued knobs are converted by the method)."""
    from .config import merge, to_dict

    plain = {k: v for k, v in knobs.items() if not isinstance(v, dict)}
    cfg = to_dict(merge(method.Config, None, plain))
    return _jsonable({"resolved": cfg, "knobs": knobs})


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, sort_keys=True, default=repr))


def _models_fingerprint(method) -> str:
    """A hash of every model's weights and buffers (another checkpoint = another run)."""
    h = hashlib.sha256()
    for name, m in method.modules().items():
        h.update(name.encode())
        for k, v in m.state_dict().items():
            h.update(k.encode())
            if isinstance(v, Tensor):
                h.update(str(v.dtype).encode() + str(tuple(v.shape)).encode())
                h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _data_fingerprint(x: Tensor, y: Tensor | None, total: int) -> str:
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(x.detach().cpu().float().contiguous().numpy().tobytes())
    if y is not None:
        h.update(y[:total].long().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _open_manifest(out: Path, identity: dict, method) -> dict:
    """The folder's manifest (checked against ``identity``), or a new one."""
    from ._version import __version__

    path = out / MANIFEST
    if path.exists():
        try:
            manifest = json.loads(path.read_text())
        except ValueError as e:
            raise MixedRunError(f"{path} is not a readable manifest ({e}); use another folder or "
                                f"delete this one.") from None
        old = manifest.get("identity", {})
        diffs = [k for k in sorted(set(old) | set(identity)) if old.get(k) != identity.get(k)]
        if diffs:
            parts = "; ".join(f"{k}: folder has {_short(old.get(k))}, asked {_short(identity.get(k))}"
                              for k in diffs)
            raise MixedRunError(f"{out} holds a run with another configuration ({parts}); resume it "
                                f"with the same arguments, or write to another folder.")
        return manifest
    if any(out.glob("chunk-*.safetensors")):
        raise MixedRunError(f"{out} holds chunks but no manifest; use another folder or delete it.")
    manifest = {
        "format": FORMAT,
        "identity": identity,
        "meta": {"method": method.name, "title": method.title or method.name, "paper": method.paper,
                 "version": __version__, "torch": torch.__version__,
                 "class_names": method.class_names, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                             time.gmtime())},
        "chunks": [],
        "complete": False,
    }
    _write_json(path, manifest)
    return manifest


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 80 else s[:77] + "..."


def _finished_chunks(out: Path, manifest: dict) -> set[int]:
    """Chunks listed in the manifest whose file is there with the recorded size (a
    temporary file left by a kill mid-write is never read: its chunk is not listed, and
    rewriting that chunk overwrites it)."""
    done = set()
    for c in manifest["chunks"]:
        p = out / c["file"]
        if p.exists() and p.stat().st_size == c["bytes"]:
            done.add(int(c["chunk"]))
    manifest["chunks"] = [c for c in manifest["chunks"] if int(c["chunk"]) in done]
    return done


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + _TMP)
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    _fsync(tmp)
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(out: Path):
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunBusyError(f"another process is writing to {out}; wait for it to finish (or stop "
                           f"it), or write to another folder.") from None
    try:
        yield
    finally:
        lock.release()


def _bar(progress: bool, total: int, initial: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="cf")


# --------------------------------------------------------------------- load_results
_METRICS = ("target_prob", "l1", "l2", "steps", "nonfinite", "probs", "probs_cf")


def load_results(out: str | os.PathLike) -> DatasetResults:
    """Read a folder written by :func:`explain_dataset` (an interrupted run gives its
    finished chunks, with ``meta["complete"] = False``)."""
    from safetensors.torch import load_file

    out = Path(out)
    path = out / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{out} has no {MANIFEST}: not a folder written by explain_dataset.")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} has format {manifest.get('format')!r}; this version reads {FORMAT!r}.")
    cols: dict[str, list[Tensor]] = {}
    for c in sorted(manifest["chunks"], key=lambda c: c["chunk"]):
        for k, v in load_file(str(out / c["file"])).items():
            cols.setdefault(k, []).append(v)
    ident = manifest["identity"]
    if cols:
        t = {k: torch.cat(v) for k, v in cols.items()}
    else:  # no finished chunk yet
        empty = torch.zeros(0, dtype=torch.long)
        t = {k: empty for k in ("index", "label", "target", "pred", "pred_cf", "steps")}
        t.update({k: torch.zeros(0, dtype=torch.bool) for k in ("success", "skipped", "nonfinite")})
        t.update({k: torch.zeros(0) for k in ("x", "x_cf", "target_prob", "l1", "l2", "probs", "probs_cf")})
    metrics = {"validity": t["success"].float(), **{k: t[k] for k in _METRICS}}
    meta = {**manifest["meta"], "config": ident["config"]["resolved"], "knobs": ident["config"]["knobs"],
            "seed": ident["seed"], "target": ident["target"], "batch_size": ident["batch_size"],
            "n": ident["n"], "data": ident["data"], "device_type": ident["device_type"],
            "complete": bool(manifest["complete"]), "chunks": len(manifest["chunks"])}
    return DatasetResults(index=t["index"], x=t["x"], x_cf=t["x_cf"], label=t["label"],
                          target=t["target"], pred=t["pred"], pred_cf=t["pred_cf"],
                          success=t["success"], skipped=t["skipped"], metrics=metrics, meta=meta)

"""The model zoo: named, versioned training recipes -> verified, cached checkpoints.

``zoo.load("mnist/cnn")`` returns a trained model. It looks, in order, in

1. the user cache (``$CFWIDGETS_CACHE/zoo`` or ``~/.cache/cfwidgets/zoo``),
2. the weights shipped inside the package (``cfwidgets/zoo/weights``),

and takes the first checkpoint that verifies: its JSON metadata names this recipe and
version, the sha256 of the ``.safetensors`` file matches the one recorded, the training
data's fingerprint matches today's data, and the weights load into the recipe's
architecture. A missing, corrupted or stale checkpoint is never used: the recipe trains
(with a fixed seed) and writes a fresh one to the cache, atomically (temp file +
``os.replace``) under a file lock, so two kernels building the same recipe at once do not
corrupt each other's files.

Weights are stored as safetensors; resumable training state uses ``torch.load`` with
``weights_only=True`` on files this library wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._utils import ProcessCache, cache_dir, resolve_device

__all__ = [
    "Recipe",
    "TrainContext",
    "register",
    "recipes",
    "get_recipe",
    "load",
    "build",
    "info",
    "status",
    "cache_paths",
    "shipped_paths",
    "ZooError",
    "RECIPE_MODULES",
    "ship",
]

SHIPPED_DIR = Path(__file__).parent / "weights"

#: modules that register recipes when imported; a module whose optional dependencies are
#: missing is skipped (its recipes are then unavailable, with the reason in ``skipped``).
RECIPE_MODULES = [
    "cfwidgets.zoo.recipes.images",
    "cfwidgets.zoo.recipes.attributes",
    "cfwidgets.zoo.recipes.generative",
    "cfwidgets.zoo.recipes.text",
    "cfwidgets.zoo.recipes.ganmex",
]

#: verified checkpoints read this process: ``(name, weights path) -> (state, meta)``;
#: an entry is used only while the file's mtime matches ``meta["_mtime"]``
_STATE_CACHE = ProcessCache("zoo checkpoints")


class ZooError(RuntimeError):
    """A recipe could not be trained or loaded."""


@dataclass
class TrainContext:
    """What a recipe's ``train`` function receives besides its model and config."""

    name: str
    device: torch.device
    seed: int
    progress: bool = True
    reduced: bool = False
    state_path: Path | None = None  # where long recipes keep resumable training state
    log: list[str] = field(default_factory=list)
    artifacts: dict[str, bytes] = field(default_factory=dict)  # e.g. {"samples.png": png}

    def say(self, msg: str) -> None:
        self.log.append(msg)
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"[{self.name}] {msg}")

    def save_state(self, state: dict) -> None:
        """Atomically save resumable training state (tensors, numbers, strings only)."""
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + f".{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)

    def load_state(self) -> dict | None:
        if self.state_path is None or not self.state_path.exists():
            return None
        try:
            return torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a broken resume file: start over
            self.say(f"ignoring unreadable training state ({e})")
            return None


@dataclass(frozen=True)
class Recipe:
    """A named, versioned way to train a model.

    Attributes:
        name: ``"<dataset>/<model>"``, e.g. ``"mnist/cnn"``.
        version: bump when the architecture, data or training changes; older
            checkpoints then count as stale.
        make_model: ``config -> nn.Module`` (untrained, the architecture only).
        train: ``(model, config, ctx) -> metrics dict``; trains ``model`` in place.
        config: default hyper-parameters (the full budget).
        reduced: overrides for a reduced budget (tests retrain with it).
        data_fingerprint: ``() -> str`` identifying the training data.
        check: ``metrics -> None | str``: a quality gate for the *full* budget (an error
            message when the model is not good enough); ``reduced_check`` likewise for the
            reduced budget.
    """

    name: str
    version: int
    description: str
    make_model: Callable[[dict], nn.Module]
    train: Callable[[nn.Module, dict, TrainContext], dict]
    config: dict = field(default_factory=dict)
    reduced: dict = field(default_factory=dict)
    data_fingerprint: Callable[[], str] | None = None
    check: Callable[[dict], str | None] | None = None
    reduced_check: Callable[[dict], str | None] | None = None
    seed: int = 0
    kind: str = "model"
    requires: tuple[str, ...] = ()  # other recipes this one loads (e.g. a classifier)

    def full_config(self, reduced: bool = False, **overrides) -> dict:
        cfg = dict(self.config)
        if reduced:
            cfg.update(self.reduced)
        cfg.update(overrides)
        return cfg


class RecipeRegistry:
    """The recipes by name; the recipe modules are imported on first use (a module whose
    optional dependency is missing is skipped, with the reason in :attr:`skipped`)."""

    def __init__(self, modules: list[str]):
        self.modules = modules
        self.skipped: dict[str, str] = {}
        self._recipes: dict[str, Recipe] = {}
        self._imported = False

    def register(self, recipe: Recipe) -> Recipe:
        if recipe.name in self._recipes and self._recipes[recipe.name] is not recipe:
            raise ValueError(f"recipe {recipe.name!r} registered twice")
        self._recipes[recipe.name] = recipe
        return recipe

    def _import_modules(self) -> None:
        if self._imported:
            return
        self._imported = True
        for mod in self.modules:
            try:
                importlib.import_module(mod)
            except ImportError as e:
                self.skipped[mod] = str(e)

    def all(self) -> dict[str, Recipe]:
        self._import_modules()
        return dict(sorted(self._recipes.items()))

    def get(self, name: str) -> Recipe:
        self._import_modules()
        if name not in self._recipes:
            extra = (f" (recipe modules skipped for missing dependencies: {self.skipped})"
                     if self.skipped else "")
            raise KeyError(f"unknown zoo recipe {name!r}; available: {sorted(self._recipes)}{extra}")
        return self._recipes[name]


_REGISTRY = RecipeRegistry(RECIPE_MODULES)


def register(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to the zoo (recipe modules call this at import)."""
    return _REGISTRY.register(recipe)


def recipes() -> dict[str, Recipe]:
    """All registered recipes by name."""
    return _REGISTRY.all()


def get_recipe(name: str) -> Recipe:
    return _REGISTRY.get(name)


def skipped_modules() -> dict[str, str]:
    """Recipe modules skipped for a missing optional dependency, with the reason."""
    _REGISTRY.all()
    return dict(_REGISTRY.skipped)


# ------------------------------------------------------------------------ paths
def _stem(name: str) -> str:
    return name.replace("/", "__")


def cache_paths(name: str, root: Path | None = None, *, create: bool = True) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths of ``name`` in the cache (or ``root``); the folder is
    created only with ``create`` (readers pass ``False``)."""
    root = (root or cache_dir(create=create) / "zoo")
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root / f"{_stem(name)}.safetensors", root / f"{_stem(name)}.json"


def _cache_problem(root: Path | None = None) -> str | None:
    """Why nothing can be written to the zoo cache (``None`` when it can)."""
    try:
        folder = root or cache_dir(create=True) / "zoo"
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    return None


def shipped_paths(name: str) -> tuple[Path, Path]:
    return SHIPPED_DIR / f"{_stem(name)}.safetensors", SHIPPED_DIR / f"{_stem(name)}.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- verification
def _verify(recipe: Recipe, weights: Path, meta_path: Path) -> tuple[nn.Module, dict, dict] | str:
    """``(model, state_dict, meta)`` if the checkpoint is valid (the model on the CPU with
    the weights loaded), else the reason it is not."""
    if not weights.exists() or not meta_path.exists():
        return "missing"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable metadata ({e})"
    problem = _meta_type_problem(meta)
    if problem:
        return f"unreadable metadata ({problem})"
    if meta.get("name") != recipe.name:
        return f"metadata names {meta.get('name')!r}"
    if meta.get("version") != recipe.version:
        return f"stale: recipe version {meta.get('version')} != {recipe.version}"
    if meta.get("sha256") != _sha256(weights):
        return "corrupted: sha256 of the weights does not match the metadata"
    if recipe.data_fingerprint is not None:
        fp = recipe.data_fingerprint()
        if meta.get("data_fingerprint") != fp:
            return f"stale: trained on other data ({meta.get('data_fingerprint')} != {fp})"
    try:
        from safetensors.torch import load_file

        state = load_file(str(weights), device="cpu")
    except Exception as e:
        return f"corrupted: cannot read weights ({e})"
    try:
        model = recipe.make_model(meta.get("config", recipe.config))
        model.load_state_dict(state, strict=True)
    except Exception as e:
        return f"incompatible weights ({type(e).__name__}: {str(e)[:200]})"
    return model, state, meta


#: metadata fields and the JSON types they must have where present
_META_TYPES = {"name": str, "version": int, "sha256": str, "config": dict, "metrics": dict,
               "data_fingerprint": (str, type(None)), "reduced": bool}


def _meta_type_problem(meta: Any) -> str | None:
    """What is ill-typed in a checkpoint's metadata (``None`` when it is a usable object)."""
    if not isinstance(meta, dict):
        return f"JSON {type(meta).__name__}, expected an object"
    for key, kind in _META_TYPES.items():
        if key in meta and not isinstance(meta[key], kind):
            return f"{key!r} is {type(meta[key]).__name__}"
    return None


def _broken(reason: str) -> bool:
    """A reason that makes a cache entry unusable whatever the recipe does next (unlike a
    stale one, which a retraining replaces in place)."""
    return reason != "missing" and not reason.startswith("stale")


def _set_aside(recipe: Recipe, weights: Path, meta_path: Path) -> str:
    """Rename a broken cache entry to ``*.broken`` (under the recipe's lock, after checking
    that it is still broken: another process may just have rewritten it); return what was
    done, for the warning."""
    try:
        with _lock(recipe.name, timeout=30):  # a build in progress elsewhere: leave it be
            again = _verify(recipe, weights, meta_path)
            if not isinstance(again, str) or not _broken(again):
                return "rewritten meanwhile by another process"
            for p in (weights, meta_path):
                if p.exists():
                    os.replace(p, p.with_name(p.name + ".broken"))
    except OSError as e:
        return f"could not be moved aside ({type(e).__name__}: {e})"
    return f"moved aside to {meta_path.name}.broken"


def _instantiate(recipe: Recipe, state: dict, meta: dict, device: torch.device,
                 model: nn.Module | None = None) -> nn.Module:
    if model is None:
        model = recipe.make_model(meta.get("config", recipe.config))
        model.load_state_dict(state, strict=True)
    model.zoo_meta = dict(meta)  # type: ignore[attr-defined]
    return model.to(device).eval()


# ------------------------------------------------------------------------ build
@contextlib.contextmanager
def _lock(name: str, timeout: float = -1) -> Iterator[None]:
    from filelock import FileLock

    lock_path = cache_dir() / "zoo" / f"{_stem(name)}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=timeout):
        yield


def _write_checkpoint(model: nn.Module, meta: dict, weights: Path, meta_path: Path,
                      artifacts: dict[str, bytes] | None = None) -> dict:
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    pid = os.getpid()
    tmp_w = weights.with_name(weights.name + f".{pid}.tmp")
    tmp_m = meta_path.with_name(meta_path.name + f".{pid}.tmp")
    save_file(state, str(tmp_w), metadata={"cfwidgets_recipe": meta["name"],
                                             "version": str(meta["version"])})
    meta = dict(meta, sha256=_sha256(tmp_w), bytes=tmp_w.stat().st_size)
    tmp_m.write_text(json.dumps(meta, indent=2, sort_keys=True))
    # weights first, then metadata: a crash in between leaves a sha mismatch (= retrain),
    # never a valid-looking pair of different builds.
    os.replace(tmp_w, weights)
    os.replace(tmp_m, meta_path)
    for fname, data in (artifacts or {}).items():
        art = weights.with_name(f"{_stem(meta['name'])}.{fname}")
        tmp_a = art.with_name(art.name + f".{pid}.tmp")
        tmp_a.write_bytes(data)
        os.replace(tmp_a, art)
    return meta


def _train(recipe: Recipe, *, device: torch.device, reduced: bool, progress: bool,
           overrides: dict | None = None, resume_dir: Path | None = None) -> tuple[nn.Module, dict, dict]:
    from .._version import __version__

    cfg = recipe.full_config(reduced, **(overrides or {}))
    torch.manual_seed(recipe.seed)
    model = recipe.make_model(cfg).to(device)
    state_path = None
    if resume_dir is not None:
        state_path = resume_dir / f"{_stem(recipe.name)}{'.reduced' if reduced else ''}.resume.pt"
    ctx = TrainContext(recipe.name, device, recipe.seed, progress, reduced, state_path)
    ctx.say(f"training ({'reduced budget' if reduced else 'full budget'}) on {device}")
    t0 = time.perf_counter()
    metrics = recipe.train(model, cfg, ctx)
    seconds = time.perf_counter() - t0
    model.eval()
    meta = {
        "name": recipe.name,
        "version": recipe.version,
        "description": recipe.description,
        "config": cfg,
        "seed": recipe.seed,
        "reduced": reduced,
        "metrics": metrics,
        "train_seconds": round(seconds, 2),
        "train_device": str(device),
        "data_fingerprint": recipe.data_fingerprint() if recipe.data_fingerprint else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "torch": torch.__version__,
        "cfwidgets": __version__,
        "machine": f"{platform.machine()} x{os.cpu_count()}",
        "params": sum(p.numel() for p in model.parameters()),
    }
    if state_path is not None and state_path.exists():
        state_path.unlink()
    return model, meta, ctx.artifacts


def build(name: str, *, force: bool = False, reduced: bool = False, device="auto",
          progress: bool = True, out_dir: str | Path | None = None, **overrides) -> nn.Module:
    """Train recipe ``name`` and write its checkpoint (to the cache, or ``out_dir``).

    Without ``force`` an existing valid cached checkpoint is loaded instead. ``reduced``
    trains with the recipe's reduced budget (and never overwrites the cache unless
    ``out_dir`` is given: a reduced model is only for tests).
    """
    recipe = get_recipe(name)
    dev = resolve_device(device)
    root = Path(out_dir) if out_dir is not None else None
    if reduced and root is None:
        model, meta, _ = _train(recipe, device=dev, reduced=True, progress=progress, overrides=overrides)
        model.zoo_meta = meta  # type: ignore[attr-defined]
        return model
    problem = _cache_problem(root)
    if problem is not None:
        where = root if root is not None else cache_dir(create=False) / "zoo"
        raise ZooError(f"cannot write checkpoints to {where} ({problem}); set CFWIDGETS_CACHE to a "
                       f"writable folder (or pass out_dir=...).")
    weights, meta_path = cache_paths(name, root)
    with _lock(name):
        if not force and not overrides:
            ok = _verify(recipe, weights, meta_path)
            if not isinstance(ok, str):
                return _instantiate(recipe, ok[1], ok[2], dev, ok[0])
        model, meta, artifacts = _train(recipe, device=dev, reduced=reduced, progress=progress,
                                        overrides=overrides, resume_dir=weights.parent)
        meta = _write_checkpoint(model, meta, weights, meta_path, artifacts)
        _STATE_CACHE.pop((name, str(weights)))
    model.zoo_meta = meta  # type: ignore[attr-defined]
    return model.eval()


def load(name: str, *, device="auto", train: bool = True, progress: bool = True) -> nn.Module:
    """A trained model of recipe ``name``, in eval mode, on ``device``.

    Loads a verified checkpoint (user cache, then shipped weights); if none verifies and
    ``train`` is true, trains the recipe (printing progress) and caches the result; else
    raises :class:`ZooError`. The returned module is a fresh copy: changing it never
    changes what the next ``load`` returns. ``model.zoo_meta`` holds the metadata
    (metrics such as test accuracy, training time, budget).

    Examples::

        clf = zoo.load("mnist/cnn")
        clf.zoo_meta["metrics"]["test_accuracy"]
    """
    recipe = get_recipe(name)
    dev = resolve_device(device)
    reasons = []
    set_aside = False  # a broken cache entry was met (worth a warning even if shipped loads)
    # reading never creates or writes the cache folder (a read-only cache, or a cache path
    # that is a file, still loads the shipped weights)
    for weights, meta_path in (cache_paths(name, create=False), shipped_paths(name)):
        key = (name, str(weights))
        cached = _STATE_CACHE.get(key)
        if cached is not None and weights.exists() and cached[1].get("_mtime") == weights.stat().st_mtime_ns:
            return _instantiate(recipe, cached[0], cached[1], dev)
        ok = _verify(recipe, weights, meta_path)
        if isinstance(ok, str):
            if ok != "missing":
                what = f"{weights}: {ok}"
                if weights.parent != SHIPPED_DIR and _broken(ok):
                    what += f" ({_set_aside(recipe, weights, meta_path)})"
                    set_aside = True
                reasons.append(what)
            continue
        model, state, meta = ok
        meta["_mtime"] = weights.stat().st_mtime_ns
        meta["source"] = "shipped" if weights.parent == SHIPPED_DIR else "cache"
        _STATE_CACHE.put(key, (state, meta))
        if set_aside:
            warnings.warn("ignoring unusable checkpoint(s): " + "; ".join(reasons)
                          + f" -- using the {meta['source']} weights.", UserWarning, stacklevel=2)
        return _instantiate(recipe, state, meta, dev, model)
    if reasons:
        warnings.warn("ignoring unusable checkpoint(s): " + "; ".join(reasons) + " -- retraining.",
                      UserWarning, stacklevel=2)
    if not train:
        raise ZooError(f"no valid checkpoint for {name!r} and train=False; run `cfwidgets zoo build {name}`.")
    for dep in recipe.requires:
        load(dep, device=dev, train=True, progress=progress)
    t0 = time.perf_counter()
    problem = _cache_problem()
    if problem is not None:
        warnings.warn(f"cannot write the zoo cache under {cache_dir(create=False)} ({problem}): {name!r} "
                      f"is trained for this session only (it will train again next time); set "
                      f"CFWIDGETS_CACHE to a writable folder to keep it.", UserWarning, stacklevel=2)
        model, meta, _ = _train(recipe, device=dev, reduced=False, progress=progress)
        model.zoo_meta = dict(meta, source="trained now (not cached)")  # type: ignore[attr-defined]
        return model.eval()
    model = build(name, force=bool(reasons), device=dev, progress=progress)
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(f"[{name}] ready after {time.perf_counter() - t0:.1f} s; cached under {cache_paths(name)[0].parent}")
    return model


def ship(name: str) -> Path:
    """Copy the verified cached checkpoint of ``name`` (and its artifacts) into the
    package's shipped weights folder (for developers preparing a release)."""
    import shutil

    recipe = get_recipe(name)
    weights, meta_path = cache_paths(name)
    ok = _verify(recipe, weights, meta_path)
    if isinstance(ok, str):
        raise ZooError(f"cannot ship {name!r}: cached checkpoint is {ok}; build it first")
    if ok[2].get("reduced"):
        raise ZooError(f"refusing to ship {name!r}: it was trained with the reduced budget")
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    for src in weights.parent.glob(f"{_stem(name)}.*"):
        if src.suffix in (".lock", ".tmp") or src.name.endswith(".resume.pt"):
            continue
        shutil.copyfile(src, SHIPPED_DIR / src.name)
    return SHIPPED_DIR / weights.name


def info(name: str) -> dict[str, Any]:
    """Metadata of the checkpoint ``load`` would use, or ``{"status": "not built"}``."""
    recipe = get_recipe(name)
    for weights, meta_path in (cache_paths(name, create=False), shipped_paths(name)):
        ok = _verify(recipe, weights, meta_path)
        if isinstance(ok, str):
            continue
        meta = dict(ok[2])
        meta["status"] = "cached" if weights.parent != SHIPPED_DIR else "shipped"
        meta["path"] = str(weights)
        return meta
    return {"name": name, "version": recipe.version, "status": "not built",
            "description": recipe.description}


def status(name: str) -> str:
    return info(name)["status"]

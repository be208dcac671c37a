"""Small shared helpers: devices, seeds, cache paths, optional imports."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

__all__ = [
    "resolve_device",
    "module_device",
    "make_generator",
    "cache_dir",
    "require",
    "sync",
]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or ``None``) -> ``cuda`` if available, else ``cpu``.

    An explicit ``"cuda"`` on a machine without a GPU raises a ``ValueError`` that says so.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was requested but torch sees no CUDA GPU here; "
            "use device='cpu' or device='auto'."
        )
    return dev


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for parameter-free modules)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def make_generator(generator: torch.Generator | int | None, default_seed: int = 0):
    """Return ``(cpu_generator, seed)`` from a seed, a generator or ``None`` (= seed 0).

    Methods draw their random numbers on the CPU with this generator and move them to
    the device, so a seed gives the same numbers on every device.
    """
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError("pass a CPU torch.Generator (or an int seed); cfwidgets draws "
                             "random numbers on the CPU so that seeds agree across devices.")
        return generator, generator.initial_seed()
    if generator is None:
        generator = default_seed
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got "
                        f"{type(generator).__name__}.")
    g = torch.Generator()
    g.manual_seed(int(generator))
    return g, int(generator)


def cache_dir(create: bool = True) -> Path:
    """The user cache directory (``$CFWIDGETS_CACHE`` or ``~/.cache/cfwidgets``); created
    unless ``create`` is false (readers pass ``False``: looking for a cached file must work
    with a read-only or missing cache)."""
    root = os.environ.get("CFWIDGETS_CACHE")
    if root:
        path = Path(root).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
        path = Path(base) / "cfwidgets"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def require(module: str, extra: str, purpose: str = ""):
    """Import an optional dependency or raise an ImportError that names the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        what = f" for {purpose}" if purpose else ""
        raise ImportError(
            f"{module} is needed{what}: pip install 'cfwidgets[{extra}]' (or pip install {module})."
        ) from e


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (so wall times are honest)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ProcessCache:
    """An explicit per-process memo (instead of a bare module-level dict): values made
    once by ``make()`` and kept until :meth:`clear` (tests, or a changed file on disk).

    Examples::

        _CACHE = ProcessCache("tokenizers")
        tok = _CACHE.get_or_make("default", load_default_tokenizer)
    """

    def __init__(self, name: str):
        self.name = name
        self._values: dict = {}

    def get(self, key, default=None):
        return self._values.get(key, default)

    def put(self, key, value) -> None:
        self._values[key] = value

    def get_or_make(self, key, make):
        """The value under ``key``, made by ``make()`` (and kept) on the first call."""
        if key not in self._values:
            self._values[key] = make()
        return self._values[key]

    def pop(self, key) -> None:
        self._values.pop(key, None)

    def clear(self) -> None:
        self._values.clear()

    def __contains__(self, key) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ProcessCache({self.name!r}, {len(self)} entries)"


def detached(t: torch.Tensor) -> torch.Tensor:
    """``t`` without its graph; ``t`` itself when it has none (a second ``detach`` of an
    already detached tensor is two ops: in a step loop, one row at a time, a visible share
    of the bookkeeping)."""
    return t.detach() if t.requires_grad else t

"""The layer rule of ARCHITECTURE.md, read from the source: a module imports only from its
own layer or below. Every ``import`` counts, the lazy ones inside functions and under
``TYPE_CHECKING`` too (a lazy import is still a dependency; it only moves the cost)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "cfwidgets"

#: bottom (0) to top. A module's layer is that of its first name below ``cfwidgets``.
LAYERS: list[tuple[str, ...]] = [
    ("_utils", "_active", "_fused", "_version", "_png", "_html", "protocols", "config", "objectives", "result"),  # shared types
    ("data",),                      # offline loaders, attribute extraction
    ("models",),                    # plain nn.Modules (text generator: model + masking)
    ("metrics",),                   # every result is scored here; judges are passed in
    ("zoo",),                       # recipes -> cached checkpoints (they record metrics)
    ("methods",),                   # one file per paper; default models from the zoo
    ("analysis", "attribution"),    # read results and methods (bias, what-if, 1-vs-1)
    ("viz",),                       # pure renderers: result -> Figure / HTML
    ("widgets",),                   # ipywidgets front
    ("batch", "bench", "cli", ""),  # entry points; "" is the package's own __init__
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}

def _module(path: Path, pkg: Path = PKG) -> str:
    rel = path.relative_to(pkg.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, pkg: Path = PKG):
    """(imported module, line, enclosing function) for every cfwidgets import in ``path``."""
    module = _module(path, pkg)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            f = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                    if child.module:
                        out.append((target, child.lineno, func))
                    else:  # `from .. import zoo`: each name may be a module
                        out.extend((f"{target}.{a.name}", child.lineno, func) for a in child.names)
                elif child.module and child.module.split(".")[0] == "cfwidgets":
                    out.append((child.module, child.lineno, func))
            elif isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, func) for a in child.names
                           if a.name.split(".")[0] == "cfwidgets")
            visit(child, f)

    visit(tree, None)
    return out


def _target_unit(target: str) -> str:
    unit = _unit(target)
    # `from .. import __version__` names an attribute of the root, not a module
    return unit if unit in RANK or not unit.startswith("__") else ""


def violations(pkg: Path = PKG) -> list[str]:
    """Upward imports as readable lines (none is allowed: the result type's notebook display
    hook renders with ``cfwidgets._html``, a bottom-layer module)."""
    found = []
    for path in sorted(pkg.rglob("*.py")):
        src = _module(path, pkg)
        for target, line, func in _imports(path, pkg):
            a, b = _unit(src), _target_unit(target)
            if a not in RANK or b not in RANK:
                found.append(f"{path.relative_to(pkg.parent)}:{line}: {src} -> {target}: "
                             f"not in the layer map ({a or b!r}); add it to LAYERS")
            elif RANK[b] > RANK[a]:
                where = f" (inside {func}())" if func else ""
                found.append(f"{path.relative_to(pkg.parent)}:{line}: {src} [{'/'.join(LAYERS[RANK[a]])}]"
                             f" -> {target} [{'/'.join(LAYERS[RANK[b]])}]{where}")
    return found


def test_no_module_imports_from_a_layer_above():
    found = violations()
    print("\n".join(["upward imports:"] + (found or ["  none"])))
    assert not found, "modules import from a layer above them:\n" + "\n".join(found)


def test_every_top_level_module_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()}
    missing = sorted(names - set(RANK))
    assert not missing, f"add {missing} to LAYERS in tests/test_layers.py and to README's layout"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    # a fake package: data importing widgets lazily, inside a function, must be caught
    fake = tmp_path / "cfwidgets"
    (fake / "data").mkdir(parents=True)
    (fake / "widgets").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "widgets" / "__init__.py").write_text("from ..data import x\n")
    (fake / "data" / "__init__.py").write_text("def f():\n    from ..widgets import base\n")
    found = violations(fake)
    assert len(found) == 1 and "cfwidgets.data [data] -> cfwidgets.widgets [widgets]" in found[0]
    assert "inside f()" in found[0]


def test_package_lists_its_subpackages():
    import cfwidgets

    subpackages = {m.name for m in pkgutil.iter_modules([str(PKG)]) if m.ispkg and m.name != "assets"}
    assert set(cfwidgets._SUBMODULES) == subpackages
    assert set(cfwidgets._SUBMODULES) <= set(cfwidgets.__all__)
    for name in sorted(subpackages):  # (attribution imports captum only when it attributes)
        assert getattr(cfwidgets, name) is importlib.import_module(f"cfwidgets.{name}")

    with pytest.raises(AttributeError, match="nonexistent"):
        cfwidgets.nonexistent  # noqa: B018


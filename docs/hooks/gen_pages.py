"""Generates the documentation pages that follow the code (an MkDocs hook).

``mkdocs build`` runs this first (``hooks:`` in mkdocs.yml); it can also run alone
(``python docs/hooks/gen_pages.py``) to look at the pages. It writes, under ``docs/``
(generated folders, ignored by git):

- ``getting-started.md``: the README's set-up and first-explanation sections, verbatim;
- ``methods/<name>.md``: one page per entry of :data:`cfwidgets.methods.METHODS`: title,
  paper, what the constructor needs, every knob of its ``Config`` (default, range,
  choices, documentation, read from :func:`cfwidgets.config.knobs`), the hand-written
  notes of ``docs/method_notes/<name>.md`` (limitations, measured figures) where they
  exist, and the module's docstring (the paper's idea and the deviations);
- ``tutorials/*.ipynb``: every notebook of ``notebooks/`` (by glob; rendered by
  mkdocs-jupyter with their saved outputs, never re-executed);
- ``api/<module>.md``: the docstrings of every public subpackage and module of cfwidgets.

and sets the site's navigation from them, so a method, notebook or module added later
appears without editing anything here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # document this checkout's cfwidgets, whatever is installed
    sys.path.insert(0, str(ROOT))
DOCS = ROOT / "docs"
GENERATED = ("methods", "tutorials", "api")


def _write(path: Path, text: str) -> None:
    """Write only when the text changed (``mkdocs serve`` watches these files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def readme_section(readme: str, heading: str) -> str:
    """The body of the README's ``## heading`` section (up to the next ``## ``)."""
    m = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    if m is None:
        raise ValueError(f"README.md has no '## {heading}' section; the getting-started page "
                         f"quotes it (update docs/hooks/gen_pages.py if it was renamed).")
    return m.group(1).strip()


def getting_started() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    parts = ["# Getting started", "",
             "From the README (this page is regenerated from it on every build).", ""]
    for heading in ("Set-up: two commands", "Explaining a classifier"):
        parts += [f"## {heading}", "", readme_section(readme, heading), ""]
    return "\n".join(parts)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def knob_table(config_cls) -> str:
    """A Markdown table of a Config's knobs: name, default, range or choices, documentation."""
    from cfwidgets.config import knobs

    rows = ["| knob | default | range / choices | what it does |", "| --- | --- | --- | --- |"]
    for k in knobs(config_cls):
        if k.choices is not None:
            rng = ", ".join(f"`{c!r}`" for c in k.choices)
        elif k.kind == "bool":
            rng = "`True`, `False`"
        elif k.min is not None or k.max is not None:
            rng = f"{_fmt(k.min) or '-inf'} to {_fmt(k.max) or 'inf'}"
            if k.log:
                rng += " (log scale)"
        else:
            rng = ""
        if k.optional:
            rng += (", " if rng else "") + "`None`"
        rows.append(f"| `{k.name}` | `{k.default!r}` | {_cell(rng)} | {_cell(k.doc)} |")
    return "\n".join(rows)


def constructor_needs(cls) -> str:
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self"]
    pos = [p.name for p in params if p.kind is p.POSITIONAL_ONLY]
    kw = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    line = f"`{cls.__name__}({', '.join(pos)}"
    line += (", *, " + ", ".join(kw) if kw else "") + ")`"
    return line


def method_page(name: str, cls) -> str:
    notes_file = DOCS / "method_notes" / f"{name}.md"
    notes = notes_file.read_text(encoding="utf-8").strip() if notes_file.exists() else (
        "No notes yet (limitations and measured figures go in "
        f"`docs/method_notes/{name}.md`).")
    module = cls.__module__
    zoo = ""
    if "from_zoo" in vars(cls):
        zoo = f"\n\n`{cls.__name__}.from_zoo(...)` builds it with the zoo's default models."
    return "\n".join([
        f"# {cls.title or cls.__name__}",
        "",
        f"**Paper**: {cls.paper or '(none recorded)'}",
        "",
        f"**Registry name** `{name}` · **modality** {cls.modality} · **module** `{module}`",
        "",
        f"**Construct**: {constructor_needs(cls)}, then "
        f"`.explain(x, target, **knobs)`.{zoo}",
        "",
        "## Knobs",
        "",
        f"Read from `{cls.__name__}.Config` by `cfwidgets.config.knobs`: the ranges the widgets' "
        "sliders use and that `explain` enforces.",
        "",
        knob_table(cls.Config),
        "",
        "## Limitations and measured figures",
        "",
        notes,
        "",
        "## The paper's idea, and where this implementation deviates",
        "",
        f"::: {module}",
        "    options:",
        "      show_root_heading: false",
        "      show_source: false",
        "      members: false",
        "",
    ])


def public_modules() -> list[str]:
    """``cfwidgets`` and its public subpackages and modules (no ``_private`` names)."""
    import cfwidgets

    names = ["cfwidgets"]
    for info in pkgutil.walk_packages(cfwidgets.__path__, "cfwidgets."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        if ".zoo.recipes" in info.name or ".zoo.weights" in info.name:
            continue  # training scripts, not an API
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            continue
        names.append(info.name)
    return names


def generate() -> dict:
    """Write every generated page; return the navigation."""
    from cfwidgets.methods import METHODS

    written: set[Path] = set()

    def emit(rel: str, text: str | None = None, copy_from: Path | None = None) -> None:
        path = DOCS / rel
        if copy_from is not None:
            text = copy_from.read_text(encoding="utf-8")
        _write(path, text)
        written.add(path)

    emit("getting-started.md", getting_started())

    method_nav = []
    for name, cls in sorted(METHODS.items()):
        emit(f"methods/{name}.md", method_page(name, cls))
        method_nav.append({cls.title or cls.__name__: f"methods/{name}.md"})

    tutorial_nav = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        emit(f"tutorials/{nb.name}", copy_from=nb)
        tutorial_nav.append({nb.stem.replace("_", " "): f"tutorials/{nb.name}"})

    api_nav = []
    for mod in public_modules():
        page = f"api/{mod}.md"
        emit(page, f"# `{mod}`\n\n::: {mod}\n")
        api_nav.append({mod: page})

    for sub in GENERATED:  # pages of a method, notebook or module that is gone
        for stale in set((DOCS / sub).glob("*")) - written:
            stale.unlink()

    nav = [
        {"Home": "index.md"},
        {"Getting started": "getting-started.md"},
        {"Methods": method_nav},
        {"Tutorials": tutorial_nav},
        {"Gallery": "gallery.md"},
        {"API reference": api_nav},
    ]
    return [item for item in nav if not isinstance(next(iter(item.values())), str)
            or (DOCS / next(iter(item.values()))).exists()]


def on_config(config, **kwargs):  # MkDocs hook: runs before the files are collected
    config["nav"] = generate()
    return config


if __name__ == "__main__":
    import json

    print(json.dumps(generate(), indent=1))

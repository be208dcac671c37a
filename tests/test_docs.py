"""The documentation site: its generated pages follow the registry, and it builds strictly."""

import importlib.util
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gen():
    spec = importlib.util.spec_from_file_location("gen_pages", ROOT / "docs" / "hooks" / "gen_pages.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_knob_table_reads_ranges_from_the_config():
    from cfwidgets.config import knob, knobs
    from cfwidgets.methods import Wachter

    table = _gen().knob_table(Wachter.Config)
    for k in knobs(Wachter.Config):
        row = next(line for line in table.splitlines() if line.startswith(f"| `{k.name}` |"))
        assert repr(k.default) in row and k.doc.split()[0] in row
        if k.min is not None and k.choices is None:
            assert f"{k.min:g}" in row

    @dataclass(frozen=True)
    class Config:
        lr: float = knob(0.05, 1e-4, 1.0, "Adam | learning rate.", log=True)
        mode: str = knob("a", doc="Which.", choices=("a", "b"))

    rows = _gen().knob_table(Config).splitlines()[2:]
    assert rows[0] == "| `lr` | `0.05` | 0.0001 to 1 (log scale) | Adam \\| learning rate. |"
    assert rows[1] == "| `mode` | `'a'` | `'a'`, `'b'` | Which. |"


def test_a_new_method_gets_a_page(monkeypatch, tmp_path):
    """A method registered later appears in the navigation with its knobs, no edit needed."""
    from cfwidgets.config import knob
    from cfwidgets.methods import METHODS, Wachter

    class Novel(Wachter):
        name = "novel"
        title = "Novel (test)"
        paper = "Nobody 2030"

        @dataclass(frozen=True)
        class Config:
            radius: float = knob(2.0, 0.5, 8.0, "Ball radius.")

    gen = _gen()
    monkeypatch.setattr(gen, "DOCS", tmp_path)
    monkeypatch.setitem(METHODS, "novel", Novel)
    monkeypatch.setattr(gen, "public_modules", lambda: ["cfwidgets"])
    nav = gen.generate()
    methods = next(item["Methods"] for item in nav if "Methods" in item)
    assert {"Novel (test)": "methods/novel.md"} in methods
    assert len(methods) == len(METHODS)
    page = (tmp_path / "methods" / "novel.md").read_text()
    assert "Nobody 2030" in page and "| `radius` | `2.0` | 0.5 to 8 |" in page
    assert "docs/method_notes/novel.md" in page  # no notes yet, and it says where they go
    tutorials = next(item["Tutorials"] for item in nav if "Tutorials" in item)
    assert len(tutorials) == len(list((ROOT / "notebooks").glob("*.ipynb")))
    # the README's set-up section is quoted, not retyped
    assert "pip install torch==2.13.0" in (tmp_path / "getting-started.md").read_text()
    # a method that is gone loses its page on the next build
    monkeypatch.delitem(METHODS, "novel")
    gen.generate()
    assert not (tmp_path / "methods" / "novel.md").exists()


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    """`mkdocs build --strict`: any warning (a broken docstring, a dead link) fails. (Not
    `-q`: a quiet build never logs its warnings, so strict mode never counts them.)"""
    if shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    from cfwidgets.methods import METHODS

    for name in METHODS:
        assert (site / "methods" / name / "index.html").exists(), name
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert (site / "tutorials" / nb.stem / "index.html").exists(), nb.name
    api = (site / "api" / "cfwidgets.config" / "index.html").read_text()
    assert "knobs" in api and "validate" in api


def test_readme_gallery_follows_the_registry():
    """The README's gallery names every registered method and shows committed, small PNGs
    (refresh: python experiments/refresh_gallery.py, or --no-run for the text alone)."""
    from cfwidgets.methods import METHODS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index("<!-- gallery:start -->"), readme.index("<!-- gallery:end -->")
    gallery = readme[start:end]
    missing = [n for n, cls in METHODS.items() if f"(`{n}`): {cls.paper}" not in gallery]
    assert not missing, (f"the README gallery lacks {missing}: run "
                         f"`python experiments/refresh_gallery.py --no-run`")
    pngs = [ROOT / p for p in re.findall(r"\]\((docs/gallery/[^)]+\.png)\)", gallery)]
    assert pngs, "the gallery shows no screenshot"
    for png in pngs:
        assert png.exists() and png.stat().st_size < 300_000, png
    assert 'device="cuda"' in gallery and "--batch-size" in gallery

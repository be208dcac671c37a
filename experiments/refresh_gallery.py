"""Refresh the widget gallery: README section, docs/gallery.md and docs/gallery/*.png.

    python experiments/refresh_gallery.py            # run the browser tests, then refresh
    python experiments/refresh_gallery.py --no-run   # reuse the screenshots in test-artifacts/

The screenshots are the real-browser tests' own (JupyterLab, 1366 px wide):
``tests/browser/test_widgets_walk.py`` saves ``lab_<notebook>_after_run.png`` for the
notebooks it walks, ``tests/browser/test_gallery.py`` saves ``gallery_<notebook>.png``
for every other notebook with a widget. Each is scaled to at most 900 px wide and
stored as a 256-colour PNG (tens of kB) in ``docs/gallery/``.

Written from the code, never by hand: the method lines come from the registry
(``cfwidgets.methods.METHODS``: title, paper) and the ``**Headline**:`` line of
``docs/method_notes/<name>.md``; the Binder badge from ``[project.urls] Repository`` in
pyproject.toml (the one place that names the GitHub repository). The README part sits
between ``<!-- gallery:start -->`` and ``<!-- gallery:end -->``; the badge on the line
marked ``<!-- binder-badge -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
OUT = ROOT / "docs" / "gallery"
NOTES = ROOT / "docs" / "method_notes"
START, END = "<!-- gallery:start -->", "<!-- gallery:end -->"
BADGE = "<!-- binder-badge -->"
MAX_WIDTH = 900


def repository_url() -> str:
    # a regex rather than tomllib: the package supports Python 3.10, which lacks it
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^\[project\.urls\][^\[]*?^Repository\s*=\s*"([^"]*)"', text, flags=re.M | re.S)
    url = found.group(1) if found else ""
    m = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)/?", url)
    if m is None:
        raise ValueError(f"pyproject.toml [project.urls] Repository must be a GitHub URL "
                         f"(https://github.com/OWNER/NAME), got {url!r}.")
    return url


def binder_badge() -> str:
    owner, name = repository_url().rstrip("/").split("/")[-2:]
    link = f"https://mybinder.org/v2/gh/{owner}/{name}/HEAD?urlpath=lab/tree/notebooks"
    return f"[![Binder](https://mybinder.org/badge_logo.svg)]({link}) {BADGE}"


def notebook_title(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            for line in "".join(c["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def screenshots() -> list[tuple[Path, Path]]:
    """(notebook, screenshot) pairs in notebook order: the browser tests' artifacts, else
    the PNG already in docs/gallery/ (so the method lines can be refreshed alone)."""
    pairs = []
    for nb in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        for shot in (ARTIFACTS / f"lab_{nb.stem}_after_run.png", ARTIFACTS / f"gallery_{nb.stem}.png",
                     OUT / f"{nb.stem}.png"):
            if shot.exists():
                pairs.append((nb, shot))
                break
    return pairs


def visible_height(img) -> int:
    """Rows above JupyterLab's status bar. A widget taller than the 768 px screen runs
    past the notebook panel, and the element screenshot then shows the status bar and the
    empty page below it: the first band of 5 full-width rows of one non-white colour
    each (the bar's border and body; a widget's own rules are 1-2 rows)."""
    import numpy as np

    a = np.asarray(img)
    uniform = (a == a[:, :1]).all(axis=(1, 2)) & (a[:, 0] != 255).any(axis=1)  # (H,)
    for y in range(100, len(a) - 5):
        if uniform[y:y + 5].all():
            return y
    return len(a)


def shrink(src: Path, dst: Path) -> None:
    from PIL import Image

    img = Image.open(src).convert("RGB")
    img = img.crop((0, 0, img.width, visible_height(img)))
    if img.width > MAX_WIDTH:
        img = img.resize((MAX_WIDTH, round(img.height * MAX_WIDTH / img.width)), Image.LANCZOS)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)


def headline(name: str) -> str:
    f = NOTES / f"{name}.md"
    if f.exists():
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.startswith("**Headline**:"):
                return line.split(":", 1)[1].strip()
    return "no measured headline yet"


def method_lines() -> list[str]:
    from cfwidgets.methods import METHODS

    return [f"- **{cls.title or cls.__name__}** (`{name}`): {cls.paper}. {headline(name)}"
            for name, cls in METHODS.items()]


GPU = """\
**On a GPU**: pass `device="cuda"` (or `"auto"`) to a method, or call `method.to("cuda")`;
the classifier and generators move with it and results come back on the CPU. Rows are
optimised independently, so large batches are what keeps a GPU busy: `cfwidgets explain
--device cuda --batch-size 256 ...` or `cfwidgets.batch.explain_dataset(method, data,
target, batch_size=256, out=...)`; in a widget, Advanced > device. The figures above were
measured on 2 CPU cores; no GPU timing has been measured in this project yet."""


def gallery_markdown(img_prefix: str, shots: list[tuple[Path, str]]) -> str:
    parts = ["Screenshots taken by the real-browser tests in JupyterLab (a 1366 px wide screen; "
             "the widgets those tests walk after a run), refreshed by "
             "`python experiments/refresh_gallery.py`.", ""]
    for nb, png in shots:
        parts += [f"**{notebook_title(nb)}** (`notebooks/{nb.name}`)", "",
                  f"![{nb.stem}]({img_prefix}{png})", ""]
    parts += ["Methods (paper; benchmark headline, `python benchmarks/figures.py`):", ""]
    parts += method_lines() + ["", GPU]
    return "\n".join(parts)


def refresh_readme(body: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise ValueError(f"README.md needs the markers {START} and {END} around the gallery.")
    text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{body}\n{END}",
                  text, flags=re.S)
    lines = [binder_badge() if line.endswith(BADGE) else line for line in text.splitlines()]
    readme.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-run", action="store_true", help="reuse test-artifacts/ (no browser run)")
    args = ap.parse_args()
    if not args.no_run:
        cmd = [sys.executable, "-m", "pytest", "-p", "no:nbval", "-o", "addopts=", "-q",
               "tests/browser/test_widgets_walk.py", "tests/browser/test_gallery.py", "-k", "lab or gallery"]
        print("+", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd, cwd=ROOT, env={**os.environ, "CFWIDGETS_GALLERY": "1"})
        if rc != 0:
            print(f"the browser tests failed (exit {rc}); the gallery is left as it was", file=sys.stderr)
            return rc
    pairs = screenshots()
    if not pairs:
        print("no screenshots under test-artifacts/ or docs/gallery/: run without --no-run",
              file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    kept = []
    for nb, shot in pairs:
        dst = OUT / f"{nb.stem}.png"
        if shot != dst:
            shrink(shot, dst)
        kept.append((nb, dst.name))
        print(f"{dst.relative_to(ROOT)}  {dst.stat().st_size / 1024:.0f} kB  (from {shot.name})")
    for old in set(OUT.glob("*.png")) - {OUT / name for _, name in kept}:
        old.unlink()
    refresh_readme(gallery_markdown("docs/gallery/", kept))
    (ROOT / "docs" / "gallery.md").write_text(
        "# Gallery\n\n" + gallery_markdown("gallery/", kept) + "\n", encoding="utf-8")
    print("README.md and docs/gallery.md refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

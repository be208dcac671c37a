"""Fixtures for real-browser tests: JupyterLab / Voila servers on loopback and Debian's
Chromium driven by Playwright (never ``playwright install``; see design/OFFLINE.md).

Reusable by every notebook's browser test::

    @pytest.mark.browser
    def test_my_notebook(lab, browser_page, artifacts):
        page = lab.open_notebook(browser_page, "10_my_notebook.ipynb")
        lab.run_all(page)
        ...
        page.screenshot(path=artifacts / "my_notebook.png")

``lab`` serves a temporary copy of ``notebooks/`` (the repository's files are never
modified by the browser); ``voila_app("app_x.ipynb")`` starts Voila on one notebook.
Tests skip (with the reason) where Chromium or Playwright is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CHROMIUM = os.environ.get("CFWIDGETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not up after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """End a server we started (its own process group only)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def jupyter_env(base: Path) -> dict:
    """Environment with every Jupyter config/runtime/settings dir in ``base`` (no user
    settings leak in), windowing and news turned off, offline, one thread."""
    env = dict(os.environ)
    dirs = {k: base / k.lower() for k in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR",
                                          "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR",
                                          "JUPYTER_DATA_DIR", "IPYTHONDIR")}
    for k, d in dirs.items():
        d.mkdir(parents=True, exist_ok=True)
        env[k] = str(d)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    # the venv's ipykernel must run the kernel (no user kernels from elsewhere)
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")
    settings = dirs["JUPYTERLAB_SETTINGS_DIR"]
    nb = settings / "@jupyterlab" / "notebook-extension"
    nb.mkdir(parents=True, exist_ok=True)
    (nb / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    ap = settings / "@jupyterlab" / "apputils-extension"
    ap.mkdir(parents=True, exist_ok=True)
    (ap / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return env


@dataclass
class LabServer:
    """A running JupyterLab (``app="lab"``) or Notebook 7 (``app="notebook"``) server."""

    url: str
    root: Path
    proc: subprocess.Popen
    log: Path
    timings: dict = field(default_factory=dict)
    app: str = "lab"

    def write_notebook(self, name: str, *sources: str) -> Path:
        """Write a notebook of one code cell per ``sources`` (Python 3 kernel) into the served
        root; returns its path."""
        import nbformat

        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
        nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                     "name": "python3"}
        path = self.root / name
        nbformat.write(nb, path)
        return path

    def open_notebook(self, page, name: str, timeout: float = 90_000):
        """Open ``name`` (relative to the served root) and wait for its kernel to be idle."""
        if self.app == "lab":
            page.goto(f"{self.url}lab/tree/{name}?reset", wait_until="domcontentloaded")
        else:
            page.goto(f"{self.url}notebooks/{name}", wait_until="domcontentloaded")
        page.wait_for_selector(".jp-Notebook", timeout=timeout)
        self.wait_idle(page, timeout)
        return page

    def wait_idle(self, page, timeout: float = 90_000) -> None:
        """Lab: the status bar says ``| Idle`` only once a kernel exists and is idle.
        Notebook 7 (no status bar): the kernel name shows in the toolbar and the server
        lists the kernel as idle."""
        if self.app == "lab":
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))"
                ".some(e => /\\|\\s*Idle/.test(e.textContent))", timeout=timeout)
            return
        page.wait_for_function(
            "() => { const k = document.querySelector('.jp-KernelName');"
            " return k && /Python/.test(k.textContent); }", timeout=timeout)
        t0 = time.monotonic()
        last_error = None
        while time.monotonic() - t0 < timeout / 1000:
            try:
                with urllib.request.urlopen(self.url + "api/kernels", timeout=5) as r:
                    ks = json.loads(r.read())
            except OSError as e:
                # the listing can answer 500 while a kernel is still starting (seen in CI
                # on Notebook 7); ask again, and report the last error if it never settles
                last_error = e
                time.sleep(0.5)
                continue
            if ks and all(k.get("execution_state") == "idle" for k in ks):
                return
            time.sleep(0.3)
        raise TimeoutError(f"the kernel did not become idle (last error: {last_error}); server log:\n"
                           f"{self.log.read_text()[-3000:]}")

    def run_all(self, page, timeout: float = 180_000) -> float:
        """Run > Run All Cells; wait until every cell has executed; return seconds.

        Saved outputs carry execution counts too, so a watcher first has to see a cell
        queued (``[*]``) before "every prompt has a number" means done."""
        page.evaluate(
            """() => {
                window.__cfwBusySeen = false;
                const busy = () => Array.from(document.querySelectorAll(
                    '.jp-CodeCell .jp-InputArea-prompt')).some(p => p.textContent.includes('*'));
                const obs = new MutationObserver(() => { if (busy()) window.__cfwBusySeen = true; });
                obs.observe(document.body, {subtree: true, childList: true, characterData: true});
                window.__cfwObserver = obs;
            }""")
        t0 = time.perf_counter()
        page.click("li.lm-MenuBar-item:has-text('Run')")
        page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
        page.wait_for_function(
            """() => {
                const ps = Array.from(document.querySelectorAll(
                    '.jp-CodeCell .jp-InputArea-prompt'));
                return window.__cfwBusySeen && ps.length > 0 &&
                    ps.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""", timeout=timeout)
        page.evaluate("() => window.__cfwObserver && window.__cfwObserver.disconnect()")
        self.wait_idle(page, timeout)
        return time.perf_counter() - t0

    @staticmethod
    def errors(page) -> list[str]:
        """Texts of error outputs in the open notebook."""
        return page.eval_on_selector_all(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
            ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']",
            "els => els.map(e => e.textContent)")


def _popen(cmd: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    fh = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.fixture(scope="session")
def browser_root(tmp_path_factory) -> Path:
    """A temporary copy of ``notebooks/`` (what the servers serve)."""
    root = tmp_path_factory.mktemp("served")
    dst = root / "notebooks"
    shutil.copytree(NOTEBOOKS, dst, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return dst


def _jupyter_server(tmp_path_factory, browser_root, app: str) -> Iterator[LabServer]:
    base = tmp_path_factory.mktemp(app)
    env = jupyter_env(base)
    port = free_port()
    log = base / f"{app}.log"
    module = "jupyterlab" if app == "lab" else "notebook"
    cmd = [sys.executable, "-m", module, "--no-browser", "--allow-root",
           "--ip=127.0.0.1", f"--port={port}", f"--ServerApp.root_dir={browser_root}",
           "--IdentityProvider.token=", "--ServerApp.password=",
           "--ServerApp.disable_check_xsrf=True"]
    if app == "lab":
        cmd.append("--LabApp.news_url=None")
    t0 = time.perf_counter()
    proc = _popen(cmd, env, browser_root, log)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_http(url + "api/status", proc, log)
        yield LabServer(url, browser_root, proc, log, {"start_s": time.perf_counter() - t0}, app)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def lab(tmp_path_factory, browser_root) -> Iterator[LabServer]:
    """JupyterLab on 127.0.0.1 with temporary config/settings, serving ``browser_root``."""
    yield from _jupyter_server(tmp_path_factory, browser_root, "lab")


@pytest.fixture(scope="session")
def notebook7(tmp_path_factory, browser_root) -> Iterator[LabServer]:
    """Jupyter Notebook 7 (skipped where the ``notebook`` package is not installed)."""
    pytest.importorskip("notebook", reason="pip install notebook (Notebook 7)")
    yield from _jupyter_server(tmp_path_factory, browser_root, "notebook")


@dataclass
class VoilaApp:
    url: str
    proc: subprocess.Popen
    log: Path
    start_s: float


@pytest.fixture
def voila_app(tmp_path_factory, browser_root):
    """``voila_app("00_quickstart.ipynb")`` serves that notebook as an app; stopped at the
    end of the test."""
    started: list[VoilaApp] = []

    def start(name: str, preheat: bool = False) -> VoilaApp:
        """``preheat=True`` serves as README says for deployment: Voila runs the notebook
        in a pooled kernel before anyone opens the page; returns once the pool is filled."""
        base = tmp_path_factory.mktemp("voila")
        env = jupyter_env(base)
        port = free_port()
        log = base / "voila.log"
        voila = Path(sys.executable).with_name("voila")
        cmd = [str(voila) if voila.exists() else "voila", "--no-browser", f"--port={port}",
               "--Voila.ip=127.0.0.1", "--Voila.tornado_settings={'disable_check_xsrf': True}",
               *(VOILA_PREHEAT if preheat else ()), str(browser_root / name)]
        t0 = time.perf_counter()
        proc = _popen(cmd, env, browser_root, log)
        app = VoilaApp(f"http://127.0.0.1:{port}/", proc, log, 0.0)
        started.append(app)
        _wait_tcp(port, proc, log)  # a GET / would start a kernel: only wait for the port
        if preheat:
            _wait_log(log, "Kernel pool of", proc)
        app.start_s = time.perf_counter() - t0
        return app

    yield start
    for app in started:
        _stop(app.proc)


# the flags README gives for serving the app (also in notebooks/voila.json)
VOILA_PREHEAT = ("--preheat_kernel=True", "--pool_size=1")


def _wait_log(log: Path, needle: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if needle in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"{needle!r} not in the log after {timeout} s:\n{log.read_text()[-3000:]}")


def _wait_tcp(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"port {port} not open after {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def _playwright():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture
def browser_page(_playwright, tmp_path):
    """A fresh page in Debian's Chromium (a new profile per test), console errors kept in
    ``page.console_errors``."""
    ctx = _playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
        args=CHROMIUM_FLAGS, viewport=VIEWPORT)
    page = ctx.pages[0] if ctx.pages else ctx.new_page()
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        ctx.close()


class WidgetDriver:
    """Drives a :class:`cfwidgets.widgets.CounterfactualWidget` in a page through the CSS
    classes it sets (``cfw-target``, ``cfw-run``, ``cfw-after``, ``cfw-after-label``,
    ``cfw-status``): the same in JupyterLab and Voila."""

    @staticmethod
    def state(widget) -> dict:
        """The after image's src, the predicted class shown and the status text."""
        return widget.evaluate(
            """w => {
                const img = w.querySelector('img.cfw-after');
                const pred = w.querySelector('.cfw-after-label .cfw-pred');
                const status = w.querySelector('.cfw-status');
                return {src: img && img.getAttribute('src'),
                        pred: pred && pred.dataset.class,
                        predText: pred && pred.textContent,
                        status: status && status.textContent};
            }""")

    def run_for_target(self, page, widget, target_label: str, timeout: float = 60_000) -> dict:
        """Select ``target_label`` in the target dropdown, click Run and wait for the final
        view (status "done"/"stopped"/"error" and a new after image). Returns
        ``{"click_to_final_view_s", "before", "after"}``."""
        widget.locator(".cfw-target select").select_option(label=target_label)
        page.wait_for_function(
            "w => !w.querySelector('.cfw-after-label .cfw-pred') && "
            "/ready/.test(w.querySelector('.cfw-status').textContent)",
            arg=widget.element_handle())
        before = self.state(widget)
        t0 = time.perf_counter()
        widget.locator("button.cfw-run").click()
        page.wait_for_function(
            """([w, src]) => {
                const img = w.querySelector('img.cfw-after');
                const pred = w.querySelector('.cfw-after-label .cfw-pred');
                const st = w.querySelector('.cfw-status').textContent;
                return img.getAttribute('src') !== src && pred && /done|stopped|error/.test(st);
            }""", arg=[widget.element_handle(), before["src"]], timeout=timeout, polling=20)
        elapsed = time.perf_counter() - t0
        return {"click_to_final_view_s": elapsed, "before": before, "after": self.state(widget)}


    def run_then_stop(self, page, widget, target_label: str, timeout: float = 60_000) -> dict:
        """Select a target, click Run, wait for live progress (a preview or the status
        "step k/n"), click Stop, wait for the "stopped" status. Proves the kernel takes
        clicks while it optimises. Returns the texts seen while running and after."""
        widget.locator(".cfw-target select").select_option(label=target_label)
        page.wait_for_function(
            "w => /ready/.test(w.querySelector('.cfw-status').textContent)",
            arg=widget.element_handle())
        widget.locator("button.cfw-run").click()
        page.wait_for_function(
            "w => /step \\d+/.test(w.querySelector('.cfw-status').textContent)",
            arg=widget.element_handle(), timeout=timeout, polling=20)
        running = self.state(widget)
        t0 = time.perf_counter()
        widget.locator("button.cfw-stop").click()
        page.wait_for_function(
            "w => /stopped|done|error/.test(w.querySelector('.cfw-status').textContent)",
            arg=widget.element_handle(), timeout=timeout, polling=20)
        return {"running": running, "after": self.state(widget),
                "stop_to_view_s": time.perf_counter() - t0}


    def scrub_latency(self, page, widget, positions: int = 8, timeout: float = 3_000) -> list[float]:
        """Hold the path slider's handle and move it across the track in ``positions``
        stops, as a hand does; for each stop, the seconds until the after image shows
        another frame (the kernel's reply drawn). Ends on the last snapshot."""
        track = widget.locator(".cfw-path .noUi-target").bounding_box()
        handle = widget.locator(".cfw-path .noUi-handle").bounding_box()
        y = track["y"] + track["height"] / 2
        page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
        page.mouse.down()
        out = []
        xs = [track["x"] + track["width"] * k / (positions - 1) for k in range(positions)]
        for x in [*reversed(xs[:-1]), xs[-1]]:  # from the end to the start, then back to the end
            src = widget.locator("img.cfw-after").get_attribute("src")
            t0 = time.perf_counter()
            page.mouse.move(x, y, steps=2)
            try:
                page.wait_for_function(
                    "([w, src]) => w.querySelector('img.cfw-after').getAttribute('src') !== src",
                    arg=[widget.element_handle(), src], timeout=timeout, polling="raf")
                out.append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001 - the same frame (a stop inside one snapshot)
                pass
        page.mouse.up()
        return out


@pytest.fixture(scope="session")
def widget_driver() -> WidgetDriver:
    return WidgetDriver()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``test-artifacts/`` in the repository (gitignored): screenshots and timings."""
    d = REPO / "test-artifacts"
    d.mkdir(exist_ok=True)
    return d

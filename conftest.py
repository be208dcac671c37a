"""Repository-wide pytest settings (tests/ and the nbval notebooks alike).

Under pytest-xdist (``-n``; the default run in pyproject.toml) each worker gets an equal
share of the cores for torch and for the notebook kernels it starts, so two workers on two
cores do not oversubscribe them (that costs more than the parallelism wins).
"""

import os

_WORKERS = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
if _WORKERS:
    _threads = str(max(1, (os.cpu_count() or 1) // int(_WORKERS)))
    # inherited by every kernel and server a test starts
    os.environ["OMP_NUM_THREADS"] = _threads
    os.environ["MKL_NUM_THREADS"] = _threads
    import torch

    torch.set_num_threads(int(_threads))


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker per core, at most 4 (each browser-test module starts its own
    JupyterLab and Chromium; past 4, memory rather than cores runs out)."""
    return max(1, min(4, os.cpu_count() or 1))

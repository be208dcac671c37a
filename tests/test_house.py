"""Module-level state and import side effects: explicit caches, no filters changed on
import (issue 19)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cfwidgets._utils import ProcessCache

ROOT = Path(__file__).resolve().parent.parent


def test_process_cache_makes_each_value_once_until_cleared():
    calls = []
    cache = ProcessCache("test")
    make = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert cache.get_or_make("k", make) == 1 and cache.get_or_make("k", make) == 1
    assert len(calls) == 1 and "k" in cache and len(cache) == 1
    cache.pop("k")
    assert cache.get_or_make("k", make) == 2
    cache.clear()
    assert "k" not in cache and cache.get("k") is None


def test_text_data_and_zoo_keep_no_bare_module_dicts():
    # the caches are ProcessCache objects (clearable, named), not dicts behind `global`
    from cfwidgets.data import text
    from cfwidgets.zoo import core

    assert isinstance(text._MEMO, ProcessCache) and isinstance(core._STATE_CACHE, ProcessCache)
    assert "global " not in (ROOT / "cfwidgets" / "zoo" / "core.py").read_text()


def test_importing_the_flow_leaves_the_warning_filters_alone():
    # a library must not change the process's warning filters on import (it silences
    # normflows' torch.lu deprecation only while it builds the layers)
    code = ("import warnings, torch, normflows\n"
            "before = list(warnings.filters)\n"
            "import cfwidgets.models.flows as f\n"
            "assert warnings.filters == before, [w for w in warnings.filters if w not in before]\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    warnings.simplefilter('always')\n"
            "    f.MultiscaleGlow(levels=1, blocks=1, hidden=4, input_shape=(1, 4, 4))\n"
            "assert not [w for w in seen if 'torch.lu' in str(w.message)], 'torch.lu warning shown'\n"
            "assert warnings.filters == before\n")
    pytest.importorskip("normflows")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]

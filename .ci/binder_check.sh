#!/usr/bin/env bash
# The closest test of Binder possible without its servers: a fresh virtual environment
# built from the binder/ files alone (requirements.txt, then postBuild, as repo2docker
# does), every notebook under nbval in it, and a check that nothing trained.
# Usage: bash .ci/binder_check.sh   (from .ci/run after the main tests, or by hand)
# Env: BINDER_VENV (default .venv-binder, recreated), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)
stamp() { echo "[binder $(( $(date +%s) - start ))s] $*"; }

# repo2docker installs binder/apt.txt with apt; here they must already be installed
# (.ci/run installs them), so a missing one is named instead of failing a notebook later.
missing=()
while read -r pkg; do
  pkg=${pkg%%#*}; pkg=${pkg//[[:space:]]/}
  [ -z "$pkg" ] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < binder/apt.txt
if [ ${#missing[@]} -gt 0 ]; then
  echo "binder/apt.txt names packages that are not installed: ${missing[*]}" >&2
  echo "install them first: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

VENV=${BINDER_VENV:-.venv-binder}
PY=${PYTHON:-python3}
rm -rf "$VENV"
stamp "fresh venv $VENV with $($PY --version)"
$PY -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip

req=binder/requirements.txt
# Binder reaches download.pytorch.org; machines that reach only PyPI (this project's CI)
# get torch==2.13.0 from their configured indexes instead, so the index line is dropped
# there (and only there) rather than left to time out.
if ! python - <<'PY'
import socket, sys
try:
    socket.create_connection(("download.pytorch.org", 443), timeout=5).close()
except OSError:
    sys.exit(1)
PY
then
  stamp "download.pytorch.org unreachable: installing $req without its --extra-index-url line"
  req_local=$(mktemp)
  grep -v -- '--extra-index-url https://download.pytorch.org' binder/requirements.txt > "$req_local"
  req=$req_local
fi
stamp "pip install -r binder/requirements.txt"
python -m pip install -q -r "$req"
stamp "binder/postBuild"
bash binder/postBuild
python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__; assert not torch.version.cuda, 'a CUDA build of torch was installed'; print('torch', torch.__version__)"
stamp "environment ready ($(du -sh "$VENV" | cut -f1))"

# the test tools are not part of the Binder image (pytest-xdist: pyproject.toml's addopts run
# the notebooks in parallel)
python -m pip install -q "pytest==9.2.0" "nbval==0.11.0" "pytest-timeout==2.4.0" "pytest-xdist==3.8.0"

# an empty zoo cache: any checkpoint that appears in it was trained by a notebook
CACHE=$(mktemp -d)
export CFWIDGETS_CACHE=$CACHE
stamp "nbval: every notebook under notebooks/"
python -m pytest --nbval-lax -p no:cacheprovider -q notebooks/
trained=$(find "$CACHE" -name '*.safetensors' 2>/dev/null || true)
if [ -n "$trained" ]; then
  echo "notebooks trained models at launch (Binder would train them too):" >&2
  echo "$trained" >&2
  exit 1
fi
rm -rf "$CACHE"
stamp "done: every notebook ran in the binder environment, nothing trained"

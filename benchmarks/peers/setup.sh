#!/usr/bin/env bash
# Build the peers' virtual environments (never the package's dependencies):
#   .peers/omnixai  OmniXAI 1.3 + the same CPU torch as the project (it takes the PyTorch model)
#   .peers/alibi    alibi 0.9 + tensorflow-cpu 2.14.1 (a Keras port of the same CNN)
# Usage: bash benchmarks/peers/setup.sh [PEERS_DIR]   (idempotent: an existing venv is kept)
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-.peers}
PY=${PYTHON:-python3}
mkdir -p "$DIR"
if [ ! -x "$DIR/omnixai/bin/python" ] || ! "$DIR/omnixai/bin/python" -c "import omnixai" 2>/dev/null; then
  $PY -m venv "$DIR/omnixai"
  # OmniXAI imports pkg_resources, which setuptools 81 removed
  "$DIR/omnixai/bin/pip" install -q "setuptools<81" torch==2.13.0 "omnixai==1.3.1" safetensors
fi
if [ ! -x "$DIR/alibi/bin/python" ] || ! "$DIR/alibi/bin/python" -c "import alibi" 2>/dev/null; then
  $PY -m venv "$DIR/alibi"
  # alibi's Counterfactual / CounterfactualProto run on TF1-style graphs: TF 2.14 with numpy < 2
  "$DIR/alibi/bin/pip" install -q "tensorflow-cpu==2.14.1" "numpy<2" click "alibi==0.9.6"
fi
echo "peers ready in $DIR"

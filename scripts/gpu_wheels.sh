#!/usr/bin/env bash
# Fetch, on a machine with pip access, the wheels that scripts/gpu_check.sh needs on the
# lent GPU machine (Python 3.12 with JAX+CUDA, no Keras, nothing can be fetched there).
# They land in .whl/ (git-ignored); the device run must carry it: carry [".whl"].
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
[ -x "$PIP" ] || PIP="python3 -m pip"
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl keras==3.15.1 namex optree
ls -la .whl

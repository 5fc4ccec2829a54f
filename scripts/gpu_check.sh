#!/usr/bin/env bash
# The GPU check of issue 11: both input pipelines at batch 64/256/1024 on the lent GPU
# (and the device pipeline with 5 audio variants per window), then a full official
# 10-fold CV of synthetic windows run for real, first with all ten trials in one process
# (a training worker with ESC_TRIALS_PER_CHILD=10), then with one fresh process per trial
# (the default), under every Keras backend importable there; tables and JSON rows saved
# under $OUT.
#
#   here:  scripts/gpu_wheels.sh                      (once: Keras wheels into .whl/)
#   there: run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# The lent H200 image has JAX with CUDA but neither Keras nor TensorFlow (a CUDA
# TensorFlow is far over the 64 MiB a run may carry), so normally only JAX is measured;
# TensorFlow is measured too where it imports. Each stage has its own time limit, so the
# whole check ends within 9 minutes of device time even where the GPU is slow.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if ! python3 -c "import keras" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# no JAX_COMPILATION_CACHE_DIR: --cv-run measures the training worker's own cache settings
export XLA_PYTHON_CLIENT_PREALLOCATE=false
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; date -u; } \
    | tee "$OUT/gpu.txt"
SIZE=(--windows 35000 --epochs 3 --test-clips 600 --valid-windows 4000 --variants 5)
for backend in jax tensorflow; do
    python3 -c "import $backend" 2>/dev/null || { echo "no $backend here" | tee -a "$OUT/gpu.txt"; continue; }
    KERAS_BACKEND=$backend python3 -c "import keras, $backend as b; print('$backend', b.__version__, 'keras', keras.__version__)" \
        | tee -a "$OUT/gpu.txt"
    KERAS_BACKEND=$backend timeout "${TABLE_LIMIT:-240}" python3 benchmarks/bench_gpu_trial.py "${SIZE[@]}" \
        --json "$OUT/bench-$backend.json" 2>&1 | grep -v "^W0000\|^I0000" | tee "$OUT/bench-$backend.txt"
    KERAS_BACKEND=$backend timeout "${CV_REUSE_LIMIT:-200}" python3 benchmarks/bench_gpu_trial.py \
        --batch-sizes --cv-run --cv-trials-per-process 10 --json "$OUT/cv-reuse-$backend.json" 2>&1 \
        | grep -v "^W0000\|^I0000" | tee "$OUT/cv-reuse-$backend.txt"
    KERAS_BACKEND=$backend timeout "${CV_LIMIT:-100}" python3 benchmarks/bench_gpu_trial.py --batch-sizes \
        --cv-run --json "$OUT/cv-$backend.json" 2>&1 | grep -v "^W0000\|^I0000" | tee "$OUT/cv-$backend.txt"
done

#!/usr/bin/env bash
# VaDE on MNIST over 10 seeds (issue 11, item 2) on a machine with a CUDA GPU, as one prepared
# script: `idvae reproduce vade-mnist` (VaDE's defaults, then ELBO_PIPELINE; each study's 10
# seeds trained as one batched model), matmuls in TF32 (TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1).
# The run store (WORK_DIR, default OUT_DIR/store) is resumable: run the script again on the
# same WORK_DIR and it continues where the time limit (TIME_LIMIT_S, default 3600) cut it.
# Copies the small files into OUT_DIR, e.g. results/vade-mnist: results.csv, run.log, and per
# finished study <study>/study.json, <study>/stability.json (every run's scores, the matrices
# between runs, the priors, the modes) and <study>/runs/<id>/history.csv (the training).
# Options after OUT_DIR go to `idvae reproduce` (e.g. --quick --runs 2 for a smoke run).
# Usage: [TIME_LIMIT_S=...] [WORK_DIR=...] bash benchmarks/gpu_vade_mnist.sh MNIST_DIR OUT_DIR [OPTION ...]
set -u
if [ $# -lt 2 ]; then
    echo "usage: bash benchmarks/gpu_vade_mnist.sh MNIST_DIR OUT_DIR [OPTION ...]" >&2
    exit 2
fi
root=$1
out=$2
shift 2
work=${WORK_DIR:-$out/store}
mkdir -p "$out" "$work"
nvidia-smi -L
python3 -m pip install --no-deps --no-build-isolation -q -e . >"$out/install.log" 2>&1 ||
    echo "pip install -e . failed (see install.log)"
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 PYTHONUNBUFFERED=1
start=$(date +%s)
timeout "${TIME_LIMIT_S:-3600}" python3 -m idvae.cli reproduce vade-mnist --mnist-root "$root" \
    --out "$work" --resume "$@" 2>&1 | tee "$out/run.log"
echo "exit status ${PIPESTATUS[0]} after $(($(date +%s) - start)) s" | tee -a "$out/run.log"
if [ -f "$work/vade-mnist/results.csv" ]; then cp "$work/vade-mnist/results.csv" "$out/"; fi
for study in "$work"/vade-mnist/*/; do
    [ -f "$study/stability.json" ] || continue
    name=$(basename "$study")
    mkdir -p "$out/$name"
    cp "$study/study.json" "$study/stability.json" "$out/$name/"
    for run in "$study"/runs/*/; do
        [ -f "$run/result.json" ] || continue
        mkdir -p "$out/$name/runs/$(basename "$run")"
        cp "$run/model/history.csv" "$out/$name/runs/$(basename "$run")/"
    done
done
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv

#!/usr/bin/env bash
# The GPU path in one prepared script (issue 11, item 4), for a machine with a CUDA GPU:
# the figures of benchmarks/gpu_check.py first (nothing else running), then the test suite
# with estimators on CUDA (device="auto" picks it). Writes into $1 (default results/gpu):
# gpu_check.json, pytest.log. Usage: bash benchmarks/gpu_check.sh [OUT_DIR]
set -u
out=${1:-results/gpu}
mkdir -p "$out"
nvidia-smi -L
# the console script `idvae`, which the CLI tests call
python3 -m pip install --no-deps --no-build-isolation -q -e . >"$out/install.log" 2>&1 ||
    echo "pip install -e . failed: the CLI tests will fail (see install.log)"
PYTHONUNBUFFERED=1 timeout 240 python3 benchmarks/gpu_check.py --out "$out/gpu_check.json" \
    --mnist-root "${IDVAE_MNIST_ROOT:-}"
PYTHONUNBUFFERED=1 timeout "${PYTEST_TIMEOUT:-300}" python3 -m pytest -q -m 'not slow' \
    -p no:cacheprovider -n "${PYTEST_WORKERS:-4}" tests >"$out/pytest.log" 2>&1
echo "pytest exit status $? (last lines of $out/pytest.log):"
tail -n 15 "$out/pytest.log"

# All set-up happens here: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch lies on disk on our machines; a GPU user installs torch first
# (see README) and sets TORCH_SPEC= to keep it.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "" || echo "torch==2.13.0")

.PHONY: demo test test-all bench bench-peer lint format browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml Makefile
	$(if $(TORCH_SPEC),$(BIN)/pip install --quiet "$(TORCH_SPEC)")
	$(BIN)/pip install --quiet -e ".[dev,ray]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/idvae demo

# The quick loop for development: ruff and the tests not marked slow.
test: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest -q

# The full suite, as CI runs it: ruff and every test, slow ones included. The Ray, browser
# and MNIST tests skip when their dependency is missing, and fail instead under CI=true.
test-all: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest -q -m "" --durations=15

# Every benchmarks/bench_*.py: figures to benchmarks/results.json; bench_vade_peer.py (idvae's
# VaDE epoch against a plain PyTorch VaDE, side by side) also to results/bench/vade_peer.json.
# MNIST from $IDVAE_MNIST_ROOT, else ../shared/data/mnist next to the repository.
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py

# Only the side-by-side VaDE comparison (a few minutes on 2 cores).
bench-peer: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_vade_peer.py

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks

format: $(VENV)/.installed
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# Debian's Chromium for the headless-browser report test (skipped when absent). Needs root.
browser:
	command -v chromium >/dev/null 2>&1 || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

clean:
	rm -rf $(VENV) build src/*.egg-info

"""The GPU path, measured on a machine with a CUDA GPU (issue 11, item 4).

Run by ``benchmarks/gpu_check.sh`` (which also runs the test suite there); writes one JSON
file. Figures:

* ``mnist_epochs``: whole training epochs of VaDE's MNIST network (784-500-500-2000-10,
  ReLU, Bernoulli) on all 70,000 images through the public ``fit`` (no pretraining, the
  ELBO epochs only), at batch 100 and 512. Each epoch is timed by the engine
  (``history_[i]["time_s"]``); the first epoch (CUDA start-up, allocator) is reported apart
  and the median, minimum and maximum of the others are given. The data are MNIST when
  ``--mnist-root`` holds it, else uniform random pixels of the same shape (``data`` says
  which).
* ``vectorized_seeds``: the Table-2 VaDE (``bench_vectorize.table2_vade``) on 5,000
  points: one fit against 10 seeds as one batched model (``idvae.vectorize.fit_seeds``),
  on the GPU, after a warm-up; target ratio at most 2.

Usage::

    python benchmarks/gpu_check.py --out results/gpu/gpu_check.json [--mnist-root DIR]
    python benchmarks/gpu_check.py --out /tmp/smoke.json --device cpu --quick  # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

EPOCHS = 4  # the first one is start-up; the median of the other three is reported


def _mnist(root: str | None) -> tuple[np.ndarray, str]:
    if root and Path(root).is_dir():
        from idvae.datasets import load_mnist_combined

        x, _ = load_mnist_combined(root)
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        return (x / 255.0 if x.max() > 1 else x), "mnist"
    rng = np.random.default_rng(0)
    return rng.random((70_000, 784), dtype=np.float32), "random"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def mnist_epochs(root: str | None, device: str, n_samples: int) -> dict:
    """Whole epochs of VaDE's MNIST network on ``device``, at batch 100 and 512."""
    import idvae
    from idvae.models.vade import ELBO_PIPELINE

    x, source = _mnist(root)
    x = x[:n_samples]
    figures: dict = {"data": source, "n_samples": int(len(x)), "epochs_run": EPOCHS}
    for batch in (100, 512):
        model = idvae.VaDE(
            10,
            10,
            encoder_sizes=(500, 500, 2000),
            decoder_sizes=(2000, 500, 500),
            activation="relu",
            likelihood="bernoulli",
            **ELBO_PIPELINE | {"pretrain_epochs": 0, "epochs": EPOCHS},
            batch_size=batch,
            lr_decay=1.0,
            device=device,
            random_state=0,
        )
        start = time.perf_counter()
        model.fit(x)
        _sync(device)
        fit_s = time.perf_counter() - start
        epochs = [r["time_s"] for r in model.history_ if r.get("phase") == "train"]
        rest = epochs[1:]
        figures[f"batch{batch}"] = {
            "first_epoch_s": round(epochs[0], 3),
            "median_epoch_s": round(statistics.median(rest), 3),
            "min_epoch_s": round(min(rest), 3),
            "max_epoch_s": round(max(rest), 3),
            "fit_s": round(fit_s, 2),
            "fixed_cost_s": round(fit_s - sum(epochs), 2),
        }
    return figures


def vectorized_seeds(device: str, n_seeds: int) -> dict:
    """One Table-2 VaDE fit against ``n_seeds`` vectorised seeds, both on ``device``."""
    from sklearn.base import clone

    from bench_vectorize import table2_vade
    from idvae.datasets import parallelograms
    from idvae.metrics import mcc
    from idvae.vectorize import fit_seeds

    data = parallelograms(5000, 3, obs_dim=10, random_state=1)
    est = table2_vade().set_params(device=device)
    # warm-up of both paths: CUDA context, kernels, vmap set-up
    fit_seeds(est, data.x[:300], [0, 1])
    clone(est).set_params(random_state=0).fit(data.x[:300])
    start = time.perf_counter()
    one = clone(est).set_params(random_state=0).fit(data.x)
    _sync(device)
    one_s = time.perf_counter() - start
    start = time.perf_counter()
    fitted, reports = fit_seeds(est, data.x, range(n_seeds), return_report=True)
    _sync(device)
    many_s = time.perf_counter() - start
    dz = float(np.abs(fitted[0].transform(data.x) - one.transform(data.x)).max())
    return {
        "n_seeds": n_seeds,
        "one_seed_s": round(one_s, 2),
        "vectorized_s": round(many_s, 2),
        "ratio_vectorized_to_one": round(many_s / one_s, 2),
        "seeds_vectorized": int(sum(r.vectorized for r in reports)),
        "max_abs_dz_seed0_vs_separate": float(f"{dz:.3g}"),
        "latent_scale": round(float(np.abs(one.transform(data.x)).max()), 3),
        "weak_mcc_truth": [
            round(float(mcc(data.points, m.transform(data.x), alignment="affine")), 4)
            for m in fitted
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--mnist-root", default=os.environ.get("IDVAE_MNIST_ROOT"))
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of the script")
    parser.add_argument("--quick", action="store_true", help="2,000 images, 3 seeds")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: expected a CUDA GPU (torch.cuda.is_available()) but found none")
    n_samples, n_seeds = (2000, 3) if args.quick else (70_000, 10)
    figures: dict = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "quick": args.quick,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    parts = {
        "mnist_epochs": lambda: mnist_epochs(args.mnist_root, args.device, n_samples),
        "vectorized_seeds": lambda: vectorized_seeds(args.device, n_seeds),
    }
    for name, part in parts.items():
        try:
            figures[name] = part()
        except Exception as err:  # one failing part must not lose the others' figures
            figures[f"{name}_error"] = f"{type(err).__name__}: {err}"[:400]
        print(json.dumps({name: figures.get(name, figures.get(f"{name}_error"))}), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(figures, indent=1) + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    main()

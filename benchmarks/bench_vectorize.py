"""Vectorised seeds: wall time of R seeds as one batched model vs separate fits (Table 2 VaDE).

Configuration of App. J.3.2 / Table 2: random parallelograms, 5,000 samples, n = 2 and
n = 10, m = 2, J = 3, VaDE with encoder n-64-512-64-m and decoder m-64-512-512-n,
LeakyReLU, 15 pretraining + 20 VaDE epochs, batch 100, CPU, one torch thread for every
case (same conditions; on a shared machine all times are inflated by other load).

Figures per n:

* ``one_seed_s``: one separate fit (seed 0; the mean over the separate fits measured);
* ``vectorized_s``: 10 seeds in one batched model (``idvae.vectorize.fit_seeds``);
* ``separate_s``: 10 separate fits, extrapolated as 10 x ``one_seed_s``;
* ``ratio_vectorized_to_one`` (target <= 3) and ``speedup_vs_separate``;
* the check that each seed is its own fit: ``max_abs_dz_vs_separate`` (largest difference of
  the latents of a vectorised seed and the separate fit with the same seed), beside
  ``max_abs_dz_separate_1_vs_2_threads`` (the same separate fit run with 2 torch threads:
  rounding alone), and the weak MCC to the true plane of every vectorised seed vs of the
  separate fits (the distributions should agree).

``IDVAE_BENCH_QUICK=1``: 1 + 2 epochs, 3 seeds, 2 separate fits (a smoke run).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from sklearn.base import clone

from idvae.datasets import parallelograms
from idvae.metrics import mcc
from idvae.models import VaDE
from idvae.models.vade import ELBO_PIPELINE
from idvae.vectorize import fit_seeds

QUICK = os.environ.get("IDVAE_BENCH_QUICK") == "1"
N_SEEDS = 3 if QUICK else 10
N_SEPARATE = 2  # separate fits actually run (seeds 0, 1); 10 separate is extrapolated


def table2_vade() -> VaDE:
    """The VaDE of App. J.3.2 (Table 2)."""
    return VaDE(
        **ELBO_PIPELINE | {"pretrain_epochs": 1 if QUICK else 15, "epochs": 2 if QUICK else 20},
        latent_dim=2,
        n_components=3,
        encoder_sizes=(64, 512, 64),
        decoder_sizes=(64, 512, 512),
        activation="leaky_relu",
        batch_size=100,
        device="cpu",
    )


def _weak_mcc(z: np.ndarray, truth: np.ndarray) -> float:
    return float(mcc(truth, z, alignment="affine", random_state=0))


def bench_case(obs_dim: int) -> dict:
    data = parallelograms(5000, 3, obs_dim=obs_dim, random_state=1)
    est = table2_vade()
    fit_seeds(est, data.x[:300], [0, 1])  # warm-up (imports, vmap set-up)

    separate, separate_s = [], []
    for seed in range(N_SEPARATE):
        start = time.perf_counter()
        separate.append(clone(est).set_params(random_state=seed).fit(data.x))
        separate_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    vectorized, reports = fit_seeds(est, data.x, range(N_SEEDS), return_report=True)
    vectorized_s = time.perf_counter() - start

    # rounding reference: the separate fit of seed 0 again, with 2 torch threads (other
    # BLAS blocking, so other rounding); how far that moves the latents is how far rounding
    # alone moves this training
    torch.set_num_threads(2)
    try:
        rethreaded = clone(est).set_params(random_state=0).fit(data.x)
    finally:
        torch.set_num_threads(1)

    one = float(np.mean(separate_s))
    z_vec = [m.transform(data.x) for m in vectorized]
    z_sep = [m.transform(data.x) for m in separate]
    dz = max(float(np.abs(z_vec[i] - z_sep[i]).max()) for i in range(N_SEPARATE))
    mcc_vec = [_weak_mcc(z, data.points) for z in z_vec]
    mcc_sep = [_weak_mcc(z, data.points) for z in z_sep]
    return {
        "n_seeds": N_SEEDS,
        "one_seed_s": round(one, 2),
        "vectorized_s": round(vectorized_s, 2),
        "separate_s": round(N_SEEDS * one, 2),
        "ratio_vectorized_to_one": round(vectorized_s / one, 2),
        "speedup_vs_separate": round(N_SEEDS * one / vectorized_s, 2),
        "seeds_vectorized": sum(r.vectorized for r in reports),
        "max_abs_dz_vs_separate": float(f"{dz:.3g}"),
        "max_abs_dz_separate_1_vs_2_threads": float(
            f"{float(np.abs(rethreaded.transform(data.x) - z_sep[0]).max()):.3g}"
        ),
        "latent_scale": round(float(np.abs(z_sep[0]).max()), 3),
        "weak_mcc_truth_vectorized": [round(v, 4) for v in mcc_vec],
        "weak_mcc_truth_separate": [round(v, 4) for v in mcc_sep],
    }


def run() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {f"table2_n{n}": bench_case(n) for n in (2, 10)}
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))

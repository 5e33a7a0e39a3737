"""Experiments: wall time of ``idvae demo``, a 5-run study with 1 vs 2 jobs, vectorised seeds.

Figures (seconds, wall clock; on a shared machine they are inflated by other load):

* ``demo_seconds`` / ``demo_weak_mcc_between``: the full ``idvae demo`` (5 VaDE runs on
  model (3), n = 5,000) with its default settings (target < 300 s on 2 cores, weak MCC
  >= 0.95);
* ``stability_jobs1_seconds`` / ``stability_jobs2_seconds``: 5 separate runs of a small
  VaDE in this process vs a 2-process pool (``vectorize=False``);
* ``vectorized_1_seed_seconds`` / ``vectorized_10_seeds_seconds``: the Table 2 VaDE
  (n-64-512-64-m / m-64-512-512-n, 5,000 samples, 15 + 20 epochs) for one seed and for 10
  seeds as one batched model (target: 10 seeds <= 3x one seed).

``IDVAE_BENCH_QUICK=1`` shrinks every case (for a smoke run).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from idvae.experiments import EstimatorSpec, stability
from idvae.experiments.demo import run_demo

QUICK = os.environ.get("IDVAE_BENCH_QUICK") == "1"


def _timed(func):
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def bench_demo() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        seconds, outcome = _timed(lambda: run_demo(Path(tmp) / "demo", quick=QUICK))
    summary = outcome.result.summary()
    return {
        "demo_seconds": round(seconds, 1),
        "demo_jobs": outcome.settings.get("jobs"),
        "demo_vectorized": outcome.settings.get("vectorize"),
        "demo_weak_mcc_between": round(summary["between_runs"]["weak_mcc"]["mean"], 4),
        "demo_strong_mcc_between": round(summary["between_runs"]["strong_mcc"]["mean"], 4),
        "demo_dist_aff_between": round(summary["between_runs"]["dist_aff"]["mean"], 4),
        "demo_weak_mcc_to_truth": round(summary["to_truth"]["weak_mcc"]["mean"], 4),
    }


def bench_jobs() -> dict:
    from idvae.simulate import sample_model

    sim = sample_model(2000, latent_dim=2, obs_dim=10, n_components=3, random_state=0)
    spec = EstimatorSpec(
        "vade",
        {
            "encoder_sizes": [64, 128, 64],
            "decoder_sizes": [64, 128, 128],
            "pretrain_epochs": 3 if QUICK else 10,
            "epochs": 5 if QUICK else 20,
        },
    )
    out = {}
    for jobs in (1, 2):
        seconds, result = _timed(
            lambda jobs=jobs: stability(spec, sim.x, n_runs=5, jobs=jobs, vectorize=False)
        )
        out[f"stability_jobs{jobs}_seconds"] = round(seconds, 1)
        out[f"stability_jobs{jobs}_fit_seconds_sum"] = round(
            sum(r.fit_seconds for r in result.runs), 1
        )
    return out


def bench_vectorized() -> dict:
    import idvae
    from idvae.datasets import parallelograms
    from idvae.experiments.configs import vade_params
    from idvae.vectorize import fit_seeds

    data = parallelograms(1000 if QUICK else 5000, 3, random_state=1)
    params = vade_params(QUICK, 2)
    template = idvae.VaDE(**params, device="cpu")
    one, _ = _timed(lambda: fit_seeds(template, data.x, [0]))
    ten, models = _timed(lambda: fit_seeds(template, data.x, list(range(10))))
    return {
        "vectorized_1_seed_seconds": round(one, 1),
        "vectorized_10_seeds_seconds": round(ten, 1),
        "vectorized_10_over_1": round(ten / one, 2),
        "vectorized_n_models": len(models),
    }


def run() -> dict:
    torch.set_num_threads(1)
    figures = {"torch_threads": 1, "quick": QUICK}
    figures.update(bench_vectorized())
    figures.update(bench_jobs())
    figures.update(bench_demo())
    return figures


if __name__ == "__main__":
    print(run())

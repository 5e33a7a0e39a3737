"""MFCVAE's facet initialisations and refits, measured per facet on 32 + 32 instances.

The instances are those of the MFCVAE rate test (tests/test_recovery_rates.py) for seeds
0-31, and 32-63 held out: ``sample_model(3000, latent_dim=4, obs_dim=12, facets=(3, 3),
joint=JOINT, hidden=(12,), random_state=s)``, two independent facets of 3 states, 2 latent
coordinates each. Each configuration is ``MFCVAE((2, 2), (3, 3), random_state=s,
**config)``, the estimator's defaults of the day it was measured pinned in ``CONFIGS``,
scored against the truth:

- ``facet_accuracy``: the lower of the two facets' cluster accuracies (facets matched to
  the truth first, as they are identifiable up to their order);
- ``joint_accuracy``: accuracy of the joint state (9 classes);
- ``weak_mcc``: weak MCC of ``transform(X)`` to the true z;
- ``score``: the fit's mean ELBO per point.

The rate test's bar is ``facet_accuracy >= 0.9``; issue 8's is weak MCC >= 0.95 and
accuracy >= 0.95 (``recovered``). Seeds 0-7 are the test's. The tolerance of
``most_additive`` was chosen looking at seeds 0-15; seeds 16-31 check it where nothing was
chosen.

Usage (resumable: one JSON file per fit; finished fits are skipped)::

    python benchmarks/levers_mfcvae.py [config ...] [--workers 1] [--seeds 32-63]

``--seeds 32-63`` runs the held-out seeds, on which nothing was chosen: the check of a
configuration before it becomes the default.

Writes ``results/levers/mfcvae/<config>/seed<s>.json`` and ``results/levers/mfcvae/summary.json``.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from idvae._validation import write_json_atomic
from levers_vade import stored_rows, sweep

ROOT = Path(__file__).resolve().parent.parent / "results" / "levers" / "mfcvae"
SEEDS = range(32)
# seeds on which no choice was made, for a configuration that may become the default
HELD_OUT_SEEDS = range(32, 64)
JOINT = np.outer([0.3, 0.3, 0.4], [0.25, 0.35, 0.4])

# every configuration pins the defaults of the day it was measured, so that it stays
# reproducible: no facet refits (default since 2026-12-02) unless named, and 30 faceted
# epochs without basis refits (the defaults until 2026-12-03)
EARLIER = {"prior_refit_every": None, "epochs": 30, "refit_basis": False}
MIXTURE = {"facet_init": "mixture", "gmm_n_init": 10} | EARLIER
REFIT5 = MIXTURE | {"prior_refit_every": 5}

CONFIGS: dict[str, dict] = {
    # MFCVAE's defaults until 2026-12-02: the joint route, 3 EM restarts of its mixture
    "joint-gmm3": {"facet_init": "joint", "gmm_n_init": 3} | EARLIER,
    # the same with more restarts of its initial mixture
    "joint-gmm10": {"facet_init": "joint", "gmm_n_init": 10} | EARLIER,
    # no joint training stage: ten full-covariance mixtures on the pretrained means, the
    # most additive of the nearly most likely factored (most_additive)
    "mixture-gmm10": MIXTURE,
    # the pretraining: 50 autoencoder epochs instead of 15; a VAE with prior N(0, I)
    # instead of the autoencoder (VaDE's pretraining, docs/recovery_levers.md)
    "mixture-ae50": MIXTURE | {"pretrain_epochs": 50},
    "mixture-vae15": MIXTURE | {"pretrain": "vae"},
    # the facets refitted every 10 / 5 epochs of training, kept when they fit the
    # posteriors better (VaDE's prior refit, finding 4); every 5 is the default since
    "mixture-refit10": MIXTURE | {"prior_refit_every": 10},
    "mixture-refit5": REFIT5,
    # smaller networks with the refits (the rate test's decoder has one hidden layer of 12)
    "refit5-net64": REFIT5 | {"encoder_sizes": (64, 64), "decoder_sizes": (64, 64)},
    "refit5-net32": REFIT5 | {"encoder_sizes": (32, 32), "decoder_sizes": (32, 32)},
    # the refits may also move the latent to the basis where a clustering's facets fit
    # best (faceted_basis), kept when that fits the posteriors better after the change of
    # variables; the same refitting every 3 epochs; and for 60 epochs instead of 30, the
    # defaults since 2026-12-03
    "refit5-basis": REFIT5 | {"refit_basis": True},
    "refit3-basis": MIXTURE | {"prior_refit_every": 3, "refit_basis": True},
    "refit5-basis-e60": REFIT5 | {"refit_basis": True, "epochs": 60},
    # training twice as long (at 30 epochs the ELBO still falls fast)
    "mixture-e60": MIXTURE | {"epochs": 60},
}


def fit_one(config: str, seed: int) -> dict:
    import torch

    from idvae.metrics import cluster_accuracy, mcc
    from idvae.models import MFCVAE
    from idvae.simulate import sample_model

    torch.set_num_threads(1)
    sim = sample_model(
        3000, latent_dim=4, obs_dim=12, facets=(3, 3), joint=JOINT, hidden=(12,),
        random_state=seed,
    )  # fmt: skip
    start = time.perf_counter()
    model = MFCVAE((2, 2), (3, 3), random_state=seed, device="cpu", **CONFIGS[config]).fit(sim.x)
    seconds = time.perf_counter() - start
    labels = model.labels_
    facet_accuracy = max(
        min(cluster_accuracy(sim.u[:, i], labels[:, order[i]]) for i in range(2))
        for order in ((0, 1), (1, 0))
    )
    joint_true = np.ravel_multi_index(tuple(sim.u.T), (3, 3))
    weak = float(mcc(sim.z, model.transform(sim.x), alignment="affine", random_state=0))
    return {
        "config": config,
        "seed": seed,
        "facet_accuracy": float(facet_accuracy),
        "joint_accuracy": float(cluster_accuracy(joint_true, model.predict_joint(sim.x))),
        "weak_mcc": weak,
        "recovered": bool(weak >= 0.95 and facet_accuracy >= 0.95),
        "score": float(model.score(sim.x)),
        "seconds": seconds,
        "host": platform.node(),
    }


def _path(config: str, seed: int) -> Path:
    return ROOT / config / f"seed{seed}.json"


def _run_and_store(config: str, seed: int) -> dict:
    row = fit_one(config, seed)
    write_json_atomic(_path(config, seed), row)
    return row


def summarize(rows: list[dict]) -> dict:
    """Counts over seeds 0-31, the rate test's seeds 0-7, and the halves 0-15 and 16-31;
    where a configuration also ran on the held-out seeds 32-63 (``--seeds 32-63``), its
    counts there under ``held_out``."""

    def passing(seeds: range) -> int:
        return int(sum(r["facet_accuracy"] >= 0.9 for r in rows if r["seed"] in seeds))

    held_out = [r for r in rows if r["seed"] in HELD_OUT_SEEDS]
    rows = [r for r in rows if r["seed"] in SEEDS]
    extra = {}
    if held_out:
        extra["held_out"] = {
            "fits": len(held_out),
            "facets_at_0.9": int(sum(r["facet_accuracy"] >= 0.9 for r in held_out)),
            "recovered": int(sum(r["recovered"] for r in held_out)),
        }
    return extra | {
        "fits": len(rows),
        "facets_at_0.9": passing(SEEDS),
        "facets_at_0.9_seeds_0_7": passing(range(8)),
        "facets_at_0.9_seeds_0_15": passing(range(16)),
        "facets_at_0.9_seeds_16_31": passing(range(16, 32)),
        "recovered": int(sum(r["recovered"] for r in rows)),
        "median_facet_accuracy": float(np.median([r["facet_accuracy"] for r in rows])),
        "median_weak_mcc": float(np.median([r["weak_mcc"] for r in rows])),
        "median_seconds": float(np.median([r["seconds"] for r in rows])),
    }


def main() -> None:
    sweep(CONFIGS, SEEDS, _path, _run_and_store, default_workers=1)
    summary = {}
    for config in CONFIGS:
        rows = stored_rows(ROOT, config)
        if rows:
            summary[config] = s = summarize(rows)
            print(
                f"{config:14s} facets >= 0.9: {s['facets_at_0.9']}/{s['fits']} "
                f"(0-7: {s['facets_at_0.9_seeds_0_7']}, 0-15: {s['facets_at_0.9_seeds_0_15']}, "
                f"16-31: {s['facets_at_0.9_seeds_16_31']})  recovered {s['recovered']}  "
                f"median facet accuracy {s['median_facet_accuracy']:.3f}  "
                f"{s['median_seconds']:.1f} s/fit"
            )
            if "held_out" in s:
                h = s["held_out"]
                print(
                    f"{'':14s} seeds 32-63: facets >= 0.9: {h['facets_at_0.9']}/{h['fits']}  "
                    f"recovered {h['recovered']}"
                )
    write_json_atomic(ROOT / "summary.json", summary)


if __name__ == "__main__":
    main()

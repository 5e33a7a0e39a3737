"""The per-seed recovery figures of docs/models.md and docs/models_mfcvae_ivae.md.

Configurations (seed s draws the instance and seeds the fit, ``random_state=s``):

* ``mfcvae-joint`` / ``mfcvae-blocks``: model (3) with two independent facets of 3 states,
  2 latent coordinates each, ``sample_model(3000, latent_dim=4, obs_dim=12, facets=(3, 3),
  joint=outer([.3, .3, .4], [.25, .35, .4]), hidden=(12,))``; ``MFCVAE((2, 2), (3, 3))``
  with (64, 64) networks, batch 128, 10 pretraining epochs, then 60 ELBO epochs
  (``"joint"``: 40 joint + 20 faceted; ``"blocks"``: 60 faceted). Score: per-facet cluster
  accuracy after matching facets to the truth (the min over the two facets), and weak MCC
  (CCA) of the latents to the true z. Seeds 0-5.
* ``ivae-30`` / ``ivae-80``: ``sample_model(2000, latent_dim=2, obs_dim=10, n_components=5)``,
  ``IVAE(2)`` with (64, 64) networks, batch 128, 30 or 80 epochs, u = the true component.
  Score: weak MCC (CCA) to the true z. Seeds 0-5.
* ``ivae-default``: the same instances, ``IVAE(2)`` with its defaults, as the rate test of
  tests/test_recovery_rates.py fits it. Score: weak MCC (affine) to the true z. Seeds 0-7.
* ``vade-m5``: ``sample_model(4000, latent_dim=5, obs_dim=50, n_components=4)`` with X
  scaled by 100, ``VaDE(5, 4, **ELBO_PIPELINE)`` (the defaults before the recovery levers).
  Score: weak MCC (affine) to the true z and cluster accuracy. Seed 0.
* ``vade-canonical``: the slow test of docs/identify.md (Thm E.1 on a fitted model):
  ``sample_model(3000, latent_dim=2, obs_dim=10, n_components=3, random_state=1)``,
  ``VaDE(2, 3, **ELBO_PIPELINE)`` (diagonal prior). Scores: weak MCC
  (affine) of the raw latents, strong MCC of the raw latents and of the canonical latents of
  Thm E.1 (``canonicalize(est, strict=False)``) to the true z. Instance 1 only.

One torch thread, CPU. Usage (resumable: one JSON file per fit under
``results/models/<config>/seed<s>.json``; finished fits are skipped)::

    python benchmarks/models_recovery.py [config ...]

Prints one line per fit and writes ``results/models/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent / "results" / "models"
SEEDS: dict[str, range] = {
    "mfcvae-joint": range(6),
    "mfcvae-blocks": range(6),
    "ivae-30": range(6),
    "ivae-80": range(6),
    "ivae-default": range(8),
    "vade-m5": range(1),
    "vade-canonical": range(1, 2),
}
_NETS = {"encoder_sizes": (64, 64), "decoder_sizes": (64, 64)}


def _mfcvae(config: str, seed: int) -> dict:
    import idvae
    from idvae.metrics import cluster_accuracy, mcc

    joint = np.outer([0.3, 0.3, 0.4], [0.25, 0.35, 0.4])
    sim = idvae.simulate.sample_model(
        3000, latent_dim=4, obs_dim=12, facets=(3, 3), joint=joint, hidden=(12,), random_state=seed
    )
    epochs = (
        {"facet_init": "joint", "joint_epochs": 40, "epochs": 20}
        if config == "mfcvae-joint"
        else {"facet_init": "blocks", "epochs": 60}
    )
    # prior_refit_every=None: these configurations predate the facet refits (2026-12-02)
    model = idvae.MFCVAE(
        (2, 2), (3, 3), **_NETS, pretrain_epochs=10, batch_size=128, random_state=seed,
        device="cpu", prior_refit_every=None, **epochs,
    ).fit(sim.x)  # fmt: skip
    labels = model.predict(sim.x)
    # facets are identifiable only up to their order: match them to the truth first
    per_facet = max(
        ([float(cluster_accuracy(sim.u[:, i], labels[:, order[i]])) for i in range(2)])
        for order in ((0, 1), (1, 0))
    )
    weak = float(mcc(sim.z, model.transform(sim.x), alignment="cca", random_state=0))
    return {"facet_accuracy": per_facet, "min_facet_accuracy": min(per_facet), "weak_mcc": weak}


def _ivae(config: str, seed: int) -> dict:
    import idvae
    from idvae.metrics import mcc

    sim = idvae.simulate.sample_model(
        2000, latent_dim=2, obs_dim=10, n_components=5, random_state=seed
    )
    if config == "ivae-default":  # the rate test of tests/test_recovery_rates.py
        params, alignment = {}, "affine"
    else:
        epochs = int(config.removeprefix("ivae-"))
        params, alignment = {**_NETS, "epochs": epochs, "batch_size": 128}, "cca"
    model = idvae.IVAE(2, **params, random_state=seed, device="cpu").fit(sim.x, sim.u)
    z = model.transform(sim.x, sim.u)
    return {"weak_mcc": float(mcc(sim.z, z, alignment=alignment, random_state=0))}


def _vade_m5(seed: int) -> dict:
    import idvae
    from idvae.metrics import cluster_accuracy, mcc
    from idvae.models.vade import ELBO_PIPELINE

    sim = idvae.simulate.sample_model(
        4000, latent_dim=5, obs_dim=50, n_components=4, random_state=seed
    )
    model = idvae.VaDE(5, 4, **ELBO_PIPELINE, random_state=seed, device="cpu").fit(sim.x * 100.0)
    z = model.transform(sim.x * 100.0)
    return {
        "weak_mcc": float(mcc(sim.z, z, alignment="affine", random_state=0)),
        "accuracy": float(cluster_accuracy(sim.u, model.labels_)),
    }


def _vade_canonical(seed: int) -> dict:
    import idvae
    from idvae.identify import canonicalize
    from idvae.metrics import mcc
    from idvae.models.vade import ELBO_PIPELINE

    sim = idvae.simulate.sample_model(
        3000, latent_dim=2, obs_dim=10, n_components=3, random_state=seed
    )
    model = idvae.VaDE(2, 3, **ELBO_PIPELINE, random_state=0, device="cpu").fit(sim.x)
    z_raw = model.transform(sim.x)
    z_can = canonicalize(model, strict=False).apply(z_raw)
    return {
        "weak_mcc": float(mcc(sim.z, z_raw, alignment="affine", random_state=0)),
        "strong_mcc_raw": float(mcc(sim.z, z_raw, random_state=0)),
        "strong_mcc_canonical": float(mcc(sim.z, z_can, random_state=0)),
    }


def _commit() -> str:
    """The commit of the idvae that ran, with "+dirty" when its sources had local changes."""
    import idvae

    src = Path(idvae.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=src,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."],
            cwd=src,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def fit_one(config: str, seed: int) -> dict:
    """Fit one configuration on one seed; its scores as a JSON-able dict."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    if config.startswith("mfcvae-"):
        scores = _mfcvae(config, seed)
    elif config.startswith("ivae-"):
        scores = _ivae(config, seed)
    elif config == "vade-canonical":
        scores = _vade_canonical(seed)
    else:
        scores = _vade_m5(seed)
    return {
        "config": config,
        "seed": seed,
        **scores,
        "seconds": round(time.perf_counter() - start, 2),
        "host": f"{platform.node()} ({os.cpu_count()} cpus, torch {torch.__version__})",
        "commit": _commit(),
    }


def _path(config: str, seed: int) -> Path:
    return ROOT / config / f"seed{seed}.json"


def _store(row: dict) -> None:
    path = _path(row["config"], row["seed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=1) + "\n")
    tmp.replace(path)


def summarize(rows: list[dict]) -> dict:
    """Per-seed scores of one configuration, in seed order, and how many pass 0.9."""
    rows = sorted(rows, key=lambda r: r["seed"])
    key = "min_facet_accuracy" if "min_facet_accuracy" in rows[0] else "weak_mcc"
    out = {
        "seeds": [r["seed"] for r in rows],
        key: [round(r[key], 3) for r in rows],
        f"n_{key}_at_least_0.9": int(sum(r[key] >= 0.9 for r in rows)),
        "seconds": [r["seconds"] for r in rows],
    }
    for extra in ("weak_mcc", "accuracy", "strong_mcc_raw", "strong_mcc_canonical"):
        if extra != key and extra in rows[0]:
            out[extra] = [round(r[extra], 3) for r in rows]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=list(SEEDS))
    args = parser.parse_args()
    unknown = [c for c in args.configs if c not in SEEDS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; expected some of {list(SEEDS)}")
    for config in args.configs:
        for seed in SEEDS[config]:
            if _path(config, seed).exists():
                continue
            row = fit_one(config, seed)
            _store(row)
            print(f"  {config} seed {seed}: {row} ", flush=True)
    summary = {}
    for config in SEEDS:
        rows = [json.loads(p.read_text()) for p in sorted((ROOT / config).glob("seed*.json"))]
        if rows:
            summary[config] = summarize(rows)
            print(f"{config:14s} {summary[config]}")
    ROOT.mkdir(parents=True, exist_ok=True)
    tmp = ROOT / "summary.tmp"
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    tmp.replace(ROOT / "summary.json")


if __name__ == "__main__":
    main()

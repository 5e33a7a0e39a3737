"""The combining functions of benchmarks/combine_starts.py (seventeenth round of
docs/recovery_levers.md): exact on latents that are affine images of one another, and the
per-instance runner the scripts share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark_scripts import benchmark_module


def test_combine_starts_consensus_and_glue_are_exact_on_affine_images() -> None:
    """The consensus of affine images of one latent is that latent up to an affine map, and
    nearly so beside an unrelated latent; glue puts per-group affine images back exactly."""
    module = benchmark_module("combine_starts")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 3))
    images = [z @ rng.normal(size=(3, 3)) + rng.normal(size=3) for _ in range(4)]
    shared = module.consensus(images)
    np.testing.assert_allclose(shared.std(0), 1.0, rtol=1e-10)
    design = np.c_[shared, np.ones(len(z))]
    coef, *_ = np.linalg.lstsq(design, z, rcond=None)
    np.testing.assert_allclose(design @ coef, z, atol=1e-8)
    # beside an unrelated latent the shared directions still win, up to chance overlap
    shared = module.consensus([*images, rng.normal(size=(400, 3))])
    design = np.c_[shared, np.ones(len(z))]
    coef, *_ = np.linalg.lstsq(design, z, rcond=None)
    assert np.corrcoef((design @ coef).ravel(), z.ravel())[0, 1] > 0.99
    groups = rng.integers(0, 3, size=len(z))
    parts = {g: images[g] for g in range(3)}
    np.testing.assert_allclose(module.glue(parts, z, groups), z, atol=1e-8)


def test_combine_starts_best_mix_finds_the_consistent_placement() -> None:
    """Of a latent that is one affine image of z and one whose component 1 is sheared apart
    from the rest, the best mix places every component consistently (weak MCC 1)."""
    module = benchmark_module("combine_starts")
    from idvae.metrics import mcc
    from idvae.simulate import sample_model

    sim = sample_model(900, latent_dim=2, obs_dim=4, n_components=3, random_state=0)
    sheared = sim.z.copy()
    rows = sim.labels == 1
    sheared[rows] = sheared[rows] @ np.array([[1.0, 0.9], [0.0, 1.0]]) + 2.0
    latents = {"good": sim.z @ np.array([[2.0, 1.0], [0.0, 1.0]]), "sheared": sheared}
    best = module.best_mix(sim, latents, "sheared")
    sheared_alone = mcc(sim.z, sheared, alignment="affine", random_state=0)
    assert best["weak_mcc"] > 0.999 > sheared_alone + 0.01
    assert best["choice"][1] == "good"


def test_run_instances_writes_one_record_per_new_instance_and_skips_written_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every part of every instance runs in the worker processes; an instance already
    written is left alone (the scripts resume by it), and ``record`` shapes the file."""
    module = benchmark_module("combine_starts")
    (tmp_path / "seed-1.json").write_text('{"kept": true}')
    parts = {"length": len, "upper": str.upper}
    module.run_instances(["seed-0", "seed-1"], tmp_path, parts, 1, lambda r: r["length"])
    assert json.loads((tmp_path / "seed-0.json").read_text()) == {
        "instance": "seed-0",
        "length": 6,
        "upper": "SEED-0",
    }
    assert json.loads((tmp_path / "seed-1.json").read_text()) == {"kept": True}
    assert capsys.readouterr().out == "seed-0 6\n"
    merged = lambda name, results: {"name": name, **{k: str(v) for k, v in results.items()}}  # noqa: E731
    module.run_instances(["random-13"], tmp_path / "new", parts, 2, len, merged)
    record = json.loads((tmp_path / "new" / "random-13.json").read_text())
    assert record == {"name": "random-13", "length": "9", "upper": "RANDOM-13"}

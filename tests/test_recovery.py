"""The recovery benchmark (``idvae.experiments.recovery``, ``idvae reproduce recovery``)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from idvae.cli import app
from idvae.experiments.executors import map_tasks
from idvae.experiments.recovery import (
    CONFIGURATIONS,
    applies,
    is_oracle,
    is_recovered,
    method_params,
    recovered_by_any,
    recovery_instances,
    run_recovery,
    run_task,
    simulate_instance,
    summarize,
)

runner = CliRunner()


# --------------------------------------------------------------------------- instances


def test_instances_are_reproducible_prefix_stable_and_json():
    specs = recovery_instances()
    assert specs == recovery_instances()
    assert json.loads(json.dumps(specs)) == specs
    ids = [s["id"] for s in specs]
    assert len(set(ids)) == len(ids) == 10 + 40 + 4
    random = [s for s in specs if s["family"] == "random"]
    assert recovery_instances(5, families=["random"]) == random[:5]
    other = recovery_instances(families=["random"], random_state=1)
    assert [s["random_state"] for s in other] != [s["random_state"] for s in random]


def test_random_instances_cover_the_ranges():
    random = recovery_instances(40, families=["random"])
    m = [s["latent_dim"] for s in random]
    assert set(m) == {2, 3, 4, 5}
    assert set(s["n_components"] for s in random) == set(range(3, 9))
    assert set(len(s["hidden"]) for s in random) == {1, 2, 3}
    assert set(s["decoder"] for s in random) == {"leaky_relu", "relu"}
    for s in random:
        assert 8 <= s["obs_dim"] <= 50 and s["obs_dim"] >= s["latent_dim"]
        assert 2000 <= s["n_samples"] <= 20000
        widths = [s["latent_dim"], *s["hidden"], s["obs_dim"]]
        assert widths == sorted(widths)  # App. H: nondecreasing from m to n
    n_samples = [s["n_samples"] for s in random]
    assert min(n_samples) < 4000 and max(n_samples) > 12000


def test_simulator_seed_family_is_the_simulators_own_call():
    from idvae.simulate import sample_model

    seeds = recovery_instances(families=["seeds"])
    assert [s["id"] for s in seeds] == [f"seed-{s}" for s in range(10)]
    sim = simulate_instance(seeds[3])
    ref = sample_model(3000, latent_dim=2, obs_dim=10, n_components=3, random_state=3)
    np.testing.assert_array_equal(sim.x, ref.x)
    np.testing.assert_array_equal(sim.z, ref.z)


def test_facet_instances_have_independent_facets_and_run_mfcvae_only_there():
    facets = recovery_instances(families=["facets"])
    assert [tuple(s["facets"]) for s in facets] == [(2, 2), (2, 3), (3, 3), (2, 2, 2)]
    sim = simulate_instance(facets[1])
    assert sim.u.shape[1] == 2
    joint = sim.joint
    np.testing.assert_allclose(joint, np.outer(joint.sum(1), joint.sum(0)), atol=1e-12)
    mfcvae = CONFIGURATIONS["mfcvae-default"]
    assert applies(mfcvae, facets[0])
    assert not applies(mfcvae, recovery_instances(1, families=["random"])[0])
    params = method_params(mfcvae, facets[3])
    assert params["facet_components"] == [2, 2, 2]
    assert sum(params["facet_dims"]) == facets[3]["latent_dim"]
    vade = method_params(CONFIGURATIONS["vade-default"], facets[2])
    assert vade == {"latent_dim": facets[2]["latent_dim"], "n_components": 9}


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="families"):
        recovery_instances(families=["nope"])
    with pytest.raises(ValueError, match="methods among"):
        run_recovery("unused", methods=["no-such-method"], instances=[])


# --------------------------------------------------------------------------- scores


def test_pca_recovers_an_instance_with_a_linear_decoder():
    """With f affine, x = A z + b + noise: PCA to m dimensions is z up to an affine map,
    so the weak MCC to the truth is ~1 (up to the noise, std 0.05 on a unit signal)."""
    spec = {"id": "linear", "n_samples": 2000, "latent_dim": 3, "obs_dim": 12,
            "n_components": 4, "hidden": [], "random_state": 5}  # fmt: skip
    record = run_task({"instance": spec, "method": "pca", "estimator": "pca", "params": {},
                       "seed": 0})  # fmt: skip
    assert record["status"] == "ok", record
    assert record["weak_mcc"] >= 0.99
    assert record["accuracy"] is None and record["dist_aff"] is None


def test_truth_task_gives_separability_and_p2():
    spec = recovery_instances(families=["seeds"])[0]
    record = run_task({"instance": spec, "method": "truth", "seed": 0})
    assert record["status"] == "ok"
    assert 0.9 <= record["separability"] <= 1.0
    assert record["p2"] is True


def test_a_failing_configuration_is_a_record_not_a_crash(tmp_path):
    spec = recovery_instances(1, families=["random"], quick=True)
    configurations = {"bad": ("pca+gmm", {"covariance_type": "nonsense"})}
    result = run_recovery(tmp_path / "b", instances=spec, configurations=configurations)
    (row,) = result.rows
    assert row["status"] == "failed" and "covariance_type" in row["error"]
    assert result.summary["bad"]["n_failed"] == 1
    assert result.summary["bad"]["n_recovered"] == 0


# --------------------------------------------------------------------------- summary


def _row(instance, method, weak, acc=None, *, family="random", status="ok", seconds=1.0):
    return {"instance": instance, "method": method, "family": family, "status": status,
            "weak_mcc": weak, "accuracy": acc, "seconds": seconds}  # fmt: skip


def test_summary_counts_rates_medians_and_the_subset_where_pca_fails():
    rows = [
        _row("a", "pca", 0.99), _row("b", "pca", 0.90), _row("c", "pca", 0.80),
        _row("d", "pca", 0.97, family="seeds"),
        _row("a", "m", 0.99, 0.99), _row("b", "m", 0.96, 0.97), _row("c", "m", 0.96, 0.90),
        _row("d", "m", None, None, family="seeds", status="failed", seconds=None),
    ]  # fmt: skip
    summary = summarize(rows)
    assert list(summary) == ["pca", "m"]
    pca, m = summary["pca"], summary["m"]
    assert (pca["n"], pca["n_recovered"], pca["recovery_rate"]) == (4, 2, 0.5)
    assert pca["median_accuracy"] is None
    assert pca["median_weak_mcc"] == pytest.approx(0.935)
    # m: a and b recovered; c fails on accuracy; d failed (counted, not in the medians)
    assert (m["n"], m["n_failed"], m["n_recovered"], m["recovery_rate"]) == (4, 1, 2, 0.5)
    assert m["median_weak_mcc"] == pytest.approx(0.96)
    assert m["median_accuracy"] == pytest.approx(0.97)
    assert m["median_seconds"] == 1.0
    # PCA fails on b and c: m recovers b only
    fails = m["baseline_fails"]
    assert (fails["n"], fails["n_recovered"], fails["recovery_rate"]) == (2, 1, 0.5)
    assert fails["median_weak_mcc"] == pytest.approx(0.96)
    assert m["families"]["seeds"]["n_recovered"] == 0
    assert m["families"]["random"]["n_recovered"] == 2
    assert summarize(rows, baseline="none")["m"]["baseline_fails"] is None
    assert m["ceiling_met"] is None  # no ceiling rows


def test_summary_restricts_to_the_instances_the_ceiling_recovers():
    rows = [
        _row("a", "true-posterior", 0.99, 0.99), _row("b", "true-posterior", 0.99, 0.93),
        _row("c", "true-posterior", 0.97, 0.96),
        _row("a", "m", 0.98, 0.97), _row("b", "m", 0.96, 0.90), _row("c", "m", 0.90, 0.96),
    ]  # fmt: skip
    summary = summarize(rows)
    # b is infeasible (the true posterior's accuracy is 0.93): m is scored on a and c
    feasible = summary["m"]["ceiling_met"]
    assert (feasible["n"], feasible["n_recovered"]) == (2, 1)
    assert summary["true-posterior"]["ceiling_met"]["n_recovered"] == 2


def test_is_recovered_needs_both_scores_and_a_successful_fit():
    assert is_recovered(_row("a", "m", 0.95, 0.95))
    assert is_recovered(_row("a", "pca", 0.95))  # no clusters: weak MCC alone
    assert not is_recovered(_row("a", "m", 0.95, 0.94))
    assert not is_recovered(_row("a", "m", 0.94, 1.0))
    assert not is_recovered(_row("a", "m", 0.99, 0.99, status="failed"))


def test_union_counts_an_instance_once_when_any_method_recovers_it():
    rows = [
        _row("a", "m", 0.99, 0.99), _row("a", "n", 0.99, 0.99),  # both
        _row("b", "m", 0.99, 0.90), _row("b", "n", 0.96, 0.97),  # n only
        _row("c", "m", 0.90, 0.99), _row("c", "n", 0.94, 0.99),  # neither
        _row("d", "n", 0.99, 0.99, family="facets"),  # m does not apply to d
        _row("d", "o", 0.10, 0.10, family="facets"),  # a method not asked about
    ]  # fmt: skip
    union = recovered_by_any(rows, ["m", "n"])
    assert (union["n"], union["recovered"], union["instances"]) == (4, 3, ["a", "b", "d"])
    assert union["families"] == {
        "random": {"n": 3, "recovered": 2},
        "facets": {"n": 1, "recovered": 1},
    }
    assert recovered_by_any(rows, ["m"])["recovered"] == 1


def test_oracles_are_the_configurations_that_read_the_truth():
    oracles = {m for m in CONFIGURATIONS if is_oracle(m)}
    assert oracles == {"vade-truth-start", "ivae-oracle", "true-posterior"}
    assert not any(is_oracle(m) for m in ("pca", "vade-default", "vade-two-starts", "ae+gmm"))


# --------------------------------------------------------------------------- executors


def _square(shared, item):
    return shared * item * item


def test_map_tasks_pool_matches_in_process():
    serial = dict(map_tasks(_square, [1, 2, 3], shared=10))
    pooled = dict(map_tasks(_square, [1, 2, 3], shared=10, jobs=2))
    assert serial == pooled == {0: 10, 1: 40, 2: 90}
    with pytest.raises(ValueError, match="executor"):
        list(map_tasks(_square, [1], executor="threads"))


def _die_on_one(shared, item):
    if item == 1:
        os._exit(1)  # the worker process dies without returning
    return item


def test_map_tasks_reports_an_item_whose_worker_died():
    lost = dict(map_tasks(_die_on_one, [0, 1], jobs=2, on_lost=lambda item, err: "lost"))
    assert set(lost) == {0, 1} and lost[1] == "lost"


# --------------------------------------------------------------------------- the command


def _stat(root):
    return {p.relative_to(root): p.stat().st_mtime_ns for p in (root / "runs").rglob("*.json")}


def test_cli_quick_run_writes_results_and_resumes_without_recomputing(tmp_path):
    args = ["reproduce", "recovery", "--out", str(tmp_path), "--quick", "--instances", "2"]
    result = runner.invoke(app, [*args, "--methods", "pca,vade-default"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "recovery"
    payload = json.loads((root / "results.json").read_text())
    assert [(r["instance"], r["method"]) for r in payload["rows"]] == [
        ("random-00", "pca"), ("random-00", "vade-default"),
        ("random-01", "pca"), ("random-01", "vade-default"),
    ]  # fmt: skip
    assert set(payload["summary"]) == {"pca", "vade-default"}
    for row in payload["rows"]:
        assert row["status"] == "ok" and 0.0 <= row["weak_mcc"] <= 1.0
    assert all(r["separability"] is not None for r in payload["instances"])
    assert (root / "results.csv").read_text().count("\n") == 5
    assert "vade-default" in result.output and "recovered" in result.output
    first = _stat(root)
    assert len(first) == 6  # a truth record and two methods per instance

    # without --resume a finished benchmark is not overwritten
    refused = runner.invoke(app, [*args, "--methods", "pca,vade-default"])
    assert refused.exit_code == 2 and "--resume" in refused.output

    # resumed with one more method: only that method runs, nothing else is rewritten
    again = runner.invoke(app, [*args, "--methods", "pca,vade-default,pca+gmm", "--resume"])
    assert again.exit_code == 0, again.output
    second = _stat(root)
    assert {k: second[k] for k in first} == first
    assert sorted(set(second) - set(first)) == [
        p.relative_to(root) for p in sorted((root / "runs").rglob("pca+gmm.json"))
    ]
    assert len(json.loads((root / "results.json").read_text())["rows"]) == 6


def test_a_changed_configuration_is_recomputed_on_resume(tmp_path):
    spec = recovery_instances(1, families=["random"], quick=True)
    run_recovery(tmp_path, instances=spec, configurations={"p": ("pca", {})})
    path = tmp_path / "runs" / "random-00" / "p.json"
    before = path.stat().st_mtime_ns
    run_recovery(tmp_path, instances=spec, configurations={"p": ("pca", {})}, resume=True)
    assert path.stat().st_mtime_ns == before
    run_recovery(
        tmp_path, instances=spec, configurations={"p": ("pca", {"whiten": True})}, resume=True
    )
    assert path.stat().st_mtime_ns != before
    assert json.loads(path.read_text())["fingerprint"]["params"] == {"whiten": True}


def test_cli_recovery_bad_input_is_one_line():
    result = runner.invoke(app, ["reproduce", "recovery", "--out", "x", "--methods", "nope"])
    assert result.exit_code == 2 and "methods among" in result.output
    result = runner.invoke(app, ["reproduce", "table2", "--out", "x", "--instances", "3"])
    assert result.exit_code == 2 and "only with recovery" in result.output


def test_a_record_older_than_a_new_parameter_at_its_default_is_read_back():
    """Resume survives an estimator gaining a parameter (whose default keeps the old
    behaviour); the parameter set on purpose, or another value changed, runs the task again."""
    from idvae.experiments.recovery import _same_fingerprint

    current = {
        "estimator": "vade",
        "instance": {"id": "a"},
        "seed": 0,
        "params": {"latent_dim": 2, "polish_iterations": 0, "decoder_sizes": [64, 64]},
    }
    older = {**current, "params": {"latent_dim": 2, "decoder_sizes": [64, 64]}}
    assert _same_fingerprint(current, current)
    assert _same_fingerprint(older, current)
    on_purpose = {**current, "params": {**current["params"], "polish_iterations": 10}}
    assert not _same_fingerprint(older, on_purpose)
    changed = {**current, "params": {**current["params"], "latent_dim": 3}}
    assert not _same_fingerprint(older, changed)
    unknown = {**current, "params": {**current["params"], "no_such_parameter": 0}}
    assert not _same_fingerprint(older, unknown)
    assert not _same_fingerprint({**older, "seed": 1}, current)
    assert not _same_fingerprint(older, {**current, "estimator": "pca"})


def test_paired_progress_compares_instances_both_methods_finished(tmp_path):
    from idvae.experiments.recovery import paired_progress

    def write(instance, method, weak, accuracy, status="ok", seconds=1.0):
        path = tmp_path / "runs" / instance / f"{method}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"status": status, "weak_mcc": weak, "accuracy": accuracy, "seconds": seconds}
        path.write_text(json.dumps(record))

    for name in ("seed-0", "seed-1", "random-00", "random-01", "random-02"):
        write(name, "vade-default", 0.97, 0.97 if name != "random-01" else 0.80)
    write("seed-0", "new", 0.99, 0.99, seconds=3.0)  # both recover
    write("seed-1", "new", 0.90, 0.99, seconds=5.0)  # lost (weak MCC short)
    write("random-01", "new", 0.96, 0.96, seconds=7.0)  # gained
    write("random-02", "new", 0.99, 0.99, status="failed")  # not finished: left out
    write("random-03", "new", 0.99, 0.99)  # no reference record: left out
    progress = paired_progress(tmp_path, "new")
    assert progress["instances"] == ["random-01", "seed-0", "seed-1"]
    pooled = progress["families"]["all"]
    assert (pooled["n"], pooled["recovered"], pooled["reference_recovered"]) == (3, 2, 2)
    assert pooled["gained"] == ["random-01"] and pooled["lost"] == ["seed-1"]
    assert pooled["seconds"] == [3.0, 7.0]
    assert progress["families"]["random"]["n"] == 1 and progress["families"]["seed"]["n"] == 2
    with pytest.raises(ValueError, match="runs/"):
        paired_progress(tmp_path / "nowhere", "new")


def test_truth_start_oracle_starts_from_the_true_latent():
    """``pretrain=TRUE_LATENT`` hands the instance's true z to the estimator as its start:
    with no training after the pretraining, the latents are the truth's (seed 0, where a
    VAE start folds: weak MCC 0.73 with the defaults)."""
    from idvae.experiments.recovery import TRUE_LATENT

    assert CONFIGURATIONS["vade-truth-start"][1]["pretrain"] == TRUE_LATENT
    spec = recovery_instances(families=["seeds"])[0]
    params = {"pretrain": TRUE_LATENT, "pretrain_epochs": 20, "epochs": 0}
    record = run_task({"instance": spec, "method": "oracle", "estimator": "vade",
                       "params": params, "seed": 0})  # fmt: skip
    assert record["status"] == "ok", record
    assert record["weak_mcc"] >= 0.97


def test_a_fit_records_its_bounds_and_the_tight_one_is_higher():
    """Each fitted record carries the training bound (``score``) and the importance-sampled
    log-likelihood (K = 1000 draws): per point, the second is the tighter bound of the same
    log p(x) (Burda et al. 2016: the bound rises with K), so it is above the first, which
    the defaults train with K = 10. Baselines have no objective and record neither."""
    spec = recovery_instances(1, families=["random"], quick=True)[0]
    params = {"pretrain_epochs": 5, "epochs": 5}
    record = run_task({"instance": spec, "method": "vade", "estimator": "vade",
                       "params": params, "seed": 0})  # fmt: skip
    assert record["status"] == "ok", record
    assert math.isfinite(record["score"]) and math.isfinite(record["log_likelihood"])
    assert record["log_likelihood"] > record["score"]
    baseline = run_task({"instance": spec, "method": "pca", "estimator": "pca", "params": {},
                         "seed": 0})  # fmt: skip
    assert "score" not in baseline and "log_likelihood" not in baseline

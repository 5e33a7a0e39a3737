"""``idvae stability``, ``idvae demo`` and ``idvae reproduce`` through typer's runner."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from idvae.cli import app

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory) -> Path:
    """A small simulation of model (3) written by `idvae simulate` (x, z, labels, prior)."""
    from idvae.simulate import sample_model

    path = tmp_path_factory.mktemp("data") / "sim.npz"
    sample_model(300, latent_dim=2, obs_dim=5, n_components=2, random_state=0).save(path)
    return path


FAST = ("--epochs", "2", "--pretrain-epochs", "1")
# Table 2 of the paper (App. J.3.2), as printed: mean (std).
PAPER_TABLE2 = {
    "parallelograms-1": {"dist_aff": [0.1542, 0.150], "strong_mcc": [0.86, 0.09],
                         "weak_mcc": [0.99, 0.003]},
    "parallelograms-2": {"dist_aff": [0.1231, 0.076], "strong_mcc": [0.83, 0.12],
                         "weak_mcc": [0.99, 0.003]},
    "parallelograms-3": {"dist_aff": [0.578, 0.301], "strong_mcc": [0.91, 0.08],
                         "weak_mcc": [0.99, 0.001]},
}  # fmt: skip


def assert_study_matches_saved_runs(
    study: Path, payload: dict, x: np.ndarray, *, prior=None, labels=None
) -> None:
    """What a study of two runs recorded is what its saved models give, recomputed here:
    latents, distAff between the runs and to the true prior, clustering scores. (The MCCs
    score a random half of the sample and are not recomputed.)"""
    import idvae
    from idvae.metrics import cluster_accuracy, dist_aff_l2

    runs = sorted((study / "runs").iterdir())
    assert [r.name for r in runs] == ["000", "001"]
    models = [idvae.load(r / "model") for r in runs]
    for run, model in zip(runs, models, strict=True):
        z = np.load(run / "latents.npy")
        np.testing.assert_allclose(model.transform(x), z, rtol=1e-5, atol=1e-5)
    between = payload["summary"]["between_runs"]["dist_aff"]["mean"]
    assert between == pytest.approx(dist_aff_l2(models[0].prior_, models[1].prior_), rel=1e-6)
    for record, run, model in zip(payload["runs"], runs, models, strict=True):
        if prior is not None:
            expected = dist_aff_l2(model.prior_, prior)
            assert record["truth"]["dist_aff"] == pytest.approx(expected, rel=1e-6)
        if labels is not None:
            predictions = np.load(run / "predictions.npy")
            np.testing.assert_array_equal(predictions, model.predict(x))
            accuracy = cluster_accuracy(labels, predictions)
            assert record["clustering"]["accuracy"] == pytest.approx(accuracy)


def test_stability_command_writes_study_and_resumes(sim_file, tmp_path):
    out = tmp_path / "study"
    result = invoke("stability", sim_file, "--runs", "2", "--out", out, "--components", "2", *FAST)
    assert result.exit_code == 0, result.output
    assert "weak MCC" in result.output and "to truth" in result.output
    data = json.loads((out / "stability.json").read_text())
    assert data["summary"]["n_runs"] == 2 and data["summary"]["n_failed"] == 0
    # the truth came from sim.npz: the scores against it are those of the saved models
    from idvae import GMM

    with np.load(sim_file) as sim:
        prior = GMM(sim["prior_weights"], sim["prior_means"], sim["prior_covariances"])
        assert_study_matches_saved_runs(out, data, sim["x"], prior=prior, labels=sim["labels"])
    assert "dist_aff" in data["summary"]["to_truth"]  # prior_* keys give the true prior
    for name in ("results.csv", "report.html"):
        assert (out / name).stat().st_size > 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["000", "001"]
    assert (out / "runs" / "000" / "model").is_dir()
    # Same study again without --resume: refused, nothing lost.
    before = (out / "stability.json").read_text()
    again = invoke("stability", sim_file, "--runs", "2", "--out", out, "--components", "2", *FAST)
    assert again.exit_code == 2 and "--resume" in again.output
    assert (out / "stability.json").read_text() == before
    # With --resume every run is read back; a different model is refused.
    resumed = invoke(
        "stability", sim_file, "--runs", "2", "--out", out, "--components", "2", "--resume", *FAST
    )
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "stability.json").read_text())["runs"][0]["resumed"] is True
    other = invoke(
        "stability", sim_file, "--runs", "2", "--out", out, "--components", "3", "--resume", *FAST
    )
    assert other.exit_code == 2 and "another one" in other.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--executor", "dask"), "--executor local or ray"),
        (("--address", "localhost:6379"), "--address only with --executor ray"),
        (("--runs", "0"), "runs >= 1"),
        (("--model", "gan"), "model in"),
    ],
)
def test_stability_bad_options(sim_file, tmp_path, args, message):
    result = invoke("stability", sim_file, "--out", tmp_path / "o", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "o" / "stability.json").exists()


def test_stability_missing_file(tmp_path):
    result = invoke("stability", tmp_path / "nope.npz", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "nope.npz" in result.output


def test_stability_dead_ray_address(tmp_path, ray):
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).normal(size=(50, 3)))
    dead = invoke(
        "stability", x, "--out", tmp_path / "o", "--executor", "ray", "--address", "127.0.0.1:1"
    )
    assert dead.exit_code == 2 and "could not connect" in dead.output


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> tuple[Path, str]:
    """One quick demo through the runner, shared by the demo tests."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = invoke("demo", "--quick", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_quick_through_runner(demo_out):
    from idvae.experiments import StabilityResult
    from idvae.experiments.demo import QUICK_MODEL, study_verdict
    from idvae.simulate import sample_model

    out, output = demo_out
    assert "distAff" in output
    payload = json.loads((out / "results.json").read_text())
    summary = payload["summary"]
    assert summary["n_runs"] == 2 and summary["n_failed"] == 0
    assert payload["demo"]["model"]["obs_dim"] == 10
    # The recorded scores are those of the saved models on the simulation.
    settings = {k: v for k, v in QUICK_MODEL.items() if k != "n_samples"}
    sim = sample_model(QUICK_MODEL["n_samples"], **settings)
    assert_study_matches_saved_runs(
        out / "study", payload["stability"], sim.x, prior=sim.prior, labels=sim.labels
    )
    to_truth = [r["truth"]["weak_mcc"] for r in payload["stability"]["runs"]]
    # The verdict printed and saved is the one the recorded MCCs call for.
    verdict = study_verdict(StabilityResult.from_dict(payload["stability"]))
    assert payload["verdict"]["lines"] == list(verdict.lines)
    assert payload["verdict"]["n_recovered"] == sum(v >= 0.95 for v in to_truth)
    for line in verdict.lines:
        assert line in output
    # The oracle reference (a fit started at the true z) is compared with the best mode.
    from idvae.experiments.demo import reference_line

    reference = payload["oracle_reference"]
    modes = payload["stability"]["modes"]["modes"]
    best = max((m["heldout_elbo_max"] for m in modes if m["heldout_elbo_max"] is not None),
               default=None)  # fmt: skip
    assert reference["line"] == reference_line(best, reference)
    assert reference["line"] in " ".join(output.split())
    assert (out / "latents.png").read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in (out / "study" / "runs").iterdir()) == ["000", "001"]


def test_demo_refuses_a_foreign_directory(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    refused = invoke("demo", "--quick", "--out", foreign)
    assert refused.exit_code == 2 and "other files" in refused.output
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


def test_demo_quick_real_subprocess_replaces_earlier_demo(demo_out):
    out, _ = demo_out
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "idvae.cli", "demo", "--quick", "--runs", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Identifiability" in proc.stdout
    # The earlier demo's output was replaced as a whole.
    assert json.loads((out / "results.json").read_text())["summary"]["n_runs"] == 1
    assert sorted(p.name for p in (out / "study" / "runs").iterdir()) == ["000"]


def test_reproduce_table2_quick_writes_results(tmp_path):
    from idvae.datasets import parallelograms

    out = tmp_path / "repro"
    result = invoke("reproduce", "table2", "--quick", "--runs", "2", "--out", out)
    assert result.exit_code == 0, result.output
    folder = out / "table2"
    payload = json.loads((folder / "results.json").read_text())
    assert set(payload["studies"]) == {"parallelograms-1", "parallelograms-2", "parallelograms-3"}
    for i, (key, study) in enumerate(sorted(payload["studies"].items()), start=1):
        assert study["paper"] == PAPER_TABLE2[key]
        summary = study["result"]["summary"]
        assert summary["n_runs"] == 2
        data = parallelograms(600, 3, random_state=i)  # the quick Table-2 data
        assert_study_matches_saved_runs(folder / key, study["result"], data.x, labels=data.labels)
        assert "accuracy" in summary["clustering"]
    rows = list(csv.DictReader((folder / "results.csv").open()))
    scopes = {r["scope"] for r in rows}
    assert {"run", "pair", "summary", "summary_truth", "summary_clustering"} <= scopes
    paper_rows = [r for r in rows if r["scope"] == "summary" and r["metric"] == "dist_aff"]
    assert sorted(float(r["paper_mean"]) for r in paper_rows) == [0.1231, 0.1542, 0.578]
    html = (folder / "report.html").read_text()
    assert "data:image/png;base64," in html and "0.1542" in html
    # Running it again without --resume would overwrite: refused, results kept.
    again = invoke("reproduce", "table2", "--quick", "--out", out)
    assert again.exit_code == 2 and "--resume" in again.output
    assert json.loads((folder / "results.json").read_text()) == payload


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tableX",), "Expected an experiment in"),
        (("table3", "--quick"), "--mnist-root"),
        (("table3", "--quick", "--mnist-root", "/nonexistent/mnist"), "does not exist"),
        (("all", "--quick", "--mnist-root", "/nonexistent/mnist"), "does not exist"),
        (("table2", "--executor", "slurm"), "--executor local or ray"),
    ],
)
def test_reproduce_bad_input(tmp_path, args, message):
    out = tmp_path / "repro"
    result = invoke("reproduce", *args, "--out", out)
    assert result.exit_code == 2
    assert message in result.output
    assert not out.exists() or not any(out.rglob("results.json"))


def test_reproduce_empty_mnist_folder(tmp_path):
    empty = tmp_path / "mnist"
    empty.mkdir()
    result = invoke(
        "reproduce", "table3", "--quick", "--mnist-root", empty, "--out", tmp_path / "o"
    )
    assert result.exit_code == 2 and "missing" in result.output


def test_reproduce_mle_quick_delegates_to_exact(tmp_path):
    from idvae import exact

    out = tmp_path / "repro"
    result = invoke("reproduce", "mle", "--quick", "--out", out)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "mle" / "results.json").read_text())
    summary = payload["summary"]
    assert summary["n_simulations"] == 5 == len(payload["simulations"])
    # Each truth searched again on its own (not in the study's batched pass): the verdicts
    # and the counts are those of an exhaustive search over the quick grid.
    truth_is_min, unique = [], []
    for record in payload["simulations"]:
        truth = exact.ToyModel.from_dict(record["truth"])
        search = exact.grid_search(truth, exact.quick_grid(truth.n_components), keep=512)
        truth_is_min.append(any(exact.equivalent(m, truth) for m in search.minimizers))
        unique.append(search.unique_up_to_equivalence(truth))
        assert record["n_minimizers"] == search.n_minimizers
    assert [r["truth_is_minimizer"] for r in payload["simulations"]] == truth_is_min
    assert [r["unique_up_to_equivalence"] for r in payload["simulations"]] == unique
    assert summary["n_truth_is_minimizer"] == sum(truth_is_min)
    assert summary["n_unique"] == sum(u and t for u, t in zip(unique, truth_is_min, strict=True))
    assert "50 simulations" in payload["paper"]
    rows = list(csv.DictReader((out / "mle" / "results.csv").open()))
    assert len([r for r in rows if r.get("index") not in (None, "")]) >= 5
    html = (out / "mle" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 1  # Fig. 1 style profiles


@pytest.mark.slow
def test_reproduce_all_quick(tmp_path, mnist):
    """Every experiment, small; table3 needs the real MNIST files ($IDVAE_MNIST_ROOT)."""
    out = tmp_path / "repro"
    result = invoke("reproduce", "all", "--quick", "--out", out, "--mnist-root", mnist)
    assert result.exit_code == 0, result.output
    for name in ("table2", "pinwheel", "table3", "mle"):
        for file in ("results.json", "results.csv", "report.html"):
            assert (out / name / file).stat().st_size > 0, (name, file)
    table3 = json.loads((out / "table3" / "results.json").read_text())
    assert set(table3["studies"]) == {
        "arch1-mfcvae-relu",
        "arch1-mfcvae-leaky_relu",
        "arch1-ivae-leaky_relu",
    }
    for study in table3["studies"].values():
        summary = study["result"]["summary"]
        assert summary["n_runs"] == 2
        # distAff between the 25-component priors (the paper: infeasible) when both ran
        if summary["n_failed"] == 0 and study["title"].count("MFCVAE"):
            assert summary["between_runs"]["dist_aff"]["n"] == 1
    pinwheel = json.loads((out / "pinwheel" / "results.json").read_text())
    assert pinwheel["studies"]["pinwheel"]["paper"]["dist_aff"] == [0.113, 0.065]

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

pytest.importorskip("idvae.metrics", reason="idvae.metrics has not landed yet")
pytest.importorskip("idvae.models.vade", reason="VaDE has not landed yet")

from idvae.cli import app  # noqa: E402

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


def test_stability_command_writes_study_and_resumes(sim_file, tmp_path):
    out = tmp_path / "study"
    result = invoke("stability", sim_file, "--runs", "2", "--out", out, "--components", "2", *FAST)
    assert result.exit_code == 0, result.output
    assert "weak MCC" in result.output and "to truth" in result.output
    data = json.loads((out / "stability.json").read_text())
    assert data["summary"]["n_runs"] == 2 and data["summary"]["n_failed"] == 0
    weak = data["summary"]["to_truth"]["weak_mcc"]["mean"]  # the truth came from sim.npz
    assert 0.0 <= weak <= 1.0
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


def test_stability_missing_file_and_dead_ray_address(tmp_path):
    result = invoke("stability", tmp_path / "nope.npz", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "nope.npz" in result.output
    pytest.importorskip("ray")
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
    out, output = demo_out
    assert "weak MCC between runs" in output and "distAff" in output
    payload = json.loads((out / "results.json").read_text())
    summary = payload["summary"]
    assert summary["n_runs"] == 2 and summary["n_failed"] == 0
    for block in ("between_runs", "to_truth"):
        for name in ("strong_mcc", "weak_mcc"):
            assert 0.0 <= summary[block][name]["mean"] <= 1.0
    assert summary["between_runs"]["dist_aff"]["mean"] >= 0.0
    assert payload["demo"]["model"]["obs_dim"] == 10
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
    out = tmp_path / "repro"
    result = invoke("reproduce", "table2", "--quick", "--runs", "2", "--out", out)
    assert result.exit_code == 0, result.output
    folder = out / "table2"
    payload = json.loads((folder / "results.json").read_text())
    assert set(payload["studies"]) == {"parallelograms-1", "parallelograms-2", "parallelograms-3"}
    for study in payload["studies"].values():
        assert study["paper"]["weak_mcc"] == [0.99, pytest.approx(study["paper"]["weak_mcc"][1])]
        summary = study["result"]["summary"]
        assert summary["n_runs"] == 2
        assert 0.0 <= summary["between_runs"]["weak_mcc"]["mean"] <= 1.0
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
    out = tmp_path / "repro"
    result = invoke("reproduce", "mle", "--quick", "--out", out)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "mle" / "results.json").read_text())
    summary = payload["summary"]
    assert summary["n_simulations"] == 5 == len(payload["simulations"])
    assert 0 <= summary["n_unique"] <= summary["n_truth_is_minimizer"] <= 5
    assert "50 simulations" in payload["paper"]
    rows = list(csv.DictReader((out / "mle" / "results.csv").open()))
    assert len([r for r in rows if r.get("index") not in (None, "")]) >= 5
    html = (out / "mle" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 1  # Fig. 1 style profiles


@pytest.mark.slow
def test_reproduce_all_quick(tmp_path):
    """Every experiment, small; table3 needs the real MNIST files (skipped without them)."""
    mnist = Path(os.environ.get("IDVAE_MNIST", "/work/shared/data/mnist"))
    if not mnist.is_dir():
        pytest.skip(f"no MNIST at {mnist} (set IDVAE_MNIST)")
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

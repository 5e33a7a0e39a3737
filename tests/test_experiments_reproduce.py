"""The App. J configurations of ``idvae reproduce`` and the files every experiment writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from idvae.experiments import EstimatorSpec, derive_seeds
from idvae.experiments.reproduce import (
    PAPER_TABLE2,
    PAPER_TABLE3,
    Experiment,
    StudyConfig,
    StudyData,
    _run_experiment,
    experiment,
)
from idvae.nets import ARCHITECTURES


@pytest.fixture
def fake_mnist(tmp_path) -> Path:
    """A folder with the four MNIST file names (configs only check they are there)."""
    root = tmp_path / "mnist"
    root.mkdir()
    for name in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
        suffix = "idx3-ubyte.gz" if "images" in name else "idx1-ubyte.gz"
        (root / f"{name}-{suffix}").write_bytes(b"")
    return root


def test_table2_mirrors_appendix_j32():
    exp = experiment("table2")
    assert exp.n_runs == 5 and len(exp.studies) == 3
    for i, study in enumerate(exp.studies, start=1):
        params = study.estimator.params
        assert study.estimator.model == "vade"
        assert params["latent_dim"] == 2 and params["n_components"] == 3
        assert params["encoder_sizes"] == [64, 512, 64]  # n-64-512-64-m
        assert params["decoder_sizes"] == [64, 512, 512]  # m-64-512-512-n
        assert params["activation"] == "leaky_relu"
        assert (params["pretrain_epochs"], params["epochs"]) == (15, 20)
        assert study.paper == PAPER_TABLE2[f"parallelograms-{i}"]
    assert experiment("table2", n_runs=7).n_runs == 7
    assert experiment("pinwheel").studies[0].paper["dist_aff"] == (0.113, 0.065)


def test_table3_mirrors_appendix_j33(fake_mnist):
    exp = experiment("table3", mnist_root=fake_mnist)
    assert exp.n_runs == 10 and len(exp.studies) == 9
    assert {s.key for s in exp.studies} == set(PAPER_TABLE3)
    for study in exp.studies:
        arch = study.key.split("-")[0]
        params = study.estimator.params
        enc, dec = ARCHITECTURES[arch]
        assert params["encoder_sizes"] == list(enc) and params["decoder_sizes"] == list(dec)
        if study.estimator.model == "mfcvae":
            assert params["facet_dims"] == [5] and params["facet_components"] == [25]
        else:
            assert study.estimator.model == "ivae" and params["latent_dim"] == 5
    # the paper's Table 3, e.g. Arch1 MFCVAE LeakyReLU: 0.69 (0.06) strong, 0.94 (0.02) weak
    assert PAPER_TABLE3["arch1-mfcvae-leaky_relu"] == {
        "strong_mcc": (0.69, 0.06),
        "weak_mcc": (0.94, 0.02),
    }
    quick = experiment("table3", quick=True, mnist_root=fake_mnist)
    assert quick.n_runs == 2 and len(quick.studies) == 3


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("table4", {}, "Expected an experiment in"),
        ("table3", {}, "--mnist-root"),
        ("table3", {"mnist_root": "/no/such/dir"}, "does not exist"),
        ("table2", {"n_runs": 0}, "runs >= 1"),
    ],
)
def test_bad_experiment_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        experiment(name, **kwargs)


def _blobs() -> StudyData:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    z = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])[labels] + rng.normal(size=(300, 2))
    x = z @ rng.normal(size=(2, 4)) + 0.01 * rng.normal(size=(300, 4))
    return StudyData(x=x, z=z, labels=labels, description={"dataset": "blobs"})


def test_experiment_writes_results_with_failed_runs_counted(tmp_path):
    """One study with a failing seed, one where every run fails: all are reported."""
    seeds = derive_seeds(0, 2)
    exp = Experiment(
        "toy",
        "Toy experiment",
        (
            StudyConfig(
                "half",
                "One run fails",
                EstimatorSpec("test_experiments:ToyEstimator", {"fail_seed": seeds[1]}),
                _blobs,
                paper={"weak_mcc": (0.99, 0.003)},
            ),
            StudyConfig(
                "none",
                "Every run fails",
                EstimatorSpec("test_experiments:ToyEstimator", {"latent_dim": 0}),
                _blobs,
            ),
        ),
        n_runs=2,
        quick=True,
    )
    target = tmp_path / "toy"
    with pytest.warns(RuntimeWarning, match="failed"):
        payload = _run_experiment(
            exp,
            target,
            executor="local",
            jobs=1,
            address=None,
            resume=False,
            random_state=0,
            vectorize=True,
            progress=None,
        )
    saved = json.loads((target / "results.json").read_text())
    assert saved == json.loads(json.dumps(payload))
    assert saved["studies"]["half"]["result"]["summary"]["n_failed"] == 1
    assert saved["studies"]["none"]["result"]["summary"]["n_failed"] == 2
    rows = list(csv.DictReader((target / "results.csv").open()))
    failed = [r for r in rows if r["status"].startswith("failed")]
    assert len(failed) == 3 and all(r["scope"] == "run" for r in failed)
    n_failed = {r["study"]: r["value"] for r in rows if r["metric"] == "n_failed"}
    assert n_failed == {"half": "1", "none": "2"}
    weak = [
        r
        for r in rows
        if r["study"] == "half" and r["metric"] == "weak_mcc_to_truth" and r["scope"] == "run"
    ]
    assert len(weak) == 1 and 0.99 < float(weak[0]["value"]) <= 1.0  # the run that worked
    html = (target / "report.html").read_text()
    assert "Every run fails" in html and "data:image/png;base64," in html
    assert (target / "half" / "runs" / "001" / "result.json").exists()  # failed run kept

"""One data-with-truth type (idvae.data.Data): every producer returns it with the same field
names, ``save`` and ``load_array`` round-trip it, and a study takes it as it is."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from typer.testing import CliRunner

from idvae import GMM
from idvae.cli import app
from idvae.data import Data, load_array
from idvae.datasets import Dataset, parallelograms, pinwheel
from idvae.experiments import stability
from idvae.experiments.configs import StudyData
from idvae.simulate import Simulation, sample_model

FIELDS = ("x", "z", "u", "labels")


class PcaMixture:
    """PCA then a GaussianMixture on the scores: a cheap estimator for a study."""

    def __init__(self, random_state: int | None = None) -> None:
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict:
        return {"random_state": self.random_state}

    def fit(self, x: np.ndarray) -> PcaMixture:
        self.pca_ = PCA(2).fit(x)
        self.gmm_ = GaussianMixture(3, random_state=self.random_state).fit(self.transform(x))
        self.prior_ = GMM.from_sklearn(self.gmm_)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.pca_.transform(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.gmm_.predict(self.transform(x))


def pca_mixture(seed: int) -> PcaMixture:
    return PcaMixture(random_state=seed)


def _assert_same_fields(a: Data, b: Data) -> None:
    for name in FIELDS:
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None), name
        if left is not None:
            np.testing.assert_array_equal(left, right, err_msg=name)
    assert (a.prior is None) == (b.prior is None)
    if a.prior is not None:
        assert a.prior == b.prior


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return sample_model(300, latent_dim=2, obs_dim=5, n_components=3, random_state=0)


def test_every_producer_returns_a_data_with_the_same_field_names(sim):
    data = parallelograms(90, random_state=1)
    wheel = pinwheel(60, 3, random_state=0)
    assert isinstance(sim, Data) and isinstance(data, Data) and isinstance(wheel, Dataset)
    assert sim.z.shape == (300, 2) and sim.prior.dim == 2
    np.testing.assert_array_equal(sim.labels, sim.u)  # k = 1: the component is U
    assert data.points is data.z  # the old name reads the one field
    np.testing.assert_array_equal(data.u, data.labels)  # the class is the hidden state
    assert data.prior is None and data.n_samples == 90


def test_save_and_load_array_round_trip_every_producer(sim, tmp_path):
    gmm = GMM([0.5, 0.5], [[0.0, 0.0], [3.0, 0.0]], [np.eye(2), np.eye(2)])
    rng = np.random.default_rng(0)
    plain = Data(rng.normal(size=(10, 4)), z=rng.normal(size=(10, 2)), prior=gmm)
    for i, data in enumerate((sim, parallelograms(90, random_state=1), plain)):
        path = data.save(tmp_path / f"d{i}.npz")
        loaded = load_array(path)
        assert type(loaded) is Data
        _assert_same_fields(loaded, data)
    # a saved simulation reads back as the same simulation, and as the same Data
    _assert_same_fields(Simulation.load(tmp_path / "d0.npz"), sim)


def test_cli_dataset_file_reads_back_with_its_truth(tmp_path):
    out = tmp_path / "p.npz"
    result = CliRunner().invoke(
        app, ["dataset", "parallelograms", "--n-samples", "90", "--seed", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    loaded = load_array(out)
    _assert_same_fields(loaded, parallelograms(90, random_state=1))


def test_data_checks_its_fields():
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="z with 5 rows"):
        Data(x, z=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="labels with 5 rows"):
        Data(x, labels=np.zeros(6, dtype=np.int64))
    with pytest.raises(TypeError, match="GMM"):
        Data(x, prior="not a prior")
    gmm = GMM([1.0], [[0.0, 0.0, 0.0]], [np.eye(3)])
    with pytest.raises(ValueError, match="dimension"):
        Data(x, z=np.zeros((5, 2)), prior=gmm)
    with pytest.raises(ValueError, match="z, u and prior"):
        Simulation(x=x, decoder=None, noise_std=0.0)


def test_load_array_reads_the_prior_only_when_whole_and_consistent(tmp_path):
    x, z = np.zeros((4, 3)), np.zeros((4, 2))
    w, m, c = [1.0], [[0.0, 0.0]], [np.eye(2)]
    np.savez(tmp_path / "part.npz", x=x, z=z, prior_weights=w, prior_means=m)
    assert load_array(tmp_path / "part.npz").prior is None
    np.savez(tmp_path / "whole.npz", x=x, z=z, prior_weights=w, prior_means=m, prior_covariances=c)
    assert load_array(tmp_path / "whole.npz").prior == GMM(w, m, c)
    np.savez(
        tmp_path / "bad.npz", x=x, z=np.zeros((4, 3)), prior_weights=w, prior_means=m,
        prior_covariances=c,
    )  # fmt: skip
    with pytest.raises(ValueError, match="bad.npz"):
        load_array(tmp_path / "bad.npz")


def _summary(result) -> str:
    return json.dumps(result.summary(), sort_keys=True, default=str)


def test_a_study_takes_each_producer_as_it_is(sim, tmp_path):
    explicit = stability(
        pca_mixture, sim.x, n_runs=2, z_true=sim.z, prior_true=sim.prior, labels=sim.labels
    )
    assert "dist_aff" in explicit.summary()["to_truth"]
    loaded = load_array(sim.save(tmp_path / "sim.npz"))
    study = StudyData(x=sim.x, z=sim.z, prior=sim.prior, labels=sim.labels)
    for data in (sim, loaded, study):
        assert _summary(stability(pca_mixture, data, n_runs=2)) == _summary(explicit)
    data = parallelograms(300, random_state=1)
    assert _summary(stability(pca_mixture, data, n_runs=2)) == _summary(
        stability(pca_mixture, data.x, n_runs=2, z_true=data.z, labels=data.labels)
    )


def test_a_study_refuses_the_truth_given_twice(sim):
    with pytest.raises(ValueError, match="z_true"):
        stability(pca_mixture, sim, n_runs=2, z_true=sim.z)
    # a field the Data does not know may be given beside it
    unlabelled = Data(sim.x, z=sim.z, prior=sim.prior)
    result = stability(pca_mixture, unlabelled, n_runs=2, labels=sim.labels)
    assert _summary(result) == _summary(stability(pca_mixture, sim, n_runs=2))

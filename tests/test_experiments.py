"""Stability studies and executors (idvae.experiments), on a tiny estimator and real pools.

The toy estimator is PCA followed by a scikit-learn GaussianMixture on the scores, with a
seed-dependent invertible linear map applied to the latents: different seeds give latent
spaces equal up to an affine map, so weak MCC between runs is ~1 while strong MCC is not.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.mixture import GaussianMixture

from idvae import GMM
from idvae.experiments import EstimatorSpec, StabilityResult, derive_seeds, stability
from idvae.experiments.executors import check_ray_address
from idvae.metrics import mcc


class ToyEstimator:
    """PCA + GMM with a seed-dependent linear mixing of the latents (picklable by name)."""

    def __init__(
        self,
        latent_dim: int = 2,
        n_components: int = 3,
        *,
        fail_seed: int | None = None,
        counter: str | None = None,
        random_state: int | None = None,
    ) -> None:
        self.latent_dim = latent_dim
        self.n_components = n_components
        self.fail_seed = fail_seed
        self.counter = counter
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict:
        return {
            "latent_dim": self.latent_dim,
            "n_components": self.n_components,
            "fail_seed": self.fail_seed,
            "counter": self.counter,
            "random_state": self.random_state,
        }

    def fit(self, x: np.ndarray) -> ToyEstimator:
        if self.counter is not None:
            with open(self.counter, "a") as fh:
                fh.write(f"{self.random_state}\n")
        if self.random_state == self.fail_seed:
            raise RuntimeError(f"boom for seed {self.random_state}")
        rng = np.random.default_rng(self.random_state)
        self.pca_ = PCA(self.latent_dim).fit(x)
        mixing = rng.normal(size=(self.latent_dim, self.latent_dim)) + 2 * np.eye(self.latent_dim)
        self.mixing_ = mixing
        z = self.transform(x)
        self.gmm_ = GaussianMixture(self.n_components, random_state=self.random_state).fit(z)
        self.prior_ = GMM.from_sklearn(self.gmm_)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.pca_.transform(x) @ self.mixing_.T

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.gmm_.predict(self.transform(x))

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps({"seed": self.random_state}))


def toy_factory(seed: int) -> ToyEstimator:
    return ToyEstimator(random_state=seed)


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """600 points: 3 separated 2-D clusters embedded linearly in 5-D with small noise."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=600)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    z = centres[labels] + rng.normal(scale=0.6, size=(600, 2))
    x = z @ rng.normal(size=(2, 5)) + 0.01 * rng.normal(size=(600, 5))
    return x, z, labels


def test_matrices_symmetric_unit_diagonal_and_in_range(blobs):
    x, z, labels = blobs
    result = stability(toy_factory, x, n_runs=3, random_state=0, z_true=z, labels=labels)
    assert isinstance(result, StabilityResult)
    assert result.n_runs == 3 and result.n_failed == 0
    for name in ("strong_mcc", "weak_mcc"):
        m = result.matrices[name]
        assert m.shape == (3, 3)
        np.testing.assert_allclose(m, m.T)
        np.testing.assert_allclose(np.diag(m), 1.0)
        assert np.all((m >= 0) & (m <= 1))
    d = result.matrices["dist_aff"]
    np.testing.assert_allclose(d, d.T)
    np.testing.assert_allclose(np.diag(d), 0.0)
    assert np.all(d >= 0)
    # The runs differ by an invertible linear map of the same PCA scores: weak MCC ~ 1.
    assert result.summary()["between_runs"]["weak_mcc"]["mean"] > 0.99
    for run, latents, predictions in zip(
        result.runs, result.latents, result.predictions, strict=True
    ):
        assert run.truth["weak_mcc"] > 0.99
        # The seed's mixing is not a permutation and scaling: strong MCC stays well below
        # weak MCC, at the value the whole sample gives (the study scores a random half).
        assert run.truth["strong_mcc"] < 0.95
        assert run.truth["strong_mcc"] == pytest.approx(
            mcc(z, latents, out_of_sample=False), abs=0.05
        )
        assert run.clustering["accuracy"] > 0.9
        assert run.clustering["ari"] == adjusted_rand_score(labels, predictions)
        assert run.clustering["nmi"] == normalized_mutual_info_score(labels, predictions)
    summary = result.summary()
    pairs = result.pair_values("weak_mcc")
    assert summary["between_runs"]["weak_mcc"]["n"] == 3
    assert summary["between_runs"]["weak_mcc"]["std"] == pytest.approx(pairs.std())
    # the spread over seeds: median and range of the same values
    accuracy = [r.clustering["accuracy"] for r in result.runs]
    stat = summary["clustering"]["accuracy"]
    assert stat["median"] == pytest.approx(np.median(accuracy))
    assert (stat["min"], stat["max"]) == (min(accuracy), max(accuracy))
    assert [r.seed for r in result.runs] == derive_seeds(0, 3)
    assert len(result.latents) == 3 and result.latents[0].shape == (600, 2)


def test_seeds_are_prefix_stable_and_distinct():
    assert derive_seeds(5, 3) == derive_seeds(5, 6)[:3]
    assert len(set(derive_seeds(5, 20))) == 20
    assert derive_seeds(5, 3) != derive_seeds(6, 3)


def test_failed_run_is_recorded_not_dropped(blobs):
    x, _, _ = blobs
    seeds = derive_seeds(0, 3)
    spec = EstimatorSpec("test_experiments:ToyEstimator", {"fail_seed": seeds[1]})
    with pytest.warns(RuntimeWarning, match="run 1"):
        result = stability(spec, x, n_runs=3, random_state=0)
    assert result.n_runs == 3 and result.n_failed == 1
    failed = result.runs[1]
    assert failed.status == "failed" and "boom" in failed.error
    assert result.latents[1] is None
    assert np.all(np.isnan(result.strong_mcc[1])) and np.isfinite(result.strong_mcc[0, 2])
    summary = result.summary()
    assert summary["n_failed"] == 1 and summary["n_ok"] == 2
    assert summary["between_runs"]["strong_mcc"]["n"] == 1  # only the pair (0, 2)
    data = json.loads(result.to_json())
    assert data["runs"][1]["error"].startswith("RuntimeError")


def test_resume_skips_finished_runs(blobs, tmp_path):
    x, _, _ = blobs
    counter = tmp_path / "fits.txt"
    spec = EstimatorSpec("test_experiments:ToyEstimator", {"counter": str(counter)})
    out = tmp_path / "study"
    first = stability(spec, x, n_runs=2, random_state=3, out=out)
    assert counter.read_text().count("\n") == 2
    for i in range(2):
        run_dir = out / "runs" / f"{i:03d}"
        assert (run_dir / "result.json").exists() and (run_dir / "latents.npy").exists()
        assert json.loads((run_dir / "model" / "config.json").read_text())["seed"] == first.seeds[i]
    # Extend the killed-or-finished study to 4 runs: only runs 2 and 3 are fitted.
    second = stability(spec, x, n_runs=4, random_state=3, out=out, resume=True)
    assert counter.read_text().count("\n") == 4
    assert [r.resumed for r in second.runs] == [True, True, False, False]
    np.testing.assert_allclose(second.strong_mcc[:2, :2], first.strong_mcc)
    assert json.loads((out / "stability.json").read_text())["summary"]["n_runs"] == 4


def test_resume_into_another_study_is_refused(blobs, tmp_path):
    x, _, _ = blobs
    out = tmp_path / "study"
    stability(toy_factory, x, n_runs=1, random_state=0, out=out)
    with pytest.raises(ValueError, match="already holds a study"):
        stability(toy_factory, x, n_runs=1, random_state=0, out=out)
    with pytest.raises(ValueError, match="another one.*data"):
        stability(toy_factory, x[:300], n_runs=1, random_state=0, out=out, resume=True)
    with pytest.raises(ValueError, match="random_state"):
        stability(toy_factory, x, n_runs=1, random_state=1, out=out, resume=True)
    other = EstimatorSpec("test_experiments:ToyEstimator", {"latent_dim": 1})
    with pytest.raises(ValueError, match="estimator"):
        stability(other, x, n_runs=1, random_state=0, out=out, resume=True)


def test_process_pool_matches_in_process(blobs):
    x, z, labels = blobs
    spec = EstimatorSpec("test_experiments:ToyEstimator", {})
    one = stability(spec, x, n_runs=3, random_state=2, z_true=z, labels=labels, jobs=1)
    two = stability(spec, x, n_runs=3, random_state=2, z_true=z, labels=labels, jobs=2)
    for name, matrix in one.matrices.items():
        np.testing.assert_allclose(two.matrices[name], matrix, atol=1e-10)
    for a, b in zip(one.latents, two.latents, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-10)
    for name, stat in one.summary()["to_truth"].items():
        assert two.summary()["to_truth"][name]["mean"] == pytest.approx(stat["mean"], abs=1e-10)


def test_lambda_refused_for_process_pool(blobs):
    x, _, _ = blobs
    with pytest.raises(TypeError, match="picklable"):
        stability(lambda s: ToyEstimator(random_state=s), x, n_runs=2, jobs=2)


def test_result_json_round_trip(blobs, tmp_path):
    x, z, labels = blobs
    result = stability(toy_factory, x, n_runs=2, random_state=0, z_true=z, labels=labels)
    path = tmp_path / "r.json"
    result.to_json(path)
    back = StabilityResult.from_dict(json.loads(path.read_text()))
    assert back.summary() == result.summary()
    assert back.priors[0] == result.priors[0]
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(result.table())
    console.print(result.runs_table())
    text = console.export_text()
    assert "weak MCC" in text and "cluster accuracy" in text


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_runs": 0}, ValueError, "n_runs >= 1"),
        ({"jobs": 0}, ValueError, "jobs >= 1"),
        ({"executor": "dask"}, ValueError, "executor 'local' or 'ray'"),
        ({"resume": True}, ValueError, "out directory"),
        ({"z_true": np.zeros((5, 2))}, ValueError, "z_true"),
        ({"labels": np.zeros(7)}, ValueError, "labels of shape"),
        ({"address": "localhost:1"}, ValueError, "no address"),
    ],
)
def test_bad_input(blobs, kwargs, error, match):
    x, _, _ = blobs
    with pytest.raises(error, match=match):
        stability(toy_factory, x, **kwargs)


def test_bad_data_and_factory():
    with pytest.raises(ValueError, match="finite"):
        stability(toy_factory, np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(TypeError, match="callable"):
        stability("vade", np.zeros((4, 2)))
    with pytest.raises(ValueError, match="model in"):
        EstimatorSpec("transformer")
    with pytest.raises(ValueError, match="random_state"):
        EstimatorSpec("vade", {"random_state": 1})
    bad = EstimatorSpec("test_experiments:ToyEstimator", {"no_such_parameter": 1})
    with pytest.raises(ValueError, match="build an estimator.*no_such_parameter"):
        stability(bad, np.zeros((4, 2)) + np.arange(4)[:, None])


def test_unreachable_ray_address_is_a_clear_error():
    with pytest.raises(ValueError, match="could not connect"):
        check_ray_address("127.0.0.1:1", timeout=1.0)
    with pytest.raises(ValueError, match="host:port"):
        check_ray_address("nonsense")


def test_existing_non_study_directory_refused(blobs, tmp_path):
    x, _, _ = blobs
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        stability(toy_factory, x, n_runs=1, out=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_no_warnings_for_successful_study(blobs):
    x, _, _ = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stability(toy_factory, x, n_runs=2)


@pytest.mark.slow  # starting a local Ray runtime takes ~30 s on 2 shared cores
def test_ray_local_runtime_matches_in_process(blobs, ray):
    x, z, _ = blobs
    spec = EstimatorSpec("test_experiments:ToyEstimator", {})
    # Ray workers import the toy estimator from this test module.
    here = str(Path(__file__).resolve().parent)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": here}},
    )
    try:
        on_ray = stability(spec, x, n_runs=2, random_state=4, z_true=z, executor="ray")
    finally:
        ray.shutdown()
    local = stability(spec, x, n_runs=2, random_state=4, z_true=z)
    assert on_ray.n_failed == 0
    for name, matrix in local.matrices.items():
        np.testing.assert_allclose(on_ray.matrices[name], matrix, atol=1e-10)


def test_vectorized_seeds_match_separate_runs():
    """Seeds trained as one batched model (the default) are each a valid independent fit:
    per-seed outcomes fall within the spread of the same seeds fitted separately."""
    from idvae.simulate import sample_model

    sim = sample_model(300, latent_dim=2, obs_dim=5, n_components=2, random_state=0)
    spec = EstimatorSpec(
        "vade",
        {
            "n_components": 2,
            "encoder_sizes": [16, 16],
            "decoder_sizes": [16, 16],
            "pretrain_epochs": 2,
            "epochs": 3,
            "batch_size": 50,
        },
    )
    batched = stability(spec, sim.x, n_runs=2, z_true=sim.z, labels=sim.labels)
    separate = stability(spec, sim.x, n_runs=2, z_true=sim.z, labels=sim.labels, vectorize=False)
    assert [r.vectorized for r in batched.runs] == [True, True]
    assert [r.vectorized for r in separate.runs] == [False, False]
    assert batched.seeds == separate.seeds
    for metric in ("weak_mcc", "strong_mcc"):
        ours = np.array([r.truth[metric] for r in batched.runs])
        ref = np.array([r.truth[metric] for r in separate.runs])
        spread = max(ref.max() - ref.min(), 0.02)
        assert np.all(ours >= ref.min() - spread) and np.all(ours <= ref.max() + spread)
        # the same seed gives the same fit up to floating-point rounding
        np.testing.assert_allclose(ours, ref, atol=0.05)


def test_score_rows_scores_and_stores_a_seeded_subset_only(blobs, tmp_path):
    """``score_rows``: every run is transformed, predicted and scored on the same seeded
    subset, which is all the store keeps; a resume from the store gives the same result."""
    from idvae.experiments.seeds import base_entropy, score_subset

    x, z, labels = blobs
    out = tmp_path / "study"
    kwargs = {"n_runs": 3, "random_state": 4, "z_true": z, "labels": labels, "out": out}
    result = stability(toy_factory, x, score_rows=200, **kwargs)
    rows = result.score_rows
    assert rows is not None and rows.size == 200 and np.all(np.diff(rows) > 0)
    assert [lat.shape for lat in result.latents] == [(200, 2)] * 3
    # the subset is the study's, from its seed: the same for every run and every call
    whole = stability(toy_factory, x, n_runs=3, random_state=4, z_true=z, labels=labels)
    np.testing.assert_array_equal(rows, score_subset(600, 200, base_entropy(4)))
    for i, run in enumerate(result.runs):
        np.testing.assert_allclose(result.latents[i], whole.latents[i][rows])
        np.testing.assert_array_equal(result.predictions[i], whole.predictions[i][rows])
        assert run.clustering["ari"] == adjusted_rand_score(labels[rows], result.predictions[i])
        assert run.truth["weak_mcc"] != whole.runs[i].truth["weak_mcc"]  # on the subset
    assert np.load(out / "runs" / "000" / "latents.npy").shape == (200, 2)
    assert json.loads((out / "study.json").read_text())["fingerprint"]["score_rows"] == 200
    assert result.scored(labels).shape == (200,) and result.scored(None) is None
    resumed = stability(toy_factory, x, score_rows=200, resume=True, **kwargs)
    assert all(r.resumed for r in resumed.runs)
    np.testing.assert_allclose(resumed.weak_mcc, result.weak_mcc)
    # another subset size is another study; at or above n every row is scored, as without it
    with pytest.raises(ValueError, match="another one"):
        stability(toy_factory, x, score_rows=300, resume=True, **kwargs)
    assert stability(toy_factory, x, n_runs=1, score_rows=600).score_rows is None
    with pytest.raises(ValueError, match="score_rows >= 2"):
        stability(toy_factory, x, n_runs=1, score_rows=1)

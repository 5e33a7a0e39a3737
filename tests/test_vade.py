"""VaDE: the mixture prior against closed forms, the estimator's invariants, recovery."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

import idvae
from idvae.models import ComponentCollapseWarning, VaDE
from idvae.models._base import gaussian_entropy
from idvae.models._prior import GaussianMixturePrior


def _prior(covariance_type: str, seed: int = 0) -> GaussianMixturePrior:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prior = GaussianMixturePrior(3, 2, covariance_type).double()
        with torch.no_grad():
            prior.logits.normal_()
            prior.means.mul_(2.0)
            prior.raw_scale.add_(0.3 * torch.randn_like(prior.raw_scale))
    return prior


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_expected_log_density_matches_monte_carlo(covariance_type: str) -> None:
    prior = _prior(covariance_type)
    gen = torch.Generator().manual_seed(0)
    mean = torch.tensor([[0.3, -0.5]], dtype=torch.float64)
    var = torch.tensor([[0.4, 0.2]], dtype=torch.float64)
    closed = prior.expected_log_density(mean, var)[0]
    z = mean + var.sqrt() * torch.randn((200_000, 2), generator=gen, dtype=torch.float64)
    samples = prior.expected_log_density(z, 0.0)  # log N(z; mu_c, Sigma_c) at each draw
    mc, se = samples.mean(0), samples.std(0) / np.sqrt(len(z))
    assert torch.all((closed - mc).abs() < 4 * se + 1e-9)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_kl_to_each_component_matches_torch(covariance_type: str) -> None:
    prior = _prior(covariance_type, seed=1)
    mean = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    logvar = torch.log(torch.tensor([[0.3, 0.7]], dtype=torch.float64))
    # KL(q || p_c) = -E_q log p_c - H(q), the form the VaDE loss uses for "kl_z"
    ours = -prior.expected_log_density(mean, logvar.exp())[0] - gaussian_entropy(logvar)[0]
    q = MultivariateNormal(mean[0], torch.diag(logvar.exp()[0]))
    covs = prior.covariances().detach()
    for c in range(3):
        p = MultivariateNormal(prior.means[c].detach(), covs[c])
        assert ours[c].item() == pytest.approx(kl_divergence(q, p).item(), rel=1e-10)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_responsibilities_agree_with_the_numpy_gmm(covariance_type: str) -> None:
    prior = _prior(covariance_type, seed=2)
    gmm = prior.to_gmm()
    z = np.random.default_rng(0).normal(scale=2.0, size=(50, 2))
    ours = prior.log_responsibilities(torch.as_tensor(z)).exp().detach().numpy()
    assert np.allclose(ours, gmm.predict_proba(z), atol=1e-10)
    assert np.allclose(ours.sum(1), 1.0)


def test_a_full_prior_with_diagonal_factors_equals_the_diagonal_prior() -> None:
    diag = _prior("diag", seed=3)
    full = GaussianMixturePrior(3, 2, "full").double()
    gmm = diag.to_gmm()
    full.load_gmm(gmm)
    z = torch.randn(20, 2, dtype=torch.float64)
    assert torch.allclose(
        full.expected_log_density(z, 0.0), diag.expected_log_density(z, 0.0), atol=1e-10
    )


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_set_from_and_to_gmm_round_trip(covariance_type: str) -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=(3, 2, 2))
    covs = a @ a.transpose(0, 2, 1) + 0.2 * np.eye(2)
    if covariance_type == "diag":
        covs = covs * np.eye(2)
    target = idvae.GMM([0.2, 0.3, 0.5], rng.normal(size=(3, 2)), covs)
    prior = GaussianMixturePrior(3, 2, covariance_type).double()
    prior.load_gmm(target)
    back = prior.to_gmm()
    assert np.allclose(back.weights, target.weights)
    assert np.allclose(back.means, target.means)
    assert np.allclose(back.covariances, target.covariances, atol=1e-9)


def test_prior_samples_have_the_mixture_moments() -> None:
    prior = _prior("full", seed=5)
    gmm = prior.to_gmm()
    z, c = prior.sample(100_000, torch.Generator().manual_seed(0))
    z = z.detach().numpy()
    mean = gmm.weights @ gmm.means
    second = np.einsum(
        "j,jkl->kl", gmm.weights, gmm.covariances + np.einsum("jk,jl->jkl", gmm.means, gmm.means)
    )
    assert np.allclose(z.mean(0), mean, atol=0.03)
    assert np.allclose(np.cov(z.T, bias=True), second - np.outer(mean, mean), atol=0.05)
    assert np.allclose(np.bincount(c.numpy(), minlength=3) / len(c), gmm.weights, atol=0.01)


# -- the estimator ----------------------------------------------------------------------------
CONFIG = VaDE._test_config()


def _blobs(n: int = 300, n_features: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    return rng.normal(scale=4.0, size=(3, n_features))[labels] + rng.normal(
        size=(n, n_features)
    ), labels


@pytest.fixture(scope="module")
def fitted() -> tuple[VaDE, np.ndarray]:
    X, _ = _blobs()
    return VaDE(**CONFIG).fit(X), X


def test_cluster_answers_are_consistent(fitted) -> None:
    model, X = fitted
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 3) and np.allclose(proba.sum(1), 1.0)
    assert np.array_equal(model.predict(X), proba.argmax(1))
    assert np.array_equal(model.labels_, model.predict(X))
    assert np.array_equal(VaDE(**CONFIG).fit_predict(X), model.labels_)
    # p(c | z) at the posterior mean is the learned prior's own posterior there
    assert np.allclose(proba, model.prior_.predict_proba(model.transform(X)), atol=1e-4)


def test_any_scale_of_x_gives_the_same_model(fitted) -> None:
    model, X = fitted
    scaled = VaDE(**CONFIG).fit(1000.0 * X - 7.0)
    assert np.allclose(scaled.transform(1000.0 * X - 7.0), model.transform(X), atol=1e-4)
    # sample undoes the scaling
    assert np.allclose(
        scaled.sample(50, random_state=1), 1000.0 * model.sample(50, random_state=1) - 7.0,
        rtol=1e-4, atol=0.1,
    )  # fmt: skip


def test_training_improves_the_elbo(fitted) -> None:
    model, X = fitted
    untrained = VaDE(**(CONFIG | {"epochs": 0, "pretrain_epochs": 0})).fit(X)
    assert model.score(X) > untrained.score(X) + 1.0
    assert model.score(X) == model.score(X)  # the Monte Carlo estimate is seeded


def test_collapse_is_warned_and_recorded(fitted) -> None:
    model, X = fitted
    assert model.collapsed_components_ == []
    with torch.no_grad():
        model.module_.prior.logits[1] = -30.0
    try:
        with pytest.warns(ComponentCollapseWarning, match=r"\(0, 1\)"):
            model._finish_fit()
        assert model.collapsed_components_ == [(0, 1)]
    finally:
        with torch.no_grad():
            model.module_.prior.logits[1] = 0.0
        model._finish_fit()


def test_bernoulli_likelihood_on_data_in_the_unit_interval() -> None:
    X, _ = _blobs()
    X01 = 1.0 / (1.0 + np.exp(-X))
    model = VaDE(**(CONFIG | {"likelihood": "bernoulli"})).fit(X01)
    x_new = model.sample(20, random_state=0)
    assert np.all((x_new >= 0) & (x_new <= 1))
    with pytest.raises(ValueError, match=r"X in \[0, 1\]"):
        VaDE(**(CONFIG | {"likelihood": "bernoulli"})).fit(X)


def test_full_covariance_estimator_has_a_full_prior() -> None:
    X, _ = _blobs()
    model = VaDE(**(CONFIG | {"covariance_type": "full"})).fit(X)
    assert model.prior_.covariances.shape == (3, 2, 2)
    assert not model.prior_.is_diagonal()


@pytest.mark.parametrize(
    ("params", "n_samples", "message"),
    [
        ({"n_components": 5}, 4, "n_samples >= n_components"),
        ({"latent_dim": 6}, 50, "Remark 3.3"),
        ({"covariance_type": "spherical"}, 50, "covariance_type"),
        ({"activation": "tanh"}, 50, "activation"),
        ({"noise_variance": -1.0}, 50, "noise_variance"),
    ],
)
def test_bad_parameters_are_refused(params: dict, n_samples: int, message: str) -> None:
    X, _ = _blobs()
    with pytest.raises(ValueError, match=message):
        VaDE(**(CONFIG | params)).fit(X[:n_samples])


def test_an_unfitted_model_refuses_to_answer() -> None:
    from sklearn.exceptions import NotFittedError

    X, _ = _blobs()
    for method in ("transform", "predict", "predict_proba", "score"):
        with pytest.raises(NotFittedError):
            getattr(VaDE(), method)(X)
    with pytest.raises(NotFittedError):
        VaDE().sample(3)


# -- n_init: restarts chosen by their log-likelihood ------------------------------------------
def _selection_loglik(model: VaDE, X: np.ndarray) -> float:
    """The log-likelihood n_init compares (in the units of X), recomputed on a fitted model:
    SELECT_DRAWS draws (seed 0) on the training rows, at most SELECT_ROWS of them."""
    from idvae.models.vade import SELECT_DRAWS

    x = torch.as_tensor(model._scale(X))[torch.as_tensor(model._selection_rows(len(X)))]
    log_scale = float(np.log(model.scaler_scale_).sum())
    return model._mean_log_likelihood(x, SELECT_DRAWS, 0, model.module_) - log_scale


def test_n_init_keeps_the_trial_with_the_highest_log_likelihood() -> None:
    X, _ = _blobs(seed=3)
    single = VaDE(**CONFIG).fit(X)
    best = VaDE(**(CONFIG | {"n_init": 3})).fit(X)
    assert len(best.init_scores_) == 3 and best.best_init_ == int(np.argmax(best.init_scores_))
    # trial 0 is the n_init=1 fit of the same seed; the trials are different fits
    assert best.init_scores_[0] == pytest.approx(_selection_loglik(single, X), abs=1e-5)
    assert len(set(np.round(best.init_scores_, 4))) == 3
    # full trials (init_epochs=None): the result is the chosen trial itself
    assert _selection_loglik(best, X) == pytest.approx(max(best.init_scores_), abs=1e-5)
    assert _selection_loglik(best, X) >= _selection_loglik(single, X) - 1e-6
    # the tight estimate, not the training bound: it lies above score (K = 10 draws)
    assert best.init_scores_[best.best_init_] > best.score(X)
    assert single.init_scores_ == [] and single.best_init_ == 0
    if best.best_init_ == 0:
        np.testing.assert_allclose(best.transform(X), single.transform(X), atol=1e-6)


@pytest.mark.parametrize("n_samples", [300, 5000])
def test_full_trials_are_compared_on_a_fixed_set_of_training_rows(n_samples: int) -> None:
    from idvae.models.vade import SELECT_ROWS

    rows = VaDE._selection_rows(n_samples)
    assert len(rows) == min(n_samples, SELECT_ROWS) == len(np.unique(rows))
    assert rows.max() < n_samples
    np.testing.assert_array_equal(rows, VaDE._selection_rows(n_samples))


def test_n_init_is_deterministic_and_short_trials_continue_the_best() -> None:
    X, _ = _blobs(seed=4)
    params = CONFIG | {"n_init": 3, "init_epochs": 1, "epochs": 3}
    a, b = VaDE(**params).fit(X), VaDE(**params).fit(X)
    assert a.init_scores_ == b.init_scores_ and a.best_init_ == b.best_init_
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    # each trial: pretraining and 1 ELBO epoch; then the chosen one trains 2 more epochs
    phases = [(h["phase"], h["epoch"]) for h in a.history_]
    pretrain = [("pretrain", e) for e in (1, 2)]
    assert phases == 3 * (pretrain + [("train", 1)]) + [("train", 1), ("train", 2)]
    decay = CONFIG.get("lr_decay", 0.9) ** (1 // CONFIG.get("lr_decay_every", 10))
    assert a.history_[-1]["lr"] == pytest.approx(a.lr * decay)
    assert a.n_iter_ == 2


def test_n_init_resumes_from_its_checkpoint(tmp_path) -> None:
    X, _ = _blobs(seed=5)
    params = CONFIG | {"n_init": 2, "init_epochs": 1}
    ref = VaDE(**params).fit(X)
    first = VaDE(**params).fit(X, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.glob("vade_init_*.pt")) == [
        "vade_init_0.pt",
        "vade_init_1.pt",
    ]
    # resuming a finished fit reads the trials back from disk and gives the same model
    again = VaDE(**params).fit(X, checkpoint_dir=tmp_path, resume=True)
    for model in (first, again):
        assert model.init_scores_ == pytest.approx(ref.init_scores_, abs=1e-6)
        np.testing.assert_allclose(model.transform(X), ref.transform(X), atol=1e-6)
    (tmp_path / "vade_init_0.pt").unlink()
    with pytest.raises(ValueError, match="trial 0 of n_init"):
        VaDE(**params).fit(X, checkpoint_dir=tmp_path, resume=True)


def test_n_init_survives_save_and_load(tmp_path) -> None:
    X, _ = _blobs(seed=6)
    model = VaDE(**(CONFIG | {"n_init": 2, "init_epochs": 1})).fit(X)
    loaded = idvae.load(model.save(tmp_path / "model"))
    assert loaded.init_scores_ == model.init_scores_ and loaded.best_init_ == model.best_init_
    np.testing.assert_allclose(loaded.transform(X), model.transform(X), atol=1e-6)


def test_n_init_bad_values_are_refused() -> None:
    X, _ = _blobs()
    with pytest.raises(ValueError, match="n_init"):
        VaDE(**(CONFIG | {"n_init": 0})).fit(X)
    with pytest.raises(ValueError, match="init_epochs <= epochs"):
        VaDE(**(CONFIG | {"n_init": 2, "init_epochs": 5})).fit(X)


def test_n_init_with_vectorized_seeds_matches_separate_fits() -> None:
    from sklearn.base import clone

    from idvae.vectorize import fit_seeds

    X, _ = _blobs(seed=7)
    template = VaDE(**(CONFIG | {"n_init": 2, "init_epochs": 1, "epochs": 2}))
    models, reports = fit_seeds(template, X, [1, 2], return_report=True)
    assert all(r.vectorized for r in reports)
    for model, seed in zip(models, [1, 2], strict=True):
        ref = clone(template).set_params(random_state=seed).fit(X)
        assert model.best_init_ == ref.best_init_
        assert model.init_scores_ == pytest.approx(ref.init_scores_, abs=1e-3)
        np.testing.assert_allclose(model.transform(X), ref.transform(X), atol=1e-3)


# -- init_fraction: trials on subsamples, chosen by their held-out likelihood ---------------
@pytest.mark.parametrize("n_samples", [300, 5000, 20000])
def test_subsample_trials_hold_out_the_rows_they_are_compared_on(n_samples: int) -> None:
    from idvae.models.vade import SELECT_ROWS, SUBSAMPLE_MIN_ROWS

    est = VaDE(**(CONFIG | {"n_init": 3, "init_fraction": 0.25}))
    splits = [est._trial_rows(n_samples, i) for i in range(3)]
    size = max(round(0.25 * n_samples), min(SUBSAMPLE_MIN_ROWS, n_samples // 2))
    for rows, held_out in splits:
        assert len(rows) == size == len(np.unique(rows))
        assert len(held_out) == min(n_samples - size, SELECT_ROWS)
        assert not set(rows.tolist()) & set(held_out.tolist())
        assert rows.max() < n_samples and held_out.max() < n_samples
    # each trial its own rows, the same on every call (a resumed fit sees the same)
    assert len({tuple(rows[:20].tolist()) for rows, _ in splits}) == 3
    np.testing.assert_array_equal(est._trial_rows(n_samples, 1)[0], splits[1][0])


def test_subsample_trials_are_scored_on_held_out_rows_and_the_best_trains_on_all(
    tmp_path,
) -> None:
    X, _ = _blobs(n=400, seed=8)
    params = CONFIG | {"n_init": 2, "init_fraction": 0.5, "epochs": 2}
    model = VaDE(**params).fit(X, checkpoint_dir=tmp_path)
    assert model.best_init_ == int(np.argmax(model.init_scores_))
    # each trial: pretraining and 2 epochs on its 200 rows; then the kept one 2 epochs on all
    phases = [(h["phase"], h["epoch"]) for h in model.history_]
    trial = [("pretrain", 1), ("pretrain", 2), ("train", 1), ("train", 2)]
    assert phases == 2 * trial + [("train", 1), ("train", 2)]
    # a trial's score is its importance-sampled log-likelihood on the rows it did not see
    x = torch.as_tensor(model._scale(X))
    log_scale = float(np.log(model.scaler_scale_).sum())
    for i, score in enumerate(model.init_scores_):
        state = torch.load(tmp_path / f"vade_init_{i}.pt", weights_only=True)["state"]
        module = model._new_module(X.shape[1], (), 0)
        module.load_state_dict(state)
        _, held_out = model._trial_rows(len(X), i)
        expected = model._mean_log_likelihood(x[torch.as_tensor(held_out)], 200, 0, module)
        assert score == pytest.approx(expected - log_scale, abs=1e-4)
        trained = model._trial_rows(len(X), i)[0]
        on_training = model._mean_log_likelihood(x[trained], 200, 0, module)
        assert score != pytest.approx(on_training - log_scale, abs=1e-4)


def test_init_fraction_bad_values_are_refused() -> None:
    X, _ = _blobs()
    with pytest.raises(ValueError, match="n_init > 1"):
        VaDE(**(CONFIG | {"init_fraction": 0.5})).fit(X)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="init_fraction"):
            VaDE(**(CONFIG | {"n_init": 2, "init_fraction": bad})).fit(X)


def test_spectral_embedding_separates_clusters_and_is_deterministic() -> None:
    from idvae.metrics import cluster_accuracy
    from idvae.models.vade import spectral_embedding

    X, labels = _blobs(n=300, seed=8)
    x = torch.as_tensor(X, dtype=torch.float32)
    e = spectral_embedding(x, 2)
    assert e.shape == (300, 2) and e.dtype == torch.float32
    np.testing.assert_allclose(e.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(e.std(0, unbiased=False).numpy(), 1.0, atol=1e-4)
    assert torch.equal(e, spectral_embedding(x, 2))
    from sklearn.mixture import GaussianMixture

    found = GaussianMixture(3, random_state=0).fit_predict(e.numpy())
    assert cluster_accuracy(labels, found) >= 0.95


def test_spectral_pretraining_puts_the_encoder_on_the_embedding() -> None:
    from idvae.metrics import mcc
    from idvae.models.vade import spectral_embedding

    X, _ = _blobs(n=300, seed=9)
    params = CONFIG | {"pretrain": "spectral", "pretrain_epochs": 30, "epochs": 0}
    model = VaDE(**params).fit(X)
    target = spectral_embedding(torch.as_tensor(model._scale(X)), 2).numpy()
    assert [h["phase"] for h in model.history_] == ["pretrain"] * 30
    assert model.history_[-1]["embedding"] < 0.5 * model.history_[0]["embedding"]
    assert mcc(target, model.transform(X), alignment="none", out_of_sample=False) > 0.9
    # vectorised seeds pair every batch with its own targets, as a separate fit does
    from idvae.vectorize import fit_seeds

    (vec,) = fit_seeds(VaDE(**(params | {"pretrain_epochs": 3})), X, [0])
    ref = VaDE(**(params | {"pretrain_epochs": 3})).fit(X)
    np.testing.assert_allclose(vec.transform(X), ref.transform(X), atol=1e-4)


@pytest.fixture
def mixture_sizes(monkeypatch) -> list[int]:
    """The number of points each GaussianMixture fit of VaDE sees, with GMM_INIT_SAMPLES 200."""
    import idvae.models.vade as vade_module

    sizes: list[int] = []
    mixture_on = VaDE._mixture_on

    def spy(self, z: np.ndarray, seed: int):
        sizes.append(len(z))
        return mixture_on(self, z, seed)

    monkeypatch.setattr(VaDE, "_mixture_on", spy)
    monkeypatch.setattr(vade_module, "GMM_INIT_SAMPLES", 200)
    return sizes


def test_the_mixture_initialisation_subsamples_large_data_only(mixture_sizes) -> None:
    sizes = mixture_sizes
    X, _ = _blobs(n=300)
    params = CONFIG | {"epochs": 0}  # prior_ is then the initialisation itself
    first, second = VaDE(**params).fit(X), VaDE(**params).fit(X)
    assert sizes == [200, 200]
    # the subset is drawn from the fit's seed: the same seed, the same prior
    np.testing.assert_array_equal(first.prior_.means, second.prior_.means)
    np.testing.assert_array_equal(first.prior_.covariances, second.prior_.covariances)
    VaDE(**params).fit(X[:200])
    VaDE(**params).fit(X[:150])
    assert sizes[2:] == [200, 150]  # at or below the threshold every point is used


def test_the_prior_refits_subsample_large_data_as_the_initialisation_does(mixture_sizes) -> None:
    sizes = mixture_sizes
    X, _ = _blobs(n=300)
    params = CONFIG | {"epochs": 3, "prior_refit_every": 1}
    VaDE(**params).fit(X)
    assert sizes == [200, 200, 200]  # the initialisation, then a refit after epochs 1 and 2
    VaDE(**params).fit(X[:150])
    assert sizes[3:] == [150, 150, 150]  # at or below the threshold every point is used


def _exact_log_likelihood_of_a_linear_decoder(model: VaDE, X: np.ndarray) -> float:
    """Mean log p(x) in closed form when the decoder is affine: x = A z + b + noise.

    p(x) = sum_c pi_c N(x; A mu_c + b, A Sigma_c A^T + S), in the units of X (the estimator's
    standardisation folded into A, b and the noise covariance S).
    """
    (layer,) = model.module_.decoder.net
    scale = model.scaler_scale_
    A = scale[:, None] * layer.weight.detach().double().numpy()
    b = scale * layer.bias.detach().double().numpy() + model.scaler_mean_
    noise = scale**2 * float(model.module_.decoder.noise_variance().detach())
    prior = model.prior_
    covariances = np.einsum("ik,jkl,ml->jim", A, prior.covariances, A) + np.diag(noise)
    marginal = idvae.GMM(prior.weights, prior.means @ A.T + b, covariances)
    return float(marginal.logpdf(X).mean())


def test_log_likelihood_converges_to_the_closed_form_of_a_linear_decoder() -> None:
    X, _ = _blobs(n_features=4)
    model = VaDE(**(CONFIG | {"decoder_sizes": (), "importance_samples": 1})).fit(X)
    exact = _exact_log_likelihood_of_a_linear_decoder(model, X)
    estimates = {k: model.log_likelihood(X, n_draws=k) for k in (1, 10, 3000)}
    # a lower bound in expectation that tightens with K, and with many draws the exact value
    assert estimates[1] < estimates[10] < estimates[3000] <= exact + 0.01
    assert estimates[3000] == pytest.approx(exact, abs=0.02)
    assert model.score(X) < estimates[3000] - 0.05  # the ELBO is looser
    # seeded: the same estimate twice, another seed a different one
    assert model.log_likelihood(X, n_draws=10) == estimates[10]
    assert model.log_likelihood(X, n_draws=10, random_state=1) != estimates[10]


def test_log_likelihood_refuses_bad_draws(fitted) -> None:
    model, X = fitted
    with pytest.raises(ValueError, match="n_draws"):
        model.log_likelihood(X, n_draws=0)


def test_full_posterior_fits_learns_correlations_and_survives_save_and_load(tmp_path) -> None:
    """posterior_covariance="full": the encoder's off-diagonal head starts at zero (the
    diagonal q) and training moves it; a saved model loads with it; a bad value is refused
    with the options named."""
    X, _ = _blobs(seed=3)
    model = VaDE(**(CONFIG | {"posterior_covariance": "full", "importance_samples": 3})).fit(X)
    offdiag = model.module_.encoder.offdiag
    assert offdiag is not None and float(offdiag.weight.abs().max()) > 0
    loaded = idvae.load(model.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.transform(X), model.transform(X), atol=1e-6)
    assert loaded.posterior_covariance == "full"
    with pytest.raises(ValueError, match="'posterior_covariance' parameter.*Got 'cholesky'"):
        VaDE(**(CONFIG | {"posterior_covariance": "cholesky"})).fit(X)

"""Vectorised seeds: each seed of ``fit_seeds`` is its own fit, trained in one batched model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA

import idvae
from idvae.mixture import GMM
from idvae.models.vade import ELBO_PIPELINE, VaDE, VaDEModule
from idvae.vectorize import (
    SeedReport,
    VectorizationWarning,
    fit_seeds,
    supports_vectorization,
)

# Why a tolerance and not equality: a batched matmul (one bmm over the seeds) sums in
# another order than a single seed's mm, so gradients differ by rounding (~1e-7 relative to
# the largest terms summed). Adam turns that into parameter differences far above rounding:
# its first step moves each weight by lr * g / (|g| + eps), whose slope is lr / (4 eps) at
# |g| = eps = 1e-8, so a 2e-9 difference in a gradient entry near 1e-8 (Table-2 VaDE, first
# pretraining step: 9.59e-9 vs 1.18e-8) moves the weight by 1.5e-4 at lr 3e-3. Training then
# amplifies such differences like any others; a separate fit nudged by 1 ulp or run on 2
# threads diverges from itself just as far (docs/vectorize.md). After the few epochs of these
# small configurations the seeds still agree with their separate fits to well below this.
ATOL = 1e-3
# the two pipelines below, 2 + 3 epochs: the largest difference measured is 1e-5 (latents)
TIGHT = 1e-4


@pytest.fixture(scope="module")
def sim():
    return idvae.simulate.sample_model(400, latent_dim=2, obs_dim=4, n_components=3, random_state=0)


def small_vade(**kw) -> VaDE:
    params = dict(
        latent_dim=2,
        n_components=3,
        encoder_sizes=(16, 16),
        decoder_sizes=(16, 16),
        pretrain_epochs=2,
        epochs=3,
        batch_size=64,
        gmm_n_init=1,
        device="cpu",
    )
    params.update(kw)
    return VaDE(**params)


def separate(estimator, x, seed, *aux):
    est = clone(estimator).set_params(random_state=seed)
    return est.fit_with(x, aux)


def test_each_seed_matches_its_separate_fit(sim):
    est = small_vade()
    models, reports = fit_seeds(est, sim.x, [3, 7, 11], return_report=True)
    assert [r.seed for r in reports] == [3, 7, 11]
    assert all(r.vectorized and r.note is None for r in reports)
    latents = []
    for model, seed in zip(models, [3, 7, 11], strict=True):
        ref = separate(est, sim.x, seed)
        assert type(model) is VaDE and model.random_state == seed
        z, z_ref = model.transform(sim.x), ref.transform(sim.x)
        np.testing.assert_allclose(z, z_ref, atol=ATOL)
        np.testing.assert_allclose(model.prior_.means, ref.prior_.means, atol=ATOL)
        np.testing.assert_allclose(model.prior_.weights, ref.prior_.weights, atol=ATOL)
        # the same phases, epochs and (up to rounding) losses in the log
        assert [(h["phase"], h["epoch"]) for h in model.history_] == [
            (h["phase"], h["epoch"]) for h in ref.history_
        ]
        for a, b in zip(model.history_, ref.history_, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-4)
            assert a["lr"] == b["lr"]
        assert model.n_iter_ == ref.n_iter_ and model.stopped_early_ == ref.stopped_early_
        np.testing.assert_array_equal(model.scaler_mean_, ref.scaler_mean_)
        latents.append(z)
        # the template is untouched
    assert est.random_state is None and not hasattr(est, "module_")
    # the seeds are different fits
    assert np.abs(latents[0] - latents[1]).max() > 0.05
    assert np.abs(latents[1] - latents[2]).max() > 0.05


@pytest.mark.parametrize(
    "pipeline",
    [
        # the Table-2 pipeline: the ELBO, diagonal prior, no refit
        ELBO_PIPELINE | {"pretrain_epochs": 2, "epochs": 3},
        # the defaults (importance-weighted loss with K = 10, full covariances) with a prior
        # refit after every epoch: per-seed GaussianMixture refits between stacked phases
        {"pretrain_epochs": 2, "epochs": 3, "prior_refit_every": 1},
        # the defaults finished by a full-batch L-BFGS polish, a step each seed runs alone.
        # Two iterations: L-BFGS amplifies the stack's rounding quickly on these unconverged
        # fits (measured: 5e-6 after 2 iterations, 3e-3 after 5, 0.5 after 20)
        {"pretrain_epochs": 2, "epochs": 3, "polish_iterations": 2},
    ],
    ids=["elbo_pipeline", "iw_full_refit", "polish"],
)
def test_latents_and_prior_match_separate_fits(sim, pipeline):
    est = small_vade(**pipeline)
    seeds = [0, 1, 2]
    models = fit_seeds(est, sim.x, seeds)
    for model, seed in zip(models, seeds, strict=True):
        ref = separate(est, sim.x, seed)
        np.testing.assert_allclose(model.transform(sim.x), ref.transform(sim.x), atol=TIGHT)
        prior, ref_prior = model.prior_, ref.prior_
        np.testing.assert_allclose(prior.weights, ref_prior.weights, atol=TIGHT)
        np.testing.assert_allclose(prior.means, ref_prior.means, atol=TIGHT)
        np.testing.assert_allclose(prior.covariances, ref_prior.covariances, atol=TIGHT)
        # the same phases in the same order (the refits split "train" into chunks)
        assert [(h["phase"], h["epoch"]) for h in model.history_] == [
            (h["phase"], h["epoch"]) for h in ref.history_
        ]
        np.testing.assert_array_equal(model.labels_, ref.labels_)


def test_single_seed_matches_separate_fit_closely(sim):
    est = small_vade(epochs=2)
    (model,) = fit_seeds(est, sim.x, [5])
    ref = separate(est, sim.x, 5)
    for (name, p), (_, q) in zip(
        model.module_.named_parameters(), ref.module_.named_parameters(), strict=True
    ):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), atol=1e-4, err_msg=name)


def test_results_are_proper_fitted_estimators(sim, tmp_path):
    models = fit_seeds(small_vade(), sim.x, [0, 1])
    for i, model in enumerate(models):
        z = model.transform(sim.x)
        assert z.shape == (sim.x.shape[0], 2) and np.all(np.isfinite(z))
        assert isinstance(model.prior_, GMM) and model.prior_.n_components == 3
        proba = model.predict_proba(sim.x)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
        np.testing.assert_array_equal(model.labels_, model.predict(sim.x))
        assert not model.module_.training
        path = model.save(tmp_path / f"m{i}")
        loaded = idvae.load(path)
        assert type(loaded) is VaDE and loaded.random_state == model.random_state
        np.testing.assert_array_equal(loaded.transform(sim.x), z)
        # training continued from the per-seed GMM initialisation, not a shared one
    assert not np.allclose(models[0].prior_.means, models[1].prior_.means)


def test_max_batch_gives_the_same_fits(sim):
    est = small_vade(pretrain_epochs=1, epochs=2)
    together = fit_seeds(est, sim.x, [0, 1, 2])
    chunked = fit_seeds(est, sim.x, [0, 1, 2], max_batch=2)
    for a, b in zip(together, chunked, strict=True):
        np.testing.assert_allclose(a.transform(sim.x), b.transform(sim.x), atol=ATOL)


def test_vectorize_false_is_separate_fits(sim):
    est = small_vade(pretrain_epochs=1, epochs=1)
    models, reports = fit_seeds(est, sim.x, [4], vectorize=False, return_report=True)
    ref = separate(est, sim.x, 4)
    np.testing.assert_array_equal(models[0].transform(sim.x), ref.transform(sim.x))
    assert reports == [SeedReport(4, False, "vectorize=False")]


# -- faults: a non-finite seed does not affect the others ---------------------------------------
_POISONED: set[int] = set()


class PoisonedVaDE(VaDE):
    """VaDE whose prior initialisation is NaN once for seed 1 (a transient fault)."""

    def _initialize_prior(self, ctx, x):
        super()._initialize_prior(ctx, x)
        if self.random_state == 1 and 1 not in _POISONED:
            _POISONED.add(1)
            with torch.no_grad():
                ctx.module.prior.means.fill_(float("nan"))


def test_nan_in_one_seed_leaves_the_others_alone(sim):
    _POISONED.clear()
    params = small_vade().get_params()
    est = PoisonedVaDE(**params)
    with pytest.warns(VectorizationWarning, match="seed 1: non-finite"):
        models, reports = fit_seeds(est, sim.x, [0, 1, 2], return_report=True)
    assert _POISONED == {1}
    assert [r.vectorized for r in reports] == [True, False, True]
    assert "non-finite" in reports[1].note and "'train'" in reports[1].note
    clean = fit_seeds(small_vade(), sim.x, [0, 2])
    # the healthy seeds: the same as a batched run without the fault (up to the rounding of
    # the fused Adam kernel, which depends on where a value sits in the stacked tensor)
    for model, ref in zip([models[0], models[2]], clean, strict=True):
        np.testing.assert_allclose(model.transform(sim.x), ref.transform(sim.x), atol=1e-4)
    # the faulty seed was refitted on its own: exactly a separate fit (fault gone)
    ref = separate(small_vade(), sim.x, 1)
    np.testing.assert_array_equal(models[1].transform(sim.x), ref.transform(sim.x))
    assert all(np.all(np.isfinite(m.transform(sim.x))) for m in models)


class GlobalNoiseModule(VaDEModule):
    def loss(self, x, *, generator):
        terms = super().loss(x, generator=generator)
        terms["loss"] = terms["loss"] + 0.0 * torch.randn(()).to(x.dtype)  # global RNG
        return terms


class GlobalNoiseVaDE(VaDE):
    def _build_module(self, n_features, aux_dims):
        base = super()._build_module(n_features, aux_dims)
        base.__class__ = GlobalNoiseModule
        return base


def test_unsupported_randomness_falls_back_to_separate_fits(sim):
    est = GlobalNoiseVaDE(**small_vade(pretrain_epochs=0, epochs=1).get_params())
    with pytest.warns(VectorizationWarning, match="randomness"):
        models, reports = fit_seeds(est, sim.x, [0, 1], return_report=True)
    assert not any(r.vectorized for r in reports)
    ref = separate(est, sim.x, 1)
    np.testing.assert_array_equal(models[1].transform(sim.x), ref.transform(sim.x))


# -- other estimators and options ------------------------------------------------------------------
def test_other_estimators_match_separate_fits(sim):
    estimators = [
        idvae.VAE(**(idvae.VAE._test_config() | {"device": "cpu", "epochs": 2})),
        idvae.MFCVAE(**idvae.MFCVAE._test_config()),
        # fade-in weights set per epoch by a callback (a buffer the loss branches on)
        idvae.MFCVAE(**(idvae.MFCVAE._test_config() | {"progressive": True, "fade_in_epochs": 1})),
    ]
    for est in estimators:
        assert supports_vectorization(est)
        models = fit_seeds(est, sim.x, [0, 1])
        for model, seed in zip(models, [0, 1], strict=True):
            ref = separate(est, sim.x, seed)
            assert type(model) is type(est)
            assert [h["phase"] for h in model.history_] == [h["phase"] for h in ref.history_]
            np.testing.assert_allclose(model.transform(sim.x), ref.transform(sim.x), atol=ATOL)


def test_ivae_with_auxiliary_variable(sim):
    u = np.eye(3)[sim.u]
    est = idvae.IVAE(**(idvae.IVAE._test_config() | {"device": "cpu"}))
    models = fit_seeds(est, sim.x, [0, 1], u)
    for model, seed in zip(models, [0, 1], strict=True):
        ref = clone(est).set_params(random_state=seed).fit(sim.x, u)
        np.testing.assert_allclose(model.transform(sim.x, u), ref.transform(sim.x, u), atol=ATOL)


def test_early_stopping_per_seed(sim):
    # a tiny lr: the epoch loss moves by its noise only, so seeds stop at different epochs
    est = small_vade(pretrain_epochs=1, epochs=8, early_stopping=True, patience=1, lr=1e-6)
    models = fit_seeds(est, sim.x, [0, 1, 2, 3])
    stops = []
    for model, seed in zip(models, [0, 1, 2, 3], strict=True):
        ref = separate(est, sim.x, seed)
        assert (model.n_iter_, model.stopped_early_) == (ref.n_iter_, ref.stopped_early_)
        assert len(model.history_) == len(ref.history_)
        np.testing.assert_allclose(model.transform(sim.x), ref.transform(sim.x), atol=ATOL)
        stops.append(model.n_iter_)
    assert len(set(stops)) > 1  # the batch went on without the seeds that had stopped


def test_gradient_clipping_per_seed(sim, monkeypatch):
    # the engine's clip_grad_norm_ applied to each seed's own gradient norm
    base = small_vade(pretrain_epochs=0, epochs=1)
    original = VaDE._train_config

    def clipped(self, epochs, **overrides):
        return original(self, epochs, **overrides, grad_clip=1e-3)

    unclipped = fit_seeds(base, sim.x, [0, 1])
    monkeypatch.setattr(VaDE, "_train_config", clipped)
    models = fit_seeds(base, sim.x, [0, 1])
    for model, free, seed in zip(models, unclipped, [0, 1], strict=True):
        ref = separate(base, sim.x, seed)
        z = model.transform(sim.x)
        np.testing.assert_allclose(z, ref.transform(sim.x), atol=1e-4)
        assert np.abs(z - free.transform(sim.x)).max() > 1e-3  # the clipping did act


# -- arguments -----------------------------------------------------------------------------
def test_supports_vectorization():
    assert supports_vectorization(small_vade())
    ok, reason = supports_vectorization(PCA(), return_reason=True)
    assert not ok and "LatentEstimator" in reason


@pytest.mark.parametrize(
    ("seeds", "error", "match"),
    [
        ([], ValueError, "at least one seed"),
        ([0, -1], ValueError, "non-negative"),
        ([0, 1.5], TypeError, "ints"),
        ("01", TypeError, "sequence of ints"),
        (3, TypeError, "sequence of ints"),
    ],
)
def test_bad_seeds(sim, seeds, error, match):
    with pytest.raises(error, match=match):
        fit_seeds(small_vade(), sim.x, seeds)


def test_bad_arguments(sim):
    with pytest.raises(TypeError, match="LatentEstimator"):
        fit_seeds(PCA(), sim.x, [0])
    with pytest.raises(ValueError, match="max_batch"):
        fit_seeds(small_vade(), sim.x, [0], max_batch=0)
    # the estimator's own validation errors come through unchanged
    with pytest.raises(ValueError, match="latent_dim"):
        fit_seeds(small_vade(latent_dim=9), sim.x, [0, 1])
    with pytest.raises(ValueError, match="n_features"):
        fit_seeds(small_vade(), sim.x[:, :1], [0])


def test_no_stray_warnings(sim):
    with warnings.catch_warnings():
        warnings.simplefilter("error", VectorizationWarning)
        fit_seeds(small_vade(pretrain_epochs=1, epochs=1), sim.x, [0, 1])


@pytest.mark.slow
def test_outcomes_have_the_distribution_of_separate_fits():
    # longer training: rounding differences grow (the same happens between two separate fits
    # with different thread counts), so compare the outcomes as distributions
    sim = idvae.simulate.sample_model(2000, latent_dim=2, obs_dim=5, n_components=3, random_state=1)
    est = small_vade(
        encoder_sizes=(32, 64, 32), decoder_sizes=(32, 64, 64), pretrain_epochs=5, epochs=15,
        batch_size=100,
    )  # fmt: skip
    seeds = list(range(6))
    vectorized = fit_seeds(est, sim.x, seeds)
    separate_fits = [separate(est, sim.x, s) for s in seeds]

    def weak(model):
        return idvae.metrics.mcc(sim.z, model.transform(sim.x), alignment="affine", random_state=0)

    mcc_vec = np.array([weak(m) for m in vectorized])
    mcc_sep = np.array([weak(m) for m in separate_fits])
    assert abs(mcc_vec.mean() - mcc_sep.mean()) < 0.03
    assert mcc_vec.min() >= mcc_sep.min() - 0.05 and mcc_vec.max() <= mcc_sep.max() + 0.05

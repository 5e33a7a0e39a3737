"""VaDE's recovery levers: the importance-weighted bound against the exact likelihood, the
prior refit as an EM step, Isomap and given initial embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import idvae
from idvae.metrics import cluster_accuracy, mcc
from idvae.models.vade import VaDE, VaDEModule, isomap_embedding


def _linear_module(importance_samples: int) -> VaDEModule:
    """A VaDE module with a linear decoder, so that p(x) is a Gaussian mixture in x."""
    torch.manual_seed(0)
    module = VaDEModule(
        4, 2, 3, (16,), (), "leaky_relu", "gaussian", "full", 0.3, importance_samples
    ).double()
    with torch.no_grad():
        module.prior.means.mul_(2.0)
    return module


def _exact_log_px(module: VaDEModule, x: torch.Tensor) -> torch.Tensor:
    """log p(x) of the linear model: sum_c pi_c N(x; W mu_c + b, W Sigma_c W' + s2 I)."""
    layer = module.decoder.net[0]
    w, b = layer.weight.detach(), layer.bias.detach()
    prior = module.prior.to_gmm()
    eye = np.eye(x.shape[1])
    s2 = float(module.decoder.noise_variance())
    pushed = idvae.GMM(
        prior.weights,
        prior.means @ w.numpy().T + b.numpy(),
        np.stack([w.numpy() @ c @ w.numpy().T + s2 * eye for c in prior.covariances]),
    )
    return torch.as_tensor(pushed.logpdf(x.numpy()))


@pytest.mark.parametrize("posterior", ["diag", "full"])
def test_the_exact_posterior_makes_every_importance_weight_equal_p_x(posterior: str) -> None:
    """One prior component and a linear decoder: p(z | x) = N(M x + c, S) with S =
    (W'W / s2 + P^-1)^-1 full. An encoder set to it gives log p(x | z_k) + log p(z_k) -
    log q(z_k | x) = log p(x) for every draw, exactly, when q may have a full covariance
    (posterior="full", L = chol S); a diagonal q cannot be set to it and its weights vary."""
    torch.manual_seed(0)
    m, n, s2 = 2, 4, 0.3
    module = VaDEModule(
        n, m, 1, (), (), "leaky_relu", "gaussian", "full", s2, 3, posterior=posterior
    ).double()
    layer = module.decoder.net[0]
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    prior = module.prior.to_gmm()
    mu, prec = prior.means[0], np.linalg.inv(prior.covariances[0])
    cov = np.linalg.inv(w.T @ w / s2 + prec)
    # E[z | x] = cov (W' (x - b) / s2 + P mu): linear in x
    gain, offset = cov @ w.T / s2, cov @ (prec @ mu - w.T @ b / s2)
    chol = np.linalg.cholesky(cov)
    head = module.encoder.head
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:m] = torch.as_tensor(gain)
        head.bias[:m] = torch.as_tensor(offset)
        var = np.diag(chol) ** 2 - idvae.models._layers.MIN_POSTERIOR_VARIANCE
        head.bias[m:] = idvae.models._layers.inverse_softplus(torch.as_tensor(var))
        if posterior == "full":
            module.encoder.offdiag.weight.zero_()
            module.encoder.offdiag.bias.copy_(torch.as_tensor(chol[np.tril_indices(m, -1)]))
    x = torch.randn(32, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        log_px, log_pz, log_q = module.log_weight_terms(x, 50, torch.Generator().manual_seed(2))
    log_w = (log_px + log_pz - log_q).numpy()
    exact = _exact_log_px(module, x).numpy()
    if posterior == "full":
        np.testing.assert_allclose(log_w, np.broadcast_to(exact, log_w.shape), atol=1e-9)
    else:
        assert log_w.std(axis=0).min() > 1e-3


def test_importance_weighted_bound_tightens_towards_the_exact_likelihood() -> None:
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = float(_exact_log_px(_linear_module(1), x).mean())
    bounds = {}
    for k in (1, 10, 1000):
        module = _linear_module(k)
        with torch.no_grad():
            draws = [
                -float(module.iw_loss(x, generator=torch.Generator().manual_seed(d))["loss"])
                for d in range(20)
            ]
        bounds[k] = (np.mean(draws), np.std(draws) / np.sqrt(len(draws)))
    # a lower bound on average, tighter with more draws (Burda et al., Thm 1)
    for k, (mean, se) in bounds.items():
        assert mean < exact + 3 * se + 1e-9, (k, mean, exact)
    assert bounds[1][0] < bounds[10][0] < bounds[1000][0]
    # the encoder is untrained, so only many draws close the gap
    assert exact - bounds[1000][0] < 0.25 * (exact - bounds[1][0])


def test_one_draw_bound_is_at_least_vades_elbo() -> None:
    """K = 1 is the ELBO with the mixture prior marginalised exactly. VaDE's loss weights
    E_q log pi_c N(z'; c) by gamma(z) at an independent draw z, and for any gamma,
    sum_c gamma_c a_c + H(gamma) <= log sum_c exp(a_c): so VaDE's ELBO is the looser bound."""
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    module = _linear_module(1)
    with torch.no_grad():
        iw = [
            -float(module.iw_loss(x, generator=torch.Generator().manual_seed(d))["loss"])
            for d in range(200)
        ]
        elbo = [
            -float(module.loss(x, generator=torch.Generator().manual_seed(d))["loss"])
            for d in range(200)
        ]
    exact = float(_exact_log_px(module, x).mean())
    se = np.hypot(np.std(iw), np.std(elbo)) / np.sqrt(200)
    assert np.mean(elbo) < np.mean(iw) + 3 * se
    assert np.mean(iw) < exact


def test_isomap_embedding_of_a_linear_image_is_affine_in_z() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1500, 2))
    x = z @ rng.normal(size=(2, 8)) + 0.01 * rng.normal(size=(1500, 8))
    embedding = isomap_embedding(torch.as_tensor(x, dtype=torch.float32), 2).numpy()
    assert embedding.shape == (1500, 2)
    np.testing.assert_allclose(embedding.mean(0), 0.0, atol=1e-5)
    assert mcc(z, embedding, alignment="affine", random_state=0) > 0.99


def test_isomap_embedding_out_of_sample_beyond_the_fit_size() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4100, 2))
    x = z @ rng.normal(size=(2, 6))
    embedding = isomap_embedding(torch.as_tensor(x, dtype=torch.float32), 2).numpy()
    assert embedding.shape == (4100, 2)
    assert mcc(z, embedding, alignment="affine", random_state=0) > 0.99


def _separated(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 3, 600)
    z = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])[u] + rng.normal(size=(600, 2))
    return z, u


@pytest.mark.parametrize("refit_moments", [False, True])
def test_refit_replaces_a_merged_prior_and_never_lowers_the_fit(refit_moments: bool) -> None:
    """From a prior that merges two clusters the refit finds the three, whether it compares
    the clusterings on the means as they are or by their posterior moments; refitting the
    optimum again keeps it."""
    z, u = _separated(0)
    est = VaDE(
        latent_dim=2, n_components=3, covariance_type="full", gmm_n_init=3,
        refit_moments=refit_moments,
    )  # fmt: skip
    module = VaDEModule(2, 2, 3, (), (), "leaky_relu", "gaussian", "full").double()

    class Ctx:  # the two attributes the refit reads
        rng = np.random.default_rng(0)

    ctx = Ctx()
    ctx.module = module
    # the posteriors the refit sees: means z, small variances
    est._encoder_moments = lambda _ctx, _x=None: (z, np.full_like(z, 0.01))
    # two components on one cluster, one component over the other two
    merged = [np.array([0.5, 0.25, 0.25]), np.array([[2.0, 2.0], [-4.0, 0.3], [-4.0, -0.3]])]
    covs = np.stack([np.diag([9.0, 9.0]), np.eye(2), np.eye(2)])
    module.prior.load_gmm(idvae.GMM(*merged, covs))
    before = module.prior.to_gmm().logpdf(z).mean()
    est._refit_prior(ctx, torch.zeros((len(z), 2), dtype=torch.float64))  # as many rows as z
    after = module.prior.to_gmm()
    assert after.logpdf(z).mean() > before + 0.5
    labels = np.argmax(
        [
            np.log(w) + idvae.GMM([1.0], m[None], c[None]).logpdf(z)
            for w, m, c in zip(after.weights, after.means, after.covariances, strict=True)
        ],
        0,
    )
    assert cluster_accuracy(u, labels) > 0.98
    # refitting the optimum again keeps it (the candidate is not better)
    again = after.logpdf(z).mean()
    est._refit_prior(ctx, torch.zeros((len(z), 2), dtype=torch.float64))  # as many rows as z
    assert module.prior.to_gmm().logpdf(z).mean() >= again - 1e-6


def test_given_embedding_must_match_the_data() -> None:
    sim = idvae.simulate.sample_model(200, latent_dim=2, obs_dim=5, n_components=3, random_state=0)
    with pytest.raises(ValueError, match=r"shape \(200, 2\).*got an array of shape \(100, 2\)"):
        VaDE(pretrain=sim.z[:100], pretrain_epochs=1, epochs=1, device="cpu").fit(sim.x)


def test_pretraining_on_a_given_embedding_reproduces_it() -> None:
    """The oracle start of docs/recovery_levers.md: the encoder learns the given latent."""
    sim = idvae.simulate.sample_model(
        1500, latent_dim=2, obs_dim=10, n_components=3, random_state=1
    )
    model = VaDE(
        latent_dim=2,
        n_components=3,
        pretrain=sim.z,
        pretrain_epochs=30,
        epochs=0,
        random_state=0,
        device="cpu",
    )
    model.fit(sim.x)
    assert mcc(sim.z, model.transform(sim.x), alignment="affine", random_state=0) > 0.97

"""The true model's posterior (the recovery benchmark's ceiling) against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from idvae import GMM
from idvae.experiments.recovery.ceiling import bayes_predictions, facet_marginals, true_posterior
from idvae.simulate import Simulation


def _linear_simulation(n: int = 400, sigma: float = 0.4, seed: int = 0) -> Simulation:
    """Model (3) with a linear decoder x = A z + b + noise: the posterior is closed form."""
    rng = np.random.default_rng(seed)
    prior = GMM(
        np.array([0.3, 0.5, 0.2]),
        np.array([[-1.5, 0.0], [1.0, 1.0], [0.5, -1.5]]),
        np.array([np.diag([0.4, 0.2]), [[0.3, 0.1], [0.1, 0.5]], np.diag([0.2, 0.6])]),
    )
    z, labels = prior.sample(n, rng, return_labels=True)
    decoder = nn.Sequential(nn.Linear(2, 5)).double()
    with torch.no_grad():
        decoder[0].weight.copy_(torch.as_tensor(rng.normal(size=(5, 2))))
        decoder[0].bias.copy_(torch.as_tensor(rng.normal(size=5)))
    with torch.no_grad():
        x = decoder(torch.as_tensor(z)).numpy() + sigma * rng.standard_normal((n, 5))
    return Simulation(x, z=z, u=labels, prior=prior, decoder=decoder, noise_std=sigma)


def _closed_form(sim: Simulation) -> tuple[np.ndarray, np.ndarray]:
    a = sim.decoder[0].weight.detach().numpy()
    b = sim.decoder[0].bias.detach().numpy()
    sigma2 = sim.noise_std**2
    log_p, means = [], []
    for w, mu, cov in zip(sim.prior.weights, sim.prior.means, sim.prior.covariances, strict=True):
        s = a @ cov @ a.T + sigma2 * np.eye(len(b))
        r = sim.x - (a @ mu + b)
        _, logdet = np.linalg.slogdet(s)
        log_p.append(
            np.log(w) - 0.5 * logdet - 0.5 * np.einsum("ni,ij,nj->n", r, np.linalg.inv(s), r)
        )
        means.append(mu + r @ np.linalg.inv(s).T @ a @ cov.T)
    log_p = np.stack(log_p, 1)
    probs = np.exp(log_p - log_p.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return probs, np.einsum("nc,cnm->nm", probs, np.stack(means))


def test_true_posterior_converges_to_the_closed_form_of_a_linear_decoder():
    sim = _linear_simulation()
    exact_probs, exact_mean = _closed_form(sim)
    spread = np.sqrt(np.mean((sim.z - exact_mean) ** 2))  # posterior spread of z around E[z|x]
    errors = []
    for draws in (256, 4096):
        probs, z_mean = true_posterior(sim, draws=draws, random_state=1)
        errors.append(
            (np.abs(probs - exact_probs).mean(), np.sqrt(np.mean((z_mean - exact_mean) ** 2)))
        )
    # Monte Carlo error: small at the default draws, and shrinking with more draws
    assert errors[0][0] < 0.003 and errors[0][1] < 0.15 * spread
    assert errors[1][0] < 0.5 * errors[0][0] and errors[1][1] < 0.5 * errors[0][1]
    assert np.abs(probs - exact_probs).max() < 0.04
    # the Bayes classifier of the closed form is reproduced point by point
    assert np.mean(bayes_predictions(sim, probs) == exact_probs.argmax(1)) > 0.99


def test_facet_marginals_of_independent_facets_give_back_each_facet():
    rng = np.random.default_rng(0)
    p1, p2 = rng.dirichlet(np.ones(2), size=50), rng.dirichlet(np.ones(3), size=50)
    joint = np.einsum("ni,nj->nij", p1, p2).reshape(50, 6)
    m1, m2 = facet_marginals(joint, (2, 3))
    np.testing.assert_allclose(m1, p1, atol=1e-12)
    np.testing.assert_allclose(m2, p2, atol=1e-12)


def test_true_posterior_refuses_data_without_the_truth_and_bad_settings():
    from idvae.data import Data

    sim = _linear_simulation(n=20)
    with pytest.raises(TypeError, match="decoder"):
        true_posterior(Data(sim.x, z=sim.z, prior=sim.prior))
    with pytest.raises(ValueError, match="draws"):
        true_posterior(sim, draws=0)
    with pytest.raises(ValueError, match="inflate"):
        true_posterior(sim, inflate=-1.0)

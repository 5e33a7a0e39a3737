"""The ceiling of the recovery benchmark: what the true model itself reads from x.

An estimator sees only x. Even the model that generated the data cannot say which component
a point came from when the decoder brings two components close together and the noise
blurs them, nor give back z exactly. :func:`true_posterior` computes, for each observed x,
the posterior of the TRUE model (true prior, decoder and noise) over the component and its
mean over z. Scored like any method, its accuracy is the Bayes accuracy (no method that
sees only x does better in expectation) and its weak MCC is that of E[z | x]: where these
fall below the recovery threshold, no estimator can be expected to recover the instance.

The posterior is computed by importance sampling, each point from a Gaussian around its
true z with the Laplace covariance of the posterior, (J^T J / sigma^2 + Sigma^-1)^-1 with
J the decoder's Jacobian at z and Sigma^-1 the smallest precision of a prior component
(so the proposal is rather too wide than too narrow), inflated
``inflate`` times. This uses the true z, which a simulation has, only to place the proposal:
the weights are those of the true posterior. It covers the posterior unless the decoder
brings far latents within a few sigma of each other (then a second mode can be missed, and
the ceiling is optimistic).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from idvae._validation import check_positive_int

__all__ = ["bayes_predictions", "facet_marginals", "true_posterior"]

DRAWS = 256
CHUNK = 2048  # points per block: DRAWS * CHUNK decoder evaluations at a time


def true_posterior(
    sim: Any, *, draws: int = DRAWS, inflate: float = 2.0, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The true model's posterior at each of the simulation's points.

    Args:
        sim: an ``idvae.simulate.Simulation`` (x, z, prior, decoder, noise_std).
        draws: importance samples per point.
        inflate: factor on the Laplace covariance of the proposal.
        random_state: seeds the draws.

    Returns:
        ``probs``, array of shape (n_samples, J): P(component | x) for the components of
        ``sim.prior``; and ``z_mean``, array of shape (n_samples, latent_dim): E[z | x].

    Raises:
        TypeError: ``sim`` lacks one of x, z, prior, decoder, noise_std.
        ValueError: ``draws`` is not a positive integer or ``inflate`` is not positive.
    """
    missing = [
        name
        for name in ("x", "z", "prior", "decoder", "noise_std")
        if getattr(sim, name, None) is None
    ]
    if missing:
        raise TypeError(
            "Expected a simulation with x, z, prior, decoder and noise_std (the truth) but "
            f"{missing} are missing"
        )
    draws = check_positive_int(draws, "draws")
    if not float(inflate) > 0:
        raise ValueError(f"Expected inflate > 0 but got {inflate!r}")
    gen = torch.Generator().manual_seed(int(random_state))
    prior = sim.prior
    comps = torch.distributions.MultivariateNormal(
        torch.tensor(prior.means, dtype=torch.float64),
        covariance_matrix=torch.tensor(prior.covariances, dtype=torch.float64),
    )
    log_weights = torch.log(torch.tensor(prior.weights, dtype=torch.float64))
    min_precision = float(np.min(1.0 / np.linalg.eigvalsh(prior.covariances)))
    x_all = torch.as_tensor(sim.x, dtype=torch.float64)
    z_all = torch.as_tensor(sim.z, dtype=torch.float64)
    probs, z_mean = [], []
    for start in range(0, len(z_all), CHUNK):
        x, z = x_all[start : start + CHUNK], z_all[start : start + CHUNK]
        p, zm = _chunk(sim, x, z, comps, log_weights, min_precision, draws, inflate, gen)
        probs.append(p)
        z_mean.append(zm)
    return torch.cat(probs).numpy(), torch.cat(z_mean).numpy()


def _chunk(
    sim: Any,
    x: torch.Tensor,
    z: torch.Tensor,
    comps: torch.distributions.MultivariateNormal,
    log_weights: torch.Tensor,
    min_precision: float,
    draws: int,
    inflate: float,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    f, sigma2 = sim.decoder, float(sim.noise_std) ** 2
    n, m = z.shape
    jac = torch.func.vmap(torch.func.jacrev(lambda v: f(v[None])[0]))(z).detach()  # (n, d, m)
    precision = jac.transpose(1, 2) @ jac / sigma2
    precision = precision + min_precision * torch.eye(m, dtype=z.dtype)
    cov = inflate * torch.linalg.inv(precision)
    chol = torch.linalg.cholesky(cov)
    eps = torch.randn(draws, n, m, generator=gen, dtype=z.dtype)
    sample = z + torch.einsum("nij,knj->kni", chol, eps)  # (K, n, m)
    # log q of the proposal, constants that cancel in the normalisation dropped
    log_q = -0.5 * eps.square().sum(-1) - torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    with torch.no_grad():
        mean = f(sample.reshape(-1, m)).reshape(draws, n, -1)
    log_lik = -0.5 * (x - mean).square().sum(-1) / sigma2
    log_joint = comps.log_prob(sample.unsqueeze(-2)) + log_weights  # (K, n, J)
    log_w = (log_lik - log_q).unsqueeze(-1) + log_joint
    probs = torch.softmax(torch.logsumexp(log_w, dim=0), dim=1)
    w = torch.softmax(torch.logsumexp(log_w, dim=2), dim=0)  # (K, n)
    return probs, (w.unsqueeze(-1) * sample).sum(0)


def facet_marginals(probs: np.ndarray, facets: tuple[int, ...]) -> list[np.ndarray]:
    """P(U_i | x) for each facet i from P(U | x) over the configurations in row-major order."""
    table = probs.reshape(len(probs), *facets)
    k = len(facets)
    return [table.sum(axis=tuple(a + 1 for a in range(k) if a != i)) for i in range(k)]


def bayes_predictions(sim: Any, probs: np.ndarray) -> np.ndarray:
    """The Bayes classifier: argmax per point, per facet (n, k) for multivariate U."""
    if sim.facets is None:
        return probs.argmax(1)
    return np.stack([p.argmax(1) for p in facet_marginals(probs, sim.facets)], axis=1)

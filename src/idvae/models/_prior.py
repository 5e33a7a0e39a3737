"""The torch Gaussian-mixture prior every model builds on, and its one initialisation.

``GaussianMixturePrior`` is p(z) = sum_c pi_c N(z; mu_c, Sigma_c) with Sigma_c diagonal or
full: VaDE's prior, and each facet of MFCVAE's faceted product
(``idvae.models.mfcvae.FacetedMixturePrior``, one ``GaussianMixturePrior`` per facet).
iVAE's conditional prior has means and variances that are functions of u, so it is not a
mixture module; it shares the Gaussian pieces here: ``diagonal_log_density``,
``diagonal_gaussian_kl`` and ``sample_mixture``.

Parameterisation: mixing weights are ``log_softmax(logits)``; a diagonal variance is
``softplus(raw) + min_variance``; a full covariance is L L' with L lower triangular whose
diagonal is ``softplus(raw) + sqrt(min_variance)``. The floor ``min_variance`` defaults to
``MIN_PRIOR_VARIANCE``. All densities are in log space.

Initialisation: ``fit_mixture`` fits a seeded scikit-learn ``GaussianMixture`` to encoder
means and returns an ``idvae.GMM``, which ``GaussianMixturePrior.load_gmm`` copies into the
module (``subsample_rows`` bounds the points it sees to ``GMM_INIT_SAMPLES``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import nn
from torch.nn import functional as F

from idvae.mixture import GMM, LOG_2PI
from idvae.models._layers import MIN_PRIOR_VARIANCE, inverse_softplus

__all__ = [
    "GMM_INIT_SAMPLES",
    "MIN_MIXTURE_WEIGHT",
    "GaussianMixturePrior",
    "diagonal_gaussian_kl",
    "diagonal_log_density",
    "fit_mixture",
    "posterior_moments",
    "sample_mixture",
    "subsample_rows",
]

# the GaussianMixture that initialises (or refits) a prior is fitted to the encoder means of at most
# this many training points (a seeded random subset of larger data): on 70,000 MNIST images
# the full set cost ~5 s of encoding and EM before the first epoch, and tens of thousands
# of points pin down 10-50 components as well
GMM_INIT_SAMPLES = 20_000
# the smallest weight of a fitted initial mixture (a component that got no points keeps it)
MIN_MIXTURE_WEIGHT = 1e-6


def diagonal_log_density(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag var), summed over the last axis (arguments broadcast).

    Args:
        z, mean, var: tensors of shape (..., m), var > 0.

    Returns:
        Tensor of the broadcast shape without the last axis.
    """
    return -0.5 * torch.sum((z - mean) ** 2 / var + torch.log(var) + LOG_2PI, dim=-1)


def diagonal_gaussian_kl(
    mean_q: torch.Tensor, var_q: torch.Tensor, mean_p: torch.Tensor, var_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_q, diag var_q) || N(mean_p, diag var_p)), summed over the last axis.

    0.5 sum_d [log var_p - log var_q + (var_q + (mean_q - mean_p)^2) / var_p - 1].

    Args:
        mean_q, var_q, mean_p, var_p: tensors of shape (..., m) (broadcastable), variances > 0.

    Returns:
        Tensor of the broadcast shape without the last axis.
    """
    return 0.5 * torch.sum(
        torch.log(var_p) - torch.log(var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0,
        dim=-1,
    )


def sample_mixture(
    weights: torch.Tensor,
    means: torch.Tensor,
    scales: torch.Tensor,
    n: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws of a Gaussian mixture and their components.

    Args:
        weights: tensor of shape (J,), nonnegative (need not sum to 1).
        means: tensor of shape (J, m).
        scales: standard deviations of shape (J, m) (diagonal covariances) or lower
            Cholesky factors of shape (J, m, m).
        n: the number of draws.
        generator: draws the components first, then the standard normal noise.

    Returns:
        (z, c): z of shape (n, m), c of shape (n,).
    """
    c = torch.multinomial(weights, n, replacement=True, generator=generator)
    eps = torch.randn(
        (n, means.shape[1]), generator=generator, device=means.device, dtype=means.dtype
    )
    if scales.dim() == 2:
        return means[c] + scales[c] * eps, c
    return means[c] + torch.einsum("nij,nj->ni", scales[c], eps), c


class GaussianMixturePrior(nn.Module):
    """p(z) = sum_c pi_c N(z; mu_c, Sigma_c) with learned logits, means and covariances.

    Args:
        n_components: J.
        latent_dim: m.
        covariance_type: ``"diag"`` or ``"full"``.
        min_variance: the floor of every variance (of the diagonal of L squared for
            ``"full"``).
        trainable: hold the parameters as ``nn.Parameter`` (trained by gradient) or, when
            False, as buffers (set in closed form, e.g. by ``em_step``).

    The parameters (or buffers) are ``logits`` (J,), ``means`` (J, m) and ``raw_scale``,
    (J, m) for ``"diag"``, (J, m, m) for ``"full"``. Every component starts at unit
    covariance with a standard normal mean, so the components differ before they are
    initialised (by ``load_gmm``).
    """

    def __init__(
        self,
        n_components: int,
        latent_dim: int,
        covariance_type: str = "diag",
        *,
        min_variance: float = MIN_PRIOR_VARIANCE,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        if covariance_type not in ("diag", "full"):
            raise ValueError(
                f"Expected covariance_type 'diag' or 'full' but got {covariance_type!r}"
            )
        self.n_components, self.latent_dim = int(n_components), int(latent_dim)
        self.covariance_type = covariance_type
        self.min_variance = float(min_variance)
        logits = torch.zeros(self.n_components)
        means = torch.randn(self.n_components, self.latent_dim)
        if covariance_type == "diag":
            one = inverse_softplus(torch.tensor(1.0 - self.min_variance))
            raw = one.expand(self.n_components, self.latent_dim).clone()
        else:
            one = inverse_softplus(torch.tensor(1.0 - self.min_variance**0.5))
            raw = torch.zeros(self.n_components, self.latent_dim, self.latent_dim)
            raw.diagonal(dim1=-2, dim2=-1).fill_(float(one))
        for name, value in (("logits", logits), ("means", means), ("raw_scale", raw)):
            if trainable:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    # -- parameters -----------------------------------------------------------------------
    def log_weights(self) -> torch.Tensor:
        """log pi, shape (J,)."""
        return F.log_softmax(self.logits, dim=0)

    def weights(self) -> torch.Tensor:
        """pi, shape (J,)."""
        return torch.softmax(self.logits, dim=0)

    def variances(self) -> torch.Tensor:
        """Diagonal variances, shape (J, m) (``"diag"`` only)."""
        return F.softplus(self.raw_scale) + self.min_variance

    def cholesky(self) -> torch.Tensor:
        """Lower Cholesky factors L_c of Sigma_c, shape (J, m, m)."""
        if self.covariance_type == "diag":
            return torch.diag_embed(torch.sqrt(self.variances()))
        floor = self.min_variance**0.5
        diag = F.softplus(self.raw_scale.diagonal(dim1=-2, dim2=-1)) + floor
        return torch.tril(self.raw_scale, diagonal=-1) + torch.diag_embed(diag)

    def covariances(self) -> torch.Tensor:
        """Sigma_c, shape (J, m, m)."""
        chol = self.cholesky()
        return chol @ chol.transpose(-1, -2)

    # -- densities ------------------------------------------------------------------------
    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mu_c, Sigma_c), shape (n, J); z has shape (n, m)."""
        if self.covariance_type == "diag":
            return diagonal_log_density(z[:, None, :], self.means[None], self.variances())
        return self.expected_log_density(z, 0.0)

    def expected_log_density(self, mean: torch.Tensor, var: torch.Tensor | float) -> torch.Tensor:
        """E_{z ~ N(mean, diag var)} log N(z; mu_c, Sigma_c), shape (n, J).

        The closed form -1/2 [m log 2 pi + log|Sigma_c| + tr(Sigma_c^-1 diag var)
        + (mean - mu_c)' Sigma_c^-1 (mean - mu_c)]; with var = 0 it is log N(mean; mu_c,
        Sigma_c).

        Args:
            mean: array of shape (n, m).
            var: array of shape (n, m), or a scalar 0.
        """
        diff = mean[:, None, :] - self.means[None, :, :]  # (n, J, m)
        m = self.latent_dim
        if self.covariance_type == "diag":
            s2 = self.variances()  # (J, m)
            quad = (diff**2 / s2).sum(-1)
            log_det = torch.log(s2).sum(-1)
            trace = var @ (1.0 / s2).T if torch.is_tensor(var) else 0.0
        else:
            chol = self.cholesky()
            eye = torch.eye(m, device=chol.device, dtype=chol.dtype).expand_as(chol)
            chol_inv = torch.linalg.solve_triangular(chol, eye, upper=False)  # (J, m, m)
            y = torch.einsum("jid,njd->nji", chol_inv, diff)
            quad = (y**2).sum(-1)
            log_det = 2.0 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
            # tr(Sigma^-1 diag var) = sum_d var_d sum_i (L^-1)_{id}^2
            trace = var @ (chol_inv**2).sum(1).T if torch.is_tensor(var) else 0.0
        return -0.5 * (m * LOG_2PI + log_det[None, :] + trace + quad)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log pi_c + log N(z; mu_c, Sigma_c), shape (n, J)."""
        return self.log_weights()[None] + self.log_density(z)

    def log_responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        """log p(c | z), shape (n, J)."""
        return F.log_softmax(self.log_joint(z), dim=1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), shape (n,)."""
        return torch.logsumexp(self.log_joint(z), dim=1)

    def kl(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """KL(N(mean, diag var) || N(mu_c, diag s2_c)) for every c, shape (n, J) (``"diag"``)."""
        return diagonal_gaussian_kl(
            mean[:, None, :], var[:, None, :], self.means[None], self.variances()[None]
        )

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws z (n, m) and their components c (n,)."""
        if self.covariance_type == "diag":
            scales = self.variances().sqrt()
        else:
            scales = self.cholesky()
        return sample_mixture(self.weights(), self.means, scales, n, generator)

    # -- conversions ----------------------------------------------------------------------
    @torch.no_grad()
    def to_gmm(self) -> GMM:
        """The prior as a float64 ``idvae.GMM``."""
        weights = self.log_weights().double().exp().cpu().numpy()
        if self.covariance_type == "diag":
            covariances = self.variances().double().cpu().numpy()
        else:
            chol = self.cholesky().double()
            covariances = (chol @ chol.transpose(-1, -2)).cpu().numpy()
        return GMM(weights / weights.sum(), self.means.double().cpu().numpy(), covariances)

    @torch.no_grad()
    def load_gmm(self, gmm: GMM) -> None:
        """Set the parameters to a mixture with J components in m dimensions.

        Variances (diagonals of L squared for ``"full"``) are raised to twice the floor.
        """
        k, d = self.n_components, self.latent_dim
        if gmm.n_components != k or gmm.dim != d:
            raise ValueError(
                f"Expected a GMM with {k} components in {d} dimensions but got "
                f"{gmm.n_components} components in {gmm.dim} dimensions"
            )
        dtype, device = self.logits.dtype, self.logits.device
        self.logits.copy_(torch.as_tensor(np.log(gmm.weights), dtype=dtype, device=device))
        self.means.copy_(torch.as_tensor(np.array(gmm.means), dtype=dtype, device=device))
        covs = torch.as_tensor(np.array(gmm.covariances), dtype=torch.float64)
        if self.covariance_type == "diag":
            var = covs.diagonal(dim1=-2, dim2=-1).clamp_min(2 * self.min_variance)
            raw = inverse_softplus(var - self.min_variance)
        else:
            floor = self.min_variance**0.5
            chol = torch.linalg.cholesky(covs)
            diag = chol.diagonal(dim1=-2, dim2=-1).clamp_min(2 * floor)
            raw = torch.tril(chol, diagonal=-1) + torch.diag_embed(inverse_softplus(diag - floor))
        self.raw_scale.copy_(raw.to(dtype=dtype, device=device))

    @torch.no_grad()
    def em_step(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Set the mixture to the maximiser of the ELBO's prior terms given q (``"diag"``).

        With q(z | x_n) = N(mean_n, diag var_n) and q(c | x_n) = p(c | z = mean_n)
        (responsibilities r_nk at the posterior means), sum_n E_q[log p(c) + log p(z | c)]
        is maximised in closed form by pi_k = mean_n r_nk, mu_k = sum_n r_nk mean_n /
        sum_n r_nk and s2_k = sum_n r_nk (var_n + (mean_n - mu_k)^2) / sum_n r_nk.

        Args:
            mean: tensor of shape (n, m).
            var: tensor of shape (n, m).
        """
        r = self.log_responsibilities(mean).exp().double()  # (n, J)
        mass = r.sum(dim=0).clamp_min(1e-10)
        mu = (r.T @ mean.double()) / mass[:, None]
        second = r.T @ (var.double() + mean.double() ** 2) / mass[:, None]
        s2 = (second - mu**2).clamp_min(2 * self.min_variance)
        weights = (mass / mass.sum()).clamp_min(1e-8)
        self.logits.copy_(torch.log(weights / weights.sum()).to(self.logits.dtype))
        self.means.copy_(mu.to(self.means.dtype))
        self.raw_scale.copy_(inverse_softplus(s2 - self.min_variance).to(self.raw_scale.dtype))


def subsample_rows(n_samples: int, seed: int, limit: int) -> np.ndarray | None:
    """Sorted indices of ``limit`` rows drawn without replacement from ``seed``, or None.

    None when ``n_samples <= limit``: every row is used.
    """
    if n_samples <= limit:
        return None
    rows = np.random.default_rng(seed).choice(n_samples, limit, replace=False)
    return np.sort(rows)


def fit_mixture(
    z: np.ndarray,
    n_components: int,
    covariance_type: str,
    *,
    n_init: int,
    seed: int,
    start: GMM | None = None,
) -> GMM:
    """A seeded scikit-learn ``GaussianMixture`` fitted to latents z, as an ``idvae.GMM``.

    The regularisation of the covariances scales with the spread of z; weights are raised
    to ``MIN_MIXTURE_WEIGHT`` so that a component that got no points stays a component.

    Args:
        z: array of shape (n, m).
        n_components: J.
        covariance_type: ``"diag"`` or ``"full"``.
        n_init: EM restarts.
        seed: the ``random_state`` of the ``GaussianMixture``.
        start: a mixture with J components to start EM from (its weights, means and
            covariances) instead of seeded k-means starts; then ``n_init`` must be 1.
    """
    initial: dict[str, Any] = {}
    if start is not None:
        if n_init != 1 or start.n_components != n_components:
            raise ValueError(
                f"Expected n_init=1 and a start with {n_components} components but got "
                f"n_init={n_init} and {start.n_components}"
            )
        precisions = np.linalg.inv(start.covariances)
        if covariance_type == "diag":
            precisions = np.diagonal(precisions, axis1=1, axis2=2)
        initial = {
            "weights_init": start.weights,
            "means_init": start.means,
            "precisions_init": precisions,
        }
    gmm = GaussianMixture(
        n_components,
        covariance_type=covariance_type,
        n_init=n_init,
        reg_covar=1e-6 * max(float(z.var()), 1e-12),
        random_state=seed,
        **initial,
    ).fit(z)
    prior = GMM.from_sklearn(gmm)
    weights = np.maximum(prior.weights, MIN_MIXTURE_WEIGHT)
    return GMM(weights / weights.sum(), prior.means, prior.covariances)


def posterior_moments(
    resp: np.ndarray, z: np.ndarray, var: np.ndarray | None, *, diagonal: bool
) -> GMM:
    """The mixture that the responsibilities ``resp`` give the posteriors q(z | x_n) =
    N(z_n, diag var_n): weights the mean responsibilities, means and covariances the
    responsibility-weighted moments of the z_n plus the weighted mean posterior variance
    (the maximiser of the ELBO's prior terms for that clustering, as ``em_step``).
    Variances are floored at 1e-3 of z's per coordinate, weights at 1e-6.

    Args:
        resp: array (n, J), rows summing to 1.
        z: array (n, m), the posterior means.
        var: array (n, m), the posterior variances, or None (points).
        diagonal: diagonal covariances (else full).
    """
    w = resp.sum(axis=0) + 1e-12
    mu = (resp.T @ z) / w[:, None]
    floor = 1e-3 * z.var(axis=0)
    extra = 0.0 if var is None else (resp.T @ var) / w[:, None]
    if diagonal:
        spread = (resp.T @ z**2) / w[:, None] - mu**2 + extra
        covariances = np.maximum(spread, floor)
    else:
        second = np.einsum("nj,ni,nk->jik", resp, z, z) / w[:, None, None]
        covariances = second - np.einsum("ji,jk->jik", mu, mu)
        idx = np.arange(z.shape[1])
        covariances[:, idx, idx] = np.maximum(covariances[:, idx, idx] + extra, floor)
    weights = np.maximum(w / w.sum(), 1e-6)
    return GMM(weights / weights.sum(), mu, covariances)

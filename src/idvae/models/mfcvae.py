"""MFCVAE: a VAE whose latent space is split into facets, each with its own mixture prior.

Multi-Facet Clustering VAE (Falck et al., 2021), eq. (5) of the paper:

    p(x, z, c) = p(x | z) prod_i p(z_i | c_i) p(c_i),    z_i | c_i ~ N(mu_{c_i}, diag s2_{c_i}),

where z = (z_1, ..., z_k) is the concatenation of k latent blocks ("facets") and c_i is a
categorical variable with K_i states. It is model (3) with a multivariate hidden state
U = (c_1, ..., c_k) of independent coordinates and ne(U_i) = block i, so it meets (P3) and
Thm 3.3(c) applies: P(U) and P(Z) are identifiable up to permutation, scaling and
translation. The joint law of z is a Gaussian mixture with J = prod_i K_i components
(``FacetedMixturePrior.to_gmm``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from idvae.mixture import GMM

__all__ = [
    "FacetedMixturePrior",
    "check_facets",
    "fade_in_weights",
    "joint_gmm_from_facets",
]

_LOG_2PI = math.log(2.0 * math.pi)
MIN_VARIANCE = 1e-4


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y, for y > 0 (stable for large y)."""
    return y + torch.log(-torch.expm1(-y))


def check_facets(
    facet_dims: object, facet_components: object, n_features: int | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate facet sizes; return them as tuples of ints.

    Args:
        facet_dims: sequence of k positive ints, the latent dimension of each facet.
        facet_components: sequence of k positive ints, the mixture size K_i of each facet.
        n_features: when given, sum(facet_dims) must not exceed it (Remark 3.3: the decoder
            must be able to be injective, so the latent dimension is at most the observed one).
    """

    def as_ints(value: object, name: str) -> tuple[int, ...]:
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            value = (value,)
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
            raise TypeError(
                f"Expected {name} to be a sequence of positive ints but got {type(value).__name__}"
            )
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise TypeError(
                    f"Expected {name} to hold ints but got an element of type {type(v).__name__}"
                )
            if v < 1:
                raise ValueError(f"Expected every entry of {name} >= 1 but got {list(value)}")
            out.append(int(v))
        if not out:
            raise ValueError(f"Expected at least one facet in {name} but got an empty sequence")
        return tuple(out)

    dims = as_ints(facet_dims, "facet_dims")
    comps = as_ints(facet_components, "facet_components")
    if len(dims) != len(comps):
        raise ValueError(
            "Expected facet_dims and facet_components of the same length (one entry per "
            f"facet) but got {len(dims)} and {len(comps)}"
        )
    if n_features is not None and sum(dims) > n_features:
        raise ValueError(
            f"Expected sum(facet_dims) <= n_features (Remark 3.3: the latent dimension may not "
            f"exceed the observed one) but got sum(facet_dims) = {sum(dims)}, "
            f"n_features = {n_features}"
        )
    return dims, comps


def fade_in_weights(progress: float, n_facets: int, fade_in_epochs: float) -> np.ndarray:
    """Weights in [0, 1] of each facet under progressive training (Falck et al., 2021).

    Facet 0 is on from the start; facet i >= 1 is introduced once facet i - 1 is fully on:
    its weight ramps linearly from 0 to 1 during epochs [i F, (i + 1) F), F = fade_in_epochs.
    The weight multiplies the facet's latent block at the decoder input and its KL terms, so
    an inactive facet neither shapes the reconstruction nor pays for its posterior.

    Args:
        progress: training time in (fractional) epochs since the start of the ELBO phase.
        n_facets: k.
        fade_in_epochs: F > 0, the length of each ramp in epochs.

    Returns:
        Array of shape (n_facets,).
    """
    if fade_in_epochs <= 0:
        return np.ones(n_facets)
    starts = np.arange(n_facets, dtype=np.float64) * fade_in_epochs
    weights = np.clip((progress - starts) / fade_in_epochs, 0.0, 1.0)
    weights[0] = 1.0
    return weights


def joint_gmm_from_facets(facets: Sequence[GMM]) -> GMM:
    """The law of the concatenation (z_1, ..., z_k) of independent mixtures z_i ~ facets[i].

    Component j of the result is the tuple (c_1, ..., c_k) with
    ``j = np.ravel_multi_index((c_1, ..., c_k), (K_1, ..., K_k))`` (row-major); its weight is
    prod_i pi_{i, c_i}, its mean the concatenation of the facet means and its covariance the
    block-diagonal matrix of the facet covariances.
    """
    sizes = tuple(g.n_components for g in facets)
    dims = [g.dim for g in facets]
    m = sum(dims)
    index = np.indices(sizes).reshape(len(sizes), -1)  # (k, J), row-major order
    n_joint = index.shape[1]
    log_w = np.zeros(n_joint)
    means = np.empty((n_joint, m))
    covs = np.zeros((n_joint, m, m))
    start = 0
    for i, g in enumerate(facets):
        c = index[i]
        stop = start + dims[i]
        log_w += np.log(g.weights[c])
        means[:, start:stop] = g.means[c]
        covs[:, start:stop, start:stop] = g.covariances[c]
        start = stop
    weights = np.exp(log_w - log_w.max())
    return GMM(weights / weights.sum(), means, covs)


class FacetedMixturePrior(nn.Module):
    """The prior of MFCVAE: independent diagonal Gaussian mixtures over k latent blocks.

    Facet i owns the coordinates ``slices[i]`` of z (blocks in order), mixing logits of shape
    (K_i,), means (K_i, d_i) and variances (K_i, d_i). Weights are ``log_softmax(logits)``;
    variances are ``softplus(raw) + min_variance``. All densities are computed in log space.

    Args:
        facet_dims: (d_1, ..., d_k).
        facet_components: (K_1, ..., K_k).
        min_variance: the floor of every prior variance.
    """

    def __init__(
        self,
        facet_dims: Sequence[int],
        facet_components: Sequence[int],
        *,
        min_variance: float = MIN_VARIANCE,
    ) -> None:
        super().__init__()
        dims, comps = check_facets(facet_dims, facet_components)
        self.facet_dims = dims
        self.facet_components = comps
        self.min_variance = float(min_variance)
        self.logits = nn.ParameterList([nn.Parameter(torch.zeros(k)) for k in comps])
        self.means = nn.ParameterList(
            [nn.Parameter(torch.zeros(k, d)) for d, k in zip(dims, comps, strict=True)]
        )
        one = _inverse_softplus(torch.tensor(1.0 - self.min_variance))
        self.raw_variances = nn.ParameterList(
            [nn.Parameter(torch.full((k, d), float(one))) for d, k in zip(dims, comps, strict=True)]
        )
        bounds = np.cumsum((0, *dims))
        self.slices = tuple(
            slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        )

    @property
    def n_facets(self) -> int:
        """k, the number of facets."""
        return len(self.facet_dims)

    @property
    def latent_dim(self) -> int:
        """m = sum(facet_dims)."""
        return sum(self.facet_dims)

    # -- parameters -----------------------------------------------------------------------
    def log_weights(self, i: int) -> torch.Tensor:
        """Tensor of shape (K_i,): log mixing weights of facet i."""
        return F.log_softmax(self.logits[i], dim=0)

    def variances(self, i: int) -> torch.Tensor:
        """Tensor of shape (K_i, d_i): the diagonal variances of facet i's components."""
        return F.softplus(self.raw_variances[i]) + self.min_variance

    # -- densities ------------------------------------------------------------------------
    def facet_component_log_prob(self, z_i: torch.Tensor, i: int) -> torch.Tensor:
        """``log pi_ik + log N(z_i; mu_ik, diag s2_ik)``, tensor of shape (n, K_i).

        Args:
            z_i: tensor of shape (n, d_i), the block of facet i.
            i: the facet.
        """
        var = self.variances(i)  # (K, d)
        diff = z_i[:, None, :] - self.means[i][None]  # (n, K, d)
        log_n = -0.5 * torch.sum(diff**2 / var + torch.log(var) + _LOG_2PI, dim=-1)
        return self.log_weights(i)[None] + log_n

    def log_responsibilities(self, z: torch.Tensor) -> list[torch.Tensor]:
        """``log p(c_i | z_i)`` for every facet: a list of k tensors of shape (n, K_i).

        Args:
            z: tensor of shape (n, m), the concatenated latent.
        """
        return [
            F.log_softmax(self.facet_component_log_prob(z[:, s], i), dim=1)
            for i, s in enumerate(self.slices)
        ]

    def facet_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z_i)`` of each facet, tensor of shape (n, k)."""
        return torch.stack(
            [
                torch.logsumexp(self.facet_component_log_prob(z[:, s], i), dim=1)
                for i, s in enumerate(self.slices)
            ],
            dim=1,
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z) = sum_i log p(z_i)`` (facets independent), tensor of shape (n,)."""
        return self.facet_log_prob(z).sum(dim=1)

    # -- ELBO terms -----------------------------------------------------------------------
    def kl_terms(
        self,
        mean: torch.Tensor,
        var: torch.Tensor,
        log_resp: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two KL terms of each facet's part of the negative ELBO.

        With q(z | x) = N(mean, diag var) and q(c_i | x) = exp(log_resp[i]):

        - ``kl_z[:, i] = E_{q(c_i|x)} KL(q(z_i | x) || p(z_i | c_i))``, in closed form for
          diagonal Gaussians: 0.5 sum_d [log s2 - log v + (v + (mu - m)^2) / s2 - 1];
        - ``kl_c[:, i] = KL(q(c_i | x) || p(c_i))`` = sum_k q_k (log q_k - log pi_k).

        Args:
            mean: tensor of shape (n, m).
            var: tensor of shape (n, m), positive.
            log_resp: k tensors of shape (n, K_i).

        Returns:
            (kl_z, kl_c), two tensors of shape (n, k).
        """
        kl_z, kl_c = [], []
        for i, s in enumerate(self.slices):
            mu_q, v_q = mean[:, s][:, None, :], var[:, s][:, None, :]  # (n, 1, d)
            v_p = self.variances(i)[None]  # (1, K, d)
            gauss_kl = 0.5 * torch.sum(
                torch.log(v_p)
                - torch.log(v_q)
                + (v_q + (mu_q - self.means[i][None]) ** 2) / v_p
                - 1.0,
                dim=-1,
            )  # (n, K)
            resp = log_resp[i].exp()
            kl_z.append(torch.sum(resp * gauss_kl, dim=1))
            kl_c.append(torch.sum(resp * (log_resp[i] - self.log_weights(i)[None]), dim=1))
        return torch.stack(kl_z, dim=1), torch.stack(kl_c, dim=1)

    # -- conversions ----------------------------------------------------------------------
    @torch.no_grad()
    def set_facet(self, i: int, gmm: GMM) -> None:
        """Set facet i's parameters from a diagonal ``GMM`` with K_i components in d_i dims."""
        k, d = self.facet_components[i], self.facet_dims[i]
        if gmm.n_components != k or gmm.dim != d:
            raise ValueError(
                f"Expected a GMM with {k} components in {d} dimensions for facet {i} but got "
                f"{gmm.n_components} components in {gmm.dim} dimensions"
            )
        dev, dt = self.means[i].device, self.means[i].dtype
        var = np.diagonal(gmm.covariances, axis1=1, axis2=2)
        var = np.maximum(var - self.min_variance, 1e-8)
        self.logits[i].copy_(torch.tensor(np.log(gmm.weights), device=dev, dtype=dt))
        self.means[i].copy_(torch.tensor(gmm.means, device=dev, dtype=dt))
        self.raw_variances[i].copy_(
            _inverse_softplus(torch.tensor(var, dtype=torch.float64)).to(device=dev, dtype=dt)
        )

    @torch.no_grad()
    def facet_gmms(self) -> list[GMM]:
        """The k facet mixtures as numpy ``GMM``s (diagonal covariances, float64)."""
        out = []
        for i in range(self.n_facets):
            weights = self.log_weights(i).double().exp().cpu().numpy()
            out.append(
                GMM(
                    weights / weights.sum(),
                    self.means[i].double().cpu().numpy(),
                    self.variances(i).double().cpu().numpy(),
                )
            )
        return out

    def to_gmm(self) -> GMM:
        """The joint law of z as one ``GMM`` with prod_i K_i components (row-major order)."""
        return joint_gmm_from_facets(self.facet_gmms())

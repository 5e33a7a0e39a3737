"""The faceted prior of MFCVAE: independent diagonal Gaussian mixtures over latent blocks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from idvae.mixture import GMM, LOG_2PI
from idvae.models._base import MIN_PRIOR_VARIANCE, inverse_softplus

__all__ = [
    "FacetedMixturePrior",
    "check_facets",
    "fade_in_weights",
    "joint_gmm_from_facets",
]


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


class _BufferList(nn.Module):
    """Tensors registered as buffers ``"0"``, ``"1"``, ..., indexable like a ParameterList."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.size = len(tensors)
        for i, t in enumerate(tensors):
            self.register_buffer(str(i), t)

    def __getitem__(self, i: int) -> torch.Tensor:
        return getattr(self, str(i))

    def __len__(self) -> int:
        return self.size


class FacetedMixturePrior(nn.Module):
    """The prior of MFCVAE: independent diagonal Gaussian mixtures over k latent blocks.

    Facet i owns the coordinates ``slices[i]`` of z (blocks in order), mixing logits of shape
    (K_i,), means (K_i, d_i) and variances (K_i, d_i). Weights are ``log_softmax(logits)``;
    variances are ``softplus(raw) + min_variance``. All densities are computed in log space.

    Args:
        facet_dims: (d_1, ..., d_k).
        facet_components: (K_1, ..., K_k).
        min_variance: the floor of every prior variance.
        trainable: hold the parameters as ``nn.Parameter`` (trained by gradient) or, when
            False, as buffers (set in closed form, e.g. by ``em_update``).
    """

    def __init__(
        self,
        facet_dims: Sequence[int],
        facet_components: Sequence[int],
        *,
        min_variance: float = MIN_PRIOR_VARIANCE,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        dims, comps = check_facets(facet_dims, facet_components)
        self.facet_dims = dims
        self.facet_components = comps
        self.min_variance = float(min_variance)
        one = float(inverse_softplus(torch.tensor(1.0 - self.min_variance)))
        pairs = list(zip(dims, comps, strict=True))
        # random means (like VaDE's) so the components differ before they are initialised
        logits = [torch.zeros(k) for k in comps]
        means = [torch.randn(k, d) for d, k in pairs]
        raw = [torch.full((k, d), one) for d, k in pairs]
        if trainable:
            self.logits = nn.ParameterList([nn.Parameter(t) for t in logits])
            self.means = nn.ParameterList([nn.Parameter(t) for t in means])
            self.raw_variances = nn.ParameterList([nn.Parameter(t) for t in raw])
        else:
            self.logits, self.means = _BufferList(logits), _BufferList(means)
            self.raw_variances = _BufferList(raw)
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
        log_n = -0.5 * torch.sum(diff**2 / var + torch.log(var) + LOG_2PI, dim=-1)
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

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws: z of shape (n, m) and the facet states c of shape (n, k)."""
        zs, cs = [], []
        for i in range(self.n_facets):
            weights = self.log_weights(i).exp()
            c = torch.multinomial(weights, n, replacement=True, generator=generator)
            eps = torch.randn(
                (n, self.facet_dims[i]), generator=generator, device=weights.device,
                dtype=weights.dtype,
            )  # fmt: skip
            zs.append(self.means[i][c] + self.variances(i)[c].sqrt() * eps)
            cs.append(c)
        return torch.cat(zs, dim=1), torch.stack(cs, dim=1)

    @torch.no_grad()
    def em_update(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Set every facet's mixture to the maximiser of the ELBO's prior terms given q.

        With q(z | x_n) = N(mean_n, diag var_n) and q(c_i | x_n) = p(c_i | z_i = mean_n)
        (responsibilities r_nk at the posterior means), the prior terms
        sum_n E_q[log p(c_i) + log p(z_i | c_i)] are maximised in closed form by
        pi_k = mean_n r_nk, mu_k = sum_n r_nk mean_n / sum_n r_nk and
        s2_k = sum_n r_nk (var_n + (mean_n - mu_k)^2) / sum_n r_nk: one EM step.

        Args:
            mean: tensor of shape (n, m).
            var: tensor of shape (n, m).
        """
        log_resp = self.log_responsibilities(mean)
        for i, s in enumerate(self.slices):
            r = log_resp[i].exp().double()  # (n, K)
            mass = r.sum(dim=0).clamp_min(1e-10)
            mu = (r.T @ mean[:, s].double()) / mass[:, None]
            second = r.T @ (var[:, s].double() + mean[:, s].double() ** 2) / mass[:, None]
            s2 = (second - mu**2).clamp_min(2 * self.min_variance)
            weights = (mass / mass.sum()).clamp_min(1e-8)
            self.logits[i].copy_(torch.log(weights / weights.sum()).to(self.logits[i].dtype))
            self.means[i].copy_(mu.to(self.means[i].dtype))
            raw = inverse_softplus(s2 - self.min_variance)
            self.raw_variances[i].copy_(raw.to(self.raw_variances[i].dtype))

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
            inverse_softplus(torch.tensor(var, dtype=torch.float64)).to(device=dev, dtype=dt)
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

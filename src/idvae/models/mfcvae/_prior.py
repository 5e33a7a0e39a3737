"""The faceted prior of MFCVAE: independent diagonal Gaussian mixtures over latent blocks.

Each facet is an ``idvae.models._prior.GaussianMixturePrior``; this module holds the product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from idvae.mixture import GMM
from idvae.models._layers import MIN_PRIOR_VARIANCE
from idvae.models._prior import GaussianMixturePrior

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


class FacetedMixturePrior(nn.Module):
    """The prior of MFCVAE: independent diagonal Gaussian mixtures over k latent blocks.

    Facet i is a diagonal ``GaussianMixturePrior`` (``facets[i]``: K_i components in d_i
    dimensions) over the coordinates ``slices[i]`` of z (blocks in order); p(z) is the
    product of the facets' densities.

    Args:
        facet_dims: (d_1, ..., d_k).
        facet_components: (K_1, ..., K_k).
        min_variance: the floor of every prior variance.
        trainable: hold the parameters as ``nn.Parameter`` (trained by gradient) or, when
            False, as buffers (set in closed form, e.g. by ``em_update``).

    State-dict keys are ``facets.<i>.logits``, ``facets.<i>.means`` and
    ``facets.<i>.raw_scale``; the keys of models saved before the facets were
    ``GaussianMixturePrior``s (``logits.<i>``, ``means.<i>``, ``raw_variances.<i>``) are
    renamed on loading.
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
        self.facets = nn.ModuleList(
            GaussianMixturePrior(k, d, "diag", min_variance=self.min_variance, trainable=trainable)
            for d, k in zip(dims, comps, strict=True)
        )
        bounds = np.cumsum((0, *dims))
        self.slices = tuple(
            slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        )
        self.register_load_state_dict_pre_hook(_rename_flat_keys)

    @property
    def n_facets(self) -> int:
        """k, the number of facets."""
        return len(self.facet_dims)

    @property
    def latent_dim(self) -> int:
        """m = sum(facet_dims)."""
        return sum(self.facet_dims)

    # -- densities ------------------------------------------------------------------------
    def log_responsibilities(self, z: torch.Tensor) -> list[torch.Tensor]:
        """``log p(c_i | z_i)`` for every facet: a list of k tensors of shape (n, K_i).

        Args:
            z: tensor of shape (n, m), the concatenated latent.
        """
        pairs = zip(self.facets, self.slices, strict=True)
        return [facet.log_responsibilities(z[:, s]) for facet, s in pairs]

    def facet_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z_i)`` of each facet, tensor of shape (n, k)."""
        pairs = zip(self.facets, self.slices, strict=True)
        return torch.stack([facet.log_prob(z[:, s]) for facet, s in pairs], dim=1)

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
        for facet, s, log_r in zip(self.facets, self.slices, log_resp, strict=True):
            resp = log_r.exp()
            kl_z.append(torch.sum(resp * facet.kl(mean[:, s], var[:, s]), dim=1))
            kl_c.append(torch.sum(resp * (log_r - facet.log_weights()[None]), dim=1))
        return torch.stack(kl_z, dim=1), torch.stack(kl_c, dim=1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws: z of shape (n, m) and the facet states c of shape (n, k)."""
        draws = [f.sample(n, generator) for f in self.facets]
        return torch.cat([z for z, _ in draws], dim=1), torch.stack([c for _, c in draws], 1)

    @torch.no_grad()
    def em_update(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """One closed-form EM step of every facet (``GaussianMixturePrior.em_step``).

        Args:
            mean: tensor of shape (n, m).
            var: tensor of shape (n, m).
        """
        for facet, s in zip(self.facets, self.slices, strict=True):
            facet.em_step(mean[:, s], var[:, s])

    # -- conversions ----------------------------------------------------------------------
    def set_facet(self, i: int, gmm: GMM) -> None:
        """Set facet i's parameters from a ``GMM`` with K_i components in d_i dims."""
        try:
            self.facets[i].load_gmm(gmm)
        except ValueError as error:
            raise ValueError(f"{error} (facet {i})") from None

    def facet_gmms(self) -> list[GMM]:
        """The k facet mixtures as numpy ``GMM``s (diagonal covariances, float64)."""
        return [f.to_gmm() for f in self.facets]

    def to_gmm(self) -> GMM:
        """The joint law of z as one ``GMM`` with prod_i K_i components (row-major order)."""
        return joint_gmm_from_facets(self.facet_gmms())


_FLAT_KEYS = {"logits": "logits", "means": "means", "raw_variances": "raw_scale"}


def _rename_flat_keys(_module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    """Rename ``<prefix>logits.<i>`` (and means, raw_variances) to ``<prefix>facets.<i>.*``."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name, _, index = key[len(prefix) :].partition(".")
        if name in _FLAT_KEYS and index.isdigit():
            state_dict[f"{prefix}facets.{index}.{_FLAT_KEYS[name]}"] = state_dict.pop(key)

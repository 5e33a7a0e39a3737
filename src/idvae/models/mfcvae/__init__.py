"""MFCVAE: a VAE whose latent space is split into facets, each with its own mixture prior.

Multi-Facet Clustering VAE (Falck et al., 2021), eq. (5) of the paper:

    p(x, z, c) = p(x | z) prod_i p(z_i | c_i) p(c_i),    z_i | c_i ~ N(mu_{c_i}, diag s2_{c_i}),

where z = (z_1, ..., z_k) is the concatenation of k latent blocks ("facets") and c_i is a
categorical variable with K_i states. It is model (3) with a multivariate hidden state
U = (c_1, ..., c_k) of independent coordinates and ne(U_i) = block i, so it meets (P3) and
Thm 3.3(c) applies: P(U) and P(Z) are identifiable up to permutation, scaling and
translation. The joint law of z is a Gaussian mixture with J = prod_i K_i components
(``FacetedMixturePrior.to_gmm``).

The package: ``_prior`` (the faceted prior and its joint mixture), ``_factor`` (from one
joint mixture to facets), ``_module`` (the torch module), ``_estimator`` (``MFCVAE``).
"""

from __future__ import annotations

from idvae.models.mfcvae._estimator import EM_MAX_SAMPLES, INITIAL_POSTERIOR_VARIANCE, MFCVAE
from idvae.models.mfcvae._factor import (
    facet_basis,
    faceted_basis,
    factor_grid,
    mixture_grid,
    most_additive,
)
from idvae.models.mfcvae._module import MFCVAEModule
from idvae.models.mfcvae._prior import (
    FacetedMixturePrior,
    check_facets,
    fade_in_weights,
    joint_gmm_from_facets,
)

__all__ = [
    "EM_MAX_SAMPLES",
    "INITIAL_POSTERIOR_VARIANCE",
    "MFCVAE",
    "FacetedMixturePrior",
    "MFCVAEModule",
    "check_facets",
    "facet_basis",
    "faceted_basis",
    "factor_grid",
    "mixture_grid",
    "most_additive",
    "fade_in_weights",
    "joint_gmm_from_facets",
]

"""Exact likelihood of the 1-D toy models of App. J.3.1 and the maximum-likelihood experiment.

Modules: ``_model`` (ToyModel, closed form, NLLs), ``_equivalence`` (symmetries, distances,
(F2)-(F4)), ``_grid`` (grids, ``grid_search``), ``_study`` (``mle_study``, Fig. 1 profiles).

The toy model is model (1) with m = n = 1:

    Z ~ sum_j lambda_j N(mu_j, s_j^2)                       (P1), eq. (2)
    X = f(Z) + eps,   eps ~ N(0, sigma^2)
    f(z) = sum_i alpha_i ReLU(beta_i z + pi_i)             (two neurons in the paper)

``f`` is piecewise affine with at most H + 1 pieces (kinks at z = -pi_i / beta_i). On a
piece f(z) = a z + c, so the density of X is a finite sum of Gaussian-times-Gaussian
integrals over intervals, each a normal-CDF expression (complete the square in z):

    N(z; mu, s^2) N(x; a z + c, sigma^2)
        = N(x; a mu + c, sigma^2 + a^2 s^2) N(z; m(x), v),
    v = s^2 sigma^2 / (sigma^2 + a^2 s^2)
    m(x) = (mu sigma^2 + a s^2 (x - c)) / (sigma^2 + a^2 s^2)

and the z-integral over [l, u] is Phi((u - m)/sqrt v) - Phi((l - m)/sqrt v). Everything is
evaluated in log space, vectorised over x and over a leading batch axis of parameter sets.

On top of the density: the population negative log-likelihood (cross-entropy from a true
model, by trapezoidal quadrature on a uniform lattice, spectrally accurate here because the
densities are Gaussian convolutions), an exhaustive ``grid_search`` as in App. J.3.1,
``equivalent`` (equality up to the model's symmetries, Sec. 2 Definition 2.1) and the
experiment itself, ``mle_study`` (Fig. 1: "is the truth the unique global minimiser?").
"""

from idvae.exact._equivalence import (
    canonical_form,
    density_distance,
    disagreement_mass,
    equivalent,
    injectivity,
    total_variation,
)
from idvae.exact._grid import (
    Grid,
    GridSearchResult,
    default_grid,
    grid_search,
    paper_grid,
    quick_grid,
    simplex_grid,
)
from idvae.exact._model import ToyModel, population_nll, quadrature_nodes, sample_nll
from idvae.exact._study import MLEStudy, mle_study, plot_profiles, profile_curves, profile_nll

__all__ = [
    "Grid",
    "GridSearchResult",
    "MLEStudy",
    "ToyModel",
    "canonical_form",
    "default_grid",
    "density_distance",
    "disagreement_mass",
    "equivalent",
    "grid_search",
    "injectivity",
    "mle_study",
    "paper_grid",
    "plot_profiles",
    "profile_curves",
    "population_nll",
    "profile_nll",
    "quadrature_nodes",
    "quick_grid",
    "sample_nll",
    "simplex_grid",
    "total_variation",
]

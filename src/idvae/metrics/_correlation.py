"""MCC of App. J.1 (strong and weak), with correlation, matching and closed-form CCA helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata
from threadpoolctl import threadpool_limits

from idvae._validation import RandomState, check_array, check_positive_int, check_random_state

__all__ = ["CCA", "cca", "correlation_matrix", "match_coordinates", "mcc"]

Alignment = Literal["none", "cca", "affine"]
Correlation = Literal["pearson", "spearman"]

# Singular values below this fraction of the largest are treated as zero (rank deficiency).
_RANK_RTOL = 1e-10


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Expected {name} to be one of {list(choices)} but got {value!r}")
    return value


def _check_pair(z_a: Any, z_b: Any, min_samples: int = 2) -> tuple[np.ndarray, np.ndarray]:
    z_a = check_array(z_a, "z_a", ndim=2, min_samples=min_samples)
    z_b = check_array(z_b, "z_b", ndim=2, min_samples=min_samples)
    if z_a.shape[0] != z_b.shape[0]:
        raise ValueError(
            "Expected z_a and z_b to hold the same samples (equal numbers of rows) but got "
            f"{z_a.shape[0]} and {z_b.shape[0]} rows"
        )
    return z_a, z_b


# ---------------------------------------------------------------------------------------------
# correlations and matching
# ---------------------------------------------------------------------------------------------
def _ranks(z: np.ndarray) -> np.ndarray:
    """Column-wise ranks 1..n; ties get their average rank (as scipy.stats.spearmanr)."""
    n = z.shape[0]
    order = np.argsort(z, axis=0)
    ranks = np.empty(z.shape)
    np.put_along_axis(ranks, order, np.arange(1.0, n + 1.0)[:, None], axis=0)
    ordered = np.take_along_axis(z, order, axis=0)
    for j in np.flatnonzero(np.any(ordered[1:] == ordered[:-1], axis=0)):
        ranks[:, j] = rankdata(z[:, j])  # only columns with ties need the slower path
    return ranks


def _pearson(z_a: np.ndarray, z_b: np.ndarray) -> np.ndarray:
    """Pearson correlations between the columns of z_a and z_b; constant columns give 0."""
    a = z_a - z_a.mean(axis=0)
    b = z_b - z_b.mean(axis=0)
    norm_a = np.sqrt(np.einsum("ij,ij->j", a, a))
    norm_b = np.sqrt(np.einsum("ij,ij->j", b, b))
    # A column is constant when its spread is at rounding level relative to its magnitude.
    tiny_a = norm_a <= 1e-12 * (np.sqrt(a.shape[0]) * np.abs(z_a).max(axis=0) + 1e-300)
    tiny_b = norm_b <= 1e-12 * (np.sqrt(b.shape[0]) * np.abs(z_b).max(axis=0) + 1e-300)
    norm_a = np.where(tiny_a, np.inf, norm_a)
    norm_b = np.where(tiny_b, np.inf, norm_b)
    corr = (a / norm_a).T @ (b / norm_b)
    return np.clip(corr, -1.0, 1.0)


def _correlation(z_a: np.ndarray, z_b: np.ndarray, correlation: str) -> np.ndarray:
    if correlation == "spearman":
        return _pearson(_ranks(z_a), _ranks(z_b))
    return _pearson(z_a, z_b)


def correlation_matrix(z_a: Any, z_b: Any, *, correlation: Correlation = "pearson") -> np.ndarray:
    """Correlations between every coordinate of ``z_a`` and every coordinate of ``z_b``.

    Args:
        z_a: array of shape (n_samples, m_a).
        z_b: array of shape (n_samples, m_b), the same samples as ``z_a``.
        correlation: ``"pearson"``, or ``"spearman"`` (Pearson on average ranks).

    Returns:
        Array of shape (m_a, m_b) with entries in [-1, 1]. A constant coordinate has
        correlation 0 with everything (rather than NaN).
    """
    correlation = _check_choice(correlation, "correlation", ("pearson", "spearman"))
    z_a, z_b = _check_pair(z_a, z_b)
    return _correlation(z_a, z_b, correlation)


def _hungarian(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the one-to-one matching maximising the summed |corr|."""
    return linear_sum_assignment(np.abs(corr), maximize=True)


def match_coordinates(
    z_a: Any, z_b: Any, *, correlation: Correlation = "pearson"
) -> tuple[np.ndarray, np.ndarray]:
    """Match coordinates of ``z_b`` to those of ``z_a`` (Hungarian algorithm on |corr|).

    Useful to align a learned latent space with another for plotting:
    ``z_b[:, perm] * signs`` has its columns in the order and orientation of ``z_a``.

    Args:
        z_a: array of shape (n_samples, m_a).
        z_b: array of shape (n_samples, m_b).
        correlation: ``"pearson"`` or ``"spearman"``.

    Returns:
        ``(perm, signs)``: int array of shape (m_a,) giving the column of ``z_b`` matched to
        each column of ``z_a`` (-1 where none is left, when m_b < m_a), and float array of
        shape (m_a,) with the sign (+1/-1) of each matched correlation (0 where unmatched).
    """
    corr = correlation_matrix(z_a, z_b, correlation=correlation)
    rows, cols = _hungarian(corr)
    perm = np.full(corr.shape[0], -1, dtype=np.int64)
    signs = np.zeros(corr.shape[0])
    perm[rows] = cols
    signs[rows] = np.where(corr[rows, cols] < 0, -1.0, 1.0)
    return perm, signs


# ---------------------------------------------------------------------------------------------
# alignments: closed-form CCA and least-squares affine
# ---------------------------------------------------------------------------------------------
def _whiten_basis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin SVD of centred data: an orthonormal basis U of its column span and the map
    ``T`` (m, r) with ``x_centred @ T = U`` (rank-deficient directions dropped)."""
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    keep = s > _RANK_RTOL * (s[0] if s.size and s[0] > 0 else 1.0)
    return u[:, keep], vt[keep].T / s[keep]


@dataclass(frozen=True)
class CCA:
    """A fitted canonical correlation analysis (closed form), see :func:`cca`.

    Attributes:
        mean_a: array of shape (m_a,); mean_b: array of shape (m_b,).
        weights_a: array of shape (m_a, k); weights_b: array of shape (m_b, k). The
            canonical variates are ``(z_a - mean_a) @ weights_a`` (unit variance).
        correlations: array of shape (k,), the canonical correlations, non-increasing.
    """

    mean_a: np.ndarray
    mean_b: np.ndarray
    weights_a: np.ndarray
    weights_b: np.ndarray
    correlations: np.ndarray

    def transform(self, z_a: Any, z_b: Any) -> tuple[np.ndarray, np.ndarray]:
        """Canonical variates of new samples; two arrays of shape (n_samples, k)."""
        z_a = check_array(z_a, "z_a", ndim=2, n_features=self.mean_a.shape[0])
        z_b = check_array(z_b, "z_b", ndim=2, n_features=self.mean_b.shape[0])
        return (z_a - self.mean_a) @ self.weights_a, (z_b - self.mean_b) @ self.weights_b


def _fit_cca(z_a: np.ndarray, z_b: np.ndarray, n_components: int | None = None) -> CCA:
    mean_a, mean_b = z_a.mean(axis=0), z_b.mean(axis=0)
    u_a, t_a = _whiten_basis(z_a - mean_a)
    u_b, t_b = _whiten_basis(z_b - mean_b)
    # The canonical correlations are the singular values of U_a^T U_b (whitened
    # cross-covariance); its singular vectors give the canonical directions.
    left, rho, right_t = np.linalg.svd(u_a.T @ u_b, full_matrices=False)
    k = rho.shape[0] if n_components is None else min(n_components, rho.shape[0])
    scale = np.sqrt(z_a.shape[0] - 1.0)  # unit-variance variates (ddof = 1)
    return CCA(
        mean_a=mean_a,
        mean_b=mean_b,
        weights_a=scale * t_a @ left[:, :k],
        weights_b=scale * t_b @ right_t[:k].T,
        correlations=np.clip(rho[:k], 0.0, 1.0),
    )


def cca(z_a: Any, z_b: Any, *, n_components: int | None = None) -> CCA:
    """Canonical correlation analysis in closed form (whitening by SVD, then an SVD).

    With centred data ``Z_a = U_a S_a V_a^T`` and ``Z_b = U_b S_b V_b^T`` (thin SVDs, directions
    with singular value below ``1e-10`` times the largest dropped), the SVD
    ``U_a^T U_b = P diag(rho) Q^T`` gives the canonical correlations ``rho`` and the weights
    ``V_a S_a^{-1} P`` and ``V_b S_b^{-1} Q``. In exact arithmetic the variates are those of
    scikit-learn's iterative ``CCA(n_components=k)`` (up to sign and scale; a test checks it),
    at a fraction of the cost and without a convergence tolerance.

    Args:
        z_a: array of shape (n_samples, m_a).
        z_b: array of shape (n_samples, m_b).
        n_components: the number of canonical pairs k (default: min of the two ranks).

    Returns:
        A fitted :class:`CCA`.
    """
    z_a, z_b = _check_pair(z_a, z_b)
    if n_components is not None:
        n_components = check_positive_int(n_components, "n_components")
    return _fit_cca(z_a, z_b, n_components)


def _fit_affine(z_target: np.ndarray, z_source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``(W, c)`` with ``z_source @ W + c ≈ z_target`` (centred lstsq)."""
    mean_t, mean_s = z_target.mean(axis=0), z_source.mean(axis=0)
    w, *_ = np.linalg.lstsq(z_source - mean_s, z_target - mean_t, rcond=None)
    return w, mean_t - mean_s @ w


# ---------------------------------------------------------------------------------------------
# MCC
# ---------------------------------------------------------------------------------------------
def mcc(
    z_a: Any,
    z_b: Any,
    *,
    alignment: Alignment = "none",
    correlation: Correlation = "pearson",
    out_of_sample: bool = True,
    random_state: RandomState = None,
) -> float:
    """Mean correlation coefficient between two latent representations (App. J.1).

    Definition v1. Let ``z_a`` (n, m_a) and ``z_b`` (n, m_b) encode the same n samples.

    1. Alignment (fitted on the *fit* set):

       * ``"none"`` (strong MCC): ``z_b`` is used as it is;
       * ``"cca"`` (weak MCC): both sides are replaced by their k = min(m_a, m_b) canonical
         variates (closed-form CCA, see :func:`cca`; it equals scikit-learn's ``CCA`` with
         ``n_components = k``, both sides transformed);
       * ``"affine"`` (weak MCC): ``z_b`` is replaced by the least-squares affine map of
         ``z_b`` onto ``z_a``, ``z_b W + c`` of shape (n, m_a). This direction makes the
         metric asymmetric: it asks how well ``z_b`` explains ``z_a``.

    2. Matching (on the fit set): the coordinates of the two (aligned) sides are paired
       one-to-one by the Hungarian algorithm maximising the sum of |corr|; min(m_a', m_b')
       pairs are formed.
    3. Score (on the *score* set): the mean of |corr| over the matched pairs.

    ``corr`` is Pearson's correlation, or with ``correlation="spearman"`` Pearson's
    correlation of average ranks (ranks taken on the set being scored, after alignment). With
    ``out_of_sample=True`` (the paper's protocol, App. J.1) the samples are split at random
    into halves: the first half (n // 2 rows) is the fit set, the rest the score set. With
    ``out_of_sample=False`` both are the whole sample. A constant coordinate has correlation 0;
    with ``"cca"``, canonical pairs missing because a side has rank below min(m_a, m_b) (e.g.
    a collapsed latent coordinate) count as correlation 0, as they do without alignment.

    Args:
        z_a: array of shape (n_samples, m_a).
        z_b: array of shape (n_samples, m_b), the same samples in the same order.
        alignment: ``"none"`` (strong MCC), ``"cca"`` or ``"affine"`` (weak MCC).
        correlation: ``"pearson"`` or ``"spearman"``.
        out_of_sample: fit the alignment and matching on a random half, score on the other.
        random_state: int, ``numpy.random.Generator`` or None; used only for the split.

    Returns:
        The MCC, a float in [0, 1].

    Example:
        >>> import numpy as np
        >>> from idvae.metrics import mcc
        >>> z = np.random.default_rng(0).normal(size=(1000, 3))
        >>> round(mcc(z, -2 * z[:, [2, 0, 1]] + 1, random_state=0), 6)
        1.0
    """
    alignment = _check_choice(alignment, "alignment", ("none", "cca", "affine"))
    correlation = _check_choice(correlation, "correlation", ("pearson", "spearman"))
    if not isinstance(out_of_sample, bool | np.bool_):
        raise TypeError(f"Expected out_of_sample to be a bool but got {type(out_of_sample)}")
    z_a, z_b = _check_pair(z_a, z_b, min_samples=4 if out_of_sample else 2)
    rng = check_random_state(random_state) if out_of_sample else None
    # Tall-and-thin products are memory bound: BLAS threads buy little and thrash on a
    # shared machine (measured: 3x slower at n = 100,000 with 2 busy cores).
    with threadpool_limits(limits=1, user_api="blas"):
        return _mcc(z_a, z_b, alignment, correlation, rng)


def _mcc(
    z_a: np.ndarray,
    z_b: np.ndarray,
    alignment: str,
    correlation: str,
    rng: np.random.Generator | None,
) -> float:
    n = z_a.shape[0]
    out_of_sample = rng is not None
    if out_of_sample:
        order = rng.permutation(n)
        fit, score = order[: n // 2], order[n // 2 :]
        fit_a, fit_b, score_a, score_b = z_a[fit], z_b[fit], z_a[score], z_b[score]
    else:
        fit_a = score_a = z_a
        fit_b = score_b = z_b
    if alignment != "none" and fit_a.shape[0] < 3:
        raise ValueError(
            f"Expected at least 3 fit samples for alignment={alignment!r} but got "
            f"{fit_a.shape[0]} (n_samples = {n})"
        )

    # The number of pairs averaged over: min(m_a, m_b), or m_a after the affine map.
    n_pairs = z_a.shape[1] if alignment == "affine" else min(z_a.shape[1], z_b.shape[1])
    if alignment == "cca":
        model = _fit_cca(fit_a, fit_b)
        if model.correlations.shape[0] == 0:  # a side is constant: nothing correlates
            return 0.0
        fit_a, fit_b = model.transform(fit_a, fit_b)
        score_a, score_b = model.transform(score_a, score_b) if out_of_sample else (fit_a, fit_b)
    elif alignment == "affine":
        w, c = _fit_affine(fit_a, fit_b)
        fit_b = fit_b @ w + c
        score_b = score_b @ w + c if out_of_sample else fit_b

    rows, cols = _hungarian(_correlation(fit_a, fit_b, correlation))
    corr = _correlation(score_a[:, rows], score_b[:, cols], correlation)
    # Canonical pairs missing through rank deficiency (a collapsed coordinate) count as 0.
    return float(np.sum(np.abs(np.diagonal(corr))) / n_pairs)

"""Identifiability metrics of App. J.1: MCC (strong and weak) and distAff,L2 (eq. (34)).

Two families of metrics, both pure functions of plain arrays and ``GMM``s:

* latent-space metrics on paired samples ``z_a``, ``z_b`` (two encodings of the same data):
  :func:`mcc` with its helpers :func:`correlation_matrix`, :func:`match_coordinates` and the
  closed-form :func:`cca`;
* prior metrics on two Gaussian mixtures: :func:`gmm_l2_distance` (ΔL2 of eq. (34)) and
  :func:`dist_aff_l2` (its minimum over affine maps);
* clustering metrics: :func:`cluster_accuracy`, :func:`nmi`, :func:`ari`.

Every definition is written out and versioned in its docstring ("Definition v1"). A changed
definition becomes a new option; a default is never changed silently.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment, minimize
from scipy.special import logsumexp
from scipy.stats import rankdata
from threadpoolctl import threadpool_limits

from idvae._validation import RandomState, check_array, check_positive_int, check_random_state
from idvae.mixture import GMM, log_l2_inner

__all__ = [
    "CCA",
    "ari",
    "cca",
    "cluster_accuracy",
    "correlation_matrix",
    "dist_aff_l2",
    "gmm_l2_distance",
    "match_coordinates",
    "mcc",
    "nmi",
]

Alignment = Literal["none", "cca", "affine"]
Correlation = Literal["pearson", "spearman"]

_LOG_2PI = float(np.log(2.0 * np.pi))
# ΔL2² below this is at the rounding floor of eq. (34) (about 1e-15): no start can do better.
_EXACT = 1e-14
# Singular values below this fraction of the largest are treated as zero (rank deficiency).
_RANK_RTOL = 1e-10


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------
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


def _check_gmm(p: object, name: str) -> GMM:
    if not isinstance(p, GMM):
        raise TypeError(f"Expected {name} to be an idvae.GMM but got {type(p).__name__}")
    return p


def _check_labels(y: Any, name: str) -> np.ndarray:
    if hasattr(y, "detach") and hasattr(y, "cpu"):
        y = y.detach().cpu().numpy()
    if isinstance(y, str | bytes) or y is None:
        raise TypeError(f"Expected {name} to be a 1-D array of labels but got {type(y).__name__}")
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"Expected {name} to be a 1-D array of labels but got {arr.ndim}-D")
    if arr.shape[0] == 0:
        raise ValueError(f"Expected {name} to have at least 1 label but got 0")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"Expected {name} to be finite but it contains NaN or infinity")
    if arr.dtype.kind not in "biufUS":
        raise TypeError(f"Expected {name} to hold integer or string labels but got {arr.dtype}")
    return arr


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


# ---------------------------------------------------------------------------------------------
# ΔL2 between Gaussian mixtures, eq. (34)
# ---------------------------------------------------------------------------------------------
def _delta_l2_sq(log_pp: float, log_qq: float, log_pq: float) -> float:
    """Squared ΔL2 from the three log inner products, eq. (34).

    ΔL2² = (<p,p> + <q,q> - 2<p,q>) / sqrt(<p,p><q,q>) = r + 1/r - 2 cos, with
    r = sqrt(<p,p>/<q,q>) and cos = <p,q> / sqrt(<p,p><q,q>); clipped at 0 against rounding.
    """
    half = 0.5 * (log_pp - log_qq)
    value = math.exp(half) + math.exp(-half) - 2.0 * math.exp(log_pq - 0.5 * (log_pp + log_qq))
    return max(value, 0.0)


def gmm_l2_distance(p: GMM, q: GMM, *, normalized: bool = True) -> float:
    """ΔL2 between two Gaussian mixtures, in closed form (eq. (34)).

    Definition v1 (``normalized=True``, the paper's eq. (34))::

        ΔL2(p, q) = ||p - q||_L2 / (||p||_L2^{1/2} ||q||_L2^{1/2})

    the L2 *norm* (not its square) of the difference of the densities, divided by the
    geometric mean of their norms. All inner products are closed form,
    ``∫ N(x; μ1, Σ1) N(x; μ2, Σ2) dx = N(μ1; μ2, Σ1 + Σ2)``, summed over pairs of components
    in log space (:func:`idvae.mixture.log_l2_inner`); ``||p - q||² = <p,p> + <q,q> - 2<p,q>``
    is clipped at 0 against rounding, so ΔL2 has an absolute floor of about 1e-8.

    Scale: every L2 inner product picks up a factor ``1/|det B|`` when both mixtures are
    pushed through the same affine map ``x -> Bx + c``; the normalisation cancels it, so ΔL2
    does not depend on the units of the latent space: ``ΔL2(B#p, B#q) = ΔL2(p, q)``. It is 0
    iff p = q, symmetric, and at most ``sqrt(r + 1/r)`` with ``r = ||p|| / ||q||`` (``sqrt 2``
    for densities of equal norm that do not overlap).

    With ``normalized=False`` the plain norm ``||p - q||_L2`` is returned; it scales as
    ``|det B|^{-1/2}`` under a common map, so only compare it within one coordinate system.

    Args:
        p: a ``GMM`` of dimension m.
        q: a ``GMM`` of dimension m (any number of components).
        normalized: return eq. (34)'s ΔL2 (default) or the unnormalised norm.

    Returns:
        A float >= 0.
    """
    p, q = _check_gmm(p, "p"), _check_gmm(q, "q")
    if p.dim != q.dim:
        raise ValueError(f"Expected mixtures of equal dimension but got {p.dim} and {q.dim}")
    log_pp, log_qq, log_pq = log_l2_inner(p, p), log_l2_inner(q, q), log_l2_inner(p, q)
    if normalized:
        return math.sqrt(_delta_l2_sq(log_pp, log_qq, log_pq))
    scale = max(log_pp, log_qq)
    sq = math.exp(log_pp - scale) + math.exp(log_qq - scale) - 2.0 * math.exp(log_pq - scale)
    return math.sqrt(max(sq, 0.0)) * math.exp(0.5 * scale)


def _moments(
    weights: np.ndarray, means: np.ndarray, covariances: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (m,) and covariance (m, m) of a mixture as a whole (weights renormalised)."""
    weights = weights / weights.sum()
    mean = weights @ means
    centred = means - mean
    cov = np.einsum("j,jkl->kl", weights, covariances) + centred.T @ (weights[:, None] * centred)
    return mean, 0.5 * (cov + cov.T)


def _sqrt_pair(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric square root and inverse square root of an SPD matrix."""
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, vals.max() * 1e-300)
    return (vecs * np.sqrt(vals)) @ vecs.T, (vecs / np.sqrt(vals)) @ vecs.T


@dataclass(frozen=True)
class _Whitened:
    """A mixture in coordinates where its overall mean is 0 and covariance the identity."""

    weights: np.ndarray  # (J,)
    means: np.ndarray  # (J, m)
    covariances: np.ndarray  # (J, m, m)
    mean: np.ndarray  # (m,) original overall mean
    root: np.ndarray  # (m, m) Σ^{1/2}
    inv_root: np.ndarray  # (m, m) Σ^{-1/2}


def _whiten_arrays(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> _Whitened:
    mean, cov = _moments(weights, means, covariances)
    root, inv_root = _sqrt_pair(cov)
    covs = inv_root @ covariances @ inv_root
    covs = 0.5 * (covs + np.swapaxes(covs, 1, 2))
    return _Whitened(weights / weights.sum(), (means - mean) @ inv_root, covs, mean, root, inv_root)


def _whiten(p: GMM) -> _Whitened:
    return _whiten_arrays(p.weights, p.means, p.covariances)


def _forward_substitution(chol: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``L y = rhs`` for a stack of lower-triangular L (..., m, m) and rhs (..., m, r).

    Vectorised over the stack (m small steps): far faster than one LAPACK call per matrix
    for the many tiny systems of the objective below.
    """
    out = np.empty(np.broadcast_shapes(chol.shape[:-2], rhs.shape[:-2]) + rhs.shape[-2:])
    for i in range(chol.shape[-1]):
        row = rhs[..., i, :] - np.einsum("...k,...kr->...r", chol[..., i, :i], out[..., :i, :])
        out[..., i, :] = row / chol[..., i, i, None]
    return out


class _AffineObjective:
    """ΔL2²(M#p + c, q) of eq. (34) and its analytic gradient in (M, c).

    Uses ``<M#p, M#p> = <p, p> / |det M|`` and, per pair of components (j, k),
    ``S = M Σ_j M^T + Γ_k``, ``d = M μ_j + c - ν_k``, ``α = S^{-1} d``:
    ``∂ log N(d; 0, S) / ∂M = (α α^T - S^{-1}) M Σ_j - α μ_j^T`` and ``∂/∂c = -α``.
    """

    def __init__(self, p: _Whitened, q: _Whitened) -> None:
        self.p, self.q = p, q
        self.m = p.means.shape[1]
        self.log_w = np.log(p.weights)[:, None] + np.log(q.weights)[None, :]
        self.log_pp = _log_inner(p, p)
        self.log_qq = _log_inner(q, q)

    def unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.m
        return theta[: m * m].reshape(m, m), theta[m * m :]

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        m = self.m
        M, c = self.unpack(theta)
        sign, log_det = np.linalg.slogdet(M)
        if sign == 0 or not np.isfinite(log_det):
            return np.inf, np.zeros_like(theta)
        p, q = self.p, self.q
        mapped_cov = M @ p.covariances @ M.T
        S = mapped_cov[:, None] + q.covariances[None, :]  # (J, K, m, m)
        d = (p.means @ M.T + c)[:, None, :] - q.means[None, :, :]  # (J, K, m)
        try:
            chol = np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            return np.inf, np.zeros_like(theta)
        maha = np.sum(_forward_substitution(chol, d[..., None])[..., 0] ** 2, axis=-1)
        log_det_s = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        log_terms = self.log_w - 0.5 * (maha + log_det_s + m * _LOG_2PI)
        log_pq = float(logsumexp(log_terms))
        resp = np.exp(log_terms - log_pq)  # (J, K), sums to 1
        # Pairs with negligible responsibility do not move the gradient: skip their inverses.
        jj, kk = np.nonzero(resp > 1e-18)
        inv_l = _forward_substitution(chol[jj, kk], np.eye(m))
        S_inv = np.swapaxes(inv_l, -1, -2) @ inv_l  # (P, m, m)
        alpha = (S_inv @ d[jj, kk][..., None])[..., 0]  # (P, m)
        r = resp[jj, kk]
        outer = r[:, None, None] * (alpha[:, :, None] * alpha[:, None, :] - S_inv)
        dense = np.zeros(d.shape[:2] + (m, m + 1))
        dense[jj, kk, :, :m] = outer
        dense[jj, kk, :, m] = r[:, None] * alpha
        summed = dense.sum(axis=1)
        t, r_alpha = summed[..., :m], summed[..., m]  # sums over k: (J, m, m), (J, m)

        log_pp = self.log_pp - log_det  # eq. (34): <M#p, M#p> = <p, p> / |det M|
        value = _delta_l2_sq(log_pp, self.log_qq, log_pq)
        half = 0.5 * (log_pp - self.log_qq)
        cos = math.exp(log_pq - 0.5 * (log_pp + self.log_qq))
        d_value_d_pp = 0.5 * math.exp(half) - 0.5 * math.exp(-half) + cos
        d_value_d_pq = -2.0 * cos

        grad_m_pq = np.sum(t @ M @ p.covariances, axis=0) - r_alpha.T @ p.means
        grad_c_pq = -r_alpha.sum(axis=0)
        grad_m = d_value_d_pp * (-np.linalg.inv(M).T) + d_value_d_pq * grad_m_pq
        grad_c = d_value_d_pq * grad_c_pq
        return value, np.concatenate([grad_m.ravel(), grad_c])


def _log_inner(p: _Whitened, q: _Whitened) -> float:
    m = p.means.shape[1]
    d = p.means[:, None, :] - q.means[None, :, :]
    S = p.covariances[:, None] + q.covariances[None, :]
    chol = np.linalg.cholesky(S)
    sol = np.linalg.solve(chol, d[..., None])[..., 0]
    log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    log_n = -0.5 * (np.sum(sol**2, axis=-1) + log_det + m * _LOG_2PI)
    log_w = np.log(p.weights)[:, None] + np.log(q.weights)[None, :]
    return float(logsumexp(log_w + log_n))


def _invariant_features(w: _Whitened) -> np.ndarray:
    """Per-component features unchanged by an orthogonal map of whitened coordinates."""
    eig = np.linalg.eigvalsh(w.covariances)  # (J, m), ascending
    mean_norm = np.linalg.norm(w.means, axis=1)
    maha = np.einsum("ja,jab,jb->j", w.means, np.linalg.inv(w.covariances), w.means)
    return np.column_stack([np.log(w.weights), mean_norm, np.sqrt(maha), np.log(eig)])


def _invariant_matching(p: _Whitened, q: _Whitened) -> tuple[np.ndarray, np.ndarray]:
    fp, fq = _invariant_features(p), _invariant_features(q)
    spread = np.concatenate([fp, fq]).std(axis=0) + 1e-12
    cost = np.sum(((fp[:, None, :] - fq[None, :, :]) / spread) ** 2, axis=-1)
    return linear_sum_assignment(cost)


def _overlap_matching(
    p: _Whitened, q: _Whitened, M: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Match components of M#p + c to those of q by their L2 overlap (Hungarian)."""
    means = p.means @ M.T + c
    covs = M @ p.covariances @ M.T
    d = means[:, None, :] - q.means[None, :, :]
    S = covs[:, None] + q.covariances[None, :]
    chol = np.linalg.cholesky(S)
    sol = np.linalg.solve(chol, d[..., None])[..., 0]
    log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return linear_sum_assignment(0.5 * (np.sum(sol**2, axis=-1) + log_det))


class _MatchedInit:
    """Initial affine maps from a matching of components, by linear least squares.

    The matched components of each side are whitened as a mixture of their own (so a matched
    subset related by an affine map becomes related by an orthogonal one, even when other
    components are left out). For matched pairs (j, k) an exact orthogonal map satisfies
    ``M μ_j + c = ν_k`` and ``M Σ_j = Γ_k M``; both are linear in (M, c) and their weighted
    sum of squares is minimised in closed form, one (m² + m)-dimensional solve per matching.
    The result is returned in the coordinates of the objective (the global whitenings).
    """

    def __init__(self, p: _Whitened, q: _Whitened) -> None:
        self.p, self.q = p, q
        self.m = p.means.shape[1]
        self.pair_weight = 0.5 * (p.weights[:, None] + q.weights[None, :])

    def __call__(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        p, q = self.p, self.q
        w = self.pair_weight[rows, cols]
        if rows.size == p.weights.size and cols.size == q.weights.size:  # already whitened
            return self._least_squares(
                p.means[rows], q.means[cols], p.covariances[rows], q.covariances[cols], w
            )
        sub_p = _whiten_arrays(p.weights[rows], p.means[rows], p.covariances[rows])
        sub_q = _whiten_arrays(q.weights[cols], q.means[cols], q.covariances[cols])
        theta = self._least_squares(
            sub_p.means, sub_q.means, sub_p.covariances, sub_q.covariances, w
        )
        M_sub, c_sub = theta[: self.m * self.m].reshape(self.m, self.m), theta[self.m * self.m :]
        # Compose: global-whitened p -> sub-whitened p -> sub-whitened q -> global-whitened q.
        M = sub_q.root @ M_sub @ sub_p.inv_root
        c = sub_q.root @ (c_sub - M_sub @ sub_p.inv_root @ sub_p.mean) + sub_q.mean
        return np.concatenate([M.ravel(), c])

    def _least_squares(
        self, mu: np.ndarray, nu: np.ndarray, sig: np.ndarray, gam: np.ndarray, w: np.ndarray
    ) -> np.ndarray:
        """(M, c) minimising sum_i w_i (||M mu_i + c - nu_i||² + ||M sig_i - gam_i M||_F²)."""
        m, mm = self.m, self.m * self.m
        eye = np.eye(m)
        h = np.zeros((mm + m, mm + m))
        g = np.zeros(mm + m)
        # Means, sum_i w_i ||M mu_i + c - nu_i||^2 with row-major vec(M).
        h[:mm, :mm] = np.kron(eye, np.einsum("i,ia,ib->ab", w, mu, mu))
        cross = np.kron(eye, (w @ mu)[:, None])  # (m², m)
        h[:mm, mm:] = cross
        h[mm:, :mm] = cross.T
        h[mm:, mm:] = w.sum() * eye
        g[:mm] = np.einsum("i,ia,ib->ab", w, nu, mu).ravel()
        g[mm:] = w @ nu
        # Covariances, sum_i w_i ||M Σ_i - Γ_i M||_F^2 = vec(M)^T H vec(M) with
        # H = I ⊗ ΣΣ² + ΣΓ² ⊗ I - 2 Σ Γ ⊗ Σ (weighted sums over pairs).
        sig2 = np.einsum("i,iab,ibc->ac", w, sig, sig)
        gam2 = np.einsum("i,iab,ibc->ac", w, gam, gam)
        mixed = np.einsum("i,iab,icd->acbd", w, gam, sig).reshape(mm, mm)
        h[:mm, :mm] += np.kron(eye, sig2) + np.kron(gam2, eye) - 2.0 * mixed
        # A small ridge towards the identity keeps under-determined cases (e.g. J = 1) sane.
        ridge = 1e-10 * np.trace(h) / h.shape[0] + 1e-12
        prior = np.concatenate([eye.ravel(), np.zeros(m)])
        theta = np.linalg.solve(h + ridge * np.eye(mm + m), g + ridge * prior)
        M = theta[:mm].reshape(m, m)
        # Between whitened mixtures the exact map is orthogonal: use the nearest one when the
        # least-squares solution is far from invertible.
        u, s, vt = np.linalg.svd(M)
        if s[-1] < 1e-3 * max(s[0], 1e-12):
            theta[:mm] = (u @ vt).ravel()
        return theta


def _random_orthogonal(m: int, rng: np.random.Generator) -> np.ndarray:
    qm, r = np.linalg.qr(rng.standard_normal((m, m)))
    return qm * np.sign(np.diagonal(r))


def _refine(
    objective: _AffineObjective, theta: np.ndarray, max_iter: int, *, ftol: float
) -> tuple[float, np.ndarray]:
    """L-BFGS on ΔL2²; ``ftol`` bounds the absolute decrease per step (ΔL2² <= ~2)."""
    res = minimize(
        objective,
        theta,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "ftol": ftol, "gtol": 1e-10, "maxcor": 20},
    )
    value, _ = objective(res.x)
    return value, res.x


def _candidate_matchings(
    p: _Whitened, q: _Whitened, max_permutations: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The invariant-feature matching, then every injective matching when there are few."""
    J, K = p.weights.shape[0], q.weights.shape[0]
    # The matching of invariant features comes first: exact for affine images, found at once.
    matchings = [_invariant_matching(p, q)]
    if math.perm(max(J, K), min(J, K)) > max_permutations:
        return matchings
    small, large = (J, K) if J <= K else (K, J)
    for chosen in itertools.permutations(range(large), small):
        idx_small, idx_large = np.arange(small), np.asarray(chosen)
        matchings.append((idx_small, idx_large) if J <= K else (idx_large, idx_small))
    return matchings


def _search(
    objective: _AffineObjective,
    init: _MatchedInit,
    n_starts: int,
    max_permutations: int,
    max_iter: int,
    rng: np.random.Generator,
) -> tuple[float, np.ndarray]:
    """Best (ΔL2², theta): candidate maps scored, the best few refined, then re-matched."""
    p, q, m = objective.p, objective.q, objective.m
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    candidates: list[tuple[float, np.ndarray]] = []

    def add(rows: np.ndarray, cols: np.ndarray) -> bool:
        """Score the matching's initial map; True when it is already exact."""
        key = (tuple(rows.tolist()), tuple(cols.tolist()))
        if key not in seen:
            seen.add(key)
            theta = init(rows, cols)
            candidates.append((objective(theta)[0], theta))
        return candidates[-1][0] < _EXACT

    # No map at all (A = I, b = 0 in the original coordinates), and the map between the two
    # whitenings: so the result is never worse than either.
    no_map = np.concatenate([(q.inv_root @ p.root).ravel(), q.inv_root @ (p.mean - q.mean)])
    identity = np.concatenate([np.eye(m).ravel(), np.zeros(m)])
    candidates += [(objective(no_map)[0], no_map), (objective(identity)[0], identity)]
    exhaustive = math.perm(max(p.weights.size, q.weights.size), min(p.weights.size, q.weights.size))
    exact = any(add(rows, cols) for rows, cols in _candidate_matchings(p, q, max_permutations))
    if exhaustive > max_permutations and not exact:
        # Large J: more matchings, from the overlap of randomly rotated components.
        for _ in range(n_starts):
            add(*_overlap_matching(p, q, _random_orthogonal(m, rng), np.zeros(m)))
    candidates.sort(key=lambda item: item[0])
    best_value, best_theta = candidates[0]
    if best_value < _EXACT:
        return best_value, best_theta
    # Successive halving: a short run from each of the best starts, then the winner in full.
    short = max(20, max_iter // 8)
    for value, theta in candidates[: min(n_starts, len(candidates))]:
        if not np.isfinite(value):
            continue
        value, theta = _refine(objective, theta, short, ftol=1e-10)
        if value < best_value:
            best_value, best_theta = value, theta
    best_value, best_theta = _polish(objective, best_value, best_theta, max_iter)
    if best_value >= _EXACT and np.isfinite(best_value):
        rows, cols = _overlap_matching(p, q, *objective.unpack(best_theta))
        if (tuple(rows.tolist()), tuple(cols.tolist())) not in seen:
            value, theta = _refine(objective, init(rows, cols), short, ftol=1e-10)
            if value < best_value:
                best_value, best_theta = _polish(objective, value, theta, max_iter)
    return best_value, best_theta


def _polish(
    objective: _AffineObjective, value: float, theta: np.ndarray, max_iter: int
) -> tuple[float, np.ndarray]:
    """Refine to convergence; near an exact fit, to the rounding floor of eq. (34)."""
    if value < _EXACT:
        return value, theta
    new_value, new_theta = _refine(objective, theta, max_iter, ftol=1e-10)
    if new_value < 1e-8:  # nearly exact: worth chasing to the floor
        new_value, new_theta = _refine(objective, new_theta, max_iter, ftol=1e-16)
    return (new_value, new_theta) if new_value < value else (value, theta)


def dist_aff_l2(
    p: GMM,
    q: GMM,
    *,
    return_map: bool = False,
    n_starts: int = 4,
    max_permutations: int = 720,
    max_iter: int = 200,
    random_state: RandomState = 0,
) -> float | tuple[float, np.ndarray, np.ndarray]:
    """distAff,L2 of eq. (34): the smallest ΔL2(A#p, q) over invertible affine maps.

    Definition v1::

        distAff,L2(p, q) = min_{A, b} ΔL2(law of (A Z + b) for Z ~ p, q)

    with ΔL2 of :func:`gmm_l2_distance` (a norm, normalised, invariant to a common affine
    change of coordinates). As in the paper, p is mapped onto q. The minimum is searched, not
    certified: the returned value is ΔL2 at the best map found, so an upper bound of the true
    minimum, and exact (< 1e-6) when q is an affine image of p.

    Search:

    1. Both mixtures are whitened (overall mean 0, covariance I). Then q = A#p implies that
       the whitened q is an *orthogonal* image of the whitened p, which makes the search well
       conditioned for badly scaled A.
    2. Candidate matchings of components: every injective matching when there are at most
       ``max_permutations`` of them (J <= 6 for J = J'); otherwise the Hungarian matching of
       orthogonally invariant component features (weight, mean norm, covariance eigenvalues)
       plus, from ``n_starts`` random rotations, the Hungarian matching of the rotated
       components by L2 overlap. The paper instead tries all J! permutations.
    3. For each matching, an initial map by linear least squares on matched means *and*
       covariances (``M μ_j + c = ν_k``, ``M Σ_j = Γ_k M``); the paper fits the means only.
    4. The ``n_starts`` best candidates are refined on the full closed-form objective
       ΔL2² (means and covariances, all pairs of components) by L-BFGS with an analytic
       gradient; the best result is re-matched by overlap and refined once more if the
       matching changed.

    Mixtures with different numbers of components are handled (the objective uses all pairs);
    the distance is then > 0 unless the mixtures coincide as densities.

    Args:
        p: the ``GMM`` that is mapped, dimension m.
        q: the target ``GMM``, dimension m.
        return_map: also return the map.
        n_starts: how many candidates are refined (and random rotations tried for large J).
        max_permutations: the largest number of matchings tried exhaustively.
        max_iter: L-BFGS iterations per refinement.
        random_state: seeds the random rotations (int, Generator or None).

    Returns:
        The distance (float >= 0), or ``(distance, A, b)`` with ``A`` of shape (m, m) and
        ``b`` of shape (m,) such that ``p.pushforward(A, b)`` is the best-aligned copy of p.

    Example:
        >>> import numpy as np, idvae
        >>> from idvae.metrics import dist_aff_l2
        >>> p = idvae.GMM([0.3, 0.7], [[0.0, 0.0], [2.0, 1.0]], [np.eye(2), 0.5 * np.eye(2)])
        >>> q = p.pushforward([[2.0, 1.0], [0.0, -3.0]], [5.0, 1.0])
        >>> dist_aff_l2(p, q) < 1e-6
        True
    """
    p, q = _check_gmm(p, "p"), _check_gmm(q, "q")
    if p.dim != q.dim:
        raise ValueError(
            "Expected mixtures of equal dimension (distAff,L2 maps R^m to R^m) but got "
            f"{p.dim} and {q.dim}"
        )
    n_starts = check_positive_int(n_starts, "n_starts")
    max_permutations = check_positive_int(max_permutations, "max_permutations")
    max_iter = check_positive_int(max_iter, "max_iter")
    rng = check_random_state(random_state)

    wp, wq = _whiten(p), _whiten(q)
    objective = _AffineObjective(wp, wq)
    # Many tiny matrices: BLAS threads only add overhead (and thrash on a busy machine).
    with threadpool_limits(limits=1, user_api="blas"):
        best_value, best_theta = _search(
            objective, _MatchedInit(wp, wq), n_starts, max_permutations, max_iter, rng
        )

    distance = math.sqrt(best_value)
    if not return_map:
        return distance
    # Undo the whitening: y = root_q (M (root_p^{-1} (x - mean_p)) + c) + mean_q.
    M, c = objective.unpack(best_theta)
    A = wq.root @ M @ wp.inv_root
    b = wq.root @ (c - M @ wp.inv_root @ wp.mean) + wq.mean
    return distance, A, b


# ---------------------------------------------------------------------------------------------
# clustering
# ---------------------------------------------------------------------------------------------
def _check_label_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _check_labels(y_true, "y_true"), _check_labels(y_pred, "y_pred")
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            "Expected y_true and y_pred of equal length but got "
            f"{y_true.shape[0]} and {y_pred.shape[0]}"
        )
    return y_true, y_pred


def cluster_accuracy(y_true: Any, y_pred: Any) -> float:
    """Clustering accuracy under the best one-to-one relabelling (Hungarian algorithm).

    Definition v1: ``max over injective maps π from predicted to true labels of
    (1/n) Σ_i 1[π(y_pred_i) = y_true_i]``. When the label sets differ in size, the surplus
    labels of the larger set stay unmatched and their samples count as errors.

    Args:
        y_true: array of shape (n_samples,), integer or string labels.
        y_pred: array of shape (n_samples,), integer or string labels (any names).

    Returns:
        A float in [0, 1].
    """
    y_true, y_pred = _check_label_pair(y_true, y_pred)
    _, true_idx = np.unique(y_true, return_inverse=True)
    _, pred_idx = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((pred_idx.max() + 1, true_idx.max() + 1))
    np.add.at(counts, (pred_idx, true_idx), 1.0)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / y_true.shape[0])


def nmi(y_true: Any, y_pred: Any) -> float:
    """Normalised mutual information (scikit-learn's, arithmetic normalisation).

    Args:
        y_true: array of shape (n_samples,); y_pred: array of shape (n_samples,).
    """
    from sklearn.metrics import normalized_mutual_info_score

    y_true, y_pred = _check_label_pair(y_true, y_pred)
    return float(normalized_mutual_info_score(y_true, y_pred))


def ari(y_true: Any, y_pred: Any) -> float:
    """Adjusted Rand index (scikit-learn's).

    Args:
        y_true: array of shape (n_samples,); y_pred: array of shape (n_samples,).
    """
    from sklearn.metrics import adjusted_rand_score

    y_true, y_pred = _check_label_pair(y_true, y_pred)
    return float(adjusted_rand_score(y_true, y_pred))

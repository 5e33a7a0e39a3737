"""Theorem E.1: from Y = A Z + b back to Z up to permutation, scaling and translation.

Under (P2) the components of P(Z) have diagonal covariances Σ_j, so the components of
P(Y) have covariances A Σ_j Aᵀ (eq. (19)). For two components i, j the generalised
eigenproblem  Σ̃_i v = λ Σ̃_j v  has eigenvalues λ_t = (Σ_i)_tt / (Σ_j)_tt — invariant under
A — and, when they are distinct, eigenvectors that undo A up to a permutation and a
scaling (this is the SVD argument of the proof of Thm E.1, eqs. (20)-(23), done in one
numerically stable step). With estimated mixtures no pair is exactly simultaneously
diagonalisable, so ``method="joint"`` approximately diagonalises every covariance at once by
minimising Pham's criterion

    L(W) = Σ_j w_j [ log det diag(W Σ̃_j Wᵀ) − log det(W Σ̃_j Wᵀ) ]  ≥ 0,

which is zero exactly when W diagonalises every Σ̃_j and is the Gaussian log-likelihood
ratio of "diagonal covariances in the coordinates W y" (components weighted by their
share of the data).

The recovered coordinates are then put in a canonical form — zero mean and unit variance
under the mixture, non-negative skewness, ordered by decreasing between-component share
of variance — so two fits related by an affine map give the same canonical coordinates.

The module is long because Thm E.1 is one construction: the (P2) check, the pairwise and
joint diagonalisers and the canonical form build on each other and share their private
helpers.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.optimize

from idvae._validation import check_array, jsonable
from idvae.mixture import GMM

__all__ = [
    "AffineMap",
    "IdentifiabilityWarning",
    "NotIdentifiableError",
    "P2Report",
    "canonical_form",
    "canonicalize",
    "check_p2",
    "disentangle",
    "perm_scale_error",
]

Method = Literal["auto", "pair", "joint"]


class IdentifiabilityWarning(UserWarning):
    """A condition of the paper's identifiability theory fails or holds only weakly."""


class NotIdentifiableError(ValueError):
    """The requested quantity is not identifiable from the given mixture."""


# --------------------------------------------------------------------------------------
# AffineMap
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class AffineMap:
    """The affine map ``y ↦ W y + c`` of R^m.

    Args:
        matrix: array of shape (m, m), invertible, the linear part W.
        offset: array of shape (m,), the translation c.

    Example:
        >>> import numpy as np
        >>> h = AffineMap(np.diag([2.0, 1.0]), np.array([0.0, 1.0]))
        >>> h.apply(np.array([[1.0, 1.0]])).tolist()
        [[2.0, 2.0]]
        >>> h.inverse().compose(h).apply(np.array([3.0, 4.0])).tolist()
        [3.0, 4.0]
    """

    matrix: np.ndarray
    offset: np.ndarray

    def __post_init__(self) -> None:
        matrix = check_array(self.matrix, "matrix", ndim=2)
        m = matrix.shape[0]
        if matrix.shape != (m, m):
            raise ValueError(f"Expected a square matrix but got shape {matrix.shape}")
        offset = check_array(np.ravel(self.offset), "offset", ndim=1)
        if offset.shape != (m,):
            raise ValueError(f"Expected offset of shape ({m},) but got {offset.shape}")
        matrix, offset = matrix.copy(), offset.copy()
        matrix.setflags(write=False)
        offset.setflags(write=False)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "offset", offset)

    @property
    def dim(self) -> int:
        """m, the dimension of the space."""
        return int(self.matrix.shape[0])

    def apply(self, y: Any) -> np.ndarray:
        """Map points: ``y @ W.T + c``; ``y`` of shape (n, m) or (m,), same shape returned."""
        arr = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
        if arr.ndim == 1:
            return self.apply(arr[None, :])[0]
        arr = check_array(arr, "y", ndim=2, n_features=self.dim)
        return arr @ self.matrix.T + self.offset

    __call__ = apply

    def inverse(self) -> AffineMap:
        """The inverse map ``x ↦ W⁻¹ (x − c)``."""
        inv = np.linalg.inv(self.matrix)
        return AffineMap(inv, -inv @ self.offset)

    def compose(self, other: AffineMap) -> AffineMap:
        """``self ∘ other``: apply ``other`` first, then ``self``."""
        if not isinstance(other, AffineMap):
            raise TypeError(f"Expected an AffineMap but got {type(other).__name__}")
        if other.dim != self.dim:
            raise ValueError(f"Expected maps of equal dimension but got {self.dim}, {other.dim}")
        return AffineMap(self.matrix @ other.matrix, self.matrix @ other.offset + self.offset)

    def pushforward(self, gmm: GMM) -> GMM:
        """The law of ``W Y + c`` for Y ~ ``gmm``."""
        return gmm.pushforward(self.matrix, self.offset)

    def to_dict(self) -> dict[str, list]:
        """JSON-serialisable description (inverse of ``from_dict``)."""
        return {"matrix": self.matrix.tolist(), "offset": self.offset.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AffineMap:
        """Build an AffineMap from the output of ``to_dict``."""
        try:
            return cls(np.asarray(data["matrix"]), np.asarray(data["offset"]))
        except KeyError as err:
            raise ValueError(f"Expected an AffineMap description with key {err}") from None

    def __repr__(self) -> str:
        return f"AffineMap(dim={self.dim})"


def perm_scale_error(M: Any, *, signed: bool = True) -> float:
    """How far a square matrix is from ``P D`` (P a permutation, D diagonal).

    Each row of M is scaled to unit length (the scale of a recovered coordinate is
    arbitrary); the permutation is found by linear assignment on ``|M|``; the error is the
    root mean square, over rows, of the sine of the angle between a row and its matched
    coordinate axis. With ``signed=False`` a row matched with a negative entry counts as
    fully wrong (D must be positive).

    Args:
        M: array of shape (m, m), e.g. ``W @ A`` for a recovered map W and the truth A.

    Returns:
        A float in [0, 1]; 0 exactly when M is a permutation times an invertible diagonal.
    """
    M = check_array(M, "M", ndim=2)
    if M.shape[0] != M.shape[1]:
        raise ValueError(f"Expected a square matrix but got shape {M.shape}")
    norms = np.linalg.norm(M, axis=1)
    if np.any(norms == 0):
        return 1.0
    R = M / norms[:, None]
    rows, cols = scipy.optimize.linear_sum_assignment(-np.abs(R))
    matched = R[rows, cols]
    if not signed:
        matched = np.maximum(matched, 0.0)
    sine_sq = np.clip(1.0 - matched**2, 0.0, 1.0)
    return float(np.sqrt(np.mean(sine_sq)))


# --------------------------------------------------------------------------------------
# (P2) check
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class P2Report:
    """Whether a mixture in R^m meets (P2) as seen from an affine image of it.

    Attributes:
        holds: (P2) holds: J ≥ 2, a pair of components whose variance ratios are all
            distinct (min |log ratio gap| > tol), and covariances that one map diagonalises
            (max |correlation| after joint diagonalisation ≤ diag_tol).
        n_components: J.
        best_pair: the pair (i, j) with the best separated variance ratios, or None.
        variance_ratios: the ratios (Σ_i)_tt / (Σ_j)_tt of the best pair, sorted
            (affine invariants: the generalised eigenvalues of (Σ̃_i, Σ̃_j)).
        ratio_gap: min |log λ_s − log λ_t| over s ≠ t for the best pair (inf when m = 1:
            a single ratio is trivially distinct).
        offdiagonality: max |correlation| of any component after joint diagonalisation.
        jointly_unique: the weaker uniqueness condition of joint diagonalisation holds: no
            two recovered coordinates have proportional variance profiles across components.
        reasons: human-readable explanation of each conclusion.
    """

    holds: bool
    n_components: int
    best_pair: tuple[int, int] | None
    variance_ratios: tuple[float, ...]
    ratio_gap: float
    offdiagonality: float
    jointly_unique: bool
    reasons: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return self.holds

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description."""
        return {
            "holds": self.holds,
            "n_components": self.n_components,
            "best_pair": list(self.best_pair) if self.best_pair is not None else None,
            "variance_ratios": list(self.variance_ratios),
            "ratio_gap": jsonable(self.ratio_gap, nonfinite="str"),
            "offdiagonality": jsonable(self.offdiagonality, nonfinite="str"),
            "jointly_unique": self.jointly_unique,
            "reasons": list(self.reasons),
        }


def _check_gmm(gmm: Any) -> GMM:
    if not isinstance(gmm, GMM):
        raise TypeError(f"Expected an idvae.GMM but got {type(gmm).__name__}")
    return gmm


def _pair_eig(cov_i: np.ndarray, cov_j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Generalised eigenpairs of (cov_i, cov_j): V with Vᵀ cov_j V = I, Vᵀ cov_i V = diag."""
    return scipy.linalg.eigh(cov_i, cov_j)


def _ratio_gap(ratios: np.ndarray) -> float:
    if ratios.size < 2:
        return float("inf")
    logs = np.sort(np.log(ratios))
    return float(np.min(np.diff(logs)))


def _pair_scores(gmm: GMM) -> list[tuple[float, int, int, np.ndarray]]:
    """(score, i, j, sorted ratios) for every pair; score favours distinct ratios, big weights."""
    out = []
    for i, j in itertools.combinations(range(gmm.n_components), 2):
        lam, _ = _pair_eig(gmm.covariances[i], gmm.covariances[j])
        lam = np.clip(lam, 1e-300, None)
        gap = _ratio_gap(lam)
        weight = np.sqrt(min(gmm.weights[i], gmm.weights[j]))
        score = (gap if np.isfinite(gap) else 1.0) * weight
        out.append((score, i, j, np.sort(lam)))
    out.sort(key=lambda s: -s[0])
    return out


def _max_abs_correlation(covs: np.ndarray) -> float:
    d = np.sqrt(np.einsum("jtt->jt", covs))
    corr = covs / (d[:, :, None] * d[:, None, :])
    m = covs.shape[-1]
    if m < 2:
        return 0.0
    off = np.abs(corr[:, ~np.eye(m, dtype=bool)])
    return float(off.max())


def _profile_collinearity(covs: np.ndarray) -> float:
    """Max over coordinate pairs of |cos| between log-variance profiles (centered).

    The joint diagonaliser is unique (up to permutation and scaling) iff no two
    coordinates have variance profiles (σ²_{1t}, …, σ²_{Jt}) proportional to each other,
    i.e. centred log profiles equal. Returns the smallest distance between two centred log
    profiles (0 means not unique).
    """
    logv = np.log(np.einsum("jtt->jt", covs))  # (J, m)
    logv = logv - logv.mean(axis=0, keepdims=True)
    m = logv.shape[1]
    if m < 2:
        return float("inf")
    best = float("inf")
    for s, t in itertools.combinations(range(m), 2):
        best = min(best, float(np.max(np.abs(logv[:, s] - logv[:, t]))))
    return best


def check_p2(gmm: GMM, *, tol: float = 1e-6, diag_tol: float = 0.3) -> P2Report:
    """Check (P2) on a mixture observed through an unknown invertible affine map.

    Works on the mixture of Y = A Z + b directly: the variance ratios of a pair of
    components are the generalised eigenvalues of their covariances, which A does not
    change, and diagonalisability is checked after (joint) diagonalisation.

    Args:
        gmm: the mixture of Y (any full covariances), dimension m, J components.
        tol: two variance ratios count as distinct when their logs differ by more.
        diag_tol: largest |correlation| left after diagonalisation that still counts as
            "diagonal" (estimated mixtures are never exactly diagonalisable; exact input
            gives ~1e-15).

    Returns:
        A ``P2Report``; ``bool(report)`` is whether (P2) holds.
    """
    gmm = _check_gmm(gmm)
    reasons: list[str] = []
    J = gmm.n_components
    if J < 2:
        reasons.append(f"J = {J} < 2: a single Gaussian is identifiable only up to an affine map")
        return P2Report(False, J, None, (), 0.0, float("nan"), False, tuple(reasons))
    scores = _pair_scores(gmm)
    _, i, j, lam = scores[0]
    gap = _ratio_gap(lam)
    distinct = gap > tol
    if distinct:
        reasons.append(
            f"components {i} and {j} have distinct variance ratios (min log gap {gap:.3g})"
        )
    else:
        reasons.append(
            f"no pair of components has all variance ratios distinct (best pair {i}, {j}: "
            f"min log gap {gap:.3g} <= tol {tol:g}); e.g. proportional covariances"
        )
    W = _joint_diagonaliser(gmm, (i, j)) if distinct else _pair_diagonaliser(gmm, i, j)
    covs = np.einsum("ik,jkl,ml->jim", W, gmm.covariances, W)
    offdiag = _max_abs_correlation(covs)
    diagonal = offdiag <= diag_tol
    if J == 2:
        reasons.append("J = 2: two covariances are always simultaneously diagonalisable")
    elif diagonal:
        reasons.append(
            f"all {J} covariances are diagonal in one basis (max |corr| {offdiag:.2g} "
            f"<= {diag_tol:g})"
        )
    else:
        reasons.append(
            f"the covariances are not simultaneously diagonalisable (max |corr| {offdiag:.2g} "
            f"> {diag_tol:g}): Z_i, Z_j are not conditionally independent given U"
        )
    unique_gap = _profile_collinearity(covs)
    jointly_unique = bool(unique_gap > tol)
    if not distinct and jointly_unique and diagonal:
        reasons.append(
            "the pair condition fails but all components together still determine the "
            f"coordinates (profile gap {unique_gap:.3g}); method='joint' can be used"
        )
    holds = bool(distinct and diagonal)
    return P2Report(
        holds=holds,
        n_components=J,
        best_pair=(i, j),
        variance_ratios=tuple(float(v) for v in lam),
        ratio_gap=gap,
        offdiagonality=offdiag,
        jointly_unique=jointly_unique,
        reasons=tuple(reasons),
    )


# --------------------------------------------------------------------------------------
# the diagonalisers
# --------------------------------------------------------------------------------------
def _pair_diagonaliser(gmm: GMM, i: int, j: int) -> np.ndarray:
    """W with W Σ̃_j Wᵀ = I and W Σ̃_i Wᵀ diagonal (Thm E.1, eqs. (20)-(23))."""
    _, V = _pair_eig(gmm.covariances[i], gmm.covariances[j])
    return V.T.copy()


def _pham_objective(x: np.ndarray, covs: np.ndarray, weights: np.ndarray) -> tuple[float, Any]:
    m = covs.shape[-1]
    E = x.reshape(m, m)
    B = np.eye(m) + E
    BC = np.einsum("ik,jkl->jil", B, covs)  # (J, m, m): B C_j
    d = np.einsum("jil,il->ji", BC, B)  # diag(B C_j Bᵀ), (J, m)
    if np.any(d <= 0):
        return np.inf, np.zeros_like(x)
    sign, logdet = np.linalg.slogdet(B)
    if sign == 0:
        return np.inf, np.zeros_like(x)
    value = float(np.sum(weights[:, None] * np.log(d)) - 2.0 * logdet)
    grad = 2.0 * np.einsum("j,ji,jil->il", weights, 1.0 / d, BC) - 2.0 * np.linalg.inv(B).T
    return value, grad.ravel()


def _joint_diagonaliser(
    gmm: GMM, init_pair: tuple[int, int], *, max_rounds: int = 20
) -> np.ndarray:
    """Approximate joint diagonaliser of all covariances, started from the best pair."""
    W = _pair_diagonaliser(gmm, *init_pair)
    weights = gmm.weights
    m = gmm.dim
    for _ in range(max_rounds):
        covs = np.einsum("ik,jkl,ml->jim", W, gmm.covariances, W)
        scale = 1.0 / np.sqrt(np.einsum("j,jtt->t", weights, covs))
        W = scale[:, None] * W
        covs = covs * scale[None, :, None] * scale[None, None, :]
        res = scipy.optimize.minimize(
            _pham_objective,
            np.zeros(m * m),
            args=(covs, weights),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 500, "gtol": 1e-13, "ftol": 1e-16},
        )
        step = res.x.reshape(m, m)
        W = (np.eye(m) + step) @ W
        if np.max(np.abs(step)) < 1e-12:
            break
    return W


def canonical_form(gmm: GMM, W: np.ndarray) -> AffineMap:
    """Normalise an unmixing matrix: the canonical coordinates of ``W y``.

    Each coordinate of ``W Y`` gets zero mean and unit variance under the mixture and a
    sign making its skewness non-negative (ties: the heaviest component's mean
    non-negative); coordinates are ordered by decreasing between-component share of
    variance (ties: by decreasing skewness). The result depends on W only through the
    directions of its rows, so any two unmixing matrices that are P D multiples of each
    other give the same map.

    Args:
        gmm: the mixture of Y, dimension m.
        W: array of shape (m, m), rows the recovered directions.
    """
    W = np.asarray(W, dtype=np.float64)
    mean = gmm.weights @ gmm.means  # mixture mean
    mu = (gmm.means - mean) @ W.T  # (J, m) centred component means
    var_c = np.einsum("ik,jkl,il->ji", W, gmm.covariances, W)  # (J, m) component variances
    total = gmm.weights @ (var_c + mu**2)  # mixture variances
    sd = np.sqrt(total)
    mu, var_c = mu / sd, var_c / sd**2
    skew = gmm.weights @ (mu**3 + 3.0 * mu * var_c)
    heavy = mu[int(np.argmax(gmm.weights))]
    scale_tie = max(1.0, float(np.max(np.abs(skew))))
    sign = np.where(np.abs(skew) > 1e-9 * scale_tie, np.sign(skew), np.where(heavy < 0, -1.0, 1.0))
    between = gmm.weights @ mu**2
    order = np.lexsort((-np.abs(skew), -np.round(between, 9)))
    matrix = (sign / sd)[:, None] * W
    matrix = matrix[order]
    return AffineMap(matrix, -matrix @ mean)


def disentangle(
    gmm: GMM,
    *,
    method: Method = "auto",
    tol: float = 1e-6,
    diag_tol: float = 0.3,
    strict: bool = True,
) -> AffineMap:
    """Theorem E.1: the map from Y = A Z + b to canonical coordinates of Z.

    The returned map W y + c satisfies ``W A = P D`` (P a permutation, D diagonal): the
    canonical coordinates are Z up to permutation, scaling and translation; the
    normalisation of ``canonical_form`` fixes scale, sign, translation and order from the
    law of Y, so fits related by an affine map land on the same coordinates.

    Long for its documentation (the theorem it implements, its arguments and an example); the
    body is under 50 lines, so splitting it would only part the steps of Thm E.1 from each
    other.

    Args:
        gmm: the mixture of Y, J ≥ 2 components in R^m.
        method: ``"pair"`` uses the pair of components with the best separated variance
            ratios (exact on exact input, as in the proof of Thm E.1); ``"joint"``
            approximately diagonalises all covariances at once (robust on estimated
            mixtures, started from the best pair); ``"auto"`` takes the pair when it
            diagonalises every component to 1e-10 and the joint method otherwise.
        tol: variance ratios closer than this in log count as equal.
        diag_tol: warn (``IdentifiabilityWarning``) when a component keeps a correlation
            above this after diagonalisation.
        strict: when (P2) fails raise ``NotIdentifiableError``; with ``strict=False`` warn
            with ``IdentifiabilityWarning`` and return the (then non-unique) map.

    Returns:
        An ``AffineMap`` to the canonical coordinates.

    Raises:
        NotIdentifiableError: J < 2, or no pair of components has distinct variance ratios
            and all components together do not determine the coordinates either.

    Example:
        >>> import numpy as np, idvae
        >>> z = idvae.GMM([0.5, 0.5], [[0, 0], [2, 1]], [[1.0, 2.0], [3.0, 0.5]])
        >>> A = np.array([[1.0, 2.0], [0.5, -1.0]])
        >>> h = disentangle(z.pushforward(A, [1.0, 0.0]))
        >>> perm_scale_error(h.matrix @ A) < 1e-10
        True
    """
    gmm = _check_gmm(gmm)
    if method not in ("auto", "pair", "joint"):
        raise ValueError(f"Expected method 'auto', 'pair' or 'joint' but got {method!r}")
    J = gmm.n_components
    if J < 2:
        raise NotIdentifiableError(
            f"Expected a mixture with at least 2 components for Thm E.1 but got J = {J}: "
            "one Gaussian is identifiable only up to an affine map"
        )
    _, i, j, lam = _pair_scores(gmm)[0]
    gap = _ratio_gap(lam)
    pair_ok = gap > tol
    W_pair = _pair_diagonaliser(gmm, i, j)
    if method == "pair":
        W = W_pair
    else:
        covs = np.einsum("ik,jkl,ml->jim", W_pair, gmm.covariances, W_pair)
        exact = _max_abs_correlation(covs) < 1e-10
        W = W_pair if (method == "auto" and exact) else _joint_diagonaliser(gmm, (i, j))
    covs = np.einsum("ik,jkl,ml->jim", W, gmm.covariances, W)
    unique = _profile_collinearity(covs) > tol
    offdiag = _max_abs_correlation(covs)
    if offdiag > diag_tol:
        warnings.warn(
            f"(P2) fails: the {J} covariances are not simultaneously diagonalisable (max "
            f"|corr| {offdiag:.2g} > diag_tol {diag_tol:g} after joint diagonalisation), so Y "
            "is not an affine image of a mixture with diagonal covariances; the map returned "
            "is the best approximate one",
            IdentifiabilityWarning,
            stacklevel=2,
        )
    if not pair_ok and not (method != "pair" and unique):
        msg = (
            f"(P2) fails: the best pair of components ({i}, {j}) has variance ratios with "
            f"min log gap {gap:.3g} <= tol {tol:g} (e.g. proportional covariances); "
            "coordinates with equal ratios can be rotated freely"
        )
        if strict:
            raise NotIdentifiableError(msg + "; pass strict=False to get a (non-unique) map")
        warnings.warn(msg, IdentifiabilityWarning, stacklevel=2)
    elif not pair_ok:
        warnings.warn(
            f"the paper's (P2) pair condition fails (best gap {gap:.3g}) but all components "
            "jointly determine the coordinates; result from joint diagonalisation",
            IdentifiabilityWarning,
            stacklevel=2,
        )
    return canonical_form(gmm, W)


def canonicalize(
    estimator_or_gmm: Any, *, method: Method = "auto", strict: bool = True
) -> AffineMap:
    """The map from an estimator's latent space to canonical coordinates (Thm E.1).

    Args:
        estimator_or_gmm: an ``idvae.GMM`` (the law of the latents) or anything with a
            fitted ``prior_`` attribute holding one (VaDE, MFCVAE, a user's model).
        method, strict: as in ``disentangle``.

    Returns:
        An ``AffineMap``; ``h.apply(model.transform(X))`` are the canonical latents.
    """
    if isinstance(estimator_or_gmm, GMM):
        gmm = estimator_or_gmm
    else:
        gmm = getattr(estimator_or_gmm, "prior_", None)
        if gmm is None:
            raise TypeError(
                "Expected an idvae.GMM or a fitted estimator with a prior_ GMM but got "
                f"{type(estimator_or_gmm).__name__} without prior_ (is it fitted?)"
            )
        if not isinstance(gmm, GMM):
            raise TypeError(f"Expected prior_ to be an idvae.GMM but got {type(gmm).__name__}")
    return disentangle(gmm, method=method, strict=strict)

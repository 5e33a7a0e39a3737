"""ΔL2 between Gaussian mixtures and its minimum over affine maps, distAff,L2 (eq. (34)).

The module is long because distAff,L2 is one optimisation whose pieces (whitening, the
objective and its gradient, the matched initialisations, the search) share its private
types.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment, minimize
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits

from idvae._validation import RandomState, check_positive_int, check_random_state
from idvae.mixture import GMM, LOG_2PI, log_l2_inner

__all__ = ["dist_aff_l2", "gmm_l2_distance"]

# ΔL2² below this is at the rounding floor of eq. (34) (about 1e-15): no start can do better.
_EXACT = 1e-14


def _check_gmm(p: object, name: str) -> GMM:
    if not isinstance(p, GMM):
        raise TypeError(f"Expected {name} to be an idvae.GMM but got {type(p).__name__}")
    return p


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
        log_terms = self.log_w - 0.5 * (maha + log_det_s + m * LOG_2PI)
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
    log_n = -0.5 * (np.sum(sol**2, axis=-1) + log_det + m * LOG_2PI)
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

    Long for its documentation (the definition it versions, its arguments and an example); the
    body is under 30 lines.

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

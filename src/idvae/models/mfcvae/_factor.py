"""From one joint mixture to k facets: the grid of additive means and the facet basis."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment, minimize

from idvae._validation import RandomState, check_array, check_random_state

__all__ = [
    "MIXTURE_LOGLIK_TOLERANCE",
    "facet_basis",
    "faceted_basis",
    "factor_grid",
    "mixture_grid",
    "most_additive",
]

# Restarts of a joint mixture whose mean log-likelihood (nats per point) is within this of
# the best restart's are told apart by how additive their means are (``most_additive``).
# Chosen on the 16 instances of benchmarks/levers_mfcvae.py (docs/models_mfcvae_ivae.md).
MIXTURE_LOGLIK_TOLERANCE = 0.05


def mixture_grid(
    joint: Any, z: np.ndarray, sizes: Sequence[int], *, random_state: RandomState = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """The grid of a joint mixture fitted to latents z (``factor_grid`` of its soft means).

    Args:
        joint: an ``idvae.GMM`` with J = prod(sizes) components.
        z: array of shape (n, m).
        sizes: (K_1, ..., K_k).
        random_state: seed of ``factor_grid``'s starts.

    Returns:
        (resp, cells, residual): the responsibilities p(component | z), shape (n, J), and
        ``factor_grid``'s cells and residual for the responsibility-weighted means.
    """
    resp = joint.predict_proba(z)
    mass = resp.sum(axis=0) + 1e-12
    means = (resp.T @ z) / mass[:, None]
    cells, residual = factor_grid(means, mass / mass.sum(), sizes, random_state=random_state)
    return resp, cells, residual


def most_additive(
    log_likelihoods: Sequence[float],
    residuals: Sequence[float],
    tolerance: float = MIXTURE_LOGLIK_TOLERANCE,
) -> int:
    """The candidate mixture to keep: the most additive among the nearly most likely.

    Under (P3) the true joint clustering has additive means (``factor_grid``'s residual
    near 0). On a latent that is only nearly an affine image of z, restarts of a Gaussian
    mixture end in optima whose likelihoods differ by a few hundredths of a nat per point,
    and the most likely is often a clustering that does not factor; among those within
    ``tolerance`` of the best, the one whose means are most nearly additive is kept.

    Args:
        log_likelihoods: mean log-likelihood per point of each candidate.
        residuals: each candidate's grid residual (``mixture_grid``).
        tolerance: nats per point.

    Returns:
        The index of the candidate kept.
    """
    ll = np.asarray(log_likelihoods, dtype=np.float64)
    res = np.asarray(residuals, dtype=np.float64)
    if ll.shape != res.shape or ll.ndim != 1 or ll.size == 0:
        raise ValueError(
            f"Expected one residual per log-likelihood (1-D, non-empty) but got shapes "
            f"{ll.shape} and {res.shape}"
        )
    near = np.flatnonzero(ll >= ll.max() - tolerance)
    return int(near[np.argmin(res[near])])


def _main_effects_design(cells: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Design matrix of the additive model t + sum_i alpha_i[c_i] (treatment coding)."""
    columns = [np.ones((cells.shape[0], 1))]
    for i, k in enumerate(sizes):
        columns.append(np.eye(k)[cells[:, i]][:, 1:])
    return np.concatenate(columns, axis=1)


def factor_grid(
    means: Any,
    weights: Any,
    sizes: Sequence[int],
    *,
    n_restarts: int = 20,
    max_iter: int = 100,
    random_state: RandomState = None,
) -> tuple[np.ndarray, float]:
    """Arrange J = prod(sizes) mixture components on a grid so their means are additive.

    Under MFCVAE (eq. (5)) with z an affine image of the true latent, component
    (c_1, ..., c_k) has mean t + sum_i alpha_i[c_i]: each facet adds its own effect. Given
    the J means in unknown order, this finds the bijection component -> grid cell that
    minimises the weighted residual sum of squares of that additive model, alternating a
    least-squares fit of the effects with an optimal assignment (Hungarian algorithm) of
    components to cells, from ``n_restarts`` random bijections.

    Args:
        means: array of shape (J, m).
        weights: array of shape (J,), positive (the component weights).
        sizes: (K_1, ..., K_k) with prod K_i = J.
        n_restarts: random starting bijections.
        max_iter: alternations per restart.
        random_state: seed of the starts.

    Returns:
        (cells, residual): cells of shape (J, k), the grid cell (c_1, ..., c_k) of each
        component; residual, the weighted residual sum of squares divided by the weighted
        total sum of squares (0 for exactly additive means).
    """
    means = check_array(means, "means", ndim=2)
    weights = check_array(weights, "weights", ndim=1)
    sizes = tuple(int(k) for k in sizes)
    n_joint = means.shape[0]
    if math.prod(sizes) != n_joint or weights.shape[0] != n_joint:
        raise ValueError(
            f"Expected prod(sizes) = J = len(weights) but got sizes {sizes} (product "
            f"{math.prod(sizes)}), {n_joint} means and {weights.shape[0]} weights"
        )
    rng = check_random_state(random_state)
    grid = np.indices(sizes).reshape(len(sizes), -1).T  # (J, k), row-major cells
    design_cells = _main_effects_design(grid, sizes)
    sqrt_w = np.sqrt(weights / weights.sum())[:, None]
    centred = means - (weights / weights.sum()) @ means
    total = float(np.sum(sqrt_w**2 * centred**2)) or 1.0
    best_rss, best_perm = np.inf, np.arange(n_joint)
    for _ in range(max(1, int(n_restarts))):
        perm = rng.permutation(n_joint)  # component l sits in cell perm[l]
        rss = np.inf
        for _ in range(int(max_iter)):
            design = design_cells[perm]
            coef, *_ = np.linalg.lstsq(design * sqrt_w, means * sqrt_w, rcond=None)
            predicted = design_cells @ coef  # (J cells, m)
            cost = (sqrt_w**2) * np.sum((means[:, None, :] - predicted[None]) ** 2, axis=-1)
            rows, cols = linear_sum_assignment(cost)
            new_perm = cols[np.argsort(rows)]
            rss = float(cost[np.arange(n_joint), new_perm].sum())
            if np.array_equal(new_perm, perm):
                break
            perm = new_perm
        if rss < best_rss - 1e-12:
            best_rss, best_perm = rss, perm
    return grid[best_perm], best_rss / total


def facet_basis(
    z: np.ndarray,
    facet_resp: Sequence[np.ndarray],
    facet_dims: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """An affine map s = A (z - b) whose block i carries facet i's effects.

    Facet i's effect vectors (the mean of z given c_i = k minus the overall mean) span the
    subspace in which facet i moves the latent; its first d_i principal directions (after
    whitening z) form block i of a new basis. Facets whose effects span fewer than d_i
    directions get the leftover directions orthogonal to all effects. Each new coordinate is
    scaled to unit variance.

    Args:
        z: array of shape (n, m), m = sum(facet_dims).
        facet_resp: k arrays of shape (n, K_i), the facet responsibilities.
        facet_dims: (d_1, ..., d_k).

    Returns:
        (A, b): A of shape (m, m), invertible; b of shape (m,).
    """
    n, m = z.shape
    b = z.mean(axis=0)
    cov = np.cov(z - b, rowvar=False).reshape(m, m) + 1e-9 * np.eye(m)
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, (z - b).T).T  # (n, m), identity covariance
    blocks: list[list[np.ndarray]] = []
    for resp, d in zip(facet_resp, facet_dims, strict=True):
        mass = resp.sum(axis=0) + 1e-12  # (K,)
        effects = (resp.T @ white) / mass[:, None]  # (K, m); the overall mean is 0
        _, sing, vt = np.linalg.svd(np.sqrt(mass / n)[:, None] * effects, full_matrices=False)
        rank = int(np.sum(sing > 1e-6 * max(float(sing.max(initial=0.0)), 1e-12)))
        blocks.append([vt[j] for j in range(min(d, rank))])
    found = [v for block in blocks for v in block]
    if found:
        q, _ = np.linalg.qr(np.stack(found, axis=1), mode="complete")
        leftover = [q[:, j] for j in range(len(found), m)]
    else:
        leftover = [np.eye(m)[:, j] for j in range(m)]
    for block, d in zip(blocks, facet_dims, strict=True):
        while len(block) < d:
            block.append(leftover.pop(0))
    basis = np.stack([v for block in blocks for v in block], axis=1)  # (m, m) columns
    if np.linalg.cond(basis) > 1e8:  # effects of two facets (nearly) parallel
        basis = basis + 1e-4 * np.eye(m)
    A = np.linalg.solve(basis, np.linalg.inv(chol))  # s = basis^-1 white = A (z - b)
    scale = np.std((z - b) @ A.T, axis=0)
    A = A / np.where(scale > 0, scale, 1.0)[:, None]
    return A, b


def faceted_basis(
    z: np.ndarray,
    var: np.ndarray,
    facet_resp: Sequence[np.ndarray],
    facet_dims: Sequence[int],
) -> np.ndarray:
    """The linear map s = A z under which a clustering fits the faceted prior best.

    With the facets' responsibilities fixed, the faceted prior (facet i's states acting on
    block i of s only, diagonal covariances) has its maximum-likelihood parameters in closed
    form: the responsibility-weighted moments of s. What is left is the profile
    log-likelihood of A, up to a constant,

        n log |det A| - 1/2 sum_i sum_{t in block i} sum_k N_ik log(a_t' C_ik a_t),

    where a_t is row t of A, N_ik the mass of state k of facet i and C_ik the weighted
    covariance of z in that state plus its weighted mean posterior variance ``var``. A
    coordinate that carries another facet's effects, or that mixes axes of unequal spread,
    pays for it in its within-state variances. The profile is maximised by L-BFGS from the
    identity (z's own basis); each row of A is then scaled so that s_t has the variance of
    z_t (the profile does not depend on the rows' scales).

    Args:
        z: array (n, m), the posterior means; m = sum(facet_dims).
        var: array (n, m), the posterior variances.
        facet_resp: k arrays (n, K_i), the facet responsibilities.
        facet_dims: (d_1, ..., d_k).

    Returns:
        A, array (m, m), invertible.
    """
    n, m = z.shape
    rows: list[tuple[int, np.ndarray, np.ndarray]] = []  # (t, N_k (K,), C_k (K, m, m))
    t0 = 0
    for resp, d in zip(facet_resp, facet_dims, strict=True):
        mass = resp.sum(axis=0) + 1e-12
        mean = (resp.T @ z) / mass[:, None]
        centred = z[None, :, :] - mean[:, None, :]  # (K, n, m)
        cov = np.einsum("nk,kni,knj->kij", resp, centred, centred) / mass[:, None, None]
        cov = cov + np.einsum("nk,ni->ki", resp, var)[:, :, None] * np.eye(m) / mass[:, None, None]
        for t in range(t0, t0 + d):
            rows.append((t, mass, cov))
        t0 += d

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        A = flat.reshape(m, m)
        sign, log_det = np.linalg.slogdet(A)
        if sign == 0:
            return np.inf, np.zeros_like(flat)
        value = -n * log_det
        grad = -n * np.linalg.inv(A).T
        for t, mass, cov in rows:
            a = A[t]
            ca = cov @ a  # (K, m)
            quad = np.maximum(ca @ a, 1e-300)  # (K,)
            value += 0.5 * float(mass @ np.log(quad))
            grad[t] += (mass / quad) @ ca
        return value / n, grad.ravel() / n

    result = minimize(objective, np.eye(m).ravel(), jac=True, method="L-BFGS-B")
    A = result.x.reshape(m, m) if np.isfinite(result.fun) else np.eye(m)
    scale = np.std(z @ A.T, axis=0) / np.maximum(np.std(z, axis=0), 1e-12)
    return A / np.where(scale > 0, scale, 1.0)[:, None]

"""Thm E.1: disentangle / canonicalize / check_p2 / AffineMap."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from idvae.identify import (
    AffineMap,
    IdentifiabilityWarning,
    NotIdentifiableError,
    canonicalize,
    check_p2,
    disentangle,
    perm_scale_error,
)
from idvae.mixture import GMM


def random_diagonal_gmm(rng: np.random.Generator, m: int, J: int, spread: float = 2.0) -> GMM:
    w = rng.dirichlet(np.full(J, 2.0))
    mu = spread * rng.normal(size=(J, m))
    var = np.exp(rng.normal(size=(J, m)))
    return GMM(w, mu, var)


def random_invertible(rng: np.random.Generator, m: int) -> np.ndarray:
    A = rng.normal(size=(m, m))
    u, _, vt = np.linalg.svd(A)
    return u @ np.diag(np.exp(rng.uniform(-1, 1, m))) @ vt  # condition number <= e^2


def labelled_estimate(z: GMM, A: np.ndarray, b: np.ndarray, n: int, seed: int) -> GMM:
    """The GMM of A Z + b estimated from n samples by per-component moments."""
    x, lab = z.sample(n, seed, return_labels=True)
    x = x @ A.T + b
    parts = [x[lab == j] for j in range(z.n_components)]
    w = np.array([len(p) for p in parts], dtype=float)
    return GMM(w / w.sum(), [p.mean(0) for p in parts], [np.cov(p.T) for p in parts])


# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(25))
def test_exact_input_recovers_permutation_times_positive_diagonal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, J = int(rng.integers(1, 7)), int(rng.integers(2, 6))
    z = random_diagonal_gmm(rng, m, J)
    # put the truth in canonical form first: then W A must be exactly P D with D > 0
    z = canonicalize(z).pushforward(z)
    A, b = random_invertible(rng, m), rng.normal(size=m)
    for method in ("pair", "joint", "auto"):
        h = disentangle(z.pushforward(A, b), method=method)
        M = h.matrix @ A
        assert perm_scale_error(M, signed=False) < 1e-8
        # exactly one non-zero per row and column, positive
        big = np.abs(M) > 1e-8 * np.abs(M).max()
        assert np.all(big.sum(0) == 1) and np.all(big.sum(1) == 1)
        assert np.all(M[big] > 0)
        # the canonical truth is mapped to itself: M is the identity
        np.testing.assert_allclose(M, np.eye(m), atol=1e-8)


@pytest.mark.parametrize("seed", range(10))
def test_canonical_coordinates_are_invariant_under_affine_reparametrisation(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    m, J = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    z = random_diagonal_gmm(rng, m, J)
    A, b = random_invertible(rng, m), rng.normal(size=m)
    pts = z.sample(20, seed)
    h_z, h_y = disentangle(z), disentangle(z.pushforward(A, b))
    np.testing.assert_allclose(h_y.apply(pts @ A.T + b), h_z.apply(pts), atol=1e-8)
    # canonical form: zero mean, unit variance, non-negative skewness under the mixture
    c = h_z.pushforward(z)
    mean = c.weights @ c.means
    var = c.weights @ (np.einsum("jtt->jt", c.covariances) + c.means**2) - mean**2
    skew = c.weights @ (c.means**3 + 3 * c.means * np.einsum("jtt->jt", c.covariances))
    np.testing.assert_allclose(mean, 0, atol=1e-10)
    np.testing.assert_allclose(var, 1, atol=1e-10)
    assert np.all(skew >= -1e-10)
    assert c.is_diagonal(atol=1e-10)


def test_error_decreases_with_sample_size_on_estimated_mixtures() -> None:
    rng = np.random.default_rng(7)
    m, J = 4, 5
    z = random_diagonal_gmm(rng, m, J, spread=4.0)
    A, b = random_invertible(rng, m), rng.normal(size=m)
    errors = {}
    for n in (2_000, 20_000, 200_000):
        errs = [
            perm_scale_error(disentangle(labelled_estimate(z, A, b, n, s)).matrix @ A)
            for s in range(3)
        ]
        errors[n] = float(np.mean(errs))
    assert errors[2_000] > errors[20_000] > errors[200_000]
    assert errors[200_000] < 0.02
    # using all components beats the best pair on noisy input
    pair = np.mean(
        [
            perm_scale_error(
                disentangle(labelled_estimate(z, A, b, 20_000, s), method="pair").matrix @ A
            )
            for s in range(3)
        ]
    )
    assert errors[20_000] < pair


def test_sklearn_fitted_mixture_is_disentangled() -> None:
    rng = np.random.default_rng(3)
    z = GMM(
        [0.3, 0.3, 0.4],
        [[0.0, 0.0, 0.0], [8.0, 0.0, 4.0], [0.0, 8.0, -4.0]],
        [[1.0, 2.0, 0.5], [2.0, 0.5, 1.0], [0.7, 1.0, 3.0]],
    )
    A, b = random_invertible(rng, 3), rng.normal(size=3)
    x = z.sample(20_000, 0) @ A.T + b
    fitted = GMM.from_sklearn(
        GaussianMixture(3, covariance_type="full", random_state=0, tol=1e-6).fit(x)
    )
    assert check_p2(fitted).holds
    assert perm_scale_error(disentangle(fitted).matrix @ A) < 0.05


# --------------------------------------------------------------------------------------
def test_proportional_covariances_fail_p2() -> None:
    base = np.array([1.0, 2.0, 0.5])
    z = GMM([0.5, 0.3, 0.2], [[0, 0, 0], [3, 1, 0], [0, 3, 2]], [base, 2 * base, 0.5 * base])
    report = check_p2(z)
    assert not report.holds and not report
    assert report.ratio_gap < 1e-6
    assert any("proportional" in r for r in report.reasons)
    with pytest.raises(NotIdentifiableError, match=r"\(P2\) fails"):
        disentangle(z)
    with pytest.warns(IdentifiabilityWarning, match=r"\(P2\) fails"):
        h = disentangle(z, strict=False)
    assert h.dim == 3


def test_single_component_is_not_identifiable() -> None:
    g = GMM([1.0], [[0.0, 0.0]], [[1.0, 2.0]])
    assert not check_p2(g).holds
    with pytest.raises(NotIdentifiableError, match="at least 2 components"):
        disentangle(g)


def test_non_diagonalisable_covariances_are_reported_and_warned() -> None:
    rng = np.random.default_rng(0)
    covs = []
    for _ in range(4):
        L = rng.normal(size=(3, 3))
        covs.append(L @ L.T + 0.1 * np.eye(3))
    g = GMM(np.full(4, 0.25), rng.normal(size=(4, 3)), np.array(covs))
    report = check_p2(g)
    assert not report.holds
    assert report.offdiagonality > 0.3
    assert any("not simultaneously diagonalisable" in r for r in report.reasons)
    with pytest.warns(IdentifiabilityWarning, match="not simultaneously diagonalisable"):
        disentangle(g)


def test_pair_condition_failing_but_joint_unique_warns_and_recovers() -> None:
    # pairs (0,1), (0,2), (1,2) each repeat a variance ratio, so (P2)'s pair condition
    # fails, but no two coordinates have proportional variance profiles across components
    var = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 3.0], [2.0, 3.0, 3.0]])
    z = GMM([0.3, 0.3, 0.4], [[0, 0, 0], [1, 2, 0], [2, 0, 1]], var)
    assert not check_p2(z).holds
    A = random_invertible(np.random.default_rng(1), 3)
    with pytest.warns(IdentifiabilityWarning, match="pair condition fails"):
        h = disentangle(z.pushforward(A), method="joint")
    assert perm_scale_error(h.matrix @ A) < 1e-6


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="idvae.GMM"):
        disentangle(np.eye(2))
    g = GMM([0.5, 0.5], [[0, 0], [1, 1]], [[1, 2], [2, 1]])
    with pytest.raises(ValueError, match="method"):
        disentangle(g, method="svd")


# --------------------------------------------------------------------------------------
def test_affine_map_algebra() -> None:
    rng = np.random.default_rng(0)
    W, c = random_invertible(rng, 3), rng.normal(size=3)
    h = AffineMap(W, c)
    y = rng.normal(size=(5, 3))
    np.testing.assert_allclose(h.apply(y), y @ W.T + c)
    np.testing.assert_allclose(h.apply(y[0]), y[0] @ W.T + c)
    np.testing.assert_allclose(h.inverse().apply(h.apply(y)), y, atol=1e-12)
    g = AffineMap(random_invertible(rng, 3), rng.normal(size=3))
    np.testing.assert_allclose(h.compose(g).apply(y), h.apply(g.apply(y)), atol=1e-12)
    back = AffineMap.from_dict(json.loads(json.dumps(h.to_dict())))
    np.testing.assert_array_equal(back.matrix, h.matrix)
    with pytest.raises(ValueError):
        h.matrix[0, 0] = 1.0  # read-only
    with pytest.raises(ValueError, match="square"):
        AffineMap(np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"offset of shape \(3,\)"):
        AffineMap(W, np.zeros(2))
    with pytest.raises(ValueError, match="3 features"):
        h.apply(np.ones((2, 2)))


def test_perm_scale_error() -> None:
    P = np.eye(3)[[2, 0, 1]]
    assert perm_scale_error(P @ np.diag([2.0, -1.0, 0.5])) == 0.0
    assert perm_scale_error(P @ np.diag([2.0, -1.0, 0.5]), signed=False) > 0.5
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    assert perm_scale_error(np.array([[c, -s], [s, c]])) == pytest.approx(np.sqrt(0.5))


def test_canonicalize_estimator_like_objects() -> None:
    g = GMM([0.5, 0.5], [[0, 0], [2, 1]], [[1.0, 2.0], [3.0, 0.5]])

    class Fitted:
        prior_ = g

    np.testing.assert_allclose(canonicalize(Fitted()).matrix, disentangle(g).matrix)
    with pytest.raises(TypeError, match="prior_"):
        canonicalize(object())


def test_no_warning_on_exact_input() -> None:
    rng = np.random.default_rng(5)
    z = random_diagonal_gmm(rng, 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        disentangle(z.pushforward(random_invertible(rng, 3)))

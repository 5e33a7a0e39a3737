"""Thm F.1: recover_structure, structured_gmm, same_structure."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import scipy.optimize
from sklearn.mixture import GaussianMixture

from idvae.identify import (
    Structure,
    disentangle,
    random_structured_gmm,
    recover_structure,
    same_structure,
    structured_gmm,
)
from idvae.mixture import GMM

# (facet sizes, neighbourhoods): MFCVAE-like blocks and general (P3) graphs, k <= 3, d <= 3
P3_CASES = [
    ((3,), [[0, 1]]),
    ((2, 2), [[0], [1]]),
    ((2, 3), [[0, 1], [2, 3]]),
    ((3, 2, 2), [[0], [1, 2], [3]]),
    ((2, 3), [[0, 1], [1, 2]]),
    ((2, 2, 2), [[0, 1], [1, 2], [2, 0]]),
    ((3, 2, 3), [[0, 3], [1, 3], [2, 3]]),
    ((3, 3), [[0, 1, 2], [2, 3]]),
]


def truth(sizes, nes, joint) -> Structure:
    return Structure(
        n_facets=len(sizes),
        facet_sizes=tuple(sizes),
        joint=np.asarray(joint).reshape(sizes),
        neighbors=tuple(frozenset(n) for n in nes),
        assignment=np.array(list(itertools.product(*[range(d) for d in sizes]))),
        levels=np.zeros((0, 0)),
        meets_p3=True,
        tolerance=0.0,
        gap_ratio=float("inf"),
    )


def shuffled(g: GMM, seed: int) -> tuple[GMM, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(g.n_components)
    return GMM(g.weights[perm], g.means[perm], g.covariances[perm]), perm


def assignment_consistent(found: Structure, true_assignment: np.ndarray) -> bool:
    """Each recovered facet's state is a bijective function of one true facet's state."""
    k = found.n_facets
    for i in range(k):
        matches = []
        for i_true in range(true_assignment.shape[1]):
            pairs = set(zip(found.assignment[:, i], true_assignment[:, i_true], strict=True))
            if len(pairs) == found.facet_sizes[i] == len({p[1] for p in pairs}):
                matches.append(i_true)
        if len(matches) != 1:
            return False
    return True


@pytest.mark.parametrize(("sizes", "nes"), P3_CASES)
@pytest.mark.parametrize("seed", range(3))
def test_exact_recovery(sizes, nes, seed) -> None:
    g = random_structured_gmm(sizes, nes, random_state=seed)
    g_perm, perm = shuffled(g, seed)
    found = recover_structure(g_perm)
    true = truth(sizes, nes, g.weights)
    assert found.meets_p3
    assert found.n_facets == len(sizes)
    assert sorted(found.facet_sizes) == sorted(sizes)
    assert set(found.neighbors) == {frozenset(n) for n in nes}
    assert same_structure(found, true)
    assert assignment_consistent(found, true.assignment[perm])
    np.testing.assert_allclose(found.joint.sum(), 1.0)
    for j in range(g_perm.n_components):  # P(U = u) is the weight of u's component
        assert found.joint[tuple(found.assignment[j])] == g_perm.weights[j]
    json.dumps(found.to_dict())


def test_simulator_faceted_prior_is_recovered() -> None:
    from idvae.simulate import sample_model

    sim = sample_model(
        50, latent_dim=4, obs_dim=6, facets=(2, 3), neighbors=((0, 1), (1, 2, 3)), random_state=0
    )
    found = recover_structure(sim.prior)
    assert same_structure(found, truth((2, 3), [[0, 1], [1, 2, 3]], sim.joint))
    np.testing.assert_array_equal(found.joint, sim.joint)  # both row-major over U


def test_twins_are_merged() -> None:
    # ne(U_1) = ne(U_2): no method can tell U_1, U_2 apart from one 4-state variable
    g = random_structured_gmm((2, 2), [[0, 1], [0, 1]], latent_dim=3, random_state=0)
    found = recover_structure(g)
    assert found.n_facets == 1 and found.facet_sizes == (4,)
    assert found.neighbors == (frozenset({0, 1}),)


def test_subset_neighbourhood_gives_trivial_structure() -> None:
    # ne(U_1) = {0} inside ne(U_2) = {0, 1}: (P3)(c) fails
    g = random_structured_gmm((2, 2), [[0], [0, 1]], random_state=0)
    found = recover_structure(g)
    assert not found.meets_p3
    assert found.n_facets == 1 and found.facet_sizes == (4,)
    np.testing.assert_array_equal(found.joint, g.weights)
    assert any("Kivva" in r for r in found.reasons)


def test_structured_gmm_layout_and_errors() -> None:
    joint = np.array([[0.1, 0.2], [0.3, 0.4]])
    g = structured_gmm(joint, [[0], [1]], [[0.0, 5.0], [1.0, 2.0]], [[1.0, 2.0], [3.0, 4.0]])
    # row-major: component (u1, u2) = (1, 0) is index 2
    np.testing.assert_allclose(g.means[2], [5.0, 1.0])
    np.testing.assert_allclose(np.diag(g.covariances[2]), [2.0, 3.0])
    assert g.weights[2] == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"means\[0\]"):
        structured_gmm(joint, [[0], [1]], [[0.0], [1.0, 2.0]], [[1.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="neighbourhoods"):
        structured_gmm(joint, [[0]], [[0.0, 5.0]], [[1.0, 2.0]])


def test_non_diagonal_input_is_refused() -> None:
    g = GMM([0.5, 0.5], [[0, 0], [3, 3]], [[[1.0, 0.8], [0.8, 1.0]], np.eye(2)])
    with pytest.raises(ValueError, match="diagonal"):
        recover_structure(g)
    with pytest.raises(TypeError, match="GMM"):
        recover_structure(np.eye(2))
    with pytest.raises(ValueError, match="tol"):
        recover_structure(random_structured_gmm((2,), [[0]], random_state=0), tol=-1.0)


def _estimated(g: GMM, n: int, seed: int) -> GMM:
    x, lab = g.sample(n, seed, return_labels=True)
    parts = [x[lab == j] for j in range(g.n_components)]
    w = np.array([len(p) for p in parts], float)
    return GMM(w / w.sum(), [p.mean(0) for p in parts], [np.cov(p.T) for p in parts])


@pytest.mark.parametrize(("sizes", "nes"), [P3_CASES[1], P3_CASES[4], P3_CASES[5]])
def test_recovery_through_an_affine_map_from_samples(sizes, nes) -> None:
    """Estimated mixture of A Z + b -> disentangle -> recover_structure."""
    g = random_structured_gmm(sizes, nes, separation=4.0, random_state=1)
    rng = np.random.default_rng(0)
    m = g.dim
    A, b = rng.normal(size=(m, m)) + 2 * np.eye(m), rng.normal(size=m)
    y_true = g.pushforward(A, b)
    estimated = _estimated(y_true, 40_000, 0)
    h = disentangle(estimated)
    found = recover_structure(h.pushforward(estimated))
    # canonical coordinate r corresponds to true coordinate c (from W A = P D)
    M = h.matrix @ A
    rows, cols = scipy.optimize.linear_sum_assignment(
        -np.abs(M / np.linalg.norm(M, axis=1)[:, None])
    )
    to_canonical = dict(zip(cols.tolist(), rows.tolist(), strict=True))
    true_nes = [[to_canonical[t] for t in ne] for ne in nes]
    assert found.meets_p3 and np.isfinite(found.gap_ratio)
    assert same_structure(found, truth(sizes, true_nes, g.weights), atol=0.02)


def test_recovery_from_sklearn_fit() -> None:
    g = random_structured_gmm((2, 2), [[0], [1]], separation=5.0, random_state=2)
    x = g.sample(8_000, 0)
    fitted = GMM.from_sklearn(
        GaussianMixture(4, covariance_type="diag", n_init=2, random_state=0).fit(x)
    )
    found = recover_structure(fitted)
    assert same_structure(found, truth((2, 2), [[0], [1]], g.weights), atol=0.03)


def test_single_component_and_no_false_facets_on_noisy_k1_mixtures() -> None:
    s = recover_structure(GMM([1.0], [[0.0, 1.0]], [[1.0, 2.0]]))
    assert s.n_facets == 0 and s.joint == 1.0 and s.levels.shape == (1, 2)
    # an unstructured mixture (every coordinate depends on the one U) estimated from
    # samples must not be split into spurious facets
    for seed in range(10):
        rng = np.random.default_rng(seed)
        J, m = int(rng.integers(3, 7)), int(rng.integers(2, 4))
        z = GMM(
            rng.dirichlet(np.full(J, 3.0)),
            3 * rng.normal(size=(J, m)),
            np.exp(rng.uniform(-0.7, 0.7, (J, m))),
        )
        found = recover_structure(_estimated(z, 5_000, seed))
        assert found.n_facets == 1 and found.facet_sizes == (J,)

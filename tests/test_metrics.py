"""Tests of idvae.metrics against the definitions of App. J.1 (MCC, ΔL2, distAff,L2)."""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.optimize import check_grad
from scipy.stats import spearmanr
from sklearn.cross_decomposition import CCA as SklearnCCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from idvae import GMM
from idvae.metrics import (
    ari,
    cca,
    cluster_accuracy,
    correlation_matrix,
    dist_aff_l2,
    gmm_l2_distance,
    match_coordinates,
    mcc,
    nmi,
)
from idvae.metrics._l2 import _AffineObjective, _whiten


def random_gmm(rng, n_components=3, dim=2, spread=2.0):
    weights = rng.dirichlet(2.0 * np.ones(n_components))
    means = rng.normal(size=(n_components, dim)) * spread
    a = rng.normal(size=(n_components, dim, dim))
    covs = a @ np.swapaxes(a, 1, 2) / dim + 0.2 * np.eye(dim)
    return GMM(weights, means, covs)


def random_invertible(rng, dim, log10_scale=0.0):
    """A random invertible matrix with columns scaled by 10**U(-s, s)."""
    while True:
        a = rng.normal(size=(dim, dim))
        if np.linalg.cond(a) < 50:
            return a @ np.diag(10.0 ** rng.uniform(-log10_scale, log10_scale, size=dim))


def permuted(p, perm):
    return GMM(p.weights[perm], p.means[perm], p.covariances[perm])


# --------------------------------------------------------------------------------------------
# MCC
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
@pytest.mark.parametrize("out_of_sample", [True, False])
def test_strong_mcc_is_one_for_permuted_flipped_rescaled_shifted_copy(
    rng, correlation, out_of_sample
):
    z = rng.standard_t(df=5, size=(2000, 4))
    z_b = z[:, [2, 0, 3, 1]] * np.array([-3.0, 0.01, 7.0, -250.0]) + np.array([1, -5, 9, 0.3])
    value = mcc(z, z_b, correlation=correlation, out_of_sample=out_of_sample, random_state=0)
    assert value == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("alignment", ["cca", "affine"])
def test_weak_mcc_is_one_under_affine_map_while_strong_mcc_drops(rng, alignment):
    z = rng.uniform(-1, 1, size=(4000, 5))
    A = random_invertible(rng, 5, log10_scale=1.0)
    z_b = z @ A.T + rng.normal(size=5)
    weak = mcc(z, z_b, alignment=alignment, random_state=1)
    strong = mcc(z, z_b, alignment="none", random_state=1)
    assert weak == pytest.approx(1.0, abs=1e-9)
    assert strong < 0.9


@pytest.mark.parametrize("alignment", ["none", "cca", "affine"])
@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
def test_mcc_of_independent_latents_is_of_order_one_over_sqrt_n(rng, alignment, correlation):
    n = 8000
    z_a, z_b = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    value = mcc(z_a, z_b, alignment=alignment, correlation=correlation, random_state=0)
    # Out of sample, each matched |corr| is |N(0, 1/(n/2))|: mean sqrt(2/pi)/sqrt(n/2).
    assert 0 <= value < 4.0 / np.sqrt(n / 2)


def test_out_of_sample_protocol_removes_the_overfitting_of_the_alignment(rng):
    # 40 samples, 10 dims: an in-sample affine fit explains much of pure noise.
    z_a, z_b = rng.normal(size=(40, 10)), rng.normal(size=(40, 10))
    in_sample = mcc(z_a, z_b, alignment="affine", out_of_sample=False)
    out_of_sample = np.mean([mcc(z_a, z_b, alignment="affine", random_state=s) for s in range(20)])
    assert in_sample > 0.45
    assert out_of_sample < in_sample - 0.15


def test_mcc_is_deterministic_given_random_state(rng):
    z_a = rng.normal(size=(300, 3))
    z_b = z_a @ rng.normal(size=(3, 3)) + rng.normal(size=(300, 3))
    first = mcc(z_a, z_b, alignment="cca", random_state=7)
    assert mcc(z_a, z_b, alignment="cca", random_state=7) == first
    assert mcc(z_a, z_b, alignment="cca", random_state=np.random.default_rng(7)) == first


def test_spearman_correlation_matrix_agrees_with_scipy(rng):
    z_a = rng.normal(size=(300, 3))
    z_b = np.column_stack([np.round(z_a[:, 0] * 2), np.exp(z_a[:, 1]), rng.normal(size=300)])
    ours = correlation_matrix(z_a, z_b, correlation="spearman")
    expected = spearmanr(z_a, z_b).statistic[:3, 3:]  # ties in column 0 of z_b
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    # In sample, strong Spearman MCC is the Hungarian mean over scipy's matrix.
    best = max(
        np.mean(np.abs(expected[range(3), list(perm)])) for perm in itertools.permutations(range(3))
    )
    value = mcc(z_a, z_b, correlation="spearman", out_of_sample=False)
    assert value == pytest.approx(best, abs=1e-12)


def test_pearson_correlation_matrix_agrees_with_numpy_and_constant_column_gives_zero(rng):
    z_a = rng.normal(size=(100, 2))
    z_b = np.column_stack([z_a[:, 0] + rng.normal(size=100), np.full(100, 3.0)])
    corr = correlation_matrix(z_a, z_b)
    expected = np.corrcoef(z_a.T, z_b[:, :1].T)[:2, 2]
    np.testing.assert_allclose(corr[:, 0], expected, atol=1e-12)
    np.testing.assert_array_equal(corr[:, 1], 0.0)


def test_closed_form_cca_agrees_with_sklearn(rng):
    x = rng.normal(size=(400, 3))
    y = x @ rng.normal(size=(3, 4)) + rng.normal(size=(400, 4))
    ours = cca(x, y)
    reference = SklearnCCA(n_components=3, max_iter=5000, tol=1e-12).fit(x, y)
    ref_x, ref_y = reference.transform(x, y)
    ours_x, ours_y = ours.transform(x, y)
    ref_corr = [np.corrcoef(ref_x[:, i], ref_y[:, i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(ours.correlations, ref_corr, atol=1e-8)
    for i in range(3):  # the same variates, up to sign and scale
        assert abs(np.corrcoef(ours_x[:, i], ref_x[:, i])[0, 1]) > 1 - 1e-8
        assert abs(np.corrcoef(ours_y[:, i], ref_y[:, i])[0, 1]) > 1 - 1e-8
    # Variates are uncorrelated with unit variance; in-sample weak MCC is their mean corr.
    np.testing.assert_allclose(np.cov(ours_x.T), np.eye(3), atol=1e-10)
    assert mcc(x, y, alignment="cca", out_of_sample=False) == pytest.approx(
        ours.correlations.mean(), abs=1e-12
    )


def test_cca_handles_rank_deficient_sides(rng):
    x = rng.normal(size=(200, 2))
    x = np.column_stack([x, x[:, 0] + x[:, 1]])  # rank 2 in 3 columns
    y = x[:, :2] @ rng.normal(size=(2, 2))
    model = cca(x, y)
    assert model.correlations.shape == (2,)
    np.testing.assert_allclose(model.correlations, 1.0, atol=1e-10)
    assert mcc(x, y, alignment="cca", random_state=0) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("alignment", ["none", "cca", "affine"])
def test_a_collapsed_coordinate_counts_as_zero_correlation(rng, alignment):
    z = rng.normal(size=(1000, 3))
    z_b = np.column_stack([z[:, 0], 2 * z[:, 1], np.full(1000, 0.5)])  # z's 3rd axis lost
    value = mcc(z, z_b, alignment=alignment, random_state=0)
    # "affine" predicts the lost axis from noise: a chance correlation of order 1/sqrt(500).
    assert value == pytest.approx(2 / 3, abs=3 / np.sqrt(500) / 3)


def test_mcc_with_different_dimensions_matches_the_smaller_side(rng):
    z = rng.normal(size=(1000, 3))
    assert mcc(z, -z[:, [2, 0]], random_state=0) == pytest.approx(1.0)
    assert mcc(z, z[:, [1]] * 4 + 1, alignment="cca", random_state=0) == pytest.approx(1.0)
    # "affine" maps z_b onto z_a: two coordinates cannot explain three.
    assert mcc(z[:, :2], z, alignment="affine", random_state=0) == pytest.approx(1.0)
    assert mcc(z, z[:, :2], alignment="affine", random_state=0) < 0.8


def test_match_coordinates_recovers_permutation_and_signs(rng):
    z = rng.normal(size=(500, 4))
    perm_true = np.array([3, 1, 0, 2])
    z_b = np.empty_like(z)
    z_b[:, perm_true] = z * np.array([-1.0, 2.0, -0.5, 1.0])
    perm, signs = match_coordinates(z, z_b)
    np.testing.assert_array_equal(perm, perm_true)
    np.testing.assert_array_equal(signs, [-1.0, 1.0, -1.0, 1.0])
    np.testing.assert_allclose(np.corrcoef((z_b[:, perm] * signs).T, z.T).diagonal(4), 1.0)
    perm, signs = match_coordinates(z, z[:, [2]])
    np.testing.assert_array_equal(perm, [-1, -1, 0, -1])
    np.testing.assert_array_equal(signs, [0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"z_a": np.ones((10, 2)) * np.nan}, ValueError, "finite"),
        ({"z_a": np.ones(10)}, ValueError, "2-D"),
        ({"z_b": np.ones((9, 2))}, ValueError, "same samples"),
        ({"z_a": np.ones((3, 2)), "z_b": np.ones((3, 2))}, ValueError, "at least 4"),
        ({"alignment": "procrustes"}, ValueError, "alignment"),
        ({"correlation": "kendall"}, ValueError, "correlation"),
        ({"random_state": 1.5}, TypeError, "random_state"),
        ({"out_of_sample": "yes"}, TypeError, "out_of_sample"),
        ({"z_a": [["a", "b"]] * 10}, TypeError, "numbers"),
    ],
)
def test_mcc_rejects_bad_input(rng, kwargs, error, match):
    args = {"z_a": rng.normal(size=(10, 2)), "z_b": rng.normal(size=(10, 2))} | kwargs
    with pytest.raises(error, match=match):
        mcc(args.pop("z_a"), args.pop("z_b"), **args)


# --------------------------------------------------------------------------------------------
# ΔL2, eq. (34)
# --------------------------------------------------------------------------------------------
def test_gmm_l2_distance_agrees_with_monte_carlo(rng):
    p, q = random_gmm(rng, 3, 2), random_gmm(rng, 2, 2)
    n = 200_000
    xp, xq = p.sample(n, rng), q.sample(n, rng)
    # ||p - q||² = E_p[p - q] - E_q[p - q]
    fp = p.pdf(xp) - q.pdf(xp)
    fq = p.pdf(xq) - q.pdf(xq)
    estimate = fp.mean() - fq.mean()
    stderr = np.sqrt(fp.var() / n + fq.var() / n)
    exact = gmm_l2_distance(p, q, normalized=False) ** 2
    assert abs(estimate - exact) < 3 * stderr
    norm_p = np.sqrt(np.mean(p.pdf(xp)))
    norm_q = np.sqrt(np.mean(q.pdf(xq)))
    # eq. (34): ΔL2 = ||p - q|| / (||p||^{1/2} ||q||^{1/2})
    assert gmm_l2_distance(p, q) == pytest.approx(
        np.sqrt(exact) / np.sqrt(norm_p * norm_q), rel=0.01
    )


def test_gmm_l2_distance_agrees_with_numerical_integration_in_1d():
    p = GMM([0.3, 0.7], [[0.0], [2.0]], [[[1.0]], [[0.25]]])
    q = GMM([1.0], [[1.0]], [[[2.0]]])

    def sq(f):
        return integrate.quad(lambda t: f(np.array([[t]]))[0] ** 2, -20, 20, limit=200)[0]

    diff = sq(lambda x: p.pdf(x) - q.pdf(x))
    expected = np.sqrt(diff) / (sq(p.pdf) * sq(q.pdf)) ** 0.25
    assert gmm_l2_distance(p, q) == pytest.approx(expected, rel=1e-7)
    assert gmm_l2_distance(p, q, normalized=False) == pytest.approx(np.sqrt(diff), rel=1e-7)


def test_gmm_l2_distance_is_symmetric_zero_on_equal_positive_otherwise(rng):
    p, q = random_gmm(rng, 3, 3), random_gmm(rng, 4, 3)
    assert gmm_l2_distance(p, p) == 0.0
    assert gmm_l2_distance(p, permuted(p, [2, 0, 1])) < 1e-7
    assert gmm_l2_distance(p, q) == pytest.approx(gmm_l2_distance(q, p), rel=1e-12)
    assert gmm_l2_distance(p, q) > 0.1
    shifted = GMM(p.weights, p.means + 1e-3, p.covariances)
    assert 0 < gmm_l2_distance(p, shifted) < 1e-2


def test_gmm_l2_distance_is_invariant_to_a_common_affine_map(rng):
    p, q = random_gmm(rng, 3, 2), random_gmm(rng, 2, 2)
    B, c = random_invertible(rng, 2, log10_scale=1.0), rng.normal(size=2)
    pb, qb = p.pushforward(B, c), q.pushforward(B, c)
    assert gmm_l2_distance(pb, qb) == pytest.approx(gmm_l2_distance(p, q), rel=1e-9)
    # the unnormalised norm scales by |det B|^{-1/2}
    ratio = gmm_l2_distance(pb, qb, normalized=False) / gmm_l2_distance(p, q, normalized=False)
    assert ratio == pytest.approx(abs(np.linalg.det(B)) ** -0.5, rel=1e-9)


def test_gmm_l2_distance_rejects_bad_input(rng):
    with pytest.raises(ValueError, match="equal dimension"):
        gmm_l2_distance(random_gmm(rng, 2, 2), random_gmm(rng, 2, 3))
    with pytest.raises(TypeError, match="idvae.GMM"):
        gmm_l2_distance(random_gmm(rng, 2, 2), np.ones((2, 2)))


# --------------------------------------------------------------------------------------------
# distAff,L2
# --------------------------------------------------------------------------------------------
def test_affine_objective_gradient_matches_finite_differences(rng):
    p, q = random_gmm(rng, 4, 3), random_gmm(rng, 3, 3)
    objective = _AffineObjective(_whiten(p), _whiten(q))
    theta = np.concatenate([(np.eye(3) + 0.3 * rng.normal(size=(3, 3))).ravel(), [0.1, 0, -0.2]])
    error = check_grad(lambda t: objective(t)[0], lambda t: objective(t)[1], theta)
    assert error < 1e-6 * np.linalg.norm(objective(theta)[1])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_components=st.integers(1, 5),
    dim=st.integers(1, 4),
    log10_scale=st.sampled_from([0.0, 1.0, 2.0]),
    overall=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_dist_aff_l2_is_zero_for_affine_images(n_components, dim, log10_scale, overall, seed):
    rng = np.random.default_rng(seed)
    p = random_gmm(rng, n_components, dim)
    A = overall * random_invertible(rng, dim, log10_scale)
    b = rng.normal(size=dim) * 10
    q = permuted(p.pushforward(A, b), rng.permutation(n_components))
    assert dist_aff_l2(p, q) < 1e-6


def test_dist_aff_l2_recovers_the_map(rng):
    p = random_gmm(rng, 4, 2)
    A, b = random_invertible(rng, 2, 1.0), rng.normal(size=2)
    distance, A_hat, b_hat = dist_aff_l2(p, p.pushforward(A, b), return_map=True)
    assert distance < 1e-6
    np.testing.assert_allclose(A_hat, A, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b_hat, b, rtol=1e-5, atol=1e-7)


def test_dist_aff_l2_recovers_25_components_in_10_dimensions(rng):
    p = random_gmm(rng, 25, 10)
    A, b = random_invertible(rng, 10, 1.0), rng.normal(size=10)
    q = permuted(p.pushforward(A, b), rng.permutation(25))
    distance, A_hat, b_hat = dist_aff_l2(p, q, return_map=True)
    assert distance < 1e-6
    np.testing.assert_allclose(A_hat, A, rtol=1e-5, atol=1e-6 * np.abs(A).max())
    assert gmm_l2_distance(p.pushforward(A_hat, b_hat), q) < 1e-5


def test_dist_aff_l2_is_positive_for_mixtures_no_affine_map_relates(rng):
    # Weights are invariant under affine maps: 50/50 cannot become 90/10.
    p = GMM([0.5, 0.5], [[-3.0, 0.0], [3.0, 0.0]], [np.eye(2), np.eye(2)])
    q = GMM([0.9, 0.1], [[-3.0, 0.0], [3.0, 0.0]], [np.eye(2), np.eye(2)])
    assert dist_aff_l2(p, q) > 0.2
    # One Gaussian cannot be mapped onto a bimodal mixture (J != J').
    single = GMM([1.0], [[0.0, 0.0]], [np.eye(2)])
    assert dist_aff_l2(single, p) > 0.3


def test_dist_aff_l2_never_exceeds_the_unmapped_distance_and_is_coordinate_free(rng):
    p, q = random_gmm(rng, 3, 2), random_gmm(rng, 3, 2)
    d = dist_aff_l2(p, q)
    assert 0 < d <= gmm_l2_distance(p, q) + 1e-12
    B, C = random_invertible(rng, 2, 1.0), random_invertible(rng, 2, 1.0)
    d_moved = dist_aff_l2(p.pushforward(B, rng.normal(size=2)), q.pushforward(C, [1.0, 2.0]))
    assert d_moved == pytest.approx(d, abs=1e-6)


def test_dist_aff_l2_with_different_numbers_of_components(rng):
    p = random_gmm(rng, 2, 2, spread=4.0)
    # q: p's two components, moved, plus a third far-away one of small weight.
    moved = p.pushforward(random_invertible(rng, 2), [1.0, -1.0])
    extra_mean = moved.means.mean(axis=0) + 30.0
    q = GMM(
        np.append(0.95 * moved.weights, 0.05),
        np.vstack([moved.means, extra_mean]),
        np.concatenate([moved.covariances, np.eye(2)[None]]),
    )
    d_pq, d_qp = dist_aff_l2(p, q), dist_aff_l2(q, p)
    assert 0 < d_pq < 0.2
    assert 0 < d_qp < 0.2


def test_dist_aff_l2_aligns_a_mixture_that_lost_a_component(rng):
    # J = 8 > 6: the assignment path. q is A#p without its lightest component.
    p = random_gmm(rng, 8, 3, spread=3.0)
    A, b = random_invertible(rng, 3, 1.0), rng.normal(size=3)
    image = p.pushforward(A, b)
    keep = np.argsort(image.weights)[1:]
    q = GMM(
        image.weights[keep] / image.weights[keep].sum(), image.means[keep], image.covariances[keep]
    )
    distance, A_hat, _ = dist_aff_l2(p, q, return_map=True)
    assert 0 < distance <= gmm_l2_distance(image, q) + 1e-9  # at least as good as the truth
    np.testing.assert_allclose(A_hat, A, atol=0.05 * np.abs(A).max())


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_components=st.integers(1, 9),
    dim=st.integers(1, 6),
    log10_scale=st.sampled_from([0.0, 1.0, 2.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_dist_aff_l2_is_zero_for_affine_images_wide(n_components, dim, log10_scale, seed):
    rng = np.random.default_rng(seed)
    p = random_gmm(rng, n_components, dim)
    A = random_invertible(rng, dim, log10_scale)
    q = permuted(p.pushforward(A, rng.normal(size=dim)), rng.permutation(n_components))
    assert dist_aff_l2(p, q) < 1e-6


def test_dist_aff_l2_rejects_bad_input(rng):
    p = random_gmm(rng, 2, 2)
    with pytest.raises(ValueError, match="equal dimension"):
        dist_aff_l2(p, random_gmm(rng, 2, 3))
    with pytest.raises(TypeError, match="idvae.GMM"):
        dist_aff_l2({"weights": [1.0]}, p)
    with pytest.raises(ValueError, match="n_starts"):
        dist_aff_l2(p, p, n_starts=0)


# --------------------------------------------------------------------------------------------
# clustering
# --------------------------------------------------------------------------------------------
def test_cluster_accuracy_is_one_for_relabelled_clusters(rng):
    y = rng.integers(0, 4, size=200)
    relabel = np.array([2, 3, 0, 1])
    assert cluster_accuracy(y, relabel[y]) == 1.0
    names = np.array(["a", "b", "c", "d"])
    assert cluster_accuracy(names[y], relabel[y] + 10) == 1.0
    assert nmi(y, relabel[y]) == pytest.approx(1.0)
    assert ari(y, relabel[y]) == pytest.approx(1.0)


def test_cluster_accuracy_counts_the_best_one_to_one_matching():
    assert cluster_accuracy([0, 0, 1, 1], [1, 1, 1, 0]) == 0.75
    # more predicted clusters than true ones: the surplus cluster is all errors
    assert cluster_accuracy([0, 0, 0, 1, 1, 1], [0, 0, 2, 1, 1, 1]) == pytest.approx(5 / 6)
    # fewer predicted clusters: one true class stays unmatched
    assert cluster_accuracy([0, 1, 2, 2], [5, 5, 7, 7]) == 0.75


def test_cluster_accuracy_agrees_with_brute_force(rng):
    for _ in range(20):
        y_true, y_pred = rng.integers(0, 3, size=30), rng.integers(0, 4, size=30)
        best = max(
            np.mean(np.array([mapping[v] for v in y_pred]) == y_true)
            for perm in itertools.permutations([0, 1, 2, -1])
            for mapping in [dict(zip(range(4), perm, strict=True))]
        )
        assert cluster_accuracy(y_true, y_pred) == pytest.approx(best)


def test_nmi_and_ari_wrap_sklearn(rng):
    y_true, y_pred = rng.integers(0, 3, size=100), rng.integers(0, 3, size=100)
    assert nmi(y_true, y_pred) == normalized_mutual_info_score(y_true, y_pred)
    assert ari(y_true, y_pred) == adjusted_rand_score(y_true, y_pred)


@pytest.mark.parametrize("func", [cluster_accuracy, nmi, ari])
def test_clustering_metrics_reject_bad_input(func):
    with pytest.raises(ValueError, match="equal length"):
        func([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        func([[0, 1]], [[0, 1]])
    with pytest.raises(ValueError, match="finite"):
        func([0.0, np.nan], [0, 1])
    with pytest.raises(ValueError, match="at least 1"):
        func([], [])
    with pytest.raises(TypeError, match="labels"):
        func("abc", [0, 1, 2])

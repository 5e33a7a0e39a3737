import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from idvae import GMM
from idvae.mixture import log_l2_inner


def random_gmm(rng, n_components=3, dim=2, diagonal=False):
    weights = rng.dirichlet(np.ones(n_components))
    means = rng.normal(size=(n_components, dim)) * 3
    if diagonal:
        covs = rng.uniform(0.2, 2.0, size=(n_components, dim))
    else:
        a = rng.normal(size=(n_components, dim, dim))
        covs = a @ np.swapaxes(a, 1, 2) + 0.3 * np.eye(dim)
    return GMM(weights, means, covs)


def test_logpdf_matches_scipy(rng):
    p = random_gmm(rng, 4, 3)
    x = rng.normal(size=(50, 3)) * 3
    expected = np.log(
        sum(
            w * multivariate_normal(m, c).pdf(x)
            for w, m, c in zip(p.weights, p.means, p.covariances, strict=True)
        )
    )
    np.testing.assert_allclose(p.logpdf(x), expected, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied", "spherical"])
def test_from_sklearn_agrees_with_score_samples(rng, covariance_type):
    x = np.concatenate([rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 4])
    gm = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(x)
    np.testing.assert_allclose(GMM.from_sklearn(gm).logpdf(x), gm.score_samples(x), rtol=1e-8)


def test_pushforward_is_law_of_affine_image(rng):
    p = random_gmm(rng, 3, 2)
    A = rng.normal(size=(2, 2))
    b = rng.normal(size=2)
    q = p.pushforward(A, b)
    x = rng.normal(size=(20, 2))
    # change of variables: q(Ax+b) |det A| = p(x)
    np.testing.assert_allclose(
        q.logpdf(x @ A.T + b) + np.log(abs(np.linalg.det(A))), p.logpdf(x), rtol=1e-9
    )


def test_marginal_matches_sample_moments(rng):
    p = random_gmm(rng, 2, 3)
    m = p.marginal([2, 0])
    assert m.dim == 2
    np.testing.assert_array_equal(m.means, p.means[:, [2, 0]])
    assert m.covariances[0, 0, 1] == p.covariances[0, 2, 0]


def test_sample_is_deterministic_and_has_right_mean(rng):
    p = random_gmm(rng, 3, 2)
    a = p.sample(20000, random_state=1)
    b = p.sample(20000, random_state=1)
    np.testing.assert_array_equal(a, b)
    mean = p.weights @ p.means
    np.testing.assert_allclose(a.mean(0), mean, atol=0.1)


def test_log_l2_inner_is_symmetric_and_matches_monte_carlo(rng):
    p, q = random_gmm(rng, 2, 2), random_gmm(rng, 3, 2)
    assert log_l2_inner(p, q) == pytest.approx(log_l2_inner(q, p), rel=1e-12)
    x = p.sample(200000, random_state=2)
    vals = q.pdf(x)
    se = vals.std() / np.sqrt(len(vals))
    assert abs(np.exp(log_l2_inner(p, q)) - vals.mean()) < 4 * se


def test_immutable(rng):
    p = random_gmm(rng)
    with pytest.raises(ValueError):
        p.weights[0] = 1.0


@pytest.mark.parametrize(
    "args, match",
    [
        (([0.5, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]]), "summing to 1"),
        (([-0.5, 1.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]]), "positive weights"),
        (([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]), "positive definite"),
        (([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]]), "symmetric"),
        (([0.5, 0.5], [[0.0], [1.0]], [[[1.0]]]), "covariances of shape"),
        (([1.0], [[np.nan]], [[[1.0]]]), "finite"),
    ],
)
def test_constructor_validates(args, match):
    with pytest.raises(ValueError, match=match):
        GMM(*args)


def test_gmm_leaves_the_callers_arrays_writable():
    weights, means, covs = np.array([0.5, 0.5]), np.zeros((2, 2)), np.stack([np.eye(2)] * 2)
    means[1] = 3.0
    gmm = GMM(weights, means, covs)
    assert means.flags.writeable and covs.flags.writeable and weights.flags.writeable
    means[0] = 7.0  # the caller's array is the caller's: the mixture keeps its own copy
    assert gmm.means[0, 0] == 0.0 and not gmm.means.flags.writeable

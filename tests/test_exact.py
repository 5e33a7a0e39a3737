import json
import math

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import kstest, norm
from typer.testing import CliRunner

from idvae.exact import (
    Grid,
    ToyModel,
    canonical_form,
    density_distance,
    disagreement_mass,
    equivalent,
    grid_search,
    injectivity,
    mle_study,
    population_nll,
    profile_nll,
    quadrature_nodes,
    quick_grid,
    sample_nll,
    simplex_grid,
    total_variation,
)


def random_model(rng, n_components=None, n_neurons=2, flat=False):
    """A random toy model; ``flat`` zeroes some alpha/beta to create flat pieces."""
    J = int(rng.integers(1, 4)) if n_components is None else n_components
    alpha = rng.normal(0, 1, n_neurons)
    beta = rng.normal(0, 1.2, n_neurons)
    if flat:
        k = rng.integers(n_neurons)
        if rng.random() < 0.5:
            alpha[k] = 0.0
        else:
            beta[k] = 0.0
    return ToyModel(
        rng.dirichlet(np.ones(J)),
        rng.normal(0, 1.5, J),
        rng.uniform(0.3, 1.2, J),
        alpha,
        beta,
        rng.normal(0, 1, n_neurons),
        rng.uniform(0.15, 0.8),
    )


def quad_pdf(model, x):
    """p(x) = sum_j w_j int N(z; mu_j, s_j^2) N(x; f(z), sigma^2) dz by adaptive quadrature,
    split at the kinks, at the mean and where f(z) = x on each piece."""
    sigma = float(model.noise_std)
    kinks = [k for k in np.atleast_1d(model.kinks()) if np.isfinite(k)]
    grid = np.linspace(-60, 60, 24001)
    f_grid = model.decoder(grid)
    crossings = list(grid[:-1][np.diff(np.sign(f_grid - x)) != 0])
    total = 0.0
    for w, mu, s in zip(model.weights, model.means, model.stds, strict=True):
        if w == 0:
            continue
        lo, hi = mu - 12 * s, mu + 12 * s
        pts = sorted({lo, hi, mu, *[p for p in kinks + crossings if lo < p < hi]})

        def integrand(z, mu=mu, s=s):
            return norm.pdf(z, mu, s) * norm.pdf(x, model.decoder(np.array([z]))[0], sigma)

        for a, b in zip(pts[:-1], pts[1:], strict=True):
            total += w * integrate.quad(integrand, a, b, epsabs=0, epsrel=1e-13, limit=400)[0]
    return total


# -- closed form ------------------------------------------------------------------------------
@pytest.mark.parametrize("flat", [False, True])
def test_closed_form_matches_adaptive_quadrature(flat):
    rng = np.random.default_rng(11 + flat)
    worst = 0.0
    for _ in range(8):
        model = random_model(rng, flat=flat)
        x = model.sample(3, rng)  # points in the bulk of the density
        expected = np.array([quad_pdf(model, xi) for xi in x])
        worst = max(worst, float(np.max(np.abs(model.pdf(x) / expected - 1))))
    assert worst <= 1e-8


def test_closed_form_special_cases():
    x = np.array([-1.3, -0.2, 0.0, 0.4, 1.7, 3.0])
    # alpha = 0 and beta = 0 with pi <= 0: f = 0, X = noise
    off = ToyModel([1.0], [0.3], [0.7], [0.0, 2.0], [1.0, 0.0], [0.5, -1.0], 0.4)
    np.testing.assert_allclose(off.pdf(x), norm.pdf(x, 0, 0.4), rtol=1e-12)
    # beta = 0 with pi > 0: a constant neuron alpha * pi
    const = ToyModel([1.0], [0.3], [0.7], [0.5, 0.0], [0.0, 1.0], [2.0, 0.0], 0.4)
    np.testing.assert_allclose(const.pdf(x), norm.pdf(x, 1.0, 0.4), rtol=1e-12)
    # kink 80 std left of the bulk: f(z) = 2 z + 81 there, X ~ N(2 mu + 81, 4 s^2 + sigma^2)
    affine = ToyModel([1.0], [0.3], [0.5], [2.0, 0.0], [1.0, 1.0], [40.5, 0.0], 0.3)
    np.testing.assert_allclose(
        affine.logpdf(x + 81), norm.logpdf(x + 81, 2 * 0.3 + 81, math.sqrt(1.09)), rtol=1e-12
    )
    # a neuron inactive over the whole bulk (kink 40 std away) equals no neuron at all
    a = ToyModel([1.0], [0.0], [0.5], [1.0, 3.0], [1.0, 1.0], [0.0, -20.0], 0.3)
    b = ToyModel([1.0], [0.0], [0.5], [1.0, 0.0], [1.0, 1.0], [0.0, -20.0], 0.3)
    np.testing.assert_allclose(a.logpdf(x), b.logpdf(x), rtol=1e-12)
    # f = ReLU(z), Z ~ N(0, 1): an atom of 1/2 at 0 plus a half-normal, blurred by noise:
    # p(x) = N(x; 0, s2) / 2 + N(x; 0, 1 + s2) Phi(x / (sigma sqrt(1 + s2)))
    relu = ToyModel([1.0], [0.0], [1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0], 0.5)
    expected = 0.5 * norm.pdf(x, 0, 0.5) + norm.pdf(x, 0, math.sqrt(1.25)) * norm.cdf(
        x / (0.5 * math.sqrt(1.25))
    )
    np.testing.assert_allclose(relu.pdf(x), expected, rtol=1e-12)


def test_closed_form_with_kinks_at_the_component_means():
    # both kinks sit exactly at a component's mean, inside the bulk
    model = ToyModel([0.4, 0.6], [-1.0, 1.5], [0.6, 0.4], [1.3, -0.8], [2.0, -1.0], [2.0, 1.5], 0.2)
    np.testing.assert_allclose(np.sort(model.kinks()), [-1.0, 1.5])
    x = np.array([-0.9, -0.2, 0.0, 0.3, 1.1, 2.4])
    expected = np.array([quad_pdf(model, xi) for xi in x])
    np.testing.assert_allclose(model.pdf(x), expected, rtol=1e-8)


def test_log_density_is_accurate_in_far_tails():
    # log(Phi(hi) - Phi(lo)) is formed in the tail where it does not cancel
    model = ToyModel([1.0], [0.0], [1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0], 0.1)
    x = np.array([40.0, 80.0])  # ~400 and ~800 std of Z out: p underflows, log p does not
    log_p = model.logpdf(x)
    assert np.all(np.isfinite(log_p))
    # for x >> 0 the density is the affine piece, N(x; 0, 1 + 0.01) times Phi(~x)
    np.testing.assert_allclose(log_p, norm.logpdf(x, 0, math.sqrt(1.01)), rtol=1e-10)


def test_density_integrates_to_one():
    rng = np.random.default_rng(3)
    for _ in range(20):
        model = random_model(rng, flat=bool(rng.integers(2)))
        x, w = quadrature_nodes(model)
        assert abs(w @ model.pdf(x) - 1.0) < 1e-10


def test_batched_equals_loop():
    rng = np.random.default_rng(4)
    models = [random_model(rng, n_components=3, flat=i % 2 == 0) for i in range(7)]
    batch = ToyModel.stack(models)
    x = np.linspace(-6, 6, 101)
    expected = np.stack([m.logpdf(x) for m in models])
    np.testing.assert_allclose(batch.logpdf(x), expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(batch.decoder(x), np.stack([m.decoder(x) for m in models]))
    assert len(batch) == 7 and equivalent(batch[2], models[2], 1e-12)
    assert batch.component_logpdf(x).shape == (7, 3, 101)


def test_samples_follow_the_density():
    model = ToyModel([0.3, 0.7], [-1.0, 1.0], [0.4, 0.6], [1.0, -0.7], [1.5, 0.8], [0.2, -0.5], 0.3)
    samples = model.sample(4000, random_state=0)
    x, w = quadrature_nodes(model, step=0.01)
    cdf_grid = np.cumsum(model.pdf(x) * w)
    result = kstest(samples, lambda t: np.interp(t, x, cdf_grid))
    assert result.pvalue > 1e-3


def test_roundtrip_and_prior():
    model = ToyModel([0.25, 0.0, 0.75], [0, 1, 2], [1, 1, 0.5], [1, 2], [0.5, -1], [0, 1], 0.2)
    again = ToyModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(again.weights, model.weights)
    assert model.prior.n_components == 2  # the zero-weight component is dropped
    np.testing.assert_allclose(model.prior.means.ravel(), [0.0, 2.0])


# -- likelihoods --------------------------------------------------------------------------------
def test_population_nll_is_minimal_at_the_truth():
    rng = np.random.default_rng(5)
    truth = random_model(rng, n_components=2)
    entropy = population_nll(truth, truth)
    others = ToyModel.stack([random_model(rng, n_components=2) for _ in range(20)])
    assert np.all(population_nll(truth, others) > entropy)
    # a small perturbation: KL > 0 but second order
    near = truth.replace(means=truth.means + 1e-3)
    assert 0 < population_nll(truth, near) - entropy < 1e-4


def test_population_nll_quadrature_is_converged():
    rng = np.random.default_rng(6)
    truth, other = random_model(rng), random_model(rng)
    coarse = population_nll(truth, other)
    sigma = float(truth.noise_std)
    fine = population_nll(truth, other, nodes=quadrature_nodes(truth, step=sigma / 8))
    assert abs(coarse - fine) <= 1e-9 * max(1.0, abs(fine))


def test_population_nll_matches_monte_carlo():
    rng = np.random.default_rng(7)
    truth, other = random_model(rng, 2), random_model(rng, 2)
    x = truth.sample(200_000, rng)
    values = -other.logpdf(x)
    se = values.std() / math.sqrt(len(x))
    assert abs(sample_nll(other, x) - population_nll(truth, other)) < 5 * se


# -- grid search --------------------------------------------------------------------------------
def small_grid(noise=0.3):
    return Grid(
        weights=simplex_grid(2, 4),
        means=(-1.0, 0.0, 1.0),
        stds=(0.5,),
        alpha=(-1.0, 0.0, 1.0),
        beta=(-1.0, 0.0, 1.0),
        bias=(-0.5, 0.5),
        noise_std=noise,
    )


def test_simplex_grid():
    w = simplex_grid(3, 4)
    assert w.shape == (math.comb(4 + 2, 2), 3)
    np.testing.assert_allclose(w.sum(1), 1.0)


def test_grid_deduplication_keeps_every_distinct_model():
    grid = small_grid()
    raw_w, raw_k = grid.priors(deduplicate=False)
    dedup_w, dedup_k = grid.priors()
    assert len(raw_w) == len(grid.weights) * 3**2 and len(dedup_w) < len(raw_w)
    raw = grid.decoders(deduplicate=False)
    dedup = grid.decoders()
    assert len(raw[0]) == (3 * 3 * 2) ** 2 and len(dedup[0]) < len(raw[0])
    # every raw decoder computes the same function as some kept decoder
    z = np.linspace(-4, 4, 97)

    def values(a, b, c):
        return np.sum(a[:, :, None] * np.maximum(b[:, :, None] * z + c[:, :, None], 0), 1)

    raw_f, kept_f = values(*raw), values(*dedup)
    dist = np.abs(raw_f[:, None, :] - kept_f[None, :, :]).max(-1).min(1)
    assert dist.max() < 1e-12
    assert grid.size == len(raw_w) * len(raw[0])


def test_grid_search_finds_the_truth():
    grid = small_grid()
    truth = ToyModel(
        [0.25, 0.75], [-1.0, 1.0], [0.5, 0.5], [1.0, -1.0], [1.0, 1.0], [0.5, -0.5], 0.3
    )
    assert grid.contains(truth)
    result = grid_search(truth, grid)
    entropy = population_nll(truth, truth, nodes=quadrature_nodes(truth, step=0.15))
    assert abs(result.minimum - entropy) < 1e-10
    assert any(equivalent(m, truth) for m in result.minimizers)
    # all minimisers have the truth's density; here they are all equivalent to it
    assert all(total_variation(m, truth) < 1e-5 for m in result.minimizers)
    assert result.unique_up_to_equivalence(truth)
    value, _ = result.best_nonequivalent(truth)
    assert value > result.minimum + result.tol
    # the exhaustive search without deduplication agrees
    full = grid_search(truth, grid, deduplicate=False)
    assert full.n_evaluated == grid.size > result.n_evaluated
    assert abs(full.minimum - result.minimum) < 1e-12
    assert any(
        np.array_equal(m.means, truth.means) and np.array_equal(m.alpha, truth.alpha)
        for m in full.minimizers
    )


def test_grid_search_values_equal_direct_evaluation():
    grid = small_grid()
    truth = ToyModel([0.5, 0.5], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [-1.0, 1.0], [0.5, 0.5], 0.3)
    result = grid_search(truth, grid, keep=30, chunk_size=50)
    nodes = quadrature_nodes(truth, step=0.15)
    direct = population_nll(truth, result.candidates, nodes=nodes)
    np.testing.assert_allclose(result.values, direct, rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(result.values) >= 0)


def test_grid_search_threads_agree():
    grid = small_grid()
    truth = ToyModel([0.5, 0.5], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [-1.0, 1.0], [0.5, 0.5], 0.3)
    one = grid_search(truth, grid, keep=40, chunk_size=30)
    two = grid_search(truth, grid, keep=40, chunk_size=30, n_jobs=2)
    np.testing.assert_array_equal(one.values, two.values)
    np.testing.assert_array_equal(one.candidates.means, two.candidates.means)


def test_grid_search_sample_objective():
    grid = small_grid()
    truth = ToyModel(
        [0.25, 0.75], [-1.0, 1.0], [0.5, 0.5], [1.0, -1.0], [1.0, 1.0], [0.5, -0.5], 0.3
    )
    x = truth.sample(300, random_state=1)
    result = grid_search(None, grid, objective="sample", x=x, keep=10)
    np.testing.assert_allclose(result.values, sample_nll(result.candidates, x), rtol=1e-12)
    assert result.minimum <= sample_nll(truth, x) + 1e-12


def test_default_grid_contains_truth():
    rng = np.random.default_rng(8)
    truth = random_model(rng, n_components=2)
    from idvae.exact import default_grid

    assert default_grid(truth).contains(truth)


# -- equivalence --------------------------------------------------------------------------------
def random_symmetry(model, rng):
    """Apply a random symmetry of the model: affine map of z, permutations, rescalings,
    a zero-weight component, a split component and an inactive neuron."""
    s = rng.choice([-1, 1]) * rng.uniform(0.3, 3)
    t = rng.normal(0, 2)
    # z' = s z + t  =>  beta' = beta / s, pi' = pi - beta t / s
    means, stds = s * model.means + t, abs(s) * model.stds
    beta, bias = model.beta / s, model.bias - model.beta * t / s
    c = rng.uniform(0.2, 5, model.n_neurons)  # positive homogeneity of ReLU
    alpha, beta, bias = model.alpha / c, beta * c, bias * c
    perm_n = rng.permutation(model.n_neurons)
    alpha, beta, bias = alpha[perm_n], beta[perm_n], bias[perm_n]
    alpha = np.append(alpha, 0.0)  # an extra neuron with alpha = 0
    beta, bias = np.append(beta, rng.normal()), np.append(bias, rng.normal())
    # split component 0 in two identical halves and add a component of weight 0
    w = np.concatenate([[model.weights[0] / 2, model.weights[0] / 2], model.weights[1:], [0]])
    means = np.concatenate([[means[0], means[0]], means[1:], [rng.normal()]])
    stds = np.concatenate([[stds[0], stds[0]], stds[1:], [1.0]])
    perm = rng.permutation(len(w))
    return ToyModel(w[perm], means[perm], stds[perm], alpha, beta, bias, model.noise_std)


def test_equivalent_on_symmetry_transforms_with_equal_densities():
    rng = np.random.default_rng(9)
    for _ in range(15):
        model = random_model(rng)
        other = random_symmetry(model, rng)
        assert equivalent(model, other) and equivalent(other, model)
        assert disagreement_mass(model, other) == 0.0
        assert density_distance(model, other) < 1e-12


def test_non_equivalent_pairs():
    rng = np.random.default_rng(10)
    for _ in range(10):
        model = random_model(rng, n_components=2)
        for change in (
            {"means": model.means + [0.0, 0.3]},
            {"weights": [0.5, 0.5] if model.weights[0] != 0.5 else [0.3, 0.7]},
            {"alpha": model.alpha * [1.0, 1.2]},
            {"bias": model.bias + [0.2, 0.0]},
            {"noise_std": float(model.noise_std) * 1.1},
        ):
            other = model.replace(**change)
            assert not equivalent(model, other)
            assert density_distance(model, other) > 1e-8
            assert disagreement_mass(model, other) > 0


def test_disagreement_mass_of_a_far_kink():
    base = ToyModel([1.0], [0.0], [1.0], [1.0, 0.0], [1.0, 1.0], [0.0, -6.0], 0.3)
    far = base.replace(alpha=[1.0, 0.5])  # adds a kink at z = 6
    assert not equivalent(base, far)
    np.testing.assert_allclose(disagreement_mass(base, far), norm.sf(6.0), rtol=1e-9)
    # a different prior cannot be matched by any affine map of z
    other = ToyModel([0.5, 0.5], [0.0, 3.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], 0.3)
    assert disagreement_mass(base, other) == 1.0


def test_canonical_form_is_standardised():
    model = ToyModel([0.3, 0.7], [2.0, 5.0], [1.0, 0.5], [1.0, 1.0], [1.0, -1.0], [0.0, 3.0], 0.2)
    form = canonical_form(model)
    prior = np.array(form["prior"])
    mean = prior[:, 0] @ prior[:, 1]
    var = prior[:, 0] @ (prior[:, 2] ** 2 + (prior[:, 1] - mean) ** 2)
    assert abs(mean) < 1e-12 and abs(var - 1) < 1e-12


@pytest.mark.parametrize(
    ("alpha", "beta", "bias", "expected"),
    [
        ([1.0, -1.0], [1.0, -1.0], [0.0, 0.0], "injective"),  # f(z) = z
        ([1.0, 0.0], [1.0, 0.0], [0.0, 0.0], "observably injective"),  # ReLU
        ([1.0, -2.0], [1.0, 1.0], [0.0, -1.0], "weakly injective"),  # up, then down forever
        ([1.0, 1.0], [1.0, -1.0], [0.0, 0.0], "not weakly injective"),  # |z|
        ([0.0, 0.0], [1.0, 1.0], [0.0, 0.0], "not weakly injective"),  # constant
        ([1.0, 1.0], [0.0, 0.0], [1.0, 1.0], "not weakly injective"),  # constant
    ],
)
def test_injectivity(alpha, beta, bias, expected):
    model = ToyModel([1.0], [0.0], [1.0], alpha, beta, bias, 0.3)
    assert injectivity(model) == expected


def test_injectivity_on_the_bulk():
    # a ReLU whose kink lies 10 std to the right: constant where Z lives
    model = ToyModel([1.0], [0.0], [0.5], [1.0, 0.0], [1.0, 0.0], [-5.0, 0.0], 0.3)
    assert injectivity(model) == "observably injective"
    assert injectivity(model, bulk=4.0) == "not weakly injective"


# -- the experiment -------------------------------------------------------------------------------
def test_mle_study_quick():
    study = mle_study(6, random_state=1, grid=quick_grid)
    again = mle_study(6, random_state=1, grid=quick_grid)
    assert [s["truth"] for s in study.simulations] == [s["truth"] for s in again.simulations]
    assert study.summary["n_simulations"] == 6
    # Gibbs: the truth always attains the minimum of the population NLL
    assert study.summary["n_truth_is_minimizer"] == 6
    for record, truth in zip(study.simulations, study.truths, strict=True):
        assert quick_grid(truth.n_components).contains(truth)
        assert abs(record["truth_nll"] - record["min_nll"]) < 1e-10
        assert record["unique_up_to_equivalence"] == (
            record["minimizers_equivalent_to_truth"] == record["n_minimizers"]
            and not record["minimizers_truncated"]
        )
    assert {s["n_components"] for s in study.simulations} == {2, 3}
    json.dumps(study.to_dict())


def test_mle_study_within_the_theorems_class():
    study = mle_study(6, random_state=2, grid=quick_grid, weakly_injective_only=True)
    for truth in study.truths:
        assert injectivity(truth) != "not weakly injective"
        assert injectivity(truth, bulk=4.0) != "not weakly injective"
    grid = study.grids[3]
    alpha, beta, bias = grid.decoders()
    assert grid.weakly_injective_only and len(alpha) < len(quick_grid(3).decoders()[0])
    for a, b, c in zip(alpha, beta, bias, strict=True):
        model = ToyModel([1.0], [0.0], [1.0], a, b, c, 0.3)
        assert injectivity(model) != "not weakly injective"
    assert study.summary["n_unique_up_to_tails"] == 6


def test_constant_decoder_is_not_identified():
    # f = 0: X is pure noise whatever the prior, so many priors tie with the truth
    grid = small_grid()
    truth = ToyModel([0.5, 0.5], [-1.0, 1.0], [0.5, 0.5], [0.0, 0.0], [1.0, 1.0], [0.5, 0.5], 0.3)
    result = grid_search(truth, grid, keep=2000)
    assert not result.unique_up_to_equivalence(truth)
    ties = [m for m in result.minimizers if not equivalent(m, truth)]
    assert ties and all(density_distance(m, truth) < 1e-14 for m in ties)
    assert injectivity(truth) == "not weakly injective"


def test_profile_nll_minimum_at_truth():
    truth = ToyModel([0.5, 0.5], [-1.0, 1.0], [0.5, 0.5], [1.0, 0.5], [1.0, -1.0], [0.0, 0.5], 0.3)
    values = np.linspace(-2.0, 2.0, 81)  # contains the true beta[0] = 1
    nll = profile_nll(truth, "beta[0]", values)
    assert values[np.argmin(nll)] == 1.0
    assert abs(nll.min() - population_nll(truth, truth)) < 1e-12
    w = profile_nll(truth, "weights[0]", [0.2, 0.5, 0.8])
    assert np.argmin(w) == 1
    with pytest.raises(ValueError, match="means\\[0\\]"):
        profile_nll(truth, "gamma[0]", values)


def test_cli_mle_quick(tmp_path):
    from idvae.cli import app

    out = tmp_path / "mle"
    args = ["mle", "--simulations", "2", "--quick", "--plots", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert data["summary"]["n_simulations"] == 2 and len(data["simulations"]) == 2
    first, second = data["simulations"]
    png = out / first["profile"]["file"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "profile" not in second and not (out / "profiles" / "sim_001.png").exists()
    assert "global minimiser" in result.output

    bad = CliRunner().invoke(app, ["mle", "--simulations", "0", "--out", str(out)])
    assert bad.exit_code == 2 and "simulations" in bad.output


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": [-0.5, 1.5]}, "non-negative"),
        ({"weights": [0.5, 0.6]}, "summing to 1"),
        ({"stds": [1.0, 0.0]}, "positive stds"),
        ({"noise_std": 0.0}, "noise_std > 0"),
        ({"noise_std": -1.0}, "noise_std > 0"),
        ({"means": [0.0, 1.0, 2.0]}, "means of shape"),
        ({"beta": [1.0]}, "beta of shape"),
        ({"means": [[0.0, 1.0]]}, "1-D"),
        ({"alpha": [np.nan, 1.0]}, "finite"),
    ],
)
def test_bad_model_parameters(kwargs, match):
    params = {
        "weights": [0.5, 0.5],
        "means": [0.0, 1.0],
        "stds": [1.0, 1.0],
        "alpha": [1.0, 1.0],
        "beta": [1.0, -1.0],
        "bias": [0.0, 0.0],
        "noise_std": 0.3,
    }
    with pytest.raises(ValueError, match=match):
        ToyModel(**{**params, **kwargs})


def test_bad_search_arguments():
    truth = ToyModel([1.0], [0.0], [1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0], 0.3)
    with pytest.raises(ValueError, match="objective"):
        grid_search(truth, small_grid(), objective="map")
    with pytest.raises(ValueError, match="data x"):
        grid_search(truth, small_grid(), objective="sample")
    with pytest.raises(TypeError, match="Grid"):
        grid_search(truth, {"means": [0.0]})
    with pytest.raises(ValueError, match="summing to 1"):
        Grid(((0.5, 0.6),), (0.0,), (1.0,), (1.0,), (1.0,), (0.0,), 0.3)
    with pytest.raises(ValueError, match="noise_std > 0"):
        Grid(((1.0,),), (0.0,), (1.0,), (1.0,), (1.0,), (0.0,), 0.0)
    with pytest.raises(ValueError, match="unbatched"):
        population_nll(ToyModel.stack([truth, truth]), truth)
    with pytest.raises(ValueError, match="n_simulations"):
        mle_study(0)

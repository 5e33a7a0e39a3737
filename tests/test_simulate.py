import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from idvae import GMM
from idvae.datasets import load_array
from idvae.simulate import (
    Simulation,
    check_neighbors,
    check_structure,
    decoder_jacobians,
    default_hidden,
    default_neighbors,
    random_decoder,
    sample_model,
)


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


# -- k = 1 --------------------------------------------------------------------------------
def test_shapes_and_dtypes():
    sim = sample_model(300, latent_dim=3, obs_dim=7, n_components=4, random_state=0)
    assert isinstance(sim, Simulation)
    assert sim.x.shape == (300, 7) and sim.x.dtype == np.float64
    assert sim.z.shape == (300, 3) and sim.z.dtype == np.float64
    assert sim.u.shape == (300,) and sim.u.dtype == np.int64
    assert set(np.unique(sim.u)) <= set(range(4))
    np.testing.assert_array_equal(sim.labels, sim.u)
    assert isinstance(sim.prior, GMM) and sim.prior.n_components == 4 and sim.prior.dim == 3
    assert all(p.dtype == torch.float64 and not p.requires_grad for p in sim.decoder.parameters())
    assert sim.facets is None and sim.neighbors is None and sim.joint is None


def test_same_seed_same_everything_and_other_seed_differs():
    kw = dict(latent_dim=2, obs_dim=6, n_components=3)
    state = torch.random.get_rng_state().clone()
    a = sample_model(200, **kw, random_state=7)
    b = sample_model(200, **kw, random_state=7)
    c = sample_model(200, **kw, random_state=8)
    # torch's global generator is neither seeded nor consumed
    assert torch.equal(state, torch.random.get_rng_state())
    for name in ("x", "z", "u"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.prior == b.prior
    for pa, pb in zip(a.decoder.parameters(), b.decoder.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not np.allclose(a.x, c.x) and a.prior != c.prior
    # a Generator is accepted and advanced
    rng = np.random.default_rng(7)
    d = sample_model(200, **kw, random_state=rng)
    np.testing.assert_array_equal(a.x, d.x)
    assert not np.array_equal(sample_model(200, **kw, random_state=rng).x, d.x)


def test_prior_and_decoder_do_not_depend_on_n_samples():
    a = sample_model(50, latent_dim=2, obs_dim=5, n_components=3, random_state=3)
    b = sample_model(500, latent_dim=2, obs_dim=5, n_components=3, random_state=3)
    assert a.prior == b.prior
    z = np.random.default_rng(0).normal(size=(10, 2))
    np.testing.assert_array_equal(a.decode(z), b.decode(z))


@pytest.mark.parametrize("noise_std", [0.05, 0.3])
def test_residual_has_the_noise_spread(noise_std):
    sim = sample_model(
        4000, latent_dim=2, obs_dim=10, n_components=3, noise_std=noise_std, random_state=1
    )
    residual = sim.x - sim.decode(sim.z)
    # 40,000 residuals: the std estimate has a relative standard error of about 0.35 %
    assert residual.std() == pytest.approx(noise_std, rel=0.02)
    assert abs(residual.mean()) < 4 * noise_std / math.sqrt(residual.size)
    # independent coordinates: the sample correlation matrix is close to the identity
    corr = np.corrcoef(residual.T)
    assert np.abs(corr - np.eye(10)).max() < 0.07
    # signal is O(1) by construction: f(Z) has average per-coordinate variance ~1
    assert 0.8 < np.mean(sim.decode(sim.z).var(axis=0)) < 1.25


def test_zero_noise_gives_exact_decoder_outputs():
    sim = sample_model(100, latent_dim=2, obs_dim=4, n_components=2, noise_std=0, random_state=0)
    np.testing.assert_array_equal(sim.x, sim.decode(sim.z))


@pytest.mark.parametrize(
    ("latent_dim", "obs_dim", "hidden"),
    [(2, 10, None), (3, 3, None), (2, 50, (4, 4, 16)), (1, 5, ())],
)
def test_injective_decoder_meets_app_h_conditions(latent_dim, obs_dim, hidden):
    sim = sample_model(
        500,
        latent_dim=latent_dim,
        obs_dim=obs_dim,
        n_components=2,
        hidden=hidden,
        random_state=2,
    )
    layers = linears(sim.decoder)
    widths = [layers[0].in_features] + [layer.out_features for layer in layers]
    assert widths[0] == latent_dim and widths[-1] == obs_dim
    assert all(a <= b for a, b in zip(widths[:-1], widths[1:], strict=True))
    for layer in layers:  # every weight has full column rank
        w = layer.weight.numpy()
        assert np.linalg.matrix_rank(w) == w.shape[1]
    acts = [m for m in sim.decoder if not isinstance(m, nn.Linear)]
    assert all(isinstance(m, nn.LeakyReLU) and m.negative_slope > 0 for m in acts)
    # consequence (Cor. H.4): f is injective, its Jacobian has rank m everywhere
    jac = decoder_jacobians(sim.decoder, sim.z)
    assert np.all(np.linalg.svd(jac, compute_uv=False)[:, -1] > 1e-8)


def test_relu_injective_meets_the_architecture_conditions_and_full_image_dimension():
    sim = sample_model(300, latent_dim=2, obs_dim=8, n_components=3, decoder="relu", random_state=4)
    layers = linears(sim.decoder)
    assert all(isinstance(m, nn.ReLU) for m in sim.decoder if not isinstance(m, nn.Linear))
    assert all(np.linalg.matrix_rank(m.weight.numpy()) == m.in_features for m in layers)
    ranks = np.linalg.matrix_rank(decoder_jacobians(sim.decoder, sim.z))
    assert np.any(ranks == 2)  # dim f(R^m) = m, the hypothesis of Cor. H.2


def test_non_injective_allows_any_widths():
    sim = sample_model(
        50, latent_dim=3, obs_dim=4, n_components=2, hidden=(16, 2), injective=False, random_state=0
    )
    assert [m.out_features for m in linears(sim.decoder)] == [16, 2, 4]
    with pytest.raises(ValueError, match="nondecreasing"):
        sample_model(50, latent_dim=3, obs_dim=4, n_components=2, hidden=(16, 2))


def test_decoder_jacobians_match_autograd():
    net = random_decoder(3, 6, hidden=(4, 5), random_state=0)
    z = np.random.default_rng(1).normal(size=(5, 3))
    jac = decoder_jacobians(net, z)
    for i in range(5):
        expected = torch.autograd.functional.jacobian(net, torch.from_numpy(z[i]))
        np.testing.assert_allclose(jac[i], expected.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_z_moments_match_the_prior_per_component(covariance):
    n = 20000
    sim = sample_model(
        n, latent_dim=2, obs_dim=3, n_components=3, covariance=covariance, random_state=5
    )
    p = sim.prior
    counts = np.bincount(sim.u, minlength=3)
    se_w = np.sqrt(p.weights * (1 - p.weights) / n)
    assert np.all(np.abs(counts / n - p.weights) < 4 * se_w)
    for j in range(3):
        zj = sim.z[sim.u == j]
        se_mean = np.sqrt(np.diag(p.covariances[j]) / len(zj))
        assert np.all(np.abs(zj.mean(axis=0) - p.means[j]) < 4.5 * se_mean)
        np.testing.assert_allclose(
            np.cov(zj.T), p.covariances[j], atol=0.06 * p.covariances[j].max()
        )
    assert p.is_diagonal() == (covariance == "diag")


def test_prior_is_standardised_separated_and_weights_bounded():
    sim = sample_model(10, latent_dim=3, obs_dim=5, n_components=6, random_state=11)
    p = sim.prior
    mean = p.weights @ p.means
    var = np.einsum("j,jtt->t", p.weights, p.covariances) + p.weights @ p.means**2 - mean**2
    np.testing.assert_allclose(mean, 0, atol=1e-12)
    np.testing.assert_allclose(var, 1, rtol=1e-12)
    assert p.weights.min() >= 0.5 / 6 - 1e-12
    # (P2): two components with pairwise distinct variance ratios
    var_diag = np.diagonal(p.covariances, axis1=1, axis2=2)
    ratios = var_diag[:, None, :] / var_diag[None, :, :]
    distinct = [
        len(np.unique(np.round(ratios[a, b], 6))) == 3 for a in range(6) for b in range(6) if a != b
    ]
    assert any(distinct)
    # separated: the Bayes classifier recovers the component of most points
    big = sample_model(5000, latent_dim=3, obs_dim=5, n_components=6, random_state=11)
    assert np.mean(big.prior.predict(big.z) == big.u) > 0.9


# -- multivariate U -----------------------------------------------------------------------
def test_multivariate_shapes_labels_and_component_order():
    sim = sample_model(400, latent_dim=5, obs_dim=8, facets=(2, 3), random_state=0)
    assert sim.u.shape == (400, 2) and sim.u.dtype == np.int64
    assert sim.u[:, 0].max() == 1 and sim.u[:, 1].max() == 2
    assert sim.facets == (2, 3) and sim.neighbors == ((0, 1, 2), (3, 4))
    assert sim.joint.shape == (2, 3) and sim.joint.sum() == pytest.approx(1.0)
    assert sim.prior.n_components == 6
    np.testing.assert_array_equal(sim.labels, sim.u[:, 0] * 3 + sim.u[:, 1])  # row-major
    np.testing.assert_allclose(sim.prior.weights, sim.joint.ravel())
    check_structure(sim.prior, sim.facets, sim.neighbors)  # (P2), (24), (P3)(a), (c)


def test_multivariate_frequencies_match_joint():
    joint = np.array([[0.1, 0.2, 0.05], [0.3, 0.15, 0.2]])  # dependent facets
    n = 20000
    sim = sample_model(n, latent_dim=2, obs_dim=4, facets=(2, 3), joint=joint, random_state=1)
    np.testing.assert_allclose(sim.joint, joint)
    freq = np.zeros((2, 3))
    np.add.at(freq, (sim.u[:, 0], sim.u[:, 1]), 1.0 / n)
    assert np.all(np.abs(freq - joint) < 4 * np.sqrt(joint * (1 - joint) / n))


def test_coordinates_depend_only_on_their_parents():
    # overlapping graph meeting (P3)(c): Z_1 has two parents
    neighbors = ((0, 1), (1, 2))
    n = 30000
    sim = sample_model(
        n, latent_dim=3, obs_dim=5, facets=(2, 3), neighbors=neighbors, random_state=2
    )
    p = sim.prior
    configs = np.stack(np.unravel_index(np.arange(6), (2, 3)), axis=1)
    parents = {0: [0], 1: [0, 1], 2: [1]}
    for t, pa in parents.items():
        # the truth: equal parameters for configurations with the same parent states
        for key in {tuple(c[pa]) for c in configs}:
            same = np.all(configs[:, pa] == key, axis=1)
            assert np.ptp(p.means[same, t]) < 1e-12 and np.ptp(p.covariances[same, t, t]) < 1e-12
        # the sample: E[Z_t | U] agrees with E[Z_t | pa(Z_t)]
        for j in range(6):
            rows = sim.labels == j
            same_parents = np.all(sim.u[:, pa] == configs[j, pa], axis=1)
            se = math.sqrt(p.covariances[j, t, t] / rows.sum())
            assert abs(sim.z[rows, t].mean() - sim.z[same_parents, t].mean()) < 5 * se
    # conditionally independent coordinates: correlation within a configuration is ~0
    rows = sim.labels == 0
    assert np.abs(np.corrcoef(sim.z[rows].T) - np.eye(3)).max() < 5 / math.sqrt(rows.sum())
    # three distinct parent states give Z_0, Z_2 distinct laws; six give Z_1 six
    assert len(np.unique(np.round(p.means[:, 1], 9))) == 6


def test_prior_density_matches_the_z_histogram():
    sim = sample_model(40000, latent_dim=2, obs_dim=3, facets=(2, 2), random_state=3)
    edges = np.linspace(-3.5, 3.5, 29)
    hist, _, _ = np.histogram2d(sim.z[:, 0], sim.z[:, 1], bins=[edges, edges])
    centres = 0.5 * (edges[1:] + edges[:-1])
    grid = np.stack(np.meshgrid(centres, centres, indexing="ij"), axis=-1).reshape(-1, 2)
    area = (edges[1] - edges[0]) ** 2
    expected = sim.prior.pdf(grid).reshape(28, 28) * area
    # total variation between the binned sample and the binned density (midpoint rule)
    assert 0.5 * np.abs(hist / len(sim.z) - expected).sum() < 0.04
    # and the mean log-likelihood matches the one of an exact sample from the same GMM
    other = sim.prior.sample(40000, random_state=9)
    assert sim.prior.logpdf(sim.z).mean() == pytest.approx(sim.prior.logpdf(other).mean(), abs=0.03)


def test_default_neighbors_are_contiguous_blocks():
    assert default_neighbors(2, 5) == ((0, 1, 2), (3, 4))
    assert default_neighbors(3, 3) == ((0,), (1,), (2,))
    assert default_neighbors(1, 4) == ((0, 1, 2, 3),)
    with pytest.raises(ValueError, match="at most latent_dim"):
        default_neighbors(4, 3)


@pytest.mark.parametrize(
    ("neighbors", "match"),
    [
        (((0, 1, 2), (1,)), r"\(P3\)\(c\)"),  # ne(U_1) ⊂ ne(U_0)
        (((0, 1, 2), (2, 1, 0)), r"\(P3\)\(c\)"),  # twins
        (((0,), (1,)), "Z_2 is in no"),  # a coordinate without a parent
        (((0, 1), ()), "nonempty"),
        (((0, 3), (1, 2)), "below latent_dim"),
        (((0, 0), (1, 2)), "distinct"),
        (((0, 1, 2),), "each of the 2 facets"),
    ],
)
def test_bad_graphs_are_rejected(neighbors, match):
    with pytest.raises(ValueError, match=match):
        check_neighbors(neighbors, 2, 3)
    with pytest.raises(ValueError, match=match):
        sample_model(10, latent_dim=3, obs_dim=4, facets=(2, 2), neighbors=neighbors)


def test_check_structure_rejects_priors_violating_the_assumptions():
    facets, neighbors = (2, 2), ((0,), (1,))
    sim = sample_model(10, latent_dim=2, obs_dim=2, facets=facets, random_state=0)
    check_structure(sim.prior, facets, neighbors)
    means, cov, w = sim.prior.means.copy(), sim.prior.covariances.copy(), sim.prior.weights
    # Z_0 depending on U_1, which is not its parent: Markov property (24) broken
    bad = means.copy()
    bad[1, 0] += 0.5  # configuration (0, 1) vs (0, 0) share U_0's state
    with pytest.raises(ValueError, match="depend only on its parents"):
        check_structure(GMM(w, bad, cov), facets, neighbors)
    # both states of U_0 give Z_0 the same law: (P3)(a) broken
    same = means.copy()
    same[2:, 0] = same[0, 0]
    same_cov = cov.copy()
    same_cov[2:, 0, 0] = cov[0, 0, 0]
    with pytest.raises(ValueError, match=r"\(P3\)\(a\)"):
        check_structure(GMM(w, same, same_cov), facets, neighbors)
    # correlated coordinates given U: (P2) broken
    full = cov.copy()
    full[:, 0, 1] = full[:, 1, 0] = 0.1 * np.sqrt(cov[:, 0, 0] * cov[:, 1, 1])
    with pytest.raises(ValueError, match=r"\(P2\)"):
        check_structure(GMM(w, means, full), facets, neighbors)
    with pytest.raises(ValueError, match="∏ d_i = 6"):
        check_structure(sim.prior, (2, 3), neighbors)


def test_joint_validation():
    kw = dict(latent_dim=2, obs_dim=3, facets=(2, 2))
    with pytest.raises(ValueError, match=r"P\(U = u\) > 0"):
        sample_model(10, **kw, joint=[[0.5, 0.0], [0.25, 0.25]])
    with pytest.raises(ValueError, match="shape"):
        sample_model(10, **kw, joint=[0.25, 0.25, 0.25, 0.25])
    with pytest.raises(ValueError, match="summing to 1"):
        sample_model(10, **kw, joint=[[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="finite"):
        sample_model(10, **kw, joint=[[np.nan, 0.5], [0.25, 0.25]])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(latent_dim=5, obs_dim=3, n_components=2), ValueError, "Remark 3.3"),
        (dict(latent_dim=2, obs_dim=3, n_components=0), ValueError, "n_components >= 1"),
        (dict(latent_dim=2, obs_dim=3), ValueError, "n_components .* or facets"),
        (dict(latent_dim=0, obs_dim=3, n_components=2), ValueError, "latent_dim >= 1"),
        (dict(latent_dim=2, obs_dim=3, n_components=2.5), TypeError, "integer"),
        (dict(latent_dim=2, obs_dim=3, n_components=2, noise_std=-0.1), ValueError, "noise_std"),
        (dict(latent_dim=2, obs_dim=3, n_components=2, noise_std=np.inf), ValueError, "finite"),
        (dict(latent_dim=2, obs_dim=3, n_components=2, noise_std="0.1"), TypeError, "number"),
        (dict(latent_dim=2, obs_dim=3, n_components=2, covariance="tied"), ValueError, "'diag'"),
        (dict(latent_dim=2, obs_dim=3, n_components=2, decoder="tanh"), ValueError, "leaky_relu"),
        (dict(latent_dim=2, obs_dim=3, n_components=2, hidden=3), TypeError, "sequence"),
        (dict(latent_dim=2, obs_dim=3, n_components=2, random_state=-1), ValueError, ">= 0"),
        (dict(latent_dim=2, obs_dim=3, facets=(2, 1)), ValueError, "d_2 >= 2"),
        (dict(latent_dim=2, obs_dim=3, facets=3), TypeError, "sequence"),
        (dict(latent_dim=2, obs_dim=3, facets=(2, 2), n_components=3), ValueError, "∏ d_i = 4"),
        (dict(latent_dim=2, obs_dim=3, facets=(2, 2), covariance="full"), ValueError, "diag"),
        (
            dict(latent_dim=2, obs_dim=3, n_components=2, neighbors=((0,), (1,))),
            ValueError,
            "facets",
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        sample_model(10, **kwargs)


def test_n_samples_is_checked():
    with pytest.raises(ValueError, match="n_samples >= 1"):
        sample_model(0, latent_dim=2, obs_dim=3, n_components=2)


def test_default_hidden_is_a_nondecreasing_geometric_interpolation():
    assert default_hidden(2, 10) == (3, 6)
    assert default_hidden(3, 3) == (3, 3)
    widths = default_hidden(2, 784, n_layers=4)
    assert list(widths) == sorted(widths) and 2 <= widths[0] and widths[-1] <= 784


def test_save_round_trip(tmp_path):
    sim = sample_model(120, latent_dim=4, obs_dim=6, facets=(2, 2), random_state=0)
    path = sim.save(tmp_path / "sim.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.npz"]  # no temporary left
    data = load_array(path)
    np.testing.assert_array_equal(data.x, sim.x)
    np.testing.assert_array_equal(data.z, sim.z)
    np.testing.assert_array_equal(data.u, sim.u)
    np.testing.assert_array_equal(data.labels, sim.labels)
    with np.load(path, allow_pickle=False) as f:
        saved = GMM(f["prior_weights"], f["prior_means"], f["prior_covariances"])
        assert saved == sim.prior
        np.testing.assert_array_equal(f["joint"], sim.joint)
        np.testing.assert_array_equal(f["neighbors"], [[1, 1, 0, 0], [0, 0, 1, 1]])
        assert str(f["decoder_activation"]) == "leaky_relu"
        # the decoder can be rebuilt from the saved weights
        h = sim.z
        n_layers = len(linears(sim.decoder))
        for i in range(n_layers):
            h = h @ f[f"decoder_weight_{i}"].T + f[f"decoder_bias_{i}"]
            if i < n_layers - 1:
                h = np.where(h > 0, h, 0.2 * h)
        np.testing.assert_allclose(h, sim.decode(sim.z), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=".npz"):
        sim.save(tmp_path / "sim.npy")


def test_load_restores_the_simulation(tmp_path):
    sim = sample_model(80, latent_dim=3, obs_dim=5, facets=(2, 3), decoder="relu", random_state=1)
    back = Simulation.load(sim.save(tmp_path / "s.npz"))
    for name in ("x", "z", "u", "joint", "labels"):
        np.testing.assert_array_equal(getattr(back, name), getattr(sim, name))
    assert back.prior == sim.prior and back.noise_std == sim.noise_std
    assert back.facets == sim.facets and back.neighbors == sim.neighbors
    assert all(isinstance(m, nn.ReLU) for m in back.decoder if not isinstance(m, nn.Linear))
    np.testing.assert_array_equal(back.decode(sim.z), sim.decode(sim.z))
    # an affine decoder (no hidden layer) round-trips too
    affine = sample_model(20, latent_dim=2, obs_dim=3, n_components=2, hidden=(), random_state=0)
    path = affine.save(tmp_path / "a.npz")
    with np.load(path) as f:
        assert str(f["decoder_activation"]) == "none"
    np.testing.assert_array_equal(Simulation.load(path).decode(affine.z), affine.decode(affine.z))
    np.savez(tmp_path / "plain.npz", x=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="lacks"):
        Simulation.load(tmp_path / "plain.npz")


@settings(max_examples=15, deadline=None)
@given(
    latent_dim=st.integers(1, 4),
    extra=st.integers(0, 6),
    n_components=st.integers(1, 6),
    covariance=st.sampled_from(["diag", "full"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_instances_meet_their_guarantees(latent_dim, extra, n_components, covariance, seed):
    sim = sample_model(
        64,
        latent_dim=latent_dim,
        obs_dim=latent_dim + extra,
        n_components=n_components,
        covariance=covariance,
        random_state=seed,
    )
    p = sim.prior
    mean = p.weights @ p.means
    var = np.einsum("j,jtt->t", p.weights, p.covariances) + p.weights @ p.means**2 - mean**2
    np.testing.assert_allclose(mean, 0, atol=1e-9)
    np.testing.assert_allclose(var, 1, rtol=1e-9)
    assert p.weights.min() >= 0.5 / n_components - 1e-12
    layers = linears(sim.decoder)
    widths = [latent_dim] + [layer.out_features for layer in layers]
    assert widths == sorted(widths) and widths[-1] == latent_dim + extra
    for layer in layers:
        s_vals = np.linalg.svd(layer.weight.numpy(), compute_uv=False)
        assert s_vals[-1] >= 1e-3 * s_vals[0]
    assert np.all(np.isfinite(sim.x))

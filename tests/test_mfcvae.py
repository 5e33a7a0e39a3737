import numpy as np
import pytest
import torch

from idvae import GMM
from idvae.metrics import cluster_accuracy
from idvae.models.mfcvae import (
    MFCVAE,
    FacetedMixturePrior,
    MFCVAEModule,
    check_facets,
    facet_basis,
    faceted_basis,
    factor_grid,
    fade_in_weights,
    joint_gmm_from_facets,
    mixture_grid,
    most_additive,
)


def random_prior(seed=0, dims=(2, 1, 3), comps=(3, 2, 4)):
    torch.manual_seed(seed)
    prior = FacetedMixturePrior(dims, comps).double()
    with torch.no_grad():
        for i in range(prior.n_facets):
            prior.facets[i].logits.normal_()
            prior.facets[i].means.normal_().mul_(2.0)
            prior.facets[i].raw_scale.normal_().mul_(0.5)
    return prior


# -- the prior's math -------------------------------------------------------------------------
def test_joint_gmm_logpdf_is_sum_of_facet_logpdfs(rng):
    prior = random_prior()
    joint = prior.to_gmm()
    facets = prior.facet_gmms()
    assert joint.n_components == 3 * 2 * 4
    assert joint.dim == 6 and joint.is_diagonal()
    z = rng.normal(size=(40, 6)) * 2
    by_facet = sum(g.logpdf(z[:, s]) for g, s in zip(facets, prior.slices, strict=True))
    np.testing.assert_allclose(joint.logpdf(z), by_facet, rtol=1e-10)
    # the torch density is the same function
    torch_logp = prior.log_prob(torch.as_tensor(z)).detach().numpy()
    np.testing.assert_allclose(torch_logp, by_facet, rtol=1e-10)


def test_joint_components_are_in_row_major_order():
    prior = random_prior()
    joint = prior.to_gmm()
    facets = prior.facet_gmms()
    c = (2, 1, 3)
    j = np.ravel_multi_index(c, prior.facet_components)
    expected_w = np.prod([g.weights[ci] for g, ci in zip(facets, c, strict=True)])
    np.testing.assert_allclose(joint.weights[j], expected_w, rtol=1e-12)
    np.testing.assert_allclose(
        joint.means[j], np.concatenate([g.means[ci] for g, ci in zip(facets, c, strict=True)])
    )
    np.testing.assert_allclose(
        np.diag(joint.covariances[j]),
        np.concatenate([np.diag(g.covariances[ci]) for g, ci in zip(facets, c, strict=True)]),
    )


def test_facet_responsibilities_sum_to_one_and_marginalise_joint_posterior(rng):
    prior = random_prior(1)
    z = rng.normal(size=(30, 6)) * 2
    with torch.no_grad():
        log_resp = prior.log_responsibilities(torch.as_tensor(z))
    joint_post = prior.to_gmm().predict_proba(z).reshape(30, *prior.facet_components)
    for i, lr in enumerate(log_resp):
        resp = lr.exp().numpy()
        assert resp.shape == (30, prior.facet_components[i])
        np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
        other = tuple(a for a in range(1, 4) if a != i + 1)
        # independent facets: p(c_i | z) is the marginal of the joint posterior
        np.testing.assert_allclose(resp, joint_post.sum(axis=other), atol=1e-10)


def test_responsibilities_are_finite_far_from_every_component():
    prior = random_prior(2)
    z = torch.full((3, 6), 1e4, dtype=torch.float64)
    with torch.no_grad():
        log_resp = prior.log_responsibilities(z)
    for lr in log_resp:
        assert torch.isfinite(lr).all()
        np.testing.assert_allclose(lr.exp().sum(1).numpy(), 1.0, rtol=1e-12)


def test_kl_terms_agree_with_monte_carlo():
    prior = random_prior(3, dims=(2, 1), comps=(3, 2))
    gen = torch.Generator().manual_seed(0)
    n, m = 2, 3
    mean = torch.randn(n, m, generator=gen, dtype=torch.float64)
    var = torch.rand(n, m, generator=gen, dtype=torch.float64) + 0.2
    log_resp = [
        torch.log_softmax(torch.randn(n, k, generator=gen, dtype=torch.float64), 1)
        for k in prior.facet_components
    ]
    prior.requires_grad_(False)
    kl_z, kl_c = prior.kl_terms(mean, var, log_resp)
    assert kl_z.shape == (n, 2) and kl_c.shape == (n, 2)
    n_mc = 200_000
    eps = torch.randn(n_mc, n, m, generator=gen, dtype=torch.float64)
    z = mean + var.sqrt() * eps  # (n_mc, n, m)
    log_q = -0.5 * (eps**2 + torch.log(var) + np.log(2 * np.pi))
    for i, s in enumerate(prior.slices):
        comp = prior.facets[i].log_joint(z[:, :, s].reshape(-1, s.stop - s.start))
        log_p_given_c = (comp - prior.facets[i].log_weights()).reshape(n_mc, n, -1)  # log N(z_i; c)
        samples = log_q[:, :, s].sum(-1)[..., None] - log_p_given_c  # (n_mc, n, K)
        mc = samples.mean(0)
        se = samples.std(0) / np.sqrt(n_mc)
        resp = log_resp[i].exp()
        mc_kl = (resp * mc).sum(1)
        mc_se = torch.sqrt(((resp * se) ** 2).sum(1))
        assert torch.all((kl_z[:, i] - mc_kl).abs() < 4 * mc_se + 1e-9)
        direct = (resp * (log_resp[i] - prior.facets[i].log_weights())).sum(1)
        np.testing.assert_allclose(kl_c[:, i].numpy(), direct.numpy(), rtol=1e-12)
    assert torch.all(kl_c >= -1e-12) and torch.all(kl_z >= 0)


def test_kl_is_zero_when_posterior_equals_prior():
    prior = random_prior(4, dims=(2,), comps=(3,))
    k = 1
    mean = prior.facets[0].means[k : k + 1].detach()
    var = prior.facets[0].variances()[k : k + 1].detach()
    log_resp = [prior.facets[0].log_weights()[None].detach()]
    kl_z, kl_c = prior.kl_terms(mean, var, log_resp)
    assert kl_c.abs().max() < 1e-12
    onehot = torch.full((1, 3), -1e30, dtype=torch.float64)
    onehot[0, k] = 0.0
    kl_z, _ = prior.kl_terms(mean, var, [torch.log_softmax(onehot, 1)])
    assert kl_z.abs().max() < 1e-12


def test_every_prior_parameter_gets_a_gradient(rng):
    prior = random_prior(5)
    z = torch.as_tensor(rng.normal(size=(10, 6)))
    prior.log_prob(z).sum().backward()
    for name, p in prior.named_parameters():
        assert p.grad is not None and torch.any(p.grad != 0), name


def test_set_facet_round_trips(rng):
    prior = random_prior(6)
    g = GMM(rng.dirichlet(np.ones(4)), rng.normal(size=(4, 3)), rng.uniform(0.1, 2, (4, 3)))
    prior.set_facet(2, g)
    back = prior.facet_gmms()[2]
    np.testing.assert_allclose(back.weights, g.weights, rtol=1e-10)
    np.testing.assert_allclose(back.means, g.means, rtol=1e-10)
    np.testing.assert_allclose(back.covariances, g.covariances, rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="Expected a GMM with 4 components in 3 dimensions"):
        prior.set_facet(2, GMM([1.0], [[0.0]], [[[1.0]]]))


def test_joint_of_one_facet_is_that_facet(rng):
    g = GMM(rng.dirichlet(np.ones(3)), rng.normal(size=(3, 2)), rng.uniform(0.1, 2, (3, 2)))
    joint = joint_gmm_from_facets([g])
    np.testing.assert_allclose(joint.weights, g.weights, rtol=1e-12)
    np.testing.assert_allclose(joint.covariances, g.covariances)


# -- fade-in schedule and validation -------------------------------------------------------
def test_fade_in_introduces_facets_one_after_another():
    f = 2.0
    np.testing.assert_allclose(fade_in_weights(0.0, 3, f), [1, 0, 0])
    np.testing.assert_allclose(fade_in_weights(3.0, 3, f), [1, 0.5, 0])
    np.testing.assert_allclose(fade_in_weights(5.0, 3, f), [1, 1, 0.5])
    np.testing.assert_allclose(fade_in_weights(100.0, 3, f), [1, 1, 1])
    np.testing.assert_allclose(fade_in_weights(0.0, 3, 0), [1, 1, 1])
    # monotone in time
    ts = np.linspace(0, 8, 50)
    w = np.array([fade_in_weights(t, 3, f) for t in ts])
    assert np.all(np.diff(w, axis=0) >= 0)


@pytest.mark.parametrize(
    ("dims", "comps", "n_features", "err", "match"),
    [
        ((2, 2), (3,), None, ValueError, "same length"),
        ((2, 0), (3, 3), None, ValueError, ">= 1"),
        ((2, 2), (3, -1), None, ValueError, ">= 1"),
        ((), (), None, ValueError, "at least one facet"),
        ((2.5, 2), (3, 3), None, TypeError, "hold ints"),
        ("22", (3, 3), None, TypeError, "sequence of positive ints"),
        ((3, 3), (2, 2), 5, ValueError, "sum\\(facet_dims\\) = 6, n_features = 5"),
    ],
)
def test_check_facets_refuses_bad_sizes(dims, comps, n_features, err, match):
    with pytest.raises(err, match=match):
        check_facets(dims, comps, n_features)


def test_check_facets_accepts_int_for_one_facet():
    assert check_facets(5, 25) == ((5,), (25,))


# -- from a joint mixture to facets ------------------------------------------------------------
def _same_partition(a, b):
    """Whether two labelings induce the same partition."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("sizes", [(2, 3), (3, 3), (2, 2, 2)])
def test_factor_grid_recovers_a_permuted_additive_grid(rng, sizes):
    m = 5
    effects = [rng.normal(size=(k, m)) * 3 for k in sizes]
    cells = np.indices(sizes).reshape(len(sizes), -1).T
    means = sum(effects[i][cells[:, i]] for i in range(len(sizes)))
    means = means + 0.01 * rng.normal(size=means.shape)
    perm = rng.permutation(len(cells))
    weights = rng.dirichlet(np.ones(len(cells)) * 5)
    found, residual = factor_grid(means[perm], weights, sizes, random_state=0)
    assert found.shape == (len(cells), len(sizes))
    assert residual < 1e-3
    truth = cells[perm]
    # every true facet is found as some facet of the same size (up to relabelling)
    for i in range(len(sizes)):
        assert any(
            sizes[j] == sizes[i] and _same_partition(truth[:, i], found[:, j])
            for j in range(len(sizes))
        )
    # a bijection onto the grid
    assert len({tuple(c) for c in found.tolist()}) == len(cells)


def test_mixture_grid_reads_an_additive_mixture_from_its_points(rng):
    """Points of a mixture whose means are additive on a 3 x 2 grid: the grid is found
    (residual ~ 0, the true facets as partitions of the components) and resp is the
    mixture's posterior."""
    sizes, m = (3, 2), 2
    effects = [rng.normal(size=(k, m)) * 6 for k in sizes]
    cells = np.indices(sizes).reshape(2, -1).T
    means = effects[0][cells[:, 0]] + effects[1][cells[:, 1]]
    mixture = GMM(np.full(6, 1 / 6), means, np.full((6, m), 0.2))
    z = mixture.sample(4000, random_state=0)
    resp, found, residual = mixture_grid(mixture, z, sizes, random_state=0)
    np.testing.assert_allclose(resp, mixture.predict_proba(z))
    assert residual < 1e-3
    for i in range(2):
        assert _same_partition(cells[:, i], found[:, i]) or _same_partition(
            cells[:, i], found[:, 1 - i]
        )


def test_most_additive_is_the_most_additive_of_the_nearly_most_likely():
    # within 0.05 of the best log-likelihood: candidates 0, 1 and 3; 1 is the most additive
    assert most_additive([-1.00, -1.04, -1.30, -1.02], [0.20, 0.05, 0.00, 0.10]) == 1
    # a tighter tolerance leaves the most likely alone
    assert most_additive([-1.00, -1.04, -1.30], [0.20, 0.05, 0.00], tolerance=0.01) == 0
    assert most_additive([-2.0], [0.7]) == 0
    with pytest.raises(ValueError, match="one residual per log-likelihood"):
        most_additive([-1.0, -2.0], [0.1])


def test_factor_grid_refuses_inconsistent_sizes():
    with pytest.raises(ValueError, match="prod\\(sizes\\)"):
        factor_grid(np.zeros((6, 2)), np.ones(6) / 6, (2, 2))


def test_facet_basis_gives_blocks_that_depend_on_their_own_facet_only(rng):
    n, sizes, dims = 3000, (3, 3), (2, 2)
    c = rng.integers(0, 3, size=(n, 2))
    centres = [rng.normal(size=(3, 2)) * 3 for _ in sizes]
    z_true = np.concatenate([centres[i][c[:, i]] for i in range(2)], axis=1)
    z_true += 0.02 * rng.normal(size=z_true.shape)
    mix = rng.normal(size=(4, 4))
    z = z_true @ mix.T + rng.normal(size=4)
    resp = [np.eye(3)[c[:, i]] for i in range(2)]
    A, b = facet_basis(z, resp, dims)
    s = (z - b) @ A.T
    np.testing.assert_allclose(s.std(axis=0), 1.0, rtol=1e-8)
    for i, block in enumerate((slice(0, 2), slice(2, 4))):
        for j in range(2):
            # share of block i's variance explained by facet j's state
            means = np.stack([s[c[:, j] == k, block].mean(0) for k in range(3)])
            explained = np.sum(means.var(axis=0)) / np.sum(s[:, block].var(axis=0))
            if i == j:
                assert explained > 0.9
            else:
                assert explained < 0.01


def test_faceted_basis_of_one_gaussian_decorrelates_it(rng):
    """One facet with one state: the profile n log|det A| - n/2 sum_t log(a_t' C a_t) is
    maximal exactly when A C A' is diagonal (Hadamard's inequality), so s = A z comes out
    uncorrelated, each coordinate keeping z's variance."""
    z = rng.normal(size=(2000, 3)) @ rng.normal(size=(3, 3))
    A = faceted_basis(z, np.zeros_like(z), [np.ones((2000, 1))], (3,))
    corr = np.corrcoef(z @ A.T, rowvar=False)
    np.testing.assert_allclose(corr, np.eye(3), atol=1e-4)
    np.testing.assert_allclose((z @ A.T).std(axis=0), z.std(axis=0), rtol=1e-8)


def test_faceted_basis_unmixes_the_facets_of_a_mixed_latent(rng):
    """z of a faceted model with diagonal covariances of distinct variance ratios, mixed by
    a map near the identity (as a fitted latent is near its blocks): from the identity the
    profile likelihood returns the blocks (no facet leaks into another's block) and, within
    each, the axes (A M is a scaled permutation, off-entries < 5 % of the row's largest);
    the posterior variances enter as extra spread and change nothing here."""
    n = 4000
    c = rng.integers(0, 3, size=(n, 2))
    means = [
        np.array([[-3.0, 0.0], [0.0, 3.0], [3.0, -3.0]]),
        np.array([[0.0, -3.0], [3.0, 0.0], [-3.0, 3.0]]),
    ]
    scales = [
        np.array([[0.5, 1.0], [1.0, 0.6], [0.7, 0.7]]),
        np.array([[0.9, 0.4], [0.5, 0.5], [0.6, 1.0]]),
    ]
    z_true = np.concatenate(
        [means[i][c[:, i]] + scales[i][c[:, i]] * rng.normal(size=(n, 2)) for i in range(2)], axis=1
    )
    mix = np.eye(4) + 0.3 * rng.normal(size=(4, 4))
    z = z_true @ mix.T
    resp = [np.eye(3)[c[:, i]] for i in range(2)]
    for var in (np.zeros_like(z), np.full_like(z, 1e-4)):
        T = faceted_basis(z, var, resp, (2, 2)) @ mix
        share = np.abs(T) / np.abs(T).max(axis=1, keepdims=True)
        assert np.sort(share, axis=1)[:, :-1].max() < 0.05
        largest = np.argmax(share, axis=1)
        assert set(largest[:2]) == {0, 1} and set(largest[2:]) == {2, 3}


def test_em_update_is_the_weighted_moment_solution(rng):
    prior = random_prior(7, dims=(2,), comps=(3,))
    mean = torch.as_tensor(rng.normal(size=(50, 2)) * 2)
    var = torch.as_tensor(rng.uniform(0.1, 0.5, size=(50, 2)))
    with torch.no_grad():
        r = prior.log_responsibilities(mean)[0].exp().numpy()
    prior.em_update(mean, var)
    g = prior.facet_gmms()[0]
    mass = r.sum(0)
    mu = r.T @ mean.numpy() / mass[:, None]
    s2 = r.T @ (var.numpy() + mean.numpy() ** 2) / mass[:, None] - mu**2
    np.testing.assert_allclose(g.weights, mass / mass.sum(), rtol=1e-10)
    np.testing.assert_allclose(g.means, mu, rtol=1e-10)
    np.testing.assert_allclose(np.diagonal(g.covariances, axis1=1, axis2=2), s2, rtol=1e-8)


def test_buffer_prior_has_no_parameters_but_the_same_math(rng):
    a = random_prior(8, dims=(2,), comps=(3,))
    b = FacetedMixturePrior((2,), (3,), trainable=False).double()
    b.set_facet(0, a.facet_gmms()[0])
    assert list(b.parameters()) == []
    assert set(b.state_dict()) == set(a.state_dict())
    z = torch.as_tensor(rng.normal(size=(10, 2)))
    np.testing.assert_allclose(b.log_prob(z).numpy(), a.log_prob(z).detach().numpy(), rtol=1e-10)


def test_latent_map_is_folded_exactly_into_encoder_and_decoder(rng):
    torch.manual_seed(0)
    module = MFCVAEModule(6, (1, 1), (2, 2), (8,), (8,), "leaky_relu", "gaussian", joint_stage=True)
    module = module.double()
    x = torch.as_tensor(rng.normal(size=(20, 6)))
    with torch.no_grad():
        mean_before = module.encode(x)[0].numpy()
        recon_before = module.decode(module.encode(x)[0]).numpy()
    A = rng.normal(size=(2, 2)) + 2 * np.eye(2)
    b = rng.normal(size=2)
    module.apply_latent_map(A, b)
    with torch.no_grad():
        mean_after = module.encode(x)[0].numpy()
        recon_after = module.decode(module.encode(x)[0]).numpy()
    np.testing.assert_allclose(mean_after, (mean_before - b) @ A.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(recon_after, recon_before, rtol=1e-8, atol=1e-10)


# -- the estimator -------------------------------------------------------------------------------
SMALL = {
    "encoder_sizes": (16,),
    "decoder_sizes": (16,),
    "pretrain_epochs": 2,
    "joint_epochs": 2,
    "epochs": 2,
    "batch_size": 64,
    "gmm_n_init": 1,
    "random_state": 0,
    "device": "cpu",
}


def _blobs(n=300, n_features=6, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 2, size=(n, 2))
    z = np.stack([3.0 * c[:, 0], 3.0 * c[:, 1]], axis=1) + 0.3 * rng.normal(size=(n, 2))
    x = np.tanh(z @ rng.normal(size=(2, n_features))) + 0.05 * rng.normal(size=(n, n_features))
    return x, c


@pytest.fixture(scope="module")
def small_model():
    x, _ = _blobs()
    return MFCVAE((1, 1), (2, 2), **SMALL).fit(x), x


def test_fitted_prior_is_the_product_of_the_facet_priors(small_model, rng):
    model, x = small_model
    assert model.prior_.n_components == 4 and model.prior_.dim == 2
    assert len(model.facet_priors_) == 2
    z = rng.normal(size=(25, 2)) * 2
    by_facet = model.facet_priors_[0].logpdf(z[:, :1]) + model.facet_priors_[1].logpdf(z[:, 1:])
    np.testing.assert_allclose(model.prior_.logpdf(z), by_facet, rtol=1e-10)
    assert model.prior_.is_diagonal()


def test_predict_and_predict_proba_agree(small_model):
    model, x = small_model
    labels = model.predict(x)
    assert labels.shape == (len(x), 2) and np.issubdtype(labels.dtype, np.integer)
    proba = model.predict_proba(x)
    assert [p.shape for p in proba] == [(len(x), 2), (len(x), 2)]
    for i, p in enumerate(proba):
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_array_equal(labels[:, i], p.argmax(axis=1))
    np.testing.assert_array_equal(model.labels_, labels)
    joint = model.predict_joint(x)
    np.testing.assert_array_equal(joint, labels[:, 0] * 2 + labels[:, 1])
    # the joint prior's component j is the facet tuple np.unravel_index(j, (2, 2))
    z = model.transform(x)
    post = model.prior_.predict_proba(z).reshape(len(x), 2, 2)
    np.testing.assert_allclose(post.sum(axis=2), proba[0], atol=1e-6)


def test_sample_draws_from_the_faceted_prior(small_model):
    model, x = small_model
    xs, zs = model.sample(4000, random_state=0, return_latent=True)
    assert xs.shape == (4000, x.shape[1]) and zs.shape == (4000, 2)
    # facets are independent under the prior
    assert abs(np.corrcoef(zs.T)[0, 1]) < 0.06
    np.testing.assert_allclose(zs.mean(0), model.prior_.weights @ model.prior_.means, atol=0.1)


def test_progressive_training_fades_the_facets_in():
    x, _ = _blobs()
    model = MFCVAE(
        (1, 1), (2, 2), **(SMALL | {"facet_init": "blocks", "epochs": 4}),
        progressive=True, fade_in_epochs=2,
    )  # fmt: skip
    model.fit(x)
    fades = [r["fade_min"] for r in model.history_ if r["phase"] == "train"]
    assert fades == [0.0, 0.0, 0.5, 1.0]  # facet 1's weight during each epoch
    assert torch.all(model.module_.facet_weights == 1.0)


def test_a_faded_out_facet_neither_reaches_the_decoder_nor_pays_kl(rng):
    torch.manual_seed(0)
    module = MFCVAEModule(
        6, (1, 1), (2, 2), (8,), (8,), "leaky_relu", "gaussian", joint_stage=False
    )
    module.facet_weights.copy_(torch.tensor([1.0, 0.0]))
    x = torch.as_tensor(rng.normal(size=(32, 6)), dtype=torch.float32)
    module.loss(x, generator=torch.Generator().manual_seed(0))["loss"].backward()
    for name in ("logits", "means", "raw_scale"):
        assert torch.any(getattr(module.prior.facets[0], name).grad != 0)
        grad = getattr(module.prior.facets[1], name).grad
        assert grad is None or torch.all(grad == 0)
    # the decoder does not see the second block
    assert torch.all(module.decoder.net[0].weight.grad[:, 1] == 0)


def _crash_and_resume(tmp_path, config: dict, method: str, crash_at: int) -> None:
    """Fit with ``config``, killed just after the ``crash_at``-th call of ``method``, then
    resumed from the checkpoint: the result equals the uninterrupted fit's."""
    x, _ = _blobs()
    reference = MFCVAE((1, 1), (2, 2), **config).fit(x)

    class Crash(Exception):
        pass

    crashing = MFCVAE((1, 1), (2, 2), **config)
    calls = []

    def call_then_crash(*args):
        getattr(MFCVAE, method)(crashing, *args)
        calls.append(1)
        if len(calls) == crash_at:
            raise Crash

    setattr(crashing, method, call_then_crash)
    with pytest.raises(Crash):
        crashing.fit(x, checkpoint_dir=tmp_path)
    resumed = MFCVAE((1, 1), (2, 2), **config).fit(x, checkpoint_dir=tmp_path, resume=True)
    np.testing.assert_array_equal(resumed.transform(x), reference.transform(x))
    assert resumed.prior_ == reference.prior_


def test_resume_after_an_interruption_gives_the_uninterrupted_result(tmp_path):
    """Killed in joint epoch 3, after 2 checkpointed epochs."""
    config = SMALL | {"facet_init": "joint", "joint_epochs": 3, "epochs": 3}
    _crash_and_resume(tmp_path, config, "_joint_em_step", crash_at=2)


def test_mixture_init_factors_a_full_mixture_without_a_joint_stage():
    """facet_init="mixture" (the default): no joint phase, so joint_epochs changes nothing;
    a grid is fitted."""
    x, _ = _blobs()
    assert MFCVAE().facet_init == "mixture"
    config = SMALL | {"facet_init": "mixture"}
    short = MFCVAE((1, 1), (2, 2), **(config | {"joint_epochs": 1})).fit(x)
    long = MFCVAE((1, 1), (2, 2), **(config | {"joint_epochs": 7})).fit(x)
    assert {entry["phase"] for entry in short.history_} == {"pretrain", "train"}
    np.testing.assert_array_equal(short.transform(x), long.transform(x))
    assert 0.0 <= short.grid_residual_ < 1.0
    joint = MFCVAE((1, 1), (2, 2), **(SMALL | {"facet_init": "joint"})).fit(x)
    assert "joint" in {entry["phase"] for entry in joint.history_}
    assert not np.array_equal(short.transform(x), joint.transform(x))


def test_save_load_round_trip_keeps_facets(small_model, tmp_path):
    import idvae

    model, x = small_model
    loaded = idvae.load(model.save(tmp_path / "m"))
    assert isinstance(loaded, MFCVAE)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert all(a == b for a, b in zip(loaded.facet_priors_, model.facet_priors_, strict=True))
    assert loaded.grid_residual_ == model.grid_residual_


@pytest.mark.parametrize(
    ("params", "n", "match"),
    [
        ({"facet_dims": (2, 2), "facet_components": (3,)}, 300, "same length"),
        ({"facet_dims": (4, 3), "facet_components": (2, 2)}, 300, "sum\\(facet_dims\\) = 7"),
        ({"facet_dims": (1, 0), "facet_components": (2, 2)}, 300, "facet_dims"),
        ({"facet_dims": (1, 1), "facet_components": (5, 5)}, 20, "n_samples >= 25"),
        (
            {"facet_dims": (1, 1), "facet_components": (5, 5), "facet_init": "mixture"},
            20,
            "n_samples >= 25",
        ),
        (
            {"facet_dims": (1, 1), "facet_components": (2, 2), "progressive": True},
            300,
            "fade_in_epochs",
        ),
        ({"facet_dims": (1, 1), "facet_components": (2, 2), "facet_init": "x"}, 300, "facet_init"),
        ({"facet_dims": (1, 1), "facet_components": (2, 2), "pretrain": "pca"}, 300, "pretrain"),
    ],
)
def test_bad_facet_settings_are_refused(params, n, match):
    x, _ = _blobs(n=n)
    with pytest.raises(ValueError, match=match):
        MFCVAE(**(SMALL | params)).fit(x)


def test_facet_dims_of_wrong_type_are_refused():
    x, _ = _blobs()
    with pytest.raises((TypeError, ValueError), match="facet_dims"):
        MFCVAE("ab", (2, 2), **SMALL).fit(x)


def test_predict_checks_its_input(small_model):
    model, x = small_model
    with pytest.raises(ValueError, match="3 features"):
        model.predict(x[:, :3])


def test_state_dicts_with_the_flat_facet_keys_still_load(rng):
    """Models saved with keys ``logits.<i>``, ``means.<i>``, ``raw_variances.<i>`` load."""
    a = random_prior(9)
    flat = {}
    for i, facet in enumerate(a.facets):
        flat[f"logits.{i}"] = facet.logits.detach().clone()
        flat[f"means.{i}"] = facet.means.detach().clone()
        flat[f"raw_variances.{i}"] = facet.raw_scale.detach().clone()
    b = FacetedMixturePrior(a.facet_dims, a.facet_components).double()
    b.load_state_dict(flat, strict=True)
    z = torch.as_tensor(rng.normal(size=(10, 6)))
    np.testing.assert_array_equal(b.log_prob(z).detach().numpy(), a.log_prob(z).detach().numpy())


def test_pretraining_is_an_autoencoder_or_a_vae():
    """pretrain="ae" trains reconstruction alone and leaves the decoder's noise variance
    where it starts; pretrain="vae" trains the ELBO with prior N(0, I), noise variance too."""
    x, _ = _blobs()
    only = SMALL | {"epochs": 0}
    ae = MFCVAE((1, 1), (2, 2), **only).fit(x)
    vae = MFCVAE((1, 1), (2, 2), **(only | {"pretrain": "vae"})).fit(x)
    assert MFCVAE().pretrain == "ae"
    first = {m: next(e for e in m.history_ if e["phase"] == "pretrain") for m in (ae, vae)}
    assert "kl_z" not in first[ae] and {"recon", "kl_z"} <= set(first[vae])
    fresh = MFCVAE((1, 1), (2, 2), **only)._new_module(x.shape[1], (), seed=0)
    start = fresh.decoder.noise_variance().detach()
    np.testing.assert_array_equal(ae.module_.decoder.noise_variance().detach(), start)
    assert not torch.equal(vae.module_.decoder.noise_variance().detach(), start)


def test_em_from_a_start_keeps_its_fixed_point_and_returns_to_it_from_nearby(rng):
    """fit_mixture(start=g) runs EM from g: at a converged mixture it stays, from a
    perturbed copy it returns (components keep the start's order); a start needs n_init=1."""
    from idvae.models._prior import fit_mixture

    means = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    z = means[rng.integers(0, 3, size=3000)] + rng.normal(size=(3000, 2))
    fitted = fit_mixture(z, 3, "full", n_init=3, seed=0)
    again = fit_mixture(z, 3, "full", n_init=1, seed=1, start=fitted)
    np.testing.assert_allclose(again.means, fitted.means, atol=1e-3)
    moved = GMM(fitted.weights, fitted.means + 0.5, fitted.covariances * 1.5)
    back = fit_mixture(z, 3, "diag", n_init=1, seed=1, start=moved)
    np.testing.assert_allclose(back.means, fitted.means, atol=0.05)
    with pytest.raises(ValueError, match="n_init=1"):
        fit_mixture(z, 3, "full", n_init=2, seed=0, start=fitted)


def test_facet_refit_repairs_a_scrambled_facet_and_keeps_a_good_one():
    """_refit_facets on a fitted model: on its good prior the states stay as they are, up
    to their order (98 % of the labels at least); with facet 0's states merged into one
    place, the refit brings them back (facet 0 accuracy >= 0.95 again)."""
    from types import SimpleNamespace

    x, c = _blobs(n=600)
    config = SMALL | {"pretrain_epochs": 30, "epochs": 10, "gmm_n_init": 3}
    model = MFCVAE((1, 1), (2, 2), **config).fit(x)
    labels = model.predict(x)
    assert cluster_accuracy(c[:, 0], labels[:, 0]) >= 0.95
    module = model.module_
    ctx = SimpleNamespace(
        module=module, data=model._check_input(x, ()), rng=np.random.default_rng(0)
    )
    model._refit_facets(ctx)
    after = model.predict(x)
    assert min(cluster_accuracy(labels[:, i], after[:, i]) for i in range(2)) >= 0.98
    good = module.prior.facet_gmms()[0]
    merged = GMM([0.5, 0.5], np.repeat(good.means.mean(0, keepdims=True), 2, 0), good.covariances)
    module.prior.set_facet(0, merged)
    assert cluster_accuracy(c[:, 0], model.predict(x)[:, 0]) < 0.8
    model._refit_facets(ctx)
    assert cluster_accuracy(c[:, 0], model.predict(x)[:, 0]) >= 0.95


def test_facet_refit_with_refit_basis_unmixes_blocks_that_carry_two_facets():
    """A fitted model whose latent is re-expressed so that each block carries both facets
    (decode(encode(x)) unchanged): refitting the facets in that basis cannot separate them
    (accuracy stays below 0.95), while refit_basis=True moves the latent back to a basis
    where each facet has its own block (both facets >= 0.95 again)."""
    import copy
    from types import SimpleNamespace

    x, c = _blobs(n=600)
    config = SMALL | {"pretrain_epochs": 30, "epochs": 10, "gmm_n_init": 3}
    fitted = MFCVAE((1, 1), (2, 2), **config).fit(x)

    def accuracies(model):
        labels = model.predict(x)
        return [cluster_accuracy(c[:, i], labels[:, i]) for i in range(2)]

    assert min(accuracies(fitted)) >= 0.95
    for basis in (False, True):
        model = copy.deepcopy(fitted)
        model.module_.apply_latent_map(np.array([[1.0, 0.7], [0.5, 1.0]]), np.zeros(2))
        model.refit_basis = basis
        ctx = SimpleNamespace(
            module=model.module_, data=model._check_input(x, ()), rng=np.random.default_rng(0)
        )
        model._refit_facets(ctx)
        assert (min(accuracies(model)) >= 0.95) == basis


def test_resume_after_a_crash_between_facet_refits_gives_the_uninterrupted_result(tmp_path):
    """With a refit after every epoch, killed in the second refit (the refits' draws and
    results are checkpointed with the steps)."""
    config = SMALL | {"epochs": 4, "prior_refit_every": 1}
    _crash_and_resume(tmp_path, config, "_refit_facets", crash_at=2)

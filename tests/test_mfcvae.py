import numpy as np
import pytest
import torch

from idvae import GMM
from idvae.models.mfcvae import (
    FacetedMixturePrior,
    check_facets,
    fade_in_weights,
    joint_gmm_from_facets,
)


def random_prior(seed=0, dims=(2, 1, 3), comps=(3, 2, 4)):
    torch.manual_seed(seed)
    prior = FacetedMixturePrior(dims, comps).double()
    with torch.no_grad():
        for i in range(prior.n_facets):
            prior.logits[i].normal_()
            prior.means[i].normal_().mul_(2.0)
            prior.raw_variances[i].normal_().mul_(0.5)
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
        comp = prior.facet_component_log_prob(z[:, :, s].reshape(-1, s.stop - s.start), i)
        log_p_given_c = (comp - prior.log_weights(i)).reshape(n_mc, n, -1)  # log N(z_i; c)
        samples = log_q[:, :, s].sum(-1)[..., None] - log_p_given_c  # (n_mc, n, K)
        mc = samples.mean(0)
        se = samples.std(0) / np.sqrt(n_mc)
        resp = log_resp[i].exp()
        mc_kl = (resp * mc).sum(1)
        mc_se = torch.sqrt(((resp * se) ** 2).sum(1))
        assert torch.all((kl_z[:, i] - mc_kl).abs() < 4 * mc_se + 1e-9)
        direct = (resp * (log_resp[i] - prior.log_weights(i))).sum(1)
        np.testing.assert_allclose(kl_c[:, i].numpy(), direct.numpy(), rtol=1e-12)
    assert torch.all(kl_c >= -1e-12) and torch.all(kl_z >= 0)


def test_kl_is_zero_when_posterior_equals_prior():
    prior = random_prior(4, dims=(2,), comps=(3,))
    k = 1
    mean = prior.means[0][k : k + 1].detach()
    var = prior.variances(0)[k : k + 1].detach()
    log_resp = [prior.log_weights(0)[None].detach()]
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

import numpy as np
import torch

from idvae.models.ivae import ConditionalGaussianPrior, diagonal_gaussian_kl


def test_diagonal_gaussian_kl_agrees_with_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    vq, vp = torch.rand(2, 5, 3, generator=gen, dtype=torch.float64) + 0.1
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mq, vq.sqrt()), torch.distributions.Normal(mp, vp.sqrt())
    ).sum(-1)
    np.testing.assert_allclose(diagonal_gaussian_kl(mq, vq, mp, vp), expected, rtol=1e-12)
    assert diagonal_gaussian_kl(mq, vq, mq, vq).abs().max() < 1e-12


def test_linear_prior_on_one_hot_u_is_a_table_of_classes():
    prior = ConditionalGaussianPrior(4, 2, ()).double()
    with torch.no_grad():
        prior.net[-1].weight.normal_()
        prior.net[-1].bias.normal_()
    prior.requires_grad_(False)
    u = torch.eye(4, dtype=torch.float64)[[0, 1, 1, 3]]
    mean, var = prior(u)
    assert mean.shape == (4, 2) and var.shape == (4, 2)
    assert torch.all(var >= prior.min_variance)
    # same class -> same conditional law
    assert torch.equal(mean[1], mean[2]) and torch.equal(var[1], var[2])
    z = torch.randn(4, 2, dtype=torch.float64)
    expected = torch.distributions.Normal(mean, var.sqrt()).log_prob(z).sum(1)
    np.testing.assert_allclose(prior.log_prob(z, u), expected, rtol=1e-12)


def test_prior_starts_standard_normal_and_every_parameter_gets_a_gradient():
    prior = ConditionalGaussianPrior(3, 2, (8,)).double()
    u = torch.randn(6, 3, dtype=torch.float64)
    mean, var = prior(u)
    assert mean.abs().max() < 0.1
    np.testing.assert_allclose(var.detach(), 1.0, atol=0.1)
    mean_q = torch.randn(6, 2, dtype=torch.float64)
    var_q = torch.rand(6, 2, dtype=torch.float64) + 0.5
    prior.kl(mean_q, var_q, u).sum().backward()
    for name, p in prior.named_parameters():
        assert p.grad is not None and torch.any(p.grad != 0), name

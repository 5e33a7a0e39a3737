"""benchmarks/exact_start.py (twentieth round of docs/recovery_levers.md): the true model's
likelihood against its closed form, and VaDE set exactly at the true model."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from benchmark_scripts import benchmark_module
from idvae.simulate import sample_model


def test_true_log_likelihood_matches_the_closed_form_of_a_linear_decoder() -> None:
    """With f(z) = W z + b, x is a Gaussian mixture with means W mu_c + b and covariances
    W Sigma_c W^T + sigma^2 I; the importance-sampling estimate agrees with it."""
    module = benchmark_module("exact_start")
    sim = sample_model(500, latent_dim=2, obs_dim=6, n_components=3, hidden=[], random_state=0)
    (layer,) = [m for m in sim.decoder if isinstance(m, torch.nn.Linear)]
    w, b = layer.weight.numpy(), layer.bias.numpy()
    prior = sim.prior
    densities = [
        np.log(weight)
        + multivariate_normal(w @ mean, w @ cov @ w.T + sim.noise_std**2 * np.eye(6)).logpdf(
            sim.x - b
        )
        for weight, mean, cov in zip(prior.weights, prior.means, prior.covariances, strict=True)
    ]
    closed = float(logsumexp(np.stack(densities), axis=0).mean())
    assert module.true_log_likelihood(sim, sim.x, sim.z) == pytest.approx(closed, abs=0.02)


@pytest.mark.parametrize("decoder", ["leaky_relu", "relu"])
def test_exact_model_decodes_as_the_true_decoder(decoder: str) -> None:
    """VaDE set at the truth maps z as the true decoder does (in the estimator's units), has
    the true prior and the true noise variance."""
    module = benchmark_module("exact_start")
    sim = sample_model(
        300, latent_dim=2, obs_dim=8, n_components=3, decoder=decoder, random_state=1
    )
    est = module.exact_model(sim)
    scale = est.scaler_scale_[0]
    with torch.no_grad():
        mine = est.module_.decoder.mean(torch.as_tensor(sim.z, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(mine * scale + est.scaler_mean_, sim.decode(sim.z), atol=1e-4)
    variance = float(est.module_.decoder.noise_variance().detach()) * scale**2
    assert variance == pytest.approx(sim.noise_std**2, rel=1e-4)
    np.testing.assert_allclose(est.module_.prior.to_gmm().means, sim.prior.means, atol=1e-5)


def test_train_takes_the_same_steps_when_scored_along_the_way() -> None:
    """``--drift`` scores the joint stage between steps; the scoring draws from its own
    generators, so the trained parameters equal those of the same steps unscored."""
    module = benchmark_module("exact_start")
    sim = sample_model(200, latent_dim=2, obs_dim=6, n_components=3, random_state=2)
    finals, scored = [], []
    for score in (False, True):
        est = module.exact_model(sim)
        (x,) = est._check_input(sim.x, ())
        generator = torch.Generator().manual_seed(0)
        after = partial(lambda e, step: scored.append(e.log_likelihood(sim.x, n_draws=5)), est)
        module.train(est, x, list(est.module_.parameters()), 6, generator, after if score else None)
        finals.append(torch.cat([p.detach().flatten() for p in est.module_.parameters()]))
    assert len(scored) == 6 and len(set(scored)) > 1  # scored after every step, as it moved
    assert torch.equal(finals[0], finals[1])


def test_exact_start_refuses_two_modes_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    module = benchmark_module("exact_start")
    argv = ["exact_start.py", "seed-0", "--kept-truth", "--drift"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            module.main()
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(
        "expected at most one of --ablate, --kept-truth and --drift but got --kept-truth and "
        "--drift"
    )

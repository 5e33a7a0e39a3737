"""Polish (full-batch L-BFGS after the epochs): closed forms, fixed draws per round, NaN policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from idvae.models import VaDE
from idvae.training.polish import polish


def _least_squares(n: int = 200, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    y = a @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    return torch.tensor(a), torch.tensor(y)


def test_polish_reaches_the_least_squares_solution_in_chunks() -> None:
    a, y = _least_squares()
    w = nn.Parameter(torch.zeros(5, dtype=torch.float64))

    def loss(a_batch, y_batch, *, generator):
        return {"loss": ((a_batch @ w - y_batch) ** 2).mean()}

    # 7-row chunks: the accumulated gradient is the full-batch one
    values = polish(loss, [w], (a, y), iterations=100, seed=0, chunk_rows=7)
    solution = np.linalg.lstsq(a.numpy(), y.numpy(), rcond=None)[0]
    assert np.allclose(w.detach().numpy(), solution, atol=1e-6)
    assert values[-1] == pytest.approx(float(((a.numpy() @ solution - y.numpy()) ** 2).mean()))


def _draws(seed: int, n: int) -> np.ndarray:
    return torch.randn((n, 3), generator=torch.Generator().manual_seed(seed)).double().numpy()


def test_the_draws_are_fixed_within_a_round_and_redrawn_for_the_next() -> None:
    # loss = mean over rows of |w - eps_row|^2: its minimiser is the mean of the draws
    x = torch.zeros((50, 1), dtype=torch.float64)
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))

    def loss(batch, *, generator):
        eps = torch.randn((len(batch), 3), generator=generator).double()
        return {"loss": ((w - eps) ** 2).sum(1).mean()}

    polish(loss, [w], (x,), iterations=20, seed=11, round_iterations=20)
    assert np.allclose(w.detach().numpy(), _draws(11, 50).mean(0), atol=1e-8)
    polish(loss, [w], (x,), iterations=40, seed=11, round_iterations=20)
    assert np.allclose(w.detach().numpy(), _draws(12, 50).mean(0), atol=1e-8)


def test_a_non_finite_round_is_rolled_back_and_ends_the_polish() -> None:
    x = torch.zeros((10, 1), dtype=torch.float64)
    w = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    calls = {"seeds": set()}

    def loss(batch, *, generator):
        seed = generator.initial_seed()
        calls["seeds"].add(seed)
        if seed > 0:  # the second round's objective is NaN
            return {"loss": (w * float("nan")).sum()}
        return {"loss": ((w - 2.0) ** 2).sum()}

    values = polish(loss, [w], (x,), iterations=30, seed=0, round_iterations=10)
    assert len(values) == 1 and values[0] == pytest.approx(0.0, abs=1e-12)
    assert float(w.detach()) == pytest.approx(2.0) and calls["seeds"] == {0, 1}


def _blobs(n: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(scale=4.0, size=(3, 5))[np.arange(n) % 3] + rng.normal(size=(n, 5))


def test_vade_polish_raises_the_training_bound_deterministically() -> None:
    X = _blobs()
    config = VaDE._test_config()
    plain = VaDE(**config).fit(X)
    polished = VaDE(**(config | {"polish_iterations": 100})).fit(X)
    again = VaDE(**(config | {"polish_iterations": 100})).fit(X)
    assert polished.score(X) > plain.score(X) + 0.05
    assert polished.log_likelihood(X) > plain.log_likelihood(X)
    assert np.array_equal(polished.transform(X), again.transform(X))


def test_vade_refuses_negative_polish_iterations() -> None:
    with pytest.raises(ValueError, match="polish_iterations"):
        VaDE(polish_iterations=-1).fit(_blobs())


def test_full_trials_are_polished_before_they_are_compared() -> None:
    """With n_init (or several starts) as full fits, the choice is between polished fits; with
    init_epochs < epochs only the kept trial is polished, after its remaining epochs."""
    X = _blobs()
    config = VaDE._test_config() | {"n_init": 2}
    plain = VaDE(**config).fit(X)
    polished = VaDE(**(config | {"polish_iterations": 100})).fit(X)
    # trial 0 is the same fit in both until the polish, which raises its bound
    assert polished.init_scores_[0] > plain.init_scores_[0] + 0.05
    partial = config | {"init_epochs": config["epochs"] - 1}
    late = VaDE(**(partial | {"polish_iterations": 100})).fit(X)
    assert late.init_scores_ == VaDE(**partial).fit(X).init_scores_
    assert late.score(X) > late.init_scores_[late.best_init_]

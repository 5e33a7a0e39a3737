"""Polish: full-batch L-BFGS on a fit's own objective after its epochs.

Mini-batch Adam leaves a fit short of its optimum by more than the differences that decide
identifiability: on the recovery instances of model (3), a VaDE fit's held-out
log-likelihood stays 0.1-0.3 nats per point below the true model's, and a folded latent and
the true one end within 0.02 nats of each other (docs/recovery_levers.md, findings 21-23).
Along such flat directions the gradient is small against the mini-batch noise. L-BFGS on
the whole data set, with the Monte Carlo draws of the objective held fixed so that it is a
deterministic function, follows them with curvature information instead.

The draws are fixed for a round of ``round_iterations`` iterations and redrawn for the
next (seeds ``seed``, ``seed + 1``, ...), so that the parameters cannot fit one set of draws
for long. The data are evaluated in chunks of ``chunk_rows`` rows whose gradients are
accumulated, so memory does not grow with the data. A round whose result is not finite is
rolled back and ends the polish (the parameters keep the last finite round).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from idvae.training.config import LossFn

__all__ = ["ROUND_ITERATIONS", "polish"]

# iterations per round of fixed draws (measured on model (3): 8 rounds of 250 gave the
# same recoveries as 1 round of 2,000 without its drop of the held-out bound)
ROUND_ITERATIONS = 250

# rows of the data per forward/backward pass of the full-batch objective
CHUNK_ROWS = 4096


def polish(
    loss_fn: LossFn,
    parameters: Sequence[nn.Parameter],
    data: tuple[torch.Tensor, ...],
    iterations: int,
    seed: int,
    *,
    round_iterations: int = ROUND_ITERATIONS,
    chunk_rows: int = CHUNK_ROWS,
) -> list[float]:
    """Minimise the mean of ``loss_fn`` over all of ``data`` by L-BFGS, draws fixed per round.

    Args:
        loss_fn: ``loss_fn(*batch, generator=g)`` returns a dict whose ``"loss"`` is the
            batch mean (a module's ``loss``).
        parameters: the parameters moved.
        data: the tensors of the whole data set, first dimension the samples.
        iterations: L-BFGS iterations in all (0 does nothing).
        seed: the seed of the first round's draws.
        round_iterations: iterations per round of fixed draws.
        chunk_rows: rows per forward/backward pass.

    Returns:
        The objective (the mean loss over the data, at the round's draws) after each round.
    """
    params = list(parameters)
    values: list[float] = []
    for index, start in enumerate(range(0, int(iterations), int(round_iterations))):
        saved = [p.detach().clone() for p in params]
        optimizer = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=min(int(round_iterations), int(iterations) - start),
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
        )

        def closure(index: int = index, optimizer: torch.optim.LBFGS = optimizer) -> torch.Tensor:
            optimizer.zero_grad()
            return _objective(loss_fn, data, chunk_rows, int(seed) + index, backward=True)

        optimizer.step(closure)
        with torch.no_grad():
            value = float(_objective(loss_fn, data, chunk_rows, int(seed) + index, backward=False))
        finite = math.isfinite(value) and all(bool(torch.isfinite(p).all()) for p in params)
        if not finite:
            with torch.no_grad():
                for p, old in zip(params, saved, strict=True):
                    p.copy_(old)
            break
        values.append(value)
    return values


def _objective(
    loss_fn: LossFn, data: tuple[torch.Tensor, ...], chunk_rows: int, seed: int, *, backward: bool
) -> torch.Tensor:
    """The mean loss over all rows at the draws of ``seed``; gradients accumulated if asked."""
    n = int(data[0].shape[0])
    device = data[0].device
    generator = torch.Generator(device=device).manual_seed(seed)
    total = torch.zeros((), device=device)
    for row in range(0, n, int(chunk_rows)):
        batch = [t[row : row + int(chunk_rows)] for t in data]
        loss = loss_fn(*batch, generator=generator)["loss"] * (len(batch[0]) / n)
        if backward:
            loss.backward()
        total = total + loss.detach()
    return total

"""The learning-rate schedule and the optimiser, the same for every phase and every stepper."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from idvae.training.config import TrainConfig

__all__ = ["adam", "lr_at", "step_lr"]


def step_lr(lr: float, decay: float, every: int, epoch: int) -> float:
    """The step schedule: ``lr * decay ** (epoch // every)``, epochs counted from 0."""
    return lr * decay ** (epoch // every)


def lr_at(config: TrainConfig, epoch: int, lr_scale: float = 1.0) -> float:
    """A phase's learning rate in ``epoch``, times ``lr_scale`` (halved by each NaN retry)."""
    return step_lr(config.lr * lr_scale, config.lr_decay, config.lr_decay_every, epoch)


def adam(params: Sequence[nn.Parameter], config: TrainConfig) -> torch.optim.Adam:
    """Adam, fused (one kernel per step: several times faster on CPU) where torch has it.

    Adam is elementwise, so one Adam over R stacked copies of a parameter is R Adams.
    """
    kwargs = {"lr": config.lr, "eps": config.adam_eps, "weight_decay": config.weight_decay}
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, foreach=True, **kwargs)

"""The learning-rate schedule and the optimiser, the same for every phase and every stepper."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Sequence

import torch
from torch import nn

from idvae.training.config import TrainConfig

__all__ = ["adam", "lr_at", "preload_optimizer", "step_lr"]

# what the first torch optimiser of a process imports (``Optimizer.__init__`` and ``step``
# are wrapped by ``torch._disable_dynamo``, which imports it on first call): 1.2 s on a
# quiet machine, ~3 s on a busy one, measured with torch 2.13
_OPTIMIZER_IMPORT = "torch._dynamo"
_preload_lock = threading.Lock()
_preload_started = False


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


def _import_quietly(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception:  # the optimiser's own import raises it where it matters
        pass


def preload_optimizer() -> None:
    """Start importing what the first optimiser imports, in a background thread, once.

    ``fit`` calls this first, so the import (``_OPTIMIZER_IMPORT``) runs while the data are
    validated and scaled and the prior initialised, instead of inside the first epoch.
    The optimiser's own import waits for this one (Python's per-module import lock), so
    nothing can see the module half imported. Nothing is patched; a process that has
    already imported it starts no thread.
    """
    global _preload_started
    with _preload_lock:
        if _preload_started or _OPTIMIZER_IMPORT in sys.modules:
            return
        _preload_started = True
    threading.Thread(
        target=_import_quietly, args=(_OPTIMIZER_IMPORT,), name="idvae-preload", daemon=True
    ).start()

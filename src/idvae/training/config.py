"""What a training phase is given and what it returns: settings, the phase, the outcome."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "ComponentCollapseWarning",
    "EpochHook",
    "LossFn",
    "Phase",
    "PhaseResult",
    "PhaseRunner",
    "TrainConfig",
    "TrainingError",
    "resolve_device",
]

LossFn = Callable[..., dict[str, torch.Tensor]]
EpochHook = Callable[[int, dict[str, Any]], dict[str, Any] | None]


class TrainingError(RuntimeError):
    """Training could not continue (e.g. the loss stayed non-finite after every retry)."""


class ComponentCollapseWarning(UserWarning):
    """A mixture component's weight fell below the collapse threshold during training."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training phase.

    Attributes:
        epochs: number of passes over the data.
        batch_size: mini-batch size (the last batch of an epoch may be smaller).
        lr: Adam's initial learning rate.
        lr_decay: multiplicative decay of the learning rate ...
        lr_decay_every: ... applied every this many epochs (VaDE: 0.9 every 10).
        adam_eps: Adam's epsilon.
        weight_decay: L2 penalty of Adam.
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        early_stopping: stop when the epoch loss has not improved by ``min_delta`` for
            ``patience`` epochs.
        patience: see ``early_stopping``.
        min_delta: see ``early_stopping``.
        max_retries: how many non-finite epochs are retried (each halves the learning
            rate) before ``TrainingError``.
        verbose: 0 silent; 1 a progress bar with the loss terms.
    """

    epochs: int
    batch_size: int = 100
    lr: float = 2e-3
    lr_decay: float = 1.0
    lr_decay_every: int = 10
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None
    early_stopping: bool = False
    patience: int = 5
    min_delta: float = 1e-4
    max_retries: int = 5
    verbose: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"Expected epochs >= 0 but got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"Expected batch_size >= 1 but got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"Expected a positive finite lr but got {self.lr}")
        if not (0 < self.lr_decay <= 1):
            raise ValueError(f"Expected 0 < lr_decay <= 1 but got {self.lr_decay}")
        if self.lr_decay_every < 1:
            raise ValueError(f"Expected lr_decay_every >= 1 but got {self.lr_decay_every}")
        if self.max_retries < 0:
            raise ValueError(f"Expected max_retries >= 0 but got {self.max_retries}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"Expected grad_clip > 0 or None but got {self.grad_clip}")


@dataclass
class PhaseResult:
    """What a phase returns: the per-epoch records and how the phase ended."""

    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_run: int = 0
    stopped_early: bool = False
    retries: int = 0
    lr_scale: float = 1.0


@dataclass
class Phase:
    """One training phase of one fit, as an estimator asks for it.

    A phase runner (``PhaseRunner``) trains it: ``idvae.training.run_phase`` on its own,
    ``idvae.vectorize.fit_seeds`` together with the same phase of other seeds.

    Attributes:
        name: the phase's name in the history and the checkpoint (``"pretrain"``, ...).
        config: its settings.
        module: the torch module trained.
        data: tensors with the same first dimension n_samples, on the training device.
        generator: CPU generator of the mini-batch order.
        noise_generator: generator on the module's device for the loss's noise.
        loss_fn: ``loss_fn(*batch, generator=...) -> dict`` (None: ``module.loss``).
        parameters: the parameters trained (None: all of ``module``'s).
        on_epoch_end: called after each good epoch with (epoch, record); may return extra
            entries for the record.
        resume_state: a checkpoint of this phase to continue, or None.
        checkpoint: called with the full state after each good epoch, or None.
    """

    name: str
    config: TrainConfig
    module: nn.Module
    data: Sequence[torch.Tensor]
    generator: torch.Generator
    noise_generator: torch.Generator
    loss_fn: LossFn | None = None
    parameters: Iterable[nn.Parameter] | None = None
    on_epoch_end: EpochHook | None = None
    resume_state: dict[str, Any] | None = None
    checkpoint: Callable[[dict[str, Any]], None] | None = None


PhaseRunner = Callable[[Phase], PhaseResult]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is checked and returned."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"Expected device to be a string but got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"Expected device 'auto', 'cpu' or 'cuda[:i]' but got {device!r}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Expected an available device but got {device!r} (no CUDA here)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"Expected device 'auto', 'cpu' or 'cuda[:i]' but got {device!r}")
    return dev

"""The training engine shared by every estimator, kept apart from the models.

One loop serves all models: mini-batches drawn by a seeded ``torch.Generator``, Adam, a
step learning-rate schedule (as VaDE's code uses), an optional progress display of the loss
terms, a per-epoch log, optional early stopping, and three guards:

- **checkpoints**: after every epoch the whole state (model, optimiser, schedule, RNG
  states, epoch, history, config) is written atomically to ``checkpoint.pt``, a plain
  torch state dict readable with ``torch.load(..., weights_only=True)``; resuming from it
  gives bitwise the result of an uninterrupted run on CPU;
- **NaN/inf guard**: a non-finite loss or gradient rolls back to the start of the epoch,
  halves the learning rate and retries; after ``max_retries`` it raises ``TrainingError``;
- collapse detection lives with the estimators (``ComponentCollapseWarning``).

A *phase* (e.g. autoencoder pretraining, then the ELBO) is one call of ``train``; the
estimator runs its phases in a fixed order through ``idvae.models._base.FitContext``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from idvae._validation import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CHECKPOINT_NAME",
    "ComponentCollapseWarning",
    "PhaseResult",
    "TrainConfig",
    "TrainingError",
    "load_checkpoint",
    "numpy_rng_state",
    "resolve_device",
    "save_checkpoint",
    "set_numpy_rng_state",
    "train",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT_VERSION = 1

LossFn = Callable[..., dict[str, torch.Tensor]]


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
    """What ``train`` returns: the per-epoch records and how the phase ended."""

    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_run: int = 0
    stopped_early: bool = False
    retries: int = 0
    lr_scale: float = 1.0


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


# -- checkpoints ----------------------------------------------------------------------------
def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically with torch.save."""
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; refuse damaged or newer files.

    Raises:
        OSError: the file is missing or unreadable.
        ValueError: the file is truncated, corrupted, not a checkpoint, or from a newer
            format version.
    """
    path = Path(path)
    if not path.is_file():
        raise OSError(f"Expected a checkpoint file at {path} but none exists")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for damaged files
        raise ValueError(
            f"Expected a readable idvae checkpoint in {path} but it is damaged or truncated "
            f"({type(err).__name__})"
        ) from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise ValueError(f"Expected an idvae checkpoint in {path} but got another kind of file")
    version = state["format_version"]
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"Expected checkpoint format version <= {CHECKPOINT_FORMAT_VERSION} in {path} but "
            f"got {version}; it was written by a newer idvae"
        )
    return state


def _generator_state(gen: torch.Generator) -> torch.Tensor:
    return gen.get_state().clone()


# -- the loop -------------------------------------------------------------------------------
class _Progress:
    """A rich progress bar over the steps of each epoch (only when verbose > 0)."""

    def __init__(self, verbose: int, phase: str, epochs: int, steps: int) -> None:
        self.bar = None
        if verbose <= 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.phase, self.epochs, self.steps = phase, epochs, steps
        self.bar.start()
        self.task = self.bar.add_task(phase, total=steps)

    def epoch_start(self, epoch: int) -> None:
        if self.bar is not None:
            self.bar.reset(self.task, total=self.steps)
            self.bar.update(self.task, description=f"{self.phase} {epoch}/{self.epochs}")

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        if self.bar is not None:
            terms = " ".join(
                f"{k}={v:.4g}"
                for k, v in record.items()
                if k not in ("phase", "epoch", "time_s", "lr", "min_weight")
                and isinstance(v, float)
            )
            self.bar.update(self.task, description=f"{self.phase} {epoch}/{self.epochs} {terms}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _lr_at(config: TrainConfig, epoch: int, lr_scale: float) -> float:
    """Step schedule: ``lr * lr_decay ** (epoch // lr_decay_every)`` times the NaN scale."""
    return config.lr * lr_scale * config.lr_decay ** (epoch // config.lr_decay_every)


def train(
    module: nn.Module,
    data: Sequence[torch.Tensor],
    config: TrainConfig,
    *,
    generator: torch.Generator,
    noise_generator: torch.Generator | None = None,
    loss_fn: LossFn | None = None,
    parameters: Iterable[nn.Parameter] | None = None,
    phase: str = "train",
    resume_state: dict[str, Any] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], dict[str, Any] | None] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> PhaseResult:
    """Run one training phase of ``module`` on ``data``.

    Args:
        module: the torch module; its state dict is what is checkpointed and rolled back.
        data: tensors with the same first dimension n_samples (e.g. ``(x,)`` or
            ``(x, u)``), already on the training device; batches index them together.
        config: the phase's settings.
        generator: CPU generator that draws the mini-batch order.
        noise_generator: generator on the module's device handed to ``loss_fn`` for
            reparameterisation noise (default: ``generator``).
        loss_fn: ``loss_fn(*batch, generator=noise_generator) -> dict`` with key
            ``"loss"`` (a scalar to minimise) and optional named scalar terms to log
            (default ``module.loss``).
        parameters: the parameters to optimise (default all of ``module``'s).
        phase: the name recorded in the history and the checkpoint.
        resume_state: a checkpoint of this phase (from ``load_checkpoint``) to continue.
        on_epoch_end: called after each good epoch with (epoch, record); may return extra
            entries for the record (e.g. the smallest mixture weight).
        checkpoint: called after each good epoch with the full state dict of the phase; the
            caller adds its own entries and writes it (``save_checkpoint``).

    Returns:
        The phase's history and how it ended.

    Raises:
        TrainingError: the loss or a gradient was non-finite in ``max_retries + 1``
            consecutive attempts of one epoch.
    """
    if not data:
        raise ValueError("Expected at least one data tensor but got none")
    n_samples = int(data[0].shape[0])
    if any(int(t.shape[0]) != n_samples for t in data):
        raise ValueError(
            "Expected data tensors with equal first dimension but got "
            f"{[tuple(t.shape) for t in data]}"
        )
    loss_fn = module.loss if loss_fn is None else loss_fn
    noise_generator = generator if noise_generator is None else noise_generator
    params = [p for p in (module.parameters() if parameters is None else parameters)]
    optimizer = _adam(params, config)
    result = PhaseResult()
    start_epoch = 0
    best, bad_epochs = math.inf, 0
    if resume_state is not None:
        module.load_state_dict(resume_state["module"])
        optimizer.load_state_dict(resume_state["optimizer"])
        generator.set_state(resume_state["rng_torch"])
        if noise_generator is not generator:
            noise_generator.set_state(resume_state["rng_noise"])
        engine = json.loads(resume_state["engine"])
        start_epoch = int(resume_state["epoch"])
        result.history = engine["history"]
        result.retries = engine["retries"]
        result.lr_scale = engine["lr_scale"]
        result.stopped_early = engine["stopped_early"]
        best, bad_epochs = engine["best"], engine["bad_epochs"]
        result.epochs_run = start_epoch
        if result.stopped_early:
            return result

    batch_size = min(config.batch_size, n_samples)
    steps = math.ceil(n_samples / batch_size)
    progress = _Progress(config.verbose, phase, config.epochs, steps)
    epoch = start_epoch
    try:
        while epoch < config.epochs:
            lr = _lr_at(config, epoch, result.lr_scale)
            for group in optimizer.param_groups:
                group["lr"] = lr
            snapshot = _snapshot(module, optimizer)
            progress.epoch_start(epoch + 1)
            started = time.perf_counter()
            sums = _run_epoch(
                module, data, optimizer, params, loss_fn, config, batch_size, n_samples,
                generator, noise_generator, progress,
            )  # fmt: skip
            if sums is None:  # non-finite: roll back, halve the learning rate, retry
                result.retries += 1
                # the generators are not rolled back: the retry sees a new batch order and
                # new noise, so a failure tied to one batch is not replayed
                _restore(snapshot, module, optimizer)
                if result.retries > config.max_retries:
                    raise TrainingError(
                        f"The {phase} loss or its gradient was non-finite in epoch {epoch + 1} "
                        f"after {config.max_retries} retries, each rolling back to the start "
                        f"of the epoch and halving the learning rate (last lr {lr:.3g}); "
                        "try a smaller lr, a larger batch_size or standardised data"
                    )
                result.lr_scale *= 0.5
                continue
            epoch += 1
            record: dict[str, Any] = {"phase": phase, "epoch": epoch}
            record.update({k: v / n_samples for k, v in sums.items()})
            record["lr"] = lr
            record["time_s"] = time.perf_counter() - started
            if on_epoch_end is not None:
                record.update(on_epoch_end(epoch, record) or {})
            result.history.append(record)
            result.epochs_run = epoch
            progress.epoch_end(epoch, record)
            if config.early_stopping:
                if record["loss"] < best - config.min_delta:
                    best, bad_epochs = record["loss"], 0
                else:
                    bad_epochs += 1
                result.stopped_early = bad_epochs >= config.patience
            if checkpoint is not None:
                engine = {
                    "history": result.history,
                    "retries": result.retries,
                    "lr_scale": result.lr_scale,
                    "stopped_early": result.stopped_early,
                    "best": best if math.isfinite(best) else 1e308,
                    "bad_epochs": bad_epochs,
                    "config": asdict(config),
                }
                checkpoint(
                    {
                        "format_version": CHECKPOINT_FORMAT_VERSION,
                        "phase": phase,
                        "epoch": epoch,
                        "module": module.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng_torch": _generator_state(generator),
                        "rng_noise": _generator_state(noise_generator),
                        "engine": json.dumps(engine),
                    }
                )
            if result.stopped_early:
                break
    finally:
        progress.close()
    return result


def _adam(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Adam:
    """Adam, fused (one kernel per step: several times faster on CPU) where torch has it."""
    kwargs = {"lr": config.lr, "eps": config.adam_eps, "weight_decay": config.weight_decay}
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, foreach=True, **kwargs)


def _run_epoch(
    module: nn.Module,
    data: Sequence[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    loss_fn: LossFn,
    config: TrainConfig,
    batch_size: int,
    n_samples: int,
    generator: torch.Generator,
    noise_generator: torch.Generator,
    progress: _Progress,
) -> dict[str, float] | None:
    """One pass over the data; the summed loss terms, or None at the first non-finite step."""
    module.train()
    order = torch.randperm(n_samples, generator=generator)
    device = data[0].device
    if device.type != "cpu":
        order = order.to(device)
    sums: dict[str, float] = {}
    max_norm = config.grad_clip if config.grad_clip is not None else math.inf
    for start in range(0, n_samples, batch_size):
        index = order[start : start + batch_size]
        batch = [t.index_select(0, index) for t in data]
        terms = loss_fn(*batch, generator=noise_generator)
        loss = terms["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        names = list(terms)
        # one host sync per step: the logged terms and the finiteness checks together
        values = torch.stack([terms[k].detach().float() for k in names] + [grad_norm]).tolist()
        if not all(math.isfinite(v) for v in values):
            return None
        optimizer.step()
        n = int(index.shape[0])
        for k, v in zip(names, values, strict=False):
            sums[k] = sums.get(k, 0.0) + v * n
        progress.advance()
    return sums


def _snapshot(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The last good state: module and optimiser at the start of the epoch (copies)."""
    return {
        "module": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
    }


def _restore(snapshot: dict[str, Any], module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    module.load_state_dict(snapshot["module"])
    # load_state_dict may alias the given tensors, which Adam then updates in place: hand it
    # a copy so the snapshot survives for a second retry
    optimizer.load_state_dict(copy.deepcopy(snapshot["optimizer"]))


def numpy_rng_state(rng: np.random.Generator) -> str:
    """The state of a numpy Generator as a JSON string (for checkpoints)."""
    return json.dumps(rng.bit_generator.state)


def set_numpy_rng_state(rng: np.random.Generator, state: str) -> None:
    """Restore a state produced by ``numpy_rng_state``."""
    rng.bit_generator.state = json.loads(state)

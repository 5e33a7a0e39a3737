"""The epoch loop: one loop for a single fit and for R seeds trained as one batched model.

``fit_loop`` drives a stepper (``idvae.training.stepper``): one module (``ModuleStepper``)
or R modules stacked (``idvae.training.stack.StackStepper``). For every member it keeps the
per-epoch records, the learning-rate schedule, early stopping and the non-finite policy;
the stepper only takes the steps. ``train`` is a single fit's phase with checkpoints and
resume; ``run_phase`` runs a ``Phase`` that way (the default phase runner of the
estimators).

Non-finite policy (the same for one module and for a stack): a step whose loss terms or
gradient norm are not finite is not taken for that member. The member leaves the epoch at
once, rolled back to the start of the epoch (module and Adam state; its generators are not
rolled back, so the retry sees a new batch order and new noise and a failure tied to one
batch is not replayed), and retries the epoch on its own with its learning rate halved for
the rest of the phase. A stacked member goes on as a ``ModuleStepper`` for the rest of the
phase, exactly as its separate fit would; the other members are not affected. After
``max_retries`` retries the member fails with ``TrainingError``, rolled back to its last
good state; ``train`` raises it, ``fit_loop`` returns it in the member's place.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from idvae.training.checkpoint import CHECKPOINT_FORMAT_VERSION
from idvae.training.config import (
    EpochHook,
    LossFn,
    Phase,
    PhaseResult,
    TrainConfig,
    TrainingError,
)
from idvae.training.progress import Progress
from idvae.training.schedule import lr_at
from idvae.training.stepper import ModuleStepper, Stepper

__all__ = ["Member", "fit_loop", "run_phase", "train"]

Checkpoint = Callable[[dict[str, Any]], None]


@dataclass
class Member:
    """The loop's state of one member: its result so far, early stopping, its epoch hook."""

    result: PhaseResult
    on_epoch_end: EpochHook | None = None
    best: float = math.inf
    bad_epochs: int = 0
    error: TrainingError | None = None

    def engine_state(self, config: TrainConfig) -> str:
        """The loop's state as JSON, for a checkpoint."""
        return json.dumps(
            {
                "history": self.result.history,
                "retries": self.result.retries,
                "lr_scale": self.result.lr_scale,
                "stopped_early": self.result.stopped_early,
                "best": self.best if math.isfinite(self.best) else 1e308,
                "bad_epochs": self.bad_epochs,
                "config": asdict(config),
            }
        )

    @classmethod
    def from_engine_state(cls, state: str, on_epoch_end: EpochHook | None) -> Member:
        engine = json.loads(state)
        result = PhaseResult(
            history=engine["history"],
            stopped_early=engine["stopped_early"],
            retries=engine["retries"],
            lr_scale=engine["lr_scale"],
        )
        return cls(result, on_epoch_end, engine["best"], engine["bad_epochs"])


def fit_loop(
    stepper: Stepper,
    config: TrainConfig,
    members: Sequence[Member],
    *,
    phase: str = "train",
    start_epoch: int = 0,
    checkpoint: Checkpoint | None = None,
) -> list[PhaseResult | TrainingError]:
    """Train every member of ``stepper`` for the phase; one outcome per member.

    Args:
        stepper: the members trained together (``stepper.size == len(members)``).
        config: the phase's settings.
        members: the loop state of each member (fresh, or restored from a checkpoint).
        phase: the name recorded in the history and the checkpoint.
        start_epoch: the number of epochs already run (on resume).
        checkpoint: called after each good epoch with the full state of the phase (a single
            module only); the caller adds its own entries and writes it.

    Returns:
        Per member, its ``PhaseResult``, or the ``TrainingError`` it failed with.
    """
    if len(members) != stepper.size:
        raise ValueError(f"Expected {stepper.size} members but got {len(members)}")
    if checkpoint is not None and stepper.size != 1:
        raise ValueError(f"Expected a single module to checkpoint but got {stepper.size}")
    label = phase if stepper.size == 1 else f"{phase} x{stepper.size}"
    runs: list[tuple[Stepper, list[Member], int]] = [(stepper, list(members), start_epoch)]
    while runs:  # the members that left an epoch retry it on their own
        current, group, epoch = runs.pop(0)
        runs.extend(_run_epochs(current, group, epoch, config, phase, label, checkpoint))
    return [m.error if m.error is not None else m.result for m in members]


def _run_epochs(
    stepper: Stepper,
    group: list[Member],
    epoch: int,
    config: TrainConfig,
    phase: str,
    label: str,
    checkpoint: Checkpoint | None,
) -> list[tuple[Stepper, list[Member], int]]:
    """Run epochs from ``epoch`` on; return the members that left, each to retry an epoch."""
    n_samples = stepper.n_samples
    batch_size = min(config.batch_size, n_samples)
    progress = Progress(config.verbose, label, config.epochs, math.ceil(n_samples / batch_size))
    retries: list[tuple[Stepper, list[Member], int]] = []
    try:
        while epoch < config.epochs and group:
            # every member of a stepper has the same scale: one that was halved left it
            lr = lr_at(config, epoch, group[0].result.lr_scale)
            stepper.set_lr(lr)
            snapshot = stepper.snapshot()
            progress.epoch_start(epoch + 1)
            started = time.perf_counter()
            stepper.start_epoch()
            sums: list[dict[str, float]] = [{} for _ in group]
            for start in range(0, n_samples, batch_size):
                step = stepper.step(start, start + batch_size)
                n = min(batch_size, n_samples - start)
                for member_sums, values, finite in zip(sums, step.values, step.finite, strict=True):
                    if finite:
                        for k, v in zip(step.names, values, strict=True):
                            member_sums[k] = member_sums.get(k, 0.0) + v * n
                failed = [j for j, finite in enumerate(step.finite) if not finite]
                if failed:
                    singles = stepper.detach(failed, snapshot)
                    for j, single in zip(failed, singles, strict=True):
                        if _retry(group[j], config, phase, epoch, lr):
                            retries.append((single, [group[j]], epoch))
                    group = [m for j, m in enumerate(group) if j not in failed]
                    sums = [s for j, s in enumerate(sums) if j not in failed]
                    if not group:
                        break
                progress.advance()
            if not group:
                break
            epoch += 1
            elapsed = time.perf_counter() - started
            stepper.to_modules()
            for member, member_sums in zip(group, sums, strict=True):
                _record(member, member_sums, config, phase, epoch, lr, elapsed, n_samples)
            stepper.from_modules()  # the hooks may set buffers (e.g. MFCVAE's fade-in)
            progress.epoch_end(epoch, group[0].result.history[-1])
            if checkpoint is not None:
                _checkpoint(stepper, group[0], config, phase, epoch, checkpoint)
            stopped = [j for j, m in enumerate(group) if m.result.stopped_early]
            if stopped:
                stepper.drop(stopped)
                group = [m for j, m in enumerate(group) if j not in stopped]
    finally:
        progress.close()
    if group:
        stepper.to_modules()
    return retries


def _retry(member: Member, config: TrainConfig, phase: str, epoch: int, lr: float) -> bool:
    """Count a non-finite epoch of ``member``: True to retry it, False when it has failed."""
    result = member.result
    result.retries += 1
    if result.retries > config.max_retries:
        member.error = TrainingError(
            f"The {phase!r} loss or its gradient was non-finite in epoch {epoch + 1} "
            f"after {config.max_retries} retries, each rolling back to the start "
            f"of the epoch and halving the learning rate (last lr {lr:.3g}); "
            "try a smaller lr, a larger batch_size or standardised data"
        )
        return False
    result.lr_scale *= 0.5
    return True


def _record(
    member: Member,
    sums: dict[str, float],
    config: TrainConfig,
    phase: str,
    epoch: int,
    lr: float,
    elapsed: float,
    n_samples: int,
) -> None:
    """Append the epoch's record to the member's history; update its early stopping."""
    record: dict[str, Any] = {"phase": phase, "epoch": epoch}
    record.update({k: v / n_samples for k, v in sums.items()})
    record["lr"] = lr
    # in a stack, the batched epoch's time, shared by the members trained in it
    record["time_s"] = elapsed
    if member.on_epoch_end is not None:
        record.update(member.on_epoch_end(epoch, record) or {})
    result = member.result
    result.history.append(record)
    result.epochs_run = epoch
    if config.early_stopping:
        if record["loss"] < member.best - config.min_delta:
            member.best, member.bad_epochs = record["loss"], 0
        else:
            member.bad_epochs += 1
        result.stopped_early = member.bad_epochs >= config.patience


def _checkpoint(
    stepper: Any,
    member: Member,
    config: TrainConfig,
    phase: str,
    epoch: int,
    checkpoint: Checkpoint,
) -> None:
    state = {"format_version": CHECKPOINT_FORMAT_VERSION, "phase": phase, "epoch": epoch}
    state.update(stepper.state_dict())
    state["engine"] = member.engine_state(config)
    checkpoint(state)


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
    on_epoch_end: EpochHook | None = None,
    checkpoint: Checkpoint | None = None,
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
            consecutive attempts of one epoch (the module is left at its last good state).
    """
    check_data(data)
    stepper = ModuleStepper(
        module,
        data,
        config,
        generator=generator,
        noise_generator=generator if noise_generator is None else noise_generator,
        loss_fn=module.loss if loss_fn is None else loss_fn,
        parameters=list(module.parameters() if parameters is None else parameters),
    )
    member, start_epoch = Member(PhaseResult(), on_epoch_end), 0
    if resume_state is not None:
        stepper.load_state_dict(resume_state)
        member = Member.from_engine_state(resume_state["engine"], on_epoch_end)
        start_epoch = member.result.epochs_run = int(resume_state["epoch"])
        if member.result.stopped_early:
            return member.result
    (outcome,) = fit_loop(
        stepper, config, [member], phase=phase, start_epoch=start_epoch, checkpoint=checkpoint
    )
    if isinstance(outcome, TrainingError):
        raise outcome
    return outcome


def run_phase(phase: Phase) -> PhaseResult:
    """Train ``phase`` on its own: the default phase runner of the estimators."""
    return train(
        phase.module,
        phase.data,
        phase.config,
        generator=phase.generator,
        noise_generator=phase.noise_generator,
        loss_fn=phase.loss_fn,
        parameters=phase.parameters,
        phase=phase.name,
        resume_state=phase.resume_state,
        on_epoch_end=phase.on_epoch_end,
        checkpoint=phase.checkpoint,
    )


def check_data(data: Sequence[torch.Tensor]) -> None:
    """Refuse no tensors, or tensors whose first dimensions differ."""
    if not data:
        raise ValueError("Expected at least one data tensor but got none")
    n_samples = int(data[0].shape[0])
    if any(int(t.shape[0]) != n_samples for t in data):
        raise ValueError(
            "Expected data tensors with equal first dimension but got "
            f"{[tuple(t.shape) for t in data]}"
        )

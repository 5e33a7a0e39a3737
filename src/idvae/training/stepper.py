"""The stepper protocol the epoch loop drives, and its one-module implementation.

A *stepper* holds what the loop trains: ``size`` members (one module, or R modules stacked
and trained as one, ``idvae.training.stack``), each with its own mini-batch order, noise and
Adam state, all on the same data size and learning rate. The loop (``idvae.training.loop``)
owns everything else: the schedule, the records, early stopping, progress, checkpoints and
the non-finite policy. A stepper only

- draws each member's batch order at the start of an epoch (``start_epoch``),
- takes one optimisation step of every member on the batch ``[start, stop)`` of its order,
  stepping only the members whose loss terms and gradient norm are finite (``step``),
- copies its state for a rollback (``snapshot``) and hands members out of the epoch,
  rolled back to a snapshot, each as a ``ModuleStepper`` of its own (``detach``), or drops
  members that have finished (``drop``),
- writes its values into the members' modules before the epoch hooks and reads back what
  the hooks changed (``to_modules`` / ``from_modules``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from idvae.training.config import LossFn, TrainConfig
from idvae.training.schedule import adam

__all__ = ["ModuleStepper", "Step", "Stepper"]


@dataclass
class Step:
    """The outcome of one step: the loss terms of each member and whether they were finite.

    Attributes:
        names: the loss terms' names (``"loss"`` first or not: as the loss returns them).
        values: one list per member, the terms' batch means in the order of ``names``.
        finite: per member, whether its terms and its gradient norm were finite (a member
            that was not finite was not stepped).
    """

    names: list[str]
    values: list[list[float]]
    finite: list[bool]


class Stepper(Protocol):
    """What the epoch loop trains (see the module docstring)."""

    size: int
    n_samples: int

    def set_lr(self, lr: float) -> None: ...

    def snapshot(self) -> Any: ...

    def start_epoch(self) -> None: ...

    def step(self, start: int, stop: int) -> Step: ...

    def detach(self, positions: list[int], snapshot: Any) -> list[ModuleStepper]: ...

    def drop(self, positions: list[int]) -> None: ...

    def to_modules(self) -> None: ...

    def from_modules(self) -> None: ...


class ModuleStepper:
    """One module trained on its data by Adam: the stepper of a single fit.

    Args:
        module: the torch module; its state dict is what is checkpointed and rolled back.
        data: tensors with the same first dimension n_samples, on the training device.
        config: the phase's settings (Adam's, clipping).
        generator: CPU generator that draws the mini-batch order.
        noise_generator: generator handed to ``loss_fn`` for reparameterisation noise.
        loss_fn: ``loss_fn(*batch, generator=noise_generator) -> dict`` with key ``"loss"``.
        parameters: the parameters to optimise.
    """

    size = 1

    def __init__(
        self,
        module: nn.Module,
        data: Sequence[torch.Tensor],
        config: TrainConfig,
        *,
        generator: torch.Generator,
        noise_generator: torch.Generator,
        loss_fn: LossFn,
        parameters: Sequence[nn.Parameter],
    ) -> None:
        self.module, self.data, self.loss_fn = module, data, loss_fn
        self.generator, self.noise_generator = generator, noise_generator
        self.n_samples = int(data[0].shape[0])
        self.params = list(parameters)
        self.optimizer = adam(self.params, config)
        self.max_norm = config.grad_clip if config.grad_clip is not None else math.inf
        self.order: torch.Tensor | None = None

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def snapshot(self) -> dict[str, Any]:
        """The module and the optimiser now (copies)."""
        return {
            "module": {k: v.detach().clone() for k, v in self.module.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.module.load_state_dict(snapshot["module"])
        # load_state_dict may alias the given tensors, which Adam then updates in place: hand
        # it a copy so the snapshot survives for a second retry
        self.optimizer.load_state_dict(copy.deepcopy(snapshot["optimizer"]))

    def start_epoch(self) -> None:
        self.module.train()
        order = torch.randperm(self.n_samples, generator=self.generator)
        device = self.data[0].device
        self.order = order.to(device) if device.type != "cpu" else order

    def step(self, start: int, stop: int) -> Step:
        assert self.order is not None, "start_epoch comes first"
        index = self.order[start:stop]
        batch = [t.index_select(0, index) for t in self.data]
        terms = self.loss_fn(*batch, generator=self.noise_generator)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm, foreach=True)
        names = list(terms)
        # one host sync per step: the logged terms and the finiteness checks together
        values = torch.stack([terms[k].detach().float() for k in names] + [grad_norm]).tolist()
        finite = all(math.isfinite(v) for v in values)
        if finite:
            self.optimizer.step()
        return Step(names, [values[:-1]], [finite])

    def detach(self, positions: list[int], snapshot: Any) -> list[ModuleStepper]:
        """The module rolled back to ``snapshot``: itself (the only member)."""
        if positions != [0]:
            raise ValueError(f"Expected positions [0] of a single module but got {positions}")
        self.restore(snapshot)
        return [self]

    def drop(self, positions: list[int]) -> None:
        """Nothing to free: the loop stops driving a stepper without members."""

    def to_modules(self) -> None:
        """The module is trained in place."""

    def from_modules(self) -> None:
        """The module is trained in place."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds of the stepper: module, optimiser, both generators."""
        return {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng_torch": self.generator.get_state().clone(),
            "rng_noise": self.noise_generator.get_state().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng_torch"])
        if self.noise_generator is not self.generator:
            self.noise_generator.set_state(state["rng_noise"])

"""R copies of a module trained as one batched model: the stepper of vectorised seeds.

``StackStepper`` stacks the parameters of R modules (one per seed) along a new leading
axis; every step evaluates the R losses at once with ``torch.func.vmap`` over
``torch.func.functional_call`` (so each linear layer becomes one batched matmul), and one
Adam updates the stacked parameters. Adam is elementwise, so this is R independent Adam
runs. Each member keeps

- its own mini-batch order (its ``torch.Generator``, drawn as ``ModuleStepper`` draws it),
- its own reparameterisation noise: every ``torch.randn`` / ``torch.rand`` call that the
  loss makes with a ``generator`` is served from noise drawn beforehand from the member's
  generator, with the same shapes in the same order as its own fit would draw,
- its own gradient clipping (``clip_grad_norm_`` on its own norm) and finiteness check.

So a member and a separate fit with the same seed differ only by floating-point rounding
(batched vs. unbatched matmul kernels), which training may amplify over many steps. The
epoch loop (``idvae.training.loop.fit_loop``) drives it like one module: a member whose
step is not finite is detached, rolled back to the start of the epoch, as a
``ModuleStepper`` of its own.

``train_stacked`` trains the same phase of R fits (``Phase``) this way.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.overrides import TorchFunctionMode

from idvae.training.config import Phase, PhaseResult, TrainConfig, TrainingError
from idvae.training.loop import Member, check_data, fit_loop
from idvae.training.schedule import adam
from idvae.training.stepper import ModuleStepper, Step

__all__ = ["StackStepper", "VectorizationError", "train_stacked"]


class VectorizationError(RuntimeError):
    """The members cannot be trained as one batched model."""


# random functions that draw from a generator handed to them; served from pre-drawn noise
_FED = {torch.randn: "randn", torch.rand: "rand"}


def train_stacked(phases: Sequence[Phase]) -> list[PhaseResult | TrainingError]:
    """Train the same phase of several fits as one batched model; one outcome per phase.

    The phases must agree in name, settings, the module method minimised, the parameters
    trained and the data shapes (the fits of one estimator under different seeds do).

    Raises:
        VectorizationError: the phases differ, ask for checkpoints, or their loss cannot be
            batched (randomness drawn other than with ``torch.randn``/``torch.rand`` and
            the given generator, or operations ``vmap`` does not support).
    """
    method, trained = _check_same_phase(phases)
    first = phases[0]
    if first.config.epochs == 0:
        return [PhaseResult() for _ in phases]
    stepper = StackStepper(
        [p.module for p in phases],
        [p.data for p in phases],
        first.config,
        method=method,
        trained=trained,
        generators=[p.generator for p in phases],
        noise_generators=[p.noise_generator for p in phases],
        name=first.name,
    )
    members = [Member(PhaseResult(), p.on_epoch_end) for p in phases]
    return fit_loop(stepper, first.config, members, phase=first.name)


class StackStepper:
    """The members' parameters and buffers stacked on a leading axis, and their Adam.

    Args:
        modules: the R modules, of one architecture; they receive the trained values at the
            end of every epoch (``to_modules``).
        data: each member's data tensors (equal shapes; shared when equal).
        config: the phase's settings (Adam's, clipping).
        method: the name of the module method minimised (``"loss"``, ...).
        trained: the names of the parameters trained.
        generators: each member's CPU generator of the batch order.
        noise_generators: each member's generator of its loss's noise.
        name: the phase's name (for errors).
    """

    def __init__(
        self,
        modules: Sequence[nn.Module],
        data: Sequence[Sequence[torch.Tensor]],
        config: TrainConfig,
        *,
        method: str,
        trained: list[str],
        generators: Sequence[torch.Generator],
        noise_generators: Sequence[torch.Generator],
        name: str = "train",
    ) -> None:
        self.modules = list(modules)
        self.member_data = list(data)
        self.ids = list(range(len(self.modules)))
        self.generators, self.noise_generators = list(generators), list(noise_generators)
        self.config, self.method, self.trained, self.name = config, method, trained, name
        shared = all(
            all(a is b or torch.equal(a, b) for a, b in zip(d, data[0], strict=True))
            for d in data[1:]
        )
        self.data = data[0] if shared else None
        self.n_samples = int(data[0][0].shape[0])
        self.device = data[0][0].device
        self.max_norm = config.grad_clip if config.grad_clip is not None else math.inf
        # Linear weights are stored transposed, (R, in, out): the batched matmul then reads
        # them as they are and their gradients come out contiguous (stored (out, in), every
        # backward step would copy a transposed gradient). Adam is elementwise, so the
        # layout does not change the arithmetic.
        self.transposed = {
            f"{prefix}.weight" if prefix else "weight"
            for prefix, sub in self.modules[0].named_modules()
            if isinstance(sub, nn.Linear)
        }
        with torch.no_grad():
            self.params = {
                n: torch.stack([self._layout(n, dict(m.named_parameters())[n]) for m in modules])
                for n, _ in self.modules[0].named_parameters()
            }
            self.buffers = {
                n: torch.stack([dict(m.named_buffers())[n] for m in modules])
                for n, _ in self.modules[0].named_buffers()
            }
        for n in trained:
            self.params[n].requires_grad_(True)
        self.optimizer = self._adam()
        self.template = _Method(copy.deepcopy(self.modules[0]), method)
        self._dummy = torch.Generator(device=self.device)
        self._recorded: dict[int, list[tuple[str, tuple[int, ...], torch.dtype]]] = {}
        # buffers equal in every member (e.g. MFCVAE's fade-in weights, set by the epoch) go
        # in unbatched, so a loss may branch on them
        self._loss = vmap(self._member_loss, in_dims=(0, 0, None, 0, 0), randomness="error")
        self.orders: list[torch.Tensor] = []

    @property
    def size(self) -> int:
        return len(self.modules)

    def _layout(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """One member's parameter in the stored layout (and back: the transpose is its inverse)."""
        return value.T if name in self.transposed else value

    def _adam(self) -> torch.optim.Adam:
        return adam([self.params[n] for n in self.trained], self.config)

    # -- the stepper protocol -------------------------------------------------------------
    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def snapshot(self) -> dict[str, Any]:
        """The stacked values and Adam state now (copies), and which member sits where."""
        with torch.no_grad():
            return {
                "ids": list(self.ids),
                "params": {n: v.detach().clone() for n, v in self.params.items()},
                "buffers": {n: v.clone() for n, v in self.buffers.items()},
                "adam": {
                    n: {
                        k: v.clone() if torch.is_tensor(v) else v
                        for k, v in self.optimizer.state.get(self.params[n], {}).items()
                    }
                    for n in self.trained
                },
            }

    def start_epoch(self) -> None:
        self.template.train()
        self.orders = [torch.randperm(self.n_samples, generator=g) for g in self.generators]

    def step(self, start: int, stop: int) -> Step:
        index = torch.stack([o[start:stop] for o in self.orders]).to(self.device)
        batch = self._batch(index)
        noise = tuple(self._draw_noise(self._noise_calls(int(index.shape[1]))))
        params = {
            "module." + n: v.transpose(1, 2) if n in self.transposed else v
            for n, v in self.params.items()
        }
        buffers, shared = {}, {}
        for n, v in self.buffers.items():
            if bool((v == v[:1]).all()):
                shared["module." + n] = v[0]
            else:
                buffers["module." + n] = v
        terms = self._batched_loss(params, buffers, shared, batch, noise)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].sum().backward()
        norms = self._grad_norms()
        names = list(terms)
        values = (
            torch.stack([terms[k].detach().float() for k in names] + [norms.float()]).cpu().numpy()
        )
        finite = np.all(np.isfinite(values), axis=0)
        if not bool(finite.all()):
            # the member leaves the batch after this step; zero gradients keep its
            # (discarded) slice of the update finite
            self._zero_grads(np.flatnonzero(~finite).tolist())
        if math.isfinite(self.max_norm):
            # torch.nn.utils.clip_grad_norm_, on each member's own norm
            norms = torch.nan_to_num(norms.detach(), nan=0.0, posinf=0.0)
            self._scale_grads(torch.clamp(self.max_norm / (norms + 1e-6), max=1.0))
        if bool(finite.any()):
            self.optimizer.step()
        per_member = values[: len(names)].T.tolist()
        return Step(names, per_member, finite.tolist())

    def detach(self, positions: list[int], snapshot: dict[str, Any]) -> list[ModuleStepper]:
        """The members at ``positions``, rolled back to ``snapshot``, each on its own."""
        singles = []
        for j in positions:
            s = snapshot["ids"].index(self.ids[j])
            module = self.modules[j]
            with torch.no_grad():
                for n, p in module.named_parameters():
                    p.copy_(self._layout(n, snapshot["params"][n][s]))
                for n, b in module.named_buffers():
                    b.copy_(snapshot["buffers"][n][s])
            named = dict(module.named_parameters())
            single = ModuleStepper(
                module,
                self.member_data[j],
                self.config,
                generator=self.generators[j],
                noise_generator=self.noise_generators[j],
                loss_fn=getattr(module, self.method),
                parameters=[named[n] for n in self.trained],
            )
            for n in self.trained:
                state = {k: self._unstack(n, v, s) for k, v in snapshot["adam"][n].items()}
                if state:
                    single.optimizer.state[named[n]] = state
            singles.append(single)
        self.drop(positions)
        return singles

    def drop(self, positions: list[int]) -> None:
        """Keep only the other members (parameters, buffers, Adam state, orders)."""
        keep = [j for j in range(self.size) if j not in positions]
        index = torch.as_tensor(keep, dtype=torch.long)
        old_state = {n: self.optimizer.state.get(self.params[n], {}) for n in self.trained}
        lr = self.optimizer.param_groups[0]["lr"]  # a member may leave in mid-epoch
        with torch.no_grad():
            for n, v in self.params.items():
                kept = v.detach().index_select(0, index.to(v.device)).clone()
                self.params[n] = kept.requires_grad_(n in self.trained)
            for n, v in self.buffers.items():
                self.buffers[n] = v.index_select(0, index.to(v.device)).clone()
        self.optimizer = self._adam()
        self.set_lr(lr)
        for n in self.trained:
            state = {}
            for key, value in old_state[n].items():
                if torch.is_tensor(value) and value.dim() > 0:
                    value = value.index_select(0, index.to(value.device))
                state[key] = value.clone() if torch.is_tensor(value) else value
            if state:
                self.optimizer.state[self.params[n]] = state
        for name in ("modules", "member_data", "ids", "generators", "noise_generators"):
            setattr(self, name, [getattr(self, name)[j] for j in keep])
        if self.orders:
            self.orders = [self.orders[j] for j in keep]

    def to_modules(self) -> None:
        """Copy member i's values into ``modules[i]``."""
        with torch.no_grad():
            for i, module in enumerate(self.modules):
                for n, p in module.named_parameters():
                    p.copy_(self._layout(n, self.params[n][i]))
                for n, b in module.named_buffers():
                    b.copy_(self.buffers[n][i])

    def from_modules(self) -> None:
        """Copy back what the epoch hooks may have changed in the modules."""
        with torch.no_grad():
            for i, module in enumerate(self.modules):
                for n, p in module.named_parameters():
                    self.params[n][i].copy_(self._layout(n, p))
                for n, b in module.named_buffers():
                    self.buffers[n][i].copy_(b)

    # -- the batched loss -----------------------------------------------------------------
    def _unstack(self, name: str, value: Any, position: int) -> Any:
        """Member ``position``'s copy of a stacked Adam state entry, in the module's layout."""
        if not torch.is_tensor(value):
            return value
        if value.dim() == 0:  # shared by the members (Adam's step count)
            return value.clone()
        return self._layout(name, value[position]).clone(memory_format=torch.contiguous_format)

    def _batch(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each member's mini-batch, stacked: tensors of shape (R, batch, ...)."""
        size = int(index.shape[1])
        if self.data is not None:
            return tuple(
                t.index_select(0, index.reshape(-1)).view(self.size, size, *t.shape[1:])
                for t in self.data
            )
        return tuple(
            torch.stack([d[k].index_select(0, index[j]) for j, d in enumerate(self.member_data)])
            for k in range(len(self.member_data[0]))
        )

    def _member_loss(
        self, params: dict, buffers: dict, shared: dict, batch: tuple, noise: tuple
    ) -> dict:
        with _NoiseFeed(noise):
            return functional_call(
                self.template, (params, buffers | shared), batch, {"generator": self._dummy}
            )

    def _batched_loss(
        self, params: dict, buffers: dict, shared: dict, batch: tuple, noise: tuple
    ) -> dict:
        try:
            return self._loss(params, buffers, shared, batch, noise)
        except RuntimeError as err:
            if "randomness" in str(err):
                raise VectorizationError(
                    f"the loss of phase {self.name!r} draws randomness outside its "
                    f"generator ({err})"
                ) from None
            if "vmap" in str(err):
                raise VectorizationError(
                    f"the loss of phase {self.name!r} cannot be batched ({err})"
                ) from None
            raise

    def _noise_calls(self, batch_size: int) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        """The random draws the loss makes on a batch of this size (recorded once)."""
        if batch_size not in self._recorded:
            recorder = _NoiseRecorder()
            batch = [t[:batch_size] for t in self.member_data[0]]
            with torch.no_grad(), recorder:
                getattr(self.template.module, self.method)(*batch, generator=self._dummy)
            if recorder.unsupported:
                raise VectorizationError(
                    f"the loss of phase {self.name!r} draws randomness with "
                    f"{sorted(set(recorder.unsupported))}; only torch.randn/torch.rand with "
                    "the given generator can be batched"
                )
            self._recorded[batch_size] = recorder.calls
        return self._recorded[batch_size]

    def _draw_noise(self, calls: list[tuple[str, tuple[int, ...], torch.dtype]]) -> list:
        """Each recorded draw for every member from its own generator: (R, *shape)."""
        out = []
        for kind, shape, dtype in calls:
            draw = torch.randn if kind == "randn" else torch.rand
            out.append(
                torch.stack(
                    [
                        draw(shape, generator=g, dtype=dtype, device=self.device)
                        for g in self.noise_generators
                    ]
                )
            )
        return out

    def _grad_norms(self) -> torch.Tensor:
        """The global gradient norm of each member, shape (R,)."""
        grads = [self.params[n].grad for n in self.trained]
        grads = [g for g in grads if g is not None]
        if not grads:
            return torch.zeros(self.size, device=self.device)
        per_tensor = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])
        return torch.linalg.vector_norm(per_tensor, dim=0)

    def _zero_grads(self, positions: list[int]) -> None:
        for n in self.trained:
            grad = self.params[n].grad
            if grad is not None:
                grad[positions] = 0.0

    def _scale_grads(self, factors: torch.Tensor) -> None:
        for n in self.trained:
            grad = self.params[n].grad
            if grad is not None:
                grad.mul_(factors.view(-1, *([1] * (grad.dim() - 1))).to(grad.dtype))


# -- noise: recorded once, then served per member -------------------------------------------
class _NoiseRecorder(TorchFunctionMode):
    """Records the random draws a loss makes through its generator (kind, shape, dtype)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[int, ...], torch.dtype]] = []
        self.unsupported: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if kwargs.get("generator") is not None:
            if func in _FED:
                self.calls.append((_FED[func], tuple(out.shape), out.dtype))
            else:
                self.unsupported.append(getattr(func, "__name__", repr(func)))
        return out


class _NoiseFeed(TorchFunctionMode):
    """Serves a loss's generator draws from given tensors (one per recorded call, in order)."""

    def __init__(self, noise: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.noise, self.position = noise, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func in _FED and kwargs.get("generator") is not None:
            if self.position >= len(self.noise):
                raise VectorizationError(
                    "the loss drew more random tensors than when it was recorded"
                )
            out = self.noise[self.position]
            self.position += 1
            shape = args[0] if len(args) == 1 else args
            if tuple(out.shape) != tuple(torch.Size(shape)):
                raise VectorizationError(
                    f"the loss drew noise of shape {tuple(shape)} where {tuple(out.shape)} was "
                    "recorded (its random draws depend on the data)"
                )
            return out
        return func(*args, **kwargs)


class _Method(nn.Module):
    """``forward`` calls one method of the wrapped module (for ``functional_call``)."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.method)(*args, **kwargs)


# -- which phases can be stacked ------------------------------------------------------------
def _method_name(phase: Phase) -> str:
    """The name of the module method a phase minimises (``loss`` by default)."""
    fn = phase.loss_fn
    if fn is None:
        return "loss"
    if getattr(fn, "__self__", None) is phase.module and hasattr(fn, "__func__"):
        return fn.__func__.__name__
    raise VectorizationError(
        f"phase {phase.name!r} minimises {fn!r}, not a method of the model's module"
    )


def _trained_names(phase: Phase) -> list[str]:
    named = list(phase.module.named_parameters())
    if phase.parameters is None:
        return [n for n, _ in named]
    chosen = {id(p) for p in phase.parameters}
    names = [n for n, p in named if id(p) in chosen]
    if len(names) != len(chosen):
        raise VectorizationError(
            f"phase {phase.name!r} trains parameters that are not the module's own"
        )
    return names


def _check_same_phase(phases: Sequence[Phase]) -> tuple[str, list[str]]:
    first = phases[0]
    for phase in phases:
        check_data(phase.data)
        if phase.resume_state is not None or phase.checkpoint is not None:
            raise VectorizationError(f"phase {phase.name!r} is checkpointed; stacks are not")
    method, names = _method_name(first), _trained_names(first)
    for phase in phases[1:]:
        if phase.name != first.name or phase.config != first.config:
            raise VectorizationError(
                f"the seeds reached different phases ({first.name!r} {first.config} vs "
                f"{phase.name!r} {phase.config})"
            )
        if _method_name(phase) != method or _trained_names(phase) != names:
            raise VectorizationError(f"the seeds train phase {first.name!r} differently")
        if len(phase.data) != len(first.data) or any(
            a.shape != b.shape for a, b in zip(phase.data, first.data, strict=True)
        ):
            raise VectorizationError("the seeds were given different data")
    return method, names

# Vectorised seeds — owned by the vectorised-seeds engineer. The experiments code calls
# `fit_seeds`; do not re-implement here.
"""Train several seeds of one estimator as a single batched model.

A stability study fits the same model under R seeds. ``fit_seeds`` trains the R copies
together: their parameters are stacked along a new leading axis, every training step
evaluates the R losses at once with ``torch.func.vmap`` over ``torch.func.functional_call``
(so each linear layer becomes one batched matmul), and one Adam optimiser updates the
stacked parameters. Adam is elementwise, so this is R independent Adam runs.

Each seed is otherwise exactly its own fit: ``fit_seeds`` runs the estimator's real ``fit``
once per seed (validation, scaling, the per-seed module initialisation, the deterministic
steps such as VaDE's ``GaussianMixture`` initialisation, the fitted state) and only
intercepts its training phases (``FitContext.run_phase``), which all seeds reach in the
same order; those are then trained jointly with

- each seed's own mini-batch order (its ``torch.Generator``, drawn as the engine does),
- each seed's own reparameterisation noise: every ``torch.randn`` / ``torch.rand`` call
  that the loss makes with a ``generator`` is served from noise drawn beforehand from that
  seed's generator, with the same shapes in the same order as a separate fit,
- the engine's learning-rate schedule, per-seed non-finite checks and early stopping.

So with the same seed a vectorised fit and a separate fit differ only by floating-point
rounding (batched vs. unbatched matmul kernels), which training may amplify over many
steps; the seeds' outcomes have the same distribution.

A seed whose loss or gradient becomes non-finite is taken out of the batch at once (the
others are not affected: nothing is shared between seeds) and refitted on its own
afterwards, where the engine's NaN guard (roll back, halve the learning rate) applies;
the report records it. Vectorised runs are not checkpointed: a run interrupted mid-way
restarts from the beginning (``idvae.stability`` still saves every finished run).
"""

from __future__ import annotations

import copy
import math
import queue
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from torch import nn
from torch.func import functional_call, vmap
from torch.overrides import TorchFunctionMode

from idvae.models._base import REGISTRY, FitContext, LatentEstimator
from idvae.training import PhaseResult, TrainConfig, _adam, _lr_at, _Progress

__all__ = [
    "SeedReport",
    "VectorizationError",
    "VectorizationWarning",
    "fit_seeds",
    "supports_vectorization",
]


class VectorizationError(RuntimeError):
    """The seeds cannot be trained as one batched model (the fit falls back to separate runs)."""


class VectorizationWarning(UserWarning):
    """A seed (or all of them) was fitted separately instead of in the batched model."""


@dataclass
class SeedReport:
    """How one seed of ``fit_seeds`` was fitted.

    Attributes:
        seed: the ``random_state`` of the fit.
        vectorized: True when every training phase ran in the batched model; False when the
            seed was refitted separately (see ``note``).
        note: why it was refitted (non-finite loss, unsupported model, ...), else None.
    """

    seed: int
    vectorized: bool
    note: str | None = None


# random functions that draw from a generator handed to them; served from pre-drawn noise
_FED = {torch.randn: "randn", torch.rand: "rand"}


def supports_vectorization(estimator: Any, *, return_reason: bool = False) -> Any:
    """Whether ``fit_seeds`` can train seeds of ``estimator`` as one batched model.

    It applies to the idvae estimators (``VaDE``, ``VAE``, ``MFCVAE``, ``IVAE`` and any other
    registered ``LatentEstimator``, every option included) and to subclasses of
    ``LatentEstimator`` that keep the base ``fit``. A model whose loss draws randomness
    other than ``torch.randn``/``torch.rand`` with the given generator is detected when
    training starts, and ``fit_seeds`` then falls back to separate fits.

    Args:
        estimator: an (unfitted) estimator.
        return_reason: also return a sentence saying why not (None when it applies).

    Returns:
        A bool, or ``(bool, reason)`` with ``return_reason``.
    """
    reason = None
    if not isinstance(estimator, LatentEstimator):
        reason = (
            f"{type(estimator).__name__} is not an idvae LatentEstimator (only those share "
            "the training engine that fit_seeds batches)"
        )
    elif type(estimator) not in REGISTRY.values() and type(estimator).fit is not (
        LatentEstimator.fit
    ):
        reason = (
            f"{type(estimator).__name__} overrides fit, so fit_seeds cannot reproduce its "
            "fit; register it or keep the base fit"
        )
    ok = reason is None
    return (ok, reason) if return_reason else ok


def fit_seeds(
    estimator: LatentEstimator,
    X: Any,
    seeds: Sequence[int],
    *aux: Any,
    vectorize: bool = True,
    max_batch: int | None = None,
    return_report: bool = False,
) -> list[LatentEstimator] | tuple[list[LatentEstimator], list[SeedReport]]:
    """Fit one copy of ``estimator`` per seed, training the copies as one batched model.

    The i-th result is a fitted estimator of the same class and state as
    ``clone(estimator).set_params(random_state=seeds[i]).fit(X, *aux)`` (same per-seed
    initialisation, batch order and noise; equal up to floating-point rounding), usable
    with ``transform``, ``predict``, ``save`` and ``idvae.load``.

    Args:
        estimator: the template, an unfitted ``LatentEstimator``; its parameters (except
            ``random_state``) are used for every seed; it is not modified.
        X: array of shape (n_samples, n_features).
        seeds: the non-negative int seeds, one fit each (e.g. ``range(10)``).
        *aux: the auxiliary arrays of ``fit`` (IVAE: ``u`` of shape (n_samples, p)).
        vectorize: False fits the seeds one after another (the reference behaviour).
        max_batch: train at most this many seeds at once (memory bound; None: all).
        return_report: also return one ``SeedReport`` per seed.

    Returns:
        The fitted estimators in the order of ``seeds`` (and the reports).

    Raises:
        TypeError, ValueError: bad arguments, or the data are refused by ``fit``.
        TrainingError: a seed's separate refit after a non-finite loss also failed.

    Example:
        >>> import idvae
        >>> from idvae.vectorize import fit_seeds
        >>> sim = idvae.simulate.sample_model(1000, latent_dim=2, obs_dim=4, n_components=3,
        ...                                   random_state=0)
        >>> template = idvae.VaDE(pretrain_epochs=2, epochs=5, device="cpu")
        >>> models = fit_seeds(template, sim.x, range(4))
        >>> [m.transform(sim.x).shape for m in models][0]
        (1000, 2)
    """
    seeds = _check_seeds(seeds)
    if max_batch is not None and (
        isinstance(max_batch, bool) or not isinstance(max_batch, Integral) or max_batch < 1
    ):
        raise ValueError(f"Expected max_batch to be a positive int or None but got {max_batch!r}")
    if not isinstance(estimator, LatentEstimator):
        raise TypeError(
            f"Expected an idvae LatentEstimator but got {type(estimator).__name__}; fit "
            "other estimators one seed at a time"
        )
    estimators = [clone(estimator).set_params(random_state=s) for s in seeds]
    reports = [SeedReport(s, False) for s in seeds]
    ok, reason = supports_vectorization(estimator, return_reason=True)
    if not vectorize:
        for est, report in zip(estimators, reports, strict=True):
            est._fit(X, aux)
            report.note = "vectorize=False"
    elif not ok:
        warnings.warn(f"fitting the seeds separately: {reason}", VectorizationWarning, stacklevel=2)
        for est, report in zip(estimators, reports, strict=True):
            est._fit(X, aux)
            report.note = reason
    else:
        size = len(seeds) if max_batch is None else int(max_batch)
        for start in range(0, len(seeds), size):
            part = slice(start, start + size)
            _fit_batch(estimators[part], reports[part], X, aux)
    return (estimators, reports) if return_report else estimators


def _check_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, str | bytes) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"Expected seeds to be a sequence of ints but got {seeds!r}")
    values = list(seeds)
    if not values:
        raise ValueError("Expected at least one seed but got none")
    if any(isinstance(s, bool) or not isinstance(s, Integral) for s in values):
        raise TypeError(f"Expected seeds to be ints but got {values!r}")
    if any(s < 0 for s in values):
        raise ValueError(f"Expected non-negative seeds but got {values!r}")
    return [int(s) for s in values]


# -- one seed's fit, run in a thread and paused at each training phase ---------------------
class _Aborted(BaseException):
    """Raised inside a seed's fit to stop it (it is refitted separately).

    A BaseException, so that a model's own ``except Exception`` cannot swallow it.
    """


@dataclass
class _PhaseRequest:
    """What a seed's ``run_phase`` asks the coordinator to train."""

    name: str
    config: TrainConfig
    loss_fn: Any
    parameters: Any
    ctx: FitContext


class _SeedFit:
    """Runs ``estimator._fit`` in a thread; its training phases become requests.

    Only one thread runs at a time: the coordinator resumes a seed and waits for its next
    message (a phase request, "done", or an error), so the fits stay deterministic.
    """

    def __init__(self, estimator: LatentEstimator, X: Any, aux: tuple[Any, ...]) -> None:
        self.estimator = estimator
        self.X, self.aux = X, aux
        self._inbox: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._started = False
        self.finished = False

    # coordinator side
    def resume(self, reply: Any = None) -> tuple[str, Any]:
        """Let the fit run until its next phase request; return ("phase" | "done" | "error", _)."""
        if not self._started:
            self._started = True
            self._thread.start()
        else:
            self._inbox.put(reply)
        message = self._outbox.get()
        if message[0] != "phase":
            self._thread.join()
            self.finished = True
        return message

    def abort(self) -> None:
        if self._started and not self.finished:
            self.resume(_Aborted)

    # seed side
    def _main(self) -> None:
        est = self.estimator
        # an instance attribute shadows the class's method for this one fit
        est._fit_phases = self._fit_phases  # type: ignore[method-assign]
        try:
            est._fit(self.X, self.aux)
            self._outbox.put(("done", None))
        except _Aborted:
            self._outbox.put(("aborted", None))
        except BaseException as err:  # handed to the coordinator, which re-raises
            self._outbox.put(("error", err))
        finally:
            est.__dict__.pop("_fit_phases", None)

    def _fit_phases(self, ctx: FitContext) -> None:
        ctx.run_phase = lambda name, config, **kw: self._run_phase(ctx, name, config, **kw)
        type(self.estimator)._fit_phases(self.estimator, ctx)

    def _run_phase(
        self,
        ctx: FitContext,
        name: str,
        config: TrainConfig,
        *,
        loss_fn: Any = None,
        parameters: Any = None,
    ) -> None:
        ctx._counter += 1  # keep the step numbering of FitContext.run_phase
        self._outbox.put(("phase", _PhaseRequest(name, config, loss_fn, parameters, ctx)))
        reply = self._inbox.get()
        if reply is _Aborted:
            raise _Aborted
        ctx.history.extend(reply.history)
        ctx.last_result = reply


def _fit_batch(
    estimators: list[LatentEstimator],
    reports: list[SeedReport],
    X: Any,
    aux: tuple[Any, ...],
) -> None:
    """Fit ``estimators`` (one per seed) with their phases batched; fill ``reports``."""
    fits = [_SeedFit(est, X, aux) for est in estimators]
    messages = [fit.resume() for fit in fits]
    failed: dict[int, str] = {}
    try:
        while True:
            for message in messages:
                if message[0] == "error":
                    raise message[1]
            waiting = [i for i, m in enumerate(messages) if m[0] == "phase"]
            if not waiting:
                break
            requests = [messages[i][1] for i in waiting]
            results, notes = _train_phase(requests)
            for i, result, note in zip(waiting, results, notes, strict=True):
                if result is None:
                    failed[i] = note
                    messages[i] = fits[i].resume(_Aborted)
                else:
                    messages[i] = fits[i].resume(result)
    except VectorizationError as err:
        for fit in fits:
            fit.abort()
        warnings.warn(f"fitting the seeds separately: {err}", VectorizationWarning, stacklevel=3)
        failed = dict.fromkeys(range(len(fits)), f"not vectorised: {err}")
    except BaseException:
        for fit in fits:
            fit.abort()
        raise
    for i, report in enumerate(reports):
        report.vectorized = i not in failed
        report.note = failed.get(i)
    for i, note in failed.items():
        if not note.startswith("not vectorised"):
            warnings.warn(
                f"seed {reports[i].seed}: {note}; refitting it on its own",
                VectorizationWarning,
                stacklevel=3,
            )
        estimators[i]._fit(X, aux)


# -- the batched phase ----------------------------------------------------------------------
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


def _method_name(request: _PhaseRequest) -> str:
    """The name of the module method a phase minimises (``loss`` by default)."""
    fn = request.loss_fn
    if fn is None:
        return "loss"
    if getattr(fn, "__self__", None) is request.ctx.module and hasattr(fn, "__func__"):
        return fn.__func__.__name__
    raise VectorizationError(
        f"phase {request.name!r} minimises {fn!r}, not a method of the model's module"
    )


def _trained_names(request: _PhaseRequest) -> list[str]:
    named = list(request.ctx.module.named_parameters())
    if request.parameters is None:
        return [n for n, _ in named]
    chosen = {id(p) for p in request.parameters}
    names = [n for n, p in named if id(p) in chosen]
    if len(names) != len(chosen):
        raise VectorizationError(
            f"phase {request.name!r} trains parameters that are not the module's own"
        )
    return names


def _check_same_phase(requests: list[_PhaseRequest]) -> tuple[str, list[str]]:
    first = requests[0]
    method, names = _method_name(first), _trained_names(first)
    for req in requests[1:]:
        if req.name != first.name or req.config != first.config:
            raise VectorizationError(
                f"the seeds reached different phases ({first.name!r} {first.config} vs "
                f"{req.name!r} {req.config})"
            )
        if _method_name(req) != method or _trained_names(req) != names:
            raise VectorizationError(f"the seeds train phase {first.name!r} differently")
        if len(req.ctx.data) != len(first.ctx.data) or any(
            a.shape != b.shape for a, b in zip(req.ctx.data, first.ctx.data, strict=True)
        ):
            raise VectorizationError("the seeds were given different data")
    return method, names


class _Stack:
    """The seeds' parameters and buffers stacked on a leading axis, and their Adam."""

    def __init__(self, modules: list[nn.Module], trained: list[str], config: TrainConfig) -> None:
        self.trained = trained
        self.config = config
        # Linear weights are stored transposed, (n_seeds, in, out): the batched matmul then
        # reads them as they are and their gradients come out contiguous (stored (out, in),
        # every backward step would copy a transposed gradient). Adam is elementwise, so the
        # layout does not change the arithmetic.
        self.transposed = {
            f"{prefix}.weight" if prefix else "weight"
            for prefix, sub in modules[0].named_modules()
            if isinstance(sub, nn.Linear)
        }
        with torch.no_grad():
            self.params = {
                name: torch.stack(
                    [self._layout(name, dict(m.named_parameters())[name]) for m in modules]
                )
                for name, _ in modules[0].named_parameters()
            }
            self.buffers = {
                name: torch.stack([dict(m.named_buffers())[name] for m in modules])
                for name, _ in modules[0].named_buffers()
            }
        for name in trained:
            self.params[name].requires_grad_(True)
        self.optimizer = self._adam()

    def _layout(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """One seed's parameter in the stored layout (and back: the transpose is its inverse)."""
        return value.T if name in self.transposed else value

    def call_params(self, prefix: str) -> dict[str, torch.Tensor]:
        """The stacked parameters in the module's layout, named for ``functional_call``."""
        return {
            prefix + name: value.transpose(1, 2) if name in self.transposed else value
            for name, value in self.params.items()
        }

    def call_buffers(self, prefix: str) -> tuple[dict, dict]:
        """The buffers for ``functional_call``: (stacked ones, ones equal in every seed)."""
        stacked, shared = {}, {}
        for name, value in self.buffers.items():
            if bool((value == value[:1]).all()):
                shared[prefix + name] = value[0]
            else:
                stacked[prefix + name] = value
        return stacked, shared

    def _adam(self) -> torch.optim.Adam:
        # the engine's own Adam (same implementation as a separate fit; elementwise)
        return _adam([self.params[n] for n in self.trained], self.config)

    def keep(self, positions: list[int]) -> None:
        """Keep only the seeds at ``positions`` (parameters, buffers and Adam state)."""
        index = torch.as_tensor(positions, dtype=torch.long)
        old_state = {n: self.optimizer.state.get(self.params[n], {}) for n in self.trained}
        with torch.no_grad():
            for name, value in self.params.items():
                kept = value.detach().index_select(0, index.to(value.device)).clone()
                self.params[name] = kept.requires_grad_(name in self.trained)
            for name, value in self.buffers.items():
                self.buffers[name] = value.index_select(0, index.to(value.device)).clone()
        self.optimizer = self._adam()
        for name in self.trained:
            state = {}
            for key, value in old_state[name].items():
                if torch.is_tensor(value) and value.dim() > 0:
                    value = value.index_select(0, index.to(value.device))
                state[key] = value.clone() if torch.is_tensor(value) else value
            if state:
                self.optimizer.state[self.params[name]] = state

    def grad_norms(self) -> torch.Tensor:
        """The global gradient norm of each seed, shape (n_seeds,)."""
        grads = [self.params[n].grad for n in self.trained]
        grads = [g for g in grads if g is not None]
        if not grads:
            first = next(iter(self.params.values()))
            return torch.zeros(first.shape[0], device=first.device)
        per_tensor = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])
        return torch.linalg.vector_norm(per_tensor, dim=0)

    def zero_grads(self, positions: list[int]) -> None:
        """Set the gradients of the seeds at ``positions`` to zero."""
        for name in self.trained:
            grad = self.params[name].grad
            if grad is not None:
                grad[positions] = 0.0

    def scale_grads(self, factors: torch.Tensor) -> None:
        """Multiply seed i's gradients by ``factors[i]`` (gradient clipping)."""
        for name in self.trained:
            grad = self.params[name].grad
            if grad is not None:
                grad.mul_(factors.view(-1, *([1] * (grad.dim() - 1))).to(grad.dtype))

    def write_to(self, modules: list[nn.Module]) -> None:
        """Copy seed i's values into ``modules[i]``."""
        with torch.no_grad():
            for i, module in enumerate(modules):
                for name, p in module.named_parameters():
                    p.copy_(self._layout(name, self.params[name][i]))
                for name, b in module.named_buffers():
                    b.copy_(self.buffers[name][i])

    def read_from(self, modules: list[nn.Module]) -> None:
        """Copy back what per-seed callbacks may have changed in ``modules``."""
        with torch.no_grad():
            for i, module in enumerate(modules):
                for name, p in module.named_parameters():
                    self.params[name][i].copy_(self._layout(name, p))
                for name, b in module.named_buffers():
                    self.buffers[name][i].copy_(b)


def _draw_noise(
    calls: list[tuple[str, tuple[int, ...], torch.dtype]],
    generators: list[torch.Generator],
    device: torch.device,
) -> list[torch.Tensor]:
    """Each recorded draw for every seed from its own generator, stacked: (n_seeds, *shape)."""
    out = []
    for kind, shape, dtype in calls:
        draw = torch.randn if kind == "randn" else torch.rand
        out.append(
            torch.stack([draw(shape, generator=g, dtype=dtype, device=device) for g in generators])
        )
    return out


def _train_phase(
    requests: list[_PhaseRequest],
) -> tuple[list[PhaseResult | None], list[str | None]]:
    """Train one phase of every seed in the batched model.

    Returns one ``PhaseResult`` per request (None for a seed taken out after a non-finite
    loss or gradient, with a note saying when).
    """
    method, trained = _check_same_phase(requests)
    first = requests[0]
    config, phase = first.config, first.name
    data = first.ctx.data
    device = data[0].device
    n_samples = int(data[0].shape[0])
    modules = [req.ctx.module for req in requests]
    results: list[PhaseResult | None] = [PhaseResult() for _ in requests]
    notes: list[str | None] = [None] * len(requests)
    if config.epochs == 0:
        return results, notes

    template = _Method(copy.deepcopy(first.ctx.module), method)
    stack = _Stack(modules, trained, config)
    callbacks = [req.ctx.estimator._on_epoch_end(req.ctx.module) for req in requests]
    active = list(range(len(requests)))  # request index of each stacked seed
    best = [math.inf] * len(requests)
    bad_epochs = [0] * len(requests)
    recorded: dict[int, list] = {}
    dummy = torch.Generator(device=device)

    def record_noise(batch_size: int) -> list:
        if batch_size not in recorded:
            recorder = _NoiseRecorder()
            batch = [t[:batch_size] for t in data]
            with torch.no_grad(), recorder:
                getattr(template.module, method)(*batch, generator=dummy)
            if recorder.unsupported:
                raise VectorizationError(
                    f"the loss of phase {phase!r} draws randomness with "
                    f"{sorted(set(recorder.unsupported))}; only torch.randn/torch.rand with "
                    "the given generator can be batched"
                )
            recorded[batch_size] = recorder.calls
        return recorded[batch_size]

    def per_seed(params: dict, buffers: dict, shared: dict, batch: tuple, noise: tuple) -> dict:
        with _NoiseFeed(noise):
            return functional_call(
                template, (params, buffers | shared), batch, {"generator": dummy}
            )

    # buffers equal in every seed (e.g. MFCVAE's fade-in weights, set by the epoch) go in
    # unbatched, so a loss may branch on them
    batched_loss = vmap(per_seed, in_dims=(0, 0, None, 0, 0), randomness="error")
    batch_size = min(config.batch_size, n_samples)
    steps = math.ceil(n_samples / batch_size)
    max_norm = config.grad_clip if config.grad_clip is not None else math.inf
    progress = _Progress(config.verbose, f"{phase} x{len(requests)}", config.epochs, steps)
    template.train()
    try:
        for epoch in range(config.epochs):
            lr = _lr_at(config, epoch, 1.0)
            for group in stack.optimizer.param_groups:
                group["lr"] = lr
            progress.epoch_start(epoch + 1)
            started = time.perf_counter()
            orders = [
                torch.randperm(n_samples, generator=requests[i].ctx.generator) for i in active
            ]
            sums: list[dict[str, float]] = [{} for _ in requests]
            for start in range(0, n_samples, batch_size):
                index = torch.stack([o[start : start + batch_size] for o in orders]).to(device)
                size = int(index.shape[1])
                batch = tuple(
                    t.index_select(0, index.reshape(-1)).view(len(active), size, *t.shape[1:])
                    for t in data
                )
                calls = record_noise(size)
                noise = tuple(
                    _draw_noise(calls, [requests[i].ctx.noise_generator for i in active], device)
                )
                params = stack.call_params("module.")
                buffers, shared = stack.call_buffers("module.")
                try:
                    terms = batched_loss(params, buffers, shared, batch, noise)
                except RuntimeError as err:
                    if "randomness" in str(err):
                        raise VectorizationError(
                            f"the loss of phase {phase!r} draws randomness outside its "
                            f"generator ({err})"
                        ) from None
                    if "vmap" in str(err):
                        raise VectorizationError(
                            f"the loss of phase {phase!r} cannot be batched ({err})"
                        ) from None
                    raise
                stack.optimizer.zero_grad(set_to_none=True)
                terms["loss"].sum().backward()
                norms = stack.grad_norms()
                names = list(terms)
                values = (
                    torch.stack([terms[k].detach().float() for k in names] + [norms.float()])
                    .cpu()
                    .numpy()
                )
                finite = np.all(np.isfinite(values), axis=0)
                if not bool(finite.all()):
                    # the seed leaves the batch after this step; zero gradients keep its
                    # (discarded) slice of the update finite
                    stack.zero_grads(np.flatnonzero(~finite).tolist())
                if math.isfinite(max_norm):
                    # torch.nn.utils.clip_grad_norm_, on each seed's own norm
                    norms = torch.nan_to_num(norms.detach(), nan=0.0, posinf=0.0)
                    stack.scale_grads(torch.clamp(max_norm / (norms + 1e-6), max=1.0))
                stack.optimizer.step()
                for j, i in enumerate(active):
                    if finite[j]:
                        for k, name in enumerate(names):
                            sums[i][name] = sums[i].get(name, 0.0) + float(values[k, j]) * size
                if not bool(finite.all()):
                    for j in np.flatnonzero(~finite):
                        i = active[int(j)]
                        results[i] = None
                        notes[i] = (
                            f"non-finite loss or gradient in phase {phase!r}, epoch {epoch + 1}"
                        )
                    keep = [j for j in range(len(active)) if finite[j]]
                    active = [active[j] for j in keep]
                    if not active:
                        return results, notes
                    stack.keep(keep)
                    orders = [orders[j] for j in keep]
                progress.advance()

            elapsed = time.perf_counter() - started
            current = [modules[i] for i in active]
            stack.write_to(current)
            stopped = []
            for i in active:
                result = results[i]
                assert result is not None
                record: dict[str, Any] = {"phase": phase, "epoch": epoch + 1}
                record.update({k: v / n_samples for k, v in sums[i].items()})
                record["lr"] = lr
                # the batched epoch's time, shared by the seeds trained in it
                record["time_s"] = elapsed
                record.update(callbacks[i](epoch + 1, record) or {})
                result.history.append(record)
                result.epochs_run = epoch + 1
                if config.early_stopping:
                    if record["loss"] < best[i] - config.min_delta:
                        best[i], bad_epochs[i] = record["loss"], 0
                    else:
                        bad_epochs[i] += 1
                    result.stopped_early = bad_epochs[i] >= config.patience
                    if result.stopped_early:
                        stopped.append(i)
            progress.epoch_end(epoch + 1, results[active[0]].history[-1])  # type: ignore[union-attr]
            stack.read_from(current)  # callbacks may set buffers (e.g. MFCVAE's fade-in)
            if stopped:
                keep = [j for j, i in enumerate(active) if i not in stopped]
                active = [active[j] for j in keep]
                if not active:
                    break
                stack.keep(keep)
    finally:
        progress.close()
    stack.write_to([modules[i] for i in active])
    return results, notes

"""Train several seeds of one estimator as a single batched model.

A stability study fits the same model under R seeds. ``fit_seeds`` trains the R copies
together with ``idvae.training.train_stacked``: the same epoch loop as a single fit, driving
a stack of the R modules (``idvae.training.StackStepper``) in which every step evaluates
the R losses at once and one Adam updates the stacked parameters.

Each seed is otherwise exactly its own fit: ``fit_seeds`` runs the estimator's real fit
once per seed (validation, scaling, the per-seed module initialisation, the deterministic
steps such as VaDE's ``GaussianMixture`` initialisation, the fitted state), each in a
thread of its own through the estimators' public seam ``LatentEstimator.fit_with``, to
which it passes a phase runner: the fit's training phases (``Phase``), which all seeds
reach in the same order, are handed to the coordinator, which trains the same phase of
every waiting seed in one stack and hands each seed its ``PhaseResult``. Only
one thread runs at a time, so the fits stay deterministic. Each seed keeps its own batch
order, noise, gradient clipping, learning-rate schedule and early stopping; with the same
seed a vectorised fit and a separate fit differ only by floating-point rounding (batched
vs. unbatched matmul kernels), which training may amplify over many steps; the seeds'
outcomes have the same distribution.

Non-finite losses follow the one policy of the training loop: the seed is rolled back to
the start of the epoch and retries it on its own at half the learning rate (the others are
not affected: nothing is shared between seeds), and rejoins the stack at its next phase. A
seed that still fails after ``max_retries`` is refitted on its own from the start (the
report records it; if that fails too, its ``TrainingError`` is raised). Vectorised runs
are not checkpointed: a run interrupted mid-way restarts from the beginning
(``idvae.stability`` still saves every finished run).
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from sklearn.base import clone

from idvae.models import REGISTRY, LatentEstimator
from idvae.training import Phase, PhaseResult, TrainingError, VectorizationError, train_stacked

__all__ = [
    "SeedReport",
    "VectorizationError",
    "VectorizationWarning",
    "fit_seeds",
    "supports_vectorization",
]


class VectorizationWarning(UserWarning):
    """A seed (or all of them) was fitted separately instead of in the batched model."""


@dataclass
class SeedReport:
    """How one seed of ``fit_seeds`` was fitted.

    Attributes:
        seed: the ``random_state`` of the fit.
        vectorized: True when the seed's phases were trained in the batched model (a seed
            that retried an epoch on its own after a non-finite step included); False when
            the seed was refitted separately (see ``note``).
        note: why it was refitted (non-finite loss, unsupported model, ...), else None.
    """

    seed: int
    vectorized: bool
    note: str | None = None


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
            est.fit_with(X, aux)
            report.note = "vectorize=False"
    elif not ok:
        warnings.warn(f"fitting the seeds separately: {reason}", VectorizationWarning, stacklevel=2)
        for est, report in zip(estimators, reports, strict=True):
            est.fit_with(X, aux)
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


class _SeedFit:
    """Runs ``estimator.fit_with`` in a thread; its training phases become requests.

    The fit is given ``self._run_phase`` as its phase runner: each phase is sent to the
    coordinator, which resumes the seed with the phase's result (or ``_Aborted``) and waits
    for its next message (a phase, "done", or an error).
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
        """Let the fit run until its next phase; return ("phase" | "done" | "error", _)."""
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
        try:
            self.estimator.fit_with(self.X, self.aux, phase_runner=self._run_phase)
            self._outbox.put(("done", None))
        except _Aborted:
            self._outbox.put(("aborted", None))
        except BaseException as err:  # handed to the coordinator, which re-raises
            self._outbox.put(("error", err))

    def _run_phase(self, phase: Phase) -> PhaseResult:
        self._outbox.put(("phase", phase))
        reply = self._inbox.get()
        if reply is _Aborted:
            raise _Aborted
        return reply


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
            phases = [messages[i][1] for i in waiting]
            outcomes = train_stacked(phases)
            for i, phase, outcome in zip(waiting, phases, outcomes, strict=True):
                if isinstance(outcome, TrainingError):
                    failed[i] = f"non-finite loss or gradient in phase {phase.name!r}: {outcome}"
                    messages[i] = fits[i].resume(_Aborted)
                else:
                    messages[i] = fits[i].resume(outcome)
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
        estimators[i].fit_with(X, aux)

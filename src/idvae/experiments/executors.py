"""Executors for multi-run work: in-process, a local process pool, or Ray.

A *run* fits one estimator with one seed on the study's data and returns a
:class:`RunOutput` (latents, learned prior, predictions, the saved model's files, or the
error). Runs are independent, so they are farmed out:

* ``executor="local", jobs=1``: in this process, one after the other (any callable works,
  lambdas included);
* ``executor="local", jobs=N``: a :class:`concurrent.futures.ProcessPoolExecutor` with the
  ``"spawn"`` context and one torch thread per worker; the study's data and
  ``make_estimator`` are shipped once per worker, so both must be picklable (use
  :class:`EstimatorSpec` or a module-level function, not a lambda);
* ``executor="ray"``: one Ray task per run (``num_gpus=1`` when the cluster has GPUs);
  install with ``pip install 'idvae[ray]'``.

The worker never touches the output directory: it returns the run's files as bytes and the
driver writes them (so Ray workers on other machines need no shared file system).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from idvae._validation import jsonable

__all__ = [
    "EstimatorSpec",
    "ExecutorName",
    "RunContext",
    "RunOutput",
    "execute_runs",
    "fit_run",
    "map_tasks",
]

ExecutorName = Literal["local", "ray"]

RAY_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class EstimatorSpec:
    """A picklable ``make_estimator``: a model name and its keyword arguments.

    ``spec(seed)`` returns an unfitted estimator ``Model(**params, random_state=seed)``.

    Args:
        model: a name in ``idvae.models.REGISTRY`` (``"vade"``, ``"mfcvae"``, ``"vae"``,
            ``"ivae"``; any case) or ``"package.module:Class"`` for any scikit-learn-style
            estimator with ``fit``/``transform``.
        params: keyword arguments of the estimator (JSON-serialisable values).

    Example:
        >>> spec = EstimatorSpec("vade", {"latent_dim": 2, "n_components": 3})
        >>> est = spec(seed=7)  # idvae.VaDE(latent_dim=2, n_components=3, random_state=7)
    """

    model: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str):
            raise TypeError(f"Expected model to be a str but got {type(self.model).__name__}")
        if ":" not in self.model:
            from idvae.models import REGISTRY

            if self.model.lower() not in REGISTRY:
                raise ValueError(
                    f"Expected model in {sorted(REGISTRY)} or 'module:Class' but got {self.model!r}"
                )
        if "random_state" in self.params:
            raise ValueError(
                "Expected params without 'random_state' (each run's seed is set by the study) "
                f"but got random_state={self.params['random_state']!r}"
            )
        object.__setattr__(self, "params", dict(self.params))

    def estimator_class(self) -> type:
        """The estimator class named by ``model``."""
        if ":" in self.model:
            import importlib

            module_name, _, attribute = self.model.partition(":")
            return getattr(importlib.import_module(module_name), attribute)
        from idvae.models import get_estimator

        return get_estimator(self.model.lower())

    def __call__(self, seed: int) -> Any:
        return self.estimator_class()(**self.params, random_state=int(seed))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "params": jsonable(self.params)}


@dataclass
class RunContext:
    """What every run of a study shares; shipped once to each worker.

    Args:
        make_estimator: seed -> unfitted estimator.
        x: array of shape (n_samples, n_features), the study's data; every run transforms
            all of it.
        fit_kwargs: extra keyword arguments of ``fit`` (e.g. ``u`` for iVAE).
        transform_kwargs: extra keyword arguments of ``transform``.
        save_models: whether to return the saved model's files.
        holdout_rows: int array of the rows of ``x`` kept out of every fit, or None (fit on
            all rows). The rows are scored with the fitted estimator's ``score`` (its
            held-out ELBO). Fit keyword arguments with one row per sample (``u``) are split
            with ``x``.
    """

    make_estimator: Callable[[int], Any]
    x: np.ndarray
    fit_kwargs: Mapping[str, Any] = field(default_factory=dict)
    transform_kwargs: Mapping[str, Any] = field(default_factory=dict)
    save_models: bool = True
    holdout_rows: np.ndarray | None = None

    def fit_arguments(self) -> tuple[np.ndarray, dict[str, Any]]:
        """``x`` and ``fit_kwargs`` without the held-out rows: what ``fit`` is given."""
        if self.holdout_rows is None:
            return self.x, dict(self.fit_kwargs)
        keep = np.ones(self.x.shape[0], dtype=bool)
        keep[self.holdout_rows] = False
        return self._rows(keep)

    def holdout_arguments(self) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The held-out rows of ``x`` and of the per-sample fit arguments, or None."""
        if self.holdout_rows is None:
            return None
        return self._rows(np.asarray(self.holdout_rows))

    def _rows(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        n = self.x.shape[0]
        kwargs = {
            key: np.asarray(value)[rows] if _per_sample(value, n) else value
            for key, value in self.fit_kwargs.items()
        }
        return self.x[rows], kwargs


def _per_sample(value: Any, n_samples: int) -> bool:
    """Whether a fit argument is an array with one row per sample (split with X)."""
    shape = getattr(value, "shape", None)
    if shape is None and isinstance(value, list | tuple):
        shape = np.shape(value)
    return bool(shape) and shape[0] == n_samples


@dataclass
class RunOutput:
    """The outcome of one run.

    Attributes:
        run_id: index of the run in the study (0-based).
        seed: the estimator's ``random_state``.
        status: ``"ok"`` or ``"failed"``.
        error: ``"ExceptionType: message"`` of a failed run, else None.
        traceback: the formatted traceback of a failed run.
        fit_seconds: wall time of ``fit`` (and transform/predict).
        latents: array of shape (n_samples, latent_dim), ``transform(x)``.
        predictions: array of shape (n_samples,), ``predict(x)`` when the estimator has it.
        prior: the learned ``prior_`` as ``GMM.to_dict()``, when the estimator has one.
        history: the estimator's ``history_`` when JSON-serialisable.
        model_files: relative path -> bytes of ``estimator.save(dir)``.
        vectorized: whether the run was trained in a batched model with other seeds (its
            ``fit_seconds`` is then the batch's time divided by the number of seeds).
        heldout_elbo: ``score`` of the held-out rows (mean ELBO per sample), when the
            context has held-out rows and the estimator a ``score``.
        heldout_error: why ``heldout_elbo`` is missing when ``score`` failed.
    """

    run_id: int
    seed: int
    status: str = "ok"
    error: str | None = None
    traceback: str | None = None
    fit_seconds: float = 0.0
    latents: np.ndarray | None = None
    predictions: np.ndarray | None = None
    prior: dict[str, Any] | None = None
    history: Any = None
    model_files: dict[str, bytes] = field(default_factory=dict)
    vectorized: bool = False
    heldout_elbo: float | None = None
    heldout_error: str | None = None


def fit_run(context: RunContext, run_id: int, seed: int) -> RunOutput:
    """Fit one estimator; never raises for the estimator's own errors (they are recorded)."""
    out = RunOutput(run_id=int(run_id), seed=int(seed))
    start = time.perf_counter()
    try:
        estimator = context.make_estimator(int(seed))
        x_fit, fit_kwargs = context.fit_arguments()
        estimator.fit(x_fit, **fit_kwargs)
        _collect(estimator, context, out)
    except Exception as err:  # a failed run is a result, never a crash of the study
        _record_failure(out, err)
    out.fit_seconds = time.perf_counter() - start
    return out


def _record_failure(out: RunOutput, err: BaseException) -> None:
    message = str(err).strip()
    out.status = "failed"
    out.error = f"{type(err).__name__}: {message.splitlines()[0] if message else ''}"
    out.traceback = traceback.format_exc()
    out.latents = out.predictions = out.prior = None
    out.model_files = {}


def _collect(estimator: Any, context: RunContext, out: RunOutput) -> None:
    """Fill ``out`` from a fitted estimator: latents, predictions, prior, history, files."""
    latents = np.asarray(
        estimator.transform(context.x, **dict(context.transform_kwargs)), dtype=np.float64
    )
    if latents.ndim != 2 or latents.shape[0] != context.x.shape[0]:
        raise ValueError(
            f"Expected transform to return shape ({context.x.shape[0]}, latent_dim) "
            f"but got {latents.shape}"
        )
    if not np.all(np.isfinite(latents)):
        raise ValueError("Expected finite latents but transform returned NaN or infinity")
    out.latents = latents
    if hasattr(estimator, "predict"):
        try:
            out.predictions = _as_cluster_labels(np.asarray(estimator.predict(context.x)))
        except Exception:  # a model without clusters (VAE, iVAE): no clustering scores
            out.predictions = None
    prior = getattr(estimator, "prior_", None)
    if prior is not None and hasattr(prior, "to_dict"):
        out.prior = prior.to_dict()
    try:
        out.history = jsonable(getattr(estimator, "history_", None))
    except TypeError:  # a history of other objects is not kept
        out.history = None
    if context.save_models and hasattr(estimator, "save"):
        out.model_files = _saved_files(estimator)
    _score_holdout(estimator, context, out)


def _score_holdout(estimator: Any, context: RunContext, out: RunOutput) -> None:
    """The held-out ELBO of a fitted estimator; a failing ``score`` does not fail the run."""
    held_out = context.holdout_arguments()
    if held_out is None or not hasattr(estimator, "score"):
        return
    x_holdout, kwargs = held_out
    try:
        value = float(estimator.score(x_holdout, **kwargs))
    except Exception as err:  # the fit stands; only its held-out score is missing
        out.heldout_error = f"{type(err).__name__}: {err}"
        return
    if np.isfinite(value):
        out.heldout_elbo = value
    else:
        out.heldout_error = f"score returned {value}"


def _lost_run(run_id: int, seed: int, err: BaseException) -> RunOutput:
    """The record of a run whose worker died before it could return its own record."""
    return RunOutput(
        run_id=run_id, seed=seed, status="failed", error=f"{type(err).__name__}: {err}"
    )


def _as_cluster_labels(predictions: np.ndarray) -> np.ndarray:
    """One int label per sample; facet states of shape (n, k) become joint indices."""
    predictions = predictions.astype(np.int64)
    if predictions.ndim == 2:
        dims = tuple(int(d) for d in predictions.max(axis=0) + 1)
        predictions = np.ravel_multi_index(tuple(predictions.T), dims).astype(np.int64)
    return predictions


# --------------------------------------------------------------------------- vectorised


def _vectorizable(context: RunContext, tasks: Sequence[tuple[int, int]]) -> tuple[Any, tuple]:
    """The template estimator and ``fit``'s positional aux arrays, or raise ValueError."""
    import inspect

    from idvae.vectorize import supports_vectorization

    template = context.make_estimator(int(tasks[0][1]))
    ok, reason = supports_vectorization(template, return_reason=True)
    if not ok:
        raise ValueError(reason)
    reference = {k: v for k, v in template.get_params().items() if k != "random_state"}
    for _, seed in tasks[1:]:
        other = context.make_estimator(int(seed))
        params = other.get_params()
        if type(other) is not type(template) or params.get("random_state") != seed:
            raise ValueError("make_estimator(seed) is not the template with random_state=seed")
        if repr({k: v for k, v in params.items() if k != "random_state"}) != repr(reference):
            raise ValueError("make_estimator(seed) changes parameters other than random_state")
    names = [
        p.name
        for p in list(inspect.signature(type(template).fit).parameters.values())[2:]
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    _, fit_kwargs = context.fit_arguments()
    unknown = set(fit_kwargs) - set(names)
    if unknown:
        raise ValueError(f"fit keyword arguments {sorted(unknown)} cannot be passed positionally")
    aux: list[Any] = []
    for name in names:
        if name not in fit_kwargs:
            break
        aux.append(fit_kwargs[name])
    if len(aux) != len(fit_kwargs):
        raise ValueError("fit keyword arguments are not a prefix of fit's positional arguments")
    return template, tuple(aux)


def fit_runs_vectorized(
    context: RunContext, tasks: Sequence[tuple[int, int]], notes: list[str] | None = None
) -> list[RunOutput] | None:
    """Fit the runs' seeds as one batched model (``idvae.vectorize.fit_seeds``).

    Returns None, with the reason appended to ``notes``, when vectorisation does not apply
    (not an idvae estimator, a factory that changes more than the seed, fit keyword arguments
    that are not fit's auxiliary arrays) or when the batched fit raised; the caller then
    fits the runs separately, so that a failing seed is recorded on its own.
    """
    notes = notes if notes is not None else []
    try:
        from idvae.vectorize import fit_seeds

        template, aux = _vectorizable(context, tasks)
    except Exception as err:  # whatever the reason, separate runs are the safe path
        notes.append(f"vectorisation does not apply: {err}")
        return None
    seeds = [int(seed) for _, seed in tasks]
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x_fit, _ = context.fit_arguments()
            fitted, reports = fit_seeds(template, x_fit, seeds, *aux, return_report=True)
    except Exception as err:  # fall back to separate runs, which record each failure
        notes.append(f"vectorised fit failed ({type(err).__name__}: {err}); fitting separately")
        return None
    notes.extend(f"vectorise: {w.message}" for w in caught)
    per_run = (time.perf_counter() - start) / len(tasks)
    outputs = []
    for (run_id, seed), estimator, report in zip(tasks, fitted, reports, strict=True):
        out = RunOutput(run_id=int(run_id), seed=int(seed), vectorized=bool(report.vectorized))
        begin = time.perf_counter()
        try:
            _collect(estimator, context, out)
        except Exception as err:
            _record_failure(out, err)
        out.fit_seconds = per_run + time.perf_counter() - begin
        outputs.append(out)
    return outputs


def _saved_files(estimator: Any) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="idvae-run-") as tmp:
        target = Path(tmp) / "model"
        estimator.save(target)
        return {
            str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()
        }


# --------------------------------------------------------------------------- local


_WORKER_SHARED: Any = None


def _init_worker(payload: bytes) -> None:
    """Process-pool initializer: one torch thread, and the shared object unpickled once."""
    import pickle

    import torch

    torch.set_num_threads(1)
    global _WORKER_SHARED
    _WORKER_SHARED = pickle.loads(payload)


def _worker_call(func: Callable[[Any, Any], Any], item: Any) -> Any:
    return func(_WORKER_SHARED, item)


def _pickled_context(context: RunContext) -> bytes:
    import pickle

    try:
        return pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise TypeError(
            "Expected a picklable make_estimator and fit_kwargs for jobs > 1 or Ray "
            "(use idvae.experiments.EstimatorSpec or a module-level function, not a lambda) "
            f"but pickling failed: {err}"
        ) from None


def _pool_context() -> multiprocessing.context.BaseContext:
    """ "forkserver" (one server imports torch once, workers fork from it) where available,
    else "spawn"; never plain "fork", which is unsafe with torch's threads."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "idvae.experiments.executors"])
        return ctx
    return multiprocessing.get_context("spawn")


def _map_pool(
    func: Callable[[Any, Any], Any],
    items: list[Any],
    payload: bytes,
    jobs: int,
    on_lost: Callable[[Any, BaseException], Any],
) -> Iterator[tuple[int, Any]]:
    """``func(shared, item)`` in a process pool; ``payload`` is ``shared`` pickled."""
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(items)),
        mp_context=_pool_context(),
        initializer=_init_worker,
        initargs=(payload,),
    ) as pool:
        pending = {pool.submit(_worker_call, func, item): i for i, item in enumerate(items)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as err:  # the worker process itself died
                        result = on_lost(items[index], err)
                    yield index, result
        finally:
            for future in pending:
                future.cancel()


def _run_local(
    context: RunContext, tasks: Sequence[tuple[int, int]], jobs: int
) -> Iterator[RunOutput]:
    if jobs == 1 or len(tasks) <= 1:
        for run_id, seed in tasks:
            yield fit_run(context, run_id, seed)
        return
    payload = _pickled_context(context)
    for _, output in _map_pool(_fit_task, list(tasks), payload, jobs, _lost_task):
        yield output


# --------------------------------------------------------------------------- ray


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(
            "Expected Ray to be installed for executor='ray' but it is not; "
            "install it with: pip install 'idvae[ray]'"
        ) from None
    return ray


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Raise ValueError unless ``host:port`` (or ``ray://host:port``) accepts a TCP connection."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, sep, port_text = target.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ValueError(
            f"Expected a Ray address 'host:port' or 'ray://host:port' but got {address!r}"
        )
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout):
            pass
    except OSError as err:
        raise ValueError(
            f"Expected a Ray cluster answering at {address} but could not connect within "
            f"{timeout:g} s ({err})"
        ) from None


def _ray_init(address: str | None) -> Any:
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    if address is not None:
        check_ray_address(address)
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    return ray


def _ray_call(func: Callable[[Any, Any], Any], shared: Any, item: Any) -> Any:
    import torch

    torch.set_num_threads(1)
    return func(shared, item)


def _map_ray(
    func: Callable[[Any, Any], Any],
    items: list[Any],
    shared: Any,
    address: str | None,
    on_lost: Callable[[Any, BaseException], Any],
) -> Iterator[tuple[int, Any]]:
    """``func(shared, item)`` as one Ray task per item (``num_gpus=1`` on a GPU cluster)."""
    ray = _ray_init(address)
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    remote = ray.remote(_ray_call).options(num_cpus=1, num_gpus=1 if gpus >= 1 else 0)
    shared_ref = ray.put(shared)
    pending = {remote.remote(func, shared_ref, item): i for i, item in enumerate(items)}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                index = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as err:  # the task or its worker died
                    result = on_lost(items[index], err)
                yield index, result
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def _run_ray(
    context: RunContext, tasks: Sequence[tuple[int, int]], address: str | None
) -> Iterator[RunOutput]:
    _ray_init(address)
    _pickled_context(context)  # a clear error before Ray's own
    for _, output in _map_ray(_fit_task, list(tasks), context, address, _lost_task):
        yield output


def _fit_task(context: RunContext, task: tuple[int, int]) -> RunOutput:
    return fit_run(context, *task)


def _lost_task(task: tuple[int, int], err: BaseException) -> RunOutput:
    return _lost_run(task[0], task[1], err)


# --------------------------------------------------------------------------- dispatch


def execute_runs(
    context: RunContext,
    tasks: Sequence[tuple[int, int]],
    *,
    executor: ExecutorName = "local",
    jobs: int = 1,
    address: str | None = None,
) -> Iterator[RunOutput]:
    """Run ``(run_id, seed)`` tasks and yield each :class:`RunOutput` as soon as it finishes.

    Args:
        context: the data and estimator factory shared by every run.
        tasks: ``(run_id, seed)`` pairs.
        executor: ``"local"`` (in-process for ``jobs=1``, else a spawn process pool) or
            ``"ray"`` (the running Ray runtime, a cluster at ``address``, or a new local one).
        jobs: worker processes of the local pool (ignored by Ray, which schedules by CPUs/GPUs).
        address: the Ray cluster's address (``host:port``, ``ray://host:port`` or ``"auto"``);
            an address that does not answer within 5 s is a ValueError.
    """
    if executor == "local":
        if address is not None:
            raise ValueError(f"Expected no address with executor='local' but got {address!r}")
        yield from _run_local(context, tasks, jobs)
    elif executor == "ray":
        yield from _run_ray(context, tasks, address)
    else:
        raise ValueError(f"Expected executor 'local' or 'ray' but got {executor!r}")


# --------------------------------------------------------------------------- any tasks


def map_tasks(
    func: Callable[[Any, Any], Any],
    items: Sequence[Any],
    *,
    shared: Any = None,
    executor: ExecutorName = "local",
    jobs: int = 1,
    address: str | None = None,
    on_lost: Callable[[Any, BaseException], Any] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Call ``func(shared, item)`` for every item; yield ``(index, result)`` as each finishes.

    The same executors as :func:`execute_runs` for work that is not "one estimator, many
    seeds on one dataset" (e.g. the recovery benchmark: many instances, many methods).
    ``func`` must be a module-level function, and ``shared``, the items and the results
    picklable, for the process pool and Ray; ``shared`` is shipped once per worker.

    Args:
        func: ``(shared, item) -> result``; it should record its own failures in the
            result rather than raise (an exception propagates and stops the iteration).
        items: the work, in order.
        shared: what every call shares (data, settings).
        executor, jobs, address: as in :func:`execute_runs`; ``"local"`` with ``jobs=1``
            runs in this process, one item after the other.
        on_lost: ``(item, error) -> result`` for an item whose worker died; None: raise.
    """
    items = list(items)
    if executor not in ("local", "ray"):
        raise ValueError(f"Expected executor 'local' or 'ray' but got {executor!r}")
    if executor == "local" and address is not None:
        raise ValueError(f"Expected no address with executor='local' but got {address!r}")
    if executor == "local" and (jobs == 1 or len(items) <= 1):
        for index, item in enumerate(items):
            yield index, func(shared, item)
        return
    lost = on_lost or _raise_lost
    if executor == "local":
        yield from _map_pool(func, items, _pickled_shared(shared), jobs, lost)
    else:
        yield from _map_ray(func, items, shared, address, lost)


def _raise_lost(item: Any, err: BaseException) -> Any:
    raise err


def _pickled_shared(shared: Any) -> bytes:
    import pickle

    try:
        return pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise TypeError(f"Expected a picklable shared object for jobs > 1 but: {err}") from None


def default_jobs() -> int:
    """A sensible ``jobs`` for this machine: its CPU count (at least 1)."""
    return max(1, os.cpu_count() or 1)

"""Executors for multi-run work: in-process, a local process pool, or Ray.

Runs (:mod:`idvae.experiments.runs`) are independent, so they are farmed out:

* ``executor="local", jobs=1``: in this process, one after the other (any callable works,
  lambdas included);
* ``executor="local", jobs=N``: a :class:`concurrent.futures.ProcessPoolExecutor` with the
  ``"forkserver"`` (else ``"spawn"``) context and one torch thread per worker; the study's
  data and ``make_estimator`` are shipped once per worker, so both must be picklable (use
  :class:`~idvae.experiments.runs.EstimatorSpec` or a module-level function, not a lambda);
* ``executor="ray"``: one Ray task per run (``num_gpus=1`` when the cluster has GPUs);
  install with ``pip install 'idvae[ray]'``.

:func:`execute_runs` runs a study's ``(run_id, seed)`` tasks; :func:`map_tasks` runs any
picklable task on the same executors. The worker never touches the output directory: it
returns the run's files as bytes and the driver writes them (so Ray workers on other
machines need no shared file system).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Literal

# EstimatorSpec is re-exported: a task names its estimator with it
from idvae.experiments.runs import EstimatorSpec, RunContext, RunOutput, fit_run, lost_run

__all__ = [
    "EstimatorSpec",
    "ExecutorName",
    "check_ray_address",
    "default_jobs",
    "execute_runs",
    "map_tasks",
]

ExecutorName = Literal["local", "ray"]

RAY_CONNECT_TIMEOUT_S = 5.0


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


def _fit_task(context: RunContext, task: tuple[int, int]) -> RunOutput:
    return fit_run(context, *task)


def _lost_task(task: tuple[int, int], err: BaseException) -> RunOutput:
    return lost_run(task[0], task[1], err)


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
    yield from (
        output
        for _, output in _map(
            _fit_task, list(tasks), context, executor, jobs, address, _lost_task, _PICKLABLE_CONTEXT
        )
    )


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
    yield from _map(
        func, list(items), shared, executor, jobs, address, on_lost or _raise_lost, None
    )


def _map(
    func: Callable[[Any, Any], Any],
    items: list[Any],
    shared: Any,
    executor: str,
    jobs: int,
    address: str | None,
    on_lost: Callable[[Any, BaseException], Any],
    picklable: str | None,
) -> Iterator[tuple[int, Any]]:
    """``map_tasks``; ``picklable`` says what ``shared`` must be, checked for Ray too when given.

    Without it, an object that Ray's own serialiser accepts but pickle does not (a lambda)
    still runs on Ray.
    """
    if executor not in ("local", "ray"):
        raise ValueError(f"Expected executor 'local' or 'ray' but got {executor!r}")
    if executor == "local" and address is not None:
        raise ValueError(f"Expected no address with executor='local' but got {address!r}")
    if executor == "local" and (jobs == 1 or len(items) <= 1):
        for index, item in enumerate(items):
            yield index, func(shared, item)
    elif executor == "local":
        payload = _pickled(shared, picklable or "a picklable shared object for jobs > 1")
        yield from _map_pool(func, items, payload, jobs, on_lost)
    else:
        _ray_init(address)  # Ray's own errors first
        if picklable is not None:
            _pickled(shared, picklable)  # a clear error before Ray's
        yield from _map_ray(func, items, shared, address, on_lost)


def _raise_lost(item: Any, err: BaseException) -> Any:
    raise err


def _pickled(shared: Any, expected: str) -> bytes:
    """``shared`` pickled for the workers, or TypeError saying what was ``expected``."""
    import pickle

    try:
        return pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise TypeError(f"Expected {expected} but pickling failed: {err}") from None


_PICKLABLE_CONTEXT = (
    "a picklable make_estimator and fit_kwargs for jobs > 1 or Ray (use "
    "idvae.experiments.EstimatorSpec or a module-level function, not a lambda)"
)


def default_jobs() -> int:
    """A sensible ``jobs`` for this machine: its CPU count (at least 1)."""
    return max(1, os.cpu_count() or 1)

"""Stability studies: fit one model with several seeds and measure how alike the fits are.

This is the protocol of Sec. 4 and App. J.3 of the paper: fit the estimator ``n_runs``
times, then for every pair of runs (i, j) compute

* the strong MCC (no alignment) and the weak MCC (after CCA alignment), out of sample
  (App. J.1);
* distAff,L2 between the learned priors ``prior_`` (eq. (34));
* beyond the paper, the strong MCC after putting each latent space in the canonical
  coordinates of Thm E.1 (``idvae.identify``), which removes the affine ambiguity the
  theory allows so that a strong MCC near 1 becomes attainable;

and, when the truth is known, every run against it (strong/weak/canonical MCC to ``z_true``,
distAff to the true prior, clustering accuracy, NMI and ARI against ``labels``).

Summaries are means and standard deviations over the unordered pairs i < j of successful
runs (the paper's Table 2 reports the same mean over its 20 ordered pairs: the matrices are
symmetric). Failed runs are kept with their error and counted, never dropped.

Agreement is not recovery: runs that agree may share a wrong optimum. So, beyond the paper,
a fraction of X (``holdout``, 0.2 by default; the same rows for every run, drawn from
``random_state``) is kept out of every fit and scored with each run's ``score`` (its
held-out ELBO), and the runs are grouped into *modes* of runs that match up to an affine
map (:mod:`idvae.experiments.modes`). A :class:`~idvae.experiments.modes.ModeWarning` is
issued when the runs agree but a run outside the largest mode reached a higher held-out
ELBO, and when the modes disagree.

This module runs a study and is its public API; its parts live in modules of their own: the
seeds and the held-out split in :mod:`~idvae.experiments.seeds`, the records, result and
tables in :mod:`~idvae.experiments.results`, the run store in :mod:`~idvae.experiments.store`
and the metrics in :mod:`~idvae.experiments.scoring`. Their public names are importable from
here as well.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from idvae._validation import RandomState, check_array, check_positive_int
from idvae.data import Data
from idvae.experiments.agreement import MODE_THRESHOLD, check_threshold
from idvae.experiments.executors import ExecutorName, execute_runs
from idvae.experiments.modes import warn_modes
from idvae.experiments.results import (
    CLUSTER_METRICS,
    FORMAT_VERSION,
    PAIR_METRICS,
    TRUTH_METRICS,
    RunRecord,
    StabilityResult,
    scored_rows,
)
from idvae.experiments.runs import RunContext, RunOutput, fit_runs_vectorized
from idvae.experiments.scoring import canonical_map, compute_result
from idvae.experiments.seeds import (
    HOLDOUT,
    METRIC_STREAM,
    MIN_HOLDOUT_SAMPLES,
    base_entropy,
    check_holdout,
    child_seed,
    derive_seeds,
    holdout_split,
    score_subset,
    study_holdout,
)
from idvae.experiments.store import StudyStore, array_digest, describe_estimator, kwargs_digest
from idvae.mixture import GMM

__all__ = [
    "CLUSTER_METRICS",
    "FORMAT_VERSION",
    "HOLDOUT",
    "MIN_HOLDOUT_SAMPLES",
    "PAIR_METRICS",
    "TRUTH_METRICS",
    "RunRecord",
    "StabilityResult",
    "StudyStore",
    "canonical_map",
    "compute_result",
    "derive_seeds",
    "describe_estimator",
    "holdout_split",
    "stability",
]


def stability(
    make_estimator: Callable[[int], Any],
    X: Any,
    *,
    n_runs: int = 5,
    random_state: RandomState = 0,
    z_true: Any = None,
    prior_true: GMM | None = None,
    labels: Any = None,
    executor: ExecutorName = "local",
    jobs: int = 1,
    address: str | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    fit_kwargs: Mapping[str, Any] | None = None,
    transform_kwargs: Mapping[str, Any] | None = None,
    save_models: bool = True,
    vectorize: bool = True,
    progress: Callable[[RunRecord], None] | None = None,
    holdout: float = HOLDOUT,
    mode_threshold: float = MODE_THRESHOLD,
    score_rows: int | None = None,
) -> StabilityResult:
    """Fit ``n_runs`` seeds of one model and measure how alike their latent spaces are.

    Every run is fitted on the same rows of X; the rows kept out (``holdout``) give each
    run's held-out ELBO, and the runs are grouped into modes of runs that match up to an
    affine map (:func:`idvae.experiments.modes.find_modes`). Agreement between runs is not
    recovery: a ``ModeWarning`` is issued when the runs agree but a run outside the largest
    mode reached a higher held-out ELBO, and when the modes disagree.

    Long for its twenty arguments and their documentation; the body is a sequence of steps,
    each a call to a helper: check the inputs, describe the study, open its store, fit the
    runs not yet done, score them.

    Args:
        make_estimator: seed -> an unfitted estimator with ``fit(X)``, ``transform(X)`` and
            optionally ``predict``, ``prior_`` (an ``idvae.GMM``) and ``save(dir)``. Must be
            picklable for ``jobs > 1`` or Ray: use :class:`~idvae.experiments.EstimatorSpec`
            or a module-level function.
        X: array of shape (n_samples, n_features), the data; every run is fitted on the
            same rows of it (all but the held-out ones) and transforms all of it. Or an
            :class:`idvae.data.Data` (a ``Simulation``, a ``Dataset``, what ``load_array``
            reads): its x, and its z, prior and labels as ``z_true``, ``prior_true`` and
            ``labels`` where it knows them (giving one both ways is an error).
        n_runs: number of seeds.
        random_state: int (reproducible), Generator or None; run i gets seed
            ``derive_seeds(random_state, n_runs)[i]`` and the out-of-sample splits of the
            MCCs are seeded from it too.
        z_true: array of shape (n_samples, d), the true latents, when known.
        prior_true: the true law of Z (``GMM``), when known (distAff and canonical MCC to it).
        labels: array of shape (n_samples,), true cluster labels, when known.
        executor: ``"local"`` or ``"ray"`` (see :mod:`idvae.experiments.executors`).
        jobs: local worker processes (1: in this process).
        address: a Ray cluster's address (``executor="ray"`` only).
        out: a directory to save each run as it finishes (``out/runs/<id>/``), the study's
            fingerprint (``out/study.json``) and the result (``out/stability.json``).
        resume: continue the study in ``out``, skipping its finished runs.
        fit_kwargs: extra keyword arguments of ``fit`` (e.g. ``{"u": labels}`` for iVAE).
        transform_kwargs: extra keyword arguments of ``transform``.
        save_models: save each fitted model in ``out/runs/<id>/model`` (when it has ``save``).
        vectorize: train the seeds as one batched model (``idvae.vectorize.fit_seeds``) where
            it applies: idvae estimators built by ``make_estimator`` that differ only in
            ``random_state``, ``executor="local"`` with ``jobs=1``. Each seed is still its own
            fit (own initialisation, batch order and noise). Runs are then written when the
            batch finishes; a batch that fails falls back to separate runs.
        progress: called with each run's :class:`RunRecord` (status, seed, seconds) as soon as
            it finishes.
        holdout: the fraction of X kept out of every run's fit, in [0, 1): the same rows for
            every run (``holdout_split(len(X), holdout, random_state)``), scored with each
            fitted estimator's ``score`` (mean ELBO per sample). Fit arguments with one row
            per sample (``u``) are split with X. 0 fits every run on all of X; a split that
            would keep out fewer than ``MIN_HOLDOUT_SAMPLES`` rows is not made (a
            ``ModeWarning`` says so) and the modes carry no held-out ELBO.
        mode_threshold: the weak MCC (affine alignment, both directions) at which two runs
            are in one mode, in (0, 1].
        score_rows: None (each run is transformed, predicted and scored on every row of X),
            or at most this many rows: above it, the same seeded subset of the rows for every
            run (``seeds.score_subset``). Each run's latents and predictions, in memory and
            in ``out``, are then those of the subset, and so are the metrics between runs, to
            the truth and to the labels: a study of 70,000 images keeps 5,000 rows per run.

    Returns:
        A :class:`StabilityResult`.

    Example:
        >>> from idvae.experiments import EstimatorSpec
        >>> spec = EstimatorSpec("vade", {"latent_dim": 2, "n_components": 3})
        >>> result = stability(spec, x, n_runs=5, z_true=z)  # doctest: +SKIP
        >>> result.summary()["between_runs"]["weak_mcc"]  # doctest: +SKIP
        >>> [(m.size, m.heldout_elbo_max) for m in result.modes.modes]  # doctest: +SKIP
    """
    if not callable(make_estimator):
        raise TypeError(
            f"Expected make_estimator to be callable (seed -> estimator) but got "
            f"{type(make_estimator).__name__}"
        )
    X, z_true, prior_true, labels = _unpack_data(X, z_true, prior_true, labels)
    x = check_array(X, "X", min_samples=2, dtype=np.float32 if _is_float32(X) else np.float64)
    n_runs = check_positive_int(n_runs, "n_runs")
    jobs = check_positive_int(jobs, "jobs")
    _check_where(executor, address, out, resume)
    z, y = _check_truth(x, z_true, prior_true, labels)
    fit_kwargs = dict(fit_kwargs or {})
    transform_kwargs = dict(transform_kwargs or {})
    holdout = check_holdout(holdout)
    mode_threshold = _check_mode_threshold(mode_threshold)

    base = base_entropy(random_state)
    seeds = [child_seed(base, i) for i in range(n_runs)]
    _check_builds(make_estimator, seeds[0])
    holdout_rows, heldout_note = study_holdout(x.shape[0], holdout, base)
    scored = score_subset(x.shape[0], score_rows, base)
    config = _study_config(
        make_estimator,
        x,
        seeds,
        base=base,
        fit_kwargs=fit_kwargs,
        transform_kwargs=transform_kwargs,
        holdout=holdout,
        holdout_rows=holdout_rows,
        heldout_note=heldout_note,
        scored=scored,
        executor=executor,
        jobs=jobs,
        has_truth=z is not None,
        has_prior_truth=prior_true is not None,
        has_labels=y is not None,
        mode_threshold=float(mode_threshold),
    )

    store = StudyStore(out) if out is not None else None
    outputs, resumed = _open_store(store, config, seeds, resume=resume)
    context = RunContext(
        make_estimator=make_estimator,
        x=x,
        fit_kwargs=fit_kwargs,
        transform_kwargs=transform_kwargs,
        save_models=save_models and store is not None,
        holdout_rows=holdout_rows,
        score_rows=scored,
    )
    tasks = [(i, s) for i, s in enumerate(seeds) if i not in outputs]
    notes: list[str] = []
    for output in _fit(context, tasks, notes, executor, jobs, address, vectorize=vectorize):
        _keep(output, outputs, store, progress)

    ordered = [outputs[i] for i in range(n_runs)]
    _warn_failed(ordered)
    result = compute_result(
        ordered,
        z_true=scored_rows(z, scored),
        prior_true=prior_true,
        labels=scored_rows(y, scored),
        metric_seed=child_seed(base, METRIC_STREAM),
        config=config,
        resumed=resumed,
        mode_threshold=float(mode_threshold),
        heldout_note=heldout_note,
    )
    result.notes[:0] = notes
    result.holdout_rows = holdout_rows
    result.score_rows = scored
    if store is not None:
        result.to_json(store.root / "stability.json")
    if result.modes is not None:
        warn_modes(result.modes, stacklevel=2)
    return result


def _warn_failed(outputs: list[RunOutput]) -> None:
    """A ``RuntimeWarning`` for each failed run, with its error."""
    for output in outputs:
        if output.status != "ok":
            warnings.warn(
                f"run {output.run_id} (seed {output.seed}) failed: {output.error}",
                RuntimeWarning,
                stacklevel=3,
            )


def _study_config(
    make_estimator: Callable[[int], Any],
    x: np.ndarray,
    seeds: list[int],
    *,
    base: int,
    fit_kwargs: Mapping[str, Any],
    transform_kwargs: Mapping[str, Any],
    holdout: float,
    holdout_rows: np.ndarray | None,
    heldout_note: str | None,
    scored: np.ndarray | None,
    executor: str,
    jobs: int,
    has_truth: bool,
    has_prior_truth: bool,
    has_labels: bool,
    mode_threshold: float,
) -> dict[str, Any]:
    """The study's description (``study.json``), with the fingerprint a resume must match."""
    fingerprint = {
        "estimator": describe_estimator(make_estimator),
        "data": array_digest(x),
        "random_state": base,
        "fit_kwargs": kwargs_digest(fit_kwargs),
        "transform_kwargs": kwargs_digest(transform_kwargs),
    }
    if holdout_rows is not None:  # no key without a split: one fingerprint across versions
        fingerprint["holdout"] = {"fraction": holdout, "n_holdout": int(holdout_rows.size)}
    if scored is not None:  # likewise: no key when every row is scored
        fingerprint["score_rows"] = int(scored.size)
    n_holdout = 0 if holdout_rows is None else int(holdout_rows.size)
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "n_runs": len(seeds),
        "seeds": seeds,
        "n_samples": int(x.shape[0]),
        "n_features": int(x.shape[1]),
        "executor": executor,
        "jobs": jobs,
        "has_truth": has_truth,
        "has_prior_truth": has_prior_truth,
        "has_labels": has_labels,
        "holdout": {
            "fraction": holdout,
            "n_holdout": n_holdout,
            "n_fit": int(x.shape[0] - n_holdout),
            "note": heldout_note,
        },
        "mode_threshold": mode_threshold,
        "n_scored": int(x.shape[0] if scored is None else scored.size),
    }
    return config


def _check_where(executor: str, address: str | None, out: Any, resume: bool) -> None:
    """Refuse an unknown executor, an address without Ray, and resume without ``out``."""
    if executor not in ("local", "ray"):
        raise ValueError(f"Expected executor 'local' or 'ray' but got {executor!r}")
    if executor == "local" and address is not None:
        raise ValueError(f"Expected no address with executor='local' but got {address!r}")
    if resume and out is None:
        raise ValueError("Expected an out directory with resume=True but got out=None")


def _check_mode_threshold(mode_threshold: float) -> float:
    """``agreement.check_threshold``, its errors naming the argument ``mode_threshold``."""
    try:
        return check_threshold(mode_threshold)
    except (TypeError, ValueError) as err:
        raise type(err)(str(err).replace("threshold", "mode_threshold", 1)) from None


def _check_builds(make_estimator: Callable[[int], Any], seed: int) -> None:
    """A factory that cannot build an estimator is the caller's error, not n failed runs."""
    try:
        make_estimator(seed)
    except Exception as err:
        raise ValueError(
            f"Expected make_estimator(seed) to build an estimator but it raised "
            f"{type(err).__name__}: {err}"
        ) from None


def _unpack_data(
    X: Any, z_true: Any, prior_true: GMM | None, labels: Any
) -> tuple[Any, Any, GMM | None, Any]:
    """X, z_true, prior_true and labels, taken from X's fields when X is a ``Data``."""
    if not isinstance(X, Data):
        return X, z_true, prior_true, labels
    given = {"z_true": z_true, "prior_true": prior_true, "labels": labels}
    known = {"z_true": X.z, "prior_true": X.prior, "labels": X.labels}
    both = [name for name in given if given[name] is not None and known[name] is not None]
    if both:
        raise ValueError(
            f"Expected the truth either in the Data or as arguments but got {both} both ways"
        )
    truth = {name: known[name] if given[name] is None else given[name] for name in given}
    return X.x, truth["z_true"], truth["prior_true"], truth["labels"]


def _check_truth(
    x: np.ndarray, z_true: Any, prior_true: GMM | None, labels: Any
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The true latents and labels as arrays with one row per row of ``x`` (or None)."""
    z = None
    if z_true is not None:
        z = check_array(z_true, "z_true", min_samples=x.shape[0])
        if z.shape[0] != x.shape[0]:
            raise ValueError(
                f"Expected z_true with {x.shape[0]} rows (one per sample) but got {z.shape[0]}"
            )
    if prior_true is not None and not isinstance(prior_true, GMM):
        raise TypeError(f"Expected prior_true to be an idvae.GMM but got {type(prior_true)}")
    y = None
    if labels is not None:
        y = np.asarray(labels)
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"Expected labels of shape ({x.shape[0]},) but got shape {y.shape}")
    return z, y


def _open_store(
    store: StudyStore | None, config: Mapping[str, Any], seeds: list[int], *, resume: bool
) -> tuple[dict[int, RunOutput], set[int]]:
    """Open the study's directory; when resuming, the runs it already holds, by run id."""
    outputs: dict[int, RunOutput] = {}
    resumed: set[int] = set()
    if store is not None:
        store.open(config, resume=resume)
        if resume:
            for run_id, seed in enumerate(seeds):
                found = store.finished(run_id, seed)
                if found is not None:
                    outputs[run_id] = found
                    resumed.add(run_id)
    return outputs, resumed


def _fit(
    context: RunContext,
    tasks: list[tuple[int, int]],
    notes: list[str],
    executor: ExecutorName,
    jobs: int,
    address: str | None,
    *,
    vectorize: bool,
) -> Iterable[RunOutput]:
    """The runs of ``tasks`` as they finish: as one batched fit where it applies, else apart."""
    if vectorize and executor == "local" and jobs == 1 and len(tasks) > 1:
        finished = fit_runs_vectorized(context, tasks, notes)
        if finished is not None:
            return finished
    return execute_runs(context, tasks, executor=executor, jobs=jobs, address=address)


def _keep(
    output: RunOutput,
    outputs: dict[int, RunOutput],
    store: StudyStore | None,
    progress: Callable[[RunRecord], None] | None,
) -> None:
    """Save a run as it finishes, keep it in ``outputs`` and report it to ``progress``."""
    if store is not None:
        store.write(output)
    output.model_files = {}
    outputs[output.run_id] = output
    if progress is not None:
        progress(RunRecord.of(output))


def _is_float32(x: Any) -> bool:
    return getattr(x, "dtype", None) == np.float32

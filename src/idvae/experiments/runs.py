"""One run of a study: an estimator fitted with one seed, its outcome collected.

A *run* fits the estimator that ``make_estimator(seed)`` returns on the study's data (less
its held-out rows) and returns a :class:`RunOutput`: latents, learned prior, predictions,
the saved model's files, the held-out ELBO, or the error. :func:`fit_run` is one run;
:func:`fit_runs_vectorized` fits the seeds of several runs as one batched model
(``idvae.vectorize.fit_seeds``) and collects each the same way. The executors
(:mod:`idvae.experiments.executors`) farm runs out to processes or Ray.
"""

from __future__ import annotations

import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idvae._validation import jsonable

__all__ = [
    "EstimatorSpec",
    "RunContext",
    "RunOutput",
    "fit_run",
    "fit_runs_vectorized",
    "lost_run",
]


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
            all of it, or the rows ``score_rows``.
        fit_kwargs: extra keyword arguments of ``fit`` (e.g. ``u`` for iVAE).
        transform_kwargs: extra keyword arguments of ``transform``.
        save_models: whether to return the saved model's files.
        holdout_rows: int array of the rows of ``x`` kept out of every fit, or None (fit on
            all rows). The rows are scored with the fitted estimator's ``score`` (its
            held-out ELBO). Fit keyword arguments with one row per sample (``u``) are split
            with ``x``.
        score_rows: int array of the rows of ``x`` each run is transformed and predicted on
            (its latents and predictions), or None (all rows). Transform keyword arguments
            with one row per sample are cut with ``x``.
    """

    make_estimator: Callable[[int], Any]
    x: np.ndarray
    fit_kwargs: Mapping[str, Any] = field(default_factory=dict)
    transform_kwargs: Mapping[str, Any] = field(default_factory=dict)
    save_models: bool = True
    holdout_rows: np.ndarray | None = None
    score_rows: np.ndarray | None = None

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

    def scored_arguments(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The rows of ``x`` each run is transformed and predicted on, with ``transform_kwargs``."""
        if self.score_rows is None:
            return self.x, dict(self.transform_kwargs)
        return self._rows(np.asarray(self.score_rows), self.transform_kwargs)

    def _rows(
        self, rows: np.ndarray, kwargs: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        n = self.x.shape[0]
        cut = {
            key: np.asarray(value)[rows] if _per_sample(value, n) else value
            for key, value in (self.fit_kwargs if kwargs is None else kwargs).items()
        }
        return self.x[rows], cut


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
    x, transform_kwargs = context.scored_arguments()
    latents = np.asarray(estimator.transform(x, **transform_kwargs), dtype=np.float64)
    if latents.ndim != 2 or latents.shape[0] != x.shape[0]:
        raise ValueError(
            f"Expected transform to return shape ({x.shape[0]}, latent_dim) but got {latents.shape}"
        )
    if not np.all(np.isfinite(latents)):
        raise ValueError("Expected finite latents but transform returned NaN or infinity")
    out.latents = latents
    if hasattr(estimator, "predict"):
        try:
            out.predictions = _as_cluster_labels(np.asarray(estimator.predict(x)))
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


def lost_run(run_id: int, seed: int, err: BaseException) -> RunOutput:
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

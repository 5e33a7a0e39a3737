"""The metrics of a stability study, computed from its runs' outputs.

For every pair of successful runs: the strong MCC (no alignment), the weak MCC (CCA), the
canonical MCC (each latent space first put in the coordinates of Thm E.1 by its own prior)
and distAff,L2 between the priors; for every run, the same against the truth and the
clustering scores against the labels, when they are known; then the runs' modes
(:func:`idvae.experiments.modes.find_modes`). A metric that fails on one pair or run is NaN
with a note saying why; it never loses the study.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from idvae.experiments.agreement import MODE_THRESHOLD
from idvae.experiments.modes import ModeReport, find_modes
from idvae.experiments.results import RunRecord, StabilityResult
from idvae.experiments.runs import RunOutput
from idvae.mixture import GMM

__all__ = ["canonical_map", "compute_result"]


class _Metrics:
    """Thin wrappers around ``idvae.metrics`` that record failures in ``notes``."""

    def __init__(self, seed: int, notes: list[str]) -> None:
        import idvae.metrics as metrics

        self.metrics = metrics
        self.seed = seed
        self.notes = notes

    def _safe(self, what: str, func: Callable[[], float]) -> float:
        try:
            value = float(func())
        except Exception as err:  # one metric failing must not lose the study
            self.notes.append(f"{what}: {type(err).__name__}: {err}")
            return math.nan
        return value

    def mcc(self, a: np.ndarray, b: np.ndarray, alignment: str, what: str) -> float:
        return self._safe(
            what,
            lambda: self.metrics.mcc(
                a, b, alignment=alignment, out_of_sample=True, random_state=self.seed
            ),
        )

    def dist_aff(self, p: GMM, q: GMM, what: str) -> float:
        return self._safe(what, lambda: self.metrics.dist_aff_l2(p, q))

    def clustering(self, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        m = self.metrics
        return {
            "accuracy": self._safe("accuracy", lambda: m.cluster_accuracy(labels, predictions)),
            "nmi": self._safe("nmi", lambda: m.nmi(labels, predictions)),
            "ari": self._safe("ari", lambda: m.ari(labels, predictions)),
        }


def canonical_map(prior: GMM, notes: list[str] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The affine map of Thm E.1 putting ``prior`` in canonical coordinates, as a function.

    Uses ``idvae.identify.canonicalize(prior, strict=False)``; its identifiability warnings
    (e.g. (P2) nearly failing on an estimated prior) are appended to ``notes``.
    """
    from idvae.identify import canonicalize

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        affine = canonicalize(prior, strict=False)
    if notes is not None:
        notes.extend(f"canonicalize: {w.message}" for w in caught)
    return affine.apply


def _pairwise(
    n_runs: int, ok: list[int], compute: Callable[[int, int], float], diagonal: float
) -> np.ndarray:
    matrix = np.full((n_runs, n_runs), np.nan)
    for i in ok:
        matrix[i, i] = diagonal
    for a, i in enumerate(ok):
        for j in ok[a + 1 :]:
            matrix[i, j] = matrix[j, i] = compute(i, j)
    return matrix


def compute_result(
    outputs: Sequence[RunOutput],
    *,
    z_true: np.ndarray | None,
    prior_true: GMM | None,
    labels: np.ndarray | None,
    metric_seed: int,
    config: dict[str, Any],
    resumed: set[int] = frozenset(),  # type: ignore[assignment]
    mode_threshold: float = MODE_THRESHOLD,
    heldout_note: str | None = None,
) -> StabilityResult:
    """Compute every metric of a study from its runs' outputs (sorted by run id).

    The modes are computed here too, from the outputs' latents and held-out ELBOs, so a
    resumed study regroups its stored runs with its new ones.
    """
    notes: list[str] = []
    metrics = _Metrics(metric_seed, notes)
    ok = [o.run_id for o in outputs if o.status == "ok" and o.latents is not None]
    latents = [o.latents for o in outputs]
    priors = _priors(outputs, notes)
    matrices = _mcc_matrices(len(outputs), ok, latents, metrics)
    canon = _canonical_latents(ok, latents, priors, notes)
    matrices.update(_prior_matrices(len(outputs), ok, canon, priors, metrics))
    canon_true = None
    if z_true is not None and prior_true is not None and canon:
        try:
            canon_true = np.asarray(canonical_map(prior_true, notes)(z_true), dtype=np.float64)
        except Exception as err:
            notes.append(f"canonicalize truth: {type(err).__name__}: {err}")
    records = []
    for o in outputs:
        record = RunRecord.of(o, resumed=o.run_id in resumed, digits=3)
        if o.heldout_error is not None:
            notes.append(f"run {o.run_id} held-out score: {o.heldout_error}")
        if o.run_id in ok:
            record.heldout_elbo = o.heldout_elbo
            _score_to_truth(
                record, o, z_true, prior_true, labels, canon, canon_true, priors, metrics
            )
        records.append(record)
    modes = _modes(ok, latents, records, z_true, metrics, mode_threshold, heldout_note)
    notes.extend(modes.notes)
    return StabilityResult(
        runs=records,
        matrices=matrices,
        latents=latents,
        predictions=[o.predictions for o in outputs],
        priors=priors,
        config=config,
        notes=notes,
        histories=[o.history for o in outputs],
        modes=modes,
    )


def _priors(outputs: Sequence[RunOutput], notes: list[str]) -> list[GMM | None]:
    """Each run's ``prior_`` as a ``GMM`` (None for a run without one or an invalid one)."""
    priors: list[GMM | None] = []
    for o in outputs:
        try:
            priors.append(GMM.from_dict(o.prior) if o.prior is not None else None)
        except ValueError as err:
            notes.append(f"run {o.run_id} prior_: {err}")
            priors.append(None)
    return priors


def _mcc_matrices(
    n_runs: int, ok: list[int], latents: list[Any], metrics: _Metrics
) -> dict[str, np.ndarray]:
    """The strong (no alignment) and weak (CCA) MCC between every pair of runs."""
    return {
        "strong_mcc": _pairwise(
            n_runs,
            ok,
            lambda i, j: metrics.mcc(latents[i], latents[j], "none", f"strong MCC {i}-{j}"),
            1.0,
        ),
        "weak_mcc": _pairwise(
            n_runs,
            ok,
            lambda i, j: metrics.mcc(latents[i], latents[j], "cca", f"weak MCC {i}-{j}"),
            1.0,
        ),
    }


def _canonical_latents(
    ok: list[int], latents: list[Any], priors: list[GMM | None], notes: list[str]
) -> dict[int, np.ndarray]:
    """Run id -> its latents in the canonical coordinates of its own prior (Thm E.1)."""
    canon: dict[int, np.ndarray] = {}
    for i in ok:
        if priors[i] is None:
            continue
        try:
            transform = canonical_map(priors[i], notes)
        except Exception as err:
            notes.append(f"canonicalize run {i}: {type(err).__name__}: {err}")
            continue
        canon[i] = np.asarray(transform(latents[i]), dtype=np.float64)
    return canon


def _prior_matrices(
    n_runs: int,
    ok: list[int],
    canon: dict[int, np.ndarray],
    priors: list[GMM | None],
    metrics: _Metrics,
) -> dict[str, np.ndarray]:
    """The canonical MCC and distAff,L2 between runs, where the runs have priors."""
    matrices: dict[str, np.ndarray] = {}
    if canon:
        matrices["canonical_mcc"] = _pairwise(
            n_runs,
            ok,
            lambda i, j: (
                metrics.mcc(canon[i], canon[j], "none", f"canonical MCC {i}-{j}")
                if i in canon and j in canon
                else math.nan
            ),
            1.0,
        )
    if any(priors[i] is not None for i in ok):
        matrices["dist_aff"] = _pairwise(
            n_runs,
            ok,
            lambda i, j: (
                metrics.dist_aff(priors[i], priors[j], f"distAff {i}-{j}")
                if priors[i] is not None and priors[j] is not None
                else math.nan
            ),
            0.0,
        )
    return matrices


def _score_to_truth(
    record: RunRecord,
    output: RunOutput,
    z_true: np.ndarray | None,
    prior_true: GMM | None,
    labels: np.ndarray | None,
    canon: dict[int, np.ndarray],
    canon_true: np.ndarray | None,
    priors: list[GMM | None],
    metrics: _Metrics,
) -> None:
    """Fill a successful run's metrics against the true latents, prior and labels."""
    i = output.run_id
    if z_true is not None:
        latents = output.latents
        record.truth["strong_mcc"] = metrics.mcc(z_true, latents, "none", f"strong MCC truth-{i}")
        record.truth["weak_mcc"] = metrics.mcc(z_true, latents, "cca", f"weak MCC truth-{i}")
        if canon_true is not None and i in canon:
            record.truth["canonical_mcc"] = metrics.mcc(
                canon_true, canon[i], "none", f"canonical MCC truth-{i}"
            )
    if prior_true is not None and priors[i] is not None:
        record.truth["dist_aff"] = metrics.dist_aff(priors[i], prior_true, f"distAff truth-{i}")
    if labels is not None and output.predictions is not None:
        record.clustering = metrics.clustering(labels, output.predictions)


def _modes(
    ok: list[int],
    latents: list[Any],
    records: list[RunRecord],
    z_true: np.ndarray | None,
    metrics: _Metrics,
    threshold: float,
    heldout_note: str | None,
) -> ModeReport:
    """The runs grouped into modes, each with its held-out ELBO and weak MCC to the truth."""
    n_runs = len(records)
    to_truth = None
    if z_true is not None:  # weak MCC (affine) of each run to the truth, as the modes use it
        to_truth = [
            metrics.mcc(z_true, latents[i], "affine", f"weak MCC (affine) truth-{i}")
            if i in ok
            else None
            for i in range(n_runs)
        ]
    return find_modes(
        [latents[i] if i in ok else None for i in range(n_runs)],
        [r.heldout_elbo for r in records],
        weak_mcc_to_truth=to_truth,
        threshold=threshold,
        random_state=metrics.seed,
        heldout_note=heldout_note,
    )

"""The outcome of a stability study: each run's record, the result, and its tables.

:class:`RunRecord` is one run (seed, status, time, its metrics against the truth);
:class:`StabilityResult` holds every run, the between-runs matrices, the modes and what is
needed to draw them (latents, predictions, priors), with its summary (the paper's mean and
std over pairs of runs), its JSON form and its ``rich`` tables. Metric names are those of
``PAIR_METRICS``, ``TRUTH_METRICS`` and ``CLUSTER_METRICS``, labelled by
``idvae.metrics.METRIC_LABELS``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idvae._validation import jsonable, write_text_atomic
from idvae.experiments.modes import ModeReport
from idvae.metrics import METRIC_LABELS
from idvae.mixture import GMM

__all__ = [
    "CLUSTER_METRICS",
    "FORMAT_VERSION",
    "PAIR_METRICS",
    "TRUTH_METRICS",
    "RunRecord",
    "StabilityResult",
    "format_stat",
    "scored_rows",
]

FORMAT_VERSION = 1

# name -> label: between runs, to the truth, of the clustering
PAIR_METRICS: dict[str, str] = {
    k: METRIC_LABELS[k] for k in ("strong_mcc", "weak_mcc", "canonical_mcc", "dist_aff")
}
TRUTH_METRICS: dict[str, str] = dict(PAIR_METRICS)
CLUSTER_METRICS: dict[str, str] = {k: METRIC_LABELS[k] for k in ("accuracy", "nmi", "ari")}


@dataclass
class RunRecord:
    """One run of a study: its seed, outcome and its metrics against the truth.

    Attributes:
        run_id: 0-based index.
        seed: the estimator's ``random_state``.
        status: ``"ok"`` or ``"failed"``.
        error: the error of a failed run.
        fit_seconds: wall time of the run.
        truth: metrics against ``z_true`` / ``prior_true`` (keys of ``TRUTH_METRICS``).
        clustering: accuracy, NMI, ARI of ``predict(X)`` against ``labels``.
        resumed: whether the run was read back from an earlier, interrupted study.
        vectorized: whether it was trained in one batched model with other seeds.
        heldout_elbo: the estimator's ``score`` (mean ELBO per sample) on the rows kept
            out of every fit, or None (no split, no ``score``, or a failed run).
    """

    run_id: int
    seed: int
    status: str
    error: str | None = None
    fit_seconds: float = 0.0
    truth: dict[str, float] = field(default_factory=dict)
    clustering: dict[str, float] = field(default_factory=dict)
    resumed: bool = False
    vectorized: bool = False
    heldout_elbo: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def of(cls, output: Any, *, resumed: bool = False, digits: int | None = None) -> RunRecord:
        """The record of a finished run (a ``RunOutput``), before any metric is computed.

        Args:
            output: the run's ``RunOutput``.
            resumed: whether it was read back from an interrupted study.
            digits: round ``fit_seconds`` to this many decimals (None: as measured).
        """
        seconds = float(output.fit_seconds)
        return cls(
            run_id=output.run_id,
            seed=output.seed,
            status=output.status,
            error=output.error,
            fit_seconds=seconds if digits is None else round(seconds, digits),
            resumed=resumed,
            vectorized=output.vectorized,
        )


def scored_rows(values: Any, rows: np.ndarray | None) -> Any:
    """The rows ``rows`` of per-sample ``values`` (all of them when ``rows`` is None; None
    stays None)."""
    return values if values is None or rows is None else np.asarray(values)[rows]


def _mean_std(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, std, and the median and range (the spread over seeds), of the finite values."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return dict.fromkeys(("mean", "std", "median", "min", "max")) | {"n": 0}
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "median": float(np.median(arr)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n": int(arr.size),
    }


def format_stat(stat: Mapping[str, Any] | None, digits: int = 3) -> str:
    """A ``{mean, std}`` summary as ``"mean (std)"``, or "—" when it is empty."""
    if not stat or stat.get("mean") is None:
        return "—"
    return f"{stat['mean']:.{digits}f} ({stat['std']:.{digits}f})"


@dataclass
class StabilityResult:
    """The outcome of :func:`~idvae.experiments.study.stability`.

    Attributes:
        runs: one :class:`RunRecord` per run, failed ones included.
        matrices: metric name -> array of shape (n_runs, n_runs) between runs (NaN in the
            rows and columns of failed runs; MCCs have unit diagonal, distAff zero diagonal).
        latents: per run, array of shape (n_samples, latent_dim) of ``transform(X)``, or
            None for a failed run (not part of the JSON; stored in ``DIR/runs/``); of the
            rows ``score_rows`` only when the study scored a subset.
        predictions: per run, array of shape (n_samples,) of ``predict(X)`` or None (the
            same rows as the latents).
        priors: per run, the learned ``prior_`` (``GMM``) or None.
        config: the study's description (estimator, data fingerprint, seeds, options).
        notes: warnings collected while computing metrics (a metric that failed on a pair).
        histories: per run, the estimator's ``history_`` (training curves) or None.
        modes: the runs grouped into modes, with their held-out ELBO and warnings
            (:class:`~idvae.experiments.modes.ModeReport`).
        holdout_rows: int array of the rows of X kept out of every fit, or None (not part of
            the JSON; ``holdout_split`` regenerates it).
        score_rows: int array of the rows of X the latents, predictions and metrics are
            of, or None for all rows (not part of the JSON; ``seeds.score_subset``
            regenerates it).
    """

    runs: list[RunRecord]
    matrices: dict[str, np.ndarray]
    latents: list[np.ndarray | None] = field(default_factory=list, repr=False)
    predictions: list[np.ndarray | None] = field(default_factory=list, repr=False)
    priors: list[GMM | None] = field(default_factory=list, repr=False)
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    histories: list[Any] = field(default_factory=list, repr=False)
    modes: ModeReport | None = None
    holdout_rows: np.ndarray | None = field(default=None, repr=False)
    score_rows: np.ndarray | None = field(default=None, repr=False)

    def scored(self, values: Any) -> Any:
        """Per-sample ``values`` (one row per row of X) cut to the rows the runs were scored
        on, to set beside ``latents``; None stays None."""
        return scored_rows(values, self.score_rows)

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @property
    def n_failed(self) -> int:
        return sum(not r.ok for r in self.runs)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def strong_mcc(self) -> np.ndarray:
        return self.matrices["strong_mcc"]

    @property
    def weak_mcc(self) -> np.ndarray:
        return self.matrices["weak_mcc"]

    @property
    def dist_aff(self) -> np.ndarray | None:
        return self.matrices.get("dist_aff")

    @property
    def canonical_mcc(self) -> np.ndarray | None:
        return self.matrices.get("canonical_mcc")

    def pair_values(self, metric: str) -> np.ndarray:
        """The entries i < j of a between-runs matrix (finite ones only)."""
        matrix = self.matrices[metric]
        iu = np.triu_indices(matrix.shape[0], k=1)
        values = matrix[iu]
        return values[np.isfinite(values)]

    def summary(self) -> dict[str, Any]:
        """Means and standard deviations (population, ddof=0) as the paper's Table 2.

        Returns:
            ``{"n_runs", "n_ok", "n_failed", "between_runs": {metric: {mean, std, median,
            min, max, n}},
            "to_truth": {...}, "clustering": {...}}``; ``n`` counts pairs or runs.
        """
        ok_runs = [r for r in self.runs if r.ok]
        return {
            "n_runs": self.n_runs,
            "n_ok": len(ok_runs),
            "n_failed": self.n_failed,
            "between_runs": {
                name: _mean_std(self.pair_values(name).tolist())
                for name in PAIR_METRICS
                if name in self.matrices
            },
            "to_truth": {
                name: _mean_std([r.truth[name] for r in ok_runs if name in r.truth])
                for name in TRUTH_METRICS
                if any(name in r.truth for r in ok_runs)
            },
            "clustering": {
                name: _mean_std([r.clustering[name] for r in ok_runs if name in r.clustering])
                for name in CLUSTER_METRICS
                if any(name in r.clustering for r in ok_runs)
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything but the latents, as JSON-serialisable data."""
        return {
            "format_version": FORMAT_VERSION,
            "config": jsonable(self.config),
            "summary": self.summary(),
            "runs": [asdict(r) for r in self.runs],
            "matrices": {k: jsonable(v, nonfinite="none") for k, v in self.matrices.items()},
            "modes": None if self.modes is None else self.modes.to_dict(),
            "priors": [None if p is None else p.to_dict() for p in self.priors],
            "notes": list(self.notes),
        }

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """The JSON of :meth:`to_dict`; also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"
        if path is not None:
            write_text_atomic(path, text)
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StabilityResult:
        """Rebuild a result (without latents) from :meth:`to_dict`'s output."""
        runs = [RunRecord(**r) for r in data["runs"]]
        matrices = {
            k: np.array([[np.nan if v is None else v for v in row] for row in m], dtype=float)
            for k, m in data["matrices"].items()
        }
        priors = [None if p is None else GMM.from_dict(p) for p in data.get("priors", [])]
        modes = data.get("modes")
        return cls(
            runs=runs,
            matrices=matrices,
            latents=[None] * len(runs),
            predictions=[None] * len(runs),
            priors=priors,
            config=dict(data.get("config", {})),
            notes=list(data.get("notes", [])),
            modes=None if modes is None else ModeReport.from_dict(modes),
        )

    def table(self, title: str | None = None) -> Any:
        """A ``rich.table.Table``: each metric's mean (std) between runs and to the truth."""
        from rich.table import Table

        summary = self.summary()
        caption = f"{summary['n_ok']} of {summary['n_runs']} runs succeeded"
        if summary["n_failed"]:
            caption += f"; {summary['n_failed']} failed (see runs)"
        table = Table(title=title or "Stability", caption=caption)
        table.add_column("metric")
        table.add_column("between runs, mean (std)", justify="right")
        table.add_column("to truth, mean (std)", justify="right")
        for name, label in PAIR_METRICS.items():
            between = summary["between_runs"].get(name)
            truth = summary["to_truth"].get(name)
            if between is None and truth is None:
                continue
            table.add_row(label, format_stat(between), format_stat(truth))
        for name, label in CLUSTER_METRICS.items():
            if name in summary["clustering"]:
                table.add_row(label, "", format_stat(summary["clustering"][name]))
        return table

    def modes_table(self, title: str | None = None) -> Any:
        """A ``rich.table.Table`` of the modes (size, runs, held-out ELBO, MCC to truth)."""
        if self.modes is None:
            raise ValueError("Expected a result with modes but this one has none")
        return self.modes.table(title)

    def runs_table(self, title: str | None = None) -> Any:
        """A ``rich.table.Table`` listing every run: seed, status, metrics to the truth.

        Errors of failed runs are listed in the caption; times are in :meth:`to_dict`.
        """
        from rich import box
        from rich.table import Table

        table = Table(
            title=title or "Runs",
            caption="→truth: metric to the true latents (canon.: Thm E.1 coordinates)",
            box=box.SIMPLE_HEAD,
            padding=(0, 1, 0, 0),
        )
        table.add_column("run", justify="right", min_width=3)
        table.add_column("seed", justify="right", no_wrap=True, min_width=10)
        table.add_column("status", no_wrap=True, min_width=6)
        truth_names = [n for n in TRUTH_METRICS if any(n in r.truth for r in self.runs)]
        cluster_names = [n for n in CLUSTER_METRICS if any(n in r.clustering for r in self.runs)]
        for name in truth_names + cluster_names:
            table.add_column(_SHORT[name], justify="right", no_wrap=True, min_width=5)
        errors = [f"run {r.run_id} failed: {r.error}" for r in self.runs if not r.ok]
        if errors:
            table.caption = "\n".join([*errors, str(table.caption)])
        for r in self.runs:
            status = "ok" if r.ok else "failed"
            cells = [str(r.run_id), str(r.seed), status]
            cells += [_fmt_value(r.truth.get(n)) for n in truth_names]
            cells += [_fmt_value(r.clustering.get(n)) for n in cluster_names]
            table.add_row(*cells)
        return table


# compact column headers of runs_table
_SHORT = {
    "strong_mcc": "strong\n→truth",
    "weak_mcc": "weak\n→truth",
    "canonical_mcc": "canon.\n→truth",
    "dist_aff": "distAff\n→truth",
    "accuracy": "acc.",
    "nmi": "NMI",
    "ari": "ARI",
}


def _fmt_value(value: float | None) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.3f}"

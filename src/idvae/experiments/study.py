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
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idvae._validation import (
    RandomState,
    atomic_directory,
    atomic_write,
    check_array,
    check_positive_int,
    check_random_state,
    jsonable,
)
from idvae.experiments.executors import (
    ExecutorName,
    RunContext,
    RunOutput,
    execute_runs,
    fit_runs_vectorized,
)
from idvae.experiments.modes import (
    MODE_THRESHOLD,
    ModeReport,
    ModeWarning,
    check_threshold,
    find_modes,
    warn_modes,
)
from idvae.metrics import METRIC_LABELS
from idvae.mixture import GMM

__all__ = [
    "HOLDOUT",
    "MIN_HOLDOUT_SAMPLES",
    "PAIR_METRICS",
    "RunRecord",
    "StabilityResult",
    "StudyStore",
    "derive_seeds",
    "holdout_split",
    "stability",
]

FORMAT_VERSION = 1

# the default fraction of X kept out of every run's fit, and the fewest held-out rows
# for which a held-out ELBO is computed
HOLDOUT = 0.2
MIN_HOLDOUT_SAMPLES = 10

# name -> label: between runs, to the truth, of the clustering
PAIR_METRICS: dict[str, str] = {
    k: METRIC_LABELS[k] for k in ("strong_mcc", "weak_mcc", "canonical_mcc", "dist_aff")
}
TRUTH_METRICS: dict[str, str] = dict(PAIR_METRICS)
CLUSTER_METRICS: dict[str, str] = {k: METRIC_LABELS[k] for k in ("accuracy", "nmi", "ari")}

# stream indices of SeedSequence(random_state) beside the runs' 0, 1, ...
_METRIC_STREAM = 2**31 - 1
_HOLDOUT_STREAM = 2**31 - 2


# --------------------------------------------------------------------------- seeds


def _base_entropy(random_state: RandomState) -> int:
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        check_random_state(int(random_state))  # validates >= 0
        return int(random_state)
    return int(check_random_state(random_state).integers(2**63 - 1))


def derive_seeds(random_state: RandomState, n_runs: int) -> list[int]:
    """The seeds of runs 0..n_runs-1: independent streams of ``SeedSequence(random_state)``.

    Seed i does not depend on ``n_runs``, so a study extended to more runs keeps its first
    runs. An int ``random_state`` gives the same seeds on every machine.
    """
    base = _base_entropy(random_state)
    return [_child_seed(base, i) for i in range(check_positive_int(n_runs, "n_runs"))]


def _child_seed(base: int, index: int) -> int:
    ss = np.random.SeedSequence(entropy=base, spawn_key=(index,))
    return int(ss.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def holdout_split(
    n_samples: int, holdout: float = HOLDOUT, random_state: RandomState = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The rows a study fits on and the rows it keeps out of every fit.

    ``round(holdout * n_samples)`` rows drawn without replacement from a stream of
    ``SeedSequence(random_state)`` of its own (the runs' seeds are not affected); the same
    ``random_state`` gives the same split as ``stability(..., random_state=random_state)``.

    Args:
        n_samples: the rows of X.
        holdout: the fraction kept out, in (0, 1).
        random_state: int, Generator or None.

    Returns:
        ``(fit_rows, holdout_rows)``: sorted, disjoint int arrays covering ``range(n_samples)``.

    Raises:
        ValueError: when fewer than ``MIN_HOLDOUT_SAMPLES`` rows would be held out or fewer
            than 2 left to fit on.
    """
    return _split(
        check_positive_int(n_samples, "n_samples"),
        _check_holdout(holdout),
        _base_entropy(random_state),
    )


def _check_holdout(holdout: float) -> float:
    if isinstance(holdout, bool) or not isinstance(holdout, int | float | np.floating):
        raise TypeError(f"Expected holdout to be a number but got {type(holdout).__name__}")
    if not 0.0 <= float(holdout) < 1.0:
        raise ValueError(f"Expected holdout in [0, 1) but got {holdout}")
    return float(holdout)


def _split(n_samples: int, holdout: float, base: int) -> tuple[np.ndarray, np.ndarray]:
    n_holdout = int(round(holdout * n_samples))
    if n_holdout < MIN_HOLDOUT_SAMPLES or n_samples - n_holdout < 2:
        raise ValueError(
            f"Expected at least {MIN_HOLDOUT_SAMPLES} held-out rows and 2 rows to fit on but "
            f"holdout={holdout:g} of {n_samples} rows keeps out {n_holdout}"
        )
    rng = np.random.default_rng(_child_seed(base, _HOLDOUT_STREAM))
    order = rng.permutation(n_samples)
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])


# --------------------------------------------------------------------------- records


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


def _mean_std(values: Sequence[float]) -> dict[str, float | int | None]:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": int(arr.size)}


def _fmt(stat: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    return f"{stat['mean']:.{digits}f} ({stat['std']:.{digits}f})"


@dataclass
class StabilityResult:
    """The outcome of :func:`stability`.

    Attributes:
        runs: one :class:`RunRecord` per run, failed ones included.
        matrices: metric name -> array of shape (n_runs, n_runs) between runs (NaN in the
            rows and columns of failed runs; MCCs have unit diagonal, distAff zero diagonal).
        latents: per run, array of shape (n_samples, latent_dim) of ``transform(X)``, or
            None for a failed run (not part of the JSON; stored in ``DIR/runs/``).
        predictions: per run, array of shape (n_samples,) of ``predict(X)`` or None.
        priors: per run, the learned ``prior_`` (``GMM``) or None.
        config: the study's description (estimator, data fingerprint, seeds, options).
        notes: warnings collected while computing metrics (a metric that failed on a pair).
        histories: per run, the estimator's ``history_`` (training curves) or None.
        modes: the runs grouped into modes, with their held-out ELBO and warnings
            (:class:`~idvae.experiments.modes.ModeReport`).
        holdout_rows: int array of the rows of X kept out of every fit, or None (not part of
            the JSON; ``holdout_split`` regenerates it).
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
            ``{"n_runs", "n_ok", "n_failed", "between_runs": {metric: {mean, std, n}},
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
            "matrices": {k: _nan_to_none(v) for k, v in self.matrices.items()},
            "modes": None if self.modes is None else self.modes.to_dict(),
            "priors": [None if p is None else p.to_dict() for p in self.priors],
            "notes": list(self.notes),
        }

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """The JSON of :meth:`to_dict`; also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"
        if path is not None:
            with atomic_write(path, "w") as fh:
                fh.write(text)
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
            table.add_row(label, _fmt(between), _fmt(truth))
        for name, label in CLUSTER_METRICS.items():
            if name in summary["clustering"]:
                table.add_row(label, "", _fmt(summary["clustering"][name]))
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


def _nan_to_none(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in matrix]


# --------------------------------------------------------------------------- storage


def _array_digest(x: np.ndarray) -> str:
    arr = np.ascontiguousarray(x)
    digest = hashlib.sha256()
    digest.update(str((arr.dtype.str, arr.shape)).encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def describe_estimator(make_estimator: Callable[[int], Any]) -> dict[str, Any]:
    """A JSON description of what ``make_estimator`` builds (for the study's fingerprint)."""
    if hasattr(make_estimator, "to_dict"):
        return dict(make_estimator.to_dict())
    description: dict[str, Any] = {
        "factory": getattr(make_estimator, "__qualname__", type(make_estimator).__name__)
    }
    try:
        estimator = make_estimator(0)
    except Exception as err:  # reported when the runs fail; the fingerprint stays usable
        description["error"] = f"{type(err).__name__}: {err}"
        return description
    description["class"] = f"{type(estimator).__module__}.{type(estimator).__qualname__}"
    if hasattr(estimator, "get_params"):
        params = {k: v for k, v in estimator.get_params().items() if k != "random_state"}
        description["params"] = {k: _jsonable_or_repr(v) for k, v in sorted(params.items())}
    return description


def _jsonable_or_repr(value: Any) -> Any:
    try:
        return jsonable(value)
    except TypeError:
        return repr(value)


def _kwargs_digest(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(kwargs.items()):
        if hasattr(value, "shape") or isinstance(value, list | tuple):
            out[key] = _array_digest(np.asarray(value))
        else:
            out[key] = _jsonable_or_repr(value)
    return out


class StudyStore:
    """The on-disk layout of a study: ``DIR/study.json`` and ``DIR/runs/<id>/``.

    Each finished run is one directory written atomically: ``result.json`` (seed, status,
    error, time, prior, held-out ELBO), ``latents.npy``, ``predictions.npy`` and ``model/``
    (the estimator's ``save``). A study interrupted at any moment is continued with
    ``resume=True``: finished runs are read back, failed and missing ones are run again.
    ``study.json`` holds the study's fingerprint; resuming into a directory of another study
    is refused.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def study_file(self) -> Path:
        return self.root / "study.json"

    def run_dir(self, run_id: int) -> Path:
        return self.root / "runs" / f"{run_id:03d}"

    def open(self, config: Mapping[str, Any], *, resume: bool) -> None:
        """Create the study directory, or check that a resumed one holds this study."""
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"Expected {self.root} to be a directory but it is a file")
        if self.study_file.exists():
            stored = json.loads(self.study_file.read_text())
            if not resume:
                raise ValueError(
                    f"Expected a new directory but {self.root} already holds a study; "
                    "pass resume=True (--resume) to continue it or choose another directory"
                )
            differing = sorted(
                key
                for key in set(stored.get("fingerprint", {})) | set(config["fingerprint"])
                if stored.get("fingerprint", {}).get(key) != config["fingerprint"].get(key)
            )
            if differing:
                raise ValueError(
                    f"Expected {self.root} to hold the same study to resume but it holds "
                    f"another one (differs in: {', '.join(differing)})"
                )
        elif self.root.exists() and any(
            p.name not in ("runs",) and not p.name.startswith(".") for p in self.root.iterdir()
        ):
            if not resume:
                raise ValueError(
                    f"Expected a new or empty directory but {self.root} is not empty and holds "
                    "no study"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.study_file, "w") as fh:
            json.dump(jsonable(dict(config)), fh, indent=2)
            fh.write("\n")

    def finished(self, run_id: int, seed: int) -> RunOutput | None:
        """The stored output of a successful run, or None when it must be (re)run."""
        path = self.run_dir(run_id)
        result_file = path / "result.json"
        if not result_file.exists():
            return None
        try:
            data = json.loads(result_file.read_text())
        except (OSError, ValueError):
            return None
        if data.get("status") != "ok" or int(data.get("seed", -1)) != seed:
            return None
        latents = np.load(path / "latents.npy", allow_pickle=False)
        predictions_file = path / "predictions.npy"
        predictions = (
            np.load(predictions_file, allow_pickle=False) if predictions_file.exists() else None
        )
        return RunOutput(
            run_id=run_id,
            seed=seed,
            status="ok",
            fit_seconds=float(data.get("fit_seconds", 0.0)),
            latents=latents,
            predictions=predictions,
            prior=data.get("prior"),
            history=data.get("history"),
            vectorized=bool(data.get("vectorized", False)),
            heldout_elbo=data.get("heldout_elbo"),
            heldout_error=data.get("heldout_error"),
        )

    def write(self, output: RunOutput) -> None:
        """Write one run's directory atomically (replacing an earlier failed attempt)."""
        with atomic_directory(self.run_dir(output.run_id)) as tmp:
            result = {
                "run_id": output.run_id,
                "seed": output.seed,
                "status": output.status,
                "error": output.error,
                "traceback": output.traceback,
                "fit_seconds": output.fit_seconds,
                "prior": output.prior,
                "history": output.history,
                "vectorized": output.vectorized,
                "heldout_elbo": output.heldout_elbo,
                "heldout_error": output.heldout_error,
            }
            (tmp / "result.json").write_text(json.dumps(result, indent=2) + "\n")
            if output.latents is not None:
                np.save(tmp / "latents.npy", output.latents, allow_pickle=False)
            if output.predictions is not None:
                np.save(tmp / "predictions.npy", output.predictions, allow_pickle=False)
            for rel, payload in output.model_files.items():
                target = tmp / "model" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(payload)


# --------------------------------------------------------------------------- metrics


class _Metrics:
    """Thin wrappers around ``idvae.metrics`` / ``idvae.identify`` that record failures."""

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
    n_runs = len(outputs)
    ok = [o.run_id for o in outputs if o.status == "ok" and o.latents is not None]
    latents = [o.latents for o in outputs]
    priors: list[GMM | None] = []
    for o in outputs:
        try:
            priors.append(GMM.from_dict(o.prior) if o.prior is not None else None)
        except ValueError as err:
            notes.append(f"run {o.run_id} prior_: {err}")
            priors.append(None)

    matrices = {
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

    canon_true = None
    if z_true is not None and prior_true is not None and canon:
        try:
            canon_true = np.asarray(canonical_map(prior_true, notes)(z_true), dtype=np.float64)
        except Exception as err:
            notes.append(f"canonicalize truth: {type(err).__name__}: {err}")

    records: list[RunRecord] = []
    for o in outputs:
        record = RunRecord(
            run_id=o.run_id,
            seed=o.seed,
            status=o.status,
            error=o.error,
            fit_seconds=round(float(o.fit_seconds), 3),
            resumed=o.run_id in resumed,
            vectorized=o.vectorized,
        )
        i = o.run_id
        if o.heldout_error is not None:
            notes.append(f"run {i} held-out score: {o.heldout_error}")
        if i in ok:
            record.heldout_elbo = o.heldout_elbo
            if z_true is not None:
                record.truth["strong_mcc"] = metrics.mcc(
                    z_true, latents[i], "none", f"strong MCC truth-{i}"
                )
                record.truth["weak_mcc"] = metrics.mcc(
                    z_true, latents[i], "cca", f"weak MCC truth-{i}"
                )
                if canon_true is not None and i in canon:
                    record.truth["canonical_mcc"] = metrics.mcc(
                        canon_true, canon[i], "none", f"canonical MCC truth-{i}"
                    )
            if prior_true is not None and priors[i] is not None:
                record.truth["dist_aff"] = metrics.dist_aff(
                    priors[i], prior_true, f"distAff truth-{i}"
                )
            if labels is not None and o.predictions is not None:
                record.clustering = metrics.clustering(labels, o.predictions)
        records.append(record)

    to_truth = None
    if z_true is not None:  # weak MCC (affine) of each run to the truth, as the modes use it
        to_truth = [
            metrics.mcc(z_true, latents[i], "affine", f"weak MCC (affine) truth-{i}")
            if i in ok
            else None
            for i in range(n_runs)
        ]
    modes = find_modes(
        [latents[i] if i in ok else None for i in range(n_runs)],
        [r.heldout_elbo for r in records],
        weak_mcc_to_truth=to_truth,
        threshold=mode_threshold,
        random_state=metric_seed,
        heldout_note=heldout_note,
    )
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


# --------------------------------------------------------------------------- the study


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
) -> StabilityResult:
    """Fit ``n_runs`` seeds of one model and measure how alike their latent spaces are.

    Every run is fitted on the same rows of X; the rows kept out (``holdout``) give each
    run's held-out ELBO, and the runs are grouped into modes of runs that match up to an
    affine map (:func:`idvae.experiments.modes.find_modes`). Agreement between runs is not
    recovery: a ``ModeWarning`` is issued when the runs agree but a run outside the largest
    mode reached a higher held-out ELBO, and when the modes disagree.

    Args:
        make_estimator: seed -> an unfitted estimator with ``fit(X)``, ``transform(X)`` and
            optionally ``predict``, ``prior_`` (an ``idvae.GMM``) and ``save(dir)``. Must be
            picklable for ``jobs > 1`` or Ray: use :class:`~idvae.experiments.EstimatorSpec`
            or a module-level function.
        X: array of shape (n_samples, n_features), the data; every run is fitted on the
            same rows of it (all but the held-out ones) and transforms all of it.
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
    x = check_array(X, "X", min_samples=2, dtype=np.float32 if _is_float32(X) else np.float64)
    n_runs = check_positive_int(n_runs, "n_runs")
    jobs = check_positive_int(jobs, "jobs")
    if executor not in ("local", "ray"):
        raise ValueError(f"Expected executor 'local' or 'ray' but got {executor!r}")
    if executor == "local" and address is not None:
        raise ValueError(f"Expected no address with executor='local' but got {address!r}")
    if resume and out is None:
        raise ValueError("Expected an out directory with resume=True but got out=None")
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
    fit_kwargs = dict(fit_kwargs or {})
    transform_kwargs = dict(transform_kwargs or {})
    holdout = _check_holdout(holdout)
    try:
        mode_threshold = check_threshold(mode_threshold)
    except (TypeError, ValueError) as err:
        raise type(err)(str(err).replace("threshold", "mode_threshold", 1)) from None

    base = _base_entropy(random_state)
    seeds = [_child_seed(base, i) for i in range(n_runs)]
    try:  # a factory that cannot build an estimator is the caller's error, not n failures
        make_estimator(seeds[0])
    except Exception as err:
        raise ValueError(
            f"Expected make_estimator(seed) to build an estimator but it raised "
            f"{type(err).__name__}: {err}"
        ) from None
    metric_seed = _child_seed(base, _METRIC_STREAM)
    holdout_rows, heldout_note = _holdout_rows(x.shape[0], holdout, base)
    fingerprint = {
        "estimator": describe_estimator(make_estimator),
        "data": _array_digest(x),
        "random_state": base,
        "fit_kwargs": _kwargs_digest(fit_kwargs),
        "transform_kwargs": _kwargs_digest(transform_kwargs),
    }
    if holdout_rows is not None:  # absent when every run fits all of X, as before splits
        fingerprint["holdout"] = {"fraction": holdout, "n_holdout": int(holdout_rows.size)}
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "n_runs": n_runs,
        "seeds": seeds,
        "n_samples": int(x.shape[0]),
        "n_features": int(x.shape[1]),
        "executor": executor,
        "jobs": jobs,
        "has_truth": z is not None,
        "has_prior_truth": prior_true is not None,
        "has_labels": y is not None,
        "holdout": {
            "fraction": holdout,
            "n_holdout": 0 if holdout_rows is None else int(holdout_rows.size),
            "n_fit": int(x.shape[0] - (0 if holdout_rows is None else holdout_rows.size)),
            "note": heldout_note,
        },
        "mode_threshold": float(mode_threshold),
    }

    store = StudyStore(out) if out is not None else None
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

    context = RunContext(
        make_estimator=make_estimator,
        x=x,
        fit_kwargs=fit_kwargs,
        transform_kwargs=transform_kwargs,
        save_models=save_models and store is not None,
        holdout_rows=holdout_rows,
    )
    tasks = [(i, s) for i, s in enumerate(seeds) if i not in outputs]
    notes: list[str] = []
    finished: Iterable[RunOutput] | None = None
    if vectorize and executor == "local" and jobs == 1 and len(tasks) > 1:
        finished = fit_runs_vectorized(context, tasks, notes)
    if finished is None:
        finished = execute_runs(context, tasks, executor=executor, jobs=jobs, address=address)
    for output in finished:
        if store is not None:
            store.write(output)
        output.model_files = {}
        outputs[output.run_id] = output
        if progress is not None:
            progress(
                RunRecord(
                    run_id=output.run_id,
                    seed=output.seed,
                    status=output.status,
                    error=output.error,
                    fit_seconds=output.fit_seconds,
                    vectorized=output.vectorized,
                )
            )

    ordered = [outputs[i] for i in range(n_runs)]
    for output in ordered:
        if output.status != "ok":
            warnings.warn(
                f"run {output.run_id} (seed {output.seed}) failed: {output.error}",
                RuntimeWarning,
                stacklevel=2,
            )
    result = compute_result(
        ordered,
        z_true=z,
        prior_true=prior_true,
        labels=y,
        metric_seed=metric_seed,
        config=config,
        resumed=resumed,
        mode_threshold=float(mode_threshold),
        heldout_note=heldout_note,
    )
    result.notes[:0] = notes
    result.holdout_rows = holdout_rows
    if store is not None:
        result.to_json(store.root / "stability.json")
    if result.modes is not None:
        warn_modes(result.modes, stacklevel=2)
    return result


def _holdout_rows(
    n_samples: int, holdout: float, base: int
) -> tuple[np.ndarray | None, str | None]:
    """The held-out rows, or None and why there are none (a warning when the data are tiny)."""
    if holdout == 0.0:
        return None, "holdout=0: every run was fitted on all of X"
    try:
        _, rows = _split(n_samples, holdout, base)
    except ValueError as err:
        note = f"no held-out split ({err}); every run was fitted on all of X"
        warnings.warn(note, ModeWarning, stacklevel=3)
        return None, note
    return rows, None


def _is_float32(x: Any) -> bool:
    return getattr(x, "dtype", None) == np.float32

"""The paper's experiments (App. J) as runnable configurations: ``idvae reproduce``.

=========  ================================================================================
name       what (App. J)
=========  ================================================================================
table2     Table 2: VaDE on three "random parallelograms" datasets, 5,000 samples, m = 2,
           encoder n-64-512-64-m, decoder m-64-512-512-n, LeakyReLU, 15 pretraining + 20
           VaDE epochs, 5 runs; pairwise strong MCC, weak MCC, distAff,L2.
pinwheel   Fig. 2 / Sec. 4: the same on the pinwheel (m = n = 2, 3 arms).
table3     Table 3: MNIST, MFCVAE (ReLU, LeakyReLU) and iVAE (u = labels, LeakyReLU) on
           Arch1-3, latent dimension 5, 25 components, 10 runs; strong MCC, weak MCC (CCA of
           dimension 5) and, beyond the paper, distAff,L2 between the 25-component priors.
mle        App. J.3.1 / Fig. 1: 50 toy models, exact likelihood, exhaustive grid search
           (delegates to ``idvae.exact.mle_study``).
=========  ================================================================================

Each experiment writes ``DIR/<name>/results.json``, ``results.csv`` (every run, every pair
and the summaries) and ``report.html`` (our numbers beside the paper's, figures inlined);
each of its stability studies keeps its runs in ``DIR/<name>/<study>/runs/`` so an
interrupted reproduction continues with ``resume=True``. ``quick=True`` runs a small
version (fewer samples, runs and epochs) in minutes, for tests and smoke checks; its
numbers are not comparable with the paper's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idvae._validation import (
    check_positive_int,
    csv_text,
    jsonable,
    write_json_atomic,
    write_text_atomic,
)
from idvae.experiments.executors import EstimatorSpec, ExecutorName
from idvae.experiments.study import (
    CLUSTER_METRICS,
    TRUTH_METRICS,
    RunRecord,
    StabilityResult,
    stability,
)
from idvae.metrics import METRIC_LABELS
from idvae.mixture import GMM

__all__ = [
    "EXPERIMENTS",
    "PAPER_PINWHEEL",
    "PAPER_TABLE2",
    "PAPER_TABLE3",
    "Experiment",
    "StudyConfig",
    "StudyData",
    "experiment",
    "reproduce",
]

EXPERIMENTS: tuple[str, ...] = ("table2", "pinwheel", "table3", "mle")

# The paper's numbers, copied from its text: metric -> (mean, std).
# Table 2 (App. J.3.2): "Mean (std) distAff,L2 distance ... and Mean (std) MCC".
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "parallelograms-1": {
        "dist_aff": (0.1542, 0.150),
        "strong_mcc": (0.86, 0.09),
        "weak_mcc": (0.99, 0.003),
    },
    "parallelograms-2": {
        "dist_aff": (0.1231, 0.076),
        "strong_mcc": (0.83, 0.12),
        "weak_mcc": (0.99, 0.003),
    },
    "parallelograms-3": {
        "dist_aff": (0.578, 0.301),
        "strong_mcc": (0.91, 0.08),
        "weak_mcc": (0.99, 0.001),
    },
}
# Sec. 4, "Simulated data": distAff 0.113 (std 0.065) over 20 pairs; weak MCC 0.87 and
# strong MCC 1.0 (as printed; the paper gives no standard deviations for the MCCs).
PAPER_PINWHEEL: dict[str, dict[str, tuple[float, float | None]]] = {
    "pinwheel": {
        "dist_aff": (0.113, 0.065),
        "weak_mcc": (0.87, None),
        "strong_mcc": (1.0, None),
    }
}
# Table 3 (App. J.3.3): strong MCC (std), weak MCC (std) per architecture/model/activation.
PAPER_TABLE3: dict[str, dict[str, tuple[float, float]]] = {
    "arch1-mfcvae-relu": {"strong_mcc": (0.70, 0.07), "weak_mcc": (0.91, 0.05)},
    "arch1-mfcvae-leaky_relu": {"strong_mcc": (0.69, 0.06), "weak_mcc": (0.94, 0.02)},
    "arch1-ivae-leaky_relu": {"strong_mcc": (0.65, 0.07), "weak_mcc": (0.88, 0.07)},
    "arch2-mfcvae-relu": {"strong_mcc": (0.69, 0.07), "weak_mcc": (0.89, 0.08)},
    "arch2-mfcvae-leaky_relu": {"strong_mcc": (0.69, 0.06), "weak_mcc": (0.92, 0.03)},
    "arch2-ivae-leaky_relu": {"strong_mcc": (0.64, 0.07), "weak_mcc": (0.87, 0.04)},
    "arch3-mfcvae-relu": {"strong_mcc": (0.69, 0.07), "weak_mcc": (0.86, 0.08)},
    "arch3-mfcvae-leaky_relu": {"strong_mcc": (0.70, 0.05), "weak_mcc": (0.92, 0.03)},
    "arch3-ivae-leaky_relu": {"strong_mcc": (0.67, 0.06), "weak_mcc": (0.87, 0.05)},
}
PAPER_MLE = "In all 50 simulations the truth was the unique global minimiser (App. J.3.1)"


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class StudyData:
    """The data of one study and the truth behind it, when known.

    Attributes:
        x: array of shape (n_samples, n_features).
        z_true: array of shape (n_samples, d), the true latent points, or None.
        prior_true: the true law of Z, or None.
        labels: array of shape (n_samples,), the true clusters, or None.
        fit_kwargs: extra keyword arguments of ``fit`` (iVAE's u).
        transform_kwargs: extra keyword arguments of ``transform`` (iVAE's u).
        description: how the data were made (JSON).
    """

    x: np.ndarray
    z_true: np.ndarray | None = None
    prior_true: GMM | None = None
    labels: np.ndarray | None = None
    fit_kwargs: Mapping[str, Any] = field(default_factory=dict)
    transform_kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyConfig:
    """One stability study of an experiment: a model on a dataset, fitted ``n_runs`` times.

    Attributes:
        key: a directory-safe name (``"parallelograms-1"``).
        title: the name shown in reports (``"Random parallelograms #1"``).
        estimator: the model and its parameters.
        load: loads the :class:`StudyData` (called in the driver only).
        paper: the paper's numbers for this study, metric -> (mean, std).
        group: a heading to group studies under in reports (e.g. ``"Arch1"``).
    """

    key: str
    title: str
    estimator: EstimatorSpec
    load: Callable[[], StudyData]
    paper: Mapping[str, tuple[float, float | None]] = field(default_factory=dict)
    group: str = ""


@dataclass(frozen=True)
class Experiment:
    """A named experiment of App. J: its studies and the number of runs of each."""

    name: str
    title: str
    studies: tuple[StudyConfig, ...]
    n_runs: int
    quick: bool
    notes: str = ""


def _vade_params(quick: bool, n_features: int, *, paper_faithful: bool = False) -> dict[str, Any]:
    """VaDE of App. J.3.2: enc n-64-512-64-m, dec m-64-512-512-n, LeakyReLU, 15 + 20 epochs.

    The architecture and the 15 pretraining + 20 VaDE epochs are the paper's. Two settings
    differ from VaDE's defaults (``paper_faithful=False``, the default here):

    * ``noise_variance=0.001`` (fixed, in the units of the internally standardised x) instead
      of a learned noise variance. The data's noise (std 0.05 on coordinates of std ~1.5-2)
      is about 0.001 there. With a learned variance, runs reach a local optimum where a
      cluster's spread in one direction is explained as observation noise: its latents
      collapse onto a segment, differently in every run (measured on parallelograms-2, 5
      runs: affine R^2 between runs 0.83, weak MCC 0.86, distAff 0.43). A fixed-scale
      reconstruction loss is also what VaDE's reference implementations optimise.
    * ``covariance_type="full"``: the clusters are rotated parallelograms, which a
      diagonal-covariance component cannot follow, so runs disagreed on the prior (distAff
      0.23 with the fixed noise and diagonal covariances, 0.13 with full ones).

    ``paper_faithful=True`` gives the configuration with VaDE's defaults for both.
    """
    del n_features
    params: dict[str, Any] = {
        "latent_dim": 2,
        "n_components": 3,
        "encoder_sizes": [64, 512, 64],
        "decoder_sizes": [64, 512, 512],
        "activation": "leaky_relu",
        "pretrain_epochs": 15,
        "epochs": 20,
    }
    if not paper_faithful:
        params.update(noise_variance=0.001, covariance_type="full")
    if quick:
        params.update(pretrain_epochs=2, epochs=3, encoder_sizes=[32, 64, 32])
        params.update(decoder_sizes=[32, 64, 64])
    return params


def _parallelogram_loader(index: int, n_samples: int) -> Callable[[], StudyData]:
    def load() -> StudyData:
        from idvae.datasets import parallelograms

        data = parallelograms(n_samples, 3, random_state=index)
        return StudyData(
            x=data.x,
            z_true=data.points,
            labels=data.labels,
            description={
                "dataset": "parallelograms",
                "n_samples": n_samples,
                "n_parallelograms": 3,
                "random_state": index,
            },
        )

    return load


def _pinwheel_loader(n_samples: int) -> Callable[[], StudyData]:
    def load() -> StudyData:
        from idvae.datasets import pinwheel

        data = pinwheel(n_samples, 3, random_state=0)
        return StudyData(
            x=data.x,
            z_true=data.points,
            labels=data.labels,
            description={"dataset": "pinwheel", "n_samples": n_samples, "n_classes": 3},
        )

    return load


def _mnist_loader(root: Path, n_samples: int | None, *, aux: bool) -> Callable[[], StudyData]:
    def load() -> StudyData:
        x, labels = load_mnist_all(root)
        if n_samples is not None:
            x, labels = x[:n_samples], labels[:n_samples]
        return StudyData(
            x=x,
            labels=labels,
            # iVAE's u: the digit labels (IVAE one-hot encodes class labels itself); its
            # encoder q(z | x, u) needs u in transform too
            fit_kwargs={"u": labels} if aux else {},
            transform_kwargs={"u": labels} if aux else {},
            description={"dataset": "mnist", "n_samples": int(x.shape[0]), "root": str(root)},
        )

    return load


def load_mnist_all(root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 MNIST images (train then test) as float32 in [0, 1], and their labels."""
    from idvae.datasets import load_mnist_combined

    return load_mnist_combined(root)


def check_mnist_root(root: str | Path | None) -> Path:
    """The MNIST directory, or a ValueError saying what is missing."""
    if root is None:
        raise ValueError(
            "Expected --mnist-root PATH (a directory with the four MNIST IDX files) for "
            "table3 but got none"
        )
    path = Path(root)
    if not path.is_dir():
        raise ValueError(f"Expected an MNIST directory at {path} but it does not exist")
    names = [p.name for p in path.iterdir()]
    wanted = ("train-images", "train-labels", "t10k-images", "t10k-labels")
    missing = [w for w in wanted if not any(n.startswith(w) for n in names)]
    if missing:
        raise ValueError(
            f"Expected the MNIST IDX files in {path} but {', '.join(missing)} are missing"
        )
    return path


def _mfcvae_params(arch: str, activation: str, quick: bool) -> dict[str, Any]:
    """MFCVAE of Table 3: one facet of dimension 5 with 25 components (App. J.3.3 reads "latent
    dimension 5 and 25 components"), Bernoulli likelihood for the [0, 1] pixels."""
    from idvae.nets import architecture

    enc, dec = architecture(arch)
    params: dict[str, Any] = {
        "facet_dims": [5],
        "facet_components": [25],
        "encoder_sizes": list(enc),
        "decoder_sizes": list(dec),
        "activation": activation,
        "likelihood": "bernoulli",
    }
    params.update(_epochs(quick))
    return params


def _ivae_params(arch: str, quick: bool) -> dict[str, Any]:
    from idvae.nets import architecture

    enc, dec = architecture(arch)
    params: dict[str, Any] = {
        "latent_dim": 5,
        "encoder_sizes": list(enc),
        "decoder_sizes": list(dec),
        "activation": "leaky_relu",
        "likelihood": "bernoulli",
    }
    params.update(_epochs(quick, pretrain=False))
    return params


def _epochs(quick: bool, *, pretrain: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"epochs": 2 if quick else 50}
    if pretrain:
        out["pretrain_epochs"] = 1 if quick else 10
    return out


def experiment(
    name: str,
    *,
    quick: bool = False,
    n_runs: int | None = None,
    mnist_root: str | Path | None = None,
) -> Experiment:
    """The configuration of an experiment of App. J.

    Args:
        name: ``"table2"``, ``"pinwheel"``, ``"table3"`` or ``"mle"``.
        quick: a small version (minutes on a laptop); numbers not comparable to the paper.
        n_runs: runs per study (default: the paper's, 5 for table2/pinwheel and 10 for
            table3; 2 when quick).
        mnist_root: the MNIST directory (table3 only).
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"Expected an experiment in {list(EXPERIMENTS)} or 'all' but got {name!r}")
    if n_runs is not None:
        n_runs = check_positive_int(n_runs, "runs")
    if name == "table2":
        n_samples = 600 if quick else 5000
        studies = tuple(
            StudyConfig(
                key=f"parallelograms-{i}",
                title=f"Random parallelograms #{i}",
                estimator=EstimatorSpec("vade", _vade_params(quick, 2)),
                load=_parallelogram_loader(i, n_samples),
                paper=PAPER_TABLE2[f"parallelograms-{i}"],
            )
            for i in (1, 2, 3)
        )
        return Experiment(
            name,
            "Table 2: VaDE on random parallelograms",
            studies,
            n_runs or (2 if quick else 5),
            quick,
            "App. J.3.2: 5,000 samples, m = 2, 15 pretraining + 20 VaDE epochs, 5 runs.",
        )
    if name == "pinwheel":
        n_samples = 600 if quick else 5000
        study = StudyConfig(
            key="pinwheel",
            title="Pinwheel, 3 arms",
            estimator=EstimatorSpec("vade", _vade_params(quick, 2)),
            load=_pinwheel_loader(n_samples),
            paper=PAPER_PINWHEEL["pinwheel"],
        )
        return Experiment(
            name,
            "Pinwheel (Fig. 2): VaDE, 5 runs",
            (study,),
            n_runs or (2 if quick else 5),
            quick,
            "Sec. 4 and App. J.3.2: 5,000 samples, m = n = 2, the architecture of Table 2.",
        )
    if name == "table3":
        root = check_mnist_root(mnist_root)
        n_samples = 1000 if quick else None
        archs = ("arch1",) if quick else ("arch1", "arch2", "arch3")
        studies_list: list[StudyConfig] = []
        for arch in archs:
            group = arch.capitalize()
            for activation in ("relu", "leaky_relu"):
                studies_list.append(
                    StudyConfig(
                        key=f"{arch}-mfcvae-{activation}",
                        title=f"{group} MFCVAE {_activation_label(activation)}",
                        estimator=EstimatorSpec("mfcvae", _mfcvae_params(arch, activation, quick)),
                        load=_mnist_loader(root, n_samples, aux=False),
                        paper=PAPER_TABLE3[f"{arch}-mfcvae-{activation}"],
                        group=group,
                    )
                )
            studies_list.append(
                StudyConfig(
                    key=f"{arch}-ivae-leaky_relu",
                    title=f"{group} iVAE LeakyReLU (u = labels)",
                    estimator=EstimatorSpec("ivae", _ivae_params(arch, quick)),
                    load=_mnist_loader(root, n_samples, aux=True),
                    paper=PAPER_TABLE3[f"{arch}-ivae-leaky_relu"],
                    group=group,
                )
            )
        return Experiment(
            name,
            "Table 3: MFCVAE vs iVAE on MNIST",
            tuple(studies_list),
            n_runs or (2 if quick else 10),
            quick,
            "App. J.3.3: latent dimension 5, 25 components, 10 runs, Arch1-3; iVAE sees the "
            "digit labels as u.",
        )
    return Experiment(name, "Maximum likelihood (Fig. 1, App. J.3.1)", (), 1, quick)


def _activation_label(activation: str) -> str:
    return {"relu": "ReLU", "leaky_relu": "LeakyReLU"}.get(activation, activation)


# --------------------------------------------------------------------------- running


def _stage_dir(out: str | Path, name: str) -> Path:
    return Path(out) / name


def check_can_write(out: str | Path, names: Sequence[str], *, resume: bool) -> None:
    """Refuse up front to overwrite an earlier reproduction unless resuming."""
    for name in names:
        target = _stage_dir(out, name)
        if resume or not target.exists():
            continue
        if any(target.iterdir()):
            raise ValueError(
                f"Expected a new output directory but {target} already holds results; pass "
                "--resume to continue it or choose another --out"
            )


def reproduce(
    name: str,
    out: str | Path,
    *,
    quick: bool = False,
    n_runs: int | None = None,
    executor: ExecutorName = "local",
    jobs: int = 1,
    address: str | None = None,
    resume: bool = False,
    mnist_root: str | Path | None = None,
    random_state: int = 0,
    vectorize: bool = True,
    progress: Callable[[str, RunRecord], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run one experiment of App. J (or ``"all"``) and write its results and report.

    Args:
        name: ``"table2"``, ``"pinwheel"``, ``"table3"``, ``"mle"`` or ``"all"``.
        out: the output directory; experiment ``e`` writes to ``out/e/``.
        quick: the small version (minutes), for tests.
        n_runs: runs per study (default: the paper's).
        executor, jobs, address: where runs are fitted (see :func:`idvae.stability`).
        resume: continue an interrupted reproduction in ``out``.
        mnist_root: the MNIST directory (table3).
        random_state: seed of every study (run seeds derive from it).
        vectorize: train each study's seeds as one batched model where it applies.
        progress: called with (study key, run record) as each run finishes.

    Returns:
        experiment name -> the content of its ``results.json``.
    """
    names = list(EXPERIMENTS) if name == "all" else [name]
    # Check everything that can be checked before any long computation starts.
    experiments = [experiment(n, quick=quick, n_runs=n_runs, mnist_root=mnist_root) for n in names]
    check_can_write(out, names, resume=resume)
    results: dict[str, dict[str, Any]] = {}
    for exp in experiments:
        if exp.name == "mle":
            results[exp.name] = _run_mle(exp, _stage_dir(out, exp.name), random_state)
        else:
            results[exp.name] = _run_experiment(
                exp,
                _stage_dir(out, exp.name),
                executor=executor,
                jobs=jobs,
                address=address,
                resume=resume,
                random_state=random_state,
                vectorize=vectorize,
                progress=progress,
            )
    return results


def _run_experiment(
    exp: Experiment,
    target: Path,
    *,
    executor: ExecutorName,
    jobs: int,
    address: str | None,
    resume: bool,
    random_state: int,
    vectorize: bool,
    progress: Callable[[str, RunRecord], None] | None,
) -> dict[str, Any]:
    start = time.perf_counter()
    studies: dict[str, dict[str, Any]] = {}
    study_results: dict[str, tuple[StudyConfig, StudyData, StabilityResult]] = {}
    for study in exp.studies:
        data = study.load()

        def report_run(record: RunRecord, key: str = study.key) -> None:
            if progress is not None:
                progress(key, record)

        result = stability(
            study.estimator,
            data.x,
            n_runs=exp.n_runs,
            random_state=random_state,
            z_true=data.z_true,
            prior_true=data.prior_true,
            labels=data.labels,
            executor=executor,
            jobs=jobs,
            address=address,
            out=target / study.key,
            resume=resume,
            fit_kwargs=data.fit_kwargs,
            transform_kwargs=data.transform_kwargs,
            vectorize=vectorize,
            progress=report_run,
        )
        study_results[study.key] = (study, data, result)
        studies[study.key] = {
            "title": study.title,
            "group": study.group,
            "estimator": study.estimator.to_dict(),
            "data": jsonable(dict(data.description)),
            "paper": {k: list(v) for k, v in study.paper.items()},
            "result": result.to_dict(),
        }
    payload = {
        "experiment": exp.name,
        "title": exp.title,
        "quick": exp.quick,
        "n_runs": exp.n_runs,
        "notes": exp.notes,
        "random_state": random_state,
        "wall_seconds": round(time.perf_counter() - start, 2),
        "studies": studies,
    }
    write_json_atomic(target / "results.json", payload)
    write_text_atomic(target / "results.csv", stability_csv(exp.name, study_results))
    write_experiment_report(target / "report.html", exp, study_results, payload)
    return payload


def _run_mle(exp: Experiment, target: Path, random_state: int) -> dict[str, Any]:
    from idvae import exact

    start = time.perf_counter()
    if exp.quick:
        study = exact.mle_study(5, random_state=random_state, grid=exact.quick_grid)
    else:
        study = exact.mle_study(50, random_state=random_state)
    data = study.to_dict()
    payload = {
        "experiment": "mle",
        "title": exp.title,
        "quick": exp.quick,
        "random_state": random_state,
        "wall_seconds": round(time.perf_counter() - start, 2),
        "paper": PAPER_MLE,
        "summary": data["summary"],
        "simulations": data["simulations"],
    }
    write_json_atomic(target / "results.json", payload)
    write_text_atomic(target / "results.csv", mle_csv(data))
    write_mle_report(target / "report.html", exp, payload, _mle_profiles(study, 3))
    return payload


def _mle_profiles(study: Any, count: int) -> list[tuple[bytes, str]]:
    """Fig. 1: NLL profiles of the first ``count`` truths (PNG bytes, caption)."""
    from idvae import exact
    from idvae.report import profiles_figure

    figures = []
    for i, truth in enumerate(study.truths[:count]):
        try:
            png = profiles_figure(exact.profile_curves(truth), n_cols=4, title=f"simulation {i}")
        except (ValueError, TypeError, FloatingPointError):
            continue
        figures.append((png, f"Simulation {i}: NLL along each parameter, others at the truth "
                        "(red dashed: truth, blue dotted: minimiser)"))  # fmt: skip
    return figures


# --------------------------------------------------------------------------- CSV

CSV_COLUMNS = (
    "experiment",
    "study",
    "scope",
    "mode",
    "run_a",
    "run_b",
    "seed",
    "metric",
    "value",
    "std",
    "n",
    "paper_mean",
    "paper_std",
    "status",
)


def stability_rows(
    experiment_name: str,
    key: str,
    result: StabilityResult,
    paper: Mapping[str, tuple[float, float | None]] | None = None,
) -> list[dict[str, Any]]:
    """Long-format rows: every run (to truth, clustering), every pair, and the summaries.

    ``scope`` is ``run``, ``pair``, ``summary`` (between runs), ``summary_truth``,
    ``summary_clustering``, ``mode`` (one row per mode and score, its runs in ``status``) or
    ``mode_warning``; failed runs appear with ``status`` and their error.
    """
    paper = paper or {}
    rows: list[dict[str, Any]] = []
    base = {"experiment": experiment_name, "study": key}
    for run in result.runs:
        if not run.ok:
            rows.append(
                {**base, "scope": "run", "run_a": run.run_id, "seed": run.seed,
                 "metric": "error", "status": f"failed: {run.error}"}
            )  # fmt: skip
            continue
        rows.append(
            {**base, "scope": "run", "run_a": run.run_id, "seed": run.seed,
             "metric": "fit_seconds", "value": run.fit_seconds, "status": "ok"}
        )  # fmt: skip
        if run.heldout_elbo is not None:
            rows.append(
                {**base, "scope": "run", "run_a": run.run_id, "seed": run.seed,
                 "metric": "heldout_elbo", "value": run.heldout_elbo, "status": "ok"}
            )  # fmt: skip
        for name, value in {**run.truth, **run.clustering}.items():
            metric = f"{name}_to_truth" if name in run.truth else name
            rows.append(
                {**base, "scope": "run", "run_a": run.run_id, "seed": run.seed,
                 "metric": metric, "value": value, "status": "ok"}
            )  # fmt: skip
    for name, matrix in result.matrices.items():
        n = matrix.shape[0]
        for i in range(n):
            for j in range(i + 1, n):
                if np.isfinite(matrix[i, j]):
                    rows.append(
                        {**base, "scope": "pair", "run_a": i, "run_b": j, "metric": name,
                         "value": float(matrix[i, j])}
                    )  # fmt: skip
    summary = result.summary()
    for scope, block, suffix in (
        ("summary", summary["between_runs"], ""),
        ("summary_truth", summary["to_truth"], "_to_truth"),
        ("summary_clustering", summary["clustering"], ""),
    ):
        for name, stat in block.items():
            paper_value = paper.get(name) if scope == "summary" else None
            rows.append(
                {**base, "scope": scope, "metric": f"{name}{suffix}", "value": stat["mean"],
                 "std": stat["std"], "n": stat["n"],
                 "paper_mean": paper_value[0] if paper_value else None,
                 "paper_std": paper_value[1] if paper_value else None}
            )  # fmt: skip
    rows.append(
        {**base, "scope": "summary", "metric": "n_failed", "value": summary["n_failed"],
         "n": summary["n_runs"]}
    )  # fmt: skip
    if result.modes is not None:
        rows.extend({**base, **row} for row in result.modes.rows())
    return rows


def results_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """``stability_rows`` as the CSV text of ``results.csv`` (columns ``CSV_COLUMNS``)."""
    return csv_text(rows, CSV_COLUMNS)


def stability_csv(
    experiment_name: str, studies: Mapping[str, tuple[StudyConfig, StudyData, StabilityResult]]
) -> str:
    rows: list[dict[str, Any]] = []
    for key, (study, _, result) in studies.items():
        rows.extend(stability_rows(experiment_name, key, result, study.paper))
    return results_csv(rows)


def mle_csv(data: Mapping[str, Any]) -> str:
    sims = data["simulations"]
    columns = sorted({k for s in sims for k, v in s.items() if not isinstance(v, dict | list)})
    rows = [{k: s.get(k) for k in columns} for s in sims]
    summary = {k: v for k, v in data["summary"].items() if not isinstance(v, dict | list)}
    text = csv_text(rows, columns)
    text += "\n" + csv_text([summary], list(summary))
    return text


# --------------------------------------------------------------------------- reports


def _stat_cell(stat: Mapping[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    return f"{stat['mean']:.3f} ({stat['std']:.3f})"


def _paper_cell(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return "—"
    mean, std = value
    return f"{mean:g}" if std is None else f"{mean:g} ({std:g})"


def summary_table_rows(
    studies: Mapping[str, tuple[StudyConfig, StudyData, StabilityResult]],
) -> tuple[list[str], list[list[str]], list[tuple[str, int]]]:
    """Columns, rows and column groups of the ours-vs-paper table."""
    metrics = [m for m in ("dist_aff", "strong_mcc", "weak_mcc") if any(
        m in r.matrices for _, _, r in studies.values())]  # fmt: skip
    columns = ["study", "runs (failed)"]
    groups: list[tuple[str, int]] = [("", 2)]
    for m in metrics:
        columns += ["ours", "paper"]
        groups.append((METRIC_LABELS[m], 2))
    columns += ["ours"]
    groups.append((METRIC_LABELS["canonical_mcc"], 1))
    rows = []
    for study, _, result in studies.values():
        summary = result.summary()
        row = [study.title, f"{summary['n_runs']} ({summary['n_failed']})"]
        for m in metrics:
            row += [_stat_cell(summary["between_runs"].get(m)), _paper_cell(study.paper.get(m))]
        row.append(_stat_cell(summary["between_runs"].get("canonical_mcc")))
        rows.append(row)
    return columns, rows, groups


def truth_table_rows(
    studies: Mapping[str, tuple[StudyConfig, StudyData, StabilityResult]],
) -> tuple[list[str], list[list[str]]]:
    names = [n for n in TRUTH_METRICS if any(
        n in r.summary()["to_truth"] for _, _, r in studies.values())]  # fmt: skip
    clusters = [n for n in CLUSTER_METRICS if any(
        n in r.summary()["clustering"] for _, _, r in studies.values())]  # fmt: skip
    columns = ["study"] + [f"{METRIC_LABELS[n]} to truth" for n in names]
    columns += [METRIC_LABELS[n] for n in clusters]
    rows = []
    for study, _, result in studies.values():
        s = result.summary()
        rows.append(
            [study.title]
            + [_stat_cell(s["to_truth"].get(n)) for n in names]
            + [_stat_cell(s["clustering"].get(n)) for n in clusters]
        )
    return columns, rows


def _num(value: float | None) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.3f}"


def write_experiment_report(
    path: Path,
    exp: Experiment,
    studies: Mapping[str, tuple[StudyConfig, StudyData, StabilityResult]],
    payload: Mapping[str, Any],
) -> None:
    """``report.html``: ours beside the paper, every run, latent spaces and heatmaps."""
    from idvae.report import (
        Figure,
        Section,
        Table,
        metric_comparison_figure,
        training_curves_figure,
        write_html_report,
    )
    from idvae.report.stability import stability_section

    sections = []
    columns, rows, groups = summary_table_rows(studies)
    intro = (
        f"{exp.notes}\n\nMean (std) over the {exp.n_runs * (exp.n_runs - 1) // 2} pairs of "
        "runs of each study (population std). The canonical strong MCC puts each latent "
        "space in the coordinates of Thm E.1 first (beyond the paper)."
    )
    if exp.quick:
        intro += "\n\nQUICK run: fewer samples, runs and epochs than the paper; not comparable."
    comparison_figures = []
    for metric in ("weak_mcc", "strong_mcc", "dist_aff"):
        values = {
            study.title: result.pair_values(metric).tolist()
            for study, _, result in studies.values()
            if metric in result.matrices and result.pair_values(metric).size
        }
        if not values:  # every study of the experiment lacks this metric (or failed)
            continue
        paper = {
            study.title: study.paper[metric]
            for study, _, _ in studies.values()
            if metric in study.paper
        }
        paper = {k: (v if v[1] is not None else v[0]) for k, v in paper.items() if k in values}
        try:
            png = metric_comparison_figure(
                values, title=METRIC_LABELS[metric], ylabel=metric, paper=paper or None
            )
        except (ValueError, TypeError) as err:  # a figure must not lose the results
            intro += f"\n\n(figure of {metric} not drawn: {err})"
            continue
        comparison_figures.append(
            Figure(
                png,
                f"{METRIC_LABELS[metric]} between runs: ours (dots, mean ± std) and the paper's "
                "(red)",
            )
        )
    sections.append(
        Section(
            exp.title,
            text=intro,
            tables=[Table(columns, rows, column_groups=groups)],
            figures=comparison_figures,
        )
    )
    t_columns, t_rows = truth_table_rows(studies)
    if len(t_columns) > 1:
        sections.append(
            Section(
                "Against the ground truth (beyond the paper)",
                text="Each run's latents against the true latent points and clusters.",
                tables=[Table(t_columns, t_rows)],
            )
        )
    for study, data, result in studies.values():
        paper = {k: _paper_cell(v) for k, v in study.paper.items()}
        text = (
            f"Data: {json.dumps(jsonable(dict(data.description)))}. "
            f"Model: {json.dumps(study.estimator.to_dict())}."
        )
        try:
            section = stability_section(
                result,
                heading=study.title,
                text=text,
                labels=data.labels,
                reference=data.z_true,
                paper=paper or None,
            )
        except (ValueError, TypeError) as err:  # a figure must not lose the results
            section = Section(study.title, text=f"{text}\n\n(section not drawn: {err})")
        images = _image_figures(path.parent / study.key, data, result, study.title)
        if images:
            section = Section(
                section.heading,
                text=section.text,
                tables=section.tables,
                figures=(*section.figures, *images),
            )
        histories = [h for h in result.histories if h]
        if histories:
            try:
                png = training_curves_figure(histories, title=f"{study.title}: training loss")
                section = Section(
                    section.heading,
                    text=section.text,
                    tables=section.tables,
                    figures=(*section.figures, Figure(png, "Training curves of every run")),
                )
            except (ValueError, TypeError):
                pass
        sections.append(section)
    write_html_report(
        path,
        title=exp.title,
        sections=sections,
        metadata={"wall time (s)": payload["wall_seconds"], "quick": exp.quick},
    )


def _image_figures(
    study_dir: Path, data: StudyData, result: StabilityResult, title: str
) -> list[Any]:
    """Figs. 8 and 9 for image data (28 x 28): samples of each learned component and
    reconstructions, from the first successful run's saved model. Empty when not images, no
    saved model, or the model cannot be read back."""
    from idvae.report import Figure, image_grid_figure, interleave_images

    if data.x.shape[1] != 784:
        return []
    ok = [r.run_id for r in result.runs if r.ok]
    if not ok or result.priors[ok[0]] is None:
        return []
    try:
        import torch

        import idvae

        run = ok[0]
        model = idvae.load(study_dir / "runs" / f"{run:03d}" / "model")
        prior = result.priors[run]
        order = np.argsort(-prior.weights)[:10]
        rng = np.random.default_rng(0)
        z = np.concatenate(
            [rng.multivariate_normal(prior.means[k], prior.covariances[k], 8) for k in order]
        )
        with torch.no_grad():
            samples = model.module_.decode(torch.as_tensor(z, dtype=torch.float32)).numpy()
        fig8 = image_grid_figure(
            samples,
            n_cols=8,
            title=f"{title}, run {run + 1}: samples of the 10 heaviest components (Fig. 8)",
            row_labels=[f"c{k} ({prior.weights[k]:.2f})" for k in order],
        )
        figures = [Figure(fig8, "Samples from the learned components, heaviest first (Fig. 8)")]
        clusters = result.predictions[run]
        if clusters is not None:
            sizes = np.bincount(clusters)
            used = [k for k in np.argsort(-sizes) if sizes[k] >= 4][:8]
            idx = np.concatenate([np.flatnonzero(clusters == k)[:4] for k in used])
            with torch.no_grad():
                recon = model.module_.decode(
                    torch.as_tensor(result.latents[run][idx], dtype=torch.float32)
                )
            fig9 = image_grid_figure(
                interleave_images(data.x[idx], recon.numpy()),
                n_cols=8,
                col_group=2,
                title=f"{title}, run {run + 1}: x and x̂, 4 per predicted cluster (Fig. 9)",
                row_labels=[f"cluster {k}" for k in used],
            )
            figures.append(Figure(fig9, "Pairs (x, x̂) for 4 images of each cluster (Fig. 9)"))
    except Exception as err:  # figures are a bonus; the numbers are already saved
        result.notes.append(f"image figures not drawn: {type(err).__name__}: {err}")
        return []
    return figures


def write_mle_report(
    path: Path,
    exp: Experiment,
    payload: Mapping[str, Any],
    profiles: Sequence[tuple[bytes, str]] = (),
) -> None:
    """``report.html`` of the MLE study: counts against the paper's 50 of 50, every truth."""
    from idvae.report import Figure, Section, Table, write_html_report

    summary = payload["summary"]
    rows = [
        ["simulations", summary.get("n_simulations"), 50],
        ["truth is the unique global minimiser (up to equivalence)", summary.get("n_unique"), 50],
        ["truth is a global minimiser", summary.get("n_truth_is_minimizer"), "—"],
        ["weakly injective truths", summary.get("n_weakly_injective"), "—"],
    ]
    sims = payload["simulations"]
    wanted = ("index", "n_components", "truth_injectivity", "truth_is_minimizer",
              "unique_up_to_equivalence", "gap", "reason")  # fmt: skip
    columns = [k for k in wanted if sims and k in sims[0]]
    sim_rows = [[s.get(c) for c in columns] for s in sims]
    figures = [Figure(png, caption) for png, caption in profiles]
    sections = [
        Section(
            exp.title,
            text=f"{PAPER_MLE}.\n\nWall time {payload['wall_seconds']} s"
            + (" (QUICK: 5 truths on a coarse grid)." if exp.quick else "."),
            tables=[Table(["count", "ours", "paper"], rows)],
            figures=figures,
        )
    ]
    if columns:
        sections.append(Section("Every simulation", tables=[Table(columns, sim_rows)]))
    write_html_report(path, title=exp.title, sections=sections)

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

Not the paper's (and not part of ``"all"``): ``table2-defaults`` and ``pinwheel-defaults``
(the same data fitted with VaDE's defaults), and ``vade-mnist`` (VaDE on all 70,000 MNIST
images, 10 seeds trained from scratch with its defaults and with its ELBO pipeline, nothing
selected; VaDE's paper reports 94.46% accuracy for one saved model).

Each experiment writes ``DIR/<name>/results.json``, ``results.csv`` (every run, every pair
and the summaries) and ``report.html`` (our numbers beside the paper's, figures inlined);
each of its stability studies keeps its runs in ``DIR/<name>/<study>/runs/`` so an
interrupted reproduction continues with ``resume=True``. ``quick=True`` runs a small
version (fewer samples, runs and epochs) in minutes, for tests and smoke checks; its
numbers are not comparable with the paper's.

This module runs the experiments and is their public API; what they are made of lives in
modules of their own: the paper's numbers in :mod:`~idvae.experiments.paper`, the
configurations in :mod:`~idvae.experiments.configs` (networks from ``idvae.nets``), MNIST in
:mod:`~idvae.experiments.mnist`, the CSV rows and tables in :mod:`~idvae.experiments.tables`
and the HTML pages in :mod:`~idvae.experiments.html`. Their public names are importable from
here as well.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from idvae._validation import jsonable, write_json_atomic, write_text_atomic
from idvae.experiments.configs import (
    DEFAULTS_VARIANTS,
    EXPERIMENTS,
    Experiment,
    StudyConfig,
    StudyData,
    experiment,
)
from idvae.experiments.executors import ExecutorName
from idvae.experiments.html import mle_profiles, write_experiment_report, write_mle_report
from idvae.experiments.mnist import check_mnist_root, load_mnist_all
from idvae.experiments.paper import PAPER_MLE, PAPER_PINWHEEL, PAPER_TABLE2, PAPER_TABLE3
from idvae.experiments.study import RunRecord, StabilityResult, stability
from idvae.experiments.tables import (
    CSV_COLUMNS,
    mle_csv,
    results_csv,
    stability_csv,
    stability_rows,
    summary_table_rows,
    truth_table_rows,
)

__all__ = [
    "CSV_COLUMNS",
    "DEFAULTS_VARIANTS",
    "EXPERIMENTS",
    "PAPER_MLE",
    "PAPER_PINWHEEL",
    "PAPER_TABLE2",
    "PAPER_TABLE3",
    "Experiment",
    "StudyConfig",
    "StudyData",
    "check_can_write",
    "check_mnist_root",
    "experiment",
    "load_mnist_all",
    "mle_csv",
    "reproduce",
    "results_csv",
    "stability_csv",
    "stability_rows",
    "summary_table_rows",
    "truth_table_rows",
    "write_experiment_report",
    "write_mle_report",
]


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


def _only_studies(experiments: list[Experiment], keys: Sequence[str]) -> Experiment:
    """The one experiment of ``experiments`` cut to the studies ``keys``, or a ValueError."""
    known = [study.key for exp in experiments for study in exp.studies]
    if len(experiments) != 1 or not known:
        raise ValueError(
            f"Expected --studies with one experiment that has studies but got "
            f"{[exp.name for exp in experiments]}"
        )
    unknown = [key for key in keys if key not in known]
    if unknown or not keys:
        raise ValueError(f"Expected studies among {known} but got {list(keys)}")
    (exp,) = experiments
    return replace(exp, studies=tuple(s for s in exp.studies if s.key in keys))


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
    studies: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run one experiment of App. J (or ``"all"``) and write its results and report.

    Args:
        name: ``"table2"``, ``"pinwheel"``, ``"table3"``, ``"mle"`` or ``"all"`` (the
            paper's), or ``"table2-defaults"`` / ``"pinwheel-defaults"`` (the same data fitted
            with VaDE's defaults), or ``"vade-mnist"`` (VaDE's defaults and its ELBO
            pipeline on MNIST, 10 seeds each).
        out: the output directory; experiment ``e`` writes to ``out/e/``.
        quick: the small version (minutes), for tests.
        n_runs: runs per study (default: the paper's).
        executor, jobs, address: where runs are fitted (see :func:`idvae.stability`).
        resume: continue an interrupted reproduction in ``out``.
        mnist_root: the MNIST directory (table3, vade-mnist).
        random_state: seed of every study (run seeds derive from it).
        vectorize: train each study's seeds as one batched model where it applies.
        progress: called with (study key, run record) as each run finishes.
        studies: only these studies (keys) of one experiment, e.g. ``["vade-mnist-elbo"]``
            or table3's ``["arch1-mfcvae-relu"]``: a long experiment in pieces. Each
            study's runs and store are as in the whole experiment (the same seeds), and
            ``results.json`` then holds the studies run.

    Returns:
        experiment name -> the content of its ``results.json``.
    """
    names = list(EXPERIMENTS) if name == "all" else [name]
    # Check everything that can be checked before any long computation starts.
    experiments = [experiment(n, quick=quick, n_runs=n_runs, mnist_root=mnist_root) for n in names]
    if studies is not None:
        experiments = [_only_studies(experiments, studies)]
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
            data,
            n_runs=exp.n_runs,
            random_state=random_state,
            executor=executor,
            jobs=jobs,
            address=address,
            out=target / study.key,
            resume=resume,
            fit_kwargs=data.fit_kwargs,
            transform_kwargs=data.transform_kwargs,
            vectorize=vectorize,
            progress=report_run,
            score_rows=study.score_rows,
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
        "paper_setup": _paper_text(exp.paper_setup),
        "random_state": random_state,
        "wall_seconds": round(time.perf_counter() - start, 2),
        "studies": studies,
    }
    write_json_atomic(target / "results.json", payload)
    write_text_atomic(target / "results.csv", stability_csv(exp.name, study_results))
    write_experiment_report(target / "report.html", exp, study_results, payload)
    return payload


def _paper_text(claim: tuple[str, str] | None) -> str | None:
    """The paper's (where, what) as results.json stores it: "Paper (where): what"."""
    from idvae.report.html import PaperClaim

    return None if claim is None else str(PaperClaim(*claim))


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
        "paper": _paper_text(PAPER_MLE),
        "summary": data["summary"],
        "simulations": data["simulations"],
    }
    write_json_atomic(target / "results.json", payload)
    write_text_atomic(target / "results.csv", mle_csv(data))
    write_mle_report(target / "report.html", exp, payload, mle_profiles(study, 3))
    return payload

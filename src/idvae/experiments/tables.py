"""The numbers of a reproduction as rows: ``results.csv`` and the tables of ``report.html``.

``stability_rows`` flattens a study's :class:`~idvae.experiments.results.StabilityResult` into
long-format rows (one per run and metric, per pair, per summary, per mode) written as CSV by
the one CSV writer, :func:`idvae._validation.csv_text`; ``summary_table_rows`` and
``truth_table_rows`` are the ours-vs-paper tables of the report, labelled with
``idvae.metrics.METRIC_LABELS``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from idvae._validation import csv_text
from idvae.experiments.configs import StudyConfig, StudyData
from idvae.experiments.results import CLUSTER_METRICS, TRUTH_METRICS, StabilityResult, format_stat
from idvae.metrics import METRIC_LABELS

__all__ = [
    "CSV_COLUMNS",
    "StudyResults",
    "mle_csv",
    "paper_cell",
    "results_csv",
    "stability_csv",
    "stability_rows",
    "summary_table_rows",
    "truth_table_rows",
]

# study key -> (its configuration, its data, its result), in the experiment's order
StudyResults = Mapping[str, tuple[StudyConfig, StudyData, StabilityResult]]

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


def stability_csv(experiment_name: str, studies: StudyResults) -> str:
    """The CSV text of ``results.csv``: the rows of every study of an experiment."""
    rows: list[dict[str, Any]] = []
    for key, (study, _, result) in studies.items():
        rows.extend(stability_rows(experiment_name, key, result, study.paper))
    return results_csv(rows)


def mle_csv(data: Mapping[str, Any]) -> str:
    """The CSV text of the MLE study: one row per simulation, a blank line, the summary."""
    sims = data["simulations"]
    columns = sorted({k for s in sims for k, v in s.items() if not isinstance(v, dict | list)})
    rows = [{k: s.get(k) for k in columns} for s in sims]
    summary = {k: v for k, v in data["summary"].items() if not isinstance(v, dict | list)}
    text = csv_text(rows, columns)
    text += "\n" + csv_text([summary], list(summary))
    return text


# --------------------------------------------------------------------------- reports


def paper_cell(value: tuple[float, float | None] | None) -> str:
    """The paper's (mean, std) as printed there, or "—" when it gives none."""
    if value is None:
        return "—"
    mean, std = value
    return f"{mean:g}" if std is None else f"{mean:g} ({std:g})"


def summary_table_rows(
    studies: StudyResults,
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
            row += [format_stat(summary["between_runs"].get(m)), paper_cell(study.paper.get(m))]
        row.append(format_stat(summary["between_runs"].get("canonical_mcc")))
        rows.append(row)
    return columns, rows, groups


def truth_table_rows(
    studies: StudyResults,
) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the table of every study's runs against the truth."""
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
            + [format_stat(s["to_truth"].get(n)) for n in names]
            + [format_stat(s["clustering"].get(n)) for n in clusters]
        )
    return columns, rows

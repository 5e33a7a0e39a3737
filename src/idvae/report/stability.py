"""A report section for a stability study (``idvae.stability``): tables and figures.

Duck-typed on ``idvae.experiments.StabilityResult`` (``summary()``, ``runs``, ``matrices``,
``latents``, ``predictions``, ``notes`` and, when present, ``modes``) so this module needs no
import of the experiments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from idvae.metrics import METRIC_LABELS
from idvae.report.figures import heatmap_figure
from idvae.report.html import Figure, PaperClaim, Section, Table
from idvae.report.latent import latent_grid_figure

__all__ = ["stability_section"]

_GROUPS = (("between_runs", "between runs"), ("to_truth", "to the truth"), ("clustering", ""))
_UNBOUNDED = ("dist_aff",)  # metrics not in [0, 1]: their colour scale follows the data

# What the paper proves (drawn as the paper's), and what it does not (ours).
PAPER_AFFINE_CLAIM = PaperClaim(
    "Kivva et al., NeurIPS 2022, Thms 3.2(a) and 3.3(a)",
    "under (P1)-(F1) and (F2), P(Z) is identifiable from P(X) up to an affine transformation.",
)
AGREEMENT_CAVEAT = (
    "Ours, not the paper's: by the paper's claim (below the tables), fits that reach the true "
    "distribution of X agree up to an affine map, but the converse fails: runs that agree up "
    "to an affine map may share a wrong optimum. Only a comparison with the truth, where it "
    "is known, shows recovery."
)


def _label(name: str) -> str:
    return METRIC_LABELS.get(name, name.replace("_", " "))


def stability_section(
    result: Any,
    *,
    heading: str,
    text: str | None = None,
    labels: Any = None,
    reference: Any = None,
    reference_title: str = "truth",
    paper: Mapping[str, Any] | None = None,
    paper_source: str | None = None,
    precision: int = 3,
    max_points: int = 2000,
) -> Section:
    """A report section for one stability study, as the paper's Table 2 and Fig. 2 show it.

    It holds: a summary table (mean, std and count of every metric between runs, to the
    truth and of the clustering, with the paper's value beside ours when ``paper`` gives
    it); when the result has ``modes``, a table of the modes (size, runs, held-out ELBO,
    weak MCC to the truth of the best run when known) with their warnings in the text, and
    the paper's claim labelled as the paper's; a table of every run (seed, status, fit
    time, its mode and held-out ELBO, its metrics, its error if it failed — failed runs are
    listed, never dropped); the latent spaces of every run aligned to the truth or run 1
    (Figs. 2, 5-7); a heatmap of each between-runs matrix.

    Args:
        result: a ``StabilityResult`` of ``idvae.stability``.
        heading: the section's heading.
        text: an introduction (plain text); the study's notes are appended.
        labels: array of shape (n_samples,) to colour the latents by (e.g. the true
            clusters); default: each run's predicted clusters.
        reference: array of shape (n_samples, m_ref), e.g. the true latents, to align to
            (drawn as the first panel); default: run 1.
        reference_title: the title of the reference panel.
        paper: metric key (e.g. ``"weak_mcc"``) -> the paper's between-runs value for it, a
            number or a string such as ``"0.99 (0.003)"``, shown in a muted column
            headed "paper" after ours.
        paper_source: where the paper gives ``paper`` (e.g. ``"Table 2"``): the column
            is then headed "paper (Table 2)".
        precision: decimals of the tables' numbers.
        max_points: at most this many points per latent panel.

    Returns:
        The ``Section``.
    """
    for attribute in ("summary", "runs", "matrices"):
        if not hasattr(result, attribute):
            raise TypeError(
                f"Expected a StabilityResult (with .{attribute}) but got {type(result).__name__}"
            )
    modes = getattr(result, "modes", None)
    tables = [_summary_table(result, dict(paper or {}), paper_source, precision)]
    if modes is not None and bool(getattr(modes, "modes", None)):
        tables.append(_modes_table(modes, precision))
    tables.append(_runs_table(result, precision))
    figures = _latent_figures(result, labels, reference, reference_title, max_points)
    figures += _matrix_figures(result)

    notes = list(getattr(result, "notes", None) or [])
    paragraphs = [text] if text else []
    claims = []
    if modes is not None:
        paragraphs += [f"Modes: {line}" for line in modes.statements()]
        paragraphs.append(AGREEMENT_CAVEAT)
        claims.append(PAPER_AFFINE_CLAIM)
    if notes:
        paragraphs.append("Notes:\n" + "\n".join(notes))
    body = "\n\n".join(paragraphs)
    return Section(heading, text=body or None, tables=tables, figures=figures, claims=claims)


def _summary_table(
    result: Any, paper: dict[str, Any], paper_source: str | None, precision: int
) -> Table:
    """Mean, std and count of every metric, with the paper's between-runs values beside."""
    summary = result.summary()
    paper_column = f"paper ({paper_source})" if paper_source else "paper"
    columns = ["metric", "", "mean", "std", "n"] + ([paper_column] if paper else [])
    rows = []
    for group, group_name in _GROUPS:
        for name, stat in (summary.get(group) or {}).items():
            row = [_label(name), group_name, stat.get("mean"), stat.get("std"), stat.get("n")]
            if paper:  # the paper reports between-runs figures only
                row.append(paper.get(name) if group == "between_runs" else None)
            rows.append(row)
    n_runs = summary.get("n_runs", len(result.runs))
    n_failed = summary.get("n_failed", 0)
    return Table(
        columns,
        rows,
        caption=f"{n_runs} runs, {n_failed} failed; mean and std (ddof = 0) over pairs of "
        "runs (between runs) or over runs",
        precision=precision,
    )


def _runs_table(result: Any, precision: int) -> Table:
    """Every run, failed ones included: seed, status, time, mode, held-out ELBO, metrics."""
    truth_keys = sorted({k for r in result.runs for k in (getattr(r, "truth", None) or {})})
    cluster_keys = sorted({k for r in result.runs for k in (getattr(r, "clustering", None) or {})})
    modes = getattr(result, "modes", None)
    show_modes = modes is not None and bool(getattr(modes, "modes", None))
    show_elbo = any(getattr(r, "heldout_elbo", None) is not None for r in result.runs)
    run_rows = []
    for r in result.runs:
        truth = getattr(r, "truth", None) or {}
        clustering = getattr(r, "clustering", None) or {}
        run_id = getattr(r, "run_id", len(run_rows))
        run_rows.append(
            [
                run_id + 1,
                getattr(r, "seed", None),
                getattr(r, "status", None),
                getattr(r, "fit_seconds", None),
                *([modes.mode_of(run_id)] if show_modes else []),
                *([getattr(r, "heldout_elbo", None)] if show_elbo else []),
                *[truth.get(k) for k in truth_keys],
                *[clustering.get(k) for k in cluster_keys],
                getattr(r, "error", None) or "",
            ]
        )
    run_columns = [
        "run",
        "seed",
        "status",
        "fit (s)",
        *(["mode"] if show_modes else []),
        *(["held-out ELBO"] if show_elbo else []),
        *[f"{_label(k)} to truth" for k in truth_keys],
        *[_label(k) for k in cluster_keys],
        "error",
    ]
    return Table(run_columns, run_rows, caption="Every run", precision=precision)


def _latent_figures(
    result: Any, labels: Any, reference: Any, reference_title: str, max_points: int
) -> list[Figure]:
    """The latent spaces of every run, aligned (Figs. 2, 5-7); none without latents."""
    latents = list(getattr(result, "latents", None) or [])
    if not latents or all(z is None for z in latents):
        return []
    names = [f"run {i + 1}" for i in range(len(latents))]
    colour = labels
    if colour is None:
        predictions = list(getattr(result, "predictions", None) or [])
        if len(predictions) == len(latents) and any(p is not None for p in predictions):
            colour = predictions
    png = latent_grid_figure(
        latents,
        labels=colour,
        reference=reference,
        reference_title=reference_title,
        titles=names,
        max_points=max_points,
    )
    what = "the true clusters" if labels is not None else "each run's predicted clusters"
    if colour is None:
        what = "nothing"
    target = reference_title if reference is not None else "first run"
    caption = (
        f"Latent spaces of every run, aligned to the {target} by a least-squares affine "
        f"map; colour: {what} (cf. Figs. 2, 5-7)."
    )
    return [Figure(png, caption)]


def _matrix_figures(result: Any) -> list[Figure]:
    """A heatmap of each between-runs matrix; failed runs are grey."""
    figures = []
    for name, matrix in result.matrices.items():
        matrix = np.asarray(matrix, dtype=np.float64)
        run_names = [f"run {i + 1}" for i in range(matrix.shape[0])]
        unbounded = name in _UNBOUNDED
        png = heatmap_figure(
            matrix,
            title=f"{_label(name)} between runs",
            labels=run_names,
            vmin=0.0,
            vmax=None if unbounded else 1.0,
            precision=3 if unbounded else 2,
        )
        failed = " (grey: a failed run)" if np.isnan(matrix).any() else ""
        figures.append(Figure(png, f"Pairwise {_label(name)}{failed}."))
    return figures


def _modes_table(modes: Any, precision: int) -> Table:
    """The modes: size, runs (numbered as the run table numbers them), held-out ELBO."""
    has_truth = bool(getattr(modes, "has_truth", False))
    columns = ["mode", "size", "runs", "held-out ELBO, mean", "held-out ELBO, max", "best run"]
    if has_truth:
        columns.append("weak MCC (affine) to truth, best run")
    rows = []
    for mode in modes.modes:
        row = [
            mode.index,
            mode.size,
            ", ".join(str(r + 1) for r in mode.members),
            mode.heldout_elbo_mean,
            mode.heldout_elbo_max,
            mode.best_run + 1,
        ]
        if has_truth:
            row.append(mode.weak_mcc_to_truth)
        rows.append(row)
    caption = (
        f"Modes: runs that match up to an affine map (weak MCC, affine alignment, both "
        f"directions ≥ {modes.threshold:g}; single linkage). Held-out ELBO: mean ELBO per "
        "sample on rows no run was fitted on. Agreement is not recovery."
    )
    return Table(columns, rows, caption=caption, precision=precision)

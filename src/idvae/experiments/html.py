"""``report.html`` of each experiment: our numbers beside the paper's, with figures inlined.

A stability experiment's page has the ours-vs-paper table with the metric figures, the
table against the truth, and one section per study (every run, latent spaces, heatmaps, and
for MNIST samples and reconstructions: Figs. 8 and 9); the MLE study's page has its counts
against the paper's 50 of 50 and the NLL profiles of Fig. 1. Our numbers come first; every
sentence or number of the paper is labelled as the paper's ("Paper (App. J.3.1): ...", or a
muted column headed "paper"). Figures are a bonus: one that cannot be drawn is noted on the
page and never loses the numbers, which are already saved. Pages are written atomically by
:func:`idvae.report.write_html_report`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from idvae._validation import jsonable
from idvae.experiments.configs import Experiment, StudyConfig, StudyData
from idvae.experiments.paper import PAPER_MLE
from idvae.experiments.results import StabilityResult
from idvae.experiments.tables import (
    StudyResults,
    paper_cell,
    summary_table_rows,
    truth_table_rows,
)
from idvae.metrics import METRIC_LABELS

__all__ = ["mle_profiles", "write_experiment_report", "write_mle_report"]


def write_experiment_report(
    path: Path,
    exp: Experiment,
    studies: StudyResults,
    payload: Mapping[str, Any],
) -> None:
    """``report.html``: ours beside the paper, every run, latent spaces and heatmaps."""
    from idvae.report import Section, Table, write_html_report

    sections = [_comparison_section(exp, studies)]
    t_columns, t_rows = truth_table_rows(studies)
    if len(t_columns) > 1:
        sections.append(
            Section(
                "Against the ground truth (beyond the paper)",
                text="Each run's latents against the true latent points and clusters.",
                tables=[Table(t_columns, t_rows)],
            )
        )
    source = exp.paper_setup[0] if exp.paper_setup else None
    for study, data, result in studies.values():
        sections.append(_study_section(path.parent / study.key, study, data, result, source))
    write_html_report(
        path,
        title=exp.title,
        sections=sections,
        metadata={"wall time (s)": payload["wall_seconds"], "quick": exp.quick},
    )


def _comparison_section(exp: Experiment, studies: StudyResults) -> Any:
    """The ours-vs-paper table and, per metric, every pair of runs beside the paper's value."""
    from idvae.report import Figure, PaperClaim, Section, Table, metric_comparison_figure

    columns, rows, groups = summary_table_rows(studies)
    source = exp.paper_setup[0] if exp.paper_setup else "the paper"
    intro = (
        f"Ours: {exp.n_runs} runs of each study; mean (std) over the "
        f"{exp.n_runs * (exp.n_runs - 1) // 2} pairs of runs (population std). The canonical "
        "strong MCC puts each latent space in the coordinates of Thm E.1 first (beyond the "
        f"paper). The muted columns headed paper are the paper's numbers ({source})."
    )
    if exp.quick:
        intro += "\n\nQUICK run: fewer samples, runs and epochs than the paper; not comparable."
    figures = []
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
                values,
                title=METRIC_LABELS[metric],
                ylabel=metric,
                paper=paper or None,
                paper_label=f"paper ({source})",
            )
        except (ValueError, TypeError) as err:  # a figure must not lose the results
            intro += f"\n\n(figure of {metric} not drawn: {err})"
            continue
        figures.append(
            Figure(
                png,
                f"{METRIC_LABELS[metric]} between runs: ours (dots, mean ± std) and the paper's "
                f"(red, {source})",
            )
        )
    return Section(
        exp.title,
        text=intro,
        tables=[Table(columns, rows, column_groups=groups)],
        figures=figures,
        claims=[PaperClaim(*exp.paper_setup)] if exp.paper_setup else [],
    )


def _study_section(
    study_dir: Path,
    study: StudyConfig,
    data: StudyData,
    result: StabilityResult,
    paper_source: str | None = None,
) -> Any:
    """One study: its stability section, image figures (MNIST) and training curves."""
    from idvae.report import Figure, Section, training_curves_figure
    from idvae.report.stability import stability_section

    paper = {k: paper_cell(v) for k, v in study.paper.items()}
    text = (
        f"Data: {json.dumps(jsonable(dict(data.description)))}. "
        f"Model: {json.dumps(study.estimator.to_dict())}."
    )
    try:
        section = stability_section(
            result,
            heading=study.title,
            text=text,
            labels=result.scored(data.labels),
            reference=result.scored(data.z),
            paper=paper or None,
            paper_source=paper_source,
        )
    except (ValueError, TypeError) as err:  # a figure must not lose the results
        section = Section(study.title, text=f"{text}\n\n(section not drawn: {err})")
    figures = list(_image_figures(study_dir, data, result, study.title))
    histories = [h for h in result.histories if h]
    if histories:
        try:
            png = training_curves_figure(histories, title=f"{study.title}: training loss")
            figures.append(Figure(png, "Training curves of every run"))
        except (ValueError, TypeError):
            pass
    if not figures:
        return section
    return Section(
        section.heading,
        text=section.text,
        tables=section.tables,
        figures=(*section.figures, *figures),
        claims=section.claims,
    )


def _image_figures(
    study_dir: Path, data: StudyData, result: StabilityResult, title: str
) -> list[Any]:
    """Figs. 8 and 9 for image data (28 x 28): samples of each learned component and
    reconstructions, from the first successful run's saved model. Empty when not images, no
    saved model, or the model cannot be read back."""
    from idvae.report import Figure

    if data.x.shape[1] != 784:
        return []
    ok = [r.run_id for r in result.runs if r.ok]
    if not ok or result.priors[ok[0]] is None:
        return []
    run = ok[0]
    try:
        import idvae

        model = idvae.load(study_dir / "runs" / f"{run:03d}" / "model")
        png = _samples_figure(model, result.priors[run], title, run)
        figures = [Figure(png, "Samples from the learned components, heaviest first (Fig. 8)")]
        clusters = result.predictions[run]
        if clusters is not None:
            x = result.scored(data.x)
            png = _reconstructions_figure(model, x, result.latents[run], clusters, title, run)
            figures.append(Figure(png, "Pairs (x, x̂) for 4 images of each cluster (Fig. 9)"))
    except Exception as err:  # figures are a bonus; the numbers are already saved
        result.notes.append(f"image figures not drawn: {type(err).__name__}: {err}")
        return []
    return figures


def _samples_figure(model: Any, prior: Any, title: str, run: int) -> bytes:
    """Fig. 8: 8 decoded samples of each of the 10 heaviest components of ``prior``."""
    import torch

    from idvae.report import image_grid_figure

    order = np.argsort(-prior.weights)[:10]
    rng = np.random.default_rng(0)
    z = np.concatenate(
        [rng.multivariate_normal(prior.means[k], prior.covariances[k], 8) for k in order]
    )
    with torch.no_grad():
        samples = model.module_.decode(torch.as_tensor(z, dtype=torch.float32)).numpy()
    return image_grid_figure(
        samples,
        n_cols=8,
        title=f"{title}, run {run + 1}: samples of the 10 heaviest components (Fig. 8)",
        row_labels=[f"c{k} ({prior.weights[k]:.2f})" for k in order],
    )


def _reconstructions_figure(
    model: Any, x: np.ndarray, latents: np.ndarray, clusters: np.ndarray, title: str, run: int
) -> bytes:
    """Fig. 9: (x, x̂) for 4 images of each of the 8 largest predicted clusters."""
    import torch

    from idvae.report import image_grid_figure, interleave_images

    sizes = np.bincount(clusters)
    used = [k for k in np.argsort(-sizes) if sizes[k] >= 4][:8]
    idx = np.concatenate([np.flatnonzero(clusters == k)[:4] for k in used])
    with torch.no_grad():
        recon = model.module_.decode(torch.as_tensor(latents[idx], dtype=torch.float32))
    return image_grid_figure(
        interleave_images(x[idx], recon.numpy()),
        n_cols=8,
        col_group=2,
        title=f"{title}, run {run + 1}: x and x̂, 4 per predicted cluster (Fig. 9)",
        row_labels=[f"cluster {k}" for k in used],
    )


def write_mle_report(
    path: Path,
    exp: Experiment,
    payload: Mapping[str, Any],
    profiles: Sequence[tuple[bytes, str]] = (),
) -> None:
    """``report.html`` of the MLE study: our counts, then the paper's 50 of 50, every truth."""
    from idvae.report import Figure, PaperClaim, Section, Table, write_html_report

    summary = payload["summary"]
    n, unique = summary.get("n_simulations"), summary.get("n_unique")
    source, claim = PAPER_MLE
    paper_column = f"paper ({source})"
    rows = [
        ["simulations", n, 50],
        ["truth is the unique global minimiser (up to equivalence)", unique, 50],
        ["truth is a global minimiser", summary.get("n_truth_is_minimizer"), "—"],
        ["weakly injective truths", summary.get("n_weakly_injective"), "—"],
    ]
    sims = payload["simulations"]
    wanted = ("index", "n_components", "truth_injectivity", "truth_is_minimizer",
              "unique_up_to_equivalence", "gap", "reason")  # fmt: skip
    columns = [k for k in wanted if sims and k in sims[0]]
    sim_rows = [[s.get(c) for c in columns] for s in sims]
    figures = [Figure(png, caption) for png, caption in profiles]
    ours = (
        f"Ours: in {unique} of {n} simulations the truth was the unique global minimiser "
        f"(up to equivalence); it was a global minimiser in "
        f"{summary.get('n_truth_is_minimizer')} of {n}. Wall time {payload['wall_seconds']} s"
        + (" (QUICK: 5 truths on a coarse grid)." if exp.quick else ".")
    )
    sections = [
        Section(
            exp.title,
            text=ours,
            tables=[Table(["count", "ours", paper_column], rows)],
            claims=[PaperClaim(source, claim)],
            figures=figures,
        )
    ]
    if columns:
        sections.append(Section("Every simulation", tables=[Table(columns, sim_rows)]))
    write_html_report(path, title=exp.title, sections=sections)


def mle_profiles(study: Any, count: int) -> list[tuple[bytes, str]]:
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

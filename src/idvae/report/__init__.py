"""Figures (Figs. 1, 2, 5-9 of the paper) and the self-contained HTML report.

Figure functions return PNG bytes (matplotlib's Agg canvas, no pyplot state);
``write_html_report`` inlines them into one HTML file that needs no server.

Example:
    >>> import numpy as np
    >>> from idvae.report import Figure, Section, latent_grid_figure, write_html_report
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(500, 2))
    >>> runs = [z @ rng.normal(size=(2, 2)) + 1.0 for _ in range(3)]
    >>> png = latent_grid_figure(runs, reference=z, labels=(z[:, 0] > 0).astype(int))
    >>> section = Section("Latent spaces", figures=[Figure(png, "3 runs aligned to the truth")])
    >>> write_html_report("report.html", title="demo", sections=[section])  # doctest: +SKIP
"""

from idvae.metrics import METRIC_LABELS
from idvae.report._common import PNG_MAGIC
from idvae.report.figures import heatmap_figure, metric_comparison_figure, training_curves_figure
from idvae.report.html import (
    Figure,
    PaperClaim,
    Section,
    Table,
    format_mean_std,
    format_value,
    render_html,
    write_html_report,
    write_png,
)
from idvae.report.images import image_grid_figure, interleave_images
from idvae.report.latent import (
    AffineAlignment,
    align_affine,
    fit_affine_alignment,
    latent_grid_figure,
)
from idvae.report.profiles import Profile, profile_figure, profiles_figure
from idvae.report.stability import stability_section

__all__ = [
    "METRIC_LABELS",
    "PNG_MAGIC",
    "AffineAlignment",
    "Figure",
    "PaperClaim",
    "Profile",
    "Section",
    "Table",
    "align_affine",
    "fit_affine_alignment",
    "format_mean_std",
    "format_value",
    "heatmap_figure",
    "image_grid_figure",
    "interleave_images",
    "latent_grid_figure",
    "metric_comparison_figure",
    "profile_figure",
    "profiles_figure",
    "render_html",
    "stability_section",
    "training_curves_figure",
    "write_html_report",
    "write_png",
]

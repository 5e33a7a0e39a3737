"""Latent spaces of several runs, aligned by least squares (Figs. 2, 5-7 of the paper)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from matplotlib.colors import to_rgba

from idvae._validation import RandomState, check_array, check_positive_int, check_random_state
from idvae.report._common import (
    DEFAULT_DPI,
    category_colors,
    check_dpi,
    check_labels_1d,
    grid_shape,
    new_figure,
    to_png,
)

__all__ = ["AffineAlignment", "align_affine", "fit_affine_alignment", "latent_grid_figure"]


# ------------------------------------------------------------------------ alignment


@dataclass(frozen=True)
class AffineAlignment:
    """A least-squares affine map ``z -> z @ matrix + offset`` onto a reference.

    Attributes:
        matrix: array of shape (m_z, m_ref).
        offset: array of shape (m_ref,).
        r2: the fraction of the reference's variance the map explains (1 = exact).
    """

    matrix: np.ndarray
    offset: np.ndarray
    r2: float

    def apply(self, z: object) -> np.ndarray:
        """Map z, an array of shape (n_samples, m_z), into the reference's coordinates."""
        z = check_array(z, "z", n_features=self.matrix.shape[0])
        return z @ self.matrix + self.offset


def fit_affine_alignment(z: object, reference: object) -> AffineAlignment:
    """Fit the affine map of ``z`` onto ``reference`` by least squares.

    Minimises ``sum_i ||A z_i + b - r_i||^2`` over A and b, as the weak-MCC alignment of
    App. J.1 does; when z is an invertible affine image of the reference the map recovers
    the reference exactly (r2 = 1).

    Args:
        z: array of shape (n_samples, m_z), e.g. the latents of one run.
        reference: array of shape (n_samples, m_ref), e.g. run 1 or the true latents.

    Returns:
        The fitted ``AffineAlignment``.
    """
    z = check_array(z, "z", min_samples=2)
    reference = check_array(reference, "reference", min_samples=2)
    if z.shape[0] != reference.shape[0]:
        raise ValueError(
            "Expected z and reference to hold the same samples (equal numbers of rows) "
            f"but got {z.shape[0]} and {reference.shape[0]} rows"
        )
    design = np.hstack([z, np.ones((z.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(design, reference, rcond=None)
    fitted = design @ coef
    residual = float(np.sum((reference - fitted) ** 2))
    total = float(np.sum((reference - reference.mean(axis=0)) ** 2))
    r2 = 1.0 - residual / total if total > 0 else float("nan")
    return AffineAlignment(matrix=coef[:-1], offset=coef[-1], r2=r2)


def align_affine(z: object, reference: object) -> np.ndarray:
    """``z`` mapped onto ``reference`` by the least-squares affine map.

    Args:
        z: array of shape (n_samples, m_z).
        reference: array of shape (n_samples, m_ref).

    Returns:
        Array of shape (n_samples, m_ref).
    """
    return fit_affine_alignment(z, reference).apply(z)


# ------------------------------------------------------------------ latent spaces


def _as_latent_list(latents: object) -> tuple[list[np.ndarray | None], list[str | None]]:
    """The runs' latents, None for a failed run, and why each missing run is missing."""
    if isinstance(latents, np.ndarray) and latents.ndim == 3:
        latents = list(latents)  # (n_runs, n_samples, m), e.g. vectorised seeds
    if isinstance(latents, np.ndarray) and latents.ndim == 2:
        raise TypeError(
            "Expected latents to be a list of arrays of shape (n_samples, m), one per run, "
            "but got a single 2-D array (wrap it in a list)"
        )
    if not isinstance(latents, Sequence) or isinstance(latents, str | bytes):
        raise TypeError(
            f"Expected latents to be a list of 2-D arrays but got {type(latents).__name__}"
        )
    if len(latents) == 0:
        raise ValueError("Expected at least one latent array but got an empty list")
    zs: list[np.ndarray | None] = []
    reasons: list[str | None] = []
    for i, z in enumerate(latents):
        if z is None:
            zs.append(None)
            reasons.append("failed")
            continue
        z = check_array(z, f"latents[{i}]", allow_nan=True)
        if np.all(np.isfinite(z)):
            zs.append(z)
            reasons.append(None)
        else:  # a diverged run: shown as such, never dropped and never fatal to the figure
            zs.append(None)
            reasons.append("non-finite latents")
    if all(z is None for z in zs):
        raise ValueError(
            "Expected at least one run with finite latents but every entry is None or non-finite"
        )
    return zs, reasons


def _is_per_run(labels: object) -> bool:
    if isinstance(labels, np.ndarray):
        return labels.ndim == 2
    if isinstance(labels, Sequence) and not isinstance(labels, str | bytes) and len(labels):
        return any(lab is None or np.ndim(lab) == 1 for lab in labels)
    return False


def latent_grid_figure(
    latents: Sequence[object] | np.ndarray,
    *,
    labels: object = None,
    reference: object = None,
    align: Literal["affine", "none"] = "affine",
    titles: Sequence[str] | None = None,
    reference_title: str = "truth",
    reference_labels: object = None,
    title: str | None = None,
    max_points: int = 2000,
    n_cols: int | None = None,
    dims: tuple[int, int] = (0, 1),
    point_size: float = 4.0,
    random_state: RandomState = 0,
    dpi: int = DEFAULT_DPI,
) -> bytes:
    """The latent spaces of several runs side by side, aligned and coloured by cluster.

    Figs. 2 and 5-7 of the paper: the learned latents of every run, each mapped onto a
    common reference by the least-squares affine map (``align="affine"``), so that runs
    that agree up to an affine map look alike. The reference is ``reference`` when given
    (e.g. the true latents, drawn as the first panel) and the first run otherwise. For more
    than two dimensions the panels show coordinates ``dims`` of the aligned space (the
    reference's coordinates); the figure title says so. Each panel's title gives the R^2
    of its map. A failed run (None) keeps its panel, marked "failed"; so does a run whose
    latents hold NaN or inf (marked "non-finite latents").

    Long for its fourteen arguments and their documentation; checking, labelling, aligning and
    drawing a panel are helpers, and what is left is the one figure's layout.

    Args:
        latents: a list of arrays of shape (n_samples, m), one per run (None for a failed
            run), or one array of shape (n_runs, n_samples, m).
        labels: cluster labels to colour by: an array of shape (n_samples,) shared by
            every panel (e.g. the true clusters), or a list of such arrays, one per run
            (e.g. each run's predicted clusters; None entries are not coloured). None draws
            every point in one colour.
        reference: array of shape (n_samples, m_ref) to align to, or None for the first run.
        align: ``"affine"`` to map every run onto the reference, ``"none"`` to draw the raw
            latents.
        titles: one title per run (default "run 1", "run 2", ...).
        reference_title: the title of the reference panel when ``reference`` is given.
        reference_labels: array of shape (n_samples,) colouring the reference panel
            (default: ``labels`` when they are shared by every panel).
        title: a figure title placed above the automatic description.
        max_points: at most this many points (the same random subset in every panel) are
            drawn; the alignment is fitted on all points.
        n_cols: panels per row (default: up to 6).
        dims: the two coordinates to draw.
        point_size: marker area in points^2.
        random_state: seeds the subsample.
        dpi: resolution of the PNG.

    Returns:
        The PNG as bytes.
    """
    zs, reasons = _as_latent_list(latents)
    dpi = check_dpi(dpi)
    max_points = check_positive_int(max_points, "max_points")
    if align not in ("affine", "none"):
        raise ValueError(f"Expected align 'affine' or 'none' but got {align!r}")
    if titles is not None and len(titles) != len(zs):
        raise ValueError(f"Expected {len(zs)} titles (one per run) but got {len(titles)}")
    if len(dims) != 2 or any(
        isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0 for d in dims
    ):
        raise ValueError(f"Expected dims to be two non-negative integers but got {dims!r}")
    names = [titles[i] if titles is not None else f"run {i + 1}" for i in range(len(zs))]

    ref, ref_index = _grid_reference(zs, reference, align)
    has_ref_panel = reference is not None
    run_labels, ref_labels = _panel_labels(labels, reference_labels, zs, ref, has_ref_panel)

    # Align on all points, then draw a subset.
    panels: list[_Panel] = [(ref, ref_labels, reference_title)] if has_ref_panel else []
    for i, z in enumerate(zs):
        name = names[i] if z is not None else f"{names[i]}: {reasons[i]}"
        if z is not None and align == "affine":
            if i == ref_index:
                name = f"{name} (reference)"
            else:
                fit = fit_affine_alignment(z, ref)
                z = fit.apply(z)
                name = f"{name} (R² {fit.r2:.3f})"
        panels.append((z, run_labels[i], name))

    drawn = [p for p in panels if p[0] is not None]
    space_dim = ref.shape[1] if align == "affine" else max(z.shape[1] for z, _, _ in drawn)
    for z, _, name in drawn:
        if z.shape[1] > 1 and max(dims) >= z.shape[1]:
            raise ValueError(
                f"Expected dims < {z.shape[1]} (the latent dimension of {name!r}) "
                f"but got dims = {tuple(dims)}"
            )

    style = _PanelStyle.of(panels, dims, point_size)
    rng = check_random_state(random_state)
    subsets: dict[int, np.ndarray] = {}

    def subset(n: int) -> np.ndarray:
        if n not in subsets:
            subsets[n] = (
                np.arange(n) if n <= max_points else np.sort(rng.choice(n, max_points, False))
            )
        return subsets[n]

    n_rows, n_cols = grid_shape(len(panels), n_cols, 6)
    fig = new_figure(2.6 * n_cols, 2.6 * n_rows + 0.5, dpi)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    if align == "affine" and space_dim >= 2:
        # Robust common limits: every panel lives in the reference's coordinates.
        stacked = np.concatenate([z[subset(z.shape[0])][:, list(dims)] for z, _, _ in drawn])
        lo, hi = np.percentile(stacked, [0.5, 99.5], axis=0)
        pad = 0.08 * np.maximum(hi - lo, 1e-12)
        style.limits = (lo - pad, hi + pad)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(panels):
            ax.set_axis_off()
        elif panels[k][0] is None:
            _draw_failed_panel(ax, panels[k][2])
        else:
            z, lab, name = panels[k]
            _draw_panel(ax, z, lab, name, subset(z.shape[0]), style)

    if align == "affine":
        target = f"the {reference_title}" if has_ref_panel else names[ref_index]
        what = f"aligned to {target} by a least-squares affine map"
    else:
        what = "raw latents (no alignment)"
    what = _grid_caption(what, zs, space_dim, dims, len(style.categories))
    fig.suptitle(what if title is None else f"{title}\n{what}", fontsize=10)
    return to_png(fig, dpi)


def _grid_reference(
    zs: list[np.ndarray | None], reference: object, align: str
) -> tuple[np.ndarray | None, int | None]:
    """The points every run is aligned to, and the run that is the reference (None: given).

    Without alignment the reference is only ``reference`` (drawn as a panel of its own).
    """
    ref = None if reference is None else check_array(reference, "reference", min_samples=2)
    if align != "affine":
        return ref, None
    ref_index = None
    if ref is None:
        ref_index = next(i for i, z in enumerate(zs) if z is not None)
        ref = zs[ref_index]
    for i, z in enumerate(zs):
        if z is not None and z.shape[0] != ref.shape[0]:
            raise ValueError(
                "Expected every run to hold the reference's samples: "
                f"latents[{i}] has {z.shape[0]} rows but the reference has {ref.shape[0]}"
            )
    return ref, ref_index


def _grid_caption(
    what: str,
    zs: list[np.ndarray | None],
    space_dim: int,
    dims: tuple[int, int],
    n_categories: int,
) -> str:
    """``what`` (the alignment) with the coordinates drawn, colours and failed runs."""
    if space_dim > 2:
        what = f"coordinates {dims[0] + 1} and {dims[1] + 1} of {space_dim}; {what}"
    if 0 < n_categories <= 20:
        what += "; colour = cluster"
    n_failed = sum(z is None for z in zs)
    if n_failed:
        what += f"; {n_failed} of {len(zs)} runs failed or diverged"
    return what


# a panel: its points (None for a failed run), their labels, its title
_Panel = tuple[np.ndarray | None, np.ndarray | None, str]


def _panel_labels(
    labels: object,
    reference_labels: object,
    zs: list[np.ndarray | None],
    ref: np.ndarray | None,
    has_ref_panel: bool,
) -> tuple[list[np.ndarray | None], np.ndarray | None]:
    """The labels of each run's panel and of the reference panel (None: one colour)."""
    n_runs = len(zs)
    ref_labels = None
    if labels is None:
        run_labels: list[np.ndarray | None] = [None] * n_runs
    elif _is_per_run(labels):
        if len(labels) != n_runs:
            raise ValueError(f"Expected {n_runs} label arrays (one per run) but got {len(labels)}")
        run_labels = [
            None if lab is None or z is None else check_labels_1d(lab, f"labels[{i}]", len(z))
            for i, (lab, z) in enumerate(zip(labels, zs, strict=True))
        ]
    else:
        shared = np.asarray(labels)
        run_labels = [
            None if z is None else check_labels_1d(shared, "labels", z.shape[0]) for z in zs
        ]
        if has_ref_panel:
            ref_labels = check_labels_1d(shared, "labels", ref.shape[0])
    if reference_labels is not None and has_ref_panel:
        ref_labels = check_labels_1d(reference_labels, "reference_labels", ref.shape[0])
    return run_labels, ref_labels


@dataclass
class _PanelStyle:
    """What every panel of a latent grid shares: colours per label, coordinates, limits."""

    categories: np.ndarray
    colors: list
    color_array: np.ndarray
    dims: tuple[int, int]
    point_size: float
    limits: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def of(cls, panels: list[_Panel], dims: tuple[int, int], point_size: float) -> _PanelStyle:
        # one colour per distinct label over every panel, so shared labels match
        all_labels = [lab for _, lab, _ in panels if lab is not None]
        categories = np.unique(np.concatenate(all_labels)) if all_labels else np.array([])
        colors = category_colors(len(categories))
        color_array = np.array(colors) if len(categories) else np.zeros((0, 4))
        return cls(categories, colors, color_array, dims, point_size)


def _draw_failed_panel(ax: Any, name: str) -> None:
    """An empty panel that says why its run has no latents."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(
        0.5,
        0.5,
        name.rsplit(": ", 1)[-1],
        ha="center",
        va="center",
        fontsize=11,
        color="tab:red",
        transform=ax.transAxes,
    )
    ax.set_box_aspect(1)
    ax.set_title(name, fontsize=9)


def _draw_panel(
    ax: Any,
    z: np.ndarray,
    lab: np.ndarray | None,
    name: str,
    idx: np.ndarray,
    style: _PanelStyle,
) -> None:
    """The rows ``idx`` of one run's latents: a scatter, or histograms for one dimension."""
    zz = z[idx]
    dims = style.dims
    if lab is None:
        point_colors: Any = [to_rgba("tab:blue")]
    else:
        point_colors = style.color_array[np.searchsorted(style.categories, lab[idx])]
    if z.shape[1] == 1:
        # One latent dimension: a histogram per cluster.
        if lab is None:
            ax.hist(zz[:, 0], bins=40, color=point_colors[0], alpha=0.8)
        else:
            for c, color in zip(style.categories, style.colors, strict=True):
                sel = lab[idx] == c
                if np.any(sel):
                    ax.hist(zz[sel, 0], bins=40, color=color, alpha=0.6)
        ax.set_xlabel("z1", fontsize=8)
    else:
        ax.scatter(zz[:, dims[0]], zz[:, dims[1]], s=style.point_size, c=point_colors, linewidths=0)
        ax.set_xlabel(f"z{dims[0] + 1}", fontsize=8)
        ax.set_ylabel(f"z{dims[1] + 1}", fontsize=8)
        if style.limits is not None:
            ax.set_xlim(style.limits[0][0], style.limits[1][0])
            ax.set_ylim(style.limits[0][1], style.limits[1][1])
    ax.set_box_aspect(1)
    ax.set_title(name, fontsize=9)
    ax.tick_params(labelsize=7)

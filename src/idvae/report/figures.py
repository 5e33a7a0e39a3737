"""The paper's figures as PNG bytes: latent spaces (Figs. 2, 5-7), NLL profiles (Fig. 1),
image grids (Figs. 8-9), heatmaps of pairwise metrics and training curves.

Every function builds a ``matplotlib.figure.Figure`` directly (never pyplot, so importing
idvae selects no backend and keeps no global state), renders it with the Agg canvas and
returns the PNG bytes. The same input gives the same bytes: subsampling is seeded and the
PNG carries no time stamp or software version.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure as MplFigure

from idvae._validation import RandomState, check_array, check_positive_int, check_random_state

__all__ = [
    "PNG_MAGIC",
    "AffineAlignment",
    "Profile",
    "align_affine",
    "fit_affine_alignment",
    "heatmap_figure",
    "image_grid_figure",
    "interleave_images",
    "latent_grid_figure",
    "metric_comparison_figure",
    "profile_figure",
    "profiles_figure",
    "training_curves_figure",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFAULT_DPI = 100


# ----------------------------------------------------------------------------- helpers


def _new_figure(width: float, height: float, dpi: int) -> MplFigure:
    fig = MplFigure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _to_png(fig: MplFigure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    # No "Software" entry: the bytes depend only on the input (and the fonts).
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _check_dpi(dpi: object) -> int:
    return check_positive_int(dpi, "dpi", minimum=10)


def _check_labels_1d(labels: object, name: str, n_samples: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"Expected {name} to be a 1-D array but got {arr.ndim}-D")
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"Expected {name} to have {n_samples} entries (one per sample) but got {arr.shape[0]}"
        )
    return arr


def _category_colors(n: int) -> list[tuple[float, float, float, float]]:
    """n distinguishable colours: tab10, tab20, then an evenly spaced hue circle."""
    if n <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = colormaps["hsv"]
    return [cmap(i / n) for i in range(n)]


def _grid_shape(n_panels: int, n_cols: int | None, default_cols: int) -> tuple[int, int]:
    if n_cols is None:
        n_cols = min(n_panels, default_cols)
    n_cols = check_positive_int(n_cols, "n_cols")
    n_cols = min(n_cols, n_panels)
    return math.ceil(n_panels / n_cols), n_cols


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


def _as_latent_list(latents: object) -> list[np.ndarray | None]:
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
    zs = [None if z is None else check_array(z, f"latents[{i}]") for i, z in enumerate(latents)]
    if all(z is None for z in zs):
        raise ValueError("Expected at least one run with latents but every entry is None")
    return zs


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
    of its map. A failed run (None) keeps its panel, marked "failed".

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
    zs = _as_latent_list(latents)
    dpi = _check_dpi(dpi)
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

    ref = None if reference is None else check_array(reference, "reference", min_samples=2)
    has_ref_panel = ref is not None
    ref_index = None  # the run that serves as reference when none is given
    if align == "affine" and ref is None:
        ref_index = next(i for i, z in enumerate(zs) if z is not None)
        ref = zs[ref_index]
    if align == "affine":
        for i, z in enumerate(zs):
            if z is not None and z.shape[0] != ref.shape[0]:
                raise ValueError(
                    "Expected every run to hold the reference's samples: "
                    f"latents[{i}] has {z.shape[0]} rows but the reference has {ref.shape[0]}"
                )

    # Labels: one array per panel (None = no colouring).
    n_runs = len(zs)
    ref_labels = None
    if labels is None:
        run_labels: list[np.ndarray | None] = [None] * n_runs
    elif _is_per_run(labels):
        if len(labels) != n_runs:
            raise ValueError(f"Expected {n_runs} label arrays (one per run) but got {len(labels)}")
        run_labels = [
            None if lab is None or z is None else _check_labels_1d(lab, f"labels[{i}]", len(z))
            for i, (lab, z) in enumerate(zip(labels, zs, strict=True))
        ]
    else:
        shared = np.asarray(labels)
        run_labels = [
            None if z is None else _check_labels_1d(shared, "labels", z.shape[0]) for z in zs
        ]
        if has_ref_panel:
            ref_labels = _check_labels_1d(shared, "labels", ref.shape[0])
    if reference_labels is not None and has_ref_panel:
        ref_labels = _check_labels_1d(reference_labels, "reference_labels", ref.shape[0])

    # Align on all points, then draw a subset.
    panels: list[tuple[np.ndarray | None, np.ndarray | None, str]] = []
    if has_ref_panel:
        panels.append((ref, ref_labels, reference_title))
    for i, z in enumerate(zs):
        name = names[i]
        if z is None:
            name = f"{name}: failed"
        elif align == "affine":
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

    # Colours: one per distinct label over every panel, so shared labels match.
    all_labels = [lab for _, lab, _ in panels if lab is not None]
    categories = np.unique(np.concatenate(all_labels)) if all_labels else np.array([])
    colors = _category_colors(len(categories))
    color_array = np.array(colors) if len(categories) else np.zeros((0, 4))

    rng = check_random_state(random_state)
    subsets: dict[int, np.ndarray] = {}

    def subset(n: int) -> np.ndarray:
        if n not in subsets:
            subsets[n] = (
                np.arange(n) if n <= max_points else np.sort(rng.choice(n, max_points, False))
            )
        return subsets[n]

    n_rows, n_cols = _grid_shape(len(panels), n_cols, 6)
    fig = _new_figure(2.6 * n_cols, 2.6 * n_rows + 0.5, dpi)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)

    shared_limits = None
    if align == "affine" and space_dim >= 2:
        # Robust common limits: every panel lives in the reference's coordinates.
        stacked = np.concatenate([z[subset(z.shape[0])][:, list(dims)] for z, _, _ in drawn])
        lo, hi = np.percentile(stacked, [0.5, 99.5], axis=0)
        pad = 0.08 * np.maximum(hi - lo, 1e-12)
        shared_limits = (lo - pad, hi + pad)

    for k, ax in enumerate(axes.ravel()):
        if k >= len(panels):
            ax.set_axis_off()
            continue
        z, lab, name = panels[k]
        if z is None:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(
                0.5,
                0.5,
                "failed",
                ha="center",
                va="center",
                fontsize=11,
                color="tab:red",
                transform=ax.transAxes,
            )
            ax.set_box_aspect(1)
            ax.set_title(name, fontsize=9)
            continue
        idx = subset(z.shape[0])
        zz = z[idx]
        if lab is None:
            point_colors: Any = [to_rgba("tab:blue")]
        else:
            point_colors = color_array[np.searchsorted(categories, lab[idx])]
        if z.shape[1] == 1:
            # One latent dimension: a histogram per cluster.
            if lab is None:
                ax.hist(zz[:, 0], bins=40, color=point_colors[0], alpha=0.8)
            else:
                for c, color in zip(categories, colors, strict=True):
                    sel = lab[idx] == c
                    if np.any(sel):
                        ax.hist(zz[sel, 0], bins=40, color=color, alpha=0.6)
            ax.set_xlabel("z1", fontsize=8)
        else:
            ax.scatter(zz[:, dims[0]], zz[:, dims[1]], s=point_size, c=point_colors, linewidths=0)
            ax.set_xlabel(f"z{dims[0] + 1}", fontsize=8)
            ax.set_ylabel(f"z{dims[1] + 1}", fontsize=8)
            if shared_limits is not None:
                ax.set_xlim(shared_limits[0][0], shared_limits[1][0])
                ax.set_ylim(shared_limits[0][1], shared_limits[1][1])
        ax.set_box_aspect(1)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)

    if align == "affine":
        target = f"the {reference_title}" if has_ref_panel else names[ref_index]
        what = f"aligned to {target} by a least-squares affine map"
    else:
        what = "raw latents (no alignment)"
    if space_dim > 2:
        what = f"coordinates {dims[0] + 1} and {dims[1] + 1} of {space_dim}; {what}"
    if 0 < len(categories) <= 20:
        what += "; colour = cluster"
    n_failed = sum(z is None for z in zs)
    if n_failed:
        what += f"; {n_failed} of {n_runs} runs failed"
    fig.suptitle(what if title is None else f"{title}\n{what}", fontsize=10)
    return _to_png(fig, dpi)


# -------------------------------------------------------------------------- heatmap


def heatmap_figure(
    matrix: object,
    *,
    title: str,
    labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    cmap: str = "viridis",
    precision: int = 2,
    colorbar_label: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> bytes:
    """A matrix of pairwise figures (strong/weak MCC, distAff) annotated with its values.

    Args:
        matrix: array of shape (n_rows, n_cols); NaN cells (e.g. a failed run) are drawn
            grey and annotated "–".
        title: the figure title.
        labels: names of the rows and columns of a square matrix (e.g. "run 1", ...).
        row_labels: names of the rows (overrides ``labels``).
        col_labels: names of the columns (overrides ``labels``).
        vmin: the value at the bottom of the colour scale (None: the data's minimum).
        vmax: the value at the top of the colour scale (None: the data's maximum).
        cmap: a matplotlib colour map name.
        precision: decimals of the annotations.
        colorbar_label: the label of the colour bar.
        dpi: resolution of the PNG.

    Returns:
        The PNG as bytes.
    """
    values = check_array(matrix, "matrix", allow_nan=True)
    dpi = _check_dpi(dpi)
    precision = check_positive_int(precision, "precision", minimum=0)
    n_rows, n_cols = values.shape
    if labels is not None and n_rows != n_cols:
        raise ValueError(
            "Expected a square matrix when labels is given (use row_labels and col_labels) "
            f"but got shape {values.shape}"
        )
    rows = row_labels if row_labels is not None else labels
    cols = col_labels if col_labels is not None else labels
    if rows is not None and len(rows) != n_rows:
        raise ValueError(f"Expected {n_rows} row labels but got {len(rows)}")
    if cols is not None and len(cols) != n_cols:
        raise ValueError(f"Expected {n_cols} column labels but got {len(cols)}")
    if np.any(np.isinf(values)):
        raise ValueError("Expected matrix to hold finite values or NaN but it contains inf")
    finite = values[np.isfinite(values)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if not hi > lo:
        hi = lo + 1.0

    cell = 0.55 if max(n_rows, n_cols) <= 12 else 0.35
    fig = _new_figure(cell * n_cols + 2.2, cell * n_rows + 1.2, dpi)
    ax = fig.add_subplot()
    color_map = colormaps[cmap].with_extremes(bad="#d0d0d0")
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap=color_map, vmin=lo, vmax=hi, aspect="equal"
    )
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    if colorbar_label:
        colorbar.set_label(colorbar_label, fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    if max(n_rows, n_cols) <= 30:
        fontsize = 8 if max(n_rows, n_cols) <= 12 else 6
        for i in range(n_rows):
            for j in range(n_cols):
                v = values[i, j]
                if np.isnan(v):
                    text, color = "–", "black"
                else:
                    text = f"{v:.{precision}f}"
                    r, g, b, _ = color_map((v - lo) / (hi - lo))
                    color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=color)
    ax.set_xticks(range(n_cols), cols if cols is not None else range(1, n_cols + 1))
    ax.set_yticks(range(n_rows), rows if rows is not None else range(1, n_rows + 1))
    ax.tick_params(labelsize=7)
    if cols is not None and max(len(str(c)) for c in cols) > 3:
        for tick in ax.get_xticklabels():
            tick.set_rotation(45)
            tick.set_horizontalalignment("right")
    ax.set_title(title, fontsize=10)
    return _to_png(fig, dpi)


# ------------------------------------------------------------------------ profiles


@dataclass(frozen=True)
class Profile:
    """One NLL profile: the likelihood as a function of one parameter (Fig. 1).

    Attributes:
        grid: array of shape (n_grid,), the parameter's values.
        nll: array of shape (n_grid,), the negative log-likelihood at each value
            (NaN or inf where it could not be computed; those points are not drawn).
        truth: the ground-truth value of the parameter, or None.
        minimiser: the minimiser to mark; None marks the grid point of least NLL.
        parameter_name: how the x axis calls the parameter.
        title: the panel title.
    """

    grid: Any
    nll: Any
    truth: float | None = None
    minimiser: float | None = None
    parameter_name: str = "θ"
    title: str | None = None


def _check_profile(p: Profile | Mapping[str, Any], name: str) -> Profile:
    if isinstance(p, Mapping):
        try:
            p = Profile(**p)
        except TypeError as err:
            raise TypeError(f"Expected {name} to have Profile's fields: {err}") from None
    if not isinstance(p, Profile):
        raise TypeError(f"Expected {name} to be a Profile or a dict but got {type(p).__name__}")
    grid = check_array(p.grid, f"{name}.grid", ndim=1, min_samples=2)
    nll = check_array(p.nll, f"{name}.nll", ndim=1, allow_nan=True)
    if nll.shape != grid.shape:
        raise ValueError(
            f"Expected {name}.nll to have one value per grid point ({grid.shape[0]}) "
            f"but got {nll.shape[0]}"
        )
    if not np.any(np.isfinite(nll)):
        raise ValueError(f"Expected {name}.nll to hold at least one finite value")
    for field in ("truth", "minimiser"):
        value = getattr(p, field)
        if value is not None and not (
            isinstance(value, numbers.Real) and math.isfinite(float(value))
        ):
            raise ValueError(f"Expected {name}.{field} to be a finite number but got {value!r}")
    order = np.argsort(grid, kind="stable")
    return Profile(
        grid=grid[order],
        nll=nll[order],
        truth=p.truth,
        minimiser=p.minimiser,
        parameter_name=str(p.parameter_name),
        title=p.title,
    )


def _draw_profile(ax: Any, p: Profile) -> None:
    finite = np.isfinite(p.nll)
    ax.plot(p.grid[finite], p.nll[finite], color="black", linewidth=1.2, label="NLL")
    minimiser = p.minimiser
    label = "minimiser"
    if minimiser is None:
        minimiser = float(p.grid[finite][np.argmin(p.nll[finite])])
        label = "grid minimiser"
    if p.truth is not None:
        ax.axvline(p.truth, color="tab:red", linestyle="--", linewidth=1.5, label="ground truth")
    ax.axvline(minimiser, color="tab:blue", linestyle=":", linewidth=2.0, label=label)
    ax.set_xlabel(p.parameter_name, fontsize=9)
    ax.set_ylabel("negative log-likelihood", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="best")
    if p.title:
        ax.set_title(p.title, fontsize=9)


def profile_figure(
    grid_values: object,
    nll_values: object,
    *,
    truth: float | None,
    minimiser: float | None = None,
    parameter_name: str,
    title: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> bytes:
    """The NLL as a function of one parameter, the truth and the minimiser marked (Fig. 1).

    Args:
        grid_values: array of shape (n_grid,), the parameter's values.
        nll_values: array of shape (n_grid,), the NLL at each value (NaN/inf not drawn).
        truth: the ground-truth value (a dashed red line), or None.
        minimiser: the (global) minimiser (a dotted blue line); None marks the grid point
            of least NLL.
        parameter_name: the x-axis label, e.g. "β1".
        title: the panel title.
        dpi: resolution of the PNG.

    Returns:
        The PNG as bytes.
    """
    dpi = _check_dpi(dpi)
    p = _check_profile(
        Profile(grid_values, nll_values, truth, minimiser, parameter_name, title), "profile"
    )
    fig = _new_figure(4.2, 3.2, dpi)
    _draw_profile(fig.add_subplot(), p)
    return _to_png(fig, dpi)


def profiles_figure(
    profiles: Sequence[Profile | Mapping[str, Any]],
    *,
    n_cols: int | None = None,
    title: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> bytes:
    """Several NLL profiles in a grid of panels (Fig. 1 shows three).

    Args:
        profiles: ``Profile`` objects or dicts with its fields (grid, nll, truth, ...).
        n_cols: panels per row (default: up to 3).
        title: the figure title.
        dpi: resolution of the PNG.

    Returns:
        The PNG as bytes.
    """
    if isinstance(profiles, Profile | Mapping) or not isinstance(profiles, Sequence):
        raise TypeError(
            f"Expected profiles to be a list of Profile or dict but got {type(profiles).__name__}"
        )
    if len(profiles) == 0:
        raise ValueError("Expected at least one profile but got an empty list")
    dpi = _check_dpi(dpi)
    checked = [_check_profile(p, f"profiles[{i}]") for i, p in enumerate(profiles)]
    n_rows, n_cols = _grid_shape(len(checked), n_cols, 3)
    fig = _new_figure(4.0 * n_cols, 3.1 * n_rows + (0.3 if title else 0.0), dpi)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, p in zip(axes, checked, strict=False):
        _draw_profile(ax, p)
    for ax in axes[len(checked) :]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return _to_png(fig, dpi)


# --------------------------------------------------------------------- image grids


def _as_images(images: object, image_shape: tuple[int, ...] | None) -> np.ndarray:
    if hasattr(images, "detach") and hasattr(images, "cpu"):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"Expected images to hold numbers but got dtype {arr.dtype}")
    if arr.ndim < 2 or arr.ndim > 4:
        raise ValueError(
            "Expected images of shape (n, h*w), (n, h, w) or (n, h, w, channels) "
            f"but got {arr.ndim}-D"
        )
    if arr.shape[0] < 1:
        raise ValueError("Expected at least one image but got 0")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("Expected images to be finite but they contain NaN or infinity")
    if arr.ndim == 2:
        n, d = arr.shape
        if image_shape is None:
            side = math.isqrt(d)
            if side * side != d:
                raise ValueError(
                    f"Expected flattened square images (h*w a square) or image_shape "
                    f"but got {d} values per image"
                )
            image_shape = (side, side)
        if math.prod(image_shape) != d:
            raise ValueError(
                f"Expected image_shape with {d} values (got {tuple(image_shape)} = "
                f"{math.prod(image_shape)})"
            )
        arr = arr.reshape(n, *image_shape)
    if arr.ndim == 4 and arr.shape[-1] not in (3, 4):
        raise ValueError(f"Expected 3 or 4 colour channels but got {arr.shape[-1]}")
    return arr


def interleave_images(originals: object, reconstructions: object) -> np.ndarray:
    """Pairs (x, x̂) side by side for a reconstruction grid (Fig. 9).

    Args:
        originals: array of shape (n, ...).
        reconstructions: array of the same shape.

    Returns:
        Array of shape (2n, ...): x_1, x̂_1, x_2, x̂_2, ...
    """
    a = np.asarray(originals)
    b = np.asarray(reconstructions)
    if a.shape != b.shape:
        raise ValueError(
            "Expected originals and reconstructions of the same shape "
            f"but got {a.shape} and {b.shape}"
        )
    out = np.empty((2 * a.shape[0], *a.shape[1:]), dtype=np.result_type(a, b))
    out[0::2] = a
    out[1::2] = b
    return out


def image_grid_figure(
    images: object,
    *,
    n_cols: int,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    image_shape: tuple[int, int] | None = None,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    dpi: int = DEFAULT_DPI,
) -> bytes:
    """Images in a grid, row by row: samples per component (Fig. 8), reconstructions (Fig. 9).

    For Fig. 8 pass the samples of component k as row k (n_cols samples per component);
    for Fig. 9 pass ``interleave_images(x, x_hat)`` so each row shows pairs (x, x̂).

    Args:
        images: array of shape (n, h*w) (square images unless ``image_shape``), (n, h, w)
            or (n, h, w, 3 or 4); filled into rows of ``n_cols``.
        n_cols: images per row.
        title: the figure title.
        row_labels: one label per row (e.g. the component and its mean confidence).
        col_labels: one label per column (e.g. "x", "x̂", ...).
        image_shape: (h, w) of flattened images that are not square.
        cmap: colour map of single-channel images.
        vmin: the black level (None: the least value over all images).
        vmax: the white level (None: the largest value over all images).
        dpi: resolution of the PNG.

    Returns:
        The PNG as bytes.
    """
    arr = _as_images(images, image_shape)
    n_cols = check_positive_int(n_cols, "n_cols")
    dpi = _check_dpi(dpi)
    n = arr.shape[0]
    n_cols = min(n_cols, n)
    n_rows = math.ceil(n / n_cols)
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"Expected {n_rows} row labels (one per row) but got {len(row_labels)}")
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f"Expected {n_cols} column labels but got {len(col_labels)}")
    h, w = arr.shape[1:3]
    lo = float(arr.min()) if vmin is None else float(vmin)
    hi = float(arr.max()) if vmax is None else float(vmax)
    if not hi > lo:
        hi = lo + 1.0
    gap = max(1, round(0.08 * max(h, w)))
    # One mosaic drawn once: NaN cells (gaps, missing images) show as the background.
    shape = (n_rows * (h + gap) - gap, n_cols * (w + gap) - gap)
    if arr.ndim == 4:
        scaled = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
        mosaic = np.ones((*shape, arr.shape[3]))
    else:
        scaled = arr
        mosaic = np.full(shape, np.nan)
    for k in range(n):
        r, c = divmod(k, n_cols)
        mosaic[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = scaled[k]

    scale = 0.55 / max(h, w)  # inches per pixel: every image is 0.55 in across
    width = shape[1] * scale + (1.2 if row_labels is not None else 0.3)
    height = shape[0] * scale + (0.5 if title else 0.15) + (0.3 if col_labels else 0.0)
    fig = _new_figure(max(width, 1.5), max(height, 1.0), dpi)
    ax = fig.add_subplot()
    if arr.ndim == 4:
        ax.imshow(mosaic, interpolation="nearest")
    else:
        color_map = colormaps[cmap].with_extremes(bad="white")
        ax.imshow(
            np.ma.masked_invalid(mosaic), cmap=color_map, vmin=lo, vmax=hi, interpolation="nearest"
        )
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if row_labels is not None:
        ax.set_yticks([r * (h + gap) + (h - 1) / 2 for r in range(n_rows)], row_labels)
        ax.tick_params(axis="y", length=0, labelsize=7)
    if col_labels is not None:
        ax.xaxis.set_ticks_position("top")
        ax.set_xticks([c * (w + gap) + (w - 1) / 2 for c in range(n_cols)], col_labels)
        ax.tick_params(axis="x", length=0, labelsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return _to_png(fig, dpi)


# ---------------------------------------------------------------- training curves


def training_curves_figure(
    histories: Sequence[Sequence[Mapping[str, Any]]],
    *,
    keys: Sequence[str] = ("loss",),
    labels: Sequence[str] | None = None,
    x_key: str = "epoch",
    title: str | None = None,
    log_scale: bool = False,
    dpi: int = DEFAULT_DPI,
) -> bytes:
    """Training curves of several runs: one panel per key, one line per run.

    Args:
        histories: one history per run; a history is a list of dicts, one per epoch (or
            step), e.g. ``{"epoch": 3, "loss": 41.2, "recon": 38.0}``. A single history
            (a list of dicts) is accepted too. Missing or non-finite values are skipped.
        keys: the quantities to plot.
        labels: one legend label per run (default "run 1", ...).
        x_key: the entry giving the x value; its position in the history when absent.
        title: the figure title.
        log_scale: a logarithmic y axis (for positive quantities).
        dpi: resolution of the PNG.

    Returns:
        The PNG as bytes.
    """
    if isinstance(histories, Mapping) or not isinstance(histories, Sequence):
        raise TypeError(
            "Expected histories to be a list of histories (lists of dicts) "
            f"but got {type(histories).__name__}"
        )
    if len(histories) and isinstance(histories[0], Mapping):
        histories = [histories]  # one history
    if len(histories) == 0:
        raise ValueError("Expected at least one history but got an empty list")
    if isinstance(keys, str):
        keys = (keys,)
    if len(keys) == 0:
        raise ValueError("Expected at least one key to plot but got none")
    if labels is not None and len(labels) != len(histories):
        raise ValueError(f"Expected {len(histories)} labels (one per run) but got {len(labels)}")
    dpi = _check_dpi(dpi)
    seen: set[str] = set()
    for i, history in enumerate(histories):
        if isinstance(history, Mapping) or not isinstance(history, Sequence):
            raise TypeError(
                f"Expected histories[{i}] to be a list of dicts but got {type(history).__name__}"
            )
        for j, entry in enumerate(history):
            if not isinstance(entry, Mapping):
                raise TypeError(
                    f"Expected histories[{i}][{j}] to be a dict but got {type(entry).__name__}"
                )
            seen.update(entry)
    missing = [k for k in keys if k not in seen]
    if missing:
        raise ValueError(
            f"Expected keys present in the histories but {missing} are absent; "
            f"available: {sorted(seen)}"
        )

    colors = _category_colors(len(histories))
    fig = _new_figure(3.8 * len(keys), 3.0 + (0.3 if title else 0.0), dpi)
    axes = fig.subplots(1, len(keys), squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=True):
        for i, history in enumerate(histories):
            xs, ys = [], []
            for j, entry in enumerate(history):
                value = entry.get(key)
                if isinstance(value, numbers.Real) and math.isfinite(float(value)):
                    xs.append(float(entry.get(x_key, j)))
                    ys.append(float(value))
            if xs:
                name = labels[i] if labels is not None else f"run {i + 1}"
                ax.plot(xs, ys, color=colors[i], linewidth=1.2, label=name)
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel(x_key, fontsize=8)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if len(histories) <= 10:
        axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _to_png(fig, dpi)


# ------------------------------------------------------------- metric comparison


def metric_comparison_figure(
    values: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str = "",
    paper: Mapping[str, float | tuple[float, float]] | None = None,
    ylim: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> bytes:
    """Per-group values (e.g. pairwise weak MCC per dataset) beside the paper's numbers.

    Each group gets its values as dots, their mean ± standard deviation as a black bar and,
    when given, the paper's mean (± std) as a red diamond to its right. NaN values (failed
    runs) are not drawn but are counted: the tick label says "n = finite/total".

    Args:
        values: group name -> the values of that group, e.g. the 10 pairwise MCCs of 5 runs.
        title: the figure title.
        ylabel: the y-axis label (the metric).
        paper: group name -> the paper's mean, or (mean, std), for the groups it reports.
        ylim: the y-axis limits (default: automatic).
        dpi: resolution of the PNG.

    Returns:
        The PNG as bytes.
    """
    if not isinstance(values, Mapping) or len(values) == 0:
        raise TypeError(
            "Expected values to be a non-empty dict of group name -> values "
            f"but got {type(values).__name__}"
        )
    dpi = _check_dpi(dpi)
    groups = {
        str(k): check_array(v, f"values[{k!r}]", ndim=1, allow_nan=True) for k, v in values.items()
    }
    paper = dict(paper or {})
    unknown = sorted(set(map(str, paper)) - set(groups))
    if unknown:
        raise ValueError(f"Expected paper's groups among {sorted(groups)} but got {unknown}")
    fig = _new_figure(max(3.5, 1.1 * len(groups) + 1.5), 3.4, dpi)
    ax = fig.add_subplot()
    ticks = []
    for x, (name, v) in enumerate(groups.items()):
        finite = v[np.isfinite(v)]
        if finite.size:
            offsets = np.linspace(-0.18, 0.18, finite.size) if finite.size > 1 else [0.0]
            ax.scatter(
                x - 0.1 + np.asarray(offsets),
                finite,
                s=12,
                color="tab:blue",
                alpha=0.7,
                linewidths=0,
                label="runs" if x == 0 else None,
            )
            ax.errorbar(
                x - 0.1,
                finite.mean(),
                yerr=finite.std(),
                fmt="_",
                color="black",
                markersize=18,
                capsize=4,
                label="ours: mean ± std" if x == 0 else None,
            )
        if name in paper:
            entry = paper[name]
            mean, std = (entry, 0.0) if isinstance(entry, numbers.Real) else entry
            ax.errorbar(
                x + 0.25,
                float(mean),
                yerr=float(std),
                fmt="D",
                color="tab:red",
                markersize=5,
                capsize=3,
                label="paper" if "paper" not in ax.get_legend_handles_labels()[1] else None,
            )
        ticks.append(f"{name}\n(n = {finite.size}/{v.size})")
    ax.set_xticks(range(len(groups)), ticks)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _to_png(fig, dpi)

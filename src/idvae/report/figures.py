"""The paper's figures as PNG bytes, and the charts of the report.

Latent spaces (Figs. 2, 5-7) live in :mod:`idvae.report.latent`, NLL profiles (Fig. 1) in
:mod:`idvae.report.profiles`, image grids (Figs. 8-9) in :mod:`idvae.report.images`; this
module holds heatmaps of pairwise metrics, training curves and the ours-vs-paper comparison.
Every function builds a ``matplotlib.figure.Figure`` directly
(never pyplot), renders it with the Agg canvas and returns the PNG bytes; the same input
gives the same bytes.
"""

from __future__ import annotations

import math
import numbers
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure as MplFigure

from idvae._validation import check_array, check_list_of, check_positive_int
from idvae.report._common import (
    DEFAULT_DPI,
    category_colors,
    check_dpi,
    new_figure,
    to_png,
)

__all__ = ["heatmap_figure", "metric_comparison_figure", "training_curves_figure"]


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

    Long for its arguments and their documentation; the body draws one figure in about 50 lines,
    which helpers would only spread apart.

    Args:
        matrix: array of shape (n_rows, n_cols); NaN cells (e.g. a failed run) are drawn
            grey and annotated "–", infinite ones grey and annotated "∞".
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
    dpi = check_dpi(dpi)
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
    finite = values[np.isfinite(values)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if not hi > lo:
        hi = lo + 1.0

    cell = 0.55 if max(n_rows, n_cols) <= 12 else 0.35
    fig = new_figure(cell * n_cols + 2.2, cell * n_rows + 1.2, dpi)
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
                if not np.isfinite(v):  # a failed run (NaN) or a diverged metric (inf)
                    text, color = ("–" if np.isnan(v) else "∞" if v > 0 else "−∞"), "black"
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
    return to_png(fig, dpi)


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
    dpi = check_dpi(dpi)
    seen: set[str] = set()
    for i, history in enumerate(histories):
        check_list_of(history, f"histories[{i}]", Mapping, "a dict", "dicts")
        for entry in history:
            seen.update(entry)
    missing = [k for k in keys if k not in seen]
    if missing:
        raise ValueError(
            f"Expected keys present in the histories but {missing} are absent; "
            f"available: {sorted(seen)}"
        )

    colors = category_colors(len(histories))
    fig = new_figure(3.8 * len(keys), 3.0 + (0.3 if title else 0.0), dpi)
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
    return to_png(fig, dpi)


# ------------------------------------------------------------- metric comparison


def metric_comparison_figure(
    values: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str = "",
    paper: Mapping[str, float | tuple[float, float]] | None = None,
    paper_label: str = "paper",
    ylim: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> bytes:
    """Per-group values (e.g. pairwise weak MCC per dataset) beside the paper's numbers.

    Each group gets its values as dots, their mean ± standard deviation as a black bar and,
    when given, the paper's mean (± std) as a red diamond to its right. NaN values (failed
    runs) are not drawn but are counted: the tick label says "n = finite/total". Group names
    are wrapped, and the tick labels turned when they would still touch each other.

    Args:
        values: group name -> the values of that group, e.g. the 10 pairwise MCCs of 5 runs.
        title: the figure title.
        ylabel: the y-axis label (the metric).
        paper: group name -> the paper's mean, or (mean, std), for the groups it reports.
        paper_label: the legend's name for the paper's values, e.g. "paper (Table 2)".
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
    dpi = check_dpi(dpi)
    groups = {
        str(k): check_array(v, f"values[{k!r}]", ndim=1, allow_nan=True) for k, v in values.items()
    }
    paper = dict(paper or {})
    unknown = sorted(set(map(str, paper)) - set(groups))
    if unknown:
        raise ValueError(f"Expected paper's groups among {sorted(groups)} but got {unknown}")
    fig = _comparison_axes(groups, paper, title, ylabel, str(paper_label), ylim, dpi)
    return to_png(fig, dpi)


def _comparison_axes(
    groups: Mapping[str, np.ndarray],
    paper: Mapping[str, Any],
    title: str,
    ylabel: str,
    paper_label: str,
    ylim: tuple[float, float] | None,
    dpi: int,
) -> MplFigure:
    """The matplotlib figure of ``metric_comparison_figure`` (tests read its tick labels)."""
    fig = new_figure(max(3.5, 1.1 * len(groups) + 1.5), 3.4, dpi)
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
                label=None if paper_label in ax.get_legend_handles_labels()[1] else paper_label,
            )
        ticks.append(f"{_wrap(name)}\n(n = {finite.size}/{v.size})")
    ax.set_xticks(range(len(groups)), ticks)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    _separate_tick_labels(fig, ax)
    return fig


# group names are wrapped at this many characters (between words only)
_TICK_WIDTH = 18


def _wrap(name: str) -> str:
    return textwrap.fill(name, _TICK_WIDTH, break_long_words=False, break_on_hyphens=False)


def _separate_tick_labels(fig: MplFigure, ax: Any) -> None:
    """Turn the x tick labels (30°, then 90°) while any two of them overlap on the page."""
    for rotation in (30, 90):
        if not _tick_labels_overlap(fig, ax):
            return
        for label in ax.get_xticklabels():
            label.set(rotation=rotation, ha="right" if rotation < 90 else "center",
                      rotation_mode="anchor" if rotation < 90 else "default")  # fmt: skip


def _tick_labels_overlap(fig: MplFigure, ax: Any) -> bool:
    """Whether two x tick labels of ``ax``, as drawn, overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])

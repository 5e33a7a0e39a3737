"""Shared plumbing of the figure modules: a pyplot-free Agg figure rendered to PNG bytes.

Figures are built from ``matplotlib.figure.Figure`` directly (never pyplot), so importing
idvae selects no backend and keeps no global state. The PNG carries no time stamp or
software version, so the same input gives the same bytes.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from idvae._validation import check_positive_int

__all__ = [
    "DEFAULT_DPI",
    "PNG_MAGIC",
    "category_colors",
    "check_dpi",
    "check_labels_1d",
    "grid_shape",
    "new_figure",
    "to_png",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFAULT_DPI = 100


def new_figure(width: float, height: float, dpi: int) -> MplFigure:
    fig = MplFigure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: MplFigure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    # No "Software" entry: the bytes depend only on the input (and the fonts).
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def check_dpi(dpi: object) -> int:
    return check_positive_int(dpi, "dpi", minimum=10)


def check_labels_1d(labels: object, name: str, n_samples: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"Expected {name} to be a 1-D array but got {arr.ndim}-D")
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"Expected {name} to have {n_samples} entries (one per sample) but got {arr.shape[0]}"
        )
    return arr


def category_colors(n: int) -> list[tuple[float, float, float, float]]:
    """n distinguishable colours: tab10, tab20, then an evenly spaced hue circle."""
    if n <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = colormaps["hsv"]
    return [cmap(i / n) for i in range(n)]


def grid_shape(n_panels: int, n_cols: int | None, default_cols: int) -> tuple[int, int]:
    if n_cols is None:
        n_cols = min(n_panels, default_cols)
    n_cols = check_positive_int(n_cols, "n_cols")
    n_cols = min(n_cols, n_panels)
    return math.ceil(n_panels / n_cols), n_cols

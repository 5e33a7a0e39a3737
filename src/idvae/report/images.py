"""Image grids: samples per mixture component (Fig. 8) and reconstructions (Fig. 9)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps

from idvae._validation import check_positive_int
from idvae.report._common import DEFAULT_DPI, check_dpi, new_figure, to_png

__all__ = ["image_grid_figure", "interleave_images"]


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
    col_group: int | None = None,
    dpi: int = DEFAULT_DPI,
) -> bytes:
    """Images in a grid, row by row: samples per component (Fig. 8), reconstructions (Fig. 9).

    For Fig. 8 pass the samples of component k as row k (n_cols samples per component);
    for Fig. 9 pass ``interleave_images(x, x_hat)`` and ``col_group=2`` so each row shows
    pairs (x, x̂) set apart from each other.

    Long for its arguments and their documentation; the body draws one figure in about 60 lines,
    which helpers would only spread apart.

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
        col_group: columns come in groups of this many (e.g. 2 for pairs), separated by a
            wider gap.
        dpi: resolution of the PNG.

    Returns:
        The PNG as bytes.
    """
    arr = _as_images(images, image_shape)
    n_cols = check_positive_int(n_cols, "n_cols")
    dpi = check_dpi(dpi)
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
    group = 0 if col_group is None else check_positive_int(col_group, "col_group")
    gap = max(1, round(0.08 * max(h, w)))
    group_gap = 3 * gap if group else 0
    # Left edge of each column and top edge of each row in the mosaic.
    lefts = [c * (w + gap) + (c // group * group_gap if group else 0) for c in range(n_cols)]
    tops = [r * (h + gap) for r in range(n_rows)]
    # One mosaic drawn once: NaN cells (gaps, missing images) show as the background.
    shape = (tops[-1] + h, lefts[-1] + w)
    if arr.ndim == 4:
        scaled = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
        mosaic = np.ones((*shape, arr.shape[3]))
    else:
        scaled = arr
        mosaic = np.full(shape, np.nan)
    for k in range(n):
        r, c = divmod(k, n_cols)
        mosaic[tops[r] : tops[r] + h, lefts[c] : lefts[c] + w] = scaled[k]

    scale = 0.55 / max(h, w)  # inches per pixel: every image is 0.55 in across
    width = shape[1] * scale + (1.2 if row_labels is not None else 0.3)
    height = shape[0] * scale + (0.5 if title else 0.15) + (0.3 if col_labels else 0.0)
    fig = new_figure(max(width, 1.5), max(height, 1.0), dpi)
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
        ax.set_yticks([top + (h - 1) / 2 for top in tops], row_labels)
        ax.tick_params(axis="y", length=0, labelsize=7)
    if col_labels is not None:
        ax.xaxis.set_ticks_position("top")
        ax.set_xticks([left + (w - 1) / 2 for left in lefts], col_labels)
        ax.tick_params(axis="x", length=0, labelsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return to_png(fig, dpi)

"""NLL profiles: the likelihood along one parameter, truth and minimiser marked (Fig. 1).

The one drawing of Fig. 1: ``idvae.exact.profile_curves`` computes the curves of a toy
model; ``idvae.exact.plot_profiles`` (``idvae mle``) and ``idvae reproduce mle`` draw them
here. Grid points tied with the least NLL are shaded; a flat profile is labelled, gets no
minimiser and is drawn on a band of ±5% around its value. Tick labels keep a few significant
digits: a profile whose range is below 1% of its value is drawn as NLL minus its least value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import ScalarFormatter

from idvae._validation import check_array
from idvae.report._common import DEFAULT_DPI, check_dpi, grid_shape, new_figure, to_png

__all__ = ["Profile", "profile_figure", "profiles_figure"]

# NLL values within this (relative to max(1, |least NLL|)) of the least one are tied with it
_TIE = 1e-9
# a profile whose range is below this fraction of its value is drawn relative to its least
# value, so that its tick labels need no more than a few significant digits
_RELATIVE_RANGE = 1e-2
# half the height of the band a flat profile is drawn on, relative to its value
_FLAT_BAND = 0.05


# ------------------------------------------------------------------------ profiles


@dataclass(frozen=True)
class Profile:
    """One NLL profile: the likelihood as a function of one parameter (Fig. 1).

    Attributes:
        grid: array of shape (n_grid,), the parameter's values.
        nll: array of shape (n_grid,), the negative log-likelihood at each value
            (NaN or inf where it could not be computed; those points are not drawn).
        truth: the ground-truth value of the parameter, or None.
        minimiser: the minimiser to mark; None marks the grid point of least NLL. A flat
            profile (every point tied with the least NLL) gets no minimiser.
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
    grid, nll = p.grid[finite], p.nll[finite]
    least = float(nll.min())
    tied = nll <= least + _TIE * max(1.0, abs(least))
    flat = bool(tied.all())
    scale = max(abs(least), abs(float(nll.max())))
    relative = not flat and float(nll.max()) - least < _RELATIVE_RANGE * scale
    ax.plot(grid, nll - least if relative else nll, color="black", linewidth=1.2, label="NLL")
    if tied.sum() > 1 and not flat:  # a stretch of grid points tied with the least NLL
        ax.axvspan(grid[tied].min(), grid[tied].max(), color="tab:blue", alpha=0.12, lw=0)
    if p.truth is not None:
        ax.axvline(p.truth, color="tab:red", linestyle="--", linewidth=1.5, label="ground truth")
    if flat:  # the data say nothing about this parameter: no minimiser to mark
        ax.text(0.5, 0.9, "flat", transform=ax.transAxes, ha="center", fontsize=8)
    else:
        minimiser, label = p.minimiser, "minimiser"
        if minimiser is None:
            minimiser, label = float(grid[np.argmin(nll)]), "grid minimiser"
        ax.axvline(minimiser, color="tab:blue", linestyle=":", linewidth=2.0, label=label)
    _format_nll_axis(ax, least, flat=flat, relative=relative)
    ax.set_xlabel(p.parameter_name, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="best")
    if p.title:
        ax.set_title(p.title, fontsize=9)


def _format_nll_axis(ax: Any, least: float, *, flat: bool, relative: bool) -> None:
    """Y ticks of a few significant digits: NLL values, never offsets of 14 digits."""
    # NLL values, not offsets from one; ScalarFormatter still writes a power of ten
    # (e.g. "1e-8") beside the ticks when they are tiny or huge.
    ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    if flat:  # rounding noise only: a band around the value, so the line is drawn flat
        half = _FLAT_BAND * abs(least) if least != 0 else 1.0
        ax.set_ylim(least - half, least + half)
    if relative:
        ax.set_ylabel(f"NLL − least (least = {least:.6g})", fontsize=8)
    else:
        ax.set_ylabel("negative log-likelihood", fontsize=8)


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
    dpi = check_dpi(dpi)
    p = _check_profile(
        Profile(grid_values, nll_values, truth, minimiser, parameter_name, title), "profile"
    )
    fig = new_figure(4.2, 3.2, dpi)
    _draw_profile(fig.add_subplot(), p)
    return to_png(fig, dpi)


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
    dpi = check_dpi(dpi)
    return to_png(_profiles_axes(profiles, n_cols=n_cols, title=title, dpi=dpi), dpi)


def _profiles_axes(
    profiles: Sequence[Profile | Mapping[str, Any]],
    *,
    n_cols: int | None,
    title: str | None,
    dpi: int,
) -> MplFigure:
    """The matplotlib figure of ``profiles_figure`` (tests read its tick labels)."""
    checked = [_check_profile(p, f"profiles[{i}]") for i, p in enumerate(profiles)]
    n_rows, n_cols = grid_shape(len(checked), n_cols, 3)
    fig = new_figure(4.0 * n_cols, 3.1 * n_rows + (0.3 if title else 0.0), dpi)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, p in zip(axes, checked, strict=False):
        _draw_profile(ax, p)
    for ax in axes[len(checked) :]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig

"""Agreement between the runs of a study, and the groups of runs that agree.

Definitions (v1):

* **Agreement** of runs i and j: the weak MCC with an affine alignment,
  ``idvae.metrics.mcc(z_i, z_j, alignment="affine", out_of_sample=True)``, taken in both
  directions (the affine MCC asks how well the second side explains the first) and the
  smaller kept, so that agreement is symmetric and high only when each run's latents are an
  affine image of the other's. A pair whose MCC cannot be computed has agreement NaN.
* **Groups**: the connected components of the graph linking runs whose agreement is at
  least ``threshold`` (default :data:`MODE_THRESHOLD` = 0.95): single-linkage grouping, so a
  chain of agreeing runs is one group even when its ends agree less. A failed run is in no
  group. :mod:`idvae.experiments.modes` scores the groups as modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from idvae._validation import RandomState, check_random_state

__all__ = ["MODE_THRESHOLD", "agreement_matrix", "check_threshold", "group_runs"]

MODE_THRESHOLD = 0.95


def agreement_matrix(
    latents: Sequence[np.ndarray | None],
    *,
    random_state: RandomState = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """Symmetric weak MCC (affine alignment) between runs, the smaller of both directions.

    Args:
        latents: per run, an array of shape (n_samples, latent_dim) of the same samples, or
            None for a failed run.
        random_state: seeds the out-of-sample split of every MCC (the same split for all
            pairs).
        notes: a pair whose MCC raises gets NaN and a line here.

    Returns:
        Array of shape (n_runs, n_runs): 1 on the diagonal of runs with latents, NaN in the
        rows and columns of runs without.
    """
    from idvae.metrics import mcc

    seed = int(check_random_state(random_state).integers(2**31 - 1))
    n_runs = len(latents)
    matrix = np.full((n_runs, n_runs), np.nan)
    present = [i for i, z in enumerate(latents) if z is not None]
    for i in present:
        matrix[i, i] = 1.0
    for a, i in enumerate(present):
        for j in present[a + 1 :]:
            try:
                forward = mcc(latents[i], latents[j], alignment="affine", random_state=seed)
                backward = mcc(latents[j], latents[i], alignment="affine", random_state=seed)
            except (ValueError, np.linalg.LinAlgError) as err:
                if notes is not None:
                    notes.append(f"agreement of runs {i} and {j}: {type(err).__name__}: {err}")
                continue
            matrix[i, j] = matrix[j, i] = min(forward, backward)
    return matrix


def group_runs(agreement: Any, threshold: float = MODE_THRESHOLD) -> list[list[int]]:
    """Single-linkage groups: connected components of the graph ``agreement >= threshold``.

    Args:
        agreement: array of shape (n_runs, n_runs), symmetric; a run whose diagonal entry is
            NaN (a failed run) is in no group; NaN off the diagonal is no link.
        threshold: the agreement at which two runs are linked.

    Returns:
        The groups as sorted lists of run indices, in order of their first run.
    """
    matrix = np.asarray(agreement, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"Expected a square agreement matrix but got shape {matrix.shape}")
    threshold = check_threshold(threshold)
    present = [i for i in range(matrix.shape[0]) if np.isfinite(matrix[i, i])]
    parent = {i: i for i in present}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, i in enumerate(present):
        for j in present[a + 1 :]:
            if np.isfinite(matrix[i, j]) and matrix[i, j] >= threshold:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in present:
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float in (0, 1], or a TypeError / ValueError saying what it got."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.floating):
        raise TypeError(f"Expected threshold to be a number but got {type(threshold).__name__}")
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"Expected threshold in (0, 1] but got {threshold}")
    return float(threshold)

"""Clustering agreement: accuracy under the best one-to-one relabelling, NMI, ARI."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["ari", "cluster_accuracy", "nmi"]


def _check_labels(y: Any, name: str) -> np.ndarray:
    if hasattr(y, "detach") and hasattr(y, "cpu"):
        y = y.detach().cpu().numpy()
    if isinstance(y, str | bytes) or y is None:
        raise TypeError(f"Expected {name} to be a 1-D array of labels but got {type(y).__name__}")
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"Expected {name} to be a 1-D array of labels but got {arr.ndim}-D")
    if arr.shape[0] == 0:
        raise ValueError(f"Expected {name} to have at least 1 label but got 0")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"Expected {name} to be finite but it contains NaN or infinity")
    if arr.dtype.kind not in "biufUS":
        raise TypeError(f"Expected {name} to hold integer or string labels but got {arr.dtype}")
    return arr


# ---------------------------------------------------------------------------------------------
# clustering
# ---------------------------------------------------------------------------------------------
def _check_label_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _check_labels(y_true, "y_true"), _check_labels(y_pred, "y_pred")
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            "Expected y_true and y_pred of equal length but got "
            f"{y_true.shape[0]} and {y_pred.shape[0]}"
        )
    return y_true, y_pred


def cluster_accuracy(y_true: Any, y_pred: Any) -> float:
    """Clustering accuracy under the best one-to-one relabelling (Hungarian algorithm).

    Definition v1: ``max over injective maps π from predicted to true labels of
    (1/n) Σ_i 1[π(y_pred_i) = y_true_i]``. When the label sets differ in size, the surplus
    labels of the larger set stay unmatched and their samples count as errors.

    Args:
        y_true: array of shape (n_samples,), integer or string labels.
        y_pred: array of shape (n_samples,), integer or string labels (any names).

    Returns:
        A float in [0, 1].
    """
    y_true, y_pred = _check_label_pair(y_true, y_pred)
    _, true_idx = np.unique(y_true, return_inverse=True)
    _, pred_idx = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((pred_idx.max() + 1, true_idx.max() + 1))
    np.add.at(counts, (pred_idx, true_idx), 1.0)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / y_true.shape[0])


def nmi(y_true: Any, y_pred: Any) -> float:
    """Normalised mutual information (scikit-learn's, arithmetic normalisation).

    Args:
        y_true: array of shape (n_samples,); y_pred: array of shape (n_samples,).
    """
    from sklearn.metrics import normalized_mutual_info_score

    y_true, y_pred = _check_label_pair(y_true, y_pred)
    return float(normalized_mutual_info_score(y_true, y_pred))


def ari(y_true: Any, y_pred: Any) -> float:
    """Adjusted Rand index (scikit-learn's).

    Args:
        y_true: array of shape (n_samples,); y_pred: array of shape (n_samples,).
    """
    from sklearn.metrics import adjusted_rand_score

    y_true, y_pred = _check_label_pair(y_true, y_pred)
    return float(adjusted_rand_score(y_true, y_pred))

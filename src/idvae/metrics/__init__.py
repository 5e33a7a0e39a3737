"""Identifiability metrics of App. J.1: MCC (strong and weak) and distAff,L2 (eq. (34)).

Two families of metrics, both pure functions of plain arrays and ``GMM``s:

* latent-space metrics on paired samples ``z_a``, ``z_b`` (two encodings of the same data):
  :func:`mcc` with its helpers :func:`correlation_matrix`, :func:`match_coordinates` and the
  closed-form :func:`cca`;
* prior metrics on two Gaussian mixtures: :func:`gmm_l2_distance` (ΔL2 of eq. (34)) and
  :func:`dist_aff_l2` (its minimum over affine maps);
* clustering metrics: :func:`cluster_accuracy`, :func:`nmi`, :func:`ari`.

Every definition is written out and versioned in its docstring ("Definition v1"). A changed
definition becomes a new option; a default is never changed silently. ``METRIC_LABELS``
names the metrics as the studies store them (``"weak_mcc"``) for tables and figures.
"""

from idvae.metrics._clustering import ari, cluster_accuracy, nmi
from idvae.metrics._correlation import CCA, cca, correlation_matrix, match_coordinates, mcc
from idvae.metrics._l2 import dist_aff_l2, gmm_l2_distance

__all__ = [
    "CCA",
    "METRIC_LABELS",
    "ari",
    "cca",
    "cluster_accuracy",
    "correlation_matrix",
    "dist_aff_l2",
    "gmm_l2_distance",
    "match_coordinates",
    "mcc",
    "nmi",
]

# metric key, as studies and reports store it -> how tables and figures call it
METRIC_LABELS: dict[str, str] = {
    "strong_mcc": "strong MCC",
    "weak_mcc": "weak MCC",
    "canonical_mcc": "canonical strong MCC (Thm E.1)",
    "dist_aff": "distAff,L2",
    "accuracy": "cluster accuracy",
    "nmi": "NMI",
    "ari": "ARI",
}

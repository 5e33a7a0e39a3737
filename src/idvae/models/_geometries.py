"""VaDE's initial geometries from neighbour graphs: Laplacian eigenmaps and Isomap.

``pretrain="spectral"`` and ``pretrain="isomap"`` regress the encoder on one of these
embeddings of the training data before the mixture is fitted (docs/recovery_levers.md).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["EMBEDDINGS", "ISOMAP_FIT_SAMPLES", "isomap_embedding", "spectral_embedding"]


def spectral_embedding(x: torch.Tensor, latent_dim: int) -> torch.Tensor:
    """Laplacian eigenmaps of the k-nearest-neighbour graph of x, standardised per column.

    Deterministic (a fixed ARPACK start); O(n k) memory, meant for a few thousand points.

    Args:
        x: array of shape (n, n_features).
        latent_dim: m, the number of eigenvectors kept.

    Returns:
        Array of shape (n, m) on the device and dtype of x.
    """
    from sklearn.manifold import SpectralEmbedding

    points = x.detach().cpu().double().numpy()
    n_neighbors = max(2, min(15, len(points) - 1))
    with warnings.catch_warnings():
        # far-apart clusters disconnect the graph; the embedding then separates them, which
        # is all an initialisation needs
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        embedding = SpectralEmbedding(
            latent_dim, affinity="nearest_neighbors", n_neighbors=n_neighbors, random_state=0
        ).fit_transform(points)
    embedding = (embedding - embedding.mean(0)) / np.maximum(embedding.std(0), 1e-12)
    return torch.as_tensor(embedding, dtype=x.dtype, device=x.device)


# Isomap's geodesic distances cost O(n^2) memory; larger data are embedded out of sample
ISOMAP_FIT_SAMPLES = 2000


def isomap_embedding(x: torch.Tensor, latent_dim: int) -> torch.Tensor:
    """Isomap coordinates of x (15-nearest-neighbour graph), standardised per column.

    Isomap keeps geodesic distances along the data manifold, so for an injective piecewise-
    affine decoder its coordinates are close to an affine image of Z (weak MCC 0.80-0.96 on
    the simulator's seeds 0-9, docs/recovery_levers.md), a globally consistent initial
    geometry. Fitted on at most ``ISOMAP_FIT_SAMPLES`` evenly spaced points; the rest are
    embedded with ``Isomap.transform``. Deterministic.

    Args:
        x: array of shape (n, n_features).
        latent_dim: m, the number of coordinates.

    Returns:
        Array of shape (n, m) on the device and dtype of x.
    """
    from sklearn.manifold import Isomap

    points = x.detach().cpu().double().numpy()
    step = max(1, -(-len(points) // ISOMAP_FIT_SAMPLES))
    n_neighbors = max(2, min(15, len(points[::step]) - 1))
    isomap = Isomap(n_neighbors=n_neighbors, n_components=latent_dim).fit(points[::step])
    embedding = isomap.embedding_ if step == 1 else isomap.transform(points)
    embedding = (embedding - embedding.mean(0)) / np.maximum(embedding.std(0), 1e-12)
    return torch.as_tensor(embedding, dtype=x.dtype, device=x.device)


# the names ``pretrain`` accepts for an embedding, and the function that computes it
EMBEDDINGS = {"spectral": spectral_embedding, "isomap": isomap_embedding}

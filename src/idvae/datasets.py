"""Datasets of the paper's experiments (App. J.3) and readers for user data.

* ``pinwheel``: the pinwheel of Johnson et al. (2016), Fig. 2 of the paper.
* ``parallelograms``: uniform points in random parallelograms (App. J.3.2, Table 2).
* ``load_mnist`` / ``load_mnist_combined``: MNIST from the four IDX files, hash-checked
  (App. J.3.3, Table 3); the reader is ``idvae._mnist``, re-exported here.
* ``load_array``: ``.npy``, ``.npz`` (key ``x``; optional ``z``, ``u``, ``labels``, the
  prior) and ``.csv`` files, checked; defined in ``idvae.data`` with the ``Data`` type it
  returns, re-exported here.

``pinwheel`` and ``parallelograms`` return a :class:`Dataset`, an ``idvae.data.Data`` whose
z are the 2-D points (the ground-truth latent space) and whose u and labels are the class of
each point.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from idvae._mnist import (
    MNIST_FILES,
    MNIST_MIRRORS,
    Mnist,
    load_mnist,
    load_mnist_combined,
    read_idx,
)
from idvae._validation import (
    RandomState,
    check_positive_int,
    check_random_state,
)
from idvae.data import Data, load_array
from idvae.simulate import random_decoder

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "Data",
    "Dataset",
    "Mnist",
    "load_array",
    "load_mnist",
    "load_mnist_combined",
    "parallelograms",
    "pinwheel",
    "read_idx",
]

Embedding = Literal["leaky_relu", "linear"]


@dataclass(frozen=True, eq=False, kw_only=True)
class Dataset(Data):
    """A synthetic dataset built from 2-D points: a :class:`~idvae.data.Data` whose z are
    the points.

    Attributes:
        x: float64 array of shape (n_samples, obs_dim): the observations.
        z: float64 array of shape (n_samples, 2): the 2-D points before the embedding and the
            noise (the ground-truth latent space).
        u: int64 array of shape (n_samples,): the class of each point (the hidden state);
            the same array as ``labels``.
        labels: int64 array of shape (n_samples,): the cluster of each point.
        prior: None (the points are not drawn from a Gaussian mixture).
        embedding: the map from the plane to R^obs_dim (a float64 ``nn.Module``), or None
            when ``obs_dim == 2`` and x = points (+ noise).
        vertices: for ``parallelograms``, float64 array of shape (n_parallelograms, 4, 2),
            the corners of each parallelogram in order; else None.
    """

    embedding: nn.Module | None = None
    vertices: np.ndarray | None = None

    @property
    def points(self) -> np.ndarray:
        """The 2-D points, ``z`` (the name the paper's App. J.3 and earlier code use)."""
        return self.z

    def arrays(self) -> dict[str, np.ndarray]:
        """``Data.arrays`` and, for ``parallelograms``, ``vertices``; also ``points`` (= z),
        the key files written before ``z`` had one name."""
        out = super().arrays()
        out["points"] = out["z"]
        if self.vertices is not None:
            out["vertices"] = np.asarray(self.vertices)
        return out


def pinwheel(
    n_samples: int = 5000,
    n_classes: int = 3,
    *,
    radial_std: float = 0.3,
    tangential_std: float = 0.05,
    rate: float = 0.25,
    obs_dim: int = 2,
    noise_std: float = 0.0,
    embedding: Embedding = "leaky_relu",
    random_state: RandomState = None,
) -> Dataset:
    """The pinwheel dataset of Johnson et al. (2016), used for Fig. 2 of the paper.

    Each class c is an arm: a point starts at (r, t) with r ~ N(1, radial_std²) and
    t ~ N(0, tangential_std²), and is rotated by the angle 2πc / n_classes + rate · exp(r),
    so arms bend more the further out they go. Classes have equal sizes (the first
    ``n_samples % n_classes`` classes get one point more); the order is shuffled.

    Args:
        n_samples: the number of points, at least ``n_classes``.
        n_classes: the number of arms.
        radial_std: spread along an arm.
        tangential_std: spread across an arm.
        rate: how fast the arms bend.
        obs_dim: dimension of x. With 2 (the paper: m = n = 2) x are the points; above 2
            the points are mapped by a random injective ``embedding``.
        noise_std: standard deviation of Gaussian noise added to x (the arms are noisy
            already, so 0 by default).
        embedding: ``"leaky_relu"`` (a random injective LeakyReLU MLP, App. H, output
            standardised) or ``"linear"`` (a random isometry); used when obs_dim > 2.
        random_state: int, ``numpy.random.Generator`` or None.

    Example:
        >>> from idvae.datasets import pinwheel
        >>> data = pinwheel(600, 3, random_state=0)
        >>> data.x.shape, sorted(set(data.labels.tolist()))
        ((600, 2), [0, 1, 2])
    """
    n_classes = check_positive_int(n_classes, "n_classes")
    n_samples = check_positive_int(n_samples, "n_samples", minimum=n_classes)
    radial_std = _check_nonnegative(radial_std, "radial_std")
    tangential_std = _check_nonnegative(tangential_std, "tangential_std")
    rate = _check_finite(rate, "rate")
    obs_dim = check_positive_int(obs_dim, "obs_dim", minimum=2)
    noise_std = _check_nonnegative(noise_std, "noise_std")
    _check_embedding(embedding)
    rng = check_random_state(random_state)

    labels = rng.permutation(_balanced_labels(n_samples, n_classes))
    radial = 1.0 + radial_std * rng.standard_normal(n_samples)
    tangential = tangential_std * rng.standard_normal(n_samples)
    angle = 2.0 * np.pi * labels / n_classes + rate * np.exp(radial)
    cos, sin = np.cos(angle), np.sin(angle)
    points = np.stack([cos * radial - sin * tangential, sin * radial + cos * tangential], 1)
    x, net = _embed(points, obs_dim, embedding, noise_std, rng)
    return Dataset(x=x, z=points, u=labels, labels=labels, embedding=net)


def parallelograms(
    n_samples: int = 5000,
    n_parallelograms: int = 3,
    obs_dim: int = 2,
    noise_std: float = 0.05,
    *,
    embedding: Embedding = "leaky_relu",
    random_state: RandomState = None,
) -> Dataset:
    """ "Random parallelograms" (App. J.3.2, Table 2): uniform points in random parallelograms.

    Each parallelogram has two sides of lengths U(1, 3), a random orientation and an angle
    U(30°, 150°) between its sides; centres are drawn uniformly in a square of half-width
    2 √K and redrawn until all parallelograms are ≥ 0.25 apart (K = n_parallelograms). Each
    holds an equal share of the points (the first ``n_samples % K`` one more), uniform inside
    it; the order is shuffled. The paper samples the points and adds Gaussian noise in an
    n-dimensional observed space; it fixes m = 2 but does not say how the plane is embedded.
    Here obs_dim = 2 uses the plane itself; above 2 a random injective ``embedding`` maps it
    into R^obs_dim before the noise is added.

    Args:
        n_samples: the number of points, at least ``n_parallelograms``.
        n_parallelograms: K.
        obs_dim: dimension of x, at least 2.
        noise_std: standard deviation of the Gaussian noise added to every coordinate of x.
        embedding: ``"leaky_relu"`` (a random injective LeakyReLU MLP, App. H, output
            standardised) or ``"linear"`` (a random isometry); used when obs_dim > 2.
        random_state: int, ``numpy.random.Generator`` or None.

    Returns:
        A ``Dataset`` whose ``vertices`` are the corners of the parallelograms.
    """
    n_parallelograms = check_positive_int(n_parallelograms, "n_parallelograms")
    n_samples = check_positive_int(n_samples, "n_samples", minimum=n_parallelograms)
    obs_dim = check_positive_int(obs_dim, "obs_dim", minimum=2)
    noise_std = _check_nonnegative(noise_std, "noise_std")
    _check_embedding(embedding)
    rng = check_random_state(random_state)

    vertices = _random_parallelograms(n_parallelograms, rng)
    labels = rng.permutation(_balanced_labels(n_samples, n_parallelograms))
    st = rng.uniform(size=(n_samples, 2))
    origin, side_a, side_b = (
        vertices[:, 0],
        vertices[:, 1] - vertices[:, 0],
        vertices[:, 3] - vertices[:, 0],
    )
    points = origin[labels] + st[:, :1] * side_a[labels] + st[:, 1:] * side_b[labels]
    x, net = _embed(points, obs_dim, embedding, noise_std, rng)
    return Dataset(x=x, z=points, u=labels, labels=labels, embedding=net, vertices=vertices)


def _random_parallelograms(k: int, rng: np.random.Generator) -> np.ndarray:
    """Corners (k, 4, 2) of k pairwise separated random parallelograms."""
    half_width = 2.0 * math.sqrt(k)
    while True:
        for _ in range(200):
            length = rng.uniform(1.0, 3.0, size=(k, 2))
            theta = rng.uniform(0.0, 2.0 * np.pi, size=k)
            phi = theta + rng.uniform(np.pi / 6, 5 * np.pi / 6, size=k)
            a = length[:, :1] * np.stack([np.cos(theta), np.sin(theta)], 1)
            b = length[:, 1:] * np.stack([np.cos(phi), np.sin(phi)], 1)
            centre = rng.uniform(-half_width, half_width, size=(k, 2))
            origin = centre - 0.5 * (a + b)
            corners = np.stack([origin, origin + a, origin + a + b, origin + b], axis=1)
            if all(
                _separation(corners[i], corners[j]) >= 0.25
                for i in range(k)
                for j in range(i + 1, k)
            ):
                return corners
        half_width *= 1.2


def _separation(p: np.ndarray, q: np.ndarray) -> float:
    """A lower bound on the gap between two convex polygons (≤ 0 when they overlap).

    The largest gap between their projections on the edge normals (separating axis theorem).
    """
    best = -np.inf
    for poly in (p, q):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([-edges[:, 1], edges[:, 0]], 1)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        proj_p, proj_q = p @ normals.T, q @ normals.T  # (4, n_edges)
        gap = np.maximum(proj_q.min(0) - proj_p.max(0), proj_p.min(0) - proj_q.max(0))
        best = max(best, float(gap.max()))
    return best


def _balanced_labels(n_samples: int, n_classes: int) -> np.ndarray:
    counts = np.full(n_classes, n_samples // n_classes)
    counts[: n_samples % n_classes] += 1
    return np.repeat(np.arange(n_classes, dtype=np.int64), counts)


def _embed(
    points: np.ndarray,
    obs_dim: int,
    embedding: Embedding,
    noise_std: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, nn.Module | None]:
    if obs_dim == 2:
        net = None
        x = points.copy()
    elif embedding == "linear":
        q, r = np.linalg.qr(rng.standard_normal((obs_dim, 2)))
        q = q * np.sign(np.diag(r))  # orthonormal columns: an isometry of the plane
        net = nn.Linear(2, obs_dim, dtype=torch.float64, device="meta").to_empty(device="cpu")
        with torch.no_grad():
            net.weight.copy_(torch.from_numpy(q))
            net.bias.zero_()
        net.requires_grad_(False)
        x = points @ q.T
    else:
        net = random_decoder(2, obs_dim, calibration=points, random_state=rng)
        with torch.no_grad():
            x = net(torch.from_numpy(points)).numpy()
    if noise_std > 0:
        x = x + noise_std * rng.standard_normal(x.shape)
    return x, net


def _check_finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Expected {name} to be a number but got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"Expected a finite {name} but got {name} = {value}")
    return value


def _check_nonnegative(value: Any, name: str) -> float:
    value = _check_finite(value, name)
    if value < 0:
        raise ValueError(f"Expected {name} >= 0 but got {name} = {value}")
    return value


def _check_embedding(embedding: Any) -> None:
    if embedding not in ("leaky_relu", "linear"):
        raise ValueError(f"Expected embedding 'leaky_relu' or 'linear' but got {embedding!r}")

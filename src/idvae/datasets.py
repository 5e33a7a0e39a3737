"""Datasets of the paper's experiments (App. J.3) and readers for user data.

* ``pinwheel``: the pinwheel of Johnson et al. (2016), Fig. 2 of the paper.
* ``parallelograms``: uniform points in random parallelograms (App. J.3.2, Table 2).
* ``load_mnist`` / ``load_mnist_combined``: MNIST from the four IDX files, hash-checked
  (App. J.3.3, Table 3); the reader is ``idvae._mnist``, re-exported here.
* ``load_array``: ``.npy``, ``.npz`` (key ``x``; optional ``z``, ``u``, ``labels``) and
  ``.csv`` files, checked.
"""

from __future__ import annotations

import math
import numbers
import zlib
from dataclasses import dataclass
from pathlib import Path
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
    check_array,
    check_positive_int,
    check_random_state,
)
from idvae.simulate import random_decoder

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "Dataset",
    "LoadedArray",
    "Mnist",
    "load_array",
    "load_mnist",
    "load_mnist_combined",
    "parallelograms",
    "pinwheel",
    "read_idx",
]

Embedding = Literal["leaky_relu", "linear"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A synthetic dataset built from 2-D points.

    Attributes:
        x: float64 array of shape (n_samples, obs_dim): the observations.
        labels: int64 array of shape (n_samples,): the cluster of each point.
        points: float64 array of shape (n_samples, 2): the 2-D points before the embedding
            and the noise (the ground-truth latent space).
        embedding: the map from the plane to R^obs_dim (a float64 ``nn.Module``), or None
            when ``obs_dim == 2`` and x = points (+ noise).
        vertices: for ``parallelograms``, float64 array of shape (n_parallelograms, 4, 2),
            the corners of each parallelogram in order; else None.
    """

    x: np.ndarray
    labels: np.ndarray
    points: np.ndarray
    embedding: nn.Module | None = None
    vertices: np.ndarray | None = None


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
    return Dataset(x=x, labels=labels, points=points, embedding=net)


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
    return Dataset(x=x, labels=labels, points=points, embedding=net, vertices=vertices)


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


# -- user data ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LoadedArray:
    """Data read by ``load_array``.

    Attributes:
        x: float64 array of shape (n_samples, n_features).
        z: float64 array of shape (n_samples, latent_dim), or None.
        u: array of shape (n_samples,) or (n_samples, p) (int64 when integer-valued, else
            float64), or None.
        labels: int64 array of shape (n_samples,), or None.
    """

    x: np.ndarray
    z: np.ndarray | None = None
    u: np.ndarray | None = None
    labels: np.ndarray | None = None


def load_array(path: str | Path) -> LoadedArray:
    """Read observations (and optional truth) from ``.npy``, ``.npz`` or ``.csv``.

    * ``.npy``: a 2-D numeric array, x.
    * ``.npz``: key ``x`` (2-D); optional ``z`` (2-D), ``u`` (1-D or 2-D) and ``labels``
      (1-D, integers), each with as many rows as x. Other keys are ignored.
    * ``.csv``: rows of comma-separated numbers (whitespace-separated when no comma occurs),
      an optional header line of column names.

    Pickled (object) arrays are refused. Errors (ValueError, or FileNotFoundError for a
    missing file) name the file and say what was expected.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from idvae.datasets import load_array
        >>> path = os.path.join(tempfile.mkdtemp(), "data.npz")
        >>> np.savez(path, x=np.ones((3, 2)), labels=[0, 1, 1])
        >>> data = load_array(path)
        >>> data.x.shape, data.labels.tolist()
        ((3, 2), [0, 1, 1])
    """
    path = Path(path)
    try:
        return _load_array(path)
    except TypeError as err:  # wrong content of a file is a value error, like any other
        raise ValueError(str(err)) from None


def _load_array(path: Path) -> LoadedArray:
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz", ".csv"):
        raise ValueError(f"Expected a data file ending in .npy, .npz or .csv but got {str(path)!r}")
    if not path.exists():
        raise FileNotFoundError(f"Expected a data file at {path} but it does not exist")
    if not path.is_file():
        raise ValueError(f"Expected {path} to be a file but it is a directory")
    if path.stat().st_size == 0:
        raise ValueError(f"Expected data in {path} but the file is empty")
    if suffix == ".csv":
        return LoadedArray(x=_check_x(_read_csv(path), path))
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zlib.error) as err:
        raise _numpy_error(err, path) from None
    is_archive = isinstance(loaded, np.lib.npyio.NpzFile)
    if is_archive != (suffix == ".npz"):
        if is_archive:
            loaded.close()
        kind = "a .npz archive" if is_archive else "a single .npy array"
        raise ValueError(f"Expected a {suffix} file at {path} but it holds {kind}")
    if suffix == ".npy":
        return LoadedArray(x=_check_x(loaded, path))
    with loaded:
        keys = set(loaded.files)
        if "x" not in keys:
            raise ValueError(
                f"Expected a key 'x' in {path} but it has keys {sorted(keys) or 'none'}"
            )
        try:
            arrays = {key: loaded[key] for key in ("x", "z", "u", "labels") if key in keys}
        except (ValueError, OSError, EOFError, zlib.error) as err:
            raise _numpy_error(err, path) from None
    x = _check_x(arrays["x"], path)
    n = x.shape[0]
    z = u = labels = None
    if "z" in arrays:
        z = check_array(arrays["z"], f"z in {path}", ndim=2)
        _check_rows(z, n, "z", path)
    if "u" in arrays:
        u = _check_u(arrays["u"], n, path)
    if "labels" in arrays:
        labels = _check_labels(arrays["labels"], n, path)
    return LoadedArray(x=x, z=z, u=u, labels=labels)


def _numpy_error(err: BaseException, path: Path) -> ValueError:
    if "Object arrays" in str(err):
        return ValueError(
            f"Expected numeric arrays in {path} but it holds pickled objects (refused)"
        )
    return ValueError(
        f"Expected a valid {path.suffix} file at {path} but it could not be read "
        f"(corrupted, or not written by numpy): {err}"
    )


def _check_x(x: Any, path: Path) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(
            f"Expected x in {path} to be a 2-D array (n_samples, n_features) but got "
            f"{arr.ndim}-D with shape {arr.shape}"
        )
    return check_array(arr, f"x in {path}", ndim=2)


def _check_rows(arr: np.ndarray, n: int, name: str, path: Path) -> None:
    if arr.shape[0] != n:
        raise ValueError(
            f"Expected {name} in {path} to have {n} rows like x but got {arr.shape[0]}"
        )


def _check_u(u: Any, n: int, path: Path) -> np.ndarray:
    arr = np.asarray(u)
    if arr.ndim not in (1, 2):
        raise ValueError(f"Expected u in {path} to be 1-D or 2-D but got {arr.ndim}-D")
    values = check_array(arr, f"u in {path}", ndim=arr.ndim)
    _check_rows(values, n, "u", path)
    if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_):
        return arr.astype(np.int64)
    return values


def _check_labels(labels: Any, n: int, path: Path) -> np.ndarray:
    values = check_array(labels, f"labels in {path}", ndim=1)
    _check_rows(values, n, "labels", path)
    if not np.all(values == np.round(values)):
        raise ValueError(f"Expected integer labels in {path} but got non-integer values")
    return values.astype(np.int64)


def _read_csv(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"Expected a text CSV file at {path} but it is not UTF-8 text") from None
    lines = [(i + 1, line.strip()) for i, line in enumerate(text.splitlines()) if line.strip()]
    if not lines:
        raise ValueError(f"Expected data in {path} but the file has no rows")
    sep = "," if any("," in line for _, line in lines) else None
    rows: list[list[float]] = []
    for index, (lineno, line) in enumerate(lines):
        fields = [f.strip() for f in (line.split(sep) if sep else line.split())]
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            if index == 0:
                continue  # a header line of column names
            bad = next(f for f in fields if not _is_number(f))
            raise ValueError(
                f"Expected numbers in {path} but line {lineno} holds {bad!r}"
            ) from None
    if not rows:
        raise ValueError(f"Expected rows of numbers in {path} but found only a header")
    width = len(rows[0])
    for (lineno, _), row in zip(lines[len(lines) - len(rows) :], rows, strict=True):
        if len(row) != width:
            raise ValueError(
                f"Expected {width} columns on every line of {path} but line {lineno} has {len(row)}"
            )
    return np.asarray(rows, dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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

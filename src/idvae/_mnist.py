"""MNIST from its four IDX files, hash-checked (App. J.3.3, Table 3).

``idvae.datasets`` is the public home of these names (``load_mnist``,
``load_mnist_combined``, ``read_idx``, ``Mnist``, ``MNIST_FILES``, ``MNIST_MIRRORS``): the
readers of the paper's data live together there.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idvae._validation import atomic_write

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "Mnist",
    "check_sha256",
    "load_mnist",
    "load_mnist_combined",
    "read_idx",
]

# sha256 of the decompressed IDX files
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# IDX type byte -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True, eq=False)
class Mnist:
    """MNIST as arrays.

    Attributes:
        x_train: float32 array of shape (60000, 784), pixel values in [0, 1].
        y_train: int64 array of shape (60000,), digits 0–9.
        x_test: float32 array of shape (10000, 784).
        y_test: int64 array of shape (10000,).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) into a numpy array of its stored dtype and shape."""
    path = Path(path)
    return _parse_idx(_read_bytes(path), path)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"Expected a file at {path} but it does not exist")
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(
            f"Expected a valid gzip file at {path} but it is corrupted or truncated ({err})"
        ) from None


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """IDX: two zero bytes, a type byte, a rank byte, rank big-endian uint32 sizes, data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"Expected an IDX file at {path} but its magic number is wrong")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(
            f"Expected an IDX type code in {sorted(_IDX_DTYPES)} in {path} but got {type_code:#04x}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"Expected an IDX header of {header} bytes in {path} but the file "
            f"has {len(data)} bytes (truncated)"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"Expected {expected} bytes in {path} for an IDX array of shape {shape} but got "
            f"{len(data)} ({state})"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def load_mnist(
    root: str | Path,
    *,
    download: bool = False,
    verify: bool = True,
    mirrors: Sequence[str] | None = None,
) -> Mnist:
    """Read MNIST from the four standard IDX files in ``root`` (gzip or plain).

    Looks for ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or with ``.gz``.

    Args:
        root: the folder holding the files.
        download: fetch missing files (``<name>.gz``) from ``mirrors`` into ``root``
            (each written atomically, and only after its hash checks when ``verify``).
        verify: compare the sha256 of each decompressed file with ``MNIST_FILES``.
        mirrors: base URLs tried in order; default ``MNIST_MIRRORS``.

    Returns:
        ``Mnist`` with float32 images in [0, 1] of shape (n, rows · cols) and int64 labels.

    Example:
        >>> from idvae.datasets import load_mnist
        >>> mnist = load_mnist("data/mnist", download=True)  # doctest: +SKIP
        >>> mnist.x_train.shape, mnist.y_test.shape  # doctest: +SKIP
        ((60000, 784), (10000,))
    """
    root = Path(root)
    if download and not root.exists():
        root.mkdir(parents=True)
    if root.exists() and not root.is_dir():
        raise ValueError(f"Expected {root} to be a directory but it is a file")
    mirrors = tuple(MNIST_MIRRORS if mirrors is None else mirrors)
    arrays = {}
    for name, digest in MNIST_FILES.items():
        path = _find_mnist_file(root, name)
        if path is None:
            if not download:
                raise FileNotFoundError(
                    f"Expected the MNIST file {name} (or {name}.gz) in {root} but it is "
                    "missing; pass download=True (CLI: --download) to fetch it"
                )
            path = _download(name, root, mirrors, digest if verify else None)
        data = _read_bytes(path)
        if verify:
            check_sha256(data, digest, path)
        arrays[name] = _parse_idx(data, path)
    x_train, y_train = _images_and_labels(
        arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"], root, "train"
    )
    x_test, y_test = _images_and_labels(
        arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"], root, "t10k"
    )
    return Mnist(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def load_mnist_combined(
    root: str | Path, *, download: bool = False, verify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 MNIST images (train then test), as used for Table 3.

    Returns:
        (x, y): float32 array of shape (70000, 784) in [0, 1] and int64 labels (70000,).
    """
    mnist = load_mnist(root, download=download, verify=verify)
    return (
        np.concatenate([mnist.x_train, mnist.x_test]),
        np.concatenate([mnist.y_train, mnist.y_test]),
    )


def _find_mnist_file(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def check_sha256(data: bytes, digest: str, path: Path) -> None:
    """Raise ValueError unless ``data`` (read from ``path``) has the sha256 ``digest``."""
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        raise ValueError(
            f"Expected sha256 {digest} for the decompressed content of {path} but got {got}: "
            "the file is corrupted or not the original; delete it and download again"
        )


def _images_and_labels(
    images: np.ndarray, labels: np.ndarray, root: Path, split: str
) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"Expected {split} images in {root} as a 3-D unsigned byte IDX array but got "
            f"{images.ndim}-D {images.dtype}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"Expected {split} labels in {root} as a 1-D unsigned byte IDX array but got "
            f"{labels.ndim}-D {labels.dtype}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Expected as many {split} labels as images in {root} but got {labels.shape[0]} "
            f"labels for {images.shape[0]} images"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"Expected {split} labels 0-9 in {root} but got {int(labels.max())}")
    x = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


def _download(name: str, root: Path, mirrors: Sequence[str], digest: str | None) -> Path:
    target = root / f"{name}.gz"
    errors = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                raw = response.read()
            data = gzip.decompress(raw)
            if digest is not None:
                check_sha256(data, digest, Path(url))
        except (urllib.error.URLError, OSError, EOFError, zlib.error, ValueError) as err:
            errors.append(f"{url}: {err}")
            continue
        with atomic_write(target, "wb") as fh:
            fh.write(raw)
        return target
    raise OSError(f"Could not download {name}.gz from any mirror: " + "; ".join(errors))


# -- argument checks ----------------------------------------------------------------------

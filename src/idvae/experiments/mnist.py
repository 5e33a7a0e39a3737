"""MNIST for Table 3: the check that a folder holds the four IDX files, and all 70,000 images.

The files are read by :func:`idvae.datasets.load_mnist_combined` (sha256-verified); nothing
is downloaded here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["MNIST_FILES", "check_mnist_root", "load_mnist_all"]

# the prefixes of the four IDX files (gzipped or not)
MNIST_FILES = ("train-images", "train-labels", "t10k-images", "t10k-labels")


def load_mnist_all(root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 MNIST images (train then test) as float32 in [0, 1], and their labels."""
    from idvae.datasets import load_mnist_combined

    return load_mnist_combined(root)


def check_mnist_root(root: str | Path | None) -> Path:
    """The MNIST directory, or a ValueError saying what is missing."""
    if root is None:
        raise ValueError(
            "Expected --mnist-root PATH (a directory with the four MNIST IDX files) for "
            "table3 but got none"
        )
    path = Path(root)
    if not path.is_dir():
        raise ValueError(f"Expected an MNIST directory at {path} but it does not exist")
    names = [p.name for p in path.iterdir()]
    missing = [w for w in MNIST_FILES if not any(n.startswith(w) for n in names)]
    if missing:
        raise ValueError(
            f"Expected the MNIST IDX files in {path} but {', '.join(missing)} are missing"
        )
    return path

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

# The test networks are small: one torch thread is several times faster than two, and
# never oversubscribes the two cores of CI.
torch.set_num_threads(1)
# A local Ray runtime started by a test reports nothing home.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def in_ci() -> bool:
    """True under CI (``CI=true``), where every test must run."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(available: bool, what: str, how: str) -> None:
    """Skip a test whose external dependency is missing; under CI that is a failure.

    ``.ci/run`` installs every dependency, so a skip there would hide a broken install.
    """
    if available:
        return
    message = f"{what} is missing ({how})"
    if in_ci():
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def mnist_root() -> Path:
    """The MNIST folder: ``$IDVAE_MNIST_ROOT``, else ``../shared/data/mnist`` next to the repo."""
    given = os.environ.get("IDVAE_MNIST_ROOT")
    return Path(given) if given else REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts on one torch thread, and one that changes the count cannot leak it."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def ray() -> ModuleType:
    """The ``ray`` module (the ``ray`` extra)."""
    try:
        module = importlib.import_module("ray")
    except ImportError:
        module = None
    require(module is not None, "Ray", "pip install -e '.[ray]'")
    return module


@pytest.fixture
def browser() -> str:
    """Path of a headless-capable Chromium."""
    found = next((p for p in map(shutil.which, BROWSERS) if p), None)
    require(found is not None, "a headless browser", "make browser: apt-get install -y chromium")
    return found


@pytest.fixture
def mnist() -> Path:
    """The folder holding the four MNIST IDX files."""
    root = mnist_root()
    if not root.is_dir() and os.environ.get("IDVAE_CI_WITHOUT_MNIST") == "1":
        # .ci/run found no data folder next to the checkout and said so in its log
        pytest.skip(f"MNIST at {root} is missing (no data folder next to this checkout)")
    require(root.is_dir(), f"MNIST at {root}", "set IDVAE_MNIST_ROOT")
    return root

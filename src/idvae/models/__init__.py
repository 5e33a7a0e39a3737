"""The estimators of Sec. 4: VaDE, VAE, MFCVAE, IVAE, on one shared base, and ``load``.

``REGISTRY`` maps a model name (``"vade"``, ``"vae"``, ``"mfcvae"``, ``"ivae"``) to its
class; ``load`` and the CLI use it.
"""

from __future__ import annotations

import importlib
from typing import Any

from idvae.models._base import REGISTRY, LatentEstimator
from idvae.models._io import load
from idvae.models.vade import VaDE
from idvae.models.vae import VAE
from idvae.training import ComponentCollapseWarning, TrainingError

__all__ = [
    "IVAE",
    "MFCVAE",
    "REGISTRY",
    "VAE",
    "ComponentCollapseWarning",
    "LatentEstimator",
    "TrainingError",
    "VaDE",
    "get_estimator",
    "load",
]

# estimators written in modules of their own; imported when present
_OPTIONAL = {
    "VaDE": "idvae.models.vade",
    "MFCVAE": "idvae.models.mfcvae",
    "IVAE": "idvae.models.ivae",
}
for _name, _module in _OPTIONAL.items():
    try:
        globals()[_name] = getattr(importlib.import_module(_module), _name)
    except (ImportError, AttributeError):
        pass


def get_estimator(name: str) -> type[LatentEstimator]:
    """The estimator class registered under ``name`` (``"vade"``, ``"vae"``, ...)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"Expected a model in {sorted(REGISTRY)} but got {name!r}") from None


def __getattr__(name: str) -> Any:
    if name in _OPTIONAL:
        raise AttributeError(f"{name} is not available: {_OPTIONAL[name]} has not been written")
    raise AttributeError(f"module 'idvae.models' has no attribute {name!r}")

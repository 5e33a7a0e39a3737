"""The estimators of Sec. 4: VaDE, VAE, MFCVAE, IVAE, on one shared base, and ``load``.

``REGISTRY`` (``idvae.models._registry``) maps a model name (``"vade"``, ``"vae"``,
``"mfcvae"``, ``"ivae"``) to its class; ``load``, the CLI and the executors look models up
there. Importing this package imports every model module, which registers it.
"""

from __future__ import annotations

from idvae.models._base import LatentEstimator
from idvae.models._io import load
from idvae.models._registry import REGISTRY, aux_argument, get_estimator, model_name, register
from idvae.models.ivae import IVAE
from idvae.models.mfcvae import MFCVAE
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
    "aux_argument",
    "get_estimator",
    "load",
    "model_name",
    "register",
]

"""idvae: identifiable deep latent variable models (Kivva et al., NeurIPS 2022).

Submodules are imported lazily so ``import idvae`` stays cheap and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "GMM",
    "IVAE",
    "MFCVAE",
    "VAE",
    "VaDE",
    "datasets",
    "exact",
    "identify",
    "load",
    "metrics",
    "simulate",
    "stability",
]

# public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "GMM": ("idvae.mixture", "GMM"),
    "VaDE": ("idvae.models", "VaDE"),
    "VAE": ("idvae.models", "VAE"),
    "MFCVAE": ("idvae.models", "MFCVAE"),
    "IVAE": ("idvae.models", "IVAE"),
    "load": ("idvae.models", "load"),
    "stability": ("idvae.experiments", "stability"),
    "datasets": ("idvae.datasets", None),
    "exact": ("idvae.exact", None),
    "identify": ("idvae.identify", None),
    "metrics": ("idvae.metrics", None),
    "simulate": ("idvae.simulate", None),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'idvae' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

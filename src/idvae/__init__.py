"""idvae: identifiable deep latent variable models (Kivva et al., NeurIPS 2022).

Submodules are imported lazily so ``import idvae`` stays cheap and has no side effects.
"""

from __future__ import annotations

from idvae._lazy import lazy_getattr

__version__ = "0.1.0"

__all__ = [
    "GMM",
    "Data",
    "IVAE",
    "MFCVAE",
    "VAE",
    "VaDE",
    "data",
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
    "Data": ("idvae.data", "Data"),
    "VaDE": ("idvae.models", "VaDE"),
    "VAE": ("idvae.models", "VAE"),
    "MFCVAE": ("idvae.models", "MFCVAE"),
    "IVAE": ("idvae.models", "IVAE"),
    "load": ("idvae.models", "load"),
    "stability": ("idvae.experiments", "stability"),
    "data": ("idvae.data", None),
    "datasets": ("idvae.datasets", None),
    "exact": ("idvae.exact", None),
    "identify": ("idvae.identify", None),
    "metrics": ("idvae.metrics", None),
    "simulate": ("idvae.simulate", None),
}


__getattr__ = lazy_getattr("idvae", globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

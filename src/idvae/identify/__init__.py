"""The identifiability toolkit: each rung of the paper's Table 1 as a function.

- ``disentangle`` / ``canonicalize`` / ``check_p2`` (Thm E.1): Z from an affine image of it,
  up to permutation, scaling and translation, under (P2).
- ``recover_structure`` (Thm F.1): the discrete structure of a multivariate U under (P3).
- ``check_decoder`` (App. H): is a ReLU / LeakyReLU MLP weakly, observably or fully injective
  ((F2)-(F4))?
- ``counterexamples``: Remark 3.6, Examples 4 and 5, and a ReLU net meeting the hypotheses
  of Cor. H.2 that is not even weakly injective.
- ``identifiability_report``: which row of Table 1 a fitted model meets, and what follows.
"""

from __future__ import annotations

from idvae._lazy import lazy_getattr
from idvae.identify.affine import (
    AffineMap,
    IdentifiabilityWarning,
    NotIdentifiableError,
    P2Report,
    canonical_form,
    canonicalize,
    check_p2,
    disentangle,
    perm_scale_error,
)
from idvae.identify.structure import (
    Structure,
    random_structured_gmm,
    recover_structure,
    same_structure,
    structured_gmm,
)

__all__ = [
    "AffineMap",
    "DecoderReport",
    "IdentifiabilityReport",
    "IdentifiabilityWarning",
    "NotIdentifiableError",
    "P2Report",
    "Structure",
    "canonical_form",
    "canonicalize",
    "check_decoder",
    "check_p2",
    "counterexamples",
    "disentangle",
    "identifiability_report",
    "perm_scale_error",
    "random_structured_gmm",
    "recover_structure",
    "same_structure",
    "structured_gmm",
]

# torch-dependent parts load on first use
_LAZY = {
    "DecoderReport": ("idvae.identify.decoder", "DecoderReport"),
    "check_decoder": ("idvae.identify.decoder", "check_decoder"),
    "IdentifiabilityReport": ("idvae.identify.report", "IdentifiabilityReport"),
    "identifiability_report": ("idvae.identify.report", "identifiability_report"),
    "counterexamples": ("idvae.identify.counterexamples", None),
}


__getattr__ = lazy_getattr("idvae.identify", globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Which row of the paper's Table 1 a fitted model meets, and what it therefore identifies.

Table 1 (with the theorems behind each row):

| row | prior | decoder | identified | theorems |
|---|---|---|---|---|
| 1 | (P1) | (F1), (F2) | P(Z) up to an affine map | 3.2(a), 3.3(a) |
| 2 | (P1) | (F1), (F4) | P(Z) and f up to an affine map | 3.2(c), 3.3(d) |
| 3 | (P1), (P2) | (F1), (F4) | P(Z), f up to perm., scaling, translation | 3.2(b), 3.3(b) |
| 4 | (P1)-(P3) | (F1), (F4) | P(U, Z), f up to perm., scaling, translation | 3.3(c), (d) |

(F1) holds for every MLP of Linear and ReLU/LeakyReLU layers; (P1) for every GMM prior.
The theorems are finer than the rows — (F2) + (P2) already give P(Z) up to permutation,
scaling and translation (Thm 3.3(b)) — and the report lists each conclusion that applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from idvae.identify.affine import (
    AffineMap,
    NotIdentifiableError,
    P2Report,
    check_p2,
    disentangle,
)
from idvae.identify.structure import DECISIVE_GAP, Structure, recover_structure
from idvae.mixture import GMM

__all__ = ["TABLE_1", "IdentifiabilityReport", "find_decoder", "identifiability_report"]

TABLE_1: dict[int, tuple[str, str, str]] = {
    0: ("-", "-", "no guarantee from the paper: the decoder is not known to meet (F2)"),
    1: ("(P1)", "(F1), (F2)", "P(Z) identifiable up to an affine transformation"),
    2: ("(P1)", "(F1), (F4)", "P(Z) and f identifiable up to an affine transformation"),
    3: (
        "(P1), (P2)",
        "(F1), (F4)",
        "P(Z) and f identifiable up to permutation, scaling and translation",
    ),
    4: (
        "(P1), (P2), (P3)",
        "(F1), (F4)",
        "P(U,Z) and f identifiable up to permutation, scaling and translation",
    ),
}


@dataclass(frozen=True, eq=False)
class IdentifiabilityReport:
    """The identifiability status of a fitted model (or of a prior and a decoder).

    Attributes:
        row: the highest row of Table 1 whose assumptions hold (0 when none).
        conclusions: every statement of Thms 3.2/3.3 whose assumptions hold.
        n_components: J of the prior.
        latent_dim: m.
        p2: the (P2) check of the prior.
        decoder: the ``DecoderReport`` of the decoder, or None when there is none.
        canonical_map: the map to canonical coordinates (Thm E.1) when (P2) holds.
        structure: the recovered discrete structure (Thm F.1) when (P2) holds.
        latents: canonical latents of ``X`` when ``X`` was given and (P2) holds.
        notes: caveats (empirical decisions, estimated inputs, ...).
        row_certified: whether the decoder conditions of ``row`` are proved (App. H
            certificates) rather than checked empirically.
    """

    row: int
    conclusions: list[str]
    n_components: int
    latent_dim: int
    p2: P2Report
    decoder: Any | None
    canonical_map: AffineMap | None
    structure: Structure | None
    latents: np.ndarray | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    row_certified: bool = False

    @property
    def p3(self) -> bool:
        """Whether a product structure meeting (P3) was recovered."""
        return bool(self.structure is not None and self.structure.meets_p3)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (latents left out)."""
        prior_a, decoder_a, claim = TABLE_1[self.row]
        return {
            "row": self.row,
            "row_certified": self.row_certified,
            "table_1": {"prior": prior_a, "decoder": decoder_a, "identified": claim},
            "conclusions": list(self.conclusions),
            "n_components": self.n_components,
            "latent_dim": self.latent_dim,
            "p1": True,
            "p2": self.p2.to_dict(),
            "p3": self.p3,
            "decoder": None if self.decoder is None else self.decoder.to_dict(),
            "canonical_map": None if self.canonical_map is None else self.canonical_map.to_dict(),
            "structure": None if self.structure is None else self.structure.to_dict(),
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        prior_a, decoder_a, claim = TABLE_1[self.row]
        how = "" if self.row == 0 or self.row_certified else " (decoder checked empirically)"
        lines = [
            f"Table 1, row {self.row}{how}: prior {prior_a}, decoder {decoder_a}",
            f"  => {claim}",
            f"prior: GMM with J = {self.n_components} components in m = {self.latent_dim} "
            "dimensions: (P1) holds",
            f"(P2): {'holds' if self.p2.holds else 'fails'}",
            *[f"  - {r}" for r in self.p2.reasons],
        ]
        if self.decoder is None:
            lines.append("decoder: none given; (F2)-(F4) unknown")
        else:
            d = self.decoder
            for name, value in (
                ("(F2) weakly injective", d.weakly_injective),
                ("(F3) observably injective", d.observably_injective),
                ("(F4) injective", d.injective),
            ):
                key = {"(F2)": "weakly_injective", "(F3)": "observably_injective"}.get(
                    name[:4], "injective"
                )
                how = "proof" if d.certified.get(key) else "empirical"
                lines.append(f"{name}: {value} ({how})")
            lines.extend(f"  - {r}" for r in d.reasons)
        if self.structure is not None:
            lines.append(f"(P3) structure: {'found' if self.p3 else 'not found'}")
            lines.extend("  " + s for s in str(self.structure).splitlines())
        lines.append("conclusions:")
        lines.extend(f"  - {c}" for c in self.conclusions)
        if self.notes:
            lines.append("notes:")
            lines.extend(f"  - {n}" for n in self.notes)
        return "\n".join(lines)


def find_decoder(obj: Any) -> Any | None:
    """The decoder MLP (an ``nn.Sequential``) of an estimator, a simulation or a module.

    Looks at ``module_.decoder.net`` (idvae estimators), ``decoder`` (``Simulation``, or
    an ``nn.Module`` with a ``net``), in that order; returns None when there is none.
    """
    from torch import nn

    candidates = []
    module = getattr(obj, "module_", None)
    if module is not None:
        candidates.append(getattr(module, "decoder", None))
    candidates.append(getattr(obj, "decoder", None))
    for cand in candidates:
        if cand is None:
            continue
        if isinstance(cand, nn.Sequential):
            return cand
        net = getattr(cand, "net", None)
        if isinstance(net, nn.Module):
            return net
        if isinstance(cand, nn.Module):
            return cand
    return None


def _parts(obj: Any) -> tuple[GMM, Any | None, Any | None]:
    """(prior, decoder, estimator-or-None) from an estimator, a Simulation, a dict or a tuple."""
    if isinstance(obj, GMM):
        return obj, None, None
    if isinstance(obj, dict):
        prior, decoder = obj.get("prior"), obj.get("decoder")
        est = None
    elif isinstance(obj, tuple | list) and len(obj) == 2:
        prior, decoder = obj
        est = None
    else:
        prior = getattr(obj, "prior_", None)
        est = obj if prior is not None else None
        if prior is None:
            prior = getattr(obj, "prior", None)
        decoder = find_decoder(obj)
    if not isinstance(prior, GMM):
        raise TypeError(
            "Expected a fitted estimator (prior_), a Simulation (prior), a GMM, a dict with "
            f"'prior' and 'decoder' or a (prior, decoder) pair but got {type(obj).__name__}"
        )
    return prior, decoder, est


def identifiability_report(
    estimator_or_parts: Any,
    X: Any = None,
    *,
    random_state: Any = 0,
    n_points: int = 512,
    structure: bool = True,
) -> IdentifiabilityReport:
    """Check the assumptions of Table 1 on a fitted model and say what follows.

    Args:
        estimator_or_parts: a fitted estimator (``prior_`` and a decoder, e.g. ``idvae.VaDE``),
            an ``idvae.simulate.Simulation`` (the truth), a ``GMM`` (prior only), a dict
            ``{"prior": GMM, "decoder": nn.Module}`` or a ``(prior, decoder)`` pair.
        X: optional data, array of shape (n_samples, n_features); with an estimator and
            (P2), its canonical latents are returned in ``latents``.
        random_state: seed of the decoder's empirical checks.
        n_points: points sampled by ``check_decoder``.
        structure: whether to recover the U structure (Thm F.1) when (P2) holds.

    Returns:
        An ``IdentifiabilityReport``; ``str(report)`` renders it, ``to_dict()`` gives JSON.
    """
    prior, decoder, est = _parts(estimator_or_parts)
    notes: list[str] = []
    p2 = check_p2(prior)
    dec = None
    if decoder is not None:
        from idvae.identify.decoder import check_decoder

        dec = check_decoder(decoder, n_points=n_points, random_state=random_state)
        if not all(dec.certified.values()):
            notes.append("some decoder conclusions are empirical (see reasons), not proofs")
    f2 = bool(dec is not None and dec.weakly_injective)
    f4 = bool(dec is not None and dec.injective)

    canonical, struct = _canonical_structure(prior, p2.holds, structure, notes)
    p3 = bool(struct is not None and struct.meets_p3)

    row = _table1_row(f2, f4, p2.holds, p3, struct)

    conclusions = _conclusions(f2, f4, p2.holds, p3, struct)
    if dec is None:
        notes.append("no decoder given: the decoder rows of Table 1 cannot be checked")
    if p2.holds and p2.n_components > 1 and p2.offdiagonality > 1e-8:
        notes.append(
            "the prior is only approximately an affine image of a diagonal mixture "
            f"(max |corr| {p2.offdiagonality:.2g} after joint diagonalisation)"
        )

    key = "weakly_injective" if row == 1 else "injective"
    row_certified = bool(dec is not None and row > 0 and dec.certified.get(key, False))

    latents = None
    if X is not None:
        if est is None or not hasattr(est, "transform"):
            raise TypeError("Expected an estimator with transform() when X is given")
        if canonical is None:
            notes.append("(P2) fails: no canonical latents; transform(X) is only affine-identified")
        else:
            latents = canonical.apply(np.asarray(est.transform(X), dtype=np.float64))
    return IdentifiabilityReport(
        row=row,
        conclusions=conclusions,
        n_components=prior.n_components,
        latent_dim=prior.dim,
        p2=p2,
        decoder=dec,
        canonical_map=canonical,
        structure=struct,
        latents=latents,
        notes=notes,
        row_certified=row_certified,
    )


def _canonical_structure(
    prior: GMM, p2_holds: bool, structure: bool, notes: list[str]
) -> tuple[Any, Any]:
    """Thm E.1's canonical map when (P2) holds, and Thm F.1's U structure (or None each)."""
    canonical = None
    struct = None
    if p2_holds:
        try:
            canonical = disentangle(prior, strict=True)
        except NotIdentifiableError as err:  # pragma: no cover - check_p2 agrees
            notes.append(f"disentangle failed: {err}")
    if canonical is not None and structure:
        try:
            struct = recover_structure(canonical.pushforward(prior))
        except ValueError as err:
            notes.append(f"structure not recovered: {err}")
    if struct is not None and struct.n_facets > 1 and not struct.gap_ratio >= DECISIVE_GAP:
        notes.append(
            f"the U structure rests on grouping nearly equal parameters (tolerance "
            f"{struct.tolerance:.3g}, stable over a factor {struct.gap_ratio:.3g} only)"
        )
    return canonical, struct


def _conclusions(f2: bool, f4: bool, p2_holds: bool, p3: bool, struct: Any) -> list[str]:
    """What Thm 3.3 concludes from the assumptions that hold."""
    conclusions: list[str] = []
    if f2:
        conclusions.append("(F2): P(Z) is identifiable up to an affine map (Thm 3.3(a))")
        if p2_holds:
            conclusions.append(
                "(F2)+(P2): P(Z) is identifiable up to permutation, scaling and translation "
                "(Thm 3.3(b)); canonical coordinates given by Thm E.1"
            )
        if p2_holds and p3 and struct is not None:
            conclusions.append(
                f"(F2)+(P2)+(P3): k = {struct.n_facets}, d = {list(struct.facet_sizes)} and "
                "P(U) are identifiable up to a permutation of U (Thm 3.3(c), Thm F.1)"
            )
        if f4:
            conclusions.append(
                "(F4), f continuous: f is identifiable up to an affine map (Thm 3.3(d))"
                + ("; with (P2), up to permutation, scaling and translation" if p2_holds else "")
            )
    else:
        conclusions.append(
            "(F2) not established for the decoder: the paper gives no guarantee "
            "(Remark 3.6 shows identifiability can fail without it)"
        )
    return conclusions


def _table1_row(f2: bool, f4: bool, p2_holds: bool, p3: bool, struct: Any) -> int:
    """The highest row of Table 1 whose assumptions hold (0: none)."""
    if f2 and f4 and p2_holds and p3 and struct is not None and struct.n_facets > 1:
        return 4
    if f4 and p2_holds:
        return 3
    if f4:
        return 2
    if f2:
        return 1
    return 0

"""The paper's counterexamples as objects whose claims can be checked numerically.

* ``remark_3_6``: without (F2) Theorem 3.2 fails — f = g = |x| and two GMMs P, P′ that are
  not affine images of each other but have equal pushforwards (eq. (4)).
* ``example_4``: (F2) alone does not identify f — piecewise affine f, g with f(Y) ~ g(Y)
  for Y ~ ½N(−2, 1) + ½N(2, 1) (eqs. (14)-(15)), g not an affine reparametrisation of f.
* ``example_5``: a LeakyReLU network (slope ½) computing |x|/2, not weakly injective (App. H).
* ``example_1``: ReLU(−ReLU(x)) = 0, not even weakly injective (Example 1).
* ``relu_fold``: found while implementing App. H — a ReLU network with nondecreasing widths
  1 → 2 → 2 → 2, every layer of full column rank and dim f(R) = 1 = m, computing
  f(x) = (|x|, 0). It meets the hypotheses of Lemma H.1 / Cor. H.2 as stated, yet is not
  even weakly injective, so those ReLU conditions are not sufficient as stated.

Densities of 1-D pushforwards are computed in closed form by ``pushforward_pdf``: for a
piecewise affine f with pieces (interval I_k, slope a_k, intercept c_k), the density of f(Y)
at x is Σ_k p_Y((x − c_k)/a_k) / |a_k| over the pieces whose preimage of x lies in I_k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from idvae.mixture import GMM

__all__ = [
    "Counterexample",
    "PiecewiseAffine1D",
    "example_1",
    "example_4",
    "example_5",
    "pushforward_pdf",
    "relu_fold",
    "remark_3_6",
]


@dataclass(frozen=True)
class PiecewiseAffine1D:
    """A piecewise affine map of the real line: f(x) = slopes[k] x + intercepts[k] on piece k.

    Attributes:
        breaks: increasing interior breakpoints b_1 < … < b_{K−1}; piece k is
            [b_k, b_{k+1}) with b_0 = −∞, b_K = +∞.
        slopes: K slopes (non-zero).
        intercepts: K intercepts.
    """

    breaks: tuple[float, ...]
    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.slopes) != len(self.breaks) + 1 or len(self.intercepts) != len(self.slopes):
            raise ValueError(
                f"Expected {len(self.breaks) + 1} slopes and intercepts for "
                f"{len(self.breaks)} breaks but got {len(self.slopes)}, {len(self.intercepts)}"
            )
        if any(a == 0 for a in self.slopes):
            raise ValueError("Expected non-zero slopes (a flat piece has an atom)")

    def pieces(self) -> list[tuple[float, float, float, float]]:
        """(lo, hi, slope, intercept) of each piece."""
        edges = (-np.inf, *self.breaks, np.inf)
        return [
            (edges[k], edges[k + 1], self.slopes[k], self.intercepts[k])
            for k in range(len(self.slopes))
        ]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        k = np.searchsorted(np.asarray(self.breaks), x, side="right")
        return np.asarray(self.slopes)[k] * x + np.asarray(self.intercepts)[k]

    def kinks(self) -> tuple[float, ...]:
        """Breakpoints where the slope really changes (f continuous or not)."""
        return tuple(
            b
            for k, b in enumerate(self.breaks)
            if self.slopes[k] != self.slopes[k + 1] or self.intercepts[k] != self.intercepts[k + 1]
        )


def pushforward_pdf(f: PiecewiseAffine1D, gmm: GMM, x: np.ndarray) -> np.ndarray:
    """Density of f(Y) at points ``x`` (shape (n,)) for a 1-D ``gmm`` Y, in closed form."""
    if gmm.dim != 1:
        raise ValueError(f"Expected a 1-D mixture but got dimension {gmm.dim}")
    x = np.asarray(x, dtype=np.float64).ravel()
    out = np.zeros_like(x)
    for lo, hi, a, c in f.pieces():
        y = (x - c) / a
        inside = (y >= lo) & (y < hi)
        if np.any(inside):
            out[inside] += gmm.pdf(y[inside][:, None]) / abs(a)
    return out


@dataclass(frozen=True)
class Counterexample:
    """A counterexample: its maps, mixtures or network, and the claim it makes.

    Attributes:
        name: where it is in the paper.
        claim: the statement that the numbers verify.
        f: the first map (PiecewiseAffine1D, or a torch module for network examples).
        g: the second map, or None.
        p: the first mixture, or None.
        q: the second mixture, or None.
    """

    name: str
    claim: str
    f: object
    g: object | None = None
    p: GMM | None = None
    q: GMM | None = None


ABS = PiecewiseAffine1D(breaks=(0.0,), slopes=(-1.0, 1.0), intercepts=(0.0, 0.0))


def remark_3_6(sigma: float = 1.0) -> Counterexample:
    """Remark 3.6 (eq. (4)): |X| for X ~ P and X ~ P′ have the same law.

    P = ⅓N(−2, σ²) + ⅓N(−1, σ²) + ⅓N(3, σ²) and P′ = ⅓N(−2, σ²) + ⅓N(1, σ²) + ⅓N(3, σ²):
    folding N(−1, σ²) and N(1, σ²) at 0 gives the same law, but no affine map takes P to P′.
    """
    if not sigma > 0:
        raise ValueError(f"Expected sigma > 0 but got {sigma}")
    w = np.full(3, 1.0 / 3.0)
    var = np.full((3, 1), sigma**2)
    p = GMM(w, [[-2.0], [-1.0], [3.0]], var)
    q = GMM(w, [[-2.0], [1.0], [3.0]], var)
    return Counterexample(
        name="Remark 3.6",
        claim="|X| has the same law under P and P', but P' is not an affine image of P",
        f=ABS,
        g=ABS,
        p=p,
        q=q,
    )


def example_4() -> Counterexample:
    """Example 4 (eqs. (14)-(15)): f(Y) ~ g(Y) with f, g not affinely related.

    Y ~ ½N(−2, 1) + ½N(2, 1);
    f(x) = x − 4 (x ≥ 2), −x (−2 ≤ x < 2), x + 4 (−4 ≤ x < −2), (x + 4)/5 (x < −4);
    g(x) = x − 4 (x ≥ 4), −x + 4 (2 ≤ x < 4), x (−2 ≤ x < 2), −x − 4 (−4 ≤ x < −2),
    (x + 4)/5 (x < −4).
    """
    y = GMM([0.5, 0.5], [[-2.0], [2.0]], [[[1.0]], [[1.0]]])
    f = PiecewiseAffine1D(
        breaks=(-4.0, -2.0, 2.0), slopes=(0.2, 1.0, -1.0, 1.0), intercepts=(0.8, 4.0, 0.0, -4.0)
    )
    g = PiecewiseAffine1D(
        breaks=(-4.0, -2.0, 2.0, 4.0),
        slopes=(0.2, -1.0, 1.0, -1.0, 1.0),
        intercepts=(0.8, -4.0, 0.0, 4.0, -4.0),
    )
    return Counterexample(
        name="Example 4",
        claim="f(Y) and g(Y) have the same law but f is not g composed with an affine map",
        f=f,
        g=g,
        p=y,
        q=y,
    )


def _sequential(layers: Sequence[tuple[np.ndarray, np.ndarray] | float | None]) -> nn.Sequential:
    """Linear layers from (W, b) pairs, LeakyReLU(slope) from floats, ReLU from None."""
    mods: list[nn.Module] = []
    for spec in layers:
        if spec is None:
            mods.append(nn.ReLU())
        elif isinstance(spec, float):
            mods.append(nn.LeakyReLU(spec))
        else:
            W, b = (np.asarray(a, dtype=np.float64) for a in spec)
            lin = nn.Linear(W.shape[1], W.shape[0]).double()
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))
            mods.append(lin)
    return nn.Sequential(*mods).double()


def example_5() -> Counterexample:
    """Example 5 (App. H): h3 ∘ σ ∘ h2 ∘ σ ∘ h1 with σ LeakyReLU of slope ½ equals |x|/2.

    h1(x) = (x, −x), h2 = [[1, −1], [1, 1]], h3(x, y) = y. The last layer narrows 2 → 1,
    so App. H's width condition fails, and f is not weakly injective.
    """
    net = _sequential(
        [
            ([[1.0], [-1.0]], [0.0, 0.0]),
            0.5,
            ([[1.0, -1.0], [1.0, 1.0]], [0.0, 0.0]),
            0.5,
            ([[0.0, 1.0]], [0.0]),
        ]
    )
    return Counterexample(
        name="Example 5",
        claim="a LeakyReLU network computing f(x) = |x|/2: not weakly injective",
        f=net,
    )


def example_1() -> Counterexample:
    """Example 1: ReLU(−ReLU(x)) = 0 for every x — neither injective nor weakly injective."""
    net = _sequential([([[1.0]], [0.0]), None, ([[-1.0]], [0.0]), None])
    return Counterexample(name="Example 1", claim="ReLU(-ReLU(x)) = 0", f=net)


def relu_fold() -> Counterexample:
    """A ReLU network meeting Lemma H.1 / Cor. H.2's hypotheses that is not weakly injective.

    f = h3 ∘ ReLU ∘ h2 ∘ ReLU ∘ h1 with h1(x) = (x, −x), h2 = [[1, 1], [−1, −2]]
    (invertible), h3 = identity: widths 1 → 2 → 2 → 2 nondecreasing, every h_i of full
    column rank, dim f(R) = 1 = m, and f(x) = (|x|, 0): every point of the image but the
    origin has two preimages. (The proof of Lemma H.1 assumes the pieces of σ ∘ g outside
    the positive orthant do not overlap the rest of the image; here they do.)
    """
    net = _sequential(
        [
            ([[1.0], [-1.0]], [0.0, 0.0]),
            None,
            ([[1.0, 1.0], [-1.0, -2.0]], [0.0, 0.0]),
            None,
            ([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]),
        ]
    )
    return Counterexample(
        name="ReLU fold (Lemma H.1 / Cor. H.2)",
        claim="nondecreasing widths, full column rank, dim f(R) = 1, yet f(x) = (|x|, 0)",
        f=net,
    )

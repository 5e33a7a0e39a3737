"""Injectivity of ReLU / LeakyReLU decoders: (F2) weak, (F3) observable, (F4) full (App. H).

Certificates (proofs):

* every activation injective (LeakyReLU with slope > 0) and every affine layer of full
  column rank (so widths never decrease) ⇒ f is injective (F4), hence (F3) and (F2)
  (Lemma H.3 / Cor. H.4; Remark 3.1);
* output width n < input width m, or a first affine layer with a kernel ⇒ every fibre is
  infinite: none of (F2)-(F4);
* an exhibited pair z ≠ z' with f(z) = f(z'), both strictly inside linear regions, disproves
  (F4); when the two regions' images span the same m-flat the double points fill an open set
  of f(R^m), which disproves (F3) too.

With a one-dimensional latent space (m = 1) the question is decided exactly: the kinks of f
are found layer by layer and the finitely many linear pieces compared pairwise.

For ReLU networks App. H's Lemma H.1 / Cor. H.2 (nondecreasing widths and dim f(R^m) = m ⇒
(F3)) is *not* used as a certificate: ``counterexamples.relu_fold`` meets those hypotheses
(with every layer of full column rank) and is not even weakly injective. Undecided cases
are decided empirically — Jacobian ranks at sampled points, and a search for second
preimages by solving the affine equations of every linear region met — and the report says
which conclusions are proofs (``certified``) and which are evidence.

The module is long because App. H's decision is one procedure: the layer parsing, the exact
decision for m = 1 and the empirical search share one piecewise-linear representation of f.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from idvae._validation import RandomState, check_positive_int, check_random_state

__all__ = ["DecoderReport", "check_decoder", "decoder_layers"]


@dataclass(frozen=True)
class DecoderReport:
    """What is known about the injectivity of a piecewise affine decoder f: R^m → R^n.

    Attributes:
        weakly_injective: (F2); True / False / None when undecided.
        observably_injective: (F3).
        injective: (F4).
        certified: for each of the three fields, whether its value is a proof (True) or
            empirical evidence (False).
        reasons: how each conclusion was reached.
        input_dim: m.
        output_dim: n.
        widths: layer widths, input first.
        activations: the negative slope of each activation (0 for ReLU).
        witness: a pair (z, z') with f(z) = f(z'), z ≠ z', when one was found.
    """

    weakly_injective: bool | None
    observably_injective: bool | None
    injective: bool | None
    certified: dict[str, bool]
    reasons: list[str]
    input_dim: int
    output_dim: int
    widths: tuple[int, ...]
    activations: tuple[float, ...]
    witness: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description."""
        return {
            "weakly_injective": self.weakly_injective,
            "observably_injective": self.observably_injective,
            "injective": self.injective,
            "certified": dict(self.certified),
            "reasons": list(self.reasons),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "widths": list(self.widths),
            "activations": list(self.activations),
            "witness": None if self.witness is None else [w.tolist() for w in self.witness],
        }


# --------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------
Op = tuple[str, Any, Any]  # ("affine", W, b) or ("act", slope, None)


def _flatten(module: Any) -> list[nn.Module]:
    if isinstance(module, nn.Sequential | nn.ModuleList | list | tuple):
        out: list[nn.Module] = []
        for child in module:
            out.extend(_flatten(child))
        return out
    if isinstance(module, nn.Linear | nn.ReLU | nn.LeakyReLU | nn.Identity | nn.Dropout):
        return [module]
    if isinstance(getattr(module, "net", None), nn.Sequential):
        # an idvae Decoder: its mean is net(z) (through a sigmoid, injective, for Bernoulli)
        return _flatten(module.net)
    if isinstance(module, nn.Module):
        raise TypeError(
            f"Expected an MLP of Linear and ReLU/LeakyReLU layers (nn.Sequential) but got a "
            f"layer of type {type(module).__name__}"
        )
    raise TypeError(f"Expected a torch nn.Module but got {type(module).__name__}")


def decoder_layers(module: Any) -> list[Op]:
    """The decoder as float64 affine maps and activations, consecutive affines merged.

    Args:
        module: an ``nn.Sequential`` (possibly nested) of ``Linear``, ``ReLU``, ``LeakyReLU``,
            ``Identity`` and ``Dropout`` (identity in evaluation) layers, or one ``Linear``.

    Returns:
        A list of ``("affine", W, b)`` (W of shape (out, in)) and ``("act", slope, None)``.
    """
    ops: list[Op] = []
    for layer in _flatten(module):
        if isinstance(layer, nn.Linear):
            W = layer.weight.detach().cpu().double().numpy().copy()
            b = (
                layer.bias.detach().cpu().double().numpy().copy()
                if layer.bias is not None
                else np.zeros(W.shape[0])
            )
            if ops and ops[-1][0] == "affine":
                W0, b0 = ops[-1][1], ops[-1][2]
                if W.shape[1] != W0.shape[0]:
                    raise ValueError(
                        f"Expected a Linear layer with {W0.shape[0]} inputs but got {W.shape[1]}"
                    )
                ops[-1] = ("affine", W @ W0, W @ b0 + b)
            else:
                ops.append(("affine", W, b))
        elif isinstance(layer, nn.ReLU | nn.LeakyReLU):
            slope = float(layer.negative_slope) if isinstance(layer, nn.LeakyReLU) else 0.0
            if slope == 1.0:
                continue
            ops.append(("act", slope, None))
    if not any(op[0] == "affine" for op in ops):
        raise TypeError("Expected at least one Linear layer in the decoder but found none")
    return ops


def _forward(ops: list[Op], z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f(z), the Jacobians (N, n, m) and the smallest |pre-activation| margin per point."""
    h = z
    N, m = z.shape
    # Jacobians kept as (width, N, m) so each layer is one matrix product
    J = np.ascontiguousarray(np.broadcast_to(np.eye(m)[:, None, :], (m, N, m)))
    margin = np.full(N, np.inf)
    for kind, a, b in ops:
        if kind == "affine":
            h = h @ a.T + b
            J = (a @ J.reshape(J.shape[0], N * m)).reshape(a.shape[0], N, m)
        else:
            scale = np.maximum(np.abs(h).max(axis=1, keepdims=True), 1e-300)
            margin = np.minimum(margin, (np.abs(h) / scale).min(axis=1))
            gate = np.where(h > 0, 1.0, a)
            h = h * gate
            J = J * gate.T[:, :, None]
    return h, np.ascontiguousarray(J.transpose(1, 0, 2)), margin


def _pattern(ops: list[Op], z: np.ndarray) -> np.ndarray:
    """The activation pattern (which units are positive) of each point, as a bool array."""
    h = z
    bits = []
    for kind, a, b in ops:
        if kind == "affine":
            h = h @ a.T + b
        else:
            bits.append(h > 0)
            h = np.where(h > 0, h, a * h)
    return np.concatenate(bits, axis=1) if bits else np.zeros((z.shape[0], 0), dtype=bool)


# --------------------------------------------------------------------------------------
# exact analysis for a one-dimensional latent space
# --------------------------------------------------------------------------------------
_MAX_BREAKS = 20_000


def _preactivations(ops: list[Op], x: np.ndarray) -> list[np.ndarray]:
    """The input of every activation at the points x (shape (N, 1))."""
    h, out = x, []
    for kind, a, b in ops:
        if kind == "affine":
            h = h @ a.T + b
        else:
            out.append(h.copy())
            h = np.where(h > 0, h, a * h)
    return out


def _breakpoints_1d(ops: list[Op]) -> np.ndarray | None:
    """All kinks of f: R -> R^n, found layer by layer (None when there are too many)."""
    breaks = np.zeros(0)
    n_acts = sum(op[0] == "act" for op in ops)
    for layer in range(n_acts):
        probe = np.concatenate([[breaks[0] - 1.0] if breaks.size else [-1.0], breaks])
        probe = np.concatenate([probe, [probe[-1] + 1.0] if breaks.size else [0.0, 1.0]])
        g = _preactivations(ops, probe[:, None])[layer]  # (P, width), linear between probes
        new = probe[np.any(g == 0.0, axis=1)].tolist()  # a unit exactly at zero on a probe
        a, b = g[:-1], g[1:]
        cross = (a * b) < 0
        for i, u in zip(*np.nonzero(cross), strict=True):
            t = a[i, u] / (a[i, u] - b[i, u])
            new.append(probe[i] + t * (probe[i + 1] - probe[i]))
        # the two rays beyond the outermost probes
        for end, step in ((0, -1.0), (-1, 1.0)):
            x0 = probe[end]
            slope = (g[end] - g[end + (1 if end == 0 else -1)]) / (
                x0 - probe[end + (1 if end == 0 else -1)]
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                root = x0 - g[end] / slope
            ok = np.isfinite(root) & ((root - x0) * step > 0)
            new.extend(root[ok].tolist())
        breaks = np.unique(np.concatenate([breaks, np.asarray(new, dtype=np.float64)]))
        if breaks.size > _MAX_BREAKS:
            return None
    return breaks


def _pieces_1d(ops: list[Op], breaks: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Each linear piece as (start point p, direction d, length L): {p + t d, t in [0, L]}."""

    def f(x: np.ndarray) -> np.ndarray:
        return _forward(ops, np.asarray(x, dtype=np.float64)[:, None])[0]

    if breaks.size == 0:
        p, q = f(np.array([0.0, 1.0]))
        return [(p, q - p, np.inf), (p, p - q, np.inf)]
    vals = f(np.concatenate([[breaks[0] - 1.0], breaks, [breaks[-1] + 1.0]]))
    pieces = [(vals[1], vals[0] - vals[1], np.inf)]  # left ray, walking leftwards
    for i in range(1, len(breaks)):
        pieces.append((vals[i], vals[i + 1] - vals[i], 1.0))
    pieces.append((vals[-2], vals[-1] - vals[-2], np.inf))
    return pieces


def _piece_x(index: int, t: float, breaks: np.ndarray) -> np.ndarray:
    """The latent point x (shape (1,)) at parameter t of linear piece ``index``."""
    if breaks.size == 0:
        return np.array([t if index == 0 else -t])
    if index == 0:
        return np.array([breaks[0] - t])
    if index == len(breaks):
        return np.array([breaks[-1] + t])
    return np.array([breaks[index - 1] + t * (breaks[index] - breaks[index - 1])])


def _exact_1d(ops: list[Op]) -> tuple[bool, bool, bool, list[str], Any] | None:
    """Decide (F2)-(F4) exactly for m = 1 from the finitely many linear pieces of f."""
    breaks = _breakpoints_1d(ops)
    if breaks is None:
        return None
    pieces = _pieces_1d(ops, breaks)
    scale = max(1.0, max(float(np.abs(p).max()) for p, _, _ in pieces))
    tol = 1e-9 * scale
    flat = [np.linalg.norm(d) <= tol for _, d, _ in pieces]
    # the left ray and the first segment meet at breaks[0] (same x): neighbours in this list
    order = list(range(len(pieces)))
    adjacent = {(i, i + 1) for i in order[:-1]}
    if breaks.size == 0:
        adjacent = {(0, 1)}
    double, overlap, witness, covered = _compare_pieces(pieces, flat, adjacent, tol)
    reasons = [
        f"m = 1, decided exactly: f has {breaks.size} kink(s); its {len(pieces)} linear "
        "pieces were compared pairwise"
    ]
    unique_part = _has_unique_part(pieces, flat, covered)
    any_flat = any(flat)
    f4 = not (double or any_flat)
    f3 = not overlap and not all(flat)
    f2 = unique_part
    if any_flat:
        reasons.append("a linear piece is constant: its points have infinitely many preimages")
    if overlap:
        reasons.append("two linear pieces overlap along a segment: (F3) fails")
    elif double:
        reasons.append("two linear pieces meet at a point: (F4) fails, (F3) holds")
    reasons.append(
        "(F2) holds: some piece has points with a unique preimage"
        if f2
        else "(F2) fails: every point of the image has more than one preimage"
    )
    return f2, f3, f4, reasons, (witness, pieces, breaks)


# --------------------------------------------------------------------------------------
# the check
# --------------------------------------------------------------------------------------
def _rank(M: np.ndarray) -> int:
    s = np.linalg.svd(M, compute_uv=False)
    if s.size == 0 or s[0] == 0:
        return 0
    return int(np.sum(s > s[0] * max(M.shape) * 1e-10))


def _compare_pieces(
    pieces: list, flat: list[bool], adjacent: set[tuple[int, int]], tol: float
) -> tuple[bool, bool, Any, list[list[tuple[float, float]]]]:
    """Compare the linear pieces of f pairwise (m = 1).

    Returns:
        Whether two pieces share a point (a double point), whether two overlap along a
        segment, a witness ``(i, s, j, t)`` of a double point (or None), and per piece the
        parameter intervals that another piece covers too.
    """
    order = list(range(len(pieces)))
    double, overlap, witness = False, False, None
    covered: list[list[tuple[float, float]]] = [[] for _ in pieces]
    for i in order:
        for j in order[i + 1 :]:
            if flat[i] or flat[j]:
                continue
            p, d, L = pieces[i]
            q, e, M = pieces[j]
            dn = d / np.linalg.norm(d)
            en = e / np.linalg.norm(e)
            parallel = abs(abs(dn @ en) - 1.0) <= 1e-12
            off = (q - p) - ((q - p) @ dn) * dn
            if parallel and np.linalg.norm(off) <= tol:
                # collinear: overlap of the two parameter intervals along d
                s0 = (q - p) @ d / (d @ d)
                ratio = (e @ d) / (d @ d)
                s1 = s0 + ratio * M  # ±inf for a ray
                lo, hi = max(0.0, min(s0, s1)), min(L, max(s0, s1))
                if hi - lo > 1e-9 * max(1.0, abs(lo)):
                    overlap = double = True
                    covered[i].append((lo, hi))
                    r0 = (p + lo * d - q) @ e / (e @ e)
                    r1 = (p + hi * d - q) @ e / (e @ e) if np.isfinite(hi) else np.inf
                    covered[j].append((min(r0, r1), max(r0, r1)))
                    if witness is None:
                        mid = lo + 0.5 * (min(hi, lo + 1.0) - lo)
                        witness = (i, mid, j, (p + mid * d - q) @ e / (e @ e))
                elif hi - lo >= -1e-12 and (i, j) not in adjacent:
                    double = True  # the pieces touch at one point
                continue
            if parallel:
                continue
            A = np.stack([d, -e], axis=1)
            (s, t), *_ = np.linalg.lstsq(A, q - p, rcond=None)
            if np.linalg.norm(p + s * d - q - t * e) > tol:
                continue
            inside = -1e-12 <= s <= L + 1e-12 and -1e-12 <= t <= M + 1e-12
            shared = (
                (i, j) in adjacent and abs(t) <= 1e-9 and (abs(s) <= 1e-9 or abs(s - L) <= 1e-9)
            )
            if inside and not shared:
                double = True
                if witness is None:
                    witness = (i, s, j, t)
    return double, overlap, witness, covered


def _has_unique_part(
    pieces: list, flat: list[bool], covered: list[list[tuple[float, float]]]
) -> bool:
    """Whether some non-constant piece has points that no other piece covers."""
    for i, (_, _, L) in enumerate(pieces):
        if flat[i]:
            continue
        ivs = sorted(covered[i])
        reach = 0.0
        for lo, hi in ivs:
            if lo > reach + 1e-9:
                break
            reach = max(reach, hi)
        if reach < L - 1e-9:
            return True
    return False


def check_decoder(
    module: Any,
    *,
    n_points: int = 512,
    n_targets: int = 64,
    scale: float | None = None,
    random_state: RandomState = None,
) -> DecoderReport:
    """Decide (F2)-(F4) for a ReLU / LeakyReLU MLP decoder f: R^m → R^n.

    Args:
        module: an ``nn.Sequential`` (possibly nested) of ``Linear`` and ``ReLU`` /
            ``LeakyReLU`` layers (``Identity``, ``Dropout`` ignored).
        n_points: points sampled (at several scales) to find linear regions.
        n_targets: image points whose second preimages are searched for.
        scale: spread of the sampled points (default: 3, 30 and 300 — regions near the
            origin and far away).
        random_state: seed of the sampling.

    Returns:
        A ``DecoderReport``.

    Raises:
        TypeError: a layer other than Linear / ReLU / LeakyReLU / Identity / Dropout.

    Example:
        >>> from idvae.nets import mlp
        >>> check_decoder(mlp([2, 8, 10], "leaky_relu")).injective
        True
    """
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    n_targets = check_positive_int(n_targets, "n_targets")
    rng = check_random_state(random_state)
    ops = decoder_layers(module)
    affines = [op for op in ops if op[0] == "affine"]
    m = affines[0][1].shape[1]
    n = affines[-1][1].shape[0]
    widths = (m, *[op[1].shape[0] for op in affines])
    slopes = tuple(op[1] for op in ops if op[0] == "act")
    reasons: list[str] = []

    def report(f2, f3, f4, cert, witness=None) -> DecoderReport:
        if isinstance(cert, bool):
            cert = {"weakly_injective": cert, "observably_injective": cert, "injective": cert}
        return DecoderReport(f2, f3, f4, cert, reasons, m, n, widths, slopes, witness)

    certain = _certified(ops, affines, widths, slopes, reasons)
    if certain is not None:
        return report(certain, certain, certain, True)
    if m == 1:
        exact = _exact_1d(ops)
        if exact is not None:
            f2, f3, f4, more, (wit, _, breaks) = exact
            reasons.extend(more)
            witness = None
            if wit is not None:
                i, s_i, j, t_j = wit
                witness = (_piece_x(i, s_i, breaks), _piece_x(j, t_j, breaks))
            return report(f2, f3, f4, True, witness)
    search = _search_preimages(ops, m, n_points, n_targets, scale, rng, reasons)
    f2, f3, f4, cert = _empirical_verdict(search, reasons)
    witness = search.fold if search.fold is not None else search.kernel_witness
    return report(f2, f3, f4, cert, witness)


def _certified(
    ops: list, affines: list, widths: tuple[int, ...], slopes: tuple[float, ...], reasons: list
) -> bool | None:
    """The verdict on (F2)-(F4) when a certificate decides all three at once, else None.

    A decoder into fewer dimensions than m, or whose first layer has a kernel, has infinite
    fibres (all three fail); full column rank everywhere with injective activations makes f
    injective (all three hold). Otherwise the reasons say why no certificate applies.
    """
    m, n = widths[0], widths[-1]
    if n < m:
        reasons.append(
            f"output dimension n = {n} < latent dimension m = {m}: every linear region has a "
            "kernel, so every fibre is infinite (see Remark 3.3)"
        )
        return False
    # a layer narrower than its input cannot have full column rank: no SVD needed
    ranks = [
        _rank(op[1]) if op[1].shape[0] >= op[1].shape[1] or i == 0 else op[1].shape[0]
        for i, op in enumerate(affines)
    ]
    first_is_affine = ops[0][0] == "affine"
    if first_is_affine and ranks[0] < m:
        reasons.append(
            f"the first affine layer has rank {ranks[0]} < m = {m}: f(z) = f(z + v) for every "
            "v in its kernel, so every fibre is infinite"
        )
        return False
    full_rank = all(r == op[1].shape[1] for r, op in zip(ranks, affines, strict=True))
    injective_acts = all(s > 0 for s in slopes)
    if full_rank and injective_acts:
        reasons.append(
            "every affine layer has full column rank (widths "
            f"{' -> '.join(map(str, widths))}) and every activation is an injective "
            "LeakyReLU: f is injective (Lemma H.3, Cor. H.4), hence (F3) and (F2) (Remark 3.1)"
        )
        return True
    if not full_rank:
        bad = [
            i for i, (r, op) in enumerate(zip(ranks, affines, strict=True)) if r < op[1].shape[1]
        ]
        reasons.append(
            f"affine layer(s) {bad} have rank below their input width: App. H's sufficient "
            "conditions do not apply"
        )
    if not injective_acts:
        kinds = sorted({"ReLU" if s == 0 else f"slope {s:g}" for s in slopes if s <= 0})
        reasons.append(
            f"non-injective activations ({', '.join(kinds)}): no certificate from App. H (Cor. "
            "H.2's ReLU condition is not used: counterexamples.relu_fold breaks it)"
        )
    return None


@dataclass
class _Search:
    """What the empirical search found (see ``_search_preimages``)."""

    kernel_witness: tuple[np.ndarray, np.ndarray] | None
    fold: tuple[np.ndarray, np.ndarray] | None
    same_flat: bool
    n_double: int
    n_targets: int


def _search_preimages(
    ops: list,
    m: int,
    n_points: int,
    n_targets: int,
    scale: float | None,
    rng: np.random.Generator,
    reasons: list[str],
) -> _Search:
    """Sample points, and look for a kernel direction and for second preimages of images."""
    scales = (3.0, 30.0, 300.0) if scale is None else (float(scale),)
    z = np.concatenate([s * rng.standard_normal((n_points // len(scales) + 1, m)) for s in scales])[
        :n_points
    ]
    fz, jac, margin = _forward(ops, z)
    generic = margin > 1e-9
    z, fz, jac, margin = z[generic], fz[generic], jac[generic], margin[generic]
    jranks = np.array([_rank(J) for J in jac])
    deficient = jranks < m
    witness = _kernel_witness(ops, z, fz, jac, deficient)
    full = np.flatnonzero(~deficient)
    patterns = _pattern(ops, z)
    # one representative point per linear region met
    _, region_idx = np.unique(patterns, axis=0, return_index=True)
    region_idx = region_idx[~deficient[region_idx]]
    targets = rng.permutation(full)[:n_targets] if full.size else np.array([], dtype=int)
    fold, same_flat, n_double = _second_preimages(ops, m, z, fz, jac, patterns, region_idx, targets)
    n_t = len(targets)
    reasons.append(
        f"sampled {len(z)} generic points in {len(np.unique(patterns, axis=0))} linear regions; "
        f"Jacobian rank < m at {int(deficient.sum())}; a second preimage found for "
        f"{n_double} of {n_t} image points"
    )
    return _Search(witness, fold, same_flat, n_double, n_t)


def _kernel_witness(
    ops: list, z: np.ndarray, fz: np.ndarray, jac: np.ndarray, deficient: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """z != z' with f(z) = f(z'), stepping along the kernel of a rank-deficient Jacobian."""
    if not np.any(deficient):
        return None
    i = int(np.flatnonzero(deficient)[0])
    _, _, vt = np.linalg.svd(jac[i])
    v = vt[-1]
    # a step small enough to stay inside the region (margins are relative)
    for step in (1e-3, 1e-5, 1e-7):
        z2 = z[i] + step * max(1.0, np.linalg.norm(z[i])) * v
        if np.allclose(_forward(ops, z2[None])[0][0], fz[i], rtol=1e-9, atol=1e-9):
            return (z[i].copy(), z2)
    return None


def _second_preimages(
    ops: list,
    m: int,
    z: np.ndarray,
    fz: np.ndarray,
    jac: np.ndarray,
    patterns: np.ndarray,
    region_idx: np.ndarray,
    targets: np.ndarray,
) -> tuple[tuple[np.ndarray, np.ndarray] | None, bool, int]:
    """For each target image point, a preimage in another linear region, if there is one.

    Returns:
        A fold (a target and its second preimage; one whose two regions map onto the same
        m-flat preferred), whether it is such a same-flat fold, and how many targets have a
        second preimage.
    """
    fold: tuple[np.ndarray, np.ndarray] | None = None
    same_flat = False
    n_double = 0
    if not region_idx.size:
        return fold, same_flat, n_double
    A_all = jac[region_idx]  # (R, n, m)
    c_all = fz[region_idx] - np.einsum("rnm,rm->rn", A_all, z[region_idx])
    pinv = np.linalg.pinv(A_all)  # (R, m, n)
    for t in targets:
        sols = np.einsum("rmn,rn->rm", pinv, fz[t] - c_all)  # candidate preimages per region
        resid = np.abs(np.einsum("rnm,rm->rn", A_all, sols) + c_all - fz[t]).max(axis=1)
        ok = resid <= 1e-8 * (1 + np.abs(fz[t]).max())
        ok &= np.linalg.norm(sols - z[t], axis=1) > 1e-6 * (1 + np.linalg.norm(z[t]))
        ok &= ~np.all(patterns[region_idx] == patterns[t], axis=1)
        found = False
        for r_pos in np.flatnonzero(ok):
            sol = sols[r_pos]
            _, _, mar = _forward(ops, sol[None])
            if mar[0] <= 1e-9:
                continue
            if not np.array_equal(_pattern(ops, sol[None])[0], patterns[region_idx[r_pos]]):
                continue
            found = True
            flat = _rank(np.concatenate([jac[t], A_all[r_pos]], axis=1)) == m
            if fold is None or (flat and not same_flat):
                fold, same_flat = (z[t].copy(), sol), flat
            break
        n_double += found
    return fold, same_flat, n_double


def _empirical_verdict(
    search: _Search, reasons: list[str]
) -> tuple[bool, bool, bool, dict[str, bool]]:
    """(F2), (F3), (F4) and which of them are certain, from what the search found."""
    n_t = search.n_targets
    found = search.fold is not None or search.kernel_witness is not None
    # each property: the first case whose condition holds gives (holds, certain, reason)
    f4, c4, why4 = _first_case(
        (found, False, True, "(F4) fails: exhibited z != z' with f(z) = f(z') (see witness)"),
        (True, True, False, "(F4): no two preimages found (empirical, not a proof)"),
    )
    f3, c3, why3 = _first_case(
        (
            search.fold is not None and search.same_flat,
            False,
            True,
            "(F3) fails: two linear regions map onto the same m-flat around a double point, "
            "so double points fill an open subset of f(R^m)",
        ),
        (
            n_t == 0,
            False,
            False,
            "(F3) fails (empirical): the Jacobian has rank < m at every sampled point, so the "
            "image is lower-dimensional and its points have infinitely many preimages",
        ),
        (f4 and not c4, True, False, None),
        (True, True, False, "(F3): double points found only on lower-dimensional sets (empirical)"),
    )
    f2, c2, why2 = _first_case(
        (
            n_t and search.n_double == n_t and search.same_flat,
            False,
            False,
            "(F2) fails (empirical): every sampled image point has a second preimage, so no "
            "ball of the image has unique preimages",
        ),
        (
            n_t == 0,
            False,
            False,
            "(F2) fails (empirical): the Jacobian has rank < m at every sampled point",
        ),
        (True, True, False, "(F2): some image points have a unique preimage (empirical)"),
    )
    reasons.extend(why for why in (why4, why3, why2) if why is not None)
    cert = {"weakly_injective": c2, "observably_injective": c3, "injective": c4}
    return f2, f3, f4, cert


def _first_case(*cases: tuple[Any, bool, bool, str | None]) -> tuple[bool, bool, str | None]:
    """``(holds, certain, reason)`` of the first ``(condition, holds, certain, reason)`` met."""
    return next((holds, certain, why) for met, holds, certain, why in cases if met)

"""Theorem F.1: the discrete structure of a multivariate U from P(Z) in canonical coordinates.

Model (3) with U = (U_1, …, U_k), U_i ∈ [d_i]: component u of P(Z) has diagonal covariance,
and by the Markov property (24) coordinate t's parameters (μ_ut, σ²_ut) depend on u only
through the facets pa(t) = {i : t ∈ ne(U_i)}. By (P3)(a) distinct configurations of pa(t)
give distinct parameters. This is the mixture-oracle setting of Kivva et al. (2021), with
the advantage that the full mixture is known, so the reconstruction works with exact
"which components agree on coordinate t" information instead of component counts:

1. Group the J components by their (μ, log σ) on each coordinate (data-driven tolerance).
2. For every pair of components (j, j') let D(j, j') be the coordinates where they differ.
   Then D(j, j') = ∪ {ne(U_i) : u_i ≠ u'_i}, so under (P3)(c) (no neighbourhood inside
   another, hence no twins) the inclusion-minimal sets among the D's are exactly the
   neighbourhoods ne(U_1), …, ne(U_k) — each is attained by a pair differing in one facet.
3. D(j, j') = ne(U_l) exactly when j and j' differ in facet l only. The states of facet i
   are the connected components of the graph joining pairs that differ in one facet l ≠ i.
4. Check that the components form the full product ∏ [d_i] (positivity) and that every
   D(j, j') is the union of the neighbourhoods of the facets where j, j' differ; P(U) is
   then the table of component weights.

What no method can identify (and what this function then returns): twins (ne(U_i) =
ne(U_j)) merge into one facet with d_i d_j states; a neighbourhood inside another breaks
the product structure, and U is reported as one variable with J states (``meets_p3``
False).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from idvae._validation import RandomState, check_random_state, jsonable
from idvae.mixture import GMM

__all__ = [
    "DECISIVE_GAP",
    "Structure",
    "random_structured_gmm",
    "recover_structure",
    "same_structure",
    "structured_gmm",
]


# a grouping of per-coordinate parameters that is stable over this factor of tolerance is
# taken as the answer on its own (exact input has ties at ~1e-16 and gaps of O(1))
DECISIVE_GAP = 100.0


@dataclass(frozen=True, eq=False)
class Structure:
    """The discrete latent structure of model (3): U = (U_1, …, U_k) and its graph.

    Attributes:
        n_facets: k, the number of discrete latent variables.
        facet_sizes: (d_1, …, d_k).
        joint: P(U), array of shape facet_sizes.
        neighbors: ne(U_i) for each facet, frozensets of coordinate indices of Z.
        assignment: array of shape (J, k): the configuration of U of each component.
        levels: array of shape (J, m): the group of each component on each coordinate
            (components with equal (μ, σ) on coordinate t share a level).
        meets_p3: whether a product structure meeting (P3) was found; when False the
            structure is the trivial one (k = 1, J states) that is always valid.
        tolerance: the distance under which per-coordinate parameters count as equal.
        gap_ratio: stability of the chosen tolerance: the factor over which it can vary
            without changing the structure (inf on exact input, nan when ``tol`` is given).
        reasons: how the conclusions were reached.
    """

    n_facets: int
    facet_sizes: tuple[int, ...]
    joint: np.ndarray
    neighbors: tuple[frozenset[int], ...]
    assignment: np.ndarray
    levels: np.ndarray
    meets_p3: bool
    tolerance: float
    gap_ratio: float
    reasons: tuple[str, ...] = field(default=())

    def parents(self, t: int) -> frozenset[int]:
        """ne(Z_t): the facets coordinate ``t`` depends on."""
        return frozenset(i for i, ne in enumerate(self.neighbors) if t in ne)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description."""
        return {
            "n_facets": self.n_facets,
            "facet_sizes": list(self.facet_sizes),
            "joint": self.joint.tolist(),
            "neighbors": [sorted(ne) for ne in self.neighbors],
            "assignment": self.assignment.tolist(),
            "meets_p3": self.meets_p3,
            "tolerance": float(self.tolerance),
            "gap_ratio": jsonable(float(self.gap_ratio), nonfinite="str"),
            "reasons": list(self.reasons),
        }

    def __str__(self) -> str:
        lines = [f"U has k = {self.n_facets} facet(s) of sizes {list(self.facet_sizes)}"]
        for i, ne in enumerate(self.neighbors):
            lines.append(f"  ne(U_{i + 1}) = {{{', '.join(f'Z_{t + 1}' for t in sorted(ne))}}}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# building structured mixtures
# --------------------------------------------------------------------------------------
def _parents_of(neighbors: Sequence[frozenset[int]], m: int) -> list[tuple[int, ...]]:
    return [tuple(i for i, ne in enumerate(neighbors) if t in ne) for t in range(m)]


def structured_gmm(
    joint: Any,
    neighbors: Sequence[Sequence[int]],
    means: Sequence[Any],
    variances: Sequence[Any],
) -> GMM:
    """The GMM of Z for a given structure, components in row-major order over U.

    Args:
        joint: P(U), array of shape (d_1, …, d_k), positive, summing to 1.
        neighbors: for each facet i, the coordinates ne(U_i) of Z it influences.
        means: m entries; ``means[t]`` is an array of shape (d_i for i in pa(t)) where
            pa(t) = sorted facets whose neighbourhood holds t (a scalar when none).
        variances: like ``means``, positive.

    Returns:
        An ``idvae.GMM`` with ∏ d_i components in dimension m and diagonal covariances.

    Example:
        >>> g = structured_gmm(np.full((2, 2), 0.25), [[0], [1]], [[0, 3], [0, 5]],
        ...                    [[1, 1], [1, 2]])
        >>> g.n_components, g.dim
        (4, 2)
    """
    joint = np.asarray(joint, dtype=np.float64)
    sizes = joint.shape
    k, m = len(sizes), len(means)
    if len(neighbors) != k:
        raise ValueError(f"Expected {k} neighbourhoods (one per facet) but got {len(neighbors)}")
    if len(variances) != m:
        raise ValueError(
            f"Expected {m} variance tables (one per coordinate) but got {len(variances)}"
        )
    nes = [frozenset(int(t) for t in ne) for ne in neighbors]
    for ne in nes:
        if any(t < 0 or t >= m for t in ne):
            raise ValueError(f"Expected coordinates in [0, {m}) but got neighbourhood {sorted(ne)}")
    pa = _parents_of(nes, m)
    configs = list(itertools.product(*[range(d) for d in sizes]))
    mu = np.empty((len(configs), m))
    var = np.empty((len(configs), m))
    for t in range(m):
        shape = tuple(sizes[i] for i in pa[t])
        mt = np.asarray(means[t], dtype=np.float64)
        vt = np.asarray(variances[t], dtype=np.float64)
        if mt.shape != shape or vt.shape != shape:
            raise ValueError(
                f"Expected means[{t}] and variances[{t}] of shape {shape} (facets {pa[t]}) "
                f"but got {mt.shape} and {vt.shape}"
            )
        for j, u in enumerate(configs):
            idx = tuple(u[i] for i in pa[t])
            mu[j, t], var[j, t] = mt[idx], vt[idx]
    return GMM(joint.ravel(), mu, var)


def random_structured_gmm(
    facet_sizes: Sequence[int],
    neighbors: Sequence[Sequence[int]],
    latent_dim: int | None = None,
    *,
    separation: float = 3.0,
    random_state: RandomState = None,
) -> GMM:
    """A random GMM with the given structure (means spaced ``separation`` apart).

    Each coordinate's parameters are drawn independently per configuration of its parents,
    so (P3)(a) holds almost surely. P(U) is a random positive table (Dirichlet, not
    independent across facets).

    Args:
        facet_sizes: (d_1, …, d_k).
        neighbors: ne(U_i) for each facet.
        latent_dim: m; default one more than the largest coordinate named.
        separation: scale of the spread of component means.
        random_state: seed.
    """
    rng = check_random_state(random_state)
    sizes = tuple(int(d) for d in facet_sizes)
    nes = [frozenset(int(t) for t in ne) for ne in neighbors]
    m = latent_dim if latent_dim is not None else max((max(ne) for ne in nes if ne), default=0) + 1
    pa = _parents_of(nes, m)
    joint = rng.dirichlet(np.full(math.prod(sizes), 5.0)).reshape(sizes)
    means, variances = [], []
    for t in range(m):
        shape = tuple(sizes[i] for i in pa[t])
        n_cfg = math.prod(shape)
        # well separated levels: a random permutation of an evenly spaced grid, jittered
        grid = separation * (rng.permutation(n_cfg) + 0.3 * rng.uniform(size=n_cfg))
        means.append(grid.reshape(shape))
        variances.append(np.exp(rng.uniform(-0.7, 0.7, size=n_cfg)).reshape(shape))
    return structured_gmm(joint, [sorted(ne) for ne in nes], means, variances)


# --------------------------------------------------------------------------------------
# recovery
# --------------------------------------------------------------------------------------
def _coordinate_features(gmm: GMM) -> tuple[np.ndarray, np.ndarray]:
    var = np.einsum("jtt->jt", gmm.covariances)
    mean = gmm.weights @ gmm.means
    total = gmm.weights @ (var + (gmm.means - mean) ** 2)
    return (gmm.means - mean) / np.sqrt(total), 0.5 * np.log(var / total)


def _linkages(gmm: GMM) -> list[np.ndarray]:
    mu, logsd = _coordinate_features(gmm)
    out = []
    for t in range(gmm.dim):
        feats = np.stack([mu[:, t], logsd[:, t]], axis=1)
        out.append(linkage(feats, method="average", metric="euclidean"))
    return out


def _candidate_tolerances(links: list[np.ndarray]) -> list[tuple[float, float, float]]:
    """(tolerance, lower, upper): one threshold between each pair of consecutive distinct
    merge heights (pooled over coordinates), and one below them all."""
    floor = 1e-12
    h = np.unique(np.maximum(np.concatenate([lk[:, 2] for lk in links]), floor))
    # below every merge height: all components distinct (nominal stability factor 2)
    out = [(float(h[0]) / 2.0, float(h[0]) / 2.0, float(h[0]))]
    for lo, hi in zip(h[:-1], h[1:], strict=True):
        out.append((float(np.sqrt(lo * hi)), float(lo), float(hi)))
    return out


def _levels(links: list[np.ndarray], tol: float, n_components: int, dim: int) -> np.ndarray:
    if n_components == 1:
        return np.zeros((1, dim), dtype=int)
    return np.stack([fcluster(lk, t=tol, criterion="distance") - 1 for lk in links], axis=1)


def _build(levels: np.ndarray) -> tuple[list[frozenset[int]], np.ndarray] | str:
    """Steps 2-4 of the reconstruction; returns (neighbourhoods, assignment) or a reason."""
    J, m = levels.shape
    diff: dict[tuple[int, int], frozenset[int]] = {}
    for a, b in itertools.combinations(range(J), 2):
        d = frozenset(np.flatnonzero(levels[a] != levels[b]).tolist())
        if not d:
            return f"components {a} and {b} are equal on every coordinate (not reduced form)"
        diff[(a, b)] = d
    if J == 1:
        return [], np.zeros((1, 0), dtype=int)
    sets = set(diff.values())
    minimal = sorted(
        (s for s in sets if not any(o < s for o in sets)), key=lambda s: (min(s), sorted(s))
    )
    k = len(minimal)
    index = {s: i for i, s in enumerate(minimal)}
    assignment = np.empty((J, k), dtype=int)
    pairs = np.array(list(diff.keys()))
    single = np.array([index.get(diff[tuple(p)], -1) for p in pairs])
    for i in range(k):
        keep = (single >= 0) & (single != i)
        graph = coo_matrix(
            (np.ones(int(keep.sum())), (pairs[keep, 0], pairs[keep, 1])), shape=(J, J)
        )
        _, labels = connected_components(graph, directed=False)
        # canonical state order: by smallest component index
        _, first = np.unique(labels, return_index=True)
        order = {lab: rank for rank, lab in enumerate(labels[np.sort(first)])}
        assignment[:, i] = [order[lab] for lab in labels]
    sizes = assignment.max(axis=0) + 1
    if math.prod(sizes.tolist()) != J or len({tuple(r) for r in assignment}) != J:
        return (
            f"the components do not form the product of {k} facets of sizes "
            f"{sizes.tolist()} (J = {J}); (P3) or positivity fails"
        )
    for (a, b), d in diff.items():
        expect = frozenset().union(
            *[minimal[i] for i in range(k) if assignment[a, i] != assignment[b, i]]
        )
        if expect != d:
            return (
                f"components {a} and {b} differ on coordinates {sorted(d)}, not on the union "
                f"{sorted(expect)} of the neighbourhoods of their differing facets; "
                "(P3) fails (e.g. a neighbourhood inside another)"
            )
    return minimal, assignment


def recover_structure(
    gmm: GMM, *, tol: float | None = None, diagonal_tol: float = 0.3
) -> Structure:
    """Theorem F.1: recover k, (d_i), P(U), ne(U_i) and each component's configuration.

    Args:
        gmm: the mixture of Z in canonical coordinates (e.g. ``disentangle(g).pushforward(g)``)
            with diagonal covariances; components may be in any order.
        tol: distance under which two components' (μ/sd, log σ) on a coordinate count as
            equal (coordinates standardised by the mixture). Default: data-driven — every
            cut between consecutive merge heights of the per-coordinate hierarchical
            clusterings (average linkage, pooled over coordinates) is tried; among the cuts
            giving a consistent product structure, the one with the most facets that stays
            the same over a factor ≥ 2 of tolerance (else the most stable one) is kept.
        diagonal_tol: largest |correlation| inside a component accepted as diagonal.

    Returns:
        A ``Structure``. When no structure meeting (P3) is found, the trivial structure
        (one facet with J states) with ``meets_p3=False`` and the reason.

    Raises:
        ValueError: a component covariance is not diagonal.

    Example:
        >>> g = random_structured_gmm([2, 3], [[0, 1], [1, 2]], random_state=0)
        >>> s = recover_structure(g)
        >>> s.n_facets, sorted(s.facet_sizes)
        (2, [2, 3])
    """
    if not isinstance(gmm, GMM):
        raise TypeError(f"Expected an idvae.GMM but got {type(gmm).__name__}")
    _check_diagonal(gmm, diagonal_tol)
    J = gmm.n_components
    links = _linkages(gmm) if J > 1 else []
    if tol is not None:
        if not tol > 0:
            raise ValueError(f"Expected tol > 0 but got {tol}")
        candidates = [(float(tol), float(tol), float(tol))]
    else:
        candidates = _candidate_tolerances(links) if J > 1 else [(1.0, 1.0, 1.0)]
    runs = _grouping_runs(links, candidates, J, gmm.dim)
    failures = []
    good = []
    for run in runs:
        run["width"] = run["hi"] / run["lo"] if tol is None else float("nan")
        built = _build(run["levels"])
        if isinstance(built, str):
            failures.append(f"tolerance {run['tol']:.3g}: {built}")
            continue
        run["built"] = built
        good.append(run)
    decisive = max(runs, key=lambda r: r["width"]) if tol is None else runs[0]
    if tol is None and decisive["width"] >= DECISIVE_GAP:
        # one grouping stands out (e.g. exact ties on exact input): trust it alone
        good = [decisive] if "built" in decisive else []
    if good:
        # Kivva et al.'s maximality: the most facets among structures stable over a factor
        # of >= 2 in tolerance; otherwise the most stable one
        stable = [r for r in good if len(r["built"][0]) >= 2 and r["width"] >= 2.0]
        pool = stable or good
        best = max(pool, key=lambda r: (len(r["built"][0]) if stable else 0, r["width"]))
        return _product_structure(gmm, best)
    # no product structure: the trivial one is always valid
    levels = decisive["levels"]
    varying = frozenset(np.flatnonzero(np.any(levels != levels[:1], axis=0)).tolist())
    return Structure(
        n_facets=1,
        facet_sizes=(J,),
        joint=gmm.weights.copy(),
        neighbors=(varying,),
        assignment=np.arange(J)[:, None],
        levels=levels,
        meets_p3=False,
        tolerance=decisive["tol"],
        gap_ratio=decisive["width"],
        reasons=tuple(failures[:3])
        + ("U is identifiable only as one variable with J states (Kivva et al., 2021)",),
    )


def _check_diagonal(gmm: GMM, diagonal_tol: float) -> None:
    """Raise ValueError when a component's largest |correlation| exceeds ``diagonal_tol``."""
    covs = gmm.covariances
    sd = np.sqrt(np.einsum("jtt->jt", covs))
    corr = covs / (sd[:, :, None] * sd[:, None, :])
    off = np.abs(corr[:, ~np.eye(gmm.dim, dtype=bool)]) if gmm.dim > 1 else np.zeros(1)
    if off.size and off.max() > diagonal_tol:
        raise ValueError(
            "Expected components with diagonal covariances (canonical coordinates, see "
            f"disentangle) but got a correlation of {off.max():.3g} > diagonal_tol "
            f"{diagonal_tol:g}"
        )


def _grouping_runs(
    links: list, candidates: list[tuple[float, float, float]], n_components: int, dim: int
) -> list[dict[str, Any]]:
    """Consecutive candidate tolerances that give the same per-coordinate grouping, merged.

    A run's width (upper / lower merge height) measures how stable its structure is.
    """
    runs: list[dict[str, Any]] = []
    for cand_tol, lo, hi in candidates:
        levels = _levels(links, cand_tol, n_components, dim)
        if runs and np.array_equal(runs[-1]["levels"], levels):
            runs[-1]["hi"] = hi
            continue
        runs.append({"levels": levels, "tol": cand_tol, "lo": lo, "hi": hi})
    return runs


def _product_structure(gmm: GMM, best: dict[str, Any]) -> Structure:
    """The structure of a grouping that factors the components into a product (meets (P3))."""
    J = gmm.n_components
    minimal, assignment = best["built"]
    levels, cand_tol, ratio = best["levels"], best["tol"], best["width"]
    sizes = tuple(int(d) for d in assignment.max(axis=0) + 1) if minimal else ()
    joint = np.zeros(sizes)
    for j in range(J):
        joint[tuple(assignment[j])] = gmm.weights[j]
    reasons = [
        f"per-coordinate parameters grouped with tolerance {cand_tol:.3g}"
        + (f" (stable over a factor {ratio:.3g})" if np.isfinite(ratio) else ""),
        f"{len(minimal)} minimal difference sets = neighbourhoods; the {J} components "
        f"form the product {' x '.join(map(str, sizes)) or '()'}",
    ]
    gap = float("inf") if (np.isfinite(ratio) and ratio > 1e6) else ratio
    return Structure(
        n_facets=len(minimal),
        facet_sizes=sizes,
        joint=joint,
        neighbors=tuple(minimal),
        assignment=assignment,
        levels=levels,
        meets_p3=True,
        tolerance=cand_tol,
        gap_ratio=gap,
        reasons=tuple(reasons),
    )


def same_structure(a: Structure, b: Structure, *, atol: float = 1e-8) -> bool:
    """Whether two structures agree up to relabelling of facets and of states.

    Facets are matched by neighbourhood (distinct under (P3)); states by searching the
    permutations of each facet's states for equal joint tables (within ``atol``).
    """
    if a.n_facets != b.n_facets or set(a.neighbors) != set(b.neighbors):
        return False
    perm = [b.neighbors.index(ne) for ne in a.neighbors]
    if [a.facet_sizes[i] for i in range(a.n_facets)] != [b.facet_sizes[p] for p in perm]:
        return False
    jb = np.transpose(b.joint, perm) if perm else b.joint
    if math.prod(math.factorial(d) for d in a.facet_sizes) > 200_000:
        return bool(np.allclose(np.sort(a.joint.ravel()), np.sort(jb.ravel()), atol=atol))
    for perms in itertools.product(*[itertools.permutations(range(d)) for d in a.facet_sizes]):
        cand = jb[np.ix_(*perms)] if perms else jb
        if np.allclose(a.joint, cand, atol=atol):
            return True
    return False

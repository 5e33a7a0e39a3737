"""Parameter grids of toy models and the exhaustive grid search of App. J.3.1.

The module is long because the grid, its lattice tables and the vectorised search over them
are written against one array layout; splitting them would spread that layout over modules.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from idvae._validation import (
    RandomState,
    check_array,
    check_positive_int,
    check_random_state,
)
from idvae.exact._equivalence import (
    decoder_function,
    decoder_injectivity,
    equivalent,
    injectivity,
)
from idvae.exact._model import (
    ToyModel,
    affine_pieces,
    check_points,
    mixture_component_logpdf,
    quadrature_nodes,
)


# ---------------------------------------------------------------------------------------
# grids
# ---------------------------------------------------------------------------------------
def simplex_grid(n_components: int, resolution: int) -> np.ndarray:
    """All weight vectors with entries in {0, 1/r, ..., 1} summing to 1; (n, J), float64."""
    n_components = check_positive_int(n_components, "n_components")
    resolution = check_positive_int(resolution, "resolution")
    rows = [
        c
        for c in itertools.product(range(resolution + 1), repeat=n_components)
        if sum(c) == resolution
    ]
    return np.array(rows, dtype=np.float64) / resolution


def _as_values(values: Any, name: str) -> tuple[float, ...]:
    arr = check_array(np.atleast_1d(np.asarray(values, dtype=np.float64)), name, ndim=1)
    return tuple(sorted({float(v) for v in arr}))


@dataclass(frozen=True)
class Grid:
    """A parameter grid of toy models (App. J.3.1): the product of the value sets below.

    Args:
        weights: candidate weight vectors, shape (n_w, J) (e.g. ``simplex_grid(J, 4)``).
        means: values of each component mean.
        stds: values of each component standard deviation.
        alpha, beta, bias: values of each neuron's parameters.
        noise_std: the known noise standard deviation (not searched).
        n_neurons: H, the number of hidden units.
        weakly_injective_only: keep only decoders that are weakly injective (F2) on R, the
            class of decoders the identifiability theorem speaks about (Definition 2.1
            compares models within one class).
    """

    weights: tuple[tuple[float, ...], ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    alpha: tuple[float, ...]
    beta: tuple[float, ...]
    bias: tuple[float, ...]
    noise_std: float
    n_neurons: int = 2
    weakly_injective_only: bool = False

    def __post_init__(self) -> None:
        w = check_array(np.asarray(self.weights, dtype=np.float64), "grid weights", ndim=2)
        if np.any(w < 0) or not np.allclose(w.sum(1), 1.0, rtol=0, atol=1e-8):
            raise ValueError("Expected grid weights to be non-negative rows summing to 1")
        object.__setattr__(self, "weights", tuple(tuple(float(v) for v in r) for r in w))
        for name in ("means", "stds", "alpha", "beta", "bias"):
            object.__setattr__(self, name, _as_values(getattr(self, name), f"grid {name}"))
        if min(self.stds) <= 0:
            raise ValueError(f"Expected positive grid stds but got {min(self.stds)}")
        if not float(self.noise_std) > 0:
            raise ValueError(f"Expected noise_std > 0 but got {self.noise_std}")
        object.__setattr__(self, "noise_std", float(self.noise_std))
        check_positive_int(self.n_neurons, "n_neurons")

    @property
    def n_components(self) -> int:
        """J."""
        return len(self.weights[0])

    @property
    def size(self) -> int:
        """The number of points of the full product grid."""
        n_keys = len(self.means) * len(self.stds)
        n_neuron = len(self.alpha) * len(self.beta) * len(self.bias)
        return len(self.weights) * n_keys**self.n_components * n_neuron**self.n_neurons

    def contains(self, model: ToyModel, tol: float = 1e-9) -> bool:
        """Whether an unbatched model's parameters are a point of the grid."""
        if model.n_components != self.n_components or model.n_neurons != self.n_neurons:
            return False

        def inside(vals: np.ndarray, grid: tuple[float, ...]) -> bool:
            return bool(np.all(np.min(np.abs(vals[:, None] - np.array(grid)), 1) <= tol))

        return (
            bool(np.any(np.all(np.abs(np.array(self.weights) - model.weights) <= tol, 1)))
            and inside(model.means, self.means)
            and inside(model.stds, self.stds)
            and inside(model.alpha, self.alpha)
            and inside(model.beta, self.beta)
            and inside(model.bias, self.bias)
            and abs(float(model.noise_std) - self.noise_std) <= tol
        )

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """The (mean, std) pairs a component can take; two arrays of shape (K,)."""
        pairs = list(itertools.product(self.means, self.stds))
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])

    def priors(self, *, deduplicate: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The priors of the grid as (weights (n_p, J), key indices (n_p, J)).

        With ``deduplicate`` each distinct mixture *distribution* appears once: permuted
        components, zero-weight components and identical components merged are one law.
        """
        n_keys = len(self.means) * len(self.stds)
        weights = np.array(self.weights)
        out_w, out_k, seen = [], [], set()
        for w in weights:
            for keys in itertools.product(range(n_keys), repeat=self.n_components):
                if deduplicate:
                    law: dict[int, float] = {}
                    for wj, kj in zip(w, keys, strict=True):
                        if wj > 0:
                            law[kj] = law.get(kj, 0.0) + wj
                    tag = tuple(sorted((k, round(v, 9)) for k, v in law.items()))
                    if tag in seen:
                        continue
                    seen.add(tag)
                out_w.append(w)
                out_k.append(keys)
        return np.array(out_w), np.array(out_k, dtype=np.int64)

    def decoders(self, *, deduplicate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The decoders of the grid as alpha, beta, bias arrays of shape (n_d, H).

        With ``deduplicate`` each distinct *function* f appears once (neuron permutations,
        inactive neurons and positive rescalings give the same function).
        """
        neuron = np.array(list(itertools.product(self.alpha, self.beta, self.bias)))
        index = np.array(list(itertools.product(range(len(neuron)), repeat=self.n_neurons)))
        params = neuron[index]  # (n_d, H, 3)
        if deduplicate:
            keep, seen = [], set()
            for i, p in enumerate(params):
                const, slope, kinks = decoder_function(p[:, 0], p[:, 1], p[:, 2], 1e-12)
                tag = (round(const, 9), round(slope, 9)) + tuple(
                    (round(k, 9), round(d, 9)) for k, d in kinks
                )
                if tag not in seen:
                    seen.add(tag)
                    keep.append(i)
            params = params[keep]
        if self.weakly_injective_only:
            f2 = [
                decoder_injectivity(p[:, 0], p[:, 1], p[:, 2]) != "not weakly injective"
                for p in params
            ]
            params = params[np.array(f2, dtype=bool)]
        return params[:, :, 0].copy(), params[:, :, 1].copy(), params[:, :, 2].copy()

    def random_model(self, random_state: RandomState = None) -> ToyModel:
        """A model drawn uniformly from the grid's value sets, as in App. J.3.1 steps 1-4.

        With ``weakly_injective_only`` the draw is repeated until f is weakly injective on
        R and on the bulk of the prior (4 standard deviations), so that the truth lies in
        the theorem's class with a margin float64 can see.
        """
        rng = check_random_state(random_state)
        J, H = self.n_components, self.n_neurons
        pick = lambda vals, n: np.array(vals)[rng.integers(len(vals), size=n)]  # noqa: E731
        for _ in range(10_000):
            model = ToyModel(
                np.array(self.weights)[rng.integers(len(self.weights))],
                pick(self.means, J),
                pick(self.stds, J),
                pick(self.alpha, H),
                pick(self.beta, H),
                pick(self.bias, H),
                self.noise_std,
            )
            if not self.weakly_injective_only or (
                injectivity(model) != "not weakly injective"
                and injectivity(model, bulk=4.0) != "not weakly injective"
            ):
                return model
        raise ValueError("Expected the grid to hold weakly injective decoders but found none")


def paper_grid(n_components: int = 3) -> Grid:
    """The grid used to reproduce App. J.3.1 (the paper does not print its grids).

    Weights on the simplex in steps of 1/4, means in {-2, -1, 0, 1, 2}, one known component
    std 0.5, alpha, beta, pi in {-1, -0.5, 0, 0.5, 1} and known noise sigma = 0.25: a
    "uniform grid on the hypercube" for every parameter the paper lists (lambda, mu, alpha,
    beta, pi). Stds and noise are not among them, so they are fixed and known.
    """
    n_components = check_positive_int(n_components, "n_components")
    values = (-1.0, -0.5, 0.0, 0.5, 1.0)
    return Grid(
        weights=simplex_grid(n_components, 4),
        means=(-2.0, -1.0, 0.0, 1.0, 2.0),
        stds=(0.5,),
        alpha=values,
        beta=values,
        bias=values,
        noise_std=0.25,
    )


def default_grid(true_model: ToyModel) -> Grid:
    """``paper_grid`` of the truth's J and H, enlarged so that it contains ``true_model``."""
    if true_model.is_batched:
        raise ValueError("Expected an unbatched true_model but got a batch")
    base = paper_grid(true_model.n_components)
    weights = np.unique(np.vstack([np.array(base.weights), true_model.weights[None]]), axis=0)
    return Grid(
        weights=weights,
        means=base.means + tuple(true_model.means),
        stds=base.stds + tuple(true_model.stds),
        alpha=base.alpha + tuple(true_model.alpha),
        beta=base.beta + tuple(true_model.beta),
        bias=base.bias + tuple(true_model.bias),
        noise_std=float(true_model.noise_std),
        n_neurons=true_model.n_neurons,
    )


# ---------------------------------------------------------------------------------------
# grid search
# ---------------------------------------------------------------------------------------
_GRID_CACHE: dict[tuple[Grid, bool], tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]] = {}


def _grid_arrays(
    grid: Grid, deduplicate: bool
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """(prior weights, prior keys), (alpha, beta, bias) of a grid, cached per grid."""
    key = (grid, deduplicate)
    if key not in _GRID_CACHE:
        if len(_GRID_CACHE) > 8:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = (
            grid.priors(deduplicate=deduplicate),
            grid.decoders(deduplicate=deduplicate),
        )
    return _GRID_CACHE[key]


@dataclass
class _TopK:
    """The ``keep`` smallest values seen so far and their flat indices, for T objectives."""

    keep: int
    n_targets: int
    values: list[np.ndarray] = field(default_factory=list)
    index: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.values = [np.empty(0) for _ in range(self.n_targets)]
        self.index = [np.empty(0, dtype=np.int64) for _ in range(self.n_targets)]

    def update(self, values: np.ndarray, index: np.ndarray) -> None:
        """values: array of shape (n, T); index: array of shape (n,)."""
        for t in range(self.n_targets):
            v = values[:, t]
            if self.values[t].size >= self.keep:
                mask = v <= self.values[t][-1]
                if not mask.any():
                    continue
                v, idx = v[mask], index[mask]
            else:
                idx = index
            all_v = np.concatenate([self.values[t], v])
            all_i = np.concatenate([self.index[t], idx])
            order = np.lexsort((all_i, all_v))[: self.keep]
            self.values[t], self.index[t] = all_v[order], all_i[order]


def _component_table(grid: Grid, deduplicate: bool, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scaled component densities of every decoder and (mean, std) key at nodes x.

    Returns:
        g: array of shape (K, n_decoders, Q), exp(log g - shift);
        shift: array of shape (n_decoders, Q), the max over keys of log g.
    """
    _, (alpha, beta, bias) = _grid_arrays(grid, deduplicate)
    key_means, key_stds = grid.keys()
    n_keys, n_dec = len(key_means), len(alpha)
    g = np.empty((n_keys, n_dec, x.shape[0]))
    shift = np.empty((n_dec, x.shape[0]))
    step = max(1, 2_000_000 // max(1, n_keys * 3 * x.shape[0]))
    for start in range(0, n_dec, step):
        sl = slice(start, min(start + step, n_dec))
        n_c = sl.stop - sl.start
        log_g = mixture_component_logpdf(
            x,
            np.broadcast_to(key_means, (n_c, n_keys)),
            np.broadcast_to(key_stds, (n_c, n_keys)),
            affine_pieces(alpha[sl], beta[sl], bias[sl]),
            np.full(n_c, grid.noise_std),
        )  # (n_c, K, Q)
        shift[sl] = log_g.max(axis=1)
        g[:, sl] = np.exp(log_g - shift[sl][:, None, :]).transpose(1, 0, 2)
    return g, shift


_TABLE_CACHE: dict[tuple[Grid, bool, float], tuple[int, int, np.ndarray, np.ndarray]] = {}
_TABLE_MAX_BYTES = 400 * 2**20


def lattice_table(
    grid: Grid, deduplicate: bool, step: float, first: int, last: int
) -> tuple[np.ndarray, np.ndarray]:
    """``_component_table`` on the lattice nodes step * [first, last], cached per grid.

    Population searches of many truths on one grid share the lattice, so the closed-form
    component densities are computed once and only the mixing and the log remain per search.
    """
    key = (grid, deduplicate, step)
    cached = _TABLE_CACHE.get(key)
    if cached is not None and cached[0] <= first and last <= cached[1]:
        lo = first - cached[0]
        return cached[2][:, :, lo : lo + last - first + 1], cached[3][:, lo : lo + last - first + 1]
    if cached is not None:
        first, last = min(first, cached[0]), max(last, cached[1])
    x = np.arange(first, last + 1, dtype=np.float64) * step
    g, shift = _component_table(grid, deduplicate, x)
    if g.nbytes + shift.nbytes <= _TABLE_MAX_BYTES:
        _TABLE_CACHE.clear()
        _TABLE_CACHE[key] = (first, last, g, shift)
    return g, shift


def evaluate_grid(
    grid: Grid,
    g: np.ndarray,
    shift: np.ndarray,
    node_weights: np.ndarray,
    *,
    deduplicate: bool,
    chunk_size: int,
    keep: int,
    n_jobs: int = 1,
) -> tuple[_TopK, int]:
    """Stream the objective -sum_q node_weights[q, t] log p_theta(x_q) over the grid.

    The component densities depend only on (decoder, mean, std), so they come precomputed
    (``g``, ``shift`` from ``_component_table``) and all priors are mixed by one matrix
    product, p_theta(x_q) = sum_k W[prior, k] g_k(x_q): one log per (point, node) remains.

    Returns:
        The top-``keep`` tracker (flat index = prior * n_decoders + decoder) and the number
        of points evaluated.
    """
    (prior_w, prior_k), _ = _grid_arrays(grid, deduplicate)
    n_keys, n_dec, n_nodes = g.shape
    n_prior = len(prior_w)
    mix = np.zeros((n_prior, n_keys))
    rows = np.repeat(np.arange(n_prior), grid.n_components)
    np.add.at(mix, (rows, prior_k.ravel()), prior_w.ravel())
    top = _TopK(keep, node_weights.shape[1])
    step = max(1, chunk_size // n_prior)
    flat_g = g.reshape(n_keys, n_dec * n_nodes)  # column slices of it are BLAS-ready views
    shift_term = shift @ node_weights  # (n_dec, T): the shift is constant per decoder

    def block(start: int) -> tuple[np.ndarray, np.ndarray]:
        stop = min(start + step, n_dec)
        n_c = stop - start
        dens = mix @ flat_g[:, start * n_nodes : stop * n_nodes]  # (n_prior, n_c * Q)
        # a density that underflows relative to the best key stays finite, so that nodes of
        # zero quadrature weight contribute 0, not nan
        np.maximum(dens, 1e-300, out=dens)
        log_p = np.log(dens, out=dens).reshape(n_prior * n_c, n_nodes)
        values = -(log_p @ node_weights).reshape(n_prior, n_c, -1) - shift_term[None, start:stop]
        flat = (np.arange(n_prior)[:, None] * n_dec + np.arange(start, stop)).ravel()
        return values.reshape(n_prior * n_c, -1), flat

    starts = range(0, n_dec, step)
    if n_jobs == 1 or len(starts) == 1:
        for start in starts:
            top.update(*block(start))
    else:  # numpy releases the GIL in matmul and log: threads share the table, no copies
        with ThreadPoolExecutor(n_jobs) as pool:
            for values, flat in pool.map(block, starts):
                top.update(values, flat)
    return top, n_prior * n_dec


def _grid_models(grid: Grid, deduplicate: bool, flat: np.ndarray) -> ToyModel:
    """The batched ToyModel of grid points given by flat indices."""
    (prior_w, prior_k), (alpha, beta, bias) = _grid_arrays(grid, deduplicate)
    key_means, key_stds = grid.keys()
    p, d = np.divmod(np.asarray(flat, dtype=np.int64), len(alpha))
    return ToyModel(
        prior_w[p],
        key_means[prior_k[p]],
        key_stds[prior_k[p]],
        alpha[d],
        beta[d],
        bias[d],
        np.full(len(p), grid.noise_std),
    )


@dataclass
class GridSearchResult:
    """The outcome of ``grid_search``.

    Attributes:
        minimum: the smallest objective value on the grid.
        minimizers: batched ToyModel of every point within ``tol`` of the minimum.
        candidates: batched ToyModel of the ``keep`` best points, best first.
        values: array of shape (keep,): their objective values.
        n_evaluated: points evaluated (after removing trivially duplicated ones).
        grid_size: points of the full product grid.
        truncated: True when more than ``keep`` points lie within ``tol`` of the minimum.
        seconds: wall time of the search.
    """

    minimum: float
    minimizers: ToyModel
    candidates: ToyModel
    values: np.ndarray
    n_evaluated: int
    grid_size: int
    truncated: bool
    seconds: float
    objective: str
    tol: float

    @property
    def n_minimizers(self) -> int:
        """The number of grid points within ``tol`` of the minimum."""
        return len(self.minimizers)

    def unique_up_to_equivalence(self, model: ToyModel, tol: float = 1e-6) -> bool:
        """Whether every minimiser is ``equivalent`` to ``model`` (and none was cut off)."""
        return not self.truncated and all(equivalent(m, model, tol) for m in self.minimizers)

    def best_nonequivalent(self, model: ToyModel, tol: float = 1e-6) -> tuple[float, int | None]:
        """The best objective value among candidates not equivalent to ``model``.

        Returns (value, position in ``candidates``); (nan, None) when all ``keep`` candidates
        are equivalent to ``model`` (the gap is then at least ``values[-1] - minimum``).
        """
        for i, m in enumerate(self.candidates):
            if not equivalent(m, model, tol):
                return float(self.values[i]), i
        return float("nan"), None


def finish_search(
    top: _TopK, t: int, grid: Grid, dedup: bool, n_eval: int, seconds: float, obj: str, tol: float
) -> GridSearchResult:
    values, flat = top.values[t], top.index[t]
    minimum = float(values[0])
    within = values <= minimum + tol
    return GridSearchResult(
        minimum=minimum,
        minimizers=_grid_models(grid, dedup, flat[within]),
        candidates=_grid_models(grid, dedup, flat),
        values=values,
        n_evaluated=n_eval,
        grid_size=grid.size,
        truncated=bool(within.all() and len(values) >= top.keep),
        seconds=seconds,
        objective=obj,
        tol=tol,
    )


def grid_search(
    true_model: ToyModel | None,
    grid: Grid | None = None,
    *,
    objective: Literal["population", "sample"] = "population",
    x: Any = None,
    chunk_size: int = 50_000,
    tol: float = 1e-10,
    keep: int = 256,
    deduplicate: bool = True,
    n_jobs: int = 1,
) -> GridSearchResult:
    """Exhaustive minimisation of the negative log-likelihood over a grid (App. J.3.1).

    Args:
        true_model: the truth (population objective); may be None for ``"sample"``.
        grid: the grid; ``default_grid(true_model)`` by default.
        objective: ``"population"`` for -int p_true log p_theta (the exact likelihood, by
            quadrature of closed-form densities) or ``"sample"`` for -mean_i log p_theta(x_i).
        x: array of shape (n_samples,), the data for ``"sample"``.
        chunk_size: grid points evaluated per block (bounds memory: ~8 * chunk_size * Q bytes).
        tol: points within ``tol`` of the minimum are minimisers. Equivalent models have equal
            densities, so their values agree to rounding (~1e-13).
        keep: how many best points to keep as ``candidates``.
        deduplicate: evaluate each distinct prior law and decoder function once (the dropped
            points have exactly the same density as a kept one).
        n_jobs: threads evaluating blocks of the grid (numpy releases the GIL there).

    Returns:
        GridSearchResult.
    """
    if objective not in ("population", "sample"):
        raise ValueError(f"Expected objective 'population' or 'sample' but got {objective!r}")
    if grid is None:
        if true_model is None:
            raise ValueError("Expected a grid or a true_model to build the default grid")
        grid = default_grid(true_model)
    if not isinstance(grid, Grid):
        raise TypeError(f"Expected grid to be a Grid but got {type(grid).__name__}")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    keep = check_positive_int(keep, "keep")
    if not tol >= 0:
        raise ValueError(f"Expected tol >= 0 but got {tol}")
    start = time.perf_counter()
    if objective == "population":
        if true_model is None or true_model.is_batched:
            raise ValueError("Expected an unbatched true_model for the population objective")
        step = grid.noise_std / 2
        nodes, w = quadrature_nodes(true_model, step=step)
        first = round(nodes[0] / step)
        g, shift = lattice_table(grid, deduplicate, step, first, first + len(nodes) - 1)
        weights = (w * true_model.pdf(nodes))[:, None]
    else:
        if x is None:
            raise ValueError("Expected data x for objective='sample' but got None")
        nodes = check_points(x)
        if nodes.shape[0] == 0:
            raise ValueError("Expected at least 1 sample in x but got 0")
        g, shift = _component_table(grid, deduplicate, nodes)
        weights = np.full((nodes.shape[0], 1), 1.0 / nodes.shape[0])
    n_jobs = check_positive_int(n_jobs, "n_jobs")
    top, n_eval = evaluate_grid(
        grid,
        g,
        shift,
        weights,
        deduplicate=deduplicate,
        chunk_size=chunk_size,
        keep=keep,
        n_jobs=n_jobs,
    )
    return finish_search(
        top, 0, grid, deduplicate, n_eval, time.perf_counter() - start, objective, tol
    )


def quick_grid(n_components: int = 3) -> Grid:
    """A coarse grid for smoke runs: simplex step 1/2, means and alpha, beta, pi in {-1, 0, 1}."""
    n_components = check_positive_int(n_components, "n_components")
    values = (-1.0, 0.0, 1.0)
    return Grid(
        weights=simplex_grid(n_components, 2),
        means=values,
        stds=(0.5,),
        alpha=values,
        beta=values,
        bias=values,
        noise_std=0.25,
    )

"""The maximum-likelihood experiment of App. J.3.1 and the profiles of Fig. 1."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idvae._validation import (
    RandomState,
    check_array,
    check_positive_int,
    check_random_state,
)
from idvae.exact._equivalence import (
    disagreement_mass,
    equivalent,
    injectivity,
    max_log_density_gap,
    tie_total_variation,
)
from idvae.exact._grid import (
    Grid,
    GridSearchResult,
    evaluate_grid,
    finish_search,
    lattice_table,
    paper_grid,
)
from idvae.exact._model import LOG_FLOOR, ToyModel, population_nll, quadrature_nodes

# total variation below which two closed-form densities are equal to float64 rounding
# (equivalent models measure <= 1e-16; distinct ones on the paper grid >= 1.5e-11)
_TV_FLOOR = 1e-13


# ---------------------------------------------------------------------------------------
# the experiment of App. J.3.1
# ---------------------------------------------------------------------------------------
@dataclass
class MLEStudy:
    """The outcome of ``mle_study``: one record per simulated truth and a summary."""

    simulations: list[dict[str, Any]]
    summary: dict[str, Any]
    grids: dict[int, Grid]

    @property
    def truths(self) -> list[ToyModel]:
        """The simulated true models."""
        return [ToyModel.from_dict(s["truth"]) for s in self.simulations]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: summary, simulations and the grids used."""
        grids = {
            str(j): {
                "weights": [list(w) for w in g.weights],
                "means": list(g.means),
                "stds": list(g.stds),
                "alpha": list(g.alpha),
                "beta": list(g.beta),
                "bias": list(g.bias),
                "noise_std": g.noise_std,
                "n_neurons": g.n_neurons,
                "weakly_injective_only": g.weakly_injective_only,
                "size": g.size,
            }
            for j, g in self.grids.items()
        }
        return {"summary": self.summary, "grids": grids, "simulations": self.simulations}


def _resolve_grids(
    grid: Grid | Callable[[int], Grid] | None, n_components: Sequence[int]
) -> tuple[dict[int, Grid], list[int]]:
    if isinstance(grid, Grid):
        return {grid.n_components: grid}, [grid.n_components]
    make = paper_grid if grid is None else grid
    if not callable(make):
        raise TypeError(f"Expected grid to be a Grid, a callable or None but got {type(grid)}")
    comps = [check_positive_int(j, "n_components") for j in n_components]
    if not comps:
        raise ValueError("Expected at least one value in n_components but got none")
    grids = {j: make(j) for j in comps}
    for j, g in grids.items():
        if not isinstance(g, Grid) or g.n_components != j:
            raise ValueError(f"Expected grid({j}) to return a Grid with J = {j}")
    return grids, comps


def mle_study(
    n_simulations: int = 50,
    *,
    random_state: RandomState = 0,
    grid: Grid | Callable[[int], Grid] | None = None,
    n_components: Sequence[int] = (2, 3),
    tol: float = 1e-10,
    equivalence_tol: float = 1e-6,
    tail_mass: float = 1e-4,
    weakly_injective_only: bool = False,
    keep: int = 512,
    chunk_size: int = 50_000,
    n_jobs: int = 1,
) -> MLEStudy:
    """The maximum-likelihood experiment of App. J.3.1 (Fig. 1).

    For each simulation a true model is drawn uniformly from the grid's value sets (steps 1-4
    of App. J.3.1; J alternates over ``n_components``), the population NLL is minimised by
    exhaustive search over the same grid, and the minimisers are compared with the truth up
    to the model's symmetries. All truths with the same J share one pass over the grid (their
    quadrature nodes lie on one lattice; the NLLs of all truths are one matrix product).

    Long for its documentation: the body is about 40 lines, one pass over the grids;
    splitting it would only scatter the description of its arguments.

    Args:
        n_simulations: how many true models.
        random_state: seed of the draws of the truths.
        grid: a Grid (all simulations use its J), a callable J -> Grid, or None for
            ``paper_grid``.
        n_components: the values of J to alternate over (paper: 2 or 3).
        tol: grid points within ``tol`` of the minimal NLL are global minimisers.
        equivalence_tol: tolerance of ``equivalent``.
        tail_mass: a tie (a non-equivalent point within ``tol`` of the minimum) counts as
            explained, for ``n_unique_up_to_tails``, when its density differs from the
            truth's (total variation > 1e-13; then KL > 0 and the truth is strictly better in
            exact arithmetic, by Gibbs, just below what float64 resolves) or when its f
            differs from the truth's only on prior mass < ``tail_mass``.
        weakly_injective_only: restrict truths and grid decoders to the theorem's class
            (f weakly injective, (F2); truths also on the prior's bulk), see ``Grid``.
        keep: best points kept per truth (for the gap to the best non-equivalent point).
        chunk_size: grid points per block.
        n_jobs: threads evaluating blocks of the grid.

    Returns:
        MLEStudy. Its summary counts truths that are a global minimiser
        (``n_truth_is_minimizer``), the unique one up to equivalence (``n_unique``), unique
        up to ties whose densities differ from the truth's (``n_unique_up_to_tails``), and
        unique once ties with a decoder outside (F2) are set aside
        (``n_unique_among_weakly_injective``); the paper reports 50 of 50.
    """
    n_simulations = check_positive_int(n_simulations, "n_simulations")
    n_jobs = check_positive_int(n_jobs, "n_jobs")
    rng = check_random_state(random_state)
    grids, comps = _resolve_grids(grid, n_components)
    if weakly_injective_only:
        grids = {j: dataclasses.replace(g, weakly_injective_only=True) for j, g in grids.items()}
    start = time.perf_counter()
    truths = [grids[comps[i % len(comps)]].random_model(rng) for i in range(n_simulations)]
    records: list[dict[str, Any] | None] = [None] * n_simulations
    evaluated: dict[str, int] = {}
    for j, g in grids.items():
        idx = [i for i in range(n_simulations) if truths[i].n_components == j]
        if not idx:
            continue
        batch = ToyModel.stack([truths[i] for i in idx])
        step = g.noise_std / 2
        nodes, w = quadrature_nodes(batch, step=step)
        first = round(nodes[0] / step)
        table, shift = lattice_table(g, True, step, first, first + len(nodes) - 1)
        node_weights = (w[None, :] * batch.pdf(nodes)).T  # (Q, T)
        top, n_eval = evaluate_grid(
            g,
            table,
            shift,
            node_weights,
            deduplicate=True,
            chunk_size=chunk_size,
            keep=keep,
            n_jobs=n_jobs,
        )
        evaluated[str(j)] = n_eval
        truth_nll = -(np.maximum(batch.logpdf(nodes), LOG_FLOOR) * node_weights.T).sum(1)
        for t, i in enumerate(idx):
            res = finish_search(top, t, g, True, n_eval, 0.0, "population", tol)
            records[i] = _simulation_record(
                i, truths[i], res, float(truth_nll[t]), equivalence_tol, tail_mass
            )
    done = [r for r in records if r is not None]
    summary = _summarise(done, grids, evaluated, time.perf_counter() - start)
    return MLEStudy(simulations=done, summary=summary, grids=grids)


def _simulation_record(
    index: int,
    truth: ToyModel,
    res: GridSearchResult,
    truth_nll: float,
    eq_tol: float,
    tail_mass: float,
) -> dict[str, Any]:
    """One simulation's record: the minimisers found, the ties and whether the truth is unique."""
    truth_is_min = truth_nll <= res.minimum + res.tol
    minimizers = list(res.minimizers)
    is_equiv = [equivalent(m, truth, eq_tol) for m in minimizers]
    n_equiv = sum(is_equiv)
    # ties: non-equivalent minimisers, with the prior mass on which they disagree
    ties = [
        (m, disagreement_mass(m, truth, eq_tol))
        for m, e in zip(minimizers, is_equiv, strict=True)
        if not e
    ]
    worst = max((mass for _, mass in ties), default=0.0)
    tvs = tie_total_variation(truth, [m for m, _ in ties])
    tie_tv = float(tvs.max(initial=0.0))
    # A tie is explained when its density differs from the truth's (total variation above
    # the float64 rounding floor of ~1e-16, or log densities differing far out): then
    # KL > 0 and the truth is strictly better in exact arithmetic (Gibbs), by less than the
    # float64 NLL resolves. So is a tie whose f differs only where the prior has mass
    # < tail_mass. What remains has the truth's density to rounding: not identifiable.
    unexplained = [
        m
        for (m, mass), tv in zip(ties, tvs, strict=True)
        if mass >= tail_mass and tv <= _TV_FLOOR and max_log_density_gap(m, truth) <= 1e-9
    ]
    # Definition 2.1 compares models of the same class: a tie whose decoder is not weakly
    # injective (F2) is outside the class the identifiability theorem speaks about.
    unexplained_f2 = [m for m in unexplained if injectivity(m) != "not weakly injective"]
    best_other, _ = res.best_nonequivalent(truth, eq_tol)
    unique = bool(truth_is_min and not ties and not res.truncated)
    unique_tails = bool(truth_is_min and not unexplained and not res.truncated)
    unique_f2 = bool(truth_is_min and not unexplained_f2 and not res.truncated)
    reason = _uniqueness_reason(
        res, truth_is_min, unique, unique_tails, ties, unexplained, unexplained_f2, tvs
    )
    return {
        "index": index,
        "n_components": truth.n_components,
        "truth": truth.to_dict(),
        "truth_injectivity": injectivity(truth),
        "truth_injectivity_on_bulk": injectivity(truth, bulk=4.0),
        "truth_nll": truth_nll,
        "min_nll": res.minimum,
        "n_minimizers": res.n_minimizers,
        "minimizers_truncated": res.truncated,
        "minimizers": [m.to_dict() for m in minimizers][:20],
        "minimizers_equivalent_to_truth": int(n_equiv),
        "max_disagreement_mass": worst,
        "truth_is_minimizer": bool(truth_is_min),
        "unique_up_to_equivalence": unique,
        "unique_up_to_tails": unique_tails,
        "n_unexplained_ties": len(unexplained),
        "n_unexplained_ties_weakly_injective": len(unexplained_f2),
        "unique_among_weakly_injective": unique_f2,
        "max_tie_total_variation": tie_tv,
        "reason": reason,
        "second_best_nll": best_other,
        "gap": best_other - res.minimum if math.isfinite(best_other) else None,
        "gap_lower_bound": float(res.values[-1] - res.minimum),
    }


def _uniqueness_reason(
    res: GridSearchResult,
    truth_is_min: bool,
    unique: bool,
    unique_tails: bool,
    ties: list[tuple[ToyModel, float]],
    unexplained: list[ToyModel],
    unexplained_f2: list[ToyModel],
    tvs: np.ndarray,
) -> str:
    """Why the truth is, or is not, the unique minimiser (a sentence of the record)."""
    if unique:
        return "unique up to equivalence"
    if not truth_is_min:
        return "a non-equivalent point has a lower NLL than the truth"
    if res.truncated:
        return f"more than {len(res.values)} points tie with the minimum"
    if unique_tails:
        lowest, highest = float(tvs.min()), float(tvs.max(initial=0.0))
        return (
            f"{len(ties)} non-equivalent tie(s), all with a density distinct from the truth's "
            f"(total variation {lowest:.1e} to {highest:.1e}): KL below float64 "
            "resolution; unique in exact arithmetic"
        )
    return (
        f"{len(unexplained)} non-equivalent model(s) with the truth's density (to float64 "
        f"rounding), differing on prior mass {max(mass for _, mass in ties):.2g}: not "
        "identifiable"
        + ("" if unexplained_f2 else "; their decoders are not weakly injective (F2)")
    )


def _summarise(
    records: list[dict[str, Any]],
    grids: dict[int, Grid],
    evaluated: dict[str, int],
    seconds: float,
) -> dict[str, Any]:
    by_class: dict[str, dict[str, int]] = {}
    for r in records:
        c = by_class.setdefault(
            r["truth_injectivity"],
            {
                "n": 0,
                "n_unique": 0,
                "n_unique_up_to_tails": 0,
                "n_unique_among_weakly_injective": 0,
            },
        )
        c["n"] += 1
        c["n_unique"] += int(r["unique_up_to_equivalence"])
        c["n_unique_up_to_tails"] += int(r["unique_up_to_tails"])
        c["n_unique_among_weakly_injective"] += int(r["unique_among_weakly_injective"])
    gaps = [r["gap"] for r in records if r["gap"] is not None and r["unique_up_to_equivalence"]]
    n_tails = sum(r["unique_up_to_tails"] for r in records)
    weakly = [r for r in records if r["truth_injectivity"] != "not weakly injective"]
    return {
        "n_simulations": len(records),
        "n_unique": sum(r["unique_up_to_equivalence"] for r in records),
        "n_unique_up_to_tails": n_tails,
        "max_tie_total_variation": max(r["max_tie_total_variation"] for r in records),
        "n_unique_among_weakly_injective": sum(r["unique_among_weakly_injective"] for r in records),
        "n_truth_is_minimizer": sum(r["truth_is_minimizer"] for r in records),
        "n_weakly_injective": len(weakly),
        "by_injectivity": by_class,
        "failures": [
            {
                "index": r["index"],
                "reason": r["reason"],
                "injectivity": r["truth_injectivity"],
                "injectivity_on_bulk": r["truth_injectivity_on_bulk"],
            }
            for r in records
            if not r["unique_up_to_tails"]
        ],
        "min_gap": min(gaps) if gaps else None,
        "median_gap": float(np.median(gaps)) if gaps else None,
        "grid_sizes": {str(j): g.size for j, g in grids.items()},
        "points_evaluated": evaluated,
        "seconds": round(seconds, 3),
        "paper": "50 of 50 (App. J.3.1)",
    }


# ---------------------------------------------------------------------------------------
# profiles (Fig. 1)
# ---------------------------------------------------------------------------------------
_PROFILE_NAMES = ("weights", "means", "alpha", "beta", "bias")
# an NLL above this stands for +inf (the truth's density vanishes: log 0 is LOG_FLOOR)
_NLL_CEILING = 1e20
# profile values within this of the least NLL are tied with it
_NLL_TIE = 1e-9


def _parse_parameter(model: ToyModel, parameter: str) -> tuple[str, int]:
    name, _, rest = parameter.partition("[")
    if name not in _PROFILE_NAMES or not rest.endswith("]") or not rest[:-1].isdigit():
        raise ValueError(
            f"Expected a parameter like 'means[0]' with name in {_PROFILE_NAMES} but got "
            f"{parameter!r}"
        )
    index = int(rest[:-1])
    size = model.n_components if name in ("weights", "means") else model.n_neurons
    if index >= size:
        raise ValueError(f"Expected an index < {size} for {name} but got {index}")
    return name, index


def profile_nll(
    true_model: ToyModel,
    parameter: str,
    values: Any,
    *,
    at: ToyModel | None = None,
    nodes: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The population NLL along one parameter, the others held at ``at`` (the truth).

    Args:
        true_model: the truth (an unbatched ToyModel).
        parameter: ``"weights[j]"``, ``"means[j]"``, ``"alpha[i]"``, ``"beta[i]"`` or
            ``"bias[i]"``. Varying ``weights[j]`` rescales the other weights proportionally.
        values: array of shape (n,), the values of the parameter.
        at: the model whose other parameters are used; the truth by default.
        nodes: quadrature nodes; the truth's by default.

    Returns:
        Array of shape (n,).
    """
    base = true_model if at is None else at
    name, index = _parse_parameter(base, parameter)
    values = check_array(np.atleast_1d(np.asarray(values, dtype=np.float64)), "values", ndim=1)
    n = values.shape[0]
    params = {k: np.repeat(v[None], n, axis=0) for k, v in base._params.items()}
    if name == "weights":
        if np.any((values < 0) | (values > 1)):
            raise ValueError("Expected weight values in [0, 1]")
        w = params["weights"]
        rest = 1.0 - base.weights[index]
        others = (
            base.weights / rest
            if rest > 0
            else np.full(base.n_components, 1.0 / max(1, base.n_components - 1))
        )
        w[:] = (1.0 - values)[:, None] * others[None]
        w[:, index] = values
    else:
        params[name][:, index] = values
    return population_nll(true_model, ToyModel(**params), nodes=nodes)


def _profile_range(model: ToyModel, name: str, index: int) -> tuple[float, float]:
    if name == "weights":
        return 0.0, 1.0
    centre = float(getattr(model, name)[index])
    half = 2.0 if name == "means" else 1.5
    return centre - half, centre + half


def profile_curves(
    true_model: ToyModel,
    *,
    parameters: Sequence[str] | None = None,
    n_points: int = 121,
) -> list[dict[str, Any]]:
    """The data of Fig. 1: the NLL along each parameter with the others at the truth.

    Each curve is a dict with the fields of ``idvae.report.Profile``, so
    ``idvae.report.profiles_figure(curves)`` draws the figure: ``grid`` (the parameter's
    values, the true one included), ``nll`` (inf where the truth's density vanishes),
    ``truth``, ``minimiser`` (among the grid points tied with the least NLL, the one
    nearest the truth; None on a flat profile, e.g. the mean of a component of weight 0)
    and ``parameter_name``.

    Args:
        true_model: the truth (an unbatched ToyModel).
        parameters: names like ``"means[0]"``; by default every weight, mean and the
            parameters of the first two neurons.
        n_points: grid points per parameter (besides the true value).
    """
    if parameters is None:
        parameters = [
            f"{n}[{i}]"
            for n in _PROFILE_NAMES
            for i in range(true_model.n_components if n in ("weights", "means") else 2)
        ]
    nodes = quadrature_nodes(true_model)
    curves = []
    for parameter in parameters:
        name, index = _parse_parameter(true_model, parameter)
        lo, hi = _profile_range(true_model, name, index)
        truth = float(getattr(true_model, name)[index])
        grid = np.union1d(np.linspace(lo, hi, n_points), [truth])
        nll = profile_nll(true_model, parameter, grid, nodes=nodes)
        finite = nll < _NLL_CEILING
        tied = nll <= nll.min() + _NLL_TIE
        flat = bool(np.ptp(nll[finite]) < _NLL_TIE) if finite.any() else True
        nearest = float(grid[tied][np.argmin(np.abs(grid[tied] - truth))])
        curves.append(
            {
                "grid": grid,
                "nll": np.where(finite, nll, np.inf),
                "truth": truth,
                "minimiser": None if flat else nearest,
                "parameter_name": parameter,
            }
        )
    return curves


def plot_profiles(
    true_model: ToyModel,
    path: str | Path,
    *,
    parameters: Sequence[str] | None = None,
    n_points: int = 121,
    title: str | None = None,
) -> dict[str, dict[str, float]]:
    """Fig. 1 for one truth as a PNG file: ``profile_curves`` drawn by ``profiles_figure``.

    Each panel marks the true value and the profile's minimiser; the paper's claim is that
    they coincide. The file is written atomically.

    Returns:
        For each parameter, ``{"truth": value, "argmin": value}`` (argmin NaN on a flat
        profile).
    """
    from idvae.report import profiles_figure, write_png

    curves = profile_curves(true_model, parameters=parameters, n_points=n_points)
    png = profiles_figure(curves, n_cols=min(4, len(curves)), title=title, dpi=90)
    write_png(path, png)
    return {
        c["parameter_name"]: {
            "truth": c["truth"],
            "argmin": float("nan") if c["minimiser"] is None else c["minimiser"],
        }
        for c in curves
    }

"""Benchmarks of ``idvae.exact``: closed form vs quadrature, grid-search throughput, the study.

Figures (all wall-clock on whatever machine runs this; a shared machine inflates them):
- ``closed_form_speedup``: time per density value by adaptive quadrature (scipy ``quad`` of
  a plain-``math`` integrand, split at kinks and at the mean, epsrel 1e-10) over time per
  value in closed form (one vectorised call for 2000 points), for the same points, with
  ``max_rel_diff`` between the two (equal accuracy check); ``..._one_call_each`` calls the
  closed form once per point (per-call overhead included).
- ``grid_points_per_s``: parameter points of ``paper_grid(3)`` evaluated per second by
  ``grid_search`` (population NLL, deduplicated points), cold (first search: grid
  enumeration and closed-form component table) and warm (another truth on the same grid;
  one thread, and ``n_jobs=2``);
  ``raw_grid_points_per_s`` counts the full product grid those searches cover.
- ``study_point_evaluations_per_s``: (point, truth) pairs per second in ``mle_study``, where
  the truths of one J share a pass over the grid.
- ``mle_study_50_s`` and its counts (``idvae mle --simulations 50`` does the same plus plots);
  ``..._f2``: the same restricted to weakly injective decoders (``idvae mle --f2``).
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy import integrate

from idvae import exact
from idvae.exact import _grid


def _quad_pdf(model: exact.ToyModel, x: float) -> float:
    sigma = float(model.noise_std)
    kinks = [k for k in np.atleast_1d(model.kinks()) if np.isfinite(k)]
    neurons = list(zip(model.alpha.tolist(), model.beta.tolist(), model.bias.tolist(), strict=True))
    total = 0.0
    for w, mu, s in zip(model.weights, model.means, model.stds, strict=True):
        lo, hi = mu - 12 * s, mu + 12 * s
        pts = sorted({lo, hi, mu, *[k for k in kinks if lo < k < hi]})

        def integrand(z: float, mu: float = mu, s: float = s) -> float:
            f = sum(a * max(b * z + c, 0.0) for a, b, c in neurons)
            return math.exp(-0.5 * ((z - mu) / s) ** 2 - 0.5 * ((x - f) / sigma) ** 2) / (
                2 * math.pi * s * sigma
            )

        for a, b in zip(pts[:-1], pts[1:], strict=True):
            total += w * integrate.quad(integrand, a, b, epsabs=0, epsrel=1e-10, limit=200)[0]
    return total


def _closed_form_vs_quadrature() -> dict:
    rng = np.random.default_rng(0)
    grid = exact.paper_grid(3)
    models = [grid.random_model(rng) for _ in range(5)]
    n_quad, n_closed = 20, 2000
    quad_s, closed_s, closed_scalar_s, worst = 0.0, 0.0, 0.0, 0.0
    for model in models:
        x = model.sample(n_closed, rng)
        t = time.perf_counter()
        reference = np.array([_quad_pdf(model, xi) for xi in x[:n_quad]])
        quad_s += (time.perf_counter() - t) / n_quad
        t = time.perf_counter()
        for _ in range(5):
            value = model.pdf(x)
        closed_s += (time.perf_counter() - t) / (5 * n_closed)
        t = time.perf_counter()
        for xi in x[:n_quad]:
            model.pdf(np.array([xi]))
        closed_scalar_s += (time.perf_counter() - t) / n_quad
        worst = max(worst, float(np.max(np.abs(value[:n_quad] / reference - 1))))
    n = len(models)
    return {
        "quad_us_per_value": round(1e6 * quad_s / n, 1),
        "closed_form_us_per_value_vectorised": round(1e6 * closed_s / n, 3),
        "closed_form_us_per_value_one_call_each": round(1e6 * closed_scalar_s / n, 1),
        "closed_form_speedup": round(quad_s / closed_s),
        "closed_form_speedup_one_call_each": round(quad_s / closed_scalar_s, 1),
        "max_rel_diff": worst,
    }


def _grid_throughput() -> dict:
    rng = np.random.default_rng(1)
    grid = exact.paper_grid(3)
    _grid._GRID_CACHE.clear()
    _grid._TABLE_CACHE.clear()
    truths = [grid.random_model(rng) for _ in range(4)]
    t = time.perf_counter()
    first = exact.grid_search(truths[0], grid)
    cold = time.perf_counter() - t
    warm_times = []
    for truth in truths[1:]:
        t = time.perf_counter()
        exact.grid_search(truth, grid)
        warm_times.append(time.perf_counter() - t)
    warm = float(np.median(warm_times))
    t = time.perf_counter()
    for truth in truths[1:]:
        exact.grid_search(truth, grid, n_jobs=2)
    warm2 = (time.perf_counter() - t) / len(truths[1:])
    return {
        "grid_points_per_s_warm_2_threads": round(first.n_evaluated / warm2),
        "grid_size": grid.size,
        "points_evaluated": first.n_evaluated,
        "cold_search_s": round(cold, 3),
        "warm_search_s": round(warm, 3),
        "grid_points_per_s_cold": round(first.n_evaluated / cold),
        "grid_points_per_s_warm": round(first.n_evaluated / warm),
        "raw_grid_points_per_s_warm": round(grid.size / warm),
    }


def _study() -> dict:
    out = {}
    for tag, restrict in (("", False), ("_f2", True)):
        _grid._GRID_CACHE.clear()
        _grid._TABLE_CACHE.clear()
        t = time.perf_counter()
        study = exact.mle_study(50, random_state=0, weakly_injective_only=restrict)
        seconds = time.perf_counter() - t
        s = study.summary
        pairs = sum(
            n * sum(r["n_components"] == int(j) for r in study.simulations)
            for j, n in s["points_evaluated"].items()
        )
        out.update(
            {
                f"mle_study_50{tag}_s": round(seconds, 2),
                f"study{tag}_point_evaluations_per_s": round(pairs / seconds),
                f"n_truth_is_minimizer{tag}": s["n_truth_is_minimizer"],
                f"n_unique{tag}": s["n_unique"],
                f"n_unique_up_to_tails{tag}": s["n_unique_up_to_tails"],
                f"n_unique_among_weakly_injective{tag}": s["n_unique_among_weakly_injective"],
            }
        )
    return out


def run() -> dict:
    return {**_closed_form_vs_quadrature(), **_grid_throughput(), **_study()}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))

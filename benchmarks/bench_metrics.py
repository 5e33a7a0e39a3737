"""Benchmarks of idvae.metrics: distAff,L2 (eq. (34)) and out-of-sample MCC (App. J.1).

Figures: seconds (median of a few repeats) and the value found. distAff is timed on three
kinds of pairs: ``q = A#p`` with permuted components (the answer is 0), ``q = A#p'`` with p'
a 1 % perturbation of p's parameters (a near miss, like two fitted priors), and two
independent mixtures.
Targets from issue 2: distAff at J = 25, m = 10 under 0.5 s; weak out-of-sample MCC at
n = 100,000, m = 10 under 1 s (2 cores).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from idvae import GMM
from idvae.metrics import dist_aff_l2, mcc


def _timed(func: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def _random_gmm(rng: np.random.Generator, n_components: int, dim: int) -> GMM:
    weights = rng.dirichlet(2.0 * np.ones(n_components))
    means = rng.normal(size=(n_components, dim)) * 2.0
    a = rng.normal(size=(n_components, dim, dim))
    return GMM(weights, means, a @ np.swapaxes(a, 1, 2) / dim + 0.2 * np.eye(dim))


def _perturbed(rng: np.random.Generator, p: GMM, eps: float) -> GMM:
    weights = p.weights * np.exp(eps * rng.normal(size=p.n_components))
    means = p.means + eps * p.means.std() * rng.normal(size=p.means.shape)
    chol = np.linalg.cholesky(p.covariances) @ (
        np.eye(p.dim) + 0.3 * eps * rng.normal(size=p.covariances.shape)
    )
    return GMM(weights / weights.sum(), means, chol @ np.swapaxes(chol, 1, 2))


def _dist_aff_figures(n_components: int, dim: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    p = _random_gmm(rng, n_components, dim)
    A = rng.normal(size=(dim, dim)) @ np.diag(10.0 ** rng.uniform(-1, 1, size=dim))
    b = rng.normal(size=dim)
    perm = rng.permutation(n_components)

    def image(r: GMM) -> GMM:
        r = r.pushforward(A, b)
        return GMM(r.weights[perm], r.means[perm], r.covariances[perm])

    pairs = {
        "affine_image": image(p),
        "perturbed_1pct": image(_perturbed(rng, p, 0.01)),
        "independent": _random_gmm(rng, n_components, dim),
    }
    figures: dict[str, float] = {}
    for name, q in pairs.items():
        seconds, distance = _timed(lambda q=q: dist_aff_l2(p, q), repeats)
        figures[f"{name}_seconds"] = round(seconds, 4)
        figures[f"{name}_distance"] = float(f"{distance:.4g}")
    return figures


def _mcc_figures(n_samples: int, dim: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n_samples, dim))
    z_b = np.tanh(z @ rng.normal(size=(dim, dim)) / np.sqrt(dim)) + 0.1 * rng.normal(
        size=(n_samples, dim)
    )
    figures: dict[str, float] = {}
    for alignment in ("none", "cca", "affine"):
        for correlation in ("pearson", "spearman"):
            seconds, value = _timed(
                lambda a=alignment, c=correlation: mcc(
                    z, z_b, alignment=a, correlation=c, random_state=0
                ),
                repeats,
            )
            key = f"{alignment}_{correlation}"
            figures[f"{key}_seconds"] = round(seconds, 4)
            figures[f"{key}_mcc"] = round(value, 4)
    return figures


def run() -> dict[str, Any]:
    """Measure distAff at (J, m) = (3, 2) and (25, 10), and MCC at n = 100,000, m = 10."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "load_average_1min_at_start": round(load, 2),
        "dist_aff_l2_J3_m2": _dist_aff_figures(3, 2, repeats=5),
        "dist_aff_l2_J25_m10": _dist_aff_figures(25, 10, repeats=3),
        "mcc_out_of_sample_n100000_m10": _mcc_figures(100_000, 10, repeats=3),
    }

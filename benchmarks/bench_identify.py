"""Identifiability toolkit: recovery error vs sample size, structure recovery rate, timings.

Figures, not timed tests. Run with ``python benchmarks/run.py identify``.

* ``disentangle_error``: the RMS sine between the rows of W A and the coordinate axes
  (``perm_scale_error``; 0 means W A = P D exactly) when the mixture of Y = A Z + b is
  estimated from n samples — by scikit-learn's EM (``GaussianMixture(full)``) and by
  per-component moments with known labels — for the best pair (``method="pair"``, the
  proof of Thm E.1) and all components jointly (``method="joint"``).
* ``structure_recovery``: share of runs in which ``recover_structure`` (after
  ``disentangle``) returns the true (k, d, ne, P(U)) from an EM fit on n samples.
* timings of each function at moderate sizes.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.optimize
import torch
from sklearn.mixture import GaussianMixture

from idvae.identify import (
    Structure,
    check_decoder,
    disentangle,
    perm_scale_error,
    random_structured_gmm,
    recover_structure,
    same_structure,
)
from idvae.mixture import GMM
from idvae.nets import mlp


def _invertible(rng: np.random.Generator, m: int) -> np.ndarray:
    u, _, vt = np.linalg.svd(rng.normal(size=(m, m)))
    return u @ np.diag(np.exp(rng.uniform(-1, 1, m))) @ vt


def _moments(y: GMM, n: int, seed: int) -> GMM:
    x, lab = y.sample(n, seed, return_labels=True)
    parts = [x[lab == j] for j in range(y.n_components)]
    w = np.array([len(p) for p in parts], float)
    return GMM(w / w.sum(), [p.mean(0) for p in parts], [np.cov(p.T) for p in parts])


def _em(y: GMM, n: int, seed: int, kind: str = "full") -> GMM:
    x = y.sample(n, seed)
    gm = GaussianMixture(y.n_components, covariance_type=kind, n_init=2, random_state=seed)
    return GMM.from_sklearn(gm.fit(x))


def _timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return round(best, 4)


def _disentangle_errors() -> dict:
    rng = np.random.default_rng(0)
    m, J = 3, 4
    z = GMM(np.full(J, 1 / J), 6.0 * rng.normal(size=(J, m)), np.exp(rng.normal(size=(J, m))))
    A, b = _invertible(rng, m), rng.normal(size=m)
    y = z.pushforward(A, b)
    table = {}
    for n in (1_000, 10_000, 100_000):
        row = {}
        for est_name, estimate in (("em", _em), ("moments", _moments)):
            for method in ("pair", "joint"):
                errs = []
                for seed in range(5):
                    g = estimate(y, n, seed)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        errs.append(perm_scale_error(disentangle(g, method=method).matrix @ A))
                row[f"{est_name}_{method}_median"] = round(float(np.median(errs)), 4)
                row[f"{est_name}_{method}_max"] = round(float(np.max(errs)), 4)
        table[str(n)] = row
    return table


def _structure_rate() -> dict:
    sizes, nes = (2, 3), [[0, 1], [1, 2]]
    out = {}
    for n in (2_000, 5_000, 20_000):
        ok = 0
        for seed in range(6):
            g = random_structured_gmm(sizes, nes, separation=4.0, random_state=seed)
            rng = np.random.default_rng(seed)
            A = _invertible(rng, g.dim)
            est = _em(g.pushforward(A), n, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                h = disentangle(est)
            try:
                found = recover_structure(h.pushforward(est))
            except ValueError:  # not diagonal enough after disentangle: a failure
                continue
            M = h.matrix @ A
            rows, cols = scipy.optimize.linear_sum_assignment(
                -np.abs(M / np.linalg.norm(M, axis=1)[:, None])
            )
            to_can = dict(zip(cols.tolist(), rows.tolist(), strict=True))
            truth = Structure(
                2, sizes, g.weights.reshape(sizes),
                tuple(frozenset(to_can[t] for t in ne) for ne in nes),
                np.zeros((0, 2), int), np.zeros((0, 0), int), True, 0.0, 0.0,
            )  # fmt: skip
            ok += same_structure(found, truth, atol=0.03)
        out[str(n)] = f"{ok}/6"
    return out


def _timings() -> dict:
    rng = np.random.default_rng(1)
    m, J = 10, 20
    z = GMM(np.full(J, 1 / J), 3 * rng.normal(size=(J, m)), np.exp(rng.normal(size=(J, m))))
    y_exact = z.pushforward(_invertible(rng, m))
    y_noisy = _moments(y_exact, 20_000, 0)
    g3 = random_structured_gmm((3, 2, 3), [[0, 3], [1, 3], [2, 3]], random_state=0)
    torch.manual_seed(0)
    paper = mlp([2, 64, 512, 512, 10], "leaky_relu")
    injective = mlp([2, 64, 512, 512], "leaky_relu")
    return {
        "disentangle_pair_m10_J20_s": _timed(lambda: disentangle(y_exact, method="pair")),
        "disentangle_joint_m10_J20_noisy_s": _timed(
            lambda: disentangle(y_noisy, method="joint"), repeats=1
        ),
        "recover_structure_J18_s": _timed(lambda: recover_structure(g3)),
        "check_decoder_certified_2-64-512-512_s": _timed(lambda: check_decoder(injective)),
        "check_decoder_empirical_paper_2-64-512-512-10_s": _timed(
            lambda: check_decoder(paper, random_state=0), repeats=1
        ),
    }


def run() -> dict:
    torch.set_num_threads(1)
    return {
        "disentangle_error_vs_n": _disentangle_errors(),
        "structure_recovery_em_(2,3)_overlapping": _structure_rate(),
        "timings": _timings(),
    }

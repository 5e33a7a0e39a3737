"""Eighteenth round of docs/recovery_levers.md: can x's geometry place the components?

A miss of the defaults is a wrong arrangement: one affine map per component (findings
47-48). Where two components come close in x, f is the same affine map on both sides of
the contact unless a crease of f runs between them, so the local geometry of x there ties
the two components' charts together. This script reads the arrangement from the contacts
and asks whether it is the true one, and tries one lever on the way.

* **Gluing at the contacts.** In each component, the Jacobian dx/dy of x on a chart y of
  the component is estimated at every point by least squares on its k nearest neighbours
  in x within the component. For each pair of components, the points of one that lie
  closest in x to the other are paired with their nearest neighbour there, and the
  ``N_CONTACTS`` pairs whose tangent flats agree best (the span of dx/dy) give the affine
  map between the two charts: its linear part A solves J_p A = J_q in least squares (one
  affine piece of f on both sides), its offset is the median of the extrapolated
  positions. The maps of all pairs, weighted by their tangent agreement to the 8th power,
  are made consistent by least squares with the first component fixed (``synchronise``).
  Run on two kinds of chart, with the components of each chart's own labels:
  - ``oracle``: the true z inside each true component, scrambled by a seeded random affine
    map per component (an oracle reading: can the contacts place exact charts?);
  - ``defaults``: the defaults' own latent inside each of their clusters (a lever: does
    gluing move their fit towards the truth?).
* **The shapes inside the components** (an oracle reading): the defaults' weak MCC to the
  truth within each true component, which finding 47's whole-data reading hides.
* **The noise fixed at a data-driven estimate** (a lever): on the 4-5-dimensional instances
  the defaults learn a noise variance well above the truth's, which might absorb a
  direction of the latent into noise. The estimate is the median over every fifth point of
  the mean of the n - m smallest eigenvalues of the covariance of its 4m + 10 nearest
  neighbours, in the units of the estimator's scaled data; the defaults are refitted with
  ``noise_variance`` fixed there.

``--rechart`` tries the lever the readings point to (``rechart/<instance>.json``): new charts
inside the components, glued, then the whole model refitted. Each of the defaults' clusters
gets its own chart from VaDE with one component fitted to its rows from each of
``CHART_STARTS``, the one with the highest log-likelihood on those rows kept (no oracle
information). The charts are glued at the contacts and the defaults are refitted from the
glued latent (20 epochs of regression on it in place of the pretraining, as
``vade-truth-start`` does with the true z). Each of ``PASSES`` passes does this to the
previous fit's clusters (the defaults', then the last refit's), and ``kept`` names the fit
(the defaults or a pass's refit) with the highest log-likelihood on the training rows.

Usage (one file per instance, ``results/levers/contact_glue/<instance>.json``; an instance
already written is skipped)::

    python benchmarks/contact_glue.py seed-0 ... seed-9 random-32 random-37 random-39
    python benchmarks/contact_glue.py --rechart seed-0 ... random-39
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from combine_starts import (
    CONSENSUS_EPOCHS,
    STARTS,
    check_instances,
    fitted,
    instance_parser,
    run_instances,
    simulate,
    weak_within,
)
from levers_vade import ROOT

OUT = ROOT / "contact_glue"
N_CONTACTS = 30  # tangent-agreeing contact pairs per pair of components
CANDIDATES = 300  # closest cross-component pairs considered per pair of components
AGREEMENT_POWER = 8
CHART_STARTS = ("vae", "isomap", "spectral", "ae")
PASSES = 3  # --rechart: passes of recharting and refitting


def local_jacobians(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """dx/dy at each row, shape (n, n_features, m): least squares on its k nearest
    neighbours in x."""
    _, neighbours = cKDTree(x).query(x, k + 1)
    dx = x[neighbours[:, 1:]] - x[:, None]
    dy = y[neighbours[:, 1:]] - y[:, None]
    return np.stack([np.linalg.lstsq(a, b, rcond=None)[0].T for a, b in zip(dy, dx, strict=True)])


def tangent_agreement(jp: np.ndarray, jq: np.ndarray) -> float:
    """Mean squared cosine of the principal angles between the spans of two Jacobians:
    1 when they span the same flat."""
    qp, qq = np.linalg.qr(jp)[0], np.linalg.qr(jq)[0]
    return float(np.linalg.norm(qp.T @ qq) ** 2 / jp.shape[1])


def relative_map(
    x: np.ndarray, y: np.ndarray, labels: np.ndarray, jac: np.ndarray, i: int, j: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, b, agreement): y_i = A y_j + b across the contact of components i and j, and the
    mean tangent agreement of the contact pairs it was read from."""
    rows_i, rows_j = np.flatnonzero(labels == i), np.flatnonzero(labels == j)
    distance, nearest = cKDTree(x[rows_i]).query(x[rows_j])
    closest = np.argsort(distance)[:CANDIDATES]
    qs, ps = rows_j[closest], rows_i[nearest[closest]]
    agreement = np.array([tangent_agreement(jac[p], jac[q]) for p, q in zip(ps, qs, strict=True)])
    best = np.argsort(-agreement)[:N_CONTACTS]
    ps, qs = ps[best], qs[best]
    gram = sum(jac[p].T @ jac[p] for p in ps)
    cross = sum(jac[p].T @ jac[q] for p, q in zip(ps, qs, strict=True))
    a = np.linalg.solve(gram, cross)
    offsets = [
        y[p] + np.linalg.lstsq(jac[p], x[q] - x[p], rcond=None)[0] - a @ y[q]
        for p, q in zip(ps, qs, strict=True)
    ]
    return a, np.median(offsets, axis=0), float(agreement[best].mean())


def synchronise(maps: dict[tuple[int, int], tuple], n_components: int, m: int) -> np.ndarray:
    """Affine maps G_c = [M_c | t_c], shape (J, m, m + 1), with G_0 = [I | 0], that satisfy
    G_j ~ G_i H_ij for every pair in least squares (H_ij the augmented (A, b) of the pair,
    taking j's chart into i's, weighted by its agreement to AGREEMENT_POWER)."""
    size = m + 1
    first = np.vstack([np.eye(m), np.zeros((1, m))])  # G_0 transposed
    blocks, rhs = [], []
    for (i, j), (a, b, agreement) in maps.items():
        h = np.eye(size)
        h[:m, :m], h[:m, m] = a, b
        weight = agreement**AGREEMENT_POWER
        block = np.zeros((size, (n_components - 1) * size))
        target = np.zeros((size, m))
        # G_j^T - H^T G_i^T = 0, with G_0^T known
        if j == 0:
            target -= first
        else:
            block[:, (j - 1) * size : j * size] += np.eye(size)
        if i == 0:
            target += h.T @ first
        else:
            block[:, (i - 1) * size : i * size] -= h.T
        blocks.append(weight * block)
        rhs.append(weight * target)
    solution = np.linalg.lstsq(np.vstack(blocks), np.vstack(rhs), rcond=None)[0]
    transposed = [first, *np.split(solution, n_components - 1)]
    return np.stack([g.T for g in transposed])


def glue_at_contacts(x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The chart y re-arranged: each label's rows moved by the affine map that the
    contacts between the labels imply (the first label's rows stay)."""
    m = y.shape[1]
    groups = list(np.unique(labels))
    k = 3 * m + 3
    jac = np.empty((len(x), x.shape[1], m))
    for group in groups:
        rows = labels == group
        jac[rows] = local_jacobians(x[rows], y[rows], k)
    index = np.searchsorted(groups, labels)
    maps = {
        (a, b): relative_map(x, y, index, jac, a, b)
        for a in range(len(groups))
        for b in range(a + 1, len(groups))
    }
    g = synchronise(maps, len(groups), m)[index]
    return np.einsum("nij,nj->ni", g[:, :, :m], y) + g[:, :, m]


def scrambled_truth(sim, seed: int = 0) -> np.ndarray:  # noqa: ANN001
    """The true z with each true component moved by its own random affine map."""
    rng = np.random.default_rng(seed)
    m = sim.z.shape[1]
    out = np.empty_like(sim.z)
    for c in np.unique(sim.labels):
        rows = sim.labels == c
        out[rows] = sim.z[rows] @ rng.normal(size=(m, m)) + rng.normal(size=m)
    return out


def local_noise_variance(x: np.ndarray, m: int, every: int = 5) -> float:
    """The observation noise variance read from x alone, in the units of VaDE's scaled data
    (centred, divided by the root mean variance): the median over every ``every``-th point
    of the mean of the n - m smallest eigenvalues of its 4m + 10 neighbours' covariance."""
    scaled = (x - x.mean(0)) / np.sqrt(x.var(0).mean())
    _, neighbours = cKDTree(scaled).query(scaled[::every], 4 * m + 10)
    small = [
        np.linalg.eigvalsh(np.cov(scaled[rows].T))[: x.shape[1] - m].mean() for rows in neighbours
    ]
    return float(np.median(small))


def scores(sim, est, seconds: float) -> dict:  # noqa: ANN001
    from idvae.metrics import cluster_accuracy, mcc

    latent = est.transform(sim.x)
    return {
        "weak_mcc": float(mcc(sim.z, latent, alignment="affine", random_state=0)),
        "accuracy": float(cluster_accuracy(sim.u, est.predict(sim.x))),
        "log_likelihood": est.log_likelihood(sim.x),
        "noise_variance": float(est.module_.decoder.noise_variance().detach().mean()),
        "seconds": round(seconds, 1),
    }


def fit_record(instance: str, params: dict) -> dict:
    """The scores, latent and cluster labels of the defaults with ``params``."""
    sim, est, seconds = fitted(instance, params)
    return {
        **scores(sim, est, seconds),
        "latent": est.transform(sim.x),
        "labels": est.predict(sim.x),
    }


def defaults_fit(instance: str) -> dict:
    """The defaults' scores, latent and cluster labels."""
    return fit_record(instance, STARTS["vae"])


def defaults_part(instance: str) -> dict:
    """The defaults' fit, its shapes inside the true components and its charts glued."""
    from idvae.metrics import mcc

    fit = defaults_fit(instance)
    latent, labels = fit.pop("latent"), fit.pop("labels")
    sim = simulate(instance)
    weak = lambda v: float(mcc(sim.z, v, alignment="affine", random_state=0))  # noqa: E731
    within = {int(c): weak_within(sim, latent, c) for c in np.unique(sim.labels)}
    scrambled = scrambled_truth(sim)
    scale = float(np.sqrt(sim.x.var(0).mean()))
    return {
        "defaults": fit,
        "true_noise_variance": float(sim.noise_std**2 / scale**2),
        "within_component_weak_mcc": within,
        "glued_defaults_weak_mcc": weak(glue_at_contacts(sim.x, latent, labels)),
        "glued_oracle_weak_mcc": weak(glue_at_contacts(sim.x, scrambled, sim.labels)),
        "scrambled_oracle_weak_mcc": weak(scrambled),
    }


def noise_part(instance: str) -> dict:
    """The defaults with the noise variance fixed at ``local_noise_variance``."""
    sim = simulate(instance)
    estimate = local_noise_variance(sim.x, sim.z.shape[1])
    sim, est, seconds = fitted(instance, {**STARTS["vae"], "noise_variance": estimate})
    return {"noise_estimate": estimate, "noise_fixed": scores(sim, est, seconds)}


def component_chart(rows: np.ndarray, latent_dim: int, start: str) -> tuple:
    """(chart, log-likelihood): VaDE with one component, from ``start``, on one cluster's
    rows."""
    import torch

    from idvae import VaDE

    torch.set_num_threads(1)
    est = VaDE(latent_dim, 1, device="cpu", random_state=0, pretrain=start).fit(rows)
    return est.transform(rows), est.log_likelihood(rows)


def glued_charts(instance: str, labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """One cluster's chart per label (the likeliest of ``CHART_STARTS``), glued at the
    contacts, and what was read on the way."""
    from idvae.metrics import mcc

    sim = simulate(instance)
    m, clusters = sim.z.shape[1], np.unique(labels)
    charts = {
        (c, s): component_chart(sim.x[labels == c], m, s) for c in clusters for s in CHART_STARTS
    }
    picked = {c: max(CHART_STARTS, key=lambda s, c=c: charts[(c, s)][1]) for c in clusters}
    chart = np.empty((len(labels), m), dtype=charts[(clusters[0], CHART_STARTS[0])][0].dtype)
    for c in clusters:
        chart[labels == c] = charts[(c, picked[c])][0]
    glued = glue_at_contacts(sim.x, chart, labels)
    return glued, {
        "chart_starts": {int(c): picked[c] for c in clusters},
        "chart_log_likelihoods": {
            int(c): {s: charts[(c, s)][1] for s in CHART_STARTS} for c in clusters
        },
        "glued_weak_mcc": float(mcc(sim.z, glued, alignment="affine", random_state=0)),
    }


def rechart_passes(instance: str) -> dict:
    """``--rechart``: the defaults, then ``PASSES`` passes of new charts glued and a refit
    from them, each pass recharting the previous fit's clusters; ``kept`` names the
    likeliest fit."""
    scored = lambda fit: {k: v for k, v in fit.items() if k not in ("latent", "labels")}  # noqa: E731
    fit = defaults_fit(instance)
    record = {"instance": instance, "defaults": scored(fit), "passes": []}
    for _ in range(PASSES):
        glued, step = glued_charts(instance, fit["labels"])
        params = {**STARTS["vae"], "pretrain": glued, "pretrain_epochs": CONSENSUS_EPOCHS}
        fit = fit_record(instance, params)
        record["passes"].append({**step, "refit": scored(fit)})
    fits = {"defaults": record["defaults"]}
    fits.update({f"pass-{k + 1}": step["refit"] for k, step in enumerate(record["passes"])})
    record["kept"] = max(fits, key=lambda key: fits[key]["log_likelihood"])
    return record


def rechart_line(record: dict) -> str:
    """``--rechart``'s printed line: (weak MCC, accuracy) of each fit and the kept one."""
    fits = [record["defaults"]] + [step["refit"] for step in record["passes"]]
    summary = [(round(f["weak_mcc"], 3), round(f["accuracy"], 3)) for f in fits]
    return f"{summary} kept {record['kept']}"


def glue_line(record: dict) -> str:
    """The printed line of an instance: the glued and noise-fixed fits against the defaults."""
    keys = ("glued_oracle_weak_mcc", "glued_defaults_weak_mcc", "noise_estimate",
            "true_noise_variance")  # fmt: skip
    return (f"{ {key: record[key] for key in keys} } defaults "
            f"{round(record['defaults']['weak_mcc'], 3)} noise fixed "
            f"{round(record['noise_fixed']['weak_mcc'], 3)}")  # fmt: skip


def main() -> None:
    parser = instance_parser(__doc__)
    parser.add_argument(
        "--rechart",
        action="store_true",
        help="per-cluster charts glued at the contacts, and a refit (rechart/<instance>.json)",
    )
    args = parser.parse_args()
    check_instances(parser, args)
    if args.rechart:
        parts = {"rechart": rechart_passes}
        whole = lambda name, results: results["rechart"]  # noqa: E731
        run_instances(args.instances, OUT / "rechart", parts, args.jobs, rechart_line, whole)
        return
    parts = {"defaults": defaults_part, "noise": noise_part}
    merged = lambda name, r: {"instance": name, **r["defaults"], **r["noise"]}  # noqa: E731
    run_instances(args.instances, OUT, parts, args.jobs, glue_line, merged)


if __name__ == "__main__":
    main()

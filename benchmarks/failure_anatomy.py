"""Where VaDE's default fit misses the truth on the lever instances: inside or between clusters.

For the simulator's seeds 0-9 (``levers_vade._instance``: 3,000 points, m = 2, n = 10,
J = 3), one ``VaDE(latent_dim=2, n_components=3, random_state=0)`` fit with the defaults,
and three questions about its latents z_hat against the true z:

* ``global_affine``: one affine map z_hat -> z, fitted on the even rows, scored on the odd
  rows (mean over latent coordinates of |corr(z_d, predicted z_d)|; the weak MCC's idea);
* ``per_true_cluster``: the same with one affine map per true component, and
  ``per_fitted_cluster`` with one per cluster the fit predicts. Their intercepts alone
  place each cluster's mean, which explains the spread between clusters whatever z_hat is:
  ``means_only`` is that floor (one constant per true component, no slope).
* ``within_true_cluster``: the weak MCC (``mcc(..., alignment="affine")``, held-out half)
  of z_hat against z inside each true component, averaged with the components' sizes as
  weights: correlations of the spread within a cluster only, with no credit for placing
  the clusters. Near 1 while ``global_affine`` is not: each cluster is an affine image of
  the truth, and the clusters' arrangement relative to each other is what is wrong.
* ``cluster_map_det``: the determinant of each true component's map z_hat -> z. Mixed signs
  mean one cluster is mirrored relative to another (a fold).
* ``posterior_read``: the weak MCC and accuracy when the latents are read with the fitted
  model's own posterior (E[z | x] and argmax P(c | x) by importance sampling,
  ``idvae.experiments.recovery.ceiling.true_posterior`` applied to the fitted prior,
  decoder and noise) instead of the encoder's mean, beside ``encoder`` (``transform`` and
  ``predict``): whether the encoder, not the model, is what misses the truth.

Usage::

    python benchmarks/failure_anatomy.py   # writes results/levers/failure_anatomy.json
"""

from __future__ import annotations

import copy
import types

import numpy as np
import torch

from idvae import VaDE
from idvae._validation import write_json_atomic
from idvae.experiments.recovery.ceiling import true_posterior
from idvae.metrics import cluster_accuracy, mcc
from levers_vade import ROOT, SEEDS, _instance


def affine_fit_score(z: np.ndarray, z_hat: np.ndarray, groups: np.ndarray) -> float:
    """Mean |corr| per coordinate of z against affine predictions from z_hat, one map per group
    fitted on the even rows, scored on the odd rows."""
    rows = np.arange(len(z))
    predicted = np.zeros_like(z)
    for g in np.unique(groups):
        fit, test = (groups == g) & (rows % 2 == 0), (groups == g) & (rows % 2 == 1)
        coef, *_ = np.linalg.lstsq(np.c_[z_hat[fit], np.ones(fit.sum())], z[fit], rcond=None)
        predicted[test] = np.c_[z_hat[test], np.ones(test.sum())] @ coef
    odd = rows % 2 == 1
    return float(
        np.mean([abs(np.corrcoef(z[odd, d], predicted[odd, d])[0, 1]) for d in range(z.shape[1])])
    )


def within_clusters(z: np.ndarray, z_hat: np.ndarray, labels: np.ndarray) -> float:
    """Weak MCC inside each true component, weighted by the components' sizes."""
    parts = [
        (np.sum(labels == k), mcc(z[labels == k], z_hat[labels == k], alignment="affine",
                                  random_state=0))
        for k in np.unique(labels)
    ]  # fmt: skip
    return float(sum(n * v for n, v in parts) / sum(n for n, _ in parts))


def cluster_map_det(z: np.ndarray, z_hat: np.ndarray, labels: np.ndarray) -> list[float]:
    dets = []
    for k in np.unique(labels):
        sel = labels == k
        coef, *_ = np.linalg.lstsq(np.c_[z_hat[sel], np.ones(sel.sum())], z[sel], rcond=None)
        dets.append(float(np.linalg.det(coef[:-1].T)))
    return dets


def posterior_read(est: VaDE, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fitted model's own posterior: P(c | x) and E[z | x] (float64 copy of the decoder)."""
    scaled = est._scale(x).astype(np.float64)
    module = est.module_
    with torch.no_grad():
        means = module.encoder(torch.as_tensor(scaled, dtype=torch.float32))[0].double().numpy()
        noise = float(module.decoder.noise_variance().mean())
    decoder = copy.deepcopy(module.decoder.net).double().requires_grad_(False)
    fitted = types.SimpleNamespace(
        x=scaled, z=means, prior=est.prior_, decoder=decoder, noise_std=noise**0.5
    )
    return true_posterior(fitted)


def anatomy(seed: int) -> dict:
    sim = _instance(seed)
    est = VaDE(latent_dim=2, n_components=3, random_state=0).fit(sim.x)
    z_hat, predicted = est.transform(sim.x), est.predict(sim.x)
    probs, z_post = posterior_read(est, sim.x)

    def scored(z: np.ndarray, labels: np.ndarray) -> dict:
        return {
            "weak_mcc": float(mcc(sim.z, z, alignment="affine", random_state=0)),
            "accuracy": float(cluster_accuracy(sim.u, labels)),
        }

    return {
        "global_affine": affine_fit_score(sim.z, z_hat, np.zeros(len(z_hat), dtype=int)),
        "per_true_cluster": affine_fit_score(sim.z, z_hat, sim.u),
        "per_fitted_cluster": affine_fit_score(sim.z, z_hat, predicted),
        "means_only": affine_fit_score(sim.z, np.zeros_like(z_hat), sim.u),
        "within_true_cluster": within_clusters(sim.z, z_hat, sim.u),
        "cluster_map_det": cluster_map_det(sim.z, z_hat, sim.u),
        "encoder": scored(z_hat, predicted),
        "posterior_read": scored(z_post, probs.argmax(1)),
    }


def main() -> None:
    torch.set_num_threads(1)
    rows = {}
    for seed in SEEDS:
        rows[seed] = r = anatomy(seed)
        print(
            f"seed {seed}: affine global {r['global_affine']:.3f}, per true cluster "
            f"{r['per_true_cluster']:.3f} (means only {r['means_only']:.3f}), per fitted "
            f"cluster {r['per_fitted_cluster']:.3f}, within true clusters "
            f"{r['within_true_cluster']:.3f}; "
            f"dets {[round(d, 2) for d in r['cluster_map_det']]}; encoder "
            f"{r['encoder']['weak_mcc']:.3f} / {r['encoder']['accuracy']:.3f}, posterior read "
            f"{r['posterior_read']['weak_mcc']:.3f} / {r['posterior_read']['accuracy']:.3f}",
            flush=True,
        )
    out = ROOT / "failure_anatomy.json"
    write_json_atomic(out, rows)


if __name__ == "__main__":
    main()

"""What any estimator could reach from x: the true model's own posterior on the lever instances.

For the simulator's seeds 0-9 (``levers_vade._instance``: 3,000 points, m = 2, n = 10,
J = 3), the TRUE model (true prior, true decoder, true noise) gives each observed x a
posterior over the latent z and over the component c. Two ceilings follow:

* ``bayes_accuracy``: the cluster accuracy of the Bayes classifier argmax_c p(c | x) against
  the labels that generated the data. No estimator that sees only x can beat it in
  expectation; on a finite sample it is the accuracy a perfect fit of the true model gets.
* ``posterior_mean_weak_mcc``: the weak MCC (affine alignment, as ``levers_vade`` scores
  fits) of E[z | x] to the true z: how close a latent read from x can be to the truth when
  the noise hides part of z.

The posterior is ``idvae.experiments.recovery.ceiling.true_posterior`` (the benchmark's
``true-posterior`` method), computed with the proposal inflated 2 and 4 times (the figures
must not move). That proposal covers the posterior when the decoder does not bring far
latents close in x; ``fold_margin`` checks it: among 20,000 latents drawn from the prior,
the smallest distance in x, in units of the noise sigma, between the decoded images of two
latents more than 0.5 apart.

Beside these, ``qda_accuracy_z``: a QDA on the true z (the separability that the recovery
benchmark reports), which ignores what the decoder and the noise hide.

Usage::

    python benchmarks/bayes_ceiling.py   # writes results/levers/bayes_ceiling.json
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

from idvae._validation import write_json_atomic
from idvae.experiments.recovery.ceiling import true_posterior
from levers_vade import ROOT, SEEDS, _instance

INFLATE = (2.0, 4.0)


def fold_margin(sim, n_draws: int = 20000, far: float = 0.5) -> float:
    """Smallest x-distance / sigma between decoded latents that lie more than ``far`` apart."""
    from sklearn.neighbors import NearestNeighbors

    z = sim.prior.sample(n_draws, random_state=0)
    with torch.no_grad():
        fx = sim.decoder(torch.as_tensor(z)).numpy()
    dist, idx = NearestNeighbors(n_neighbors=50).fit(fx).kneighbors(fx)
    apart = np.linalg.norm(z[:, None, :] - z[idx], axis=-1) > far
    return float(dist[apart].min() / float(sim.noise_std)) if apart.any() else math.inf


def ceiling(seed: int) -> dict:
    from idvae.metrics import cluster_accuracy, mcc

    sim = _instance(seed)
    half = len(sim.z) // 2
    qda = QuadraticDiscriminantAnalysis().fit(sim.z[:half], sim.u[:half])
    row = {"qda_accuracy_z": float(qda.score(sim.z[half:], sim.u[half:]))}
    for inflate in INFLATE:
        probs, z_mean = true_posterior(sim, inflate=inflate)
        row[f"inflate{inflate:g}"] = {
            "bayes_accuracy": float(cluster_accuracy(sim.u, probs.argmax(1))),
            "posterior_mean_weak_mcc": float(
                mcc(sim.z, z_mean, alignment="affine", random_state=0)
            ),
        }
    row["fold_margin"] = fold_margin(sim)
    return row


def main() -> None:
    torch.set_num_threads(1)
    rows = {}
    for seed in SEEDS:
        rows[seed] = r = ceiling(seed)
        parts = ", ".join(
            f"x{i:g}: Bayes accuracy {r[f'inflate{i:g}']['bayes_accuracy']:.4f} weak MCC of "
            f"E[z|x] {r[f'inflate{i:g}']['posterior_mean_weak_mcc']:.4f}"
            for i in INFLATE
        )
        print(
            f"seed {seed}: QDA on true z {r['qda_accuracy_z']:.4f}; {parts}; fold margin "
            f"{r['fold_margin']:.1f} sigma",
            flush=True,
        )
    out = ROOT / "bayes_ceiling.json"
    write_json_atomic(out, rows)


if __name__ == "__main__":
    main()

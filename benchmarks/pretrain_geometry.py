"""What VaDE's pretraining leaves for training to fix, on the lever instances.

For the simulator's seeds 0-9 (``levers_vade._instance``: 3,000 points, m = 2, n = 10,
J = 3), VaDE's defaults are fitted twice from the same random state: with ``epochs=0`` (the
VAE pretraining and the mixture fitted to its means, nothing more) and in full. Both
latents are read against the true z:

* ``weak_mcc``: one affine map for all points (the weak MCC);
* ``within_true_cluster``: the weak MCC inside each true component, size-weighted
  (``failure_anatomy.within_clusters``);
* ``cluster_condition``: per true component, the ratio of the largest to the smallest
  singular value of the affine map from the latent to the true z fitted on that component
  alone. An affine image of the truth has the same map on every component; a component
  squeezed into a thin sliver has a large ratio of its own;
* ``moved``: the weak MCC between the pretrained and the trained latents (how far the 100
  training epochs move the geometry).

It also draws seeds 0, 2 and 4 (truth, pretrained, trained; each latent mapped onto the true
z by one least-squares affine map, coloured by the true component).

Usage::

    python benchmarks/pretrain_geometry.py   # results/levers/pretrain_geometry.json and .png
"""

from __future__ import annotations

import numpy as np
import torch

from failure_anatomy import within_clusters
from idvae import VaDE
from idvae._validation import write_json_atomic
from idvae.metrics import mcc
from levers_vade import ROOT, SEEDS, _instance

DRAWN = (0, 2, 4)


def cluster_condition(z: np.ndarray, z_hat: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per true component: largest over smallest singular value of its map z_hat -> z."""
    ratios = []
    for k in np.unique(labels):
        sel = labels == k
        coef, *_ = np.linalg.lstsq(np.c_[z_hat[sel], np.ones(sel.sum())], z[sel], rcond=None)
        s = np.linalg.svd(coef[:-1], compute_uv=False)
        ratios.append(float(s[0] / s[-1]))
    return ratios


def affine_image(z: np.ndarray, z_hat: np.ndarray) -> np.ndarray:
    """z_hat mapped onto z by one least-squares affine map (for drawing)."""
    design = np.c_[z_hat, np.ones(len(z_hat))]
    coef, *_ = np.linalg.lstsq(design, z, rcond=None)
    return design @ coef


def geometry(seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    sim = _instance(seed)
    latents = {
        "pretrained": VaDE(2, 3, random_state=0, device="cpu", epochs=0).fit(sim.x),
        "trained": VaDE(2, 3, random_state=0, device="cpu").fit(sim.x),
    }
    latents = {name: est.transform(sim.x) for name, est in latents.items()}
    row: dict = {
        name: {
            "weak_mcc": float(mcc(sim.z, z, alignment="affine", random_state=0)),
            "within_true_cluster": within_clusters(sim.z, z, sim.u),
            "cluster_condition": cluster_condition(sim.z, z, sim.u),
        }
        for name, z in latents.items()
    }
    pre, trained = latents["pretrained"], latents["trained"]
    row["moved"] = float(mcc(pre, trained, alignment="affine", random_state=0))
    drawn = {"truth": sim.z, **{k: affine_image(sim.z, z) for k, z in latents.items()}}
    return row, {"labels": sim.u, **drawn}


def draw(panels: dict[int, dict[str, np.ndarray]], rows: dict[int, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 3, figsize=(10, 3.3 * len(panels)))
    for r, (seed, panel) in enumerate(panels.items()):
        for c, name in enumerate(("truth", "pretrained", "trained")):
            ax = axes[r, c]
            ax.scatter(*panel[name].T, c=panel["labels"], s=1.5, cmap="viridis")
            score = "" if name == "truth" else f", weak MCC {rows[seed][name]['weak_mcc']:.3f}"
            ax.set_title(f"seed {seed}: {name}{score}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(ROOT / "pretrain_geometry.png", dpi=80)


def main() -> None:
    torch.set_num_threads(1)
    rows, panels = {}, {}
    for seed in SEEDS:
        rows[seed], panel = geometry(seed)
        if seed in DRAWN:
            panels[seed] = panel
        r = rows[seed]
        print(
            f"seed {seed}: weak MCC pretrained {r['pretrained']['weak_mcc']:.3f} -> trained "
            f"{r['trained']['weak_mcc']:.3f}; within clusters "
            f"{r['pretrained']['within_true_cluster']:.3f} -> "
            f"{r['trained']['within_true_cluster']:.3f}; condition per cluster "
            f"{[round(v, 1) for v in r['pretrained']['cluster_condition']]} -> "
            f"{[round(v, 1) for v in r['trained']['cluster_condition']]}; moved {r['moved']:.3f}",
            flush=True,
        )
    write_json_atomic(ROOT / "pretrain_geometry.json", rows)
    draw(panels, rows)


if __name__ == "__main__":
    main()

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

``--screen VARIANT ...`` asks the cheaper question alone: the weak MCC to the truth of the
latent after the pretraining (``epochs=0``), per seed, for the defaults with one setting
changed (``SCREEN``), one file per variant.

``--drift`` asks whether the pretraining's objective itself keeps the truth: the encoder
and decoder are first regressed on the true z (``pretrain=`` the true z, 50 epochs), then
trained for 50 epochs as the defaults' pretraining trains them (a VAE with prior N(0, I),
Adam at the default learning rate and batch size); the weak MCC to the truth is read after
5, 20 and 50 of those epochs. The defaults are then fitted from the drifted latent
(``pretrain=`` it), to see whether the mixture objective brings it back (``refit``).

Usage::

    python benchmarks/pretrain_geometry.py   # results/levers/pretrain_geometry.json and .png
    python benchmarks/pretrain_geometry.py --screen default ae  # results/levers/pretrain_screen/
    python benchmarks/pretrain_geometry.py --drift 0 1 2   # results/levers/pretrain_drift/
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from failure_anatomy import within_clusters
from idvae import VaDE
from idvae._validation import write_json_atomic
from idvae.metrics import mcc
from idvae.models._layers import standard_vae_loss
from idvae.report import align_affine, fit_affine_alignment
from levers_vade import ROOT, SEEDS, _instance

DRAWN = (0, 2, 4)
# the defaults with one setting of the pretraining changed (or another start geometry)
SCREEN: dict[str, dict] = {
    "default": {},
    "pretrain200": {"pretrain_epochs": 200},
    "batch16": {"batch_size": 16},
    "batch256": {"batch_size": 256},
    "lr1e-3": {"lr": 1e-3},
    "net16": {"encoder_sizes": (16, 16), "decoder_sizes": (16, 16)},
    "net128": {"encoder_sizes": (128, 128), "decoder_sizes": (128, 128)},
    "decoder3": {"decoder_sizes": (64, 64, 64)},
    "noise0.01": {"noise_variance": 0.01},
    "noise0.1": {"noise_variance": 0.1},
    "ae": {"pretrain": "ae"},
    "isomap": {"pretrain": "isomap"},
    "spectral": {"pretrain": "spectral"},
}


def cluster_condition(z: np.ndarray, z_hat: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per true component: largest over smallest singular value of its map z_hat -> z."""
    ratios = []
    for k in np.unique(labels):
        sel = labels == k
        matrix = fit_affine_alignment(z_hat[sel], z[sel]).matrix
        s = np.linalg.svd(matrix, compute_uv=False)
        ratios.append(float(s[0] / s[-1]))
    return ratios


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
    drawn = {"truth": sim.z, **{k: align_affine(z, sim.z) for k, z in latents.items()}}
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


def screen(variant: str) -> dict:
    """Weak MCC to the truth after the pretraining alone, seeds 0-9, for one variant."""
    start = time.perf_counter()
    params = {"epochs": 0, **SCREEN[variant]}
    weak = []
    for seed in SEEDS:
        sim = _instance(seed)
        z = VaDE(2, 3, random_state=0, device="cpu", **params).fit(sim.x).transform(sim.x)
        weak.append(float(mcc(sim.z, z, alignment="affine", random_state=0)))
    return {
        "variant": variant,
        "params": SCREEN[variant],
        "weak_mcc": weak,
        "at_least_095": sum(w >= 0.95 for w in weak),
        "median_weak_mcc": float(np.median(weak)),
        "seconds": round(time.perf_counter() - start, 1),
    }


def drift(
    seed: int,
    epochs: int = 50,
    read: tuple[int, ...] = (5, 20, 50),
    loss: Callable[..., dict] = standard_vae_loss,
) -> dict:
    """Weak MCC to the truth of a latent started at the true z, as N(0, I) pretraining runs
    (``loss(encoder, decoder, x, generator)``, by default the VAE's negative ELBO)."""
    sim = _instance(seed)
    est = VaDE(2, 3, random_state=0, device="cpu", pretrain=sim.z, epochs=0).fit(sim.x)
    module, x = est.module_, torch.as_tensor(est._scale(sim.x))
    optimizer = torch.optim.Adam(module.parameters(), lr=est.lr)
    generator = torch.Generator().manual_seed(0)

    def latent() -> np.ndarray:
        module.eval()
        with torch.no_grad():
            z = module.encoder(x)[0].double().numpy()
        module.train()
        return z

    def weak(z: np.ndarray) -> float:
        return float(mcc(sim.z, z, alignment="affine", random_state=0))

    row = {"seed": seed, "start": weak(latent())}
    for epoch in range(1, epochs + 1):
        for batch in torch.randperm(len(x), generator=generator).split(est.batch_size):
            value = loss(module.encoder, module.decoder, x[batch], generator)
            optimizer.zero_grad()
            value["loss"].backward()
            optimizer.step()
        if epoch in read:
            row[f"after_{epoch}"] = weak(latent())
    refit = VaDE(2, 3, random_state=0, device="cpu", pretrain=latent()).fit(sim.x)
    row["refit"] = weak(refit.transform(sim.x))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--screen", nargs="+", choices=sorted(SCREEN), metavar="VARIANT")
    parser.add_argument("--drift", nargs="+", type=int, choices=list(SEEDS), metavar="SEED")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.drift:
        for seed in args.drift:
            row = drift(seed)
            write_json_atomic(ROOT / "pretrain_drift" / f"seed{seed}.json", row)
            print(", ".join(f"{k} {v:.3f}" if k != "seed" else f"seed {v}" for k, v in row.items()))
        return
    if args.screen:
        for variant in args.screen:
            row = screen(variant)
            write_json_atomic(ROOT / "pretrain_screen" / f"{variant}.json", row)
            weak = " ".join(f"{w:.3f}" for w in row["weak_mcc"])
            print(f"{variant}: {weak}; >= 0.95 on {row['at_least_095']}", flush=True)
        return
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

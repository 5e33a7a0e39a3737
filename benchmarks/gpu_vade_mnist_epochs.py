"""Epoch times of ``idvae reproduce vade-mnist``'s two VaDE configurations on a GPU.

For VaDE's defaults and ``ELBO_PIPELINE`` on VaDE's MNIST network
(``configs.vade_mnist_params``; all 70,000 images, batch 512): one pretraining epoch and two
training epochs, fitted for one seed and for 10 seeds as one batched model
(``idvae.vectorize.fit_seeds``). Writes the whole fit's wall time, each epoch's time (the
engine's ``history_``) and its phase, per configuration and number of seeds: the figures that
size a full run (50 + 100 epochs for the defaults, 10 + 40 for the ELBO pipeline) against a
device's time limit. Run with ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1`` as
``benchmarks/gpu_vade_mnist.sh`` does.

Usage::

    python benchmarks/gpu_vade_mnist_epochs.py --mnist-root DIR \\
        --out results/gpu/vade_mnist_epochs.json
"""

from __future__ import annotations

import argparse
import time

import idvae
from idvae._validation import write_json_atomic
from idvae.experiments.configs import vade_mnist_params
from idvae.experiments.mnist import load_mnist_all
from idvae.vectorize import fit_seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-root", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    x, _ = load_mnist_all(args.mnist_root)
    out: dict[str, dict] = {}
    for name, elbo in (("defaults", False), ("elbo", True)):
        params = vade_mnist_params(False, elbo_pipeline=elbo) | {"pretrain_epochs": 1, "epochs": 2}
        for seeds in ([0], list(range(10))):
            start = time.perf_counter()
            fits = fit_seeds(idvae.VaDE(**params), x, seeds)
            history = fits[0].history_
            out[f"{name}-{len(seeds)}"] = {
                "wall_s": round(time.perf_counter() - start, 2),
                "epochs_s": [round(h["time_s"], 2) for h in history],
                "phases": [h.get("phase") for h in history],
            }
            print(name, len(seeds), out[f"{name}-{len(seeds)}"], flush=True)
            write_json_atomic(args.out, out)


if __name__ == "__main__":
    main()

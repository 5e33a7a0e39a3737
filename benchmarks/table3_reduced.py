"""The reduced Table 3 of RESULTS.md: MFCVAE and iVAE on part of MNIST, Arch1, LeakyReLU.

The configurations of ``idvae reproduce table3`` (``mfcvae_params`` and ``ivae_params`` in
``idvae.experiments.configs``: latent dimension 5, 25 components in one facet, Bernoulli
likelihood, Arch1), reduced: the first ``--n-images`` images of MNIST's training set
(default 20,000), ``--runs`` runs (default 5), MFCVAE 10 pretraining + 20 epochs, iVAE
30 epochs, iVAE's u = the digit labels. Each model is one ``idvae.stability`` study under
``OUT/<model>/`` (every finished run saved at once; a rerun resumes), and
``OUT/summary.json`` holds each study's summary (strong and weak MCC and distAff between
runs, clustering scores against the digit labels) and wall time.

Usage::

    python benchmarks/table3_reduced.py [--mnist-root DIR] [--out results/table3_reduced]

``--mnist-root`` defaults to ``$IDVAE_MNIST_ROOT``, else ``../shared/data/mnist`` next to the
repository. ``--n-images 500 --runs 2 --epochs 1`` is a smoke run of a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "results" / "table3_reduced"


def _mnist_root(option: str | None) -> Path:
    if option:
        return Path(option)
    return Path(os.environ.get("IDVAE_MNIST_ROOT", REPO.parent / "shared" / "data" / "mnist"))


def _specs(epochs: int | None) -> dict:
    from idvae.experiments import EstimatorSpec
    from idvae.experiments.configs import ivae_params, mfcvae_params

    mfcvae = {**mfcvae_params("arch1", "leaky_relu", False), "pretrain_epochs": 10, "epochs": 20}
    ivae = {**ivae_params("arch1", False), "epochs": 30}
    if epochs is not None:
        mfcvae.update(pretrain_epochs=epochs, epochs=epochs)
        ivae.update(epochs=epochs)
    return {"mfcvae": EstimatorSpec("mfcvae", mfcvae), "ivae": EstimatorSpec("ivae", ivae)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-root", default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--n-images", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None, help="override every epoch count")
    args = parser.parse_args()

    import torch

    import idvae
    from idvae.experiments.mnist import load_mnist_all

    torch.set_num_threads(1)
    x, y = load_mnist_all(_mnist_root(args.mnist_root))
    x, y = x[: args.n_images], y[: args.n_images]
    summary: dict = {
        "n_images": len(x),
        "n_runs": args.runs,
        "host": f"{platform.node()} ({os.cpu_count()} cpus, torch {torch.__version__})",
    }
    for name, spec in _specs(args.epochs).items():
        aux = {"u": y} if name == "ivae" else None
        start = time.perf_counter()
        result = idvae.stability(
            spec, x, n_runs=args.runs, labels=None if aux else y, out=args.out / name,
            resume=True, fit_kwargs=aux, transform_kwargs=aux, save_models=False,
        )  # fmt: skip
        summary[name] = {
            "params": spec.params,
            "summary": result.summary(),
            "wall_s": round(time.perf_counter() - start, 2),
        }
        print(name, json.dumps(summary[name]["summary"]["between_runs"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "summary.tmp"
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True, default=list) + "\n")
    tmp.replace(args.out / "summary.json")


if __name__ == "__main__":
    main()

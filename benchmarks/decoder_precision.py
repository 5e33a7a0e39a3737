"""How precisely can a small LeakyReLU net fit the true decoder when it is given the true z?

On the lever instances (``levers_vade._instance``: 3,000 points, m = 2, n = 10, J = 3, a
LeakyReLU decoder with hidden widths 3 and 6 and noise std 0.05), x is regressed on the true
z by an MLP of hidden widths (W, W): Adam (lr 2e-3, cosine schedule, batch 64, ``EPOCHS``
epochs), then ``LBFGS_ITERATIONS`` iterations of full-batch L-BFGS. Both work on x and z
standardised per column, as VaDE does. Reported per seed, in the units of x: the mean
squared residual on the training points after each stage, the true decoder's own residual
(the noise actually drawn), and what the excess costs in log-likelihood per point,
``n/2 * log(residual / true residual)`` nats.

This is the ceiling of a VaDE decoder's precision: a VAE must also find z. When even this
regression leaves an excess worth a tenth of a nat per point, fits of the whole model stay
that far below the true model's likelihood, which hides the few hundredths of a nat that
separate a folded latent from the true one (docs/recovery_levers.md, finding 23).

Usage::

    python benchmarks/decoder_precision.py [--seeds 0,1,2] [--widths 16,64]
    # writes results/levers/decoder_precision.json (seeds already there are kept)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

OUT = Path(__file__).resolve().parent.parent / "results" / "levers" / "decoder_precision.json"
EPOCHS = 300
LBFGS_ITERATIONS = 2000


def regress(seed: int, width: int) -> dict:
    """The residuals of x regressed on the true z by a (width, width) LeakyReLU MLP."""
    import torch

    from idvae.nets import mlp
    from levers_vade import _instance

    sim = _instance(seed)
    x = torch.tensor(sim.x, dtype=torch.float32)
    z = torch.tensor(sim.z, dtype=torch.float32)
    x_mean, x_std = x.mean(0), x.std(0)
    xs, zs = (x - x_mean) / x_std, (z - z.mean(0)) / z.std(0)
    torch.manual_seed(seed)
    net = mlp([zs.shape[1], width, width, xs.shape[1]], "leaky_relu")

    def residual() -> float:
        with torch.no_grad():
            return float((((net(zs) - xs) * x_std) ** 2).mean())

    adam = torch.optim.Adam(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(adam, EPOCHS)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(EPOCHS):
        order = torch.randperm(len(xs), generator=generator)
        for start in range(0, len(xs), 64):
            rows = order[start : start + 64]
            loss = ((net(zs[rows]) - xs[rows]) ** 2).mean()
            adam.zero_grad()
            loss.backward()
            adam.step()
        schedule.step()
    after_adam = residual()
    lbfgs = torch.optim.LBFGS(
        net.parameters(),
        max_iter=LBFGS_ITERATIONS,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
    )

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        loss = ((net(zs) - xs) ** 2).mean()
        loss.backward()
        return loss

    lbfgs.step(closure)
    with torch.no_grad():
        truth = float(((sim.decoder(torch.as_tensor(sim.z)).numpy() - sim.x) ** 2).mean())
    after_lbfgs = residual()
    n = xs.shape[1]
    return {
        "width": width,
        "residual_adam": after_adam,
        "residual_lbfgs": after_lbfgs,
        "residual_true_decoder": truth,
        "excess_nats_adam": 0.5 * n * math.log(after_adam / truth),
        "excess_nats_lbfgs": 0.5 * n * math.log(after_lbfgs / truth),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--widths", default="16,64")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from idvae._validation import write_json_atomic

    torch.set_num_threads(1)
    done = json.loads(OUT.read_text()) if OUT.exists() else {}
    for seed in args.seeds.split(","):
        for width in args.widths.split(","):
            key = f"seed{seed}-w{width}"
            if key not in done:
                done[key] = regress(int(seed), int(width))
                write_json_atomic(OUT, done)
            row = done[key]
            print(
                f"{key}: residual {row['residual_adam']:.5f} (Adam), {row['residual_lbfgs']:.5f} "
                f"(+L-BFGS), true decoder {row['residual_true_decoder']:.5f}; excess "
                f"{row['excess_nats_adam']:.3f} / {row['excess_nats_lbfgs']:.3f} nats per point",
                flush=True,
            )
    for width in args.widths.split(","):
        rows = [r for r in done.values() if r["width"] == int(width)]
        adam = float(np.median([r["excess_nats_adam"] for r in rows]))
        lbfgs = float(np.median([r["excess_nats_lbfgs"] for r in rows]))
        print(f"width {width}: median excess {adam:.3f} (Adam) / {lbfgs:.3f} (+L-BFGS) nats")


if __name__ == "__main__":
    main()

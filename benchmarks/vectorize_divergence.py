"""Why a vectorised seed and its separate fit drift apart: rounding, amplified by Adam and training.

Two measurements on the Table 2 VaDE (``bench_vectorize.table2_vade``) on random
parallelograms with ``--n`` observed dimensions and ``--samples`` points, one torch thread:

1. ``first_step``: the first pretraining step of seed 0 taken by a one-member stack
   (``StackStepper``, batched matmuls) and by a single module (``ModuleStepper``) from the
   same state, batch and noise. It prints the largest difference of the gradients and of the
   updated weights, and the weight entry that moved most: Adam's first step is
   lr * g / (|g| + eps), so where |g| is near eps = 1e-8 a rounding difference in g moves the
   weight by up to lr / (4 eps) times as much.
2. ``epochs``: for each seed, how far ``fit_seeds`` ends from the separate fit (largest
   difference of the latents, ``dz``, and of the prior means; the difference of the
   epoch losses in the history, epoch by epoch), beside the same separate fit perturbed by
   rounding alone: 1 ulp added before training to every entry of the first weight matrix
   (``ulp_first``) or of every parameter (``ulp_all``), or run with 2 torch threads
   (``threads_2``).

Usage: ``python benchmarks/vectorize_divergence.py [--n 10] [--samples 5000] [--seeds 0,1]
[--pipeline elbo|defaults] [--skip-epochs]``. ``--pipeline defaults`` uses VaDE's defaults
(importance-weighted loss, full covariances) with 15 + 30 epochs and a prior refit every 10.

It prints its figures and also writes them, with the date, the machine, the load average and
the arguments, to ``results/bench/vectorize_divergence_<pipeline>_n<n>_samples<samples>_``
``seeds<a-b>.json`` (``..._first_step.json`` with ``--skip-epochs``), written atomically.
Per seed and run the file holds ``dz``,
``dprior_means``, ``dloss_per_epoch`` and ``first_epoch_dloss_over_1`` (the first epoch,
counted from 1 over pretraining and then the VaDE epochs, whose loss differs by more than
1 nat).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vectorize import table2_vade, write_results  # noqa: E402
from idvae.datasets import parallelograms  # noqa: E402
from idvae.models import VaDE  # noqa: E402
from idvae.training import Phase, PhaseResult, run_phase  # noqa: E402
from idvae.training.stack import StackStepper  # noqa: E402
from idvae.training.stepper import ModuleStepper  # noqa: E402
from idvae.vectorize import fit_seeds  # noqa: E402


class _Stop(Exception):
    pass


def first_step(est, x: np.ndarray) -> dict:
    """The first pretraining step, batched (a stack of one) vs single, from one state."""
    captured: list[Phase] = []

    def capture(phase: Phase) -> PhaseResult:
        captured.append(phase)
        raise _Stop

    try:
        clone(est).set_params(random_state=0).fit_with(x, (), phase_runner=capture)
    except _Stop:
        pass
    phase = captured[0]
    single_module, stack_module = phase.module, copy.deepcopy(phase.module)
    method = phase.loss_fn.__func__.__name__
    trained = [
        n for n, p in single_module.named_parameters() if any(p is q for q in phase.parameters)
    ]

    def generators() -> tuple[torch.Generator, torch.Generator]:
        return (
            torch.Generator().set_state(phase.generator.get_state()),
            torch.Generator().set_state(phase.noise_generator.get_state()),
        )

    g, noise = generators()
    params = dict(single_module.named_parameters())
    single = ModuleStepper(
        single_module, phase.data, phase.config, generator=g, noise_generator=noise,
        loss_fn=getattr(single_module, method), parameters=[params[n] for n in trained],
    )  # fmt: skip
    g, noise = generators()
    stack = StackStepper(
        [stack_module], [phase.data], phase.config, method=method, trained=trained,
        generators=[g], noise_generators=[noise],
    )  # fmt: skip
    for stepper in (single, stack):
        stepper.set_lr(phase.config.lr)
        stepper.start_epoch()
        stepper.step(0, phase.config.batch_size)
    stack.to_modules()
    worst = {"dparam": 0.0}
    dgrad = 0.0
    for name in trained:
        p, q = params[name], dict(stack_module.named_parameters())[name]
        grad_q = stack._layout(name, stack.params[name].grad[0])
        dgrad = max(dgrad, float((p.grad - grad_q).abs().max()))
        diff = (p - q).detach().abs().reshape(-1)
        i = int(diff.argmax())
        if float(diff[i]) > worst["dparam"]:
            worst = {
                "dparam": float(diff[i]),
                "name": name,
                "grad_single": float(p.grad.reshape(-1)[i]),
                "grad_batched": float(grad_q.reshape(-1)[i]),
            }
    return {"phase": phase.name, "lr": phase.config.lr, "max_dgrad": dgrad, "worst": worst}


def _separate(est, x: np.ndarray, seed: int, perturb: str | None = None, threads: int = 1):
    """The separate fit, optionally nudged by 1 ulp before training or on more threads."""
    first = [True]

    def runner(phase: Phase) -> PhaseResult:
        if perturb is not None and first[0]:
            first[0] = False
            with torch.no_grad():
                params = list(phase.module.parameters())
                for p in params[:1] if perturb == "first" else params:
                    p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
        return run_phase(phase)

    torch.set_num_threads(threads)
    try:
        return clone(est).set_params(random_state=seed).fit_with(x, (), phase_runner=runner)
    finally:
        torch.set_num_threads(1)


def epochs(est, x: np.ndarray, seeds: list[int]) -> dict:
    """Divergence from the separate fit: vectorised vs rounding-perturbed separate fits."""
    vectorized = fit_seeds(est, x, seeds)
    out = {}
    for model, seed in zip(vectorized, seeds, strict=True):
        ref = _separate(est, x, seed)
        z = ref.transform(x)
        runs = {
            "vectorized": model,
            "ulp_first": _separate(est, x, seed, "first"),
            "ulp_all": _separate(est, x, seed, "all"),
            "threads_2": _separate(est, x, seed, threads=2),
        }
        out[seed] = {"latent_scale": float(np.abs(z).max())}
        for name, other in runs.items():
            dloss = [
                abs(a["loss"] - b["loss"])
                for a, b in zip(other.history_, ref.history_, strict=True)
            ]
            out[seed][name] = {
                "dz": float(np.abs(other.transform(x) - z).max()),
                "dprior_means": float(np.abs(other.prior_.means - ref.prior_.means).max()),
                "dloss_per_epoch": dloss,
                "first_epoch_dloss_over_1": next(
                    (i + 1 for i, d in enumerate(dloss) if d > 1.0), None
                ),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--pipeline", choices=("elbo", "defaults"), default="elbo")
    parser.add_argument("--skip-epochs", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    torch.set_num_threads(1)
    x = parallelograms(args.samples, 3, obs_dim=args.n, random_state=1).x
    est = table2_vade()
    if args.pipeline == "defaults":
        default = VaDE()
        est.set_params(
            covariance_type=default.covariance_type,
            importance_samples=default.importance_samples,
            pretrain_epochs=15,
            epochs=30,
            prior_refit_every=10,
            gmm_n_init=1,
        )
    step = first_step(est, x)
    w = step["worst"]
    print(
        f"first {step['phase']} step (lr {step['lr']:g}): max |dgrad| {step['max_dgrad']:.2g}; "
        f"max |dweight| {w['dparam']:.2g} in {w['name']}, whose gradient is "
        f"{w['grad_single']:.3g} (single) vs {w['grad_batched']:.3g} (batched)"
    )
    seeds = [int(s) for s in args.seeds.split(",")]
    figures: dict = {"first_step": step}
    name = f"vectorize_divergence_{args.pipeline}_n{args.n}_samples{args.samples}"
    if args.skip_epochs:
        name += "_first_step"
    else:
        name += "_seeds" + "-".join(str(s) for s in seeds)
        figures["epochs"] = {str(k): v for k, v in epochs(est, x, seeds).items()}
    for seed, res in figures.get("epochs", {}).items():
        print(f"seed {seed}: latent scale {res['latent_scale']:.3g}")
        for name_, r in res.items():
            if name_ == "latent_scale":
                continue
            per_epoch = " ".join(f"{d:.0e}" for d in r["dloss_per_epoch"])
            print(
                f"  {name_:10s} dz {r['dz']:.3g}  dprior_means {r['dprior_means']:.3g}\n"
                f"    |dloss| per epoch: {per_epoch}"
            )
    arguments = vars(args) | {"seeds": seeds, "pretrain_epochs": est.pretrain_epochs,
                              "epochs": est.epochs, "torch_threads": 1}  # fmt: skip
    path = write_results(name, "vectorize_divergence.py", arguments, figures, 1, load)
    print(f"written to {path}")


if __name__ == "__main__":
    main()

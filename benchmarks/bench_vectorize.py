"""Vectorised seeds: wall time of R seeds as one batched model vs separate fits (Table 2 VaDE).

Configuration of App. J.3.2 / Table 2: random parallelograms, 5,000 samples, n = 2 and
n = 10, m = 2, J = 3, VaDE with encoder n-64-512-64-m and decoder m-64-512-512-n,
LeakyReLU, 15 pretraining + 20 VaDE epochs, batch 100, CPU, one torch thread for every
case (same conditions; on a shared machine all times are inflated by other load).

Figures per n:

* ``one_seed_s``: one separate fit (seed 0; the mean over the separate fits measured);
* ``vectorized_s``: 10 seeds in one batched model (``idvae.vectorize.fit_seeds``);
* ``separate_s``: 10 separate fits, extrapolated as 10 x ``one_seed_s``;
* ``ratio_vectorized_to_one`` (target <= 3) and ``speedup_vs_separate``;
* the check that each seed is its own fit, per separate seed i (0, 1): ``dz_vs_separate``
  (largest difference of the latents of vectorised seed i and separate fit i), beside two
  references that are rounding alone, the same separate fit with every parameter nudged by
  1 ulp before training (``dz_1ulp_vs_separate``) and run with 2 torch threads
  (``dz_2threads_vs_separate``), and ``latent_scale`` (largest |z| of separate fit i); the
  weak MCC to the true plane of every vectorised seed vs of the separate fits (the
  distributions should agree).

``IDVAE_BENCH_QUICK=1``: 1 + 2 epochs, 3 seeds, 2 separate fits (a smoke run).

``python benchmarks/bench_vectorize.py --timing [rounds [threads]]``: the speed figure
alone, as medians of whole fits (not best-of): 1 seed and 10 seeds (``fit_seeds``) of the
Table 2 VaDE on the n = 10 data, 3 + 4 epochs, fitted in turn ``rounds`` times (default 3)
so that both see the same machine load, with ``threads`` torch threads (default 1).

``python benchmarks/bench_vectorize.py --profile``: where a step's time goes, one seed
(``ModuleStepper``) vs 10 seeds stacked (``StackStepper``), 20 steps of the ELBO phase of
the same VaDE on the n = 10 data, one thread: wall ms per step and the matmul kernels' ms
per step (``torch.profiler``), and figures derived from them: the matmul FLOPs of one seed's
step counted from the layer sizes, the matmul rate, the time outside the matmuls, and the
stacked matmuls' time over one seed's whole step.

``--timing`` and ``--profile`` print their figures and also write them, with the date, the
machine, the load average and the arguments, to ``results/bench/vectorize_profile.json``,
``results/bench/vectorize_timing_1thread.json`` or
``results/bench/vectorize_timing_<threads>threads.json`` (written atomically).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

from idvae._validation import write_json_atomic
from idvae.datasets import parallelograms
from idvae.metrics import mcc
from idvae.models import VaDE
from idvae.models.vade import ELBO_PIPELINE
from idvae.training import ModuleStepper, Phase, PhaseResult, StackStepper, run_phase
from idvae.vectorize import fit_seeds

QUICK = os.environ.get("IDVAE_BENCH_QUICK") == "1"
N_SEEDS = 3 if QUICK else 10
N_SEPARATE = 2  # separate fits actually run (seeds 0, 1); 10 separate is extrapolated
RESULTS_DIR = Path(__file__).resolve().parent.parent / "results" / "bench"


def write_results(
    name: str, script: str, arguments: dict, figures: dict, threads: int, load_start: float
) -> Path:
    """Write ``figures`` to ``results/bench/<name>.json`` atomically."""
    record = {
        "command": " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "machine": {
            "platform_machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": threads,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "load_average_1min_start": round(load_start, 2),
            "load_average_1min_end": round(os.getloadavg()[0], 2),
        },
        "arguments": arguments,
        "figures": figures,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}.json"
    write_json_atomic(out, record)
    return out


def table2_vade(pretrain_epochs: int = 15, epochs: int = 20) -> VaDE:
    """The VaDE of App. J.3.2 (Table 2)."""
    if QUICK:
        pretrain_epochs, epochs = 1, 2
    return VaDE(
        **ELBO_PIPELINE | {"pretrain_epochs": pretrain_epochs, "epochs": epochs},
        latent_dim=2,
        n_components=3,
        encoder_sizes=(64, 512, 64),
        decoder_sizes=(64, 512, 512),
        activation="leaky_relu",
        batch_size=100,
        device="cpu",
    )


def _weak_mcc(z: np.ndarray, truth: np.ndarray) -> float:
    return float(mcc(truth, z, alignment="affine", random_state=0))


def _one_ulp_runner():
    """A phase runner: before the first phase, every parameter moves by 1 ulp towards +inf."""
    first = [True]

    def runner(phase: Phase) -> PhaseResult:
        if first[0]:
            first[0] = False
            with torch.no_grad():
                for p in phase.module.parameters():
                    p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
        return run_phase(phase)

    return runner


def _max_dz(a: np.ndarray, b: np.ndarray) -> float:
    return float(f"{float(np.abs(a - b).max()):.3g}")


def bench_case(obs_dim: int) -> dict:
    data = parallelograms(5000, 3, obs_dim=obs_dim, random_state=1)
    est = table2_vade()
    fit_seeds(est, data.x[:300], [0, 1])  # warm-up (imports, vmap set-up)

    separate, separate_s = [], []
    for seed in range(N_SEPARATE):
        start = time.perf_counter()
        separate.append(clone(est).set_params(random_state=seed).fit(data.x))
        separate_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    vectorized, reports = fit_seeds(est, data.x, range(N_SEEDS), return_report=True)
    vectorized_s = time.perf_counter() - start

    # rounding references: each separate fit again, nudged by 1 ulp, and with 2 torch
    # threads (other BLAS blocking, so other rounding); how far these move the latents is
    # how far rounding alone moves this training
    nudged = [
        clone(est).set_params(random_state=s).fit_with(data.x, (), phase_runner=_one_ulp_runner())
        for s in range(N_SEPARATE)
    ]
    torch.set_num_threads(2)
    try:
        rethreaded = [clone(est).set_params(random_state=s).fit(data.x) for s in range(N_SEPARATE)]
    finally:
        torch.set_num_threads(1)

    one = float(np.mean(separate_s))
    z_vec = [m.transform(data.x) for m in vectorized]
    z_sep = [m.transform(data.x) for m in separate]
    mcc_vec = [_weak_mcc(z, data.points) for z in z_vec]
    mcc_sep = [_weak_mcc(z, data.points) for z in z_sep]
    return {
        "n_seeds": N_SEEDS,
        "one_seed_s": round(one, 2),
        "vectorized_s": round(vectorized_s, 2),
        "separate_s": round(N_SEEDS * one, 2),
        "ratio_vectorized_to_one": round(vectorized_s / one, 2),
        "speedup_vs_separate": round(N_SEEDS * one / vectorized_s, 2),
        "seeds_vectorized": sum(r.vectorized for r in reports),
        "dz_vs_separate": [_max_dz(z_vec[i], z_sep[i]) for i in range(N_SEPARATE)],
        "dz_1ulp_vs_separate": [
            _max_dz(nudged[i].transform(data.x), z_sep[i]) for i in range(N_SEPARATE)
        ],
        "dz_2threads_vs_separate": [
            _max_dz(rethreaded[i].transform(data.x), z_sep[i]) for i in range(N_SEPARATE)
        ],
        "latent_scale": [round(float(np.abs(z).max()), 3) for z in z_sep],
        "weak_mcc_truth_vectorized": [round(v, 4) for v in mcc_vec],
        "weak_mcc_truth_separate": [round(v, 4) for v in mcc_sep],
    }


def timing(rounds: int = 3, n_seeds: int = 10, n_threads: int = 1) -> dict:
    """Medians of whole fits: 1 seed vs ``n_seeds`` seeds, in turn (n = 10, 3 + 4 epochs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        data = parallelograms(5000, 3, obs_dim=10, random_state=1)
        est = table2_vade(pretrain_epochs=3, epochs=4)
        fit_seeds(est, data.x[:300], [0, 1])  # warm-up
        one, many = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            clone(est).set_params(random_state=0).fit(data.x)
            one.append(time.perf_counter() - start)
            start = time.perf_counter()
            fit_seeds(est, data.x, range(n_seeds))
            many.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return {
        "torch_threads": n_threads,
        "one_seed_s": [round(t, 2) for t in one],
        f"seeds_{n_seeds}_s": [round(t, 2) for t in many],
        "one_seed_median_s": round(statistics.median(one), 2),
        f"seeds_{n_seeds}_median_s": round(statistics.median(many), 2),
        "ratio_of_medians": round(statistics.median(many) / statistics.median(one), 2),
    }


class _Captured(Exception):
    pass


def profile_steps(n_seeds: int = 10, steps: int = 20) -> dict:
    """Wall and matmul ms per step of the ELBO phase: one module vs ``n_seeds`` stacked."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    data = parallelograms(5000, 3, obs_dim=10, random_state=1)
    captured: list[Phase] = []

    def capture(phase: Phase) -> PhaseResult:
        if phase.name != "train":
            return run_phase(phase)
        captured.append(phase)
        raise _Captured

    try:
        table2_vade(1, 1).set_params(random_state=0).fit_with(data.x, (), phase_runner=capture)
    except _Captured:
        pass
    phase = captured[0]

    def generators() -> tuple[torch.Generator, torch.Generator]:
        return torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)

    module = phase.module
    g, noise = generators()
    single = ModuleStepper(
        module, phase.data, phase.config, generator=g, noise_generator=noise,
        loss_fn=module.loss, parameters=list(module.parameters()),
    )  # fmt: skip
    modules = [copy.deepcopy(module) for _ in range(n_seeds)]
    pairs = [generators() for _ in modules]
    stack = StackStepper(
        modules, [phase.data] * n_seeds, phase.config, method="loss",
        trained=[n for n, _ in module.named_parameters()],
        generators=[a for a, _ in pairs], noise_generators=[b for _, b in pairs],
    )  # fmt: skip
    batch = phase.config.batch_size
    # matmul FLOPs of one seed's step: forward (2 * batch * in * out per linear layer) and
    # backward (twice the forward), counted from the layer sizes
    weights = sum(m.in_features * m.out_features for m in module.modules()
                  if isinstance(m, torch.nn.Linear))  # fmt: skip
    mflop = 6 * batch * weights / 1e6
    out: dict = {}
    for name, stepper in (("one_seed", single), (f"seeds_{n_seeds}", stack)):
        stepper.set_lr(phase.config.lr)
        stepper.start_epoch()
        for k in range(3):  # warm-up
            stepper.step(k * batch, (k + 1) * batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for k in range(3, 3 + steps):
                stepper.step(k * batch, (k + 1) * batch)
            wall = time.perf_counter() - start
        events = prof.key_averages()
        matmul = sum(
            e.self_cpu_time_total
            for e in events
            if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
        )
        total = sum(e.self_cpu_time_total for e in events)
        out[name] = {
            "wall_ms_per_step": round(wall / steps * 1e3, 1),
            "matmul_ms_per_step": round(matmul / steps / 1e3, 1),
            "matmul_share_of_op_time": round(matmul / total, 2),
        }
    one, many = out["one_seed"], out[f"seeds_{n_seeds}"]
    # derived from the rounded figures above, so that they agree with them as printed
    out["derived"] = {
        "matmul_mflop_per_seed_step": round(mflop),
        "matmul_gflop_per_s_one_seed": round(mflop / one["matmul_ms_per_step"]),
        f"matmul_gflop_per_s_seeds_{n_seeds}": round(n_seeds * mflop / many["matmul_ms_per_step"]),
        "non_matmul_ms_per_step_one_seed": round(
            one["wall_ms_per_step"] - one["matmul_ms_per_step"], 1
        ),
        f"non_matmul_ms_per_step_seeds_{n_seeds}": round(
            many["wall_ms_per_step"] - many["matmul_ms_per_step"], 1
        ),
        f"seeds_{n_seeds}_matmul_over_one_seed_wall": round(
            many["matmul_ms_per_step"] / one["wall_ms_per_step"], 1
        ),
    }
    return out


def run() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {f"table2_n{n}": bench_case(n) for n in (2, 10)}
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    load = os.getloadavg()[0]
    if sys.argv[1:2] == ["--profile"]:
        figures = profile_steps()
        print(json.dumps(figures, indent=2))
        arguments = {"n_seeds": 10, "steps": 20, "phase": "train (ELBO)", "obs_dim": 10}
        path = write_results("vectorize_profile", "bench_vectorize.py", arguments, figures, 1, load)
        print(f"written to {path}")
    elif sys.argv[1:2] == ["--timing"]:
        args = [int(a) for a in sys.argv[2:4]]
        rounds, threads = (args[0] if args else 3), (args[1] if len(args) > 1 else 1)
        figures = timing(rounds, n_threads=threads)
        print(json.dumps(figures, indent=2))
        name = f"vectorize_timing_{threads}thread{'s' if threads > 1 else ''}"
        arguments = {"rounds": rounds, "torch_threads": threads, "n_seeds": 10, "obs_dim": 10,
                     "samples": 5000, "pretrain_epochs": 3, "epochs": 4}  # fmt: skip
        path = write_results(name, "bench_vectorize.py", arguments, figures, threads, load)
        print(f"written to {path}")
    else:
        print(json.dumps(run(), indent=2))

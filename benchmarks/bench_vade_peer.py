"""idvae's VaDE epoch against a plain PyTorch VaDE, side by side in one process (issue 10).

Usage::

    python benchmarks/bench_vade_peer.py [--mnist-root DIR] [--subset N] [--epochs E]
        [--batch-sizes 100,512] [--threads T] [--out FILE]

(``make bench`` runs it too, through ``benchmarks/run.py``.) For each batch size it builds
idvae's VaDE module (``idvae.VaDE(10, 10)`` with the MNIST network of Jiang et al.,
784-500-500-2000-10 / 10-2000-500-500-784, ReLU, Bernoulli likelihood) and the peer of
``benchmarks/peer_vade.py`` (the same widths, so the same parameter count), warms both up
on three mini-batches, then times ``--epochs`` whole epochs of each on the same
``--subset`` images, alternating: idvae, peer, peer, idvae, idvae, ... (who goes first
alternates, so a change of load hits both alike; use an even number of epochs, so that each
goes first equally often). idvae trains through its own engine,
``idvae.training.train`` (fused Adam, the non-finite checks, the epoch snapshot), one call
per epoch, timed from outside the call; the peer through its own Adam loop. Both use
``--threads`` torch threads and learning rate 2e-3.

Reported per batch size: every epoch's wall time, the median and the spread (min-max) of
each implementation, the ratio of the medians (peer / idvae: above 1 means idvae is
faster) and the median and spread of the paired per-round ratios. The float32 matmul rate
(1024 x 1024) is measured in the same run, before the first round and after each round, as
the median and spread of all trials (never the best). Each epoch is also read against the
time its Linear-layer flops would take at the rate measured around its round
(``*_over_matmul_bound_per_round``: 1 is the machine's matmul limit), and the 1-minute load
average at the start of each round is recorded, since the machine is shared.

Data: all 70,000 MNIST images from ``--mnist-root``, else ``$IDVAE_MNIST_ROOT``, else
``../shared/data/mnist`` next to the repository, of which a seeded random ``--subset`` is
used; when MNIST is not there, random binary pixels of the same shape (70,000 x 784), and
the results file says so. The timing is about arithmetic, not about the data.

The results go to ``results/bench/vade_peer.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_vade import PeerVaDE, train_epoch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "bench" / "vade_peer.json"
COMMAND = "python benchmarks/bench_vade_peer.py"
N_IMAGES, N_FEATURES = 70_000, 784
LATENT_DIM, N_COMPONENTS = 10, 10
HIDDEN = (500, 500, 2000)
LR = 2e-3
# an even number of epochs, so that each implementation goes first in half the rounds
SUBSET, EPOCHS, BATCH_SIZES, THREADS = 10_000, 6, (100, 512), 2
WARMUP_BATCHES = 3


def mnist_root(option: str | None = None) -> Path:
    """``option``, else ``$IDVAE_MNIST_ROOT``, else ``../shared/data/mnist`` beside the repo."""
    given = option or os.environ.get("IDVAE_MNIST_ROOT")
    return Path(given) if given else REPO.parent / "shared" / "data" / "mnist"


def _shown(path: Path) -> str:
    """``path`` for the results file without an absolute machine path: relative to the
    repository when it lies beside it (``../shared/data/mnist``), else its last two parts."""
    path = path.resolve()
    if path.is_relative_to(REPO.parent):
        return os.path.relpath(path, REPO)
    return str(Path("...", *path.parts[-2:]))


def load_data(root: Path, subset: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``subset`` rows (seeded) of MNIST's 70,000 x 784 images in [0, 1], and the source."""
    x = None
    if root.is_dir():
        try:
            from idvae.datasets import load_mnist_combined

            x, _ = load_mnist_combined(root)
            x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
            source = f"mnist ({_shown(root)}, 70,000 images)"
        except (OSError, ValueError) as err:
            reason = f"unreadable: {type(err).__name__}"
            x = None
        else:
            reason = ""
    else:
        reason = "not found"
    rng = np.random.default_rng(seed)
    if x is None:
        x = rng.integers(0, 2, size=(N_IMAGES, N_FEATURES)).astype(np.float32)
        source = (
            f"random binary pixels, 70,000 x 784 (MNIST {reason} at {_shown(root)}; "
            "the timing is about arithmetic, not the data)"
        )
    rows = rng.permutation(len(x))[:subset]
    return torch.from_numpy(np.ascontiguousarray(x[rows])), source


def idvae_module() -> torch.nn.Module:
    """idvae's VaDE module with the MNIST network, ReLU, Bernoulli, as ``fit`` builds it."""
    import idvae

    estimator = idvae.VaDE(
        LATENT_DIM,
        N_COMPONENTS,
        encoder_sizes=HIDDEN,
        decoder_sizes=tuple(reversed(HIDDEN)),
        activation="relu",
        likelihood="bernoulli",
        covariance_type="diag",  # VaDE's and the ports' prior (pinned: defaults may change)
        importance_samples=1,
        device="cpu",
        random_state=0,
    )
    return estimator._new_module(N_FEATURES, (), seed=0)


def peer_module() -> PeerVaDE:
    """The peer with the same widths, weights seeded without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return PeerVaDE(N_FEATURES, LATENT_DIM, N_COMPONENTS, HIDDEN)


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def linear_flops_per_sample(module: torch.nn.Module) -> float:
    """Training flops of the Linear layers per sample: 2 per multiply-add forward, 4 backward
    (input and weight gradients), only 2 backward for a layer that reads the data."""
    total = 0.0
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            factor = 4.0 if m.in_features == N_FEATURES else 6.0
            total += factor * m.in_features * m.out_features
    return total


def matmul_gflops(trials: int = 5, size: int = 1024, repeats: int = 4) -> list[float]:
    """float32 matmul rates of ``trials`` timed trials (all of them, not the best)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    rates = []
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        rates.append(2 * size**3 * repeats / (time.perf_counter() - start) / 1e9)
    return rates


def _load_average() -> float:
    """The 1-minute load average of the machine (NaN where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def _summary(values: list[float], digits: int = 3) -> dict:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "all": [round(v, digits) for v in values],
    }


def compare(x: torch.Tensor, batch_size: int, epochs: int) -> tuple[dict, list[float]]:
    """Alternate ``epochs`` whole epochs of idvae's VaDE and of the peer on ``x``."""
    from idvae.training import TrainConfig, train

    ours, peer = idvae_module(), peer_module()
    optimizer = torch.optim.Adam(peer.parameters(), lr=LR)
    config = TrainConfig(epochs=1, batch_size=batch_size, lr=LR)
    gen_ours, gen_peer = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)

    def run_ours() -> float:
        return float(train(ours, (x,), config, generator=gen_ours).history[-1]["loss"])

    def run_peer() -> float:
        return train_epoch(peer, optimizer, x, batch_size, gen_peer)

    # warm-up, not timed: allocations and first-call costs of both
    warm = x[: batch_size * WARMUP_BATCHES]
    train(ours, (warm,), config, generator=gen_ours)
    train_epoch(peer, optimizer, warm, batch_size, gen_peer)

    seconds: dict[str, list[float]] = {"idvae": [], "peer": []}
    losses: dict[str, list[float]] = {"idvae": [], "peer": []}
    flops = linear_flops_per_sample(peer) * len(x)
    before = matmul_gflops()
    rates = list(before)
    bound: dict[str, list[float]] = {"idvae": [], "peer": []}
    load: list[float] = []
    round_rates: list[float] = []
    for epoch in range(epochs):
        order = ("idvae", "peer") if epoch % 2 == 0 else ("peer", "idvae")
        load.append(_load_average())
        for who in order:
            start = time.perf_counter()
            loss = run_ours() if who == "idvae" else run_peer()
            seconds[who].append(time.perf_counter() - start)
            losses[who].append(round(loss, 2))
        after = matmul_gflops()
        rates += after
        # the round's matmul rate: measured just before and just after its two epochs
        rate = statistics.median(before + after) * 1e9
        round_rates.append(rate / 1e9)
        for who in bound:
            bound[who].append(seconds[who][-1] * rate / flops)
        before = after
        print(
            f"batch {batch_size}, epoch {epoch + 1}/{epochs}: idvae {seconds['idvae'][-1]:.2f} s, "
            f"peer {seconds['peer'][-1]:.2f} s, matmul {rate / 1e9:.0f} GFLOP/s",
            flush=True,
        )
    ours_med = statistics.median(seconds["idvae"])
    peer_med = statistics.median(seconds["peer"])
    paired = [p / o for o, p in zip(seconds["idvae"], seconds["peer"], strict=True)]
    case = {
        "idvae_epoch_s": _summary(seconds["idvae"]),
        "peer_epoch_s": _summary(seconds["peer"]),
        "ratio_peer_over_idvae_of_medians": round(peer_med / ours_med, 3),
        "ratio_peer_over_idvae_per_round": _summary(paired),
        # an order effect shows as a difference between these two
        "ratio_per_round_median_when_idvae_first": round(statistics.median(paired[::2]), 3),
        "ratio_per_round_median_when_peer_first": (
            round(statistics.median(paired[1::2]), 3) if len(paired) > 1 else None
        ),
        "idvae_images_per_s": round(len(x) / ours_med, 1),
        "peer_images_per_s": round(len(x) / peer_med, 1),
        "matmul_gflops": _summary(rates, 1),
        "matmul_bound_s_at_median_rate": round(flops / (statistics.median(rates) * 1e9), 3),
        "idvae_over_matmul_bound_per_round": _summary(bound["idvae"], 2),
        "peer_over_matmul_bound_per_round": _summary(bound["peer"], 2),
        "matmul_gflops_per_round": [round(v, 1) for v in round_rates],
        "load_average_1min_per_round": [round(v, 2) for v in load],
        "epoch_mean_loss": losses,
    }
    return case, rates


def measure(
    root: Path, subset: int = SUBSET, epochs: int = EPOCHS, batch_sizes=BATCH_SIZES
) -> dict:
    """The side-by-side figures (see the module docstring); sets nothing global but threads."""
    x, source = load_data(root, subset)
    ours, peer = idvae_module(), peer_module()
    results: dict = {
        "command": COMMAND,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), "
        f"python {platform.python_version()}, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "data": source,
        "settings": {
            "subset_images": len(x),
            "subset": "a random subset of the 70,000 images, numpy seed 0",
            "epochs_timed_per_implementation_per_batch_size": epochs,
            "batch_sizes": list(batch_sizes),
            "warmup": f"{WARMUP_BATCHES} mini-batches of each implementation, not timed",
            "order": "alternating: idvae, peer, then peer, idvae, ... (who goes first "
            "alternates every round)",
            "timing": "wall time of each whole epoch, from outside the call (idvae: one "
            "idvae.training.train call of 1 epoch; peer: one train_epoch call)",
            "lr": LR,
            "network": "784-500-500-2000-10 encoder, 10-2000-500-500-784 decoder, ReLU, "
            "Bernoulli (idvae: logits + BCE-with-logits; peer: sigmoid + BCE), diagonal "
            "Gaussian mixture prior, J = 10",
            "idvae": "idvae.VaDE(10, 10, activation='relu', likelihood='bernoulli', "
            "covariance_type='diag') module trained by idvae.training.train (fused Adam)",
            "peer": "benchmarks/peer_vade.py: nn.Sequential + ReLU, sigmoid + "
            "F.binary_cross_entropy, torch.optim.Adam",
        },
        "parameters": {"idvae": n_parameters(ours), "peer": n_parameters(peer)},
        "linear_gflop_per_epoch": round(linear_flops_per_sample(peer) * len(x) / 1e9, 2),
        "batch": {},
    }
    all_rates: list[float] = []
    for batch_size in batch_sizes:
        case, rates = compare(x, batch_size, epochs)
        results["batch"][str(batch_size)] = case
        all_rates += rates
    results["matmul_gflops"] = _summary(all_rates, 1)
    return results


def write(results: dict, out: Path = RESULTS) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)


def _flat(results: dict) -> dict:
    """The headline figures, for ``benchmarks/run.py``'s ``results.json``."""
    figures = {"data": results["data"], "subset_images": results["settings"]["subset_images"]}
    for batch, case in results["batch"].items():
        figures[f"batch{batch}_idvae_epoch_s_median"] = case["idvae_epoch_s"]["median"]
        figures[f"batch{batch}_peer_epoch_s_median"] = case["peer_epoch_s"]["median"]
        figures[f"batch{batch}_ratio_peer_over_idvae"] = case["ratio_peer_over_idvae_of_medians"]
    figures["matmul_gflops_median"] = results["matmul_gflops"]["median"]
    return figures


def run() -> dict:
    """For ``benchmarks/run.py`` (``make bench``): the defaults, written to RESULTS too."""
    torch.set_num_threads(THREADS)
    results = measure(mnist_root())
    write(results)
    return _flat(results)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-root", default=None, help="MNIST folder (see the docstring)")
    parser.add_argument("--subset", type=int, default=SUBSET, help="images per epoch")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="timed epochs of each")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.subset < 1 or args.epochs < 1 or args.threads < 1:
        parser.error("--subset, --epochs and --threads must be positive")
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    torch.set_num_threads(args.threads)
    results = measure(mnist_root(args.mnist_root), args.subset, args.epochs, batch_sizes)
    write(results, args.out)
    print(json.dumps(_flat(results), indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

"""Seventeenth round of docs/recovery_levers.md: can the fits of several starts be combined?

Each start (VaDE's defaults from its VAE pretraining with random_state 0 and 1, and from an
autoencoder, Isomap and spectral embedding) lands in its own optimum, and on the misses each
is wrong somewhere else. This script fits all five to an instance and asks two questions.

* **A consensus start** (a lever, no oracle information): the m-dimensional subspace of
  functions of x that the five latents share most, by generalised canonical correlation
  (MAXVAR: the top m left singular vectors of the five latents' orthonormal bases, side by
  side). If the starts erred independently, the consensus would lie nearer the truth than
  any of them. Scored as it is, and as the start of a fit of the defaults (20 epochs of
  regression on it instead of the pretraining, as ``vade-truth-start`` does with the truth).
* **Where a miss lies** (an oracle reading): each start's latent inside each true component
  mapped by its own affine map onto the truth (``parts on the true arrangement``), and the
  best start's latent per component mapped onto the best-likelihood fit's latent (``best
  parts on the fit's arrangement``), and the best choice of which start places each true
  component (``best mixed placement``: every start mapped affinely onto the likeliest fit).
  The first says how much of weak MCC the components' shapes lose when the arrangement
  between them is right; the second, how much better shapes alone gain when it is not; the
  third, whether the starts' placements recombined reach the truth.

``--more-data FACTOR`` fits only the defaults, on each instance's model (the same prior and
decoder) with FACTOR times the points, to ask whether more data alone leads the search to
the truth (``results/levers/combine_starts/more-data/<instance>-x<FACTOR>.json``).

Usage (one file per instance, ``results/levers/combine_starts/<instance>.json``; an
instance already written is skipped)::

    python benchmarks/combine_starts.py seed-0 ... seed-9 random-32 random-37 random-39
    python benchmarks/combine_starts.py random-37 --more-data 4
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from idvae._validation import write_json_atomic
from levers_vade import ROOT, _instance

OUT = ROOT / "combine_starts"
STARTS = {  # name: VaDE arguments on top of the defaults
    "vae": {"random_state": 0},
    "vae-rs1": {"random_state": 1},
    "ae": {"random_state": 0, "pretrain": "ae"},
    "isomap": {"random_state": 0, "pretrain": "isomap"},
    "spectral": {"random_state": 0, "pretrain": "spectral"},
}
MAX_MIXES = 5000
CONSENSUS_EPOCHS = 20  # regression on the consensus, as vade-truth-start on the truth


def simulate(instance: str, factor: int = 1):  # noqa: ANN201
    """seed-<s>: the simulator's 3,000-point instance; otherwise the recovery benchmark's.
    With ``factor`` > 1, the same model (prior and decoder) with that many times the points."""
    if instance.startswith("seed-"):
        return _instance(int(instance.removeprefix("seed-")), 3000 * factor)
    from idvae.experiments.recovery import simulate_instance
    from pretrain_probes import instance_specs

    spec = instance_specs()[instance]
    return simulate_instance({**spec, "n_samples": int(spec["n_samples"]) * factor})


def consensus(latents: list[np.ndarray]) -> np.ndarray:
    """MAXVAR generalised CCA: the m directions the latents' column spaces share most,
    scaled to unit variance."""
    bases = [np.linalg.svd(v - v.mean(0), full_matrices=False)[0] for v in latents]
    shared = np.linalg.svd(np.hstack(bases), full_matrices=False)[0]
    return shared[:, : latents[0].shape[1]] * np.sqrt(len(shared))


def glue(parts: dict[int, np.ndarray], onto: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each group's rows of ``parts[group]`` mapped by their own least-squares affine map
    onto the same rows of ``onto``."""
    from idvae.report import align_affine

    out = np.empty_like(onto)
    for group, latent in parts.items():
        rows = labels == group
        out[rows] = align_affine(latent[rows], onto[rows])
    return out


def fitted(instance: str, params: dict, factor: int = 1):  # noqa: ANN201
    """The instance's simulation (``factor`` times its points) and the defaults (with
    ``params``) fitted to it on one torch thread, with the seconds the fit took."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from idvae import VaDE

    torch.set_num_threads(1)
    sim = simulate(instance, factor)
    m, j = sim.z.shape[1], sim.prior.weights.size
    start = time.perf_counter()
    est = VaDE(m, j, device="cpu", **params).fit(sim.x)
    return sim, est, time.perf_counter() - start


def fit(instance: str, params: dict, factor: int = 1) -> dict:
    """One fit of the defaults (with ``params``) on the instance (``factor`` times its
    points): its latent and scores."""
    from idvae.metrics import cluster_accuracy, mcc

    sim, est, seconds = fitted(instance, params, factor)
    latent = est.transform(sim.x)
    return {
        "latent": latent,
        "weak_mcc": float(mcc(sim.z, latent, alignment="affine", random_state=0)),
        "accuracy": float(cluster_accuracy(sim.u, est.predict(sim.x))),
        "log_likelihood": est.log_likelihood(sim.x),  # nats per point, 1,000 draws
        "seconds": round(seconds, 1),
    }


def combine(
    instance: str,
    fits: dict[str, dict],
    from_consensus: dict,
    shared: np.ndarray,
    latents: dict[str, np.ndarray],
) -> dict:
    """The instance's results file: the starts, the consensus and the oracle readings."""
    from idvae.metrics import mcc

    sim = simulate(instance)
    weak = lambda v: float(mcc(sim.z, v, alignment="affine", random_state=0))  # noqa: E731
    likeliest = max(fits, key=lambda name: fits[name]["log_likelihood"])
    components = np.unique(sim.labels)
    best_part = {
        c: max(latents, key=lambda name: weak_within(sim, latents[name], c)) for c in components
    }
    return {
        "instance": instance,
        "latent_dim": int(sim.z.shape[1]),
        "n_components": int(len(components)),
        "starts": fits,
        "likeliest": likeliest,
        "consensus_weak_mcc": weak(shared),
        "from_consensus": from_consensus,
        "parts_on_true_arrangement": {
            name: weak(glue(dict.fromkeys(components, v), sim.z, sim.labels))
            for name, v in latents.items()
        },
        "best_parts": {int(c): name for c, name in best_part.items()},
        "best_parts_on_fit_arrangement": weak(
            glue({c: latents[best_part[c]] for c in components}, latents[likeliest], sim.labels)
        ),
        "best_mixed_placement": best_mix(sim, latents, likeliest),
    }


def best_mix(sim, latents: dict[str, np.ndarray], reference: str) -> dict:  # noqa: ANN001
    """The best weak MCC (an oracle reading) of a latent that places each true component as
    one of the starts does: every start mapped by one affine map onto the reference fit, and
    each component's rows taken from the start chosen for it. Exhaustive over the choices
    when there are at most MAX_MIXES of them, else two sweeps of coordinate ascent."""
    from idvae.metrics import mcc
    from idvae.report import align_affine

    aligned = {name: align_affine(v, latents[reference]) for name, v in latents.items()}
    components = np.unique(sim.labels)

    def score(choice: tuple[str, ...]) -> float:
        mixed = np.empty_like(latents[reference])
        for c, name in zip(components, choice, strict=True):
            mixed[sim.labels == c] = aligned[name][sim.labels == c]
        return float(mcc(sim.z, mixed, alignment="affine", random_state=0))

    if len(aligned) ** len(components) <= MAX_MIXES:
        best = max(itertools.product(aligned, repeat=len(components)), key=score)
    else:
        best = (reference,) * len(components)
        for _ in range(2):
            for i in range(len(components)):
                best = max(((*best[:i], name, *best[i + 1 :]) for name in aligned), key=score)
    return {"weak_mcc": score(best), "choice": list(best)}


def weak_within(sim, latent: np.ndarray, component: int) -> float:  # noqa: ANN001
    from idvae.metrics import mcc

    rows = sim.labels == component
    return float(mcc(sim.z[rows], latent[rows], alignment="affine", random_state=0))


def more_data(instances: list[str], factor: int, jobs: int) -> None:
    """The defaults (the ``vae`` start) on each instance's model with ``factor`` times the
    points: does more data alone lead the search to the truth?"""
    folder = OUT / "more-data"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [name for name in instances if not (folder / f"{name}-x{factor}.json").exists()]
    with ProcessPoolExecutor(jobs) as pool:
        futures = {name: pool.submit(fit, name, STARTS["vae"], factor) for name in todo}
        for name, future in futures.items():
            result = future.result()
            n = len(result.pop("latent"))  # one row per point: no second draw of the data
            record = {"instance": name, "factor": factor, "n_samples": n, "defaults": result}
            write_json_atomic(folder / f"{name}-x{factor}.json", record)
            print(name, n, result, flush=True)


def instance_parser(doc: str) -> argparse.ArgumentParser:
    """A parser of INSTANCE ... and --jobs, described by ``doc``'s first line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("instances", nargs="+", metavar="INSTANCE")
    parser.add_argument("--jobs", type=int, default=2, help="fits at a time (at least 1)")
    return parser


def check_instances(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One argparse line (exit 2) for --jobs below 1 or an instance that is not known."""
    if args.jobs < 1:
        parser.error(f"expected --jobs of at least 1 but got {args.jobs}")
    from pretrain_probes import instance_specs

    known = {f"seed-{s}" for s in range(10)} | set(instance_specs())
    unknown = [name for name in args.instances if name not in known]
    if unknown:
        parser.error(f"expected seed-0 ... seed-9 or a recovery instance id but got {unknown}")


def run_instances(
    instances: list[str],
    folder: Path,
    parts: Mapping[str, Callable[[str], dict]],
    jobs: int,
    line: Callable[[dict], object],
    record: Callable[[str, dict], dict] | None = None,
) -> None:
    """Each instance not yet written to ``folder/<instance>.json``: every part of every
    instance queued at once in ``jobs`` worker processes (so that all workers stay busy),
    each instance's record written atomically as soon as its parts are in, and one line
    printed (the instance and ``line(record)``). The record is ``{"instance": name, part:
    result, ...}``, or ``record(name, results)`` when given."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [name for name in instances if not (folder / f"{name}.json").exists()]
    with ProcessPoolExecutor(jobs) as pool:
        queued = {name: {k: pool.submit(f, name) for k, f in parts.items()} for name in todo}
        for name, futures in queued.items():
            results = {key: future.result() for key, future in futures.items()}
            written = record(name, results) if record else {"instance": name, **results}
            write_json_atomic(folder / f"{name}.json", written)
            print(name, line(written), flush=True)


def main() -> None:
    parser = instance_parser(__doc__)
    parser.add_argument(
        "--more-data",
        type=int,
        metavar="FACTOR",
        help="only the defaults, on the same models with FACTOR times the points "
        "(more-data/<instance>-x<FACTOR>.json)",
    )
    args = parser.parse_args()
    check_instances(parser, args)
    if args.more_data is not None and args.more_data < 2:
        parser.error(f"expected --more-data of at least 2 but got {args.more_data}")
    if args.more_data is not None:
        more_data(args.instances, args.more_data, args.jobs)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    todo = [name for name in args.instances if not (OUT / f"{name}.json").exists()]
    with ProcessPoolExecutor(args.jobs) as pool:
        # every start of every instance queued at once, so that both workers stay busy
        starts = {name: {s: pool.submit(fit, name, p) for s, p in STARTS.items()} for name in todo}
        pending = {}
        for name in todo:
            fits = {s: future.result() for s, future in starts[name].items()}
            latents = {s: f.pop("latent") for s, f in fits.items()}
            shared = consensus(list(latents.values()))
            params = {"random_state": 0, "pretrain": shared, "pretrain_epochs": CONSENSUS_EPOCHS}
            pending[name] = (pool.submit(fit, name, params), fits, shared, latents)
        for name, (future, fits, shared, latents) in pending.items():
            from_consensus = future.result()
            from_consensus.pop("latent")
            result = combine(name, fits, from_consensus, shared, latents)
            write_json_atomic(OUT / f"{name}.json", result)
            print(name, {s: round(f["weak_mcc"], 3) for s, f in fits.items()},
                  "consensus", round(result["consensus_weak_mcc"], 3),
                  "from it", round(from_consensus["weak_mcc"], 3), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

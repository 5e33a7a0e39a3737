"""Sixteenth round of docs/recovery_levers.md: pretrainings and priors that might keep the truth.

The fifteenth round found that VaDE's outcome is set by its VAE pretraining, whose prior
N(0, I) pulls even a latent started at the truth away from it. Each probe here changes one
thing about how the fit starts, on top of VaDE's defaults, and fits seeds 0-9 of the
simulator (3,000 points) in full, scored against the truth (weak MCC, accuracy), beside
the defaults themselves (``defaults``):

* ``iw-pretrain``: the VAE pretraining maximises the importance-weighted bound with 10
  draws (prior N(0, I)) instead of the ELBO; its latent right after the pretraining is
  scored too (``pretrained_weak_mcc``).
* ``refit-every-epoch``: the mixture prior refitted by EM after every epoch, not every 20.
* ``scratch-refit-every-epoch``: the same without any pretraining (150 epochs from the
  random networks), so that no N(0, I) objective ever acts.
* ``round-components``: every mixture fitted to the latent (the initial one and each refit)
  has its covariances shrunk half-way towards the pooled within-component shape, at the
  same determinant, against the slivers of finding 37.
* ``spread-scratch``: no pretraining; the prior starts as J unit Gaussians at the vertices
  of a regular simplex (neighbours 2.5 apart) and is learned from there (150 epochs).

``--drift SEED ...`` runs ``pretrain_geometry.py``'s drift test (the encoder and decoder
regressed on the true z, then trained 50 epochs by the pretraining's objective) with the
importance-weighted bound of ``iw-pretrain`` as that objective
(``results/levers/pretrain_probes/drift-iw/seed<s>.json``).

``--basin INSTANCE --t T ...`` asks how wide the truth's basin is on an instance of the
recovery benchmark: the defaults are started (as ``vade-truth-start`` is, 20 epochs of
regression on the start) at (1 - t) z + t v, between the true z (t = 0) and the defaults'
own pretrained latent v mapped affinely onto z (t = 1), and each start's weak MCC is set
beside the fit's and the fit's log-likelihood on its training rows
(``results/levers/pretrain_probes/basin/<instance>.json``). An oracle probe: it reads the
truth.

Usage (one file per probe, ``results/levers/pretrain_probes/<probe>.json``)::

    python benchmarks/pretrain_probes.py iw-pretrain spread-scratch ...
    python benchmarks/pretrain_probes.py --drift 0 4 5 8
    python benchmarks/pretrain_probes.py --basin random-37 --t 0.25 0.5 0.75 0.85 0.9 0.95 1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial

import numpy as np
import torch

from idvae import GMM, VaDE
from idvae._validation import write_json_atomic
from idvae.experiments.recovery import CONFIGURATIONS, simulate_instance
from idvae.metrics import cluster_accuracy, mcc
from idvae.models._layers import LOG_2PI
from idvae.models.vade import VaDEModule
from idvae.report import align_affine
from levers_vade import ROOT, SEEDS, _instance
from pretrain_geometry import drift

OUT = ROOT / "pretrain_probes"
RECOVERY = ROOT.parent / "recovery"
IW_DRAWS = 10
SPREAD = 2.5  # distance between neighbouring means of the simplex prior
ROUNDING = 0.5  # how far each covariance moves towards the pooled shape


def iw_standard_bound(encoder, decoder, x: torch.Tensor, generator: torch.Generator) -> dict:  # noqa: ANN001
    """Negative importance-weighted bound (IW_DRAWS draws) of a VAE with prior N(0, I), the
    counterpart of ``standard_vae_loss``."""
    mean, logvar = encoder(x)
    n, m = mean.shape
    eps = torch.randn((IW_DRAWS, n, m), generator=generator, dtype=mean.dtype)
    z = mean[None] + torch.exp(0.5 * logvar)[None] * eps
    log_q = (-0.5 * (eps**2 + logvar[None] + LOG_2PI)).sum(-1)
    log_pz = (-0.5 * (z**2 + LOG_2PI)).sum(-1)
    log_px = decoder.log_likelihood(x.repeat(IW_DRAWS, 1), z.reshape(-1, m))
    log_w = log_px.reshape(IW_DRAWS, n) + log_pz - log_q
    bound = torch.logsumexp(log_w, 0) - math.log(IW_DRAWS)
    return {"loss": -bound.mean()}


class IWPretrainVaDE(VaDE):
    """VaDE whose VAE pretraining maximises the importance-weighted bound."""

    def _build_module(self, n_features: int, aux_dims: tuple[int, ...]) -> VaDEModule:
        module = super()._build_module(n_features, aux_dims)
        # the probe's own module: its pretraining loss is the IW bound of the same networks
        module.pretrain_vae_loss = partial(iw_standard_bound, module.encoder, module.decoder)
        return module


class RoundComponentsVaDE(VaDE):
    """VaDE whose mixture fits have their covariances shrunk towards the pooled shape."""

    def _mixture_on(self, z: np.ndarray, seed: int) -> GMM:
        fitted = super()._mixture_on(z, seed)
        cov, m = fitted.covariances, z.shape[1]
        pooled = np.einsum("j,jkl->kl", fitted.weights, cov)
        scale = (np.linalg.det(cov) / np.linalg.det(pooled)) ** (1 / m)
        rounded = (1 - ROUNDING) * cov + ROUNDING * scale[:, None, None] * pooled
        return GMM(fitted.weights, fitted.means, rounded)

    def _refit_prior(self, ctx, x: torch.Tensor) -> None:  # noqa: ANN001
        # the rounded mixture always replaces the prior (a comparison on the means would
        # keep the unrounded one)
        seed = int(ctx.rng.integers(0, 2**31 - 1))
        ctx.module.prior.load_gmm(self._mixture_on(self._sampled_encoder_means(ctx, seed, x), seed))


class SpreadVaDE(VaDE):
    """VaDE whose prior starts at J unit Gaussians on a regular simplex (J <= m + 1)."""

    def _initialize_prior(self, ctx, x: torch.Tensor) -> None:  # noqa: ANN001
        j, m = self.n_components, self.latent_dim
        centred = np.eye(j) - 1.0 / j  # vertices of a simplex, neighbours sqrt(2) apart
        basis = np.linalg.svd(centred)[2][: j - 1].T
        means = np.zeros((j, m))
        means[:, : j - 1] = centred @ basis * SPREAD / math.sqrt(2)
        ctx.module.prior.load_gmm(GMM(np.full(j, 1.0 / j), means, np.stack([np.eye(m)] * j)))


_SCRATCH = {"pretrain_epochs": 0, "epochs": 150}
PROBES: dict[str, tuple[type[VaDE], dict]] = {
    "defaults": (VaDE, {}),  # the reference, fitted in the same run
    "iw-pretrain": (IWPretrainVaDE, {}),
    "refit-every-epoch": (VaDE, {"prior_refit_every": 1}),
    "scratch-refit-every-epoch": (VaDE, {**_SCRATCH, "prior_refit_every": 1}),
    "round-components": (RoundComponentsVaDE, {}),
    "spread-scratch": (SpreadVaDE, _SCRATCH),
}


def run(probe: str) -> dict:
    cls, params = PROBES[probe]
    rows = []
    for seed in SEEDS:
        sim = _instance(seed)
        start = time.perf_counter()
        est = cls(2, 3, random_state=0, device="cpu", **params).fit(sim.x)
        row = {
            "seed": seed,
            "weak_mcc": float(mcc(sim.z, est.transform(sim.x), alignment="affine", random_state=0)),
            "accuracy": float(cluster_accuracy(sim.u, est.predict(sim.x))),
            "seconds": round(time.perf_counter() - start, 1),
        }
        if probe == "iw-pretrain":
            pre = cls(2, 3, random_state=0, device="cpu", epochs=0).fit(sim.x)
            z = pre.transform(sim.x)
            row["pretrained_weak_mcc"] = float(mcc(sim.z, z, alignment="affine", random_state=0))
        row["recovered"] = row["weak_mcc"] >= 0.95 and row["accuracy"] >= 0.95
        rows.append(row)
        print(probe, {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    return {
        "probe": probe,
        "params": params,
        "rows": rows,
        "recovered": sum(r["recovered"] for r in rows),
        "recovered_seeds": [r["seed"] for r in rows if r["recovered"]],
    }


def instance_specs() -> dict[str, dict]:
    """The recovery benchmark's instances by id."""
    results = json.loads((RECOVERY / "results.json").read_text())
    return {spec["id"]: spec for spec in results["instances"]}


def basin(instance: str, ts: list[float]) -> dict:
    """Fits of the defaults started between the true z and their own pretrained latent."""
    sim = simulate_instance(spec := instance_specs()[instance])
    m, j = spec["latent_dim"], spec["n_components"]
    start_params = CONFIGURATIONS["vade-truth-start"][1]
    pretrained = VaDE(m, j, random_state=0, device="cpu", epochs=0).fit(sim.x).transform(sim.x)
    toward = align_affine(pretrained, sim.z)
    rows = []
    for t in ts:
        start = (1 - t) * sim.z + t * toward
        params = {**start_params, "pretrain": start}
        est = VaDE(m, j, random_state=0, device="cpu", **params).fit(sim.x)
        row = {
            "t": t,
            "start_weak_mcc": float(mcc(sim.z, start, alignment="affine", random_state=0)),
            "weak_mcc": float(mcc(sim.z, est.transform(sim.x), alignment="affine", random_state=0)),
            "accuracy": float(cluster_accuracy(sim.u, est.predict(sim.x))),
            "log_likelihood": est.log_likelihood(sim.x),  # nats per point, 1,000 draws
        }
        rows.append(row)
        print(instance, {k: round(v, 3) for k, v in row.items()}, flush=True)
    weak = float(mcc(sim.z, pretrained, alignment="affine", random_state=0))
    return {"instance": instance, "pretrained_weak_mcc": weak, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probes", nargs="*", metavar="PROBE", help=", ".join(PROBES))
    parser.add_argument("--drift", nargs="+", type=int, choices=list(SEEDS), metavar="SEED")
    parser.add_argument("--basin", metavar="INSTANCE")
    parser.add_argument("--t", nargs="+", type=float, default=[0.25, 0.5, 0.75, 1.0])
    args = parser.parse_args()
    if sum(map(bool, (args.probes, args.drift, args.basin))) != 1:
        parser.error("expected one of PROBE names, --drift SEED ... or --basin INSTANCE")
    if args.basin and args.basin not in instance_specs():
        parser.error(f"expected an instance of the recovery benchmark but got {args.basin!r}")
    if not all(0 <= t <= 1 for t in args.t):
        parser.error(f"expected every --t in [0, 1] but got {args.t}")
    unknown = sorted(set(args.probes) - set(PROBES))
    if unknown:
        parser.error(f"expected probes among {', '.join(PROBES)} but got {', '.join(unknown)}")
    torch.set_num_threads(1)
    if args.basin:
        write_json_atomic(OUT / "basin" / f"{args.basin}.json", basin(args.basin, args.t))
        return
    for seed in args.drift or ():
        row = drift(seed, loss=iw_standard_bound)
        write_json_atomic(OUT / "drift-iw" / f"seed{seed}.json", row)
        print(", ".join(f"{k} {v:.3f}" if k != "seed" else f"seed {v}" for k, v in row.items()))
    for probe in args.probes:
        result = run(probe)
        write_json_atomic(OUT / f"{probe}.json", result)
        print(f"{probe}: recovered {result['recovered']}/10 {result['recovered_seeds']}")


if __name__ == "__main__":
    main()

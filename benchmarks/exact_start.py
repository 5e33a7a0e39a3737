"""Twentieth round of docs/recovery_levers.md: does the fit keep the truth when it starts there?

``vade-truth-start`` (VaDE's defaults after 20 epochs of regression on the true z) misses on
13 of the recovery benchmark's 54 instances, 7 of them where the true model's posterior
recovers. It is read as the floor of what the objective allows. This script asks whether
it is: it starts VaDE at the exact true model instead and compares the likelihoods.

* **The true model's log-likelihood** on the training rows and on as many fresh rows of the
  same model (``held``), by importance sampling with ``TRUE_DRAWS`` draws per row from a
  Laplace proposal at the row's true z: covariance ``WIDEN``² (J^T J / sigma² + S^-1)^-1,
  J the true decoder's Jacobian there and S the covariance of the true z (which keeps the
  proposal proper where a ReLU decoder is locally singular). An importance-sampling
  estimate is a lower bound in expectation, so the true model is at least this likely.
* **The truth-start fit** (the benchmark's ``vade-truth-start`` with the defaults' 64-64
  decoder) and the **defaults**, scored with their log-likelihoods on both sets.
* **The exact start**: VaDE with the true decoder's widths and activation, its weights,
  the true prior and the true noise variance copied in (in the estimator's scaled units),
  the encoder taken from 20 epochs of regression on the true z. The encoder is trained alone
  (``ENCODER_STEPS`` Adam steps on the training bound, batches of ``BATCH``), then all
  parameters (``JOINT_STEPS`` steps), scored after each stage. Weak MCC and accuracy are
  read from the estimator's own answers (``transform``: the encoder's means; ``predict``:
  p(c | z) at them).

``--ablate`` (``ablate/<instance>.json``) takes one part of the truth away at a time and
trains in the same two stages (``ABLATIONS``): the prior replaced by VaDE's own
initialisation after the encoder's stage, the noise put back at its initial value, the
decoder of the true widths as 20 epochs of regression fit it, and the defaults' 64-64
decoder regressed on the true z for ``WIDE_EPOCHS``.

``--kept-truth`` (``kept-truth/<instance>.json``) asks what a joint training that keeps its
chart makes of the benchmark's truth start, with nothing of the truth but the z: the
defaults' decoder regressed on the true z for ``WIDE_EPOCHS``, VaDE's own prior
initialisation, the noise at the regression's error, then the two stages.

``--drift`` (``drift/<instance>.json``) runs the same training and scores its joint stage
``DRIFT_POINTS`` times along the way, with the training bound (K = 10 draws, the bound the
steps climb) beside the log-likelihood (``LL_DRAWS`` draws): where weak MCC falls, does the
bound rise while the likelihood falls (the bound's own bias), or do both rise (the
likelihood itself prefers the drift)?

Usage (one file per instance, ``results/levers/exact_start/<instance>.json``; an instance
already written is skipped)::

    python benchmarks/exact_start.py seed-0 seed-4 seed-8 random-13
    python benchmarks/exact_start.py --ablate seed-0 seed-4 seed-8 random-13
    python benchmarks/exact_start.py --kept-truth seed-0 seed-4 seed-8 random-01 ... facets-3
    python benchmarks/exact_start.py --drift seed-8 random-13 random-18 random-22
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy.special import logsumexp

from combine_starts import (
    STARTS,
    check_instances,
    fitted,
    instance_parser,
    run_instances,
    simulate,
)
from levers_vade import ROOT

OUT = ROOT / "exact_start"
TRUE_DRAWS = 400
WIDEN = 1.5
ENCODER_STEPS = 3000
JOINT_STEPS = 6000
BATCH = 256
LR = 1e-3
LL_DRAWS = 500
INITIAL_NOISE = 0.1  # the estimator's initial noise variance (idvae.models._layers.Decoder)
ABLATIONS = ("encoder-prior", "initial-noise", "regressed", "wide")
WIDE_EPOCHS = 300  # regression of the defaults' 64-64 decoder on a latent ("wide", --kept-truth)
DRIFT_POINTS = 12  # --drift: the joint stage scored this many times
# the recovery benchmark's vade-truth-start (the true z stands for "truth")
TRUTH_START = {**STARTS["vae"], "pretrain": "truth", "pretrain_epochs": 20}


def true_log_likelihood(sim, x: np.ndarray, z: np.ndarray, seed: int = 0) -> float:  # noqa: ANN001
    """Mean log p(x) per row under the true model, by importance sampling from a Laplace
    proposal at each row's true z (module docstring)."""
    rng = np.random.default_rng(seed)
    n, m = z.shape
    s2 = sim.noise_std**2
    step = 1e-4 * np.eye(m)
    jac = np.stack([(sim.decode(z + h) - sim.decode(z - h)) / 2e-4 for h in step], -1)
    # the prior's overall precision keeps the proposal proper where f is locally singular
    spread = np.linalg.inv(np.cov(sim.z.T).reshape(m, m))
    cov = np.linalg.inv(np.einsum("ndi,ndj->nij", jac, jac) / s2 + spread) * WIDEN**2
    chol = np.linalg.cholesky(cov)
    eps = rng.standard_normal((TRUE_DRAWS, n, m))
    draws = z[None] + np.einsum("nij,knj->kni", chol, eps)
    log_det = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(-1)
    log_q = -0.5 * (eps**2).sum(-1) - log_det[None] - 0.5 * m * np.log(2 * np.pi)
    flat = draws.reshape(-1, m)
    decoded = sim.decode(flat).reshape(TRUE_DRAWS, n, -1)
    d = x.shape[1]
    log_px = -0.5 * ((x[None] - decoded) ** 2).sum(-1) / s2 - 0.5 * d * np.log(2 * np.pi * s2)
    log_pz = sim.prior.logpdf(flat).reshape(TRUE_DRAWS, n)
    return float((logsumexp(log_px + log_pz - log_q, 0) - np.log(TRUE_DRAWS)).mean())


def answers(sim, held, est) -> dict:  # noqa: ANN001
    """Weak MCC and accuracy from the estimator's answers, and its log-likelihoods."""
    from idvae.metrics import cluster_accuracy, mcc

    return {
        "weak_mcc": float(mcc(sim.z, est.transform(sim.x), alignment="affine", random_state=0)),
        "accuracy": float(cluster_accuracy(sim.labels, est.predict(sim.x))),
        "log_likelihood": est.log_likelihood(sim.x, n_draws=LL_DRAWS),
        "held_log_likelihood": est.log_likelihood(held.x, n_draws=LL_DRAWS),
        "noise_variance": float(est.module_.decoder.noise_variance().detach().mean()),
    }


def pipeline_fit(instance: str, params: dict) -> dict:
    """A fit of the defaults with ``params``, scored."""
    sim, held = simulate(instance), simulate(instance, 2)
    if params.get("pretrain") == "truth":
        params = {**params, "pretrain": sim.z}
    return answers(sim, held, fitted(instance, params)[1])


def exact_model(sim, decoder: str = "true"):  # noqa: ANN001, ANN201
    """VaDE set at the true model of ``sim``: its prior and noise variance (in the
    estimator's scaled units) and, with ``decoder="true"``, its decoder's widths, activation
    and weights, with the encoder from 20 epochs of regression on the true z.

    ``decoder="regressed"`` keeps the decoder of the true widths as those 20 epochs fit it
    (reconstructing x from the true z); ``decoder="wide"`` takes the defaults' 64-64 decoder
    fitted so for ``WIDE_EPOCHS`` epochs. The regression sees the true z standardised per
    column, so for those two the prior is carried into the same coordinates."""
    import torch

    from idvae import VaDE
    from idvae.mixture import GMM
    from idvae.models._layers import MIN_NOISE_VARIANCE, inverse_softplus

    torch.set_num_threads(1)
    m, j = sim.z.shape[1], sim.prior.weights.size
    true_layers = [layer for layer in sim.decoder if isinstance(layer, torch.nn.Linear)]
    hidden = [layer.out_features for layer in true_layers[:-1]]
    relu = any(isinstance(layer, torch.nn.ReLU) for layer in sim.decoder)
    wide = decoder == "wide"
    est = VaDE(
        m, j, device="cpu", random_state=0, decoder_sizes=(64, 64) if wide else hidden,
        pretrain=sim.z, pretrain_epochs=WIDE_EPOCHS if wide else 20, epochs=0,
        activation="relu" if relu else "leaky_relu",
    ).fit(sim.x)  # fmt: skip
    module = est.module_
    centre, scale = est.scaler_mean_, float(est.scaler_scale_[0])
    prior = GMM(sim.prior.weights, sim.prior.means, sim.prior.covariances)
    with torch.no_grad():
        if decoder == "true":
            layers = [layer for layer in module.decoder.net if isinstance(layer, torch.nn.Linear)]
            for mine, true in zip(layers, true_layers, strict=True):
                mine.weight.copy_(true.weight)
                mine.bias.copy_(true.bias)
            layers[-1].weight.div_(scale)  # the estimator's units: (x - centre) / scale
            bias = (true_layers[-1].bias.numpy() - centre) / scale
            layers[-1].bias.copy_(torch.as_tensor(bias))
        else:  # the prior in the standardised coordinates the regression saw
            shift, spread = sim.z.mean(0), np.maximum(sim.z.std(0), 1e-12)
            prior = GMM(
                sim.prior.weights,
                (sim.prior.means - shift) / spread,
                sim.prior.covariances / np.outer(spread, spread)[None],
            )
        variance = torch.full((1,), (sim.noise_std / scale) ** 2 - MIN_NOISE_VARIANCE)
        module.decoder.raw_noise.copy_(inverse_softplus(variance))
    module.prior.load_gmm(prior)
    return est


def train(est, x, parameters: list, steps: int, generator, after=None) -> None:  # noqa: ANN001
    """``steps`` Adam steps (``LR``) on the training bound of ``est``'s module over random
    batches of ``BATCH`` of the scaled rows ``x``, moving ``parameters`` only;
    ``after(step)``, when given, runs after each step (it must not draw from
    ``generator``, so that the steps are the same with it and without it)."""
    import torch

    module = est.module_
    optimiser = torch.optim.Adam(parameters, lr=LR)
    module.train()
    for step in range(1, steps + 1):
        rows = torch.randperm(len(x), generator=generator)[:BATCH]
        loss = module.loss(x[rows], generator=generator)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if after is not None:
            after(step)
            module.train()
    module.eval()


def two_stages(sim, held, est, record: dict | None = None, between=None) -> dict:  # noqa: ANN001
    """``est`` trained as the exact start is (the encoder alone for ``ENCODER_STEPS``, then
    all parameters for ``JOINT_STEPS``; ``between(est, x)`` runs between the two), scored
    after each stage into ``record``."""
    import torch

    (x,) = est._check_input(sim.x, ())
    generator = torch.Generator().manual_seed(0)
    record = {} if record is None else record
    train(est, x, list(est.module_.encoder.parameters()), ENCODER_STEPS, generator)
    record["encoder_trained"] = answers(sim, held, est)
    if between is not None:
        between(est, x)
    train(est, x, list(est.module_.parameters()), JOINT_STEPS, generator)
    record["all_trained"] = answers(sim, held, est)
    return record


def exact_start(instance: str) -> dict:
    """VaDE started at the exact true model (``exact_model``): scored at the start, after
    the encoder alone was trained and after all parameters were."""
    sim, held = simulate(instance), simulate(instance, 2)
    est = exact_model(sim)
    return two_stages(sim, held, est, {"start": answers(sim, held, est)})


def encoder_prior(est, x) -> None:  # noqa: ANN001
    """The prior replaced by VaDE's own initialisation: a GaussianMixture on the encoder's
    means of the rows x."""
    import torch

    with torch.no_grad():
        means = est.module_.encoder(x)[0].double().cpu().numpy()
    est.module_.prior.load_gmm(est._mixture_on(means, 0))


def initial_noise(est) -> None:  # noqa: ANN001
    """The noise variance put back at the estimator's initial value."""
    import torch

    from idvae.models._layers import inverse_softplus

    with torch.no_grad():
        est.module_.decoder.raw_noise.copy_(inverse_softplus(torch.full((1,), INITIAL_NOISE)))


def ablated(instance: str, variant: str) -> dict:
    """The exact start with one part of the truth taken away (``ABLATIONS``), trained in
    the same two stages."""
    sim, held = simulate(instance), simulate(instance, 2)
    decoder = variant if variant in ("regressed", "wide") else "true"
    est = exact_model(sim, decoder=decoder)
    if variant == "initial-noise":
        initial_noise(est)
    between = encoder_prior if variant == "encoder-prior" else None
    return two_stages(sim, held, est, between=between)


def kept_start(instance: str):  # noqa: ANN201
    """The kept truth start before training: the defaults' 64-64 decoder regressed on the
    true z for ``WIDE_EPOCHS``, VaDE's own prior initialisation, the noise at the
    regression's error. Returns the instance, its fresh rows and the estimator."""
    import torch

    from idvae import VaDE
    from idvae.models._layers import inverse_softplus

    torch.set_num_threads(1)
    sim, held = simulate(instance), simulate(instance, 2)
    m, j = sim.z.shape[1], sim.prior.weights.size
    est = VaDE(
        m, j, device="cpu", random_state=0, pretrain=sim.z, pretrain_epochs=WIDE_EPOCHS, epochs=0
    ).fit(sim.x)
    module = est.module_
    (x,) = est._check_input(sim.x, ())
    with torch.no_grad():
        error = float(((module.decoder.mean(module.encoder(x)[0]) - x) ** 2).mean())
        module.decoder.raw_noise.copy_(inverse_softplus(torch.full((1,), error)))
    return sim, held, est


def kept_truth(instance: str) -> dict:
    """``--kept-truth``: the truth start with a joint training that keeps its chart
    (``kept_start``, then the exact start's two stages), scored after the regression and
    after each stage."""
    sim, held, est = kept_start(instance)
    return two_stages(sim, held, est, {"regressed": answers(sim, held, est)})


def kept_drift(instance: str) -> dict:
    """``--drift``: ``kept_truth``'s training, with its joint stage scored every
    ``JOINT_STEPS // DRIFT_POINTS`` steps (and before it): weak MCC, accuracy, the training
    bound (``est.importance_samples`` draws, the K the steps train) and the log-likelihood
    (``LL_DRAWS`` draws) on the training rows and the log-likelihood on fresh rows."""
    import torch

    sim, held, est = kept_start(instance)
    (x,) = est._check_input(sim.x, ())
    generator = torch.Generator().manual_seed(0)
    train(est, x, list(est.module_.encoder.parameters()), ENCODER_STEPS, generator)
    every = JOINT_STEPS // DRIFT_POINTS

    def point(step: int) -> dict:
        bound = est.log_likelihood(sim.x, n_draws=est.importance_samples)
        return {"step": step, "bound": bound, **answers(sim, held, est)}

    points = [point(0)]
    after = lambda step: points.append(point(step)) if step % every == 0 else None  # noqa: E731
    train(est, x, list(est.module_.parameters()), JOINT_STEPS, generator, after)
    return {"points": points}


def truth_part(instance: str) -> dict:
    """The true model's log-likelihoods on the training rows and on fresh rows."""
    sim, held = simulate(instance), simulate(instance, 2)
    return {
        "log_likelihood": true_log_likelihood(sim, sim.x, sim.z),
        "held_log_likelihood": true_log_likelihood(sim, held.x, held.z),
    }


def main() -> None:
    parser = instance_parser(__doc__)
    parser.add_argument(
        "--ablate",
        action="store_true",
        help="the exact start with one part of the truth taken away (ablate/<instance>.json)",
    )
    parser.add_argument(
        "--kept-truth",
        action="store_true",
        help="the truth start, trained to keep its chart (kept-truth/<instance>.json)",
    )
    parser.add_argument(
        "--drift",
        action="store_true",
        help="--kept-truth with its joint stage scored along the way (drift/<instance>.json)",
    )
    args = parser.parse_args()
    check_instances(parser, args)
    modes = [name for name in ("ablate", "kept_truth", "drift") if getattr(args, name)]
    if len(modes) > 1:
        given = " and ".join("--" + name.replace("_", "-") for name in modes)
        parser.error(f"expected at most one of --ablate, --kept-truth and --drift but got {given}")
    folder = OUT / (modes[0].replace("_", "-") if modes else "")
    if args.ablate:
        parts = {variant: partial(ablated, variant=variant) for variant in ABLATIONS}
    elif args.kept_truth:
        parts = {"kept_truth": kept_truth}
    elif args.drift:
        parts = {"drift": kept_drift}
    else:
        parts = {
            "true_model": truth_part,
            "truth_start": partial(pipeline_fit, params=TRUTH_START),
            "defaults": partial(pipeline_fit, params=STARTS["vae"]),
            "exact_start": exact_start,
        }
    run_instances(args.instances, folder, parts, args.jobs, weak_line)


def weak_line(record: dict) -> dict:
    """The printed line of an instance: each part's final weak MCC (with ``--drift``, the
    first and the last point's)."""
    final = lambda v: v["points"][-1] if "points" in v else v.get("all_trained", v)  # noqa: E731
    weak = {k: final(v).get("weak_mcc") for k, v in record.items() if k != "instance"}
    if "drift" in record:
        weak["drift_start"] = record["drift"]["points"][0]["weak_mcc"]
    return weak


if __name__ == "__main__":
    main()

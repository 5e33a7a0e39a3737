"""Methods of the recovery benchmark: the configurations, one fit, its scores (one task).

See :data:`CONFIGURATIONS`, :func:`run_task` and docs/recovery.md.
"""

from __future__ import annotations

import inspect
import itertools
import math
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from idvae._validation import jsonable
from idvae.experiments.recovery.instances import n_components, simulate_instance
from idvae.models.vade import ELBO_PIPELINE

__all__ = [
    "BASELINES",
    "CEILING",
    "CONFIGURATIONS",
    "DIST_AFF_MAX_SIZE",
    "TRUE_LATENT",
    "TRUTH",
    "applies",
    "estimator_class",
    "is_oracle",
    "lost_record",
    "method_params",
    "resolved_params",
    "run_task",
    "separability",
]

TRUTH = "truth"  # the reserved task of an instance: separability and (P2) of the truth
CEILING = "true-posterior"  # the true model's own posterior: what any estimator could reach
BASELINES = ("pca", "pca+gmm", CEILING)
# a configuration's ``pretrain`` set to this starts the fit at the instance's true z (an
# oracle: the fit then says whether the objective keeps the truth once the search is done)
TRUE_LATENT = "true-z"

# distAff,L2 is skipped (None) above this J * m. Measured on this machine, one thread: a
# GaussianMixture fitted on the true z against the true prior, J = 6, m = 5: 0.44 s (every
# matching of the 720 tried); J = 8, m = 5: 0.05 s; J = 9, m = 4: 0.07 s. Every instance
# drawn here has J * m <= 45, so nothing of the benchmark is skipped today.
DIST_AFF_MAX_SIZE = 64

# name -> (estimator, params). The estimator gets m, J (or the facets), random_state and
# these params; see docs/recovery.md.
CONFIGURATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    # baselines
    "pca": ("pca", {}),
    "pca+gmm": ("pca+gmm", {"covariance_type": "full", "n_init": 3}),
    # an autoencoder (VaDE's own, pretrained as a plain AE) + GaussianMixture on its means
    "ae+gmm": ("vade", {"pretrain": "ae", "epochs": 0}),
    # the upper references: the true u is given; the true model's posterior (a ceiling)
    "ivae-oracle": ("ivae", {}),
    CEILING: (CEILING, {}),
    # estimators
    # VaDE's defaults: the best lever of docs/recovery_levers.md (the IW bound, prior refits,
    # full covariances, 50 + 100 epochs), and the ELBO pipeline that was the default before
    "vade-default": ("vade", {}),
    "vade-elbo": ("vade", dict(ELBO_PIPELINE)),
    # the pipeline of App. J.3.2 (network n-64-512-64-m / m-64-512-512-n, 15 + 20 epochs,
    # autoencoder pretraining as in VaDE's code) on top of today's defaults, for comparison
    "vade-paper-pipeline": (
        "vade",
        {
            "encoder_sizes": [64, 512, 64],
            "decoder_sizes": [64, 512, 512],
            "pretrain": "ae",
            "pretrain_epochs": 15,
            "epochs": 20,
        },
    ),
    # four restarts of the defaults, the one with the highest log-likelihood on the training
    # rows kept (the eleventh round of docs/recovery_levers.md)
    "vade-restarts4": ("vade", {"n_init": 4}),
    # the defaults with q(z | x) of full covariance (docs/recovery_levers.md, fourteenth round)
    "vade-qfull": ("vade", {"posterior_covariance": "full"}),
    "mfcvae-default": ("mfcvae", {}),
    # no joint training stage: a full-covariance joint mixture (10 EM restarts) on the
    # pretrained means, factored into facets, no refits (the defaults of 2026-12-02 before
    # prior_refit_every=5; docs/models_mfcvae_ivae.md), 30 faceted epochs
    "mfcvae-mixture": (
        "mfcvae",
        {"facet_init": "mixture", "gmm_n_init": 10, "prior_refit_every": None, "epochs": 30},
    ),
    # the same with the facets refitted every 5 epochs in place: the defaults from
    # 2026-12-02 until the basis refits and 60 epochs of 2026-12-03
    "mfcvae-refit5": ("mfcvae", {"refit_basis": False, "epochs": 30}),
    # VaDE's defaults started at the true z (20 pretraining epochs fit the encoder and the
    # decoder to it): does the objective keep the truth? (finding 9 of docs/recovery_levers.md)
    "vade-truth-start": ("vade", {"pretrain": TRUE_LATENT, "pretrain_epochs": 20}),
    # finding 27 of docs/recovery_levers.md: a VAE and an Isomap start, each finished by
    # 2,000 L-BFGS iterations, the higher training bound kept; a 16-16 decoder
    "vade-two-starts-polished": (
        "vade",
        {"decoder_sizes": [16, 16], "pretrain": ["vae", "isomap"], "polish_iterations": 2000},
    ),
    # the same at about half the cost (30 + 60 epochs, 1,000 L-BFGS iterations per start):
    # 51.5 s per 3,000-point fit on one core, the candidate for VaDE's default
    "vade-two-starts": (
        "vade",
        {
            "decoder_sizes": [16, 16],
            "pretrain": ["vae", "isomap"],
            "pretrain_epochs": 30,
            "epochs": 60,
            "polish_iterations": 1000,
        },
    ),
}

# --quick: caps on epoch counts (a configuration's smaller value is kept) and small nets.
QUICK_CAPS = {"pretrain_epochs": 2, "epochs": 3, "joint_epochs": 2}
QUICK_SIZES = {"encoder_sizes": [16, 16], "decoder_sizes": [16, 16]}


def is_oracle(method: str) -> bool:
    """Whether a configuration reads the truth: the true posterior (the ceiling), iVAE given
    the true u, or a fit started at the true z (``pretrain=TRUE_LATENT``)."""
    if method == CEILING:
        return True
    estimator, params = CONFIGURATIONS[method]
    return estimator == "ivae" or params.get("pretrain") == TRUE_LATENT


def estimator_class(estimator: str) -> type | None:
    """The estimator class of an idvae or ``module:Class`` configuration (None: a baseline)."""
    if estimator in BASELINES:
        return None
    from idvae.experiments.executors import EstimatorSpec

    return EstimatorSpec(estimator).estimator_class()


def _instance_params(cls: type, spec: Mapping[str, Any]) -> dict[str, Any]:
    """m and J (or the facets) in the parameter names the estimator's constructor takes."""
    accepted = inspect.signature(cls).parameters
    if "facet_dims" in accepted:
        from idvae.simulate import default_neighbors

        blocks = default_neighbors(len(spec["facets"]), int(spec["latent_dim"]))
        return {"facet_dims": [len(b) for b in blocks], "facet_components": list(spec["facets"])}
    params: dict[str, Any] = {}
    if "latent_dim" in accepted:
        params["latent_dim"] = int(spec["latent_dim"])
    if "n_components" in accepted:
        params["n_components"] = n_components(spec)
    return params


def _quick_params(params: Mapping[str, Any], cls: type | None) -> dict[str, Any]:
    if cls is None:
        return dict(params)
    accepted = inspect.signature(cls).parameters
    out = dict(params)
    for key, cap in QUICK_CAPS.items():
        if key in accepted:
            out[key] = min(int(out.get(key, cap)), cap)
    out.update({key: value for key, value in QUICK_SIZES.items() if key in accepted})
    return out


def applies(configuration: tuple[str, Mapping[str, Any]], spec: Mapping[str, Any]) -> bool:
    """Whether a configuration runs on an instance: faceted models only on faceted ones."""
    cls = estimator_class(configuration[0])
    if cls is None:
        return True
    return "facet_dims" not in inspect.signature(cls).parameters or "facets" in spec


def method_params(
    configuration: tuple[str, Mapping[str, Any]],
    spec: Mapping[str, Any],
    *,
    quick: bool = False,
) -> dict[str, Any]:
    """The keyword arguments a configuration's estimator gets on an instance (no seed)."""
    estimator, params = configuration
    cls = estimator_class(estimator)
    if quick:
        params = _quick_params(params, cls)
    if cls is None:
        return dict(params)
    return {**_instance_params(cls, spec), **params}


def resolved_params(estimator: str, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Every constructor parameter, defaults included: a changed default changes it."""
    cls = estimator_class(estimator)
    if cls is None:
        return dict(params)
    from idvae.experiments.executors import EstimatorSpec

    built = EstimatorSpec(estimator, params)(seed)
    if not hasattr(built, "get_params"):
        return dict(params)
    return {k: v for k, v in built.get_params().items() if k != "random_state"}


@dataclass
class _Fit:
    latents: np.ndarray
    predictions: np.ndarray | None = None
    prior: Any = None
    bounds: dict[str, Callable[[], float]] = field(default_factory=dict)


def _fit_baseline(estimator: str, params: Mapping[str, Any], sim: Any, seed: int) -> _Fit:
    if estimator == CEILING:
        from idvae.experiments.recovery.ceiling import bayes_predictions, true_posterior

        probs, z_mean = true_posterior(sim, random_state=seed, **params)
        return _Fit(z_mean, bayes_predictions(sim, probs))
    from sklearn.decomposition import PCA

    from idvae.mixture import GMM

    m = sim.z.shape[1]
    latents = PCA(m, random_state=seed).fit_transform(sim.x)
    if estimator == "pca":
        return _Fit(latents)
    from sklearn.mixture import GaussianMixture

    mixture = GaussianMixture(sim.prior.n_components, random_state=seed, **params).fit(latents)
    return _Fit(latents, mixture.predict(latents), GMM.from_sklearn(mixture))


def _fit_estimator(estimator: str, params: Mapping[str, Any], sim: Any, seed: int) -> _Fit:
    from idvae.experiments.executors import EstimatorSpec
    from idvae.models import aux_argument

    if params.get("pretrain") == TRUE_LATENT:
        params = {**params, "pretrain": sim.z}
    model = EstimatorSpec(estimator, params)(seed)
    aux = {aux_argument(model): sim.labels} if aux_argument(model) else {}
    model.fit(sim.x, **aux)
    latents = np.asarray(model.transform(sim.x, **aux), dtype=np.float64)
    predictions = None
    if hasattr(model, "predict") and not aux:
        predictions = np.asarray(model.predict(sim.x))
    prior = getattr(model, "prior_", None)
    return _Fit(latents, predictions, prior, _bounds(model, sim.x, aux))


def _bounds(model: Any, x: np.ndarray, aux: Mapping[str, Any]) -> dict[str, Callable[[], float]]:
    """What the fit's objective says of it, in nats per point of the training data.

    ``score``: the training bound (what selection among starts compares);
    ``log_likelihood``: the tight importance-sampled estimate, where the model has one.
    Recorded so that fits of one instance from different starts can be ranked by the
    objective beside their scores against the truth. Evaluated when scored.
    """
    out = {"score": lambda: float(model.score(x, *aux.values()))}
    if hasattr(model, "log_likelihood"):
        out["log_likelihood"] = lambda: float(model.log_likelihood(x))
    return out


# --------------------------------------------------------------------------- scores


def separability(z: np.ndarray, labels: np.ndarray, random_state: int = 0) -> float:
    """Accuracy of a QDA fitted on a random half of the true z, scored on the other half.

    How well the mixture's components can be told apart in the true latent space: an upper
    bound, in practice, for the cluster accuracy of any method.

    Args:
        z: array of shape (n_samples, latent_dim).
        labels: array of shape (n_samples,), the true components.
        random_state: seeds the split.
    """
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    order = np.random.default_rng(random_state).permutation(z.shape[0])
    fit, score = order[: z.shape[0] // 2], order[z.shape[0] // 2 :]
    qda = QuadraticDiscriminantAnalysis().fit(z[fit], labels[fit])
    return float(qda.score(z[score], labels[score]))


def _facet_accuracies(u: np.ndarray, predictions: np.ndarray) -> list[float]:
    """Per-facet accuracies under the best matching of predicted to true facets."""
    from idvae.metrics import cluster_accuracy

    k = u.shape[1]
    best: list[float] = []
    for order in itertools.permutations(range(k)):
        accs = [cluster_accuracy(u[:, i], predictions[:, order[i]]) for i in range(k)]
        if not best or (min(accs), sum(accs)) > (min(best), sum(best)):
            best = accs
    return best


def _score(sim: Any, fit: _Fit, seed: int, notes: list[str]) -> dict[str, Any]:
    """Every score of one fit against the truth; a failing score is None and a note."""
    import idvae.metrics as metrics
    from idvae.experiments.study import canonical_map
    from idvae.identify import check_p2

    def safe(what: str, func: Callable[[], Any]) -> Any:
        try:
            value = func()
        except Exception as err:  # one failing score must not lose the fit
            notes.append(f"{what}: {type(err).__name__}: {err}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            notes.append(f"{what}: {value}")
            return None
        return value

    out: dict[str, Any] = {
        "weak_mcc": safe(
            "weak MCC",
            lambda: metrics.mcc(sim.z, fit.latents, alignment="affine", random_state=seed),
        ),
        "accuracy": None,
        "facet_accuracy": None,
        "strong_mcc": None,
        "dist_aff": None,
        **{name: safe(name, bound) for name, bound in fit.bounds.items()},
    }
    if fit.predictions is not None:
        if fit.predictions.ndim == 2:
            facets = safe("facet accuracy", lambda: _facet_accuracies(sim.u, fit.predictions))
            out["facet_accuracy"] = facets
            out["accuracy"] = min(facets) if facets else None
        else:
            out["accuracy"] = safe(
                "accuracy", lambda: metrics.cluster_accuracy(sim.labels, fit.predictions)
            )
    if fit.prior is None:
        return out
    if check_p2(sim.prior).holds:

        def strong() -> float:
            truth = canonical_map(sim.prior, notes)(sim.z)
            fitted = canonical_map(fit.prior, notes)(fit.latents)
            return metrics.mcc(truth, fitted, alignment="none", random_state=seed)

        out["strong_mcc"] = safe("strong MCC", strong)
    if fit.prior.n_components * fit.prior.dim <= DIST_AFF_MAX_SIZE:
        out["dist_aff"] = safe("distAff", lambda: metrics.dist_aff_l2(fit.prior, sim.prior))
    else:
        notes.append(f"distAff skipped: J * m = {fit.prior.n_components * fit.prior.dim}")
    return out


# --------------------------------------------------------------------------- one task


def run_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """Run one (instance, method) task and return its record (never raises for a fit).

    Args:
        task: ``instance`` (a spec), ``method`` (a configuration name, or ``"truth"`` for
            the instance's separability and (P2)), ``estimator``, ``params`` (from
            :func:`method_params`) and ``seed`` (the estimator's ``random_state`` and the
            seed of every random split of the scores).

    Returns:
        A JSON-able dict: the task's keys, ``status`` (``"ok"``/``"failed"``), ``error``,
        the scores, ``seconds`` (fit), ``score_seconds`` and ``notes``.
    """
    spec, method, seed = task["instance"], task["method"], int(task["seed"])
    record: dict[str, Any] = {
        "instance": spec["id"],
        "method": method,
        "estimator": task.get("estimator"),
        "status": "ok",
        "error": None,
        "notes": [],
    }
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sim = simulate_instance(spec)
            if method == TRUTH:
                record.update(_truth(sim, seed))
            else:
                fit_start = time.perf_counter()
                if task["estimator"] in BASELINES:
                    fit = _fit_baseline(task["estimator"], task["params"], sim, seed)
                else:
                    fit = _fit_estimator(task["estimator"], task["params"], sim, seed)
                record["seconds"] = round(time.perf_counter() - fit_start, 3)
                score_start = time.perf_counter()
                record.update(_score(sim, fit, seed, record["notes"]))
                record["score_seconds"] = round(time.perf_counter() - score_start, 3)
        record["notes"] += sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    except Exception as err:  # a failed fit is a result, never a crash of the benchmark
        message = str(err).strip().splitlines()
        record.update(
            status="failed", error=f"{type(err).__name__}: {message[0] if message else ''}"
        )
        record["traceback"] = traceback.format_exc()
    record["wall_seconds"] = round(time.perf_counter() - start, 3)
    return jsonable(record, nonfinite="none")


def _truth(sim: Any, seed: int) -> dict[str, Any]:
    from idvae.identify import check_p2

    return {
        "separability": separability(sim.z, sim.labels, seed),
        "p2": bool(check_p2(sim.prior).holds),
    }


def lost_record(task: Mapping[str, Any], err: BaseException) -> dict[str, Any]:
    return {
        "instance": task["instance"]["id"],
        "method": task["method"],
        "estimator": task.get("estimator"),
        "status": "failed",
        "error": f"{type(err).__name__}: {err}",
        "notes": ["the worker running this task died"],
    }

"""The recovery benchmark: how often does an estimator recover the truth of model (3)?

Agreement between runs is not recovery (runs may share a wrong optimum), so this benchmark
scores every fit against the truth that generated its data, on many random instances of
model (3) drawn by :func:`idvae.simulate.sample_model`, beside baselines that know nothing
of the mixture (PCA) or know the true u (iVAE). docs/recovery.md describes the protocol.

Instances (:func:`recovery_instances`, each a small JSON dict with an ``id``):

* ``seeds``: ``sample_model(3000, latent_dim=2, obs_dim=10, n_components=3,
  random_state=s)`` for s = 0..9, the simulator's own seeds (fixed, whatever the seed).
* ``random``: m in 2..5, n in max(8, m)..50, J in 3..8, 1-3 hidden layers of widths drawn
  in [m, n] and sorted (nondecreasing from m to n: App. H's injectivity rule), LeakyReLU or
  ReLU, 2,000-20,000 samples (log-uniform); instance i is drawn from its own child of
  ``SeedSequence(random_state)``, so the first k instances do not depend on how many are
  drawn.
* ``facets``: multivariate U (shapes (2, 2), (2, 3), (3, 3), (2, 2, 2) in turn) with
  independent facets, ne(U_i) contiguous blocks; for MFCVAE, scored per facet.

Methods (:data:`CONFIGURATIONS`, name -> (estimator, params)): ``"pca"`` and ``"pca+gmm"``
(scikit-learn, params passed to ``PCA`` / ``GaussianMixture``), or a name of
``idvae.models.REGISTRY`` (``"vade"``, ``"mfcvae"``, ``"ivae"``, ``"vae"``) or
``"package.module:Class"``, built with ``latent_dim`` = m, ``n_components`` = J (or
``facet_dims``/``facet_components`` from the instance's facets), ``random_state`` = the
benchmark's seed and ``params``. An estimator whose ``fit`` takes an auxiliary variable
(iVAE) is given the true u. Add a configuration with one line in :data:`CONFIGURATIONS`
(or pass ``configurations=`` to :func:`run_recovery`).

Scores per (instance, method), all against the truth:

* ``weak_mcc``: ``mcc(z_true, z_hat, alignment="affine")``, the affine map fitted on a
  random half of the points and scored on the other half (seeded);
* ``accuracy``: cluster accuracy (Hungarian) of ``predict`` against the true component;
  for a faceted prediction (MFCVAE) the smallest per-facet accuracy after matching the
  facets, with the per-facet values in ``facet_accuracy``; None for a method without
  clusters (PCA, iVAE);
* ``strong_mcc``: strong MCC between the truth and the fit, each mapped to the canonical
  coordinates of Thm E.1 by its own prior (``idvae.experiments.study.canonical_map``);
  only where (P2) holds for the true prior and the method has a prior;
* ``dist_aff``: distAff,L2 of the fitted prior to the true prior (None without a prior, or
  when J * m > :data:`DIST_AFF_MAX_SIZE`);
* ``seconds``: wall time of fit, transform and predict.

Each (instance, method) is one JSON file, ``OUT/runs/<instance>/<method>.json``, written
atomically as soon as it is finished, with the fingerprint of what produced it; a resumed
run recomputes only missing, failed or changed ones.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import re
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idvae._validation import (
    check_positive_int,
    csv_text,
    jsonable,
    write_json_atomic,
    write_text_atomic,
)
from idvae.experiments.executors import ExecutorName, map_tasks

__all__ = [
    "CONFIGURATIONS",
    "DIST_AFF_MAX_SIZE",
    "FAMILIES",
    "RECOVERY_THRESHOLD",
    "RecoveryResult",
    "applies",
    "is_recovered",
    "recovery_instances",
    "run_recovery",
    "run_task",
    "separability",
    "simulate_instance",
    "summarize",
    "summary_table",
]

FORMAT_VERSION = 1
RECOVERY_THRESHOLD = 0.95
FAMILIES: tuple[str, ...] = ("seeds", "random", "facets")
SIMULATOR_SEEDS = tuple(range(10))
# distAff,L2 is skipped (None) above this J * m. Measured on this machine, one thread: a
# GaussianMixture fitted on the true z against the true prior, J = 6, m = 5: 0.44 s (every
# matching of the 720 tried); J = 8, m = 5: 0.05 s; J = 9, m = 4: 0.07 s. Every instance
# drawn here has J * m <= 45, so nothing of the benchmark is skipped today.
DIST_AFF_MAX_SIZE = 64
TRUTH = "truth"  # the reserved task of an instance: separability and (P2) of the truth

# name -> (estimator, params). The estimator gets m, J (or the facets), random_state and
# these params; see the module docstring.
CONFIGURATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    # baselines
    "pca": ("pca", {}),
    "pca+gmm": ("pca+gmm", {"covariance_type": "full", "n_init": 3}),
    # an autoencoder (VaDE's own, pretrained as a plain AE) + GaussianMixture on its means
    "ae+gmm": ("vade", {"pretrain": "ae", "epochs": 0}),
    # the upper reference: the true u is given
    "ivae-oracle": ("ivae", {}),
    # estimators
    "vade-default": ("vade", {}),
    # Placeholder for the pipeline of App. J.3.2 (network n-64-512-64-m / m-64-512-512-n,
    # 15 + 20 epochs, autoencoder pretraining as in VaDE's code), kept for comparison.
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
    "mfcvae-default": ("mfcvae", {}),
}

# --quick: caps on epoch counts (a configuration's smaller value is kept) and small nets.
QUICK_CAPS = {"pretrain_epochs": 2, "epochs": 3, "joint_epochs": 2}
QUICK_SIZES = {"encoder_sizes": [16, 16], "decoder_sizes": [16, 16]}
QUICK_SAMPLES = 400

_BASELINES = ("pca", "pca+gmm")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# --------------------------------------------------------------------------- instances


def recovery_instances(
    n_instances: int = 40,
    random_state: int = 0,
    *,
    families: Sequence[str] = FAMILIES,
    n_facet_instances: int = 4,
    quick: bool = False,
) -> list[dict[str, Any]]:
    """The benchmark's instances of model (3), drawn reproducibly from ``random_state``.

    Args:
        n_instances: instances of the ``random`` family.
        random_state: int >= 0; the ``random`` and ``facets`` draws derive from it (the
            ``seeds`` family is fixed).
        families: which of ``"seeds"``, ``"random"``, ``"facets"`` to include.
        n_facet_instances: instances of the ``facets`` family.
        quick: tiny instances for tests and smoke runs (400 samples, m = 2, J = 3, one
            hidden layer, n <= 8, facets (2, 2)); the ``seeds`` family is unchanged.

    Returns:
        A list of dicts (JSON types only), each with ``id``, ``family`` and the arguments
        of ``sample_model`` (``n_samples``, ``latent_dim``, ``obs_dim``, ``n_components``
        or ``facets`` and ``facet_weights``, ``decoder``, ``hidden``, ``noise_std``,
        ``random_state``); :func:`simulate_instance` draws the data.

    Example:
        >>> specs = recovery_instances(3, families=["random"])
        >>> [s["id"] for s in specs]
        ['random-00', 'random-01', 'random-02']
    """
    n_instances = check_positive_int(n_instances, "n_instances", minimum=0)
    n_facet_instances = check_positive_int(n_facet_instances, "n_facet_instances", minimum=0)
    seed = check_positive_int(random_state, "random_state", minimum=0)
    unknown = sorted(set(families) - set(FAMILIES))
    if isinstance(families, str) or unknown:
        raise ValueError(f"Expected families among {list(FAMILIES)} but got {families!r}")
    specs: list[dict[str, Any]] = []
    if "seeds" in families:
        specs += [
            {
                "id": f"seed-{s}",
                "family": "seeds",
                "n_samples": 3000,
                "latent_dim": 2,
                "obs_dim": 10,
                "n_components": 3,
                "random_state": s,
            }
            for s in SIMULATOR_SEEDS
        ]
    if "random" in families:
        streams = np.random.SeedSequence([seed, 0]).spawn(n_instances)
        for i, stream in enumerate(streams):
            spec = _draw_random(np.random.default_rng(stream), quick)
            specs.append({"id": f"random-{i:02d}", "family": "random", **spec})
    if "facets" in families:
        streams = np.random.SeedSequence([seed, 1]).spawn(n_facet_instances)
        for i, stream in enumerate(streams):
            spec = _draw_faceted(np.random.default_rng(stream), i, quick)
            specs.append({"id": f"facets-{i}", "family": "facets", **spec})
    return specs


def _draw_decoder(rng: np.random.Generator, m: int, n: int, depth: int) -> dict[str, Any]:
    hidden = sorted(int(h) for h in rng.integers(m, n + 1, size=depth))
    return {"decoder": str(rng.choice(["leaky_relu", "relu"])), "hidden": hidden}


def _draw_samples(rng: np.random.Generator) -> int:
    return int(round(math.exp(rng.uniform(math.log(2000), math.log(20000))), -2))


def _draw_random(rng: np.random.Generator, quick: bool) -> dict[str, Any]:
    if quick:
        m, n, J, depth, n_samples = 2, int(rng.integers(5, 9)), 3, 1, QUICK_SAMPLES
    else:
        m = int(rng.integers(2, 6))
        n = int(rng.integers(max(8, m), 51))
        J = int(rng.integers(3, 9))
        depth = int(rng.integers(1, 4))
        n_samples = _draw_samples(rng)
    return {
        "n_samples": n_samples,
        "latent_dim": m,
        "obs_dim": n,
        "n_components": J,
        **_draw_decoder(rng, m, n, depth),
        "noise_std": 0.05,
        "random_state": int(rng.integers(2**31 - 1)),
    }


FACET_SHAPES = ((2, 2), (2, 3), (3, 3), (2, 2, 2))


def _draw_faceted(rng: np.random.Generator, index: int, quick: bool) -> dict[str, Any]:
    facets = (2, 2) if quick else FACET_SHAPES[index % len(FACET_SHAPES)]
    k = len(facets)
    if quick:
        m, n, depth, n_samples = 2, 6, 1, QUICK_SAMPLES
    else:
        m = int(rng.integers(max(2, k), 6))
        n = int(rng.integers(8, 51))
        depth = int(rng.integers(1, 4))
        n_samples = _draw_samples(rng)
    # independent facets (MFCVAE's prior is a product); every weight >= 1 / (2 d)
    weights = [(0.5 / d + 0.5 * rng.dirichlet(2.0 * np.ones(d))).tolist() for d in facets]
    return {
        "n_samples": n_samples,
        "latent_dim": m,
        "obs_dim": n,
        "facets": list(facets),
        "facet_weights": weights,
        **_draw_decoder(rng, m, n, depth),
        "noise_std": 0.05,
        "random_state": int(rng.integers(2**31 - 1)),
    }


def simulate_instance(spec: Mapping[str, Any]) -> Any:
    """Draw an instance's data and truth: ``sample_model`` with the spec's arguments.

    Returns:
        An ``idvae.simulate.Simulation``.
    """
    from idvae.simulate import sample_model

    keys = ("latent_dim", "obs_dim", "n_components", "decoder", "hidden", "noise_std", "facets")
    kwargs = {key: spec[key] for key in keys if key in spec}
    if "facet_weights" in spec:
        kwargs["joint"] = _outer(spec["facet_weights"])
    return sample_model(int(spec["n_samples"]), **kwargs, random_state=int(spec["random_state"]))


def _outer(weights: Sequence[Sequence[float]]) -> np.ndarray:
    joint = np.ones(())
    for w in weights:
        joint = np.multiply.outer(joint, np.asarray(w, dtype=np.float64))
    return joint / joint.sum()


def _n_components(spec: Mapping[str, Any]) -> int:
    if "facets" in spec:
        return math.prod(spec["facets"])
    return int(spec["n_components"])


# --------------------------------------------------------------------------- methods


def _estimator_class(estimator: str) -> type | None:
    """The estimator class of an idvae or ``module:Class`` configuration (None: a baseline)."""
    if estimator in _BASELINES:
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
        params["n_components"] = _n_components(spec)
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
    cls = _estimator_class(configuration[0])
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
    cls = _estimator_class(estimator)
    if quick:
        params = _quick_params(params, cls)
    if cls is None:
        return dict(params)
    return {**_instance_params(cls, spec), **params}


def _resolved_params(estimator: str, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Every constructor parameter, defaults included: a changed default changes it."""
    cls = _estimator_class(estimator)
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


def _fit_baseline(estimator: str, params: Mapping[str, Any], sim: Any, seed: int) -> _Fit:
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

    model = EstimatorSpec(estimator, params)(seed)
    aux = {aux_argument(model): sim.labels} if aux_argument(model) else {}
    model.fit(sim.x, **aux)
    latents = np.asarray(model.transform(sim.x, **aux), dtype=np.float64)
    predictions = None
    if hasattr(model, "predict") and not aux:
        predictions = np.asarray(model.predict(sim.x))
    prior = getattr(model, "prior_", None)
    return _Fit(latents, predictions, prior)


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
                if task["estimator"] in _BASELINES:
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


def _lost_task(task: Mapping[str, Any], err: BaseException) -> dict[str, Any]:
    return {
        "instance": task["instance"]["id"],
        "method": task["method"],
        "estimator": task.get("estimator"),
        "status": "failed",
        "error": f"{type(err).__name__}: {err}",
        "notes": ["the worker running this task died"],
    }


# --------------------------------------------------------------------------- store


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(jsonable(value, nonfinite="str"), sort_keys=True))


class _Store:
    """``OUT/benchmark.json`` and one ``OUT/runs/<instance>/<method>.json`` per task."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, config: Mapping[str, Any], *, resume: bool) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"Expected {self.root} to be a directory but it is a file")
        if self.root.exists() and any(self.root.iterdir()) and not resume:
            raise ValueError(
                f"Expected a new or empty directory but {self.root} is not empty; pass "
                "resume=True (--resume) to continue it or choose another directory"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / "benchmark.json", config)

    def path(self, task: Mapping[str, Any]) -> Path:
        return self.root / "runs" / task["instance"]["id"] / f"{task['method']}.json"

    def finished(self, task: Mapping[str, Any], fingerprint: Any) -> dict[str, Any] | None:
        """The stored record of a task done with this fingerprint, else None."""
        path = self.path(task)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if record.get("status") != "ok" or record.get("fingerprint") != fingerprint:
            return None
        return record

    def write(self, record: Mapping[str, Any], task: Mapping[str, Any]) -> None:
        write_json_atomic(self.path(task), record)


# --------------------------------------------------------------------------- summary


def is_recovered(row: Mapping[str, Any], threshold: float = RECOVERY_THRESHOLD) -> bool:
    """Weak MCC >= threshold and, for a method with clusters, accuracy >= threshold."""
    if row.get("status") != "ok" or row.get("weak_mcc") is None:
        return False
    if row["weak_mcc"] < threshold:
        return False
    return row.get("accuracy") is None or row["accuracy"] >= threshold


def _median(values: Sequence[Any]) -> float | None:
    values = [float(v) for v in values if v is not None]
    return float(np.median(values)) if values else None


def _rate(rows: Sequence[Mapping[str, Any]], threshold: float) -> dict[str, Any]:
    ok = [r for r in rows if r.get("status") == "ok"]
    recovered = sum(is_recovered(r, threshold) for r in rows)
    return {
        "n": len(rows),
        "n_failed": len(rows) - len(ok),
        "n_recovered": recovered,
        "recovery_rate": recovered / len(rows) if rows else None,
        "median_weak_mcc": _median([r.get("weak_mcc") for r in ok]),
        "median_accuracy": _median([r.get("accuracy") for r in ok]),
    }


def summarize(
    rows: Sequence[Mapping[str, Any]],
    *,
    baseline: str = "pca",
    threshold: float = RECOVERY_THRESHOLD,
) -> dict[str, dict[str, Any]]:
    """Per method: recovery rate and medians, overall, where the baseline fails, per family.

    Args:
        rows: records of (instance, method) tasks: ``instance``, ``method``, ``status``,
            ``weak_mcc``, ``accuracy`` (None for a method without clusters), and optionally
            ``family``, ``strong_mcc``, ``dist_aff``, ``seconds``.
        baseline: the method whose failures (not recovered) define the hard subset.
        threshold: the recovery threshold of weak MCC and accuracy.

    Returns:
        method -> ``n``, ``n_failed`` (fits that raised), ``n_recovered``,
        ``recovery_rate`` (failed fits count as not recovered), ``median_weak_mcc``,
        ``median_accuracy``, ``median_strong_mcc``, ``median_dist_aff``,
        ``median_seconds`` (medians over successful fits), ``baseline_fails`` (the same
        counts and medians on the instances the baseline does not recover; None without a
        baseline row) and ``families`` (family -> counts and medians).
    """
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != TRUTH))
    fails: set[str] | None = None
    if any(r["method"] == baseline for r in rows):
        fails = {
            r["instance"]
            for r in rows
            if r["method"] == baseline and not is_recovered(r, threshold)
        }
    summary: dict[str, dict[str, Any]] = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        ok = [r for r in mine if r.get("status") == "ok"]
        entry = _rate(mine, threshold)
        for key in ("strong_mcc", "dist_aff", "seconds"):
            entry[f"median_{key}"] = _median([r.get(key) for r in ok])
        entry["baseline"] = baseline
        entry["baseline_fails"] = (
            None if fails is None else _rate([r for r in mine if r["instance"] in fails], threshold)
        )
        families = dict.fromkeys(r.get("family") for r in mine if r.get("family"))
        entry["families"] = {
            f: _rate([r for r in mine if r.get("family") == f], threshold) for f in families
        }
        summary[method] = entry
    return summary


def _cell(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _count(entry: Mapping[str, Any] | None) -> str:
    if not entry or not entry["n"]:
        return "—"
    return f"{entry['n_recovered']}/{entry['n']}"


def summary_table(summary: Mapping[str, Mapping[str, Any]], title: str | None = None) -> Any:
    """The summary as a ``rich.table.Table``: one row per method.

    Columns: instances recovered (and the rate), median weak MCC, median accuracy, median
    fit time, recovered where the baseline fails, recovered among the simulator's seeds
    0-9, fits that failed. The strong MCC and distAff medians are in the summary's data.
    """
    from rich.table import Table

    baseline = next((e.get("baseline") for e in summary.values()), "pca")
    table = Table(title=title or "Recovery of the truth of model (3)")
    table.add_column("method", no_wrap=True)
    for column in ("recovered", "weak MCC", "acc.", "time (s)", f"{baseline} fails"):
        table.add_column(column, justify="right", no_wrap=column == "recovered")
    table.add_column("seeds 0-9", justify="right")
    table.add_column("failed", justify="right")
    for method, entry in summary.items():
        rate = entry["recovery_rate"]
        table.add_row(
            method,
            _count(entry) + ("" if rate is None else f" ({100 * rate:.0f}%)"),
            _cell(entry["median_weak_mcc"]),
            _cell(entry["median_accuracy"]),
            _cell(entry["median_seconds"], 1),
            _count(entry.get("baseline_fails")),
            _count(entry["families"].get("seeds")),
            str(entry["n_failed"]),
        )
    table.caption = (
        f"recovered: weak MCC to the truth >= {RECOVERY_THRESHOLD} and, for a method with "
        f"clusters, accuracy >= {RECOVERY_THRESHOLD}; medians over successful fits"
    )
    return table


# --------------------------------------------------------------------------- the benchmark


ROW_COLUMNS = (
    "instance", "family", "method", "estimator", "status", "recovered", "weak_mcc", "accuracy",
    "facet_accuracy", "strong_mcc", "dist_aff", "seconds", "separability", "p2", "n_samples",
    "latent_dim", "obs_dim", "n_components", "facets", "decoder", "depth", "error",
)  # fmt: skip


@dataclass
class RecoveryResult:
    """What :func:`run_recovery` measured.

    Attributes:
        instances: the instance specs, each with its ``separability`` and ``p2``.
        rows: one flat dict per (instance, method) (the columns of results.csv).
        summary: :func:`summarize` of the rows.
        config: the benchmark's settings (seed, quick, configurations).
        records: the full record of every task (scores, notes, errors, fingerprints).
    """

    instances: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    config: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    def table(self, title: str | None = None) -> Any:
        """The summary as a rich table."""
        return summary_table(self.summary, title)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "config": self.config,
            "summary": self.summary,
            "instances": self.instances,
            "rows": self.rows,
        }


def _check_methods(
    methods: Sequence[str] | None, configurations: Mapping[str, tuple[str, Mapping[str, Any]]]
) -> list[str]:
    names = list(configurations) if methods is None else list(methods)
    unknown = [m for m in names if m not in configurations]
    if unknown or not names:
        raise ValueError(
            f"Expected methods among {sorted(configurations)} but got {unknown or names!r}"
        )
    for name in names:
        if name == TRUTH or not _NAME.match(name):
            raise ValueError(
                f"Expected a method name of letters, digits and _.+- (not {TRUTH!r}) but got "
                f"{name!r}"
            )
        estimator, params = configurations[name]
        if estimator not in _BASELINES:
            _estimator_class(estimator)  # an unknown estimator is an error here, not per run
        if "random_state" in params:
            raise ValueError(
                f"Expected configuration {name!r} without random_state (the benchmark's "
                "seed is used)"
            )
    return names


def _tasks(
    instances: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    configurations: Mapping[str, tuple[str, Mapping[str, Any]]],
    *,
    seed: int,
    quick: bool,
) -> list[tuple[dict[str, Any], Any]]:
    """Every (task, fingerprint), instance by instance, the truth first."""
    out = []
    for spec in instances:
        truth = {"instance": dict(spec), "method": TRUTH, "estimator": None, "seed": seed}
        out.append((truth, _normalised({"instance": spec, "seed": seed})))
        for name in methods:
            configuration = configurations[name]
            if not applies(configuration, spec):
                continue
            params = method_params(configuration, spec, quick=quick)
            task = {
                "instance": dict(spec),
                "method": name,
                "estimator": configuration[0],
                "params": params,
                "seed": seed,
            }
            fingerprint = {
                "instance": spec,
                "estimator": configuration[0],
                "params": _resolved_params(configuration[0], params, seed),
                "seed": seed,
            }
            out.append((task, _normalised(fingerprint)))
    return out


def run_recovery(
    out: str | Path,
    *,
    instances: Sequence[Mapping[str, Any]] | None = None,
    methods: Sequence[str] | None = None,
    configurations: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    random_state: int = 0,
    quick: bool = False,
    executor: ExecutorName = "local",
    jobs: int = 1,
    address: str | None = None,
    resume: bool = False,
    progress: Callable[[Mapping[str, Any]], None] | None = None,
) -> RecoveryResult:
    """Run the benchmark, saving each (instance, method) as it finishes; write the results.

    Args:
        out: the output directory: ``benchmark.json`` (settings), ``runs/<instance>/
            <method>.json`` (one record per task), ``results.json`` and ``results.csv``.
        instances: instance specs; default ``recovery_instances(random_state=random_state,
            quick=quick)``.
        methods: configuration names; default every one in ``configurations``.
        configurations: name -> (estimator, params); default :data:`CONFIGURATIONS`.
        random_state: int >= 0: every estimator's ``random_state`` and the seed of the
            scores' random splits.
        quick: cap epochs and shrink the networks (tests, smoke runs).
        executor, jobs, address: where the tasks run: in this process (``"local"``,
            ``jobs=1``), a local process pool (``jobs > 1``) or Ray.
        resume: continue the benchmark in ``out``: tasks stored with the same fingerprint
            (instance, estimator, every constructor parameter, seed) are read back, the
            others run. Without it, a non-empty ``out`` is refused.
        progress: called with each record as it finishes (stored ones are not reported).

    Returns:
        A :class:`RecoveryResult`.
    """
    seed = check_positive_int(random_state, "random_state", minimum=0)
    jobs = check_positive_int(jobs, "jobs")
    configurations = dict(CONFIGURATIONS if configurations is None else configurations)
    names = _check_methods(methods, configurations)
    specs = [dict(s) for s in (instances if instances is not None else
                               recovery_instances(random_state=seed, quick=quick))]  # fmt: skip
    ids = [s.get("id") for s in specs]
    if len(set(ids)) != len(ids) or not all(isinstance(i, str) and _NAME.match(i) for i in ids):
        raise ValueError(
            f"Expected instances with distinct ids of letters and digits but got {ids}"
        )
    tasks = _tasks(specs, names, configurations, seed=seed, quick=quick)
    config = {
        "format_version": FORMAT_VERSION,
        "random_state": seed,
        "quick": quick,
        "threshold": RECOVERY_THRESHOLD,
        "configurations": {n: list(configurations[n]) for n in names},
        "instances": [s["id"] for s in specs],
    }
    store = _Store(Path(out))
    store.open(config, resume=resume)
    records: dict[tuple[str, str], dict[str, Any]] = {}
    pending = []
    for task, fingerprint in tasks:
        found = store.finished(task, fingerprint) if resume else None
        if found is not None:
            records[(task["instance"]["id"], task["method"])] = found
        else:
            pending.append((task, fingerprint))
    fingerprints = [fp for _, fp in pending]
    for index, record in map_tasks(
        _run_pending,
        [task for task, _ in pending],
        executor=executor,
        jobs=jobs,
        address=address,
        on_lost=_lost_task,
    ):
        record = {**record, "fingerprint": fingerprints[index]}
        store.write(record, pending[index][0])
        records[(record["instance"], record["method"])] = record
        if progress is not None:
            progress(record)
    ordered = [records[(t["instance"]["id"], t["method"])] for t, _ in tasks]
    result = _assemble(specs, ordered, config)
    write_json_atomic(Path(out) / "results.json", result.to_dict())
    write_text_atomic(Path(out) / "results.csv", csv_text(result.rows, ROW_COLUMNS))
    return result


def _run_pending(shared: Any, task: Mapping[str, Any]) -> dict[str, Any]:
    del shared
    return run_task(task)


def _assemble(
    specs: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]], config: dict
) -> RecoveryResult:
    truth = {r["instance"]: r for r in records if r["method"] == TRUTH}
    instances = []
    for spec in specs:
        t = truth.get(spec["id"], {})
        instances.append({**spec, "separability": t.get("separability"), "p2": t.get("p2")})
    by_id = {s["id"]: s for s in instances}
    rows = []
    for record in records:
        if record["method"] == TRUTH:
            continue
        spec = by_id[record["instance"]]
        row = {key: record.get(key) for key in ROW_COLUMNS if key in record}
        row.update(
            family=spec.get("family"),
            separability=spec.get("separability"),
            p2=spec.get("p2"),
            n_samples=spec.get("n_samples"),
            latent_dim=spec.get("latent_dim"),
            obs_dim=spec.get("obs_dim"),
            n_components=_n_components(spec),
            facets="x".join(map(str, spec["facets"])) if "facets" in spec else None,
            decoder=spec.get("decoder", "leaky_relu"),
            depth=len(spec["hidden"]) if "hidden" in spec else 2,
        )
        if isinstance(row.get("facet_accuracy"), list):
            row["facet_accuracy"] = " ".join(f"{a:.4f}" for a in row["facet_accuracy"])
        row["recovered"] = is_recovered(row)
        rows.append(row)
    return RecoveryResult(
        instances=instances,
        rows=rows,
        summary=summarize(rows),
        config=config,
        records=[dict(r) for r in records],
    )

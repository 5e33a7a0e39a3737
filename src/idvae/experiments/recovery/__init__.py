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
(scikit-learn, params passed to ``PCA`` / ``GaussianMixture``), ``"true-posterior"`` (the
true model's own posterior, :mod:`~idvae.experiments.recovery.ceiling`: the Bayes classifier
and E[z | x], a ceiling that tells which instances can be recovered from x at all), or a
name of
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
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idvae._validation import (
    check_positive_int,
    csv_text,
    jsonable,
    write_json_atomic,
    write_text_atomic,
)
from idvae.experiments.executors import ExecutorName, map_tasks
from idvae.experiments.recovery.instances import (
    FAMILIES,
    n_components,
    recovery_instances,
    simulate_instance,
)
from idvae.experiments.recovery.methods import (
    BASELINES,
    CONFIGURATIONS,
    DIST_AFF_MAX_SIZE,
    TRUE_LATENT,
    TRUTH,
    applies,
    estimator_class,
    is_oracle,
    lost_record,
    method_params,
    resolved_params,
    run_task,
    separability,
)
from idvae.experiments.recovery.summary import (
    RECOVERY_THRESHOLD,
    is_recovered,
    recovered_by_any,
    summarize,
    summary_table,
)

__all__ = [
    "CONFIGURATIONS",
    "DIST_AFF_MAX_SIZE",
    "FAMILIES",
    "RECOVERY_THRESHOLD",
    "RecoveryResult",
    "TRUE_LATENT",
    "applies",
    "is_oracle",
    "is_recovered",
    "method_params",
    "paired_progress",
    "recovered_by_any",
    "recovery_instances",
    "run_recovery",
    "run_task",
    "separability",
    "simulate_instance",
    "summarize",
    "summary_table",
]

FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# --------------------------------------------------------------------------- store


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(jsonable(value, nonfinite="str"), sort_keys=True))


def _same_fingerprint(stored: Any, current: Mapping[str, Any]) -> bool:
    """Whether a stored task was produced by what would run now.

    Equal fingerprints match, and so does a record that predates a constructor parameter
    added to the estimator since: a parameter missing from the stored ``params`` matches when
    it now has the estimator's default (a new parameter's default keeps the old behaviour;
    a changed default, or a value set on purpose, still makes the task run again).
    """
    if stored == current:
        return True
    if not isinstance(stored, dict) or set(stored) != set(current):
        return False
    if any(stored[key] != current[key] for key in current if key != "params"):
        return False
    old, new = stored["params"], current["params"]
    cls = estimator_class(str(current.get("estimator")))
    if cls is None or not isinstance(old, dict) or not set(old) <= set(new):
        return False
    if any(old[key] != new[key] for key in old):
        return False
    signature = inspect.signature(cls).parameters
    return all(
        key in signature and _normalised(signature[key].default) == new[key]
        for key in set(new) - set(old)
    )


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
        if record.get("status") != "ok" or not _same_fingerprint(
            record.get("fingerprint"), fingerprint
        ):
            return None
        return record

    def write(self, record: Mapping[str, Any], task: Mapping[str, Any]) -> None:
        write_json_atomic(self.path(task), record)


# --------------------------------------------------------------------------- the benchmark


ROW_COLUMNS = (
    "instance", "family", "method", "estimator", "status", "recovered", "weak_mcc", "accuracy",
    "facet_accuracy", "strong_mcc", "dist_aff", "score", "log_likelihood", "seconds",
    "separability", "p2", "n_samples", "latent_dim", "obs_dim", "n_components", "facets",
    "decoder", "depth", "error",
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
        if estimator not in BASELINES:
            estimator_class(estimator)  # an unknown estimator is an error here, not per run
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
                "params": resolved_params(configuration[0], params, seed),
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
        on_lost=lost_record,
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


def paired_progress(
    out: str | Path, method: str, *, reference: str = "vade-default"
) -> dict[str, Any]:
    """How a method does so far against a reference, on the instances both have finished.

    ``results.json`` is written only when a run ends; a long run (a new method on 54
    instances takes hours) is judged meanwhile from its run files,
    ``OUT/runs/<instance>/<method>.json``, each compared with the reference's record of the
    same instance (not with the reference's rate over all instances, which would compare
    different instances).

    Returns:
        ``{"method", "reference", "instances": [...], "families": {family: {"n",
        "recovered", "reference_recovered", "gained", "lost", "seconds": [min, max]}}}``,
        where ``gained`` and ``lost`` list the instances only the method (only the
        reference) recovers; family ``"all"`` pools them.
    """
    root = Path(out) / "runs"
    if not root.is_dir():
        raise ValueError(f"Expected a recovery benchmark directory with runs/ but got {out}")
    pairs = []
    for path in sorted(root.glob(f"*/{method}.json")):
        other = path.parent / f"{reference}.json"
        record = json.loads(path.read_text())
        if record.get("status") != "ok" or not other.exists():
            continue
        pairs.append((path.parent.name, record, json.loads(other.read_text())))
    families: dict[str, list[tuple[str, dict, dict]]] = {"all": pairs}
    for pair in pairs:
        families.setdefault(pair[0].rsplit("-", 1)[0], []).append(pair)
    return {
        "method": method,
        "reference": reference,
        "instances": [name for name, _, _ in pairs],
        "families": {family: _paired(group) for family, group in families.items()},
    }


def _paired(pairs: Sequence[tuple[str, dict, dict]]) -> dict[str, Any]:
    ours = {name: is_recovered(a) for name, a, _ in pairs}
    theirs = {name: is_recovered(b) for name, _, b in pairs}
    seconds = [float(a["seconds"]) for _, a, _ in pairs]
    return {
        "n": len(pairs),
        "recovered": sum(ours.values()),
        "reference_recovered": sum(theirs.values()),
        "gained": [n for n in ours if ours[n] and not theirs[n]],
        "lost": [n for n in ours if theirs[n] and not ours[n]],
        "seconds": [min(seconds), max(seconds)] if seconds else None,
    }


def _run_pending(shared: Any, task: Mapping[str, Any]) -> dict[str, Any]:
    del shared
    return run_task(task)


def _assemble(
    specs: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]], config: dict
) -> RecoveryResult:
    from idvae.simulate import default_hidden

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
            n_components=n_components(spec),
            facets="x".join(map(str, spec["facets"])) if "facets" in spec else None,
            decoder=spec.get("decoder", "leaky_relu"),
            depth=len(spec.get("hidden", default_hidden(spec["latent_dim"], spec["obs_dim"]))),
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

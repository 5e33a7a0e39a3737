"""The recovery benchmark's summary: recovery rate and medians per method, as data and a table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from idvae.experiments.recovery.methods import CEILING, TRUTH

__all__ = [
    "RECOVERY_THRESHOLD",
    "is_recovered",
    "recovered_by_any",
    "summarize",
    "summary_table",
]

RECOVERY_THRESHOLD = 0.95


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
    ceiling: str = CEILING,
    threshold: float = RECOVERY_THRESHOLD,
) -> dict[str, dict[str, Any]]:
    """Per method: recovery rate and medians, overall, where the baseline fails, where the
    ceiling is met, per family.

    Args:
        rows: records of (instance, method) tasks: ``instance``, ``method``, ``status``,
            ``weak_mcc``, ``accuracy`` (None for a method without clusters), and optionally
            ``family``, ``strong_mcc``, ``dist_aff``, ``seconds``.
        baseline: the method whose failures (not recovered) define the hard subset.
        ceiling: the method that reads the truth's own posterior; the instances it recovers
            are those on which recovery is possible at all (the feasible subset).
        threshold: the recovery threshold of weak MCC and accuracy.

    Returns:
        method -> ``n``, ``n_failed`` (fits that raised), ``n_recovered``,
        ``recovery_rate`` (failed fits count as not recovered), ``median_weak_mcc``,
        ``median_accuracy``, ``median_strong_mcc``, ``median_dist_aff``,
        ``median_seconds`` (medians over successful fits), ``baseline_fails`` (the same
        counts and medians on the instances the baseline does not recover; None without a
        baseline row), ``ceiling_met`` (the same on the instances the ceiling recovers; None
        without a ceiling row) and ``families`` (family -> counts and medians).
    """
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != TRUTH))
    fails = _instances(rows, baseline, threshold, recovered=False)
    feasible = _instances(rows, ceiling, threshold, recovered=True)
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
        entry["ceiling_met"] = (
            None
            if feasible is None
            else _rate([r for r in mine if r["instance"] in feasible], threshold)
        )
        families = dict.fromkeys(r.get("family") for r in mine if r.get("family"))
        entry["families"] = {
            f: _rate([r for r in mine if r.get("family") == f], threshold) for f in families
        }
        summary[method] = entry
    return summary


def recovered_by_any(
    rows: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    *,
    threshold: float = RECOVERY_THRESHOLD,
) -> dict[str, Any]:
    """The instances that at least one of ``methods`` recovers: what a perfect choice among
    their fits would reach, the ceiling of any rule that selects among them.

    Returns:
        ``{"methods", "n", "recovered", "instances", "families": {family: {"n",
        "recovered"}}}`` over the instances with a row of any of the methods (a method that
        does not apply to an instance, such as MFCVAE to k = 1, adds nothing there);
        ``instances`` lists the recovered ones.
    """
    by_instance: dict[str, dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        if row["method"] in methods:
            by_instance.setdefault(row["instance"], {})[row["method"]] = row
    hits = {k: any(is_recovered(r, threshold) for r in v.values()) for k, v in by_instance.items()}
    families: dict[str, dict[str, int]] = {}
    for name, hit in hits.items():
        family = next(iter(by_instance[name].values())).get("family") or "all"
        entry = families.setdefault(family, {"n": 0, "recovered": 0})
        entry["n"] += 1
        entry["recovered"] += int(hit)
    return {
        "methods": list(methods),
        "n": len(hits),
        "recovered": sum(hits.values()),
        "instances": sorted(k for k, hit in hits.items() if hit),
        "families": families,
    }


def _instances(
    rows: Sequence[Mapping[str, Any]], method: str, threshold: float, *, recovered: bool
) -> set[str] | None:
    """The instances that ``method`` recovers (or does not); None without rows of it."""
    if not any(r["method"] == method for r in rows):
        return None
    return {
        r["instance"]
        for r in rows
        if r["method"] == method and is_recovered(r, threshold) == recovered
    }


def _cell(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _count(entry: Mapping[str, Any] | None) -> str:
    if not entry or not entry["n"]:
        return "—"
    return f"{entry['n_recovered']}/{entry['n']}"


def summary_table(summary: Mapping[str, Mapping[str, Any]], title: str | None = None) -> Any:
    """The summary as a ``rich.table.Table``: one row per method.

    Columns: instances recovered (and the rate), median weak MCC, median accuracy, median
    fit time, recovered where the baseline fails, recovered where the ceiling (the true
    model's posterior) is met, recovered among the simulator's seeds 0-9, fits that failed.
    The strong MCC and distAff medians are in the summary's data.
    """
    from rich.table import Table

    baseline = next((e.get("baseline") for e in summary.values()), "pca")
    table = Table(title=title or "Recovery of the truth of model (3)")
    table.add_column("method", no_wrap=True)
    columns = ("recovered", "weak MCC", "acc.", "time (s)", f"{baseline} fails", "feasible")
    for column in columns:
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
            _count(entry.get("ceiling_met")),
            _count(entry["families"].get("seeds")),
            str(entry["n_failed"]),
        )
    table.caption = (
        f"recovered: weak MCC to the truth >= {RECOVERY_THRESHOLD} and, for a method with "
        f"clusters, accuracy >= {RECOVERY_THRESHOLD}; feasible: the instances that the true "
        f"model's own posterior ({CEILING}) recovers; medians over successful fits"
    )
    return table

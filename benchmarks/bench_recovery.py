"""Recovery benchmark (issue 8): every configuration scored against the truth of model (3).

Runs :func:`idvae.experiments.recovery.run_recovery` (docs/recovery.md) on its default
instances (the simulator's seeds 0-9, 40 random instances, 4 faceted ones) with every
configuration of ``idvae.experiments.recovery.CONFIGURATIONS``, prints the table and
returns, per configuration: instances recovered (weak MCC to the truth >= 0.95 and, with
clusters, accuracy >= 0.95), the rate, median weak MCC, accuracy and fit time, recovered
where PCA fails, and recovered among the simulator's seeds 0-9.

The full run is long (hours on 2 cores). It is resumable: every (instance, method) is saved
in ``benchmarks/recovery/runs/`` as it finishes, and a rerun (``make bench``, or
``python benchmarks/run.py recovery``) computes only what is missing, failed or changed
(a configuration whose parameters changed). Delete the folder to start afresh.

Environment:

* ``IDVAE_BENCH_QUICK=1``: two tiny instances, capped epochs, into
  ``benchmarks/recovery-quick/`` (a smoke run of a minute or two);
* ``IDVAE_RECOVERY_METHODS=a,b``: only these configurations;
* ``IDVAE_RECOVERY_FAMILIES=seeds,random,facets``: only these instance families;
* ``IDVAE_RECOVERY_JOBS=K``: K worker processes (default 1);
* ``IDVAE_RECOVERY_OUT=DIR``: another results folder.

``python benchmarks/bench_recovery.py`` runs it alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from rich.console import Console

from idvae.experiments.recovery import recovery_instances, run_recovery

QUICK = os.environ.get("IDVAE_BENCH_QUICK") == "1"
HERE = Path(__file__).resolve().parent


def _names(variable: str) -> list[str] | None:
    text = os.environ.get(variable, "")
    names = [part.strip() for part in text.split(",") if part.strip()]
    return names or None


def run() -> dict:
    torch.set_num_threads(1)
    default_out = HERE / ("recovery-quick" if QUICK else "recovery")
    out = Path(os.environ.get("IDVAE_RECOVERY_OUT", default_out))
    families = _names("IDVAE_RECOVERY_FAMILIES") or (
        ["random"] if QUICK else ["seeds", "random", "facets"]
    )
    instances = recovery_instances(
        2 if QUICK else 40, 0, families=families, n_facet_instances=4, quick=QUICK
    )
    console = Console(stderr=True)

    def progress(record: dict) -> None:
        scores = ", ".join(
            f"{key} {record[key]:.3f}"
            for key in ("separability", "weak_mcc", "accuracy")
            if record.get(key) is not None
        )
        status = scores if record["status"] == "ok" else f"FAILED ({record['error']})"
        console.print(f"  {record['instance']} {record['method']}: {status}", markup=False)

    result = run_recovery(
        out,
        instances=instances,
        methods=_names("IDVAE_RECOVERY_METHODS"),
        quick=QUICK,
        jobs=int(os.environ.get("IDVAE_RECOVERY_JOBS", "1")),
        resume=True,
        progress=progress,
    )
    Console().print(result.table(title=f"Recovery of the truth: {len(instances)} instances"))
    results = os.path.relpath(out, HERE.parent)
    figures: dict = {"quick": QUICK, "n_instances": len(instances), "results": results}
    for method, entry in result.summary.items():
        fails, seeds = entry["baseline_fails"], entry["families"].get("seeds")
        feasible = entry["ceiling_met"]
        figures[method] = {
            "recovered": f"{entry['n_recovered']}/{entry['n']}",
            "recovery_rate": entry["recovery_rate"],
            "median_weak_mcc": entry["median_weak_mcc"],
            "median_accuracy": entry["median_accuracy"],
            "median_seconds": entry["median_seconds"],
            "recovered_where_pca_fails": f"{fails['n_recovered']}/{fails['n']}" if fails else None,
            "recovered_where_feasible": (
                f"{feasible['n_recovered']}/{feasible['n']}" if feasible else None
            ),
            "recovered_seeds_0_9": f"{seeds['n_recovered']}/{seeds['n']}" if seeds else None,
            "n_failed": entry["n_failed"],
        }
    return figures


if __name__ == "__main__":
    import json
    import sys

    if "--quick" in sys.argv[1:]:
        QUICK = True
    print(json.dumps(run(), indent=2))

"""Where VaDE's defaults miss the truth: the search's part and the fit's, from the truth start.

The recovery benchmark's oracle ``vade-truth-start`` starts VaDE's defaults at each
instance's true z. Read against the ceiling (``true-posterior``), it splits the defaults'
misses in two: instances where the truth start recovers (the defaults' search did not reach
the truth's basin) and instances where it does not (the fit leaves the truth even when it
starts there). This script asks one question of each part.

``--stage bounds``: on every instance the ceiling recovers and the defaults miss, refit
``vade-default`` and ``vade-truth-start`` and record each fit's training bound (``score``)
and its tight log-likelihood estimate. Where the truth start recovers *and* holds the higher
bound, a search that reached its basin would be kept by selection on the bound; where it
holds the lower one, no selection by the objective could keep it.

``--stage levers``: on the instances where the truth start does not recover, refit from the
true z with one part of the defaults changed at a time (``VARIANTS``).

Both read ``results/recovery`` (run ``idvae reproduce recovery`` with ``vade-truth-start``
first) and fit through ``idvae.experiments.recovery.run_recovery`` (same scores, resumable)
into ``results/levers/truth_start/<stage>/``.

Usage::

    python benchmarks/truth_start.py --stage bounds|levers [--jobs 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from idvae.experiments.recovery import CONFIGURATIONS, is_recovered, run_recovery

RECOVERY = Path("results/recovery")
OUT = Path("results/levers/truth_start")
DEFAULT, TRUTH_START, CEILING = "vade-default", "vade-truth-start", "true-posterior"
# one change each to the defaults started at the truth
VARIANTS: dict[str, dict] = {
    "truth-no-refit": {"prior_refit_every": None},
    "truth-dec128": {"decoder_sizes": [128, 128], "encoder_sizes": [128, 128]},
    "truth-e300": {"epochs": 300},
    "truth-polish1000": {"polish_iterations": 1000},
}


def feasible_misses(method: str, recovery: Path = RECOVERY) -> list[dict]:
    """Instance specs where the ceiling recovers and ``method`` does not."""
    results = json.loads((recovery / "results.json").read_text())
    rows = {(r["instance"], r["method"]): r for r in results["rows"]}
    return [
        spec
        for spec in results["instances"]
        if (spec["id"], method) in rows
        and is_recovered(rows[(spec["id"], CEILING)])
        and not is_recovered(rows[(spec["id"], method)])
    ]


def stage_configurations(stage: str) -> tuple[list[dict], dict[str, tuple[str, dict]]]:
    """The instances and the configurations one stage fits."""
    if stage == "bounds":
        return feasible_misses(DEFAULT), {m: CONFIGURATIONS[m] for m in (DEFAULT, TRUTH_START)}
    base = dict(CONFIGURATIONS[TRUTH_START][1])
    return feasible_misses(TRUTH_START), {
        name: ("vade", base | change) for name, change in VARIANTS.items()
    }


def bound_table(result_rows: list[dict]) -> list[dict]:
    """Per instance: does the truth start recover, and does it hold the higher bounds?"""
    rows = {(r["instance"], r["method"]): r for r in result_rows if r.get("status") == "ok"}
    table = []
    for instance in sorted({i for i, m in rows if m == DEFAULT}):
        default, truth = rows.get((instance, DEFAULT)), rows.get((instance, TRUTH_START))
        if truth is None:
            continue
        table.append(
            {
                "instance": instance,
                "truth_start_recovers": is_recovered(truth),
                "default_recovers": is_recovered(default),
                **{
                    f"{bound}_gain": truth[bound] - default[bound]
                    for bound in ("score", "log_likelihood")
                },
            }
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("bounds", "levers"), required=True)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    specs, configurations = stage_configurations(args.stage)
    out = OUT / args.stage
    result = run_recovery(
        out,
        instances=specs,
        configurations=configurations,
        jobs=args.jobs,
        resume=out.exists(),
        progress=lambda r: print(
            f"  {r['instance']} {r['method']}: weak {r.get('weak_mcc')} acc {r.get('accuracy')}"
            f" bound {r.get('score')} ({r.get('seconds')} s)",
            flush=True,
        ),
    )
    print(f"{len(specs)} instances: {[s['id'] for s in specs]}")
    for name in configurations:
        entry = result.summary[name]
        print(f"{name:18s} recovered {entry['n_recovered']}/{entry['n']}")
    if args.stage == "bounds":
        for row in bound_table(result.rows):
            print(
                f"{row['instance']:10s} truth start recovers {row['truth_start_recovers']!s:5s}"
                f" bound gain {row['score_gain']:+.4f} log-lik gain"
                f" {row['log_likelihood_gain']:+.4f} nats/point"
            )


if __name__ == "__main__":
    main()

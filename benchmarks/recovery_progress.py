"""A recovery benchmark run in progress: each named method against VaDE's defaults so far.

``idvae reproduce recovery`` writes ``results.json`` only when every task is done; a new
method on the 54 instances takes hours of one core and several sessions. This reads the
run files finished so far (``results/recovery/runs/<instance>/<method>.json``) and compares
each method with ``vade-default`` on the same instances
(:func:`idvae.experiments.recovery.paired_progress`).

``--union`` instead reads the finished ``results.json`` and counts the instances that at
least one configuration without oracle information recovers
(:func:`idvae.experiments.recovery.recovered_by_any`): the most that any rule choosing among
those fits could recover. It writes ``<out>/union.json``, with the instances the truth
start recovers outside that union.

Usage::

    python benchmarks/recovery_progress.py METHOD [METHOD ...] [--out results/recovery]
    python benchmarks/recovery_progress.py --union [--out results/recovery]

Prints one line per method and family and writes ``<out>/progress.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from idvae._validation import write_json_atomic
from idvae.experiments.recovery import (
    TRUTH,
    is_oracle,
    is_recovered,
    paired_progress,
    recovered_by_any,
)

TRUTH_START = "vade-truth-start"


def union(out: Path) -> dict:
    """The union of the non-oracle configurations of ``out/results.json``, and what the
    truth start recovers beyond it."""
    rows = json.loads((out / "results.json").read_text())["rows"]
    methods = sorted(m for m in {r["method"] for r in rows} - {TRUTH} if not is_oracle(m))
    entry = recovered_by_any(rows, methods)
    reached = set(entry["instances"])
    entry["truth_start_beyond"] = sorted(
        r["instance"]
        for r in rows
        if r["method"] == TRUTH_START and is_recovered(r) and r["instance"] not in reached
    )
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*")
    parser.add_argument("--union", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results/recovery"))
    args = parser.parse_args()
    if args.union == bool(args.methods):
        parser.error("expected either METHOD names or --union")
    if args.union:
        entry = union(args.out)
        print(
            f"{len(entry['methods'])} configurations without oracle information recover "
            f"{entry['recovered']}/{entry['n']} between them; the truth start also recovers "
            f"{', '.join(entry['truth_start_beyond']) or 'nothing more'}"
        )
        write_json_atomic(args.out / "union.json", entry)
        return
    progress = {method: paired_progress(args.out, method) for method in args.methods}
    for method, entry in progress.items():
        for family, row in entry["families"].items():
            print(
                f"{method:26s} {family:7s} {row['recovered']}/{row['n']} recovered, "
                f"vade-default {row['reference_recovered']}/{row['n']}; "
                f"gained {row['gained']}, lost {row['lost']}"
            )
    write_json_atomic(args.out / "progress.json", progress)


if __name__ == "__main__":
    main()

"""A recovery benchmark run in progress: each named method against VaDE's defaults so far.

``idvae reproduce recovery`` writes ``results.json`` only when every task is done; a new
method on the 54 instances takes hours of one core and several sessions. This reads the
run files finished so far (``results/recovery/runs/<instance>/<method>.json``) and compares
each method with ``vade-default`` on the same instances
(:func:`idvae.experiments.recovery.paired_progress`).

Usage::

    python benchmarks/recovery_progress.py METHOD [METHOD ...] [--out results/recovery]

Prints one line per method and family and writes ``<out>/progress.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from idvae._validation import write_json_atomic
from idvae.experiments.recovery import paired_progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="+")
    parser.add_argument("--out", type=Path, default=Path("results/recovery"))
    args = parser.parse_args()
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

"""Wall time of whole fits of ``levers_vade.py`` configurations, for a quiet machine.

The per-fit seconds in ``results/levers`` were taken with other jobs on the cores. This
times the fits of the named configurations the way ``levers_vade.fit_one`` does (the fit,
``transform`` and ``score``; not the log-likelihoods it computes afterwards), one after
another on one torch thread, and reports the median and the spread per configuration. Run
it with nothing else on the machine; the load average at the end is recorded.

Usage::

    python benchmarks/levers_fit_time.py CONFIG [CONFIG ...] [--seeds 0,1,2]

Writes ``results/levers/fit_time.json``: per configuration, the seconds of each seed's fit,
their median, min and max, and the host. Configurations timed before and not named again
keep their entries.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from idvae._validation import write_json_atomic
from levers_vade import CONFIGS, ROOT, fit_one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; expected some of {list(CONFIGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    path = ROOT / "fit_time.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    for config in args.configs:
        rows = [fit_one(config, seed) for seed in seeds]
        seconds = [r["seconds"] for r in rows]
        out[config] = {
            "seeds": seeds,
            "seconds": seconds,
            "median_seconds": float(np.median(seconds)),
            "min_seconds": min(seconds),
            "max_seconds": max(seconds),
            "recovered": [r["recovered"] for r in rows],
            "host": rows[0]["host"],
            "load_average_at_end": os.getloadavg()[0],
        }
        print(f"{config}: median {out[config]['median_seconds']:.1f} s per fit {seconds}")
    write_json_atomic(path, out)


if __name__ == "__main__":
    main()

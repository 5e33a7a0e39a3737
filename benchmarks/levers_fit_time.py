"""Wall time of whole fits of ``levers_vade.py`` (or ``levers_mfcvae.py``) configurations,
for a quiet machine.

The per-fit seconds in ``results/levers`` were taken with other jobs on the cores. This
times the fits of the named configurations the way ``fit_one`` does (for VaDE the fit,
``transform`` and ``score``; not the log-likelihoods it computes afterwards), one after
another on one torch thread, the configurations taking turns seed by seed so that a change
of load falls on all of them, and reports the median and the spread per configuration. Run
it with nothing else on the machine; the load average at the end is recorded.

Usage::

    python benchmarks/levers_fit_time.py CONFIG [CONFIG ...] [--seeds 0,1,2] [--mfcvae]

Writes ``results/levers/fit_time.json`` (with ``--mfcvae``: the configurations of
``levers_mfcvae.py``, to ``results/levers/mfcvae/fit_time.json``): per configuration, the
seconds of each seed's fit, their median, min and max, and the host. Configurations timed
before and not named again keep their entries.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

import levers_mfcvae
import levers_vade
from idvae._validation import write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--mfcvae", action="store_true", help="levers_mfcvae.py's configurations")
    args = parser.parse_args()
    levers = levers_mfcvae if args.mfcvae else levers_vade
    unknown = [c for c in args.configs if c not in levers.CONFIGS]
    if unknown:
        expected = list(levers.CONFIGS)
        parser.error(f"unknown configuration(s) {unknown}; expected some of {expected}")
    seeds = [int(s) for s in args.seeds.split(",")]
    path = levers.ROOT / "fit_time.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    fits = {c: [] for c in args.configs}
    for seed in seeds:
        for config in args.configs:
            fits[config].append(levers.fit_one(config, seed))
    for config, rows in fits.items():
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

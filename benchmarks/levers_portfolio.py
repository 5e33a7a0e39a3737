"""Portfolios of starts: several configurations of ``levers_vade.py``, one fit picked per seed.

For each of the simulator's seeds 0-9, the fits of the named configurations (read from
``results/levers/<config>/seed<s>.json``, which ``levers_vade.py`` writes) are compared by a
criterion that knows nothing of the truth, and the best one is the portfolio's answer:

- ``score``: the fit's importance-weighted bound on its training points (K = 10);
- ``loglik_train``: ``VaDE.log_likelihood`` (1,000 draws per point) on the training points;
- ``loglik_held_out``: the same on 3,000 fresh points of the instance, which no fit saw.

A portfolio of k configurations costs k fits. ``loglik_held_out`` needs data the fits did not
train on: here 3,000 extra points; a user would hold out part of the data instead.

Usage::

    python benchmarks/levers_portfolio.py CONFIG CONFIG [...]

Prints the recovered count per criterion (and for the best choice in hindsight, which uses
the truth and is not a method) and writes ``results/levers/portfolio/<c1>+<c2>....json``.
"""

from __future__ import annotations

import argparse
import json

from idvae._validation import write_json_atomic
from levers_vade import ROOT, SEEDS

CRITERIA = ("score", "loglik_train", "loglik_held_out")


def portfolio(configs: list[str]) -> dict:
    """Per seed, each criterion's pick among the configurations' fits; counts of recovered."""
    seeds = {}
    for seed in SEEDS:
        fits = {c: json.loads((ROOT / c / f"seed{seed}.json").read_text()) for c in configs}
        picks = {key: max(fits, key=lambda c, key=key: fits[c][key]) for key in CRITERIA}
        seeds[seed] = {
            "fits": {
                c: {k: f[k] for k in ("weak_mcc", "accuracy", "recovered", *CRITERIA)}
                for c, f in fits.items()
            },
            "picked": picks,
            "recovered": {key: fits[c]["recovered"] for key, c in picks.items()},
            "any_recovered": any(f["recovered"] for f in fits.values()),
        }
    counts = {key: sum(s["recovered"][key] for s in seeds.values()) for key in CRITERIA}
    counts["any (hindsight, uses the truth)"] = sum(s["any_recovered"] for s in seeds.values())
    return {"configs": configs, "recovered": counts, "seeds": seeds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    args = parser.parse_args()
    missing = [
        f"{c}/seed{s}.json"
        for c in args.configs
        for s in SEEDS
        if not (ROOT / c / f"seed{s}.json").exists()
    ]
    if missing:
        parser.error(f"run levers_vade.py first; missing {missing[:3]} ({len(missing)} files)")
    result = portfolio(args.configs)
    write_json_atomic(ROOT / "portfolio" / ("+".join(args.configs) + ".json"), result)
    for key, count in result["recovered"].items():
        print(f"picked by {key}: recovered {count}/{len(SEEDS)}")


if __name__ == "__main__":
    main()

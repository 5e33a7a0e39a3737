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

``--stage starts``: on the same instances, fit the defaults from each other initial geometry
(``STARTS``) and ask whether a portfolio of starts, the one with the highest tight
log-likelihood kept, would pick a fit that recovers. Only the defaults' misses are fitted,
so this bounds the gain of such a portfolio from above; what it would lose where the
defaults recover is not measured here.

``--stage levers``: on the instances where the truth start does not recover, refit from the
true z with one part of the defaults changed at a time (``VARIANTS``).

``--stage longer``: the defaults' misses refitted with three times the epochs (``LONGER``):
does the defaults' own basin lead to the truth's with more training?

``--stage search``: the defaults' misses fitted by a search over subsamples (``SEARCH``):
six trials, each on its own third of the rows, compared by their likelihood on rows they
did not see, the kept one trained on all rows.

``--stage restarts``: on the misses where the truth start recovers (the search's misses),
the defaults refitted with other seeds (``RESTARTS``; seed 0 is the bounds stage's fit):
how often does a restart on all the rows land in the truth's basin, and does the tight
log-likelihood on the training rows pick it among the restarts? Then, on the instances the
defaults recover, the defaults with seeds ``RECOVERED_RESTARTS``: what would restarts
picked the same way lose there?

All read ``results/recovery`` (run ``idvae reproduce recovery`` with ``vade-truth-start``
first) and fit through ``idvae.experiments.recovery.run_recovery`` (same scores, resumable)
into ``results/levers/truth_start/<stage>/``.

Usage::

    python benchmarks/truth_start.py --stage bounds|starts|levers|longer|search|restarts [--jobs 1]
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
# the defaults trained three times as long from their own start
LONGER: dict[str, dict] = {"vade-e300": {"epochs": 300}}
# six trials of the defaults, each on its own third of the rows, compared by their
# likelihood on rows they did not see; the kept one trained on all rows (tenth round)
SEARCH: dict[str, dict] = {"vade-subsample-search": {"n_init": 6, "init_fraction": 1 / 3}}
# the benchmark seeds (every estimator's random_state) of the restarts of the defaults; seed 0
# is the defaults' own fit in the bounds stage
RESTARTS = (1, 2, 3, 4, 5)
# the seeds of the defaults on the instances they recover (seed 0 refitted: the benchmark's
# own fits did not record a tight log-likelihood)
RECOVERED_RESTARTS = (0, 1, 2, 3)
# the defaults from another initial geometry (the embeddings regress the encoder, as the truth)
STARTS: dict[str, dict] = {
    "vade-ae": {"pretrain": "ae"},
    "vade-isomap": {"pretrain": "isomap", "pretrain_epochs": 20},
    "vade-spectral": {"pretrain": "spectral", "pretrain_epochs": 20},
}


def _by_task(result_rows: list[dict]) -> dict[tuple[str, str], dict]:
    """The rows of the fits that finished, by (instance, method)."""
    return {(r["instance"], r["method"]): r for r in result_rows if r.get("status") == "ok"}


def _scores(row: dict) -> str:
    return f"{row['weak_mcc']:.3f} / {row['accuracy']:.3f}"


def feasible_misses(method: str, recovery: Path = RECOVERY) -> list[dict]:
    """Instance specs where the ceiling recovers and ``method`` does not."""
    results = json.loads((recovery / "results.json").read_text())
    rows = _by_task(results["rows"])
    return [
        spec
        for spec in results["instances"]
        if (spec["id"], method) in rows
        and is_recovered(rows[(spec["id"], CEILING)])
        and not is_recovered(rows[(spec["id"], method)])
    ]


def search_misses(recovery: Path = RECOVERY) -> list[dict]:
    """The feasible misses of the defaults that the truth start recovers."""
    truth_misses = {s["id"] for s in feasible_misses(TRUTH_START, recovery)}
    return [s for s in feasible_misses(DEFAULT, recovery) if s["id"] not in truth_misses]


def recovered_by_both(recovery: Path = RECOVERY) -> list[dict]:
    """The instances that both the defaults and the truth start recover."""
    results = json.loads((recovery / "results.json").read_text())
    rows = _by_task(results["rows"])
    return [
        spec
        for spec in results["instances"]
        if all(is_recovered(rows[(spec["id"], m)]) for m in (DEFAULT, TRUTH_START))
    ]


def stage_configurations(stage: str) -> tuple[list[dict], dict[str, tuple[str, dict]]]:
    """The instances and the configurations one stage fits."""
    if stage == "bounds":
        return feasible_misses(DEFAULT), {m: CONFIGURATIONS[m] for m in (DEFAULT, TRUTH_START)}
    if stage == "starts":
        return feasible_misses(DEFAULT), {name: ("vade", start) for name, start in STARTS.items()}
    if stage == "longer":
        return feasible_misses(DEFAULT), {name: ("vade", c) for name, c in LONGER.items()}
    if stage == "search":
        return feasible_misses(DEFAULT), {name: ("vade", c) for name, c in SEARCH.items()}
    if stage == "restarts":
        return search_misses(), {DEFAULT: CONFIGURATIONS[DEFAULT]}
    base = dict(CONFIGURATIONS[TRUTH_START][1])
    return feasible_misses(TRUTH_START), {
        name: ("vade", base | change) for name, change in VARIANTS.items()
    }


def bound_table(result_rows: list[dict], instances: list[dict]) -> list[str]:
    """Per instance, in the benchmark's order, the Markdown row docs/recovery_levers.md
    quotes: both fits' weak MCC / accuracy, whether the truth start recovers, and how much
    higher its training bound and its tight log-likelihood are (nats per point)."""
    rows = _by_task(result_rows)
    table = []
    for spec in instances:
        default, truth = rows.get((spec["id"], DEFAULT)), rows.get((spec["id"], TRUTH_START))
        if default is None or truth is None:
            continue
        cells = [
            spec["id"],
            *(_scores(r) for r in (default, truth)),
            "yes" if is_recovered(truth) else "no",
            *(f"{truth[b] - default[b]:+.3f}" for b in ("score", "log_likelihood")),
        ]
        table.append("| " + " | ".join(cells) + " |")
    return table


def levers_table(result_rows: list[dict], instances: list[dict]) -> list[str]:
    """The Markdown rows docs/recovery_levers.md quotes: per instance, the truth start's
    weak MCC / accuracy (from the bounds stage) and each variant's, then the count each
    recovers."""
    rows = _by_task(result_rows)
    names = [TRUTH_START, *VARIANTS]
    table = []
    for spec in instances:
        cells = [spec["id"], *(_scores(rows[(spec["id"], n)]) for n in names)]
        table.append("| " + " | ".join(cells) + " |")
    counts = [sum(is_recovered(rows[(spec["id"], n)]) for spec in instances) for n in names]
    table.append("| recovered | " + " | ".join(f"{c}/{len(instances)}" for c in counts) + " |")
    return table


def portfolio_table(result_rows: list[dict], instances: list[dict]) -> list[str]:
    """Per instance, the Markdown row docs/recovery_levers.md quotes: each start's weak MCC
    / accuracy (``vade-default`` is the VAE start, from the bounds stage) and the start a
    portfolio would keep, the one with the highest tight log-likelihood, with whether it
    recovers."""
    rows = _by_task(result_rows)
    names = [DEFAULT, *STARTS]
    table = []
    for spec in instances:
        fits = {n: rows[(spec["id"], n)] for n in names if (spec["id"], n) in rows}
        if len(fits) < len(names):
            continue
        kept = max(names, key=lambda n: fits[n]["log_likelihood"])
        cells = [
            spec["id"],
            *(_scores(fits[n]) for n in names),
            kept,
            "yes" if is_recovered(fits[kept]) else "no",
        ]
        table.append("| " + " | ".join(cells) + " |")
    return table


def beside_defaults_table(
    result_rows: list[dict], instances: list[dict], names: list[str]
) -> list[str]:
    """Per instance, the Markdown row docs/recovery_levers.md quotes: the weak MCC /
    accuracy of the defaults (from the bounds stage) and of each configuration in
    ``names``, then the tight log-likelihood of each and of the truth start."""
    rows = _by_task(result_rows)
    table = []
    for spec in instances:
        if any((spec["id"], n) not in rows for n in (DEFAULT, *names, TRUTH_START)):
            continue
        fits = [rows[(spec["id"], n)] for n in (DEFAULT, *names)]
        truth = rows[(spec["id"], TRUTH_START)]
        cells = [
            spec["id"],
            *(_scores(f) for f in fits),
            *(f"{f['log_likelihood']:.3f}" for f in (*fits, truth)),
        ]
        table.append("| " + " | ".join(cells) + " |")
    return table


def _kept(fits: dict[int, dict], seeds: list[int], key: str = "log_likelihood") -> int:
    """The seed among ``seeds`` whose fit is highest by ``key`` (the first of equals)."""
    return max(seeds, key=lambda s: fits[s][key])


def restarts_table(
    by_seed: dict[int, list[dict]], instances: list[dict], *, mixed_only: bool = False
) -> list[str]:
    """Per instance, the Markdown row docs/recovery_levers.md quotes: how many of the
    restarts (the seeds of ``by_seed``, each a list of result rows) recover, and which; the
    restart with the highest tight log-likelihood on the training rows among the first
    ``len(RECOVERED_RESTARTS)`` seeds (what ``VaDE(n_init=4)`` keeps) and, when there are
    more, among all of them: its seed, weak MCC / accuracy and whether it recovers.
    ``mixed_only``: only the instances where some restarts recover and others do not."""
    rows = {seed: _by_task(r) for seed, r in by_seed.items()}
    first = sorted(rows)[: len(RECOVERED_RESTARTS)]
    table = []
    for spec in instances:
        fits = {s: rows[s].get((spec["id"], DEFAULT)) for s in sorted(rows)}
        if any(f is None for f in fits.values()):
            continue
        recovered = [is_recovered(f) for f in fits.values()]
        if mixed_only and len(set(recovered)) == 1:
            continue
        which = [str(s) for s, ok in zip(fits, recovered, strict=True) if ok]
        cells = [spec["id"], f"{sum(recovered)}/{len(fits)}", ", ".join(which) or "—"]
        for seeds in (first, list(fits)) if len(fits) > len(first) else (first,):
            kept = _kept(fits, seeds)
            cells += [str(kept), _scores(fits[kept]), "yes" if is_recovered(fits[kept]) else "no"]
        table.append("| " + " | ".join(cells) + " |")
    return table


def kept_counts(
    by_seed: dict[int, list[dict]], instances: list[dict], key: str = "log_likelihood"
) -> tuple[int, int]:
    """(instances where the restart kept among the first four seeds recovers, where seed 0
    does): ``VaDE(n_init=4)`` against the defaults, as the restarts stage measures them.
    ``key``: what the restart is kept by, the tight log-likelihood or the training bound
    (``"score"``)."""
    rows = {seed: _by_task(r) for seed, r in by_seed.items()}
    first = sorted(rows)[: len(RECOVERED_RESTARTS)]
    kept = single = 0
    for spec in instances:
        fits = {s: rows[s][(spec["id"], DEFAULT)] for s in first}
        kept += is_recovered(fits[_kept(fits, first, key)])
        single += is_recovered(fits[first[0]])
    return kept, single


def _run_seeds(
    out: Path, specs: list[dict], configurations: dict, seeds: tuple[int, ...], jobs: int
) -> None:
    """One run of the benchmark per seed (``out/seed<s>``, resumable)."""
    for seed in seeds:
        path = out / f"seed{seed}"
        result = run_recovery(
            path, instances=specs, configurations=configurations, random_state=seed,
            jobs=jobs, resume=path.exists(), progress=_report,
        )  # fmt: skip
        entry = result.summary[DEFAULT]
        print(f"seed {seed}: recovered {entry['n_recovered']}/{entry['n']}")


def restarts_results(out: Path = OUT) -> tuple[dict, list[dict], dict, list[dict]]:
    """The restarts stage as written: the rows by seed and the instances of the search's
    misses (seed 0 is the bounds stage's fit), then the same of the instances the defaults
    recover."""

    def read(path: Path) -> dict:
        return json.loads((path / "results.json").read_text())

    misses = {0: read(out / "bounds")["rows"]}
    misses |= {s: read(out / "restarts" / f"seed{s}")["rows"] for s in RESTARTS}
    kept = {s: read(out / "restarts" / "recovered" / f"seed{s}") for s in RECOVERED_RESTARTS}
    return (
        misses,
        read(out / "restarts" / f"seed{RESTARTS[0]}")["instances"],
        {s: r["rows"] for s, r in kept.items()},
        kept[RECOVERED_RESTARTS[0]]["instances"],
    )


def _run_restarts(specs: list[dict], configurations: dict, jobs: int) -> list[str]:
    """The restarts stage: the search's misses, then the instances the defaults recover;
    the tables and the counts of docs/recovery_levers.md."""
    _run_seeds(OUT / "restarts", specs, configurations, RESTARTS, jobs)
    recovered = recovered_by_both()
    _run_seeds(OUT / "restarts" / "recovered", recovered, configurations, RECOVERED_RESTARTS, jobs)
    by_miss, misses, by_kept, kept = restarts_results()
    return [
        *restarts_table(by_miss, misses),
        *restarts_table(by_kept, kept, mixed_only=True),
        f"n_init=4 on the misses: {kept_counts(by_miss, misses)} (kept, seed 0)",
        f"n_init=4 where the defaults recover: {kept_counts(by_kept, kept)} (kept, seed 0)",
    ]


def _report(record: dict) -> None:
    print(
        f"  {record['instance']} {record['method']}: weak {record.get('weak_mcc')} acc "
        f"{record.get('accuracy')} bound {record.get('score')} ({record.get('seconds')} s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = ("bounds", "starts", "levers", "longer", "search", "restarts")
    parser.add_argument("--stage", choices=stages, required=True)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    specs, configurations = stage_configurations(args.stage)
    if args.stage == "restarts":
        print("\n".join(_run_restarts(specs, configurations, args.jobs)))
        return
    out = OUT / args.stage
    result = run_recovery(
        out,
        instances=specs,
        configurations=configurations,
        jobs=args.jobs,
        resume=out.exists(),
        progress=_report,
    )
    print(f"{len(specs)} instances: {[s['id'] for s in specs]}")
    for name in configurations:
        entry = result.summary[name]
        print(f"{name:18s} recovered {entry['n_recovered']}/{entry['n']}")
    if args.stage == "bounds":
        table = bound_table(result.rows, result.instances)
    else:  # the other stages read the VAE start and the truth start from the bounds stage
        bounds = json.loads((OUT / "bounds" / "results.json").read_text())["rows"]
        pooled = bounds + result.rows
        if args.stage in ("longer", "search"):
            table = beside_defaults_table(pooled, result.instances, list(configurations))
        else:
            make = levers_table if args.stage == "levers" else portfolio_table
            table = make(pooled, result.instances)
    print("\n".join(table))


if __name__ == "__main__":
    main()

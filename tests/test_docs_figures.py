"""Published figures are regenerable and agree with the results files they come from.

Two rules of DESIGN.md ("Claims are regenerable"), checked on README.md, RESULTS.md and
docs/*.md:

* every section with a table of measured numbers names the command that produces them (a
  ``python benchmarks/...``, ``idvae ...``, ``bash benchmarks/...`` or ``make bench`` line),
  or says plainly that its figures are historical and not regenerable;
* key figures, quoted in the docs, equal the values of the results files their commands
  write (``benchmarks/results.json``, ``results/models/``, ``results/levers/``,
  ``results/bench/``).
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
from pathlib import Path

import pytest

from benchmark_scripts import benchmark_module

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", ROOT / "RESULTS.md", *(ROOT / "docs").glob("*.md")])
BENCH = ROOT / "benchmarks" / "results.json"
MODELS = ROOT / "results" / "models"

COMMAND = re.compile(
    r"(python benchmarks/\w+\.py|(?:^|[\s`(])idvae (?:reproduce|demo|mle|stability|fit)\b"
    r"|bash benchmarks/|make bench|python -m pytest|pytest )",
    re.MULTILINE,
)
HISTORICAL = re.compile(r"historical, not regenerable", re.IGNORECASE)
# a table cell that is a measured figure: numbers with units, spreads and ratios only
# ("0.923", "5 / 6", "0.880 (0.091)", "16.6 s / 10.9 s", "**0.995**"), with a decimal or a "/"
FIGURE = re.compile(r"[\d.,\s/()×%–~≈*+\-s]*\d[\d.,\s/()×%–~≈*+\-s]*")


def _squeezed(text: str) -> str:
    """``text`` with every run of whitespace one space, so that a sentence matches across
    the line breaks of a wrapped paragraph."""
    return re.sub(r"\s+", " ", text)


def _read_squeezed(path: str) -> str:
    """The file at ``path`` (relative to the repository) read and squeezed."""
    return _squeezed((ROOT / path).read_text())


def _heading_lines(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line index, level, title) of every Markdown heading outside fenced code."""
    heads, fenced = [], False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^(#{1,4}) (.*)", line)):
            heads.append((i, len(m.group(1)), m.group(2)))
    return heads


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each section; a body includes its sub-sections' text."""
    lines = text.splitlines()
    heads = _heading_lines(lines)
    out = []
    for k, (i, level, title) in enumerate(heads):
        end = next((j for j, lv, _ in heads[k + 1 :] if lv <= level), len(lines))
        out.append((title, "\n".join(lines[i:end])))
    return out


def _own_text(body: str) -> str:
    """The text of a section before its first sub-section."""
    lines = body.splitlines()
    heads = _heading_lines(lines)
    return "\n".join(lines[: heads[1][0]]) if len(heads) > 1 else body


def _measured_rows(text: str) -> list[str]:
    """Table rows (not header or rule) with a cell, after the first, that is a figure."""
    rows = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")][1:]
        if any(FIGURE.fullmatch(c) and ("." in c or "/" in c) for c in cells):
            rows.append(line)
    return rows


def _enclosing(sections: list[tuple[str, str]], index: int) -> list[str]:
    """The bodies of section ``index`` and of every section that contains it, the document's
    title section (``# ...``) excepted: a command elsewhere in the page does not count."""
    body = sections[index][1]
    return [b for _, b in sections if body in b and not re.match(r"# ", b) or b == body]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_results_table_names_its_command_or_is_marked_historical(path: Path) -> None:
    sections = _sections(path.read_text())
    missing = []
    for index, (title, body) in enumerate(sections):
        if not _measured_rows(_own_text(body)):
            continue
        context = _enclosing(sections, index)
        if not any(COMMAND.search(b) or HISTORICAL.search(b) for b in context):
            missing.append(title)
    assert not missing, f"{path.name}: sections with results tables and no command: {missing}"


def test_the_section_check_can_fail() -> None:
    doc = "# A\n\n## Measured\n\n| seed | 0 |\n|---|---|\n| acc | 0.93 |\n"
    sections = _sections(doc)
    measured = [t for t, b in sections if _measured_rows(_own_text(b))]
    assert measured == ["Measured"]
    assert not any(COMMAND.search(b) for _, b in sections)
    assert COMMAND.search(doc + "\n```bash\npython benchmarks/x.py\n```\n")


# --------------------------------------------------------------- figures vs results files


def _bench(path: str) -> float:
    value = json.loads(BENCH.read_text())
    for key in path.split("/"):
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def _table_row(doc: str, first_cell: str) -> list[float]:
    """The numeric cells of the table row whose first cell is ``first_cell``."""
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return [float(c) for c in cells[1:] if re.fullmatch(r"-?\d+\.\d+", c)]
    raise AssertionError(f"no table row starting with {first_cell!r}")


def test_mfcvae_and_ivae_per_seed_tables_equal_results_models_summary() -> None:
    doc = (ROOT / "docs" / "models_mfcvae_ivae.md").read_text()
    summary = json.loads((MODELS / "summary.json").read_text())
    assert "python benchmarks/models_recovery.py" in doc
    rows = {
        '`facet_init="joint"`': summary["mfcvae-joint"]["min_facet_accuracy"],
        '`facet_init="blocks"`': summary["mfcvae-blocks"]["min_facet_accuracy"],
        "30 epochs (`ivae-30`)": summary["ivae-30"]["weak_mcc"],
        "80 epochs (`ivae-80`)": summary["ivae-80"]["weak_mcc"],
        "defaults (`ivae-default`)": summary["ivae-default"]["weak_mcc"],
    }
    for first_cell, values in rows.items():
        assert _table_row(doc, first_cell) == pytest.approx(values, abs=5e-4), first_cell
    defaults = summary["ivae-default"]
    assert f"| {defaults['n_weak_mcc_at_least_0.9']} / {len(defaults['seeds'])} |" in doc


def test_metrics_speed_table_equals_benchmarks_results_json() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    speed = doc[doc.index("## Speed") :]
    for case, prefix in (("dist_aff_l2_J3_m2", "J = 3, m = 2"), ("dist_aff_l2_J25_m10", "J = 25")):
        figures = _bench(f"metrics/figures/{case}")
        for kind, label in (
            ("affine_image", "(permuted)"),
            ("perturbed_1pct", "perturbed by 1 %"),
            ("independent", "independent"),
        ):
            row = next(r for r in speed.splitlines() if prefix in r and label in r)
            seconds, value = (c.strip() for c in row.strip("|").split("|")[1:3])
            assert float(seconds) == figures[f"{kind}_seconds"], row
            assert float(value) == figures[f"{kind}_distance"], row
    mcc = _bench("metrics/figures/mcc_out_of_sample_n100000_m10")
    for key in ("cca_pearson", "affine_pearson", "none_pearson", "cca_spearman"):
        assert f"{mcc[key + '_seconds']}" in speed, key


@pytest.mark.parametrize(
    ("doc", "figure", "fmt"),
    [
        # README: vectorised seeds vs separate fits (issue 10: "equal up to float rounding")
        ("README.md", "vectorize/figures/table2_n10/dz_vs_separate/1", "{}"),
        ("README.md", "vectorize/figures/table2_n10/latent_scale/1", "at scale {}"),
        ("README.md", "vectorize/figures/table2_n10/dz_1ulp_vs_separate/1", "by {}"),
        ("README.md", "vectorize/figures/table2_n10/dz_2threads_vs_separate/1", "by {}"),
        ("README.md", "vectorize/figures/table2_n2/dz_vs_separate/1", "{}"),
        ("README.md", "vectorize/figures/table2_n2/latent_scale/1", "scale {}"),
        ("README.md", "vectorize/figures/table2_n2/ratio_vectorized_to_one", "{}"),
        ("README.md", "vectorize/figures/table2_n10/ratio_vectorized_to_one", "{}"),
        ("README.md", "exact/figures/n_unique", "{}/50"),
        ("README.md", "exact/figures/n_unique_f2", "{}/50"),
        # RESULTS.md benchmarks table
        ("RESULTS.md", "models/figures/vade_784-500-500-2000-10_batch100_s_per_epoch", "{:.1f} s"),
        ("RESULTS.md", "models/figures/mfcvae_arch1_J25_batch100_s_per_epoch", "MFCVAE {:.1f}"),
        ("RESULTS.md", "models/figures/ivae_arch1_batch512_s_per_epoch", "/ {:.1f} s"),
        ("RESULTS.md", "exact/figures/mle_study_50_s", "{} s"),
        ("RESULTS.md", "experiments/figures/vectorized_10_over_1", "{}×"),
        ("RESULTS.md", "experiments/figures/demo_weak_mcc_between", "{:.3f}"),
        # docs/models.md, docs/models_mfcvae_ivae.md: seconds per epoch on MNIST
        (
            "docs/models.md",
            "models/figures/vade_784-500-500-2000-10_batch100_s_per_epoch",
            "{:.1f} s",
        ),
        (
            "docs/models.md",
            "models/figures/vade_784-500-500-2000-10_batch512_s_per_epoch",
            "{:.1f} s",
        ),
        (
            "docs/models_mfcvae_ivae.md",
            "models/figures/mfcvae_arch1_J25_batch100_s_per_epoch",
            "| {} s",
        ),
        (
            "docs/models_mfcvae_ivae.md",
            "models/figures/mfcvae_arch1_J25_batch512_s_per_epoch",
            "| {} s",
        ),
        ("docs/models_mfcvae_ivae.md", "models/figures/ivae_arch1_batch100_s_per_epoch", "| {} s"),
        ("docs/models_mfcvae_ivae.md", "models/figures/ivae_arch1_batch512_s_per_epoch", "| {} s"),
        # docs/exact.md: performance
        ("docs/exact.md", "exact/figures/closed_form_speedup", "| {}× faster"),
        ("docs/exact.md", "exact/figures/closed_form_speedup_one_call_each", "| {}× ("),
        ("docs/exact.md", "exact/figures/warm_search_s", "| {} s:"),
        ("docs/exact.md", "exact/figures/mle_study_50_s", "| {} s /"),
        ("docs/exact.md", "exact/figures/mle_study_50_f2_s", "/ {:.1f} s |"),
        # docs/experiments.md: the experiments benchmark
        ("docs/experiments.md", "experiments/figures/vectorized_10_seeds_seconds", "{} s vs"),
        ("docs/experiments.md", "experiments/figures/vectorized_1_seed_seconds", "vs {} s ="),
        ("docs/experiments.md", "experiments/figures/vectorized_10_over_1", "= {}x"),
        ("docs/experiments.md", "experiments/figures/stability_jobs1_seconds", "| {} s vs"),
        ("docs/experiments.md", "experiments/figures/stability_jobs2_seconds", "vs {} s (the pool"),
        # docs/identify.md: structure recovery
        (
            "docs/identify.md",
            "identify/figures/structure_recovery_em_(2,3)_overlapping/2000",
            "{} runs",
        ),
        # docs/identify.md: Thm E.1 error vs n
        (
            "docs/identify.md",
            "identify/figures/disentangle_error_vs_n/1000/em_pair_median",
            "{:.3f}",
        ),
        (
            "docs/identify.md",
            "identify/figures/disentangle_error_vs_n/100000/moments_joint_median",
            "{}",
        ),
    ],
)
def test_quoted_benchmark_figures_equal_results_json(doc: str, figure: str, fmt: str) -> None:
    text = (ROOT / doc).read_text()
    expected = fmt.format(_bench(figure))
    assert expected in text, f"{doc} does not quote {figure} = {expected!r}"


@pytest.mark.parametrize(
    ("doc", "results", "keys"),
    [
        ("docs/models.md", "results/levers/default/seed1.json", ("weak_mcc", "accuracy")),
        ("docs/models.md", "results/levers/default/seed5.json", ("weak_mcc", "accuracy")),
        ("docs/models.md", "results/levers/default/seed0.json", ("weak_mcc", "accuracy")),
        ("docs/models.md", "results/models/vade-m5/seed0.json", ("weak_mcc", "accuracy")),
        (
            "docs/models.md",
            "results/levers/vae50-iw10-refit-full/seed1.json",
            ("weak_mcc", "accuracy"),
        ),
        (
            "docs/identify.md",
            "results/models/vade-canonical/seed1.json",
            ("weak_mcc", "strong_mcc_raw", "strong_mcc_canonical"),
        ),
    ],
)
def test_per_fit_figures_equal_their_result_files(doc: str, results: str, keys: tuple) -> None:
    text = (ROOT / doc).read_text()
    row = json.loads((ROOT / results).read_text())
    folder = str(Path(results).parent)
    assert folder in text, f"{doc} does not name {folder}"
    for key in keys:
        assert f"{row[key]:.3f}" in text, f"{doc}: {key} of {results} is {row[key]:.3f}"


def _between(experiment: str, study: str) -> dict:
    data = json.loads((ROOT / "results" / experiment / "results.json").read_text())
    return data["studies"][study]["result"]["summary"]["between_runs"]


@pytest.mark.parametrize(
    ("experiment", "study", "label"),
    [
        ("table2", "parallelograms-1", "parallelograms-1"),
        ("table2", "parallelograms-2", "parallelograms-2"),
        ("table2", "parallelograms-3", "parallelograms-3"),
        ("pinwheel", "pinwheel", "pinwheel"),
    ],
)
def test_vade_table2_rows_equal_the_reproduce_results(experiment, study, label) -> None:
    doc = (ROOT / "docs" / "vade_table2.md").read_text()
    row = next(r for r in doc.splitlines() if r.startswith(f"| {label} |"))
    summary = _between(experiment, study)
    for key in ("strong_mcc", "weak_mcc", "canonical_mcc", "dist_aff"):
        mean, std = summary[key]["mean"], summary[key]["std"]
        assert f"{mean:.3f} ({std:.3f})" in row, (label, key)
    defaults = _between(f"{experiment}-defaults", study)
    figure = f"{defaults['weak_mcc']['mean']:.3f} / {defaults['dist_aff']['mean']:.3f}"
    assert figure in row, (label, "defaults")


def test_demo_row_of_experiments_equals_results_demo() -> None:
    doc = (ROOT / "docs" / "experiments.md").read_text()
    data = json.loads((ROOT / "results" / "demo" / "results.json").read_text())
    between = data["summary"]["between_runs"]
    figure = (
        f"{between['weak_mcc']['mean']:.3f} / {between['strong_mcc']['mean']:.3f} / "
        f"{between['dist_aff']['mean']:.3f} in {data['wall_seconds']:.0f} s"
    )
    assert figure in doc


def test_results_demo_row_equals_results_demo() -> None:
    """RESULTS.md's demo row and its oracle sentence equal results/demo/results.json, which
    was written by the demo as it stands (VaDE's defaults)."""
    from idvae.experiments.demo import demo_estimator

    data = json.loads((ROOT / "results" / "demo" / "results.json").read_text())
    assert data["demo"]["estimator"] == demo_estimator().to_dict()
    summary, reference = data["summary"], data["oracle_reference"]
    between, truth = summary["between_runs"], summary["to_truth"]
    modes = data["stability"]["modes"]["modes"]
    row = (
        f"| `idvae demo` | **{between['weak_mcc']['mean']:.3f}** | "
        f"{between['strong_mcc']['mean']:.3f} | {between['dist_aff']['mean']:.3f} | "
        f"**{truth['weak_mcc']['mean']:.3f}** | {summary['clustering']['accuracy']['mean']:.3f} | "
        f"{len(modes)} (all {summary['n_runs']} runs) | {data['wall_seconds']:.0f} s |"
    )
    text = (ROOT / "RESULTS.md").read_text()
    assert row in text
    best = max(m["heldout_elbo_max"] for m in modes)
    flat = _squeezed(text)
    assert (
        f"keeps weak MCC {reference['weak_mcc_to_truth']:.3f} to the truth and reaches a "
        f"held-out ELBO {reference['heldout_elbo'] - best:.3f} nats per sample above the runs' "
        f"mode ({reference['heldout_elbo']:.3f} against {best:.3f})"
    ) in flat
    assert truth["weak_mcc"]["max"] < 0.95 and reference["heldout_elbo"] > best  # "not met"
    weak = (between["weak_mcc"]["mean"], truth["weak_mcc"]["mean"])
    quoted = {
        "README.md": f"agree (weak MCC {weak[0]:.3f}) but match the truth only to {weak[1]:.3f}",
        "docs/recovery_levers.md": f"agree (weak MCC {weak[0]:.3f}) and match the truth to "
        f"{weak[1]:.3f}",
    }
    for doc, sentence in quoted.items():
        assert sentence in _read_squeezed(doc), doc


def test_vade_restarts_rows_equal_results_levers() -> None:
    doc = (ROOT / "docs" / "vade_restarts.md").read_text()
    summary = json.loads((ROOT / "results" / "levers" / "summary.json").read_text())
    rows = [r for r in doc.splitlines() if re.match(r"\| `[\w+.-]+` \|", r)]
    assert len(rows) >= 5
    for row in rows:
        config = row.split("`")[1]
        fit = json.loads((ROOT / "results" / "levers" / config / "seed0.json").read_text())
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert cells[2:6] == [
            f"{fit['weak_mcc']:.3f}",
            f"{fit['accuracy']:.3f}",
            f"{fit['score']:.2f}",
            f"{summary[config]['recovered']} / {summary[config]['fits']}",
        ], config


def _mfcvae_rows(config: str) -> dict[int, dict]:
    """The stored fits of one configuration of ``levers_mfcvae.py``, by seed."""
    folder = ROOT / "results" / "levers" / "mfcvae" / config
    return {r["seed"]: r for r in map(json.loads, (p.read_text() for p in folder.glob("*.json")))}


def test_mfcvae_facet_initialisation_table_equals_results_levers_mfcvae() -> None:
    from idvae.experiments.recovery.summary import is_recovered
    from idvae.models.mfcvae import MFCVAE
    from idvae.models.mfcvae._factor import MIXTURE_LOGLIK_TOLERANCE

    doc = (ROOT / "docs" / "models_mfcvae_ivae.md").read_text()
    text = " ".join(doc.split())
    summary = json.loads((ROOT / "results" / "levers" / "mfcvae" / "summary.json").read_text())
    assert "python benchmarks/levers_mfcvae.py" in doc
    assert set(summary) == {
        "joint-gmm3", "joint-gmm10", "mixture-gmm10", "mixture-ae50", "mixture-vae15",
        "mixture-e60", "mixture-refit10", "mixture-refit5", "refit5-net64", "refit5-net32",
        "refit5-basis", "refit3-basis", "refit5-basis-e60",
    }  # fmt: skip
    for config, row in summary.items():
        line = next(r for r in doc.splitlines() if r.startswith(f"| `{config}`"))
        cells = [c.strip() for c in line.strip("|").split("|")[1:]]
        assert cells == [
            str(row["facets_at_0.9"]),
            str(row["facets_at_0.9_seeds_0_7"]),
            str(row["facets_at_0.9_seeds_0_15"]),
            str(row["facets_at_0.9_seeds_16_31"]),
            str(row["recovered"]),
            f"{row['median_facet_accuracy']:.3f}",
            f"{row['median_weak_mcc']:.3f}",
        ], config
        assert row["fits"] == 32, config
    # the configuration called the defaults is what MFCVAE() does
    defaults = MFCVAE()
    assert (defaults.facet_init, defaults._gmm_restarts()) == ("mixture", 10)
    assert (defaults.prior_refit_every, defaults.pretrain) == (5, "ae")
    assert (defaults.refit_basis, defaults.epochs) == (True, 60)
    refit = summary["mixture-refit5"]
    assert f"the defaults from then until 2026-12-03) | {refit['facets_at_0.9']} |" in doc
    assert (
        f"Refitting every 5 epochs reaches {refit['facets_at_0.9']} of 32 and recovers "
        f"{refit['recovered']} (against {summary['mixture-gmm10']['facets_at_0.9']} and "
        f"{summary['mixture-gmm10']['recovered']} without)" in text
    )
    assert (
        f"at {refit['median_seconds']:.1f} s per fit against "
        f"{summary['mixture-gmm10']['median_seconds']:.1f} s" in text
    )
    assert refit["facets_at_0.9_seeds_0_7"] == 6  # the rate test until the third round
    rows = {c: _mfcvae_rows(c) for c in ("mixture-gmm10", "mixture-refit5")}
    for seed in (24, 27, 3, 6):
        before, after = (rows[c][seed]["facet_accuracy"] for c in rows)
        assert f"{before:.3f} → {after:.3f}" in text, seed
    small = summary["refit5-net64"]
    assert (small["facets_at_0.9_seeds_0_7"], small["facets_at_0.9_seeds_16_31"]) == (7, 13)
    assert f"it passes 13 against {refit['facets_at_0.9_seeds_16_31']}" in text
    assert f"it recovers {small['recovered']} of 32 against {refit['recovered']}" in text
    assert f"(median weak MCC {small['median_weak_mcc']:.3f};" in text
    net64 = _mfcvae_rows("refit5-net64")
    assert f"seeds 3 and 7 reach {net64[3]['weak_mcc']:.3f} and {net64[7]['weak_mcc']:.3f})" in text
    lost = [
        s
        for s in range(16, 32)
        if net64[s]["facet_accuracy"] < 0.9 <= rows["mixture-refit5"][s]["facet_accuracy"]
    ]
    lost += [s for s in range(8) if net64[s]["facet_accuracy"] < 0.9]
    assert (
        f"on seeds {', '.join(map(str, sorted(lost)[:-1]))} and {sorted(lost)[-1]} the latent"
        in text
    )
    weak = [rows["mixture-refit5"][seed]["weak_mcc"] for seed in (3, 7)]
    assert f"(weak MCC {weak[0]:.3f} and {weak[1]:.3f} with the refits)" in text
    new, old = summary["mixture-gmm10"], summary["joint-gmm3"]
    assert f"(14 of 16 each), against {old['facets_at_0.9_seeds_16_31']} for" in text
    assert new["facets_at_0.9_seeds_16_31"] == summary["joint-gmm10"]["facets_at_0.9_seeds_16_31"]
    assert new["facets_at_0.9_seeds_16_31"] == 14
    assert f"It still misses {new['fits'] - new['facets_at_0.9']} of the 32" in text
    results = " ".join((ROOT / "RESULTS.md").read_text().split())
    assert (
        f"{new['facets_at_0.9']} of 32 instances of the rate test's model reach per-facet "
        f"accuracy ≥ 0.9, against {old['facets_at_0.9']} for the joint route before"
    ) in results
    refits = f"(`prior_refit_every=5`: {refit['facets_at_0.9']} of the 32, and"
    assert f"{refits} {refit['recovered']} recovered against {new['recovered']})" in results
    assert f"within {MIXTURE_LOGLIK_TOLERANCE} nats per point" in text
    runs = ROOT / "results" / "recovery" / "runs"
    records = {
        (p.parent.name, p.stem): json.loads(p.read_text())
        for p in runs.glob("facets-*/mfcvae-*.json")
    }
    recovered = {
        method: sorted(i for (i, m), r in records.items() if m == method and is_recovered(r))
        for method in ("mfcvae-mixture", "mfcvae-default")
    }
    assert recovered["mfcvae-mixture"] == recovered["mfcvae-default"]
    assert records["facets-0", "mfcvae-default"]["fingerprint"]["params"]["prior_refit_every"] == 5
    both = ", ".join(recovered["mfcvae-mixture"])
    assert f"recovers the same two as the joint route before ({both};" in text
    missed = [r["weak_mcc"] for (i, m), r in records.items() if m == "mfcvae-mixture"
              and i not in recovered["mfcvae-mixture"]]  # fmt: skip
    assert f"(weak MCC {min(missed):.2f}–{max(missed):.2f})" in text


def test_mfcvae_third_round_figures_equal_results_levers_mfcvae() -> None:
    """The basis refits (docs/models_mfcvae_ivae.md, "A third round"): the held-out table,
    the seeds named and the rate test's count at issue 8's bar."""
    text = " ".join((ROOT / "docs" / "models_mfcvae_ivae.md").read_text().split())
    summary = json.loads((ROOT / "results" / "levers" / "mfcvae" / "summary.json").read_text())
    configs = ("mixture-refit5", "refit5-basis", "refit5-basis-e60")
    rows = {c: _mfcvae_rows(c) for c in (*configs, "refit3-basis")}
    for config in configs:
        held = summary[config]["held_out"]
        assert held["fits"] == 32 and set(rows[config]) == set(range(64)), config
        both = held["recovered"] + summary[config]["recovered"]
        assert f"| {held['facets_at_0.9']} | {held['recovered']} | {both} |" in text, config
    new = rows["refit5-basis-e60"]
    recovered = sum(r["recovered"] for r in new.values())
    assert f"{recovered} of 64 instances recovered ({round(100 * recovered / 64)}%)" in text
    before, basis = rows["mixture-refit5"], rows["refit5-basis"]
    named = ", ".join(f"{before[s]['facet_accuracy']:.3f}" for s in (12, 18, 35))
    assert f"{named} and {before[49]['facet_accuracy']:.3f} to" in text
    named = ", ".join(f"{basis[s]['facet_accuracy']:.3f}" for s in (12, 18, 35))
    assert f"{named} and {basis[49]['facet_accuracy']:.3f};" in text
    losses = [
        max(before[s][k] - rows[c][s][k] for c in configs[1:] for s in range(64))
        for k in ("facet_accuracy", "weak_mcc")
    ]
    assert f"more than {losses[0]:.3f} of per-facet accuracy or {losses[1]:.3f} of weak" in text
    assert "(0.393)" in text and round(rows["refit3-basis"][7]["facet_accuracy"], 3) == 0.393
    for seed in (2, 40):
        assert f"{basis[seed]['facet_accuracy']:.3f} → {new[seed]['facet_accuracy']:.3f}" in text
    timing = json.loads((ROOT / "results" / "levers" / "mfcvae" / "fit_time.json").read_text())
    seconds = [timing[c]["median_seconds"] for c in ("refit5-basis-e60", "mixture-refit5")]
    assert timing["mixture-refit5"]["seeds"] == [0, 1, 2, 3, 4]
    assert f"median of {seconds[0]:.1f} s against {seconds[1]:.1f} s for" in text
    at_bar = sum(new[s]["recovered"] for s in range(8))
    missed = [s for s in range(8) if not new[s]["recovered"]]
    assert (
        f"seeds 0–7 give {at_bar} of 8 (seeds {missed[0]}, {missed[1]} and {missed[2]} miss)"
        in text
    )
    assert sum(new[s]["facet_accuracy"] >= 0.9 for s in range(8)) == 7  # the rate test
    assert f"seed 7 (weak MCC {new[7]['weak_mcc']:.3f}, per-facet accuracy " in text
    assert f"{new[7]['facet_accuracy']:.3f}), seed 38 ({new[38]['facet_accuracy']:.3f})" in text
    assert f"seed 44 (weak MCC {new[44]['weak_mcc']:.3f})" in text
    assert f"(weak MCC {new[3]['weak_mcc']:.3f}; accuracy {new[6]['facet_accuracy']:.3f})" in text
    # RESULTS.md: the recovery benchmark's facet instances with the new defaults
    runs = ROOT / "results" / "recovery" / "runs"
    run = {
        (i, m): json.loads((runs / i / f"{m}.json").read_text())
        for i in ("facets-0", "facets-3")
        for m in ("mfcvae-default", "mfcvae-refit5")
    }
    params = run["facets-0", "mfcvae-default"]["fingerprint"]["params"]
    assert (params["refit_basis"], params["epochs"]) == (True, 60)
    results = " ".join((ROOT / "RESULTS.md").read_text().split())
    old, now = (run["facets-3", m]["accuracy"] for m in ("mfcvae-refit5", "mfcvae-default"))
    assert f"on facets-3 ({old:.3f} to {now:.3f})" in results
    weak = [run[i, "mfcvae-default"]["weak_mcc"] for i in ("facets-3", "facets-0")]
    assert f"(weak MCC {weak[0]:.3f}), as does facets-0's ({weak[1]:.3f})" in results
    total = sum(r["recovered"] for r in rows["mixture-refit5"].values())
    assert f"59 of 64 instances of that model recovered against {total}" in results
    assert recovered == 59


def test_mfcvae_and_ivae_ranges_equal_results_models_summary() -> None:
    doc = (ROOT / "docs" / "models_mfcvae_ivae.md").read_text()
    summary = json.loads((MODELS / "summary.json").read_text())
    for config in ("mfcvae-joint", "mfcvae-blocks"):
        weak = summary[config]["weak_mcc"]
        assert f"{min(weak):.3f}–{max(weak):.3f}" in doc, config


# ------------------------------------- docs/vectorize.md vs results/bench/vectorize_*.json

VECTORIZE_DOC = ROOT / "docs" / "vectorize.md"


def _bench_record(name: str) -> dict:
    """A results file of benchmarks/bench_vectorize.py or vectorize_divergence.py; the doc
    must name it and the command that writes it."""
    record = json.loads((ROOT / "results" / "bench" / f"{name}.json").read_text())
    text = " ".join(VECTORIZE_DOC.read_text().split())
    assert f"results/bench/{name}.json" in text, f"docs/vectorize.md does not name {name}.json"
    assert record["command"] in text, f"docs/vectorize.md does not quote {record['command']!r}"
    return record


def _cells(doc: str, first_cell: str) -> list[str]:
    row = next(r for r in doc.splitlines() if r.startswith(f"| {first_cell} |"))
    return [c.strip() for c in row.strip().strip("|").split("|")][1:]


def _sci(value: float, digits: int) -> str:
    """``1.5e-4`` for 0.000154 at 2 digits (no zero-padded exponent, as the doc writes it)."""
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def test_vectorize_profile_table_equals_results_bench() -> None:
    doc = VECTORIZE_DOC.read_text()
    text = " ".join(doc.split())
    record = _bench_record("vectorize_profile")
    figures = record["figures"]
    for label, key in (
        ("1 seed (`ModuleStepper`, `mm`/`addmm`)", "one_seed"),
        ("10 seeds stacked (`StackStepper`, `bmm`)", "seeds_10"),
    ):
        f = figures[key]
        assert _cells(doc, label) == [
            f"{f['wall_ms_per_step']} ms",
            f"{f['matmul_ms_per_step']} ms",
            f"{round(100 * f['matmul_share_of_op_time'])} %",
        ], label
    derived = figures["derived"]
    for fmt, key in (
        ("at {} GFLOP/s (1 seed)", "matmul_gflop_per_s_one_seed"),
        ("and {} GFLOP/s (10 seeds stacked)", "matmul_gflop_per_s_seeds_10"),
        ("{} MFLOP per seed and step", "matmul_mflop_per_seed_step"),
        ("alone take {}x a whole step of one seed", "seeds_10_matmul_over_one_seed_wall"),
        ("under ~{}x one seed per step", "seeds_10_matmul_over_one_seed_wall"),
        ("({} ms: the fused Adam", "non_matmul_ms_per_step_seeds_10"),
        ("single seed's {} ms", "non_matmul_ms_per_step_one_seed"),
        ("a fraction of those {} ms", "non_matmul_ms_per_step_seeds_10"),
    ):
        assert fmt.format(derived[key]) in text, key
    machine = record["machine"]
    assert (
        f"load average {machine['load_average_1min_start']} at the start and "
        f"{machine['load_average_1min_end']} at the end" in text
    )
    assert record["date"] in text
    # the conclusion: the stacked matmuls alone exceed 3x one seed's step
    assert derived["seeds_10_matmul_over_one_seed_wall"] > 3
    assert "**is not reachable here**" in text


@pytest.mark.parametrize(("threads", "name"), [(1, "1thread"), (2, "2threads")])
def test_vectorize_timing_rows_equal_results_bench(threads: int, name: str) -> None:
    doc = VECTORIZE_DOC.read_text()
    record = _bench_record(f"vectorize_timing_{name}")
    f = record["figures"]
    assert f["torch_threads"] == threads
    cells = _cells(doc, f"`{record['command']}`")
    assert cells == [
        str(threads),
        f"{f['one_seed_median_s']} s",
        f"{f['seeds_10_median_s']} s",
        f"{f['ratio_of_medians']}x",
    ]
    machine = record["machine"]
    load = f"{machine['load_average_1min_start']}–{machine['load_average_1min_end']}"
    assert load in doc, load


def test_vectorize_first_step_figures_equal_results_bench() -> None:
    text = " ".join(VECTORIZE_DOC.read_text().split())
    step = _bench_record("vectorize_divergence_elbo_n10_samples1000_first_step")["figures"][
        "first_step"
    ]
    worst = step["worst"]
    assert worst["name"] == "decoder.net.4.weight"  # "the 512 x 512 decoder weight"
    assert f"differ by at most {_sci(step['max_dgrad'], 2)}" in text
    assert (
        f"gradient {_sci(worst['grad_single'], 3)} (single) vs "
        f"{_sci(worst['grad_batched'], 3)} (batched)" in text
    )
    assert f"moves {_sci(worst['dparam'], 2)} further in one step at lr {step['lr']:g}" in text


def test_vectorize_divergence_table_equals_results_bench() -> None:
    doc = VECTORIZE_DOC.read_text()
    epochs = _bench_record("vectorize_divergence_elbo_n10_samples5000_seeds0-1")["figures"][
        "epochs"
    ]
    for seed, res in epochs.items():
        cells = _cells(doc, f"{seed} ({res['latent_scale']:.3g})")
        assert cells == [
            f"{res[run]['dz']:.3g}" for run in ("vectorized", "ulp_first", "ulp_all", "threads_2")
        ], seed


def test_vectorize_defaults_divergence_equals_results_bench() -> None:
    text = " ".join(VECTORIZE_DOC.read_text().split())
    res = _bench_record("vectorize_divergence_defaults_n10_samples1000_seeds0")["figures"][
        "epochs"
    ]["0"]
    dz = {
        run: f"{res[run]['dz']:.2g}" for run in ("vectorized", "ulp_first", "ulp_all", "threads_2")
    }
    assert (
        f"latents {dz['vectorized']} from the separate fit when vectorised, {dz['ulp_first']} "
        f"and {dz['ulp_all']} when nudged by 1 ulp (first weight matrix / every parameter), "
        f"{dz['threads_2']} on 2 threads, at latent scale {res['latent_scale']:.3g}" in text
    )
    runs = [res[run]["dloss_per_epoch"][25] for run in dz]
    assert f"part by {min(runs):.0f}–{max(runs):.0f} nats at the first refit (epoch 26)" in text


def test_vectorize_loss_differences_grow_over_pretraining() -> None:
    text = " ".join(VECTORIZE_DOC.read_text().split())
    assert "is larger at the end of pretraining than after its first epoch" in text
    for name in (
        "vectorize_divergence_elbo_n10_samples5000_seeds0-1",
        "vectorize_divergence_defaults_n10_samples1000_seeds0",
    ):
        record = _bench_record(name)
        pretrain = record["arguments"]["pretrain_epochs"]
        for seed, res in record["figures"]["epochs"].items():
            for run in ("vectorized", "ulp_first", "ulp_all", "threads_2"):
                dloss = res[run]["dloss_per_epoch"]
                assert dloss[pretrain - 1] > dloss[0], (name, seed, run)


def test_vectorize_ratio_range_covers_the_timing_and_benchmark_ratios() -> None:
    text = " ".join(VECTORIZE_DOC.read_text().split())
    ratios = [
        _bench_record(f"vectorize_timing_{name}")["figures"]["ratio_of_medians"]
        for name in ("1thread", "2threads")
    ] + [_bench(f"vectorize/figures/table2_n{n}/ratio_vectorized_to_one") for n in (2, 10)]
    assert "the ratio is 8–9x" in text
    assert all(8 <= r <= 9 for r in ratios), ratios


def test_vectorize_sensitive_seed_figures_equal_results_bench() -> None:
    text = " ".join(VECTORIZE_DOC.read_text().split())
    record = _bench_record("vectorize_divergence_elbo_n10_samples5000_seeds0-1")
    res = record["figures"]["epochs"]["1"]
    runs = ("vectorized", "ulp_first", "ulp_all", "threads_2")
    dz = [res[run]["dz"] for run in runs]
    assert f"latents by {min(dz):.3g} to {max(dz):.3g}" in text
    # epoch 16: the GaussianMixture initialisation after 15 pretraining epochs
    assert record["arguments"]["pretrain_epochs"] == 15
    at_init = [res[run]["dloss_per_epoch"][15] for run in runs]
    assert f"part by {min(at_init):.1f}–{max(at_init):.1f} nats at the GaussianMixture" in text
    # the earlier benchmark record quoted beside it (benchmarks/results.json)
    n10 = "vectorize/figures/table2_n10"
    earlier = (
        f'"{_bench(n10 + "/dz_vs_separate/1")} at latent scale {_bench(n10 + "/latent_scale/0")}"'
    )
    assert earlier in text


@pytest.mark.parametrize("doc", ["README.md", "RESULTS.md"])
def test_vectorize_cost_in_readme_and_results_equals_results_bench(doc: str) -> None:
    text = " ".join((ROOT / doc).read_text().split())
    profile = json.loads((ROOT / "results" / "bench" / "vectorize_profile.json").read_text())
    ratio = profile["figures"]["derived"]["seeds_10_matmul_over_one_seed_wall"]
    assert f"matmuls alone take {ratio}×" in text, f"{doc} does not quote {ratio}×"
    if doc == "RESULTS.md":
        timing = json.loads(
            (ROOT / "results" / "bench" / "vectorize_timing_1thread.json").read_text()
        )
        assert f"{timing['figures']['ratio_of_medians']}×" in text


@pytest.mark.parametrize("study", ["vade-mnist", "vade-mnist-elbo"])
def test_vade_mnist_rows_and_summary_equal_the_stability_file(study: str) -> None:
    """RESULTS.md's per-seed tables of VaDE on MNIST (its defaults, its ELBO pipeline) and
    their medians equal results/vade-mnist/<study>/stability.json."""
    result = json.loads((ROOT / "results" / "vade-mnist" / study / "stability.json").read_text())
    text = " ".join((ROOT / "RESULTS.md").read_text().split())
    for run, prior in zip(result["runs"], result["priors"], strict=True):
        c, weights = run["clustering"], prior["weights"]
        row = (
            f"| {run['run_id']} | {c['accuracy']:.3f} | {c['nmi']:.3f} | {c['ari']:.3f} | "
            f"−{-run['heldout_elbo']:.2f} | {max(weights):.3f} | "
            f"{sum(w > 0.01 for w in weights)} |"
        )
        assert row in text, row
    clustering = result["summary"]["clustering"]
    accuracy = clustering["accuracy"]
    assert f"**Median accuracy {accuracy['median']:.3f}** (range {accuracy['min']:.3f}–" in text
    assert f"{accuracy['max']:.3f}" in text
    nmi, ari = clustering["nmi"]["median"], clustering["ari"]["median"]
    assert f"NMI median {nmi:.3f}, ARI median {ari:.3f}" in text
    weak = result["summary"]["between_runs"]["weak_mcc"]
    assert f"{weak['mean']:.3f} on average ({weak['min']:.3f}–{weak['max']:.3f}" in text


def test_vade_mnist_defaults_figures_equal_their_files() -> None:
    """The defaults' study: mean and std, modes, ELBO order, times and the README line."""
    folder = ROOT / "results" / "vade-mnist"
    result = json.loads((folder / "vade-mnist" / "stability.json").read_text())
    text = " ".join((ROOT / "RESULTS.md").read_text().split())
    accuracy = result["summary"]["clustering"]["accuracy"]
    assert f"mean {accuracy['mean']:.3f}, std {accuracy['std']:.3f})" in text
    assert len(result["modes"]["modes"]) == 10  # "each of the 10 runs is a mode of its own"
    assert all(sum(w > 0.01 for w in p["weights"]) == 10 for p in result["priors"])
    runs = sorted(result["runs"], key=lambda r: r["heldout_elbo"])
    best, worst = runs[-1], runs[:2]
    assert best["clustering"]["accuracy"] == accuracy["max"]
    assert f"(run {best['run_id']}, −{-best['heldout_elbo']:.2f}) is the best clustering" in text
    assert {r["clustering"]["accuracy"] for r in worst} == set(
        sorted(r["clustering"]["accuracy"] for r in runs)[:2]
    )
    assert all(r["vectorized"] for r in result["runs"])
    seconds = [r["fit_seconds"] for r in result["runs"]]
    assert f"{min(seconds):.1f}–{max(seconds):.1f} s per seed" in text
    log = (folder / "run.log").read_text()
    wall = float(log.split("nothing selected (")[1].split(" s)")[0])
    assert f"{wall:.0f} s for the whole study ({wall} s in the log)" in text
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (
        f"median accuracy is {accuracy['median']:.3f} ({accuracy['min']:.3f}–"
        f"{accuracy['max']:.3f})" in readme
    )
    assert f"(weak MCC {result['summary']['between_runs']['weak_mcc']['mean']:.3f}" in readme


def test_vade_mnist_epoch_times_equal_their_file() -> None:
    text = (ROOT / "RESULTS.md").read_text()
    epochs = json.loads((ROOT / "results" / "gpu" / "vade_mnist_epochs.json").read_text())
    stacked, one = epochs["defaults-10"]["epochs_s"], epochs["defaults-1"]["epochs_s"]
    assert f"a pretraining epoch {stacked[0]:.2f} s" in text
    assert f"{min(stacked[1:]):.2f}–{max(stacked[1:]):.2f} s" in text
    assert f"{min(one[1:]):.2f}–{max(one[1:]):.2f} s per training epoch" in text
    assert f"{epochs['defaults-10']['wall_s']:.1f} s for the 3-epoch fit" in text


def test_gpu_check_rerun_figures_equal_their_file() -> None:
    """The 2026-12-04 column of RESULTS.md's GPU table equals gpu_check_2026-12-04.json."""
    figures = json.loads((ROOT / "results" / "gpu" / "gpu_check_2026-12-04.json").read_text())
    text = " ".join((ROOT / "RESULTS.md").read_text().split())
    assert figures["device"] == "NVIDIA H200" and not figures["quick"]
    b100, b512 = figures["mnist_epochs"]["batch100"], figures["mnist_epochs"]["batch512"]
    for b in (b100, b512):
        assert (
            f"{b['median_epoch_s']:.2f} s ({b['min_epoch_s']:.2f}–{b['max_epoch_s']:.2f} s)" in text
        )
        assert b["fixed_cost_s"] > b["median_epoch_s"]  # "still more than one epoch"
    assert f"{b100['fixed_cost_s']} s / {b512['fixed_cost_s']} s |" in text
    v = figures["vectorized_seeds"]
    assert v["seeds_vectorized"] == v["n_seeds"] == 10
    assert (
        f"{v['vectorized_s']} s vs {v['one_seed_s']} s, **{v['ratio_vectorized_to_one']}×**" in text
    )


@pytest.mark.parametrize("decoder", ["8-8", "16-16"])
def test_multistart_rows_equal_results_levers_multistart(decoder: str) -> None:
    """The fourth round's table in docs/recovery_levers.md equals the files of
    ``benchmarks/levers_multistart.py``."""
    folder = ROOT / "results" / "levers" / "multistart" / f"dec{decoder}-r8"
    runs = [json.loads((folder / f"seed{s}.json").read_text()) for s in range(10)]
    picked = " | ".join(
        f"{r['picked']['weak_mcc']:.3f}/{r['picked']['accuracy']:.3f}" for r in runs
    )
    held = " | ".join(f"{r['picked']['bound_held_out']:.2f}" for r in runs)
    found = " | ".join("yes" if r["any_recovered"] else "no" for r in runs)
    n_picked = sum(r["picked"]["recovered"] for r in runs)
    n_any = sum(r["any_recovered"] for r in runs)
    text = (ROOT / "docs" / "recovery_levers.md").read_text()
    label = "picked restart: weak MCC / accuracy" if decoder == "8-8" else "picked restart"
    assert f"| {decoder}, {label} | {picked} | {n_picked}/10 |" in text
    assert f"| {decoder}, its held-out bound | {held} | |" in text
    assert f"| {decoder}, some restart recovers | {found} | {n_any}/10 |" in text
    median_wall = sorted(r["wall_s"] for r in runs)[4:6]
    assert f"{sum(median_wall) / 2:.0f} s ({decoder})" in text


def test_multistart_long_training_figures_equal_their_files() -> None:
    folder = ROOT / "results" / "levers" / "multistart" / "dec16-16-r8-e400"
    runs = {s: json.loads((folder / f"seed{s}.json").read_text()) for s in (0, 6, 2, 5)}
    text = (ROOT / "docs" / "recovery_levers.md").read_text()
    assert all(r["epochs"] == 400 for r in runs.values())
    recovered = sorted(q["bound_held_out"] for q in runs[0]["rows"] if q["recovered"])
    assert f"reach {recovered[0]:.3f} and {recovered[1]:.3f}" in text
    picked = runs[0]["picked"]
    assert not picked["recovered"]
    folded = f"{picked['weak_mcc']:.3f}) reaches {picked['bound_held_out']:.3f}"
    assert f"(weak MCC\n      {folded}" in text
    six = [q["bound_held_out"] for q in runs[6]["rows"] if q["recovered"]]
    assert f"recovered restarts reach {min(six):.3f}–{max(six):.3f}" in text
    assert f"weak MCC {runs[6]['picked']['weak_mcc']:.3f} reaches" in text
    assert not any(runs[s]["any_recovered"] for s in (2, 5))


def test_multistart_sample_size_figures_equal_their_files() -> None:
    folder = ROOT / "results" / "levers" / "multistart" / "dec16-16-r8-n20000"
    runs = {s: json.loads((folder / f"seed{s}.json").read_text()) for s in (0, 2, 6)}
    text = (ROOT / "docs" / "recovery_levers.md").read_text()
    assert all(r["n_samples"] == 20000 for r in runs.values())
    for seed in (0, 6):
        picked = runs[seed]["picked"]
        assert picked["recovered"]
        assert f"{picked['bound_held_out']:.3f}" in text
        assert f"{picked['weak_mcc']:.3f}" in text and f"{picked['accuracy']:.3f}" in text
        folded = max(
            (q for q in runs[seed]["rows"] if not q["recovered"]),
            key=lambda q: q["bound_held_out"],
        )
        assert f"({folded['weak_mcc']:.3f}) reaches {folded['bound_held_out']:.3f}" in text
    assert not runs[2]["any_recovered"]
    assert f"best weak MCC {max(q['weak_mcc'] for q in runs[2]['rows']):.3f}" in text


def test_table3_figures_equal_results_table3() -> None:
    """Each finished study's row in RESULTS.md equals results/table3/results.json, and the
    run times quoted equal the runs' result.json."""
    payload = json.loads((ROOT / "results" / "table3" / "results.json").read_text())
    text = (ROOT / "RESULTS.md").read_text()
    n_runs = payload["n_runs"]
    n_pairs = n_runs * (n_runs - 1) // 2
    stores = ROOT / "results" / "table3"
    counts = {
        d.name: len(list(d.glob("runs/*/result.json"))) for d in stores.iterdir() if d.is_dir()
    }
    # every complete study is scored in results.json, and every study is complete
    assert set(payload["studies"]) == {k for k, c in counts.items() if c == n_runs}
    assert f"**{sum(counts.values())} of 90 runs done**" in text
    flat = _squeezed(text)
    for key in counts:
        if key.startswith("arch1-mfcvae"):  # their times are quoted run by run below
            continue
        times = [
            json.loads(r.read_text())["fit_seconds"]
            for r in (stores / key).glob("runs/*/result.json")
        ]
        model = {"mfcvae": "MFCVAE", "ivae": "iVAE"}[key.split("-")[1]]
        activation = {"relu": "ReLU", "leaky_relu": "LeakyReLU"}[key.split("-")[2]]
        label = model if model == "iVAE" else f"{model} {activation}"
        assert f"{label} {min(times):.0f}–{max(times):.0f} s each" in flat.replace(
            "iVAE: ", "iVAE "
        ), key
    for study in payload["studies"].values():
        result = study["result"]
        between, clustering = result["summary"]["between_runs"], result["summary"]["clustering"]
        assert between["weak_mcc"]["n"] == n_pairs
        cells = [f"{study['title']} ({n_runs} runs, {n_pairs} pairs)"]
        for metric in ("weak_mcc", "strong_mcc", "dist_aff"):
            cells.append(f"{between[metric]['mean']:.3f} ({between[metric]['std']:.3f})")
        if clustering:
            cells.append(f"{clustering['nmi']['mean']:.3f} / {clustering['ari']['mean']:.3f}")
        else:  # iVAE: no clusters
            cells.append("—")
        sizes = [mode["size"] for mode in result["modes"]["modes"]]
        cells.append(f"{len(sizes)} ({', '.join(str(size) for size in sizes)})")
        assert "| " + " | ".join(cells) + " |" in text, study["title"]
        weak, strong = study["paper"]["weak_mcc"], study["paper"]["strong_mcc"]
        paper = f"| paper | {weak[0]:.2f} ({weak[1]:.2f}) | {strong[0]:.2f} ({strong[1]:.2f}) |"
        assert "| " + " | ".join(cells) + " |\n" + paper in text, study["title"]

    def seconds(study: str, run: int) -> float:
        path = stores / study / "runs" / f"{run:03d}" / "result.json"
        return json.loads(path.read_text())["fit_seconds"]

    first = [seconds("arch1-mfcvae-leaky_relu", i) for i in range(3)]
    flat = text.replace("\n    ", " ")
    assert "took " + ", ".join(f"{s:,.0f} s" for s in first[:2]) in flat
    assert f"and {first[2]:,.0f} s" in flat
    assert f"{seconds('arch1-mfcvae-relu', 0):,.0f} s per run" in flat
    readme = _read_squeezed("README.md")
    assert f"all {len(payload['studies'])} of its 9 studies" in readme
    assert f"({sum(counts.values())} of 90 runs)" in readme
    for study in payload["studies"].values():
        between = study["result"]["summary"]["between_runs"]
        weak, strong = between["weak_mcc"]["mean"], between["strong_mcc"]["mean"]
        assert f"{weak:.3f} / {strong:.3f}" in readme or (
            f"weak MCC {weak:.3f}, strong {strong:.3f}" in readme
        ), study["title"]


def test_fifth_round_figures_equal_their_results() -> None:
    """Findings 23-24 of docs/recovery_levers.md equal decoder_precision.json and the
    polish configurations' rows of results/levers/summary.json."""
    text = (ROOT / "docs" / "recovery_levers.md").read_text()
    levers = ROOT / "results" / "levers"
    precision = json.loads((levers / "decoder_precision.json").read_text())
    for width in (16, 64):
        rows = [r for r in precision.values() if r["width"] == width]
        cells = []
        for key in ("excess_nats_adam", "excess_nats_lbfgs"):
            values = [r[key] for r in rows]
            low, high = f"{min(values):.3f}", f"{max(values):.3f}"
            span = f"{low}–{high}" if min(values) >= 0 or max(values) >= 0 else f"{low} to {high}"
            cells.append(f"{statistics.median(values):.3f} ({span}) nats".replace("-", "−"))
        assert f"| {width}-{width} | {cells[0]} | {cells[1]} |" in text, width
    summary = json.loads((levers / "summary.json").read_text())
    for config, label in (
        ("vae50-iw10-refit-full", "nothing (`vae50-iw10-refit-full`, above)"),
        ("vae50-iw10-refit-full-polish2000", "`polish_iterations=2000`"),
        ("dec16-vae50-iw10-refit-full", "`decoder_sizes=(16, 16)` (above)"),
        ("dec8-vae50-iw10-refit-full", "`decoder_sizes=(8, 8)`"),
        ("dec8-vae50-iw10-refit-full-polish2000", "`decoder_sizes=(8, 8), polish_iterations=2000`"),
    ):
        row = summary[config]
        assert (
            f"| {label} | {row['recovered']}/{row['fits']} | {row['median_weak_mcc']:.3f} | "
            f"{row['median_accuracy']:.3f} | {row['median_seconds']:.1f} |"
        ) in text, config
    row = summary["dec16-vae50-iw10-refit-full-polish2000"]
    assert (
        f"| **{row['recovered']}/{row['fits']}** | {row['median_weak_mcc']:.3f} | "
        f"{row['median_accuracy']:.3f} | {row['median_seconds']:.1f} |"
    ) in text
    results = (ROOT / "RESULTS.md").read_text()
    assert (
        f"polish_iterations=2000` (full-batch L-BFGS at the end) | {row['recovered']}/"
        f"{row['fits']} | {row['median_weak_mcc']:.3f} | {row['median_accuracy']:.3f} |"
    ) in results
    flat = _squeezed(results)
    assert f"findings 23–24) recovers {row['recovered']}/{row['fits']}." in flat
    assert f"(`polish_iterations`, {row['median_seconds']:.0f} s per fit here;" in flat


def test_sixth_round_figures_equal_their_results() -> None:
    """Findings 26-27 of docs/recovery_levers.md equal the fits of results/levers and the
    portfolio file, and the claims made about them hold in those files."""
    text = _read_squeezed("docs/recovery_levers.md")
    levers = ROOT / "results" / "levers"
    vae, truth = "dec16-vae50-iw10-refit-full-polish2000", "truth-dec16-iw10-refit-full-polish2000"
    isomap = "dec16-isomap50-iw10-refit-full-polish2000"
    fits = {
        c: [json.loads((levers / c / f"seed{s}.json").read_text()) for s in range(10)]
        for c in (vae, truth, isomap)
    }
    true_loglik = json.loads((levers / "true_loglik.json").read_text())

    def cells(config: str, sep: str) -> str:
        return sep.join(f"{f['weak_mcc']:.3f}/{f['accuracy']:.3f}" for f in fits[config])

    def count(config: str) -> int:
        return sum(f["recovered"] for f in fits[config])

    def difference(key: str) -> str:
        values = [a[key] - b[key] for a, b in zip(fits[truth], fits[vae], strict=True)]
        return " | ".join(f"{v:+.3f}".replace("-", "−") for v in values)

    assert f"| VAE start: weak MCC / accuracy | {cells(vae, ' | ')} | {count(vae)}/10 |" in text
    assert f"| truth start (oracle) | {cells(truth, ' | ')} | {count(truth)}/10 |" in text
    assert f"(nats per point) | {difference('loglik_held_out')} | |" in text
    assert f"| training log-likelihood, the same | {difference('loglik_train')} | |" in text
    over = {
        c: [f["loglik_train"] - true_loglik[str(s)]["true_train"] for s, f in enumerate(fits[c])]
        for c in (vae, truth)
    }
    under = [
        true_loglik[str(s)]["true_held_out"] - f["loglik_held_out"]
        for s, f in enumerate(fits[truth])
    ]
    assert f"(by {min(over[truth]):.3f}–{max(over[truth]):.3f} nats per point," in text
    assert f"held-out points (by {min(under):.3f}–{max(under):.3f})" in text
    assert [s for s, v in enumerate(over[vae]) if v <= 0] == [
        2
    ]  # "except the folded fit of seed 2"
    assert fits[vae][2]["weak_mcc"] < 0.8
    assert (
        f"recovers {count(isomap)}/10 (weak MCC / accuracy per seed: {cells(isomap, ', ')})" in text
    )
    portfolio = json.loads((levers / "portfolio" / f"{vae}+{isomap}.json").read_text())
    counts = portfolio["recovered"]
    for label, key in (
        ("the training bound (`score`, K = 10)", "score"),
        ("the training log-likelihood (1,000 draws)", "loglik_train"),
        ("the held-out log-likelihood (3,000 fresh points)", "loglik_held_out"),
        (
            "the better of the two in hindsight (uses the truth; not a method)",
            "any (hindsight, uses the truth)",
        ),
    ):
        assert f"| {label} | {counts[key]}/10 |" in text, key
    seed2 = portfolio["seeds"]["2"]["fits"]
    assert f"{seed2[vae]['score']:.3f}" == f"{seed2[isomap]['score']:.3f}" == "10.109"
    assert f"held-out log-likelihood ({seed2[vae]['loglik_held_out']:.3f})" in text
    assert f"Isomap fit's ({seed2[isomap]['loglik_held_out']:.3f})" in text
    assert f"truth start's ({fits[truth][2]['loglik_held_out']:.3f})" in text
    both = "dec16-starts-vae+isomap50-iw10-refit-full-polish2000"
    single = [json.loads((levers / both / f"seed{s}.json").read_text()) for s in range(10)]
    row = json.loads((levers / "summary.json").read_text())[both]
    per_seed = ", ".join(f"{f['weak_mcc']:.3f}/{f['accuracy']:.3f}" for f in single)
    assert (
        f"recovers **{row['recovered']}/10** (median weak MCC {row['median_weak_mcc']:.3f}, "
        f"median accuracy {row['median_accuracy']:.3f}; per seed {per_seed})"
    ) in text
    missed = [s for s, f in enumerate(single) if not f["recovered"]]
    assert f"It misses only seeds {missed[0]} and {missed[1]}." in text and len(missed) == 2
    assert f"reaches weak MCC {single[2]['weak_mcc']:.3f}, and has the higher bound" in text
    assert single[2]["weak_mcc"] != fits[vae][2]["weak_mcc"]  # so the Isomap trial was kept
    assert f"a median of {row['median_seconds']:.0f} s per fit here" in text
    cheap = "dec16-starts-vae+isomap30-e60-iw10-refit-full-polish1000"
    half = json.loads((levers / "summary.json").read_text())[cheap]
    half_missed = [
        s
        for s in range(10)
        if not json.loads((levers / cheap / f"seed{s}.json").read_text())["recovered"]
    ]
    assert (
        f"recover **{half['recovered']}/10** (median weak MCC {half['median_weak_mcc']:.3f}, "
        f"median accuracy {half['median_accuracy']:.3f}), missing the same seeds "
        f"{half_missed[0]} and {half_missed[1]}, at a median of {half['median_seconds']:.0f} s"
    ) in text
    assert half_missed == missed
    timing = json.loads((levers / "fit_time.json").read_text())
    quiet, default = timing[cheap], timing["vae50-iw10-refit-full"]
    assert (
        f"times this cheaper fit at a median of {quiet['median_seconds']:.1f} s "
        f"({quiet['min_seconds']:.1f}–{quiet['max_seconds']:.1f}) on one torch thread, against "
        f"{default['median_seconds']:.1f} s for VaDE's defaults"
    ) in text
    assert quiet["median_seconds"] < 60
    assert (
        f"cheaper fit takes a median of {quiet['median_seconds']:.1f} s on one torch thread, "
        f"against {default['median_seconds']:.1f} s for the defaults"
    ) in _read_squeezed("RESULTS.md")
    control = json.loads((levers / "summary.json").read_text())[
        "dec16-vae50-n_init2-iw10-refit-full-polish2000"
    ]
    assert (
        "each polished, `python benchmarks/levers_vade.py dec16-vae50-n_init2-iw10-refit-full-"
        f"polish2000 --workers 1`), recovers {control['recovered']}/10"
    ) in text
    is_oracle = benchmark_module("levers_vade").is_oracle
    seed4 = [
        fit["weak_mcc"]
        for p in levers.glob("*/seed4.json")
        if not is_oracle(p.parent.name)
        for fit in [json.loads(p.read_text())]
        if "weak_mcc" in fit
    ]
    for path in (levers / "multistart").glob("*/seed4.json"):
        seed4 += [r["weak_mcc"] for r in json.loads(path.read_text())["rows"]]
    assert f"stays at weak MCC {max(seed4):.3f} or below" in text
    results = _read_squeezed("RESULTS.md")
    assert f"recover {row['recovered']}/10, above the floor on these seeds" in results
    assert f"it costs a median of {row['median_seconds']:.0f} s per fit here" in results
    assert (
        f"it also recovers {half['recovered']}/10 ({half['median_seconds']:.0f} s per fit in the "
        "same conditions)"
    ) in results
    readme = _read_squeezed("README.md")
    assert f"polish_iterations=2000)`) recover {row['recovered']} of the seeds 0–9" in readme
    assert (
        f"the higher bound kept | **{row['recovered']}/10** | {row['median_weak_mcc']:.3f} | "
        f"{row['median_accuracy']:.3f} |"
    ) in results
    assert f"({len(benchmark_module('levers_vade').CONFIGS)} in `levers_vade.py`" in results


def test_two_start_benchmark_progress_equals_its_run_files() -> None:
    """RESULTS.md's progress of the two-start methods on the recovery benchmark equals
    results/recovery/progress.json, and that file equals their run files today."""
    from idvae.experiments.recovery import paired_progress

    out = ROOT / "results" / "recovery"
    runs = out / "runs"
    text = _read_squeezed("RESULTS.md")
    progress = json.loads((out / "progress.json").read_text())
    assert "python benchmarks/recovery_progress.py vade-two-starts-polished vade-two-starts" in text
    for method in ("vade-two-starts-polished", "vade-two-starts"):
        assert progress[method] == paired_progress(out, method), method  # not stale
    pooled, random = (
        progress["vade-two-starts-polished"]["families"][f] for f in ("all", "random")
    )
    assert (
        f"`vade-two-starts-polished` has run on {pooled['n']} of the 54 instances so far: it "
        f"recovers {pooled['recovered']} of them, `vade-default` {pooled['reference_recovered']} "
        f"of the same; on the {random['n']} random instances among them {random['recovered']} "
        f"against {random['reference_recovered']}."
    ) in text
    assert all(i.startswith("seed-") for i in pooled["gained"] + pooled["lost"])
    results = json.loads((out / "results.json").read_text())
    pooled, random = (progress["vade-two-starts"]["families"][f] for f in ("all", "random"))
    assert pooled["n"] == 54 and random["n"] == 40
    assert (
        f"`vade-two-starts` has run on all 54 instances (its row above): it recovers "
        f"{pooled['recovered']} of them, `vade-default` {pooled['reference_recovered']}; on the "
        f"40 random instances {random['recovered']} against {random['reference_recovered']}. "
        f"It gains {', '.join(pooled['gained'][:-1])} and {pooled['gained'][-1]} and loses "
        f"{' and '.join(pooled['lost'])}."
    ) in text
    sizes = {spec["id"]: spec["n_samples"] for spec in results["instances"]}
    points = [n for i, n in sizes.items() if i.startswith("random-")]
    medians = {
        m: results["summary"][m]["median_seconds"] for m in ("vade-two-starts", "vade-default")
    }
    assert (
        f"It took {random['seconds'][0]:.0f}–{random['seconds'][1]:.0f} s per random instance "
        f"({min(points):,}–{max(points):,} points; a median of {medians['vade-two-starts']:.0f} s "
        f"per instance against the defaults' {medians['vade-default']:.1f} s)"
    ) in text
    assert (
        f"on the random instances it has gained {len(random['gained'])} "
        f"({random['gained'][0]}, " in text
    )
    assert f"and lost {len(random['lost'])} ({random['lost'][0]}, " in text
    for i in random["gained"] + random["lost"]:
        mine, default = (
            json.loads((runs / i / f"{m}.json").read_text())
            for m in ("vade-two-starts", "vade-default")
        )
        pair = (
            f"{i}, weak MCC {mine['weak_mcc']:.3f} / accuracy {mine['accuracy']:.3f} against "
            f"{default['weak_mcc']:.3f} / {default['accuracy']:.3f}"
        )
        assert pair in text.replace("against the defaults' ", "against "), i
    # README: "on the recovery benchmark's random instances no more than the defaults"
    readme = _read_squeezed("README.md")
    assert (
        f"on the recovery benchmark's random instances {random['recovered']} of 40 against the "
        f"defaults' {random['reference_recovered']}"
    ) in readme
    assert random["recovered"] <= random["reference_recovered"]
    polished = {
        s: json.loads((runs / f"seed-{s}" / "vade-two-starts-polished.json").read_text())
        for s in range(10)
    }
    levers = ROOT / "results" / "levers" / "dec16-starts-vae+isomap50-iw10-refit-full-polish2000"
    for s, record in polished.items():
        fit = json.loads((levers / f"seed{s}.json").read_text())
        assert abs(record["weak_mcc"] - fit["weak_mcc"]) < 1e-3, s


def test_polished_restarts_figures_equal_results_multistart() -> None:
    """Finding 25 of docs/recovery_levers.md equals its multistart result files."""
    folder = ROOT / "results" / "levers" / "multistart" / "dec16-16-r4-p2000-ll"
    rows = [json.loads((folder / f"seed{s}.json").read_text()) for s in range(10)]
    text = (ROOT / "docs" / "recovery_levers.md").read_text().replace("\n   ", " ")
    text = re.sub(r" +", " ", text)
    picked = sum(r["picked"]["recovered"] for r in rows)
    by_train = sum(r["picked_by_train"]["recovered"] for r in rows)
    anyone = [r["seed"] for r in rows if r["any_recovered"]]
    assert f"The pick recovers {picked}/10, the best training bound {by_train}/10" in text
    assert f"{len(anyone)}/10 (seeds {', '.join(map(str, anyone))})" in text
    seed0 = rows[0]["picked"]
    assert f"(weak MCC {seed0['weak_mcc']:.4f}, accuracy {seed0['accuracy']:.3f})" in text
    seed3 = rows[3]
    recovered = [q["loglik_held_out"] for q in seed3["rows"] if q["recovered"]]
    assert f"(accuracy {seed3['picked']['accuracy']:.3f})" in text
    assert f"log-likelihood, {seed3['picked']['loglik_held_out']:.3f}," in text
    assert f"{min(recovered):.3f}–{max(recovered):.3f}" in text
    assert f"median of {statistics.median(r['wall_s'] for r in rows):.0f} s" in text


def test_named_lever_rows_equal_results_levers_summary() -> None:
    """Every table row of docs/recovery_levers.md that names one configuration of
    results/levers/summary.json quotes its recovered count, medians and time."""
    summary = json.loads((ROOT / "results" / "levers" / "summary.json").read_text())
    row = re.compile(r"\|(.*?)\| \**(\d+)/(\d+)\** \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|")
    checked = 0
    for line in (ROOT / "docs" / "recovery_levers.md").read_text().splitlines():
        match = row.match(line)
        if match is None:
            continue
        names = [c for c in re.findall(r"`([^`]+)`", match.group(1)) if c in summary]
        if len(names) != 1:
            continue
        s = summary[names[0]]
        assert match.groups()[1:] == (
            str(s["recovered"]),
            str(s["fits"]),
            f"{s['median_weak_mcc']:.3f}",
            f"{s['median_accuracy']:.3f}",
            f"{s['median_seconds']:.1f}",
        ), names[0]
        checked += 1
    assert checked >= 20


def test_oracle_lever_fits_start_at_the_truth() -> None:
    """Configurations named as oracles are fitted from the true z: the ones whose fits
    record their start (every fit since that field exists) started near the truth."""
    module = benchmark_module("levers_vade")
    oracles = [c for c in module.CONFIGS if module.is_oracle(c)]
    assert "n20000-truth-dec16-iw10-full" in oracles and "truth-elbo" in oracles
    assert not module.is_oracle("dec16-vae50-iw10-refit-full")
    for config in ("n20000-truth-dec16-iw10-full", "truth-dec16-iw10-refit-full-polish2000"):
        for path in sorted((ROOT / "results" / "levers" / config).glob("seed*.json")):
            assert json.loads(path.read_text())["start_weak_mcc"] > 0.99, path


def test_seventh_round_figures_equal_their_results() -> None:
    """Finding 28 of docs/recovery_levers.md (5,000 points) equals the fits of results/levers."""
    text = _read_squeezed("docs/recovery_levers.md")
    levers = ROOT / "results" / "levers"
    default = "n5000-vae50-iw10-refit-full"
    two = "n5000-dec16-starts-vae+isomap30-e60-iw10-refit-full-polish1000"
    truth = "n5000-truth-dec16-e60-iw10-refit-full-polish1000"
    fits = {
        c: [json.loads((levers / c / f"seed{s}.json").read_text()) for s in range(10)]
        for c in (default, two, truth)
    }
    for config, rows in fits.items():
        cells = " | ".join(f"{f['weak_mcc']:.3f}/{f['accuracy']:.3f}" for f in rows)
        assert f"`{config}`) | {cells} | {sum(f['recovered'] for f in rows)}/10 |" in text
    counts = {c: sum(f["recovered"] for f in rows) for c, rows in fits.items()}
    assert counts[two] == 5 and counts[default] == 4 and counts[truth] == 9
    assert [s for s, f in enumerate(fits[truth]) if not f["recovered"]] == [8]
    lost = [s for s in (0, 1, 2) if not fits[two][s]["recovered"]]
    assert lost == [0, 1, 2]  # "It loses seed 0 ..., seed 1 and seed 2"

    def diff(key: str, s: int) -> float:
        return fits[truth][s][key] - fits[two][s][key]

    held = [diff("loglik_held_out", s) for s in range(10)]
    assert [s for s, v in enumerate(held) if v <= 0] == [8]
    quoted = ", ".join(f"{v:+.3f}".replace("-", "−") for v in held)
    assert f"but seed 8, by {quoted} nats per point for seeds 0–9" in text
    assert diff("score", 1) < 0 and diff("score", 4) < 0
    assert held[1] > 0 and held[4] > 0
    scores = [f"{diff('score', s):+.3f}".replace("-", "−") for s in (1, 4)]
    assert f"lower training bound ({scores[0]} and {scores[1]} nats per point)" in text


RECOVERY_LABELS = {
    "pca": "PCA",
    "pca+gmm": "PCA + GaussianMixture",
    "ae+gmm": "autoencoder + GaussianMixture",
    "ivae-oracle": "iVAE given the true u",
}


def test_recovery_table_equals_results_recovery() -> None:
    """Every method row of RESULTS.md's recovery table equals the summary of
    results/recovery/results.json: counts per family, where PCA fails, where the ceiling
    is met, and the medians."""
    summary = json.loads((ROOT / "results" / "recovery" / "results.json").read_text())["summary"]
    lines = (ROOT / "RESULTS.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| method | recovered |"))
    table = lines[header + 2 : header + 2 + len(summary) + 1]
    assert not table[-1].startswith("|")  # one row per method, no more
    for method, entry in summary.items():
        label = RECOVERY_LABELS.get(method, f"`{method}`")
        rows = [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in table]
        [cells] = [r[1:] for r in rows if r[0] == label or r[0].startswith(label + " (")]

        def count(e: dict | None, cell: str) -> str:
            if not e or not e["n"]:
                return "—"
            rate = f" ({e['n_recovered'] / e['n']:.0%})" if cell.endswith("%)") else ""
            return f"{e['n_recovered']}/{e['n']}{rate}"

        def median(key: str, entry: dict = entry) -> str:
            return "—" if entry.get(key) is None else f"{entry[key]:.3f}"

        families = entry["families"]
        parts = [entry, entry["ceiling_met"], None if method == "pca" else entry["baseline_fails"]]
        parts += [families.get(f) for f in ("seeds", "random", "facets")]
        expected = [count(e, cell) for e, cell in zip(parts, cells[:6], strict=True)]
        keys = ("weak_mcc", "accuracy", "strong_mcc", "dist_aff")
        expected += [median(f"median_{key}") for key in keys]
        assert cells == expected, method


def test_truth_start_oracle_figures_equal_results_recovery() -> None:
    """RESULTS.md's split of the defaults' misses into the search's and the fit's equals
    results/recovery (the oracle ``vade-truth-start`` against ``vade-default``)."""
    from idvae.experiments.recovery import is_recovered, paired_progress

    out = ROOT / "results" / "recovery"
    text = _read_squeezed("RESULTS.md")
    progress = json.loads((out / "progress.json").read_text())["vade-truth-start"]
    assert progress == paired_progress(out, "vade-truth-start")
    pooled = progress["families"]["all"]
    assert pooled["n"] == 54 and not pooled["lost"]
    results = json.loads((out / "results.json").read_text())
    rows = {(r["instance"], r["method"]): r for r in results["rows"]}
    ids = [spec["id"] for spec in results["instances"]]  # seeds, random, facets
    feasible = [i for i in ids if is_recovered(rows[(i, "true-posterior")])]
    kept = [i for i in feasible if is_recovered(rows[(i, "vade-truth-start")])]
    default = [i for i in feasible if is_recovered(rows[(i, "vade-default")])]
    lost = [i for i in feasible if i not in kept]
    assert (
        f"It recovers {pooled['recovered']}/54, that is {len(kept)} of the {len(feasible)} "
        f"instances the ceiling recovers, against the defaults' {pooled['reference_recovered']}."
    ) in text
    gained = sorted(pooled["gained"])
    assert f"and {len(gained)} more: {', '.join(gained[:-1])} and {gained[-1]}." in text
    misses = len(feasible) - len(default)
    assert (
        f"of the defaults' {misses} misses among the {len(feasible)} feasible instances, "
        f"{len(kept) - len(default)} are the search's"
    ) in text
    assert f"and {len(lost)} are the fit's" in text
    assert f"on {', '.join(lost[:-1])} and {lost[-1]}." in text


def _truth_start_stage(stage: str) -> dict:
    path = ROOT / "results" / "levers" / "truth_start" / stage / "results.json"
    return json.loads(path.read_text())


def test_truth_start_bounds_and_levers_equal_results_levers_truth_start() -> None:
    """docs/recovery_levers.md's eighth round quotes results/levers/truth_start: the
    per-instance tables are what ``benchmarks/truth_start.py`` makes of the results files,
    and the counts read from them are recomputed here."""
    module = benchmark_module("truth_start")
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)
    bounds, levers = _truth_start_stage("bounds"), _truth_start_stage("levers")
    assert [s["id"] for s in bounds["instances"]] == [
        s["id"] for s in module.feasible_misses(module.DEFAULT, ROOT / "results" / "recovery")
    ]
    for row in module.bound_table(bounds["rows"], bounds["instances"]):
        assert row in doc.splitlines()
    for row in module.levers_table(bounds["rows"] + levers["rows"], levers["instances"]):
        assert row in doc.splitlines()
    rows = {(r["instance"], r["method"]): r for r in bounds["rows"]}
    ids = [s["id"] for s in bounds["instances"]]

    def gain(i: str, bound: str) -> float:
        return rows[(i, module.TRUTH_START)][bound] - rows[(i, module.DEFAULT)][bound]

    higher = [i for i in ids if gain(i, "log_likelihood") > 0]
    clear = [i for i in ids if gain(i, "log_likelihood") > 0.1]
    agree = [i for i in ids if (gain(i, "score") > 0) == (gain(i, "log_likelihood") > 0)]
    assert (
        f"higher at the truth start's fit on {len(higher)} of the {len(ids)} instances, "
        f"and by more than 0.1 nats per point on {len(clear)}: {', '.join(clear[:-1])} and "
        f"{clear[-1]} (up to {max(gain(i, 'log_likelihood') for i in ids):.2f}"
    ) in text
    assert f"On the other {len(ids) - len(clear)} the objective" in text
    low, high = (f(gain(i, "log_likelihood") for i in clear) for f in (min, max))
    assert f"(by {low:.2f}–{high:.2f} nats per point)" in text
    assert f"agree on which fit is higher on {len(agree)} of the {len(ids)} instances" in text
    truth_starts = sum(module.is_recovered(rows[(i, module.TRUTH_START)]) for i in ids)
    defaults = sum(module.is_recovered(rows[(i, module.DEFAULT)]) for i in ids)
    assert f"recovers the same {truth_starts} of {len(ids)} as in the benchmark" in text
    assert "over the line here (" in text and f"): {defaults} of {len(ids)}." in text
    lever_rows = {(r["instance"], r["method"]): r for r in levers["rows"]}
    for instance in ("random-09", "facets-3"):
        figures = [rows[(instance, module.TRUTH_START)]["score"]] + [
            lever_rows[(instance, name)]["score"] for name in ("truth-e300", "truth-polish1000")
        ]
        assert "{:.2f} to {:.2f}".format(*figures[:2]) in text
        assert f"and {figures[2]:.2f}" in text


def test_truth_start_figures_in_results_md_equal_results_levers_truth_start() -> None:
    """RESULTS.md's and README's summary of the eighth round equal results/levers/truth_start."""
    module = benchmark_module("truth_start")
    text = _read_squeezed("RESULTS.md")
    bounds, levers = _truth_start_stage("bounds"), _truth_start_stage("levers")
    rows = {(r["instance"], r["method"]): r for r in bounds["rows"]}
    ids = [s["id"] for s in bounds["instances"]]
    gains = [
        rows[(i, module.TRUTH_START)]["log_likelihood"]
        - rows[(i, module.DEFAULT)]["log_likelihood"]
        for i in ids
    ]
    higher, clear = sum(g > 0 for g in gains), sum(g > 0.1 for g in gains)
    assert f"higher likelihood on {higher} of the {len(ids)}, by more than 0.1 on {clear}:" in text
    assert f"On the other {len(ids) - clear} the objective" in text
    readme = _read_squeezed("README.md")
    assert f"On {clear} of the {len(ids)} the truth start's fit has the clearly higher" in readme
    best = max(summary["n_recovered"] for summary in levers["summary"].values())
    assert f"keeps the truth on more than {best}." in text
    assert f"On the {len(levers['instances'])} fit misses" in text
    starts = _truth_start_stage("starts")
    best_alone = max(starts["summary"][n]["n_recovered"] for n in module.STARTS)
    pooled = bounds["rows"] + starts["rows"]
    portfolio = module.portfolio_table(pooled, starts["instances"])
    kept = sum(row.endswith("| yes |") for row in portfolio)
    assert f"recover at most {best_alone} of the {len(ids)} each" in text
    assert f"the most likely fit kept, recovers {kept} of the {len(ids)}:" in text


def test_truth_start_portfolio_equals_results_levers_truth_start() -> None:
    """The eighth round's starts table and counts equal results/levers/truth_start: each
    start alone, the portfolio kept by either bound, and how often the truth start's fit is
    clearly more likely than every start's."""
    module = benchmark_module("truth_start")
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)
    bounds, starts = _truth_start_stage("bounds"), _truth_start_stage("starts")
    pooled = bounds["rows"] + starts["rows"]
    for row in module.portfolio_table(pooled, starts["instances"]):
        assert row in doc.splitlines()
    rows = {(r["instance"], r["method"]): r for r in pooled}
    ids = [s["id"] for s in starts["instances"]]
    names = [module.DEFAULT, *module.STARTS]
    alone = [starts["summary"][n]["n_recovered"] for n in module.STARTS]
    assert (
        f"the AE start recovers {alone[0]} of the {len(ids)}, the Isomap start {alone[1]} and "
        f"the spectral start {alone[2]};"
    ) in text
    some = [i for i in ids if any(module.is_recovered(rows[(i, n)]) for n in names)]
    assert f"some start recovers on {len(some)} ({', '.join(some[:-1])} and {some[-1]})" in text

    def kept(bound: str) -> int:
        picks = [max(names, key=lambda n, i=i: rows[(i, n)][bound]) for i in ids]
        return sum(module.is_recovered(rows[(i, n)]) for i, n in zip(ids, picks, strict=True))

    assert f"highest tight likelihood kept, recover {kept('log_likelihood')};" in text
    assert f"kept by the training bound, {kept('score')} (" in text
    assert f"reach the truth's basin on {len(some)} of the {len(ids)} at most" in text
    assert (
        f"keeps a recovering fit on {kept('log_likelihood')} ({kept('score')} when kept by the "
        "training bound)"
    ) in text
    truth = [i for i in ids if module.is_recovered(rows[(i, module.TRUTH_START)])]
    clear = [
        i
        for i in truth
        if rows[(i, module.TRUTH_START)]["log_likelihood"]
        > max(rows[(i, n)]["log_likelihood"] for n in names) + 0.1
    ]
    assert f"On {len(clear)} of the {len(truth)} instances where the truth start recovers" in text


def test_search_probes_equal_results_levers_search_probes() -> None:
    """docs/recovery_levers.md's ninth round quotes results/levers/search_probes: the three
    tables are what ``benchmarks/search_probes.py`` makes of the results files, and the
    counts in its text are recomputed here."""
    module = benchmark_module("search_probes")
    root = ROOT / "results" / "levers" / "search_probes"
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)
    records = {probe: module.load(probe, root) for probe in ("ltsa", "flow", "overcomplete")}
    for probe, rows in records.items():
        assert [r["seed"] for r in rows] == list(range(10)), probe
        for row in module.TABLES[probe](rows):
            assert row in doc.splitlines(), row
    ltsa = records["ltsa"]

    def cheaper(name: str) -> int:
        return sum(r[name]["cost"] < r["posterior_mean"]["cost"] for r in ltsa)

    arranged = sum(
        all(r[f"rearranged_{i}"]["cost"] > r["posterior_mean"]["cost"] for i in range(3))
        for r in ltsa
    )
    assert f"above the posterior mean's on {arranged} of the 10 seeds" in text
    assert (
        f"PCA's is below it on {cheaper('pca')}, Isomap's on {cheaper('isomap')} and the "
        f"spectral embedding's on {cheaper('spectral')}"
    ) in text
    embedding = [r["ltsa"]["weak_mcc"] for r in ltsa]
    assert f"(weak MCC {min(embedding):.3f}–{max(embedding):.3f})" in text
    gains = [r["flow"]["gain"] for r in records["flow"]]
    assert f"gains {min(gains):.3f}–{max(gains):.3f} nats per point" in text
    shares = [r["explained_variance_ratio"][-1] for r in records["overcomplete"]]
    assert f"at most {max(shares):.4f} of the codes' variance" in text
    recovered = [r["weak_mcc"] >= 0.95 and r["accuracy"] >= 0.95 for r in records["overcomplete"]]
    flow_defaults = [
        r["defaults"]["weak_mcc"] >= 0.95 and r["defaults"]["accuracy"] >= 0.95
        for r in records["flow"]
    ]
    assert f"recovers {sum(recovered)}/10, against {sum(flow_defaults)}/10 for the defaults" in text
    flowed = [
        r["flow"]["weak_mcc"] >= 0.95 and r["flow"]["accuracy"] >= 0.95 for r in records["flow"]
    ]
    assert f"output recovers {sum(flowed)}/10 against the defaults' {sum(flow_defaults)}/10" in text


def test_subsample_search_equals_results_levers_truth_start() -> None:
    """docs/recovery_levers.md's tenth round and RESULTS.md quote
    results/levers/truth_start/search: the table is what ``benchmarks/truth_start.py``
    makes of the results files, and the counts are recomputed here."""
    module = benchmark_module("truth_start")
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)
    bounds, search = _truth_start_stage("bounds"), _truth_start_stage("search")
    names = list(module.SEARCH)
    for row in module.beside_defaults_table(
        bounds["rows"] + search["rows"], search["instances"], names
    ):
        assert row in doc.splitlines(), row
    rows = {(r["instance"], r["method"]): r for r in bounds["rows"] + search["rows"]}
    ids = [s["id"] for s in search["instances"]]
    recovered = [i for i in ids if module.is_recovered(rows[(i, names[0])])]
    assert f"recovers {len(recovered)} of the {len(ids)} misses" in text
    results = _read_squeezed("RESULTS.md")
    assert f"recovers {len(recovered)} of the {len(ids)} misses" in results
    assert f": {', '.join(recovered[:-1])} and {recovered[-1]}, all" in text
    probes = benchmark_module("search_probes")
    trials = probes.load("subsample", ROOT / "results" / "levers" / "search_probes")
    for row in probes.subsample_rows(trials):
        assert row in doc.splitlines(), row
    counts = [
        sum(probes._recovered(f) for r in trials for f in r[k]) for k in ("subsample", "all_rows")
    ]
    n = sum(len(r["subsample"]) for r in trials)
    assert f"({counts[0]} of {n} against {counts[1]} of {n} here)" in text
    seed2 = next(r for r in trials if r["seed"] == 2)["all_rows"]
    folded = [f["held_out_log_likelihood"] for f in seed2 if not probes._recovered(f)]
    best = max(f["held_out_log_likelihood"] for f in seed2)
    assert f"is {best:.3f} against at most {max(folded):.3f} for the folded ones" in text
    holdout = probes.load("holdout", ROOT / "results" / "levers" / "search_probes")
    assert [r["seed"] for r in holdout] == list(range(10))
    for row in probes.holdout_rows(holdout):
        assert row in doc.splitlines(), row
    kept = [r["seed"] for r in holdout if probes._recovered(r)]
    assert (
        f"recovers {len(kept)}/10 (seeds {', '.join(map(str, kept[:-1]))} and {kept[-1]})" in text
    )
    flow = probes.load("flow", ROOT / "results" / "levers" / "search_probes")
    defaults = sum(probes._recovered(r["defaults"]) for r in flow)
    assert f"recover {len(kept)} of seeds 0–9 against the defaults' {defaults}" in results
    assert f"against {defaults}/10 for the defaults (the flow probe's fits" in text


def test_restarts_round_equals_results_levers_truth_start() -> None:
    """docs/recovery_levers.md's eleventh round and RESULTS.md quote
    results/levers/truth_start/restarts (and the bounds stage's seed-0 fits): the tables are
    what ``benchmarks/truth_start.py`` makes of the results files, the counts are recomputed
    here, and the fit time is results/levers/fit_time.json's."""
    module = benchmark_module("truth_start")
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)
    results = _read_squeezed("RESULTS.md")
    by_miss, misses, by_kept, kept = module.restarts_results(ROOT / module.OUT)
    assert [s["id"] for s in misses] == [
        s["id"] for s in module.search_misses(ROOT / module.RECOVERY)
    ]
    for row in module.restarts_table(by_miss, misses) + module.restarts_table(
        by_kept, kept, mixed_only=True
    ):
        assert row in doc.splitlines(), row
    gained, single = module.kept_counts(by_miss, misses)
    gained_bound, _ = module.kept_counts(by_miss, misses, "score")
    keep, all_kept = module.kept_counts(by_kept, kept)
    keep_bound, _ = module.kept_counts(by_kept, kept, "score")
    assert all_kept == len(kept) == 29
    assert (
        f"the restarts recover {gained} of the {len(misses)} (kept by the training bound, "
        f"{gained_bound})" in text
    )
    same = "also " if keep_bound == keep else ""
    assert (
        f"the restarts recover {keep} of the {len(kept)} (kept by the training bound, "
        f"{same}{keep_bound})" in text
    )
    assert f"they lose {len(kept) - keep} of the {len(kept)}" in text.lower()
    assert f"would recover about {keep + gained} of the 54 instances" in text
    assert (
        f"they recover {gained} of the {len(misses)}, and on the {len(kept)} instances the "
        f"defaults recover they keep {keep}" in results
    )
    assert f"would recover about {keep + gained} of the 54; run on the whole" in results
    ids = {s["id"] for s in misses}
    fits = [
        f
        for rows in by_miss.values()
        for f in rows
        if f["method"] == module.DEFAULT and f["instance"] in ids
    ]
    assert f"{sum(map(module.is_recovered, fits))} of the {len(fits)} fits on the misses" in text
    timing = json.loads((ROOT / "results" / "levers" / "fit_time.json").read_text())
    entry = timing["vae50-iw10-refit-full-n_init4"]
    figure = (
        f"{entry['median_seconds']:.1f} s ({entry['min_seconds']:.1f}–{entry['max_seconds']:.1f})"
    )
    assert f"median of {figure}" in text
    assert f"at {entry['median_seconds']:.1f} s per 3,000-point fit" in results
    rows = {seed: module._by_task(r) for seed, r in by_miss.items()}
    gaps = []
    for instance in ("random-24", "random-37"):
        best = max(rows[s][(instance, module.DEFAULT)]["log_likelihood"] for s in rows)
        gaps.append(rows[0][(instance, module.TRUTH_START)]["log_likelihood"] - best)
    assert f"by {gaps[0]:.2f} and {gaps[1]:.2f} nats per point" in text


def test_longer_stage_equals_results_levers_truth_start() -> None:
    """docs/recovery_levers.md's figures of ``truth_start.py --stage longer`` (300 epochs
    from the defaults' own start) are recomputed from its results file, the bounds stage's
    and the levers stage's."""
    module = benchmark_module("truth_start")
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)
    bounds, longer = _truth_start_stage("bounds"), _truth_start_stage("longer")
    levers = _truth_start_stage("levers")
    names = list(module.LONGER)
    for row in module.beside_defaults_table(
        bounds["rows"] + longer["rows"], longer["instances"], names
    ):
        assert row in doc.splitlines(), row
    rows = {(r["instance"], r["method"]): r for r in bounds["rows"] + longer["rows"]}
    rows |= {(r["instance"], r["method"]): r for r in levers["rows"]}
    ids = [s["id"] for s in longer["instances"]]
    assert len(ids) == 19
    recovered = [i for i in ids if module.is_recovered(rows[(i, names[0])])]
    assert f"It recovers {len(recovered)} of the 19 ({' and '.join(recovered)}," in text

    def loglik(instance: str, method: str) -> float:
        return rows[(instance, method)]["log_likelihood"]

    gains = [loglik(i, names[0]) - loglik(i, module.DEFAULT) for i in ids]
    assert f"rises by {min(gains):.2f}–{max(gains):.2f} nats per point" in text
    above = [i for i in ids if loglik(i, names[0]) > loglik(i, module.TRUTH_START)]
    assert f"past the truth start's 100-epoch fit on {len(above)} of the 19" in text
    fit_misses = [s["id"] for s in levers["instances"]]
    ahead = [i for i in fit_misses if loglik(i, "truth-e300") > loglik(i, names[0])]
    behind = [i for i in fit_misses if i not in ahead]
    assert f"trained as long on {len(ahead)} (" in text
    assert len(behind) == 1 and f"({behind[0]} is the exception, by " in text
    gap = loglik(behind[0], names[0]) - loglik(behind[0], "truth-e300")
    assert f"is the exception, by {gap:.3f})" in text


def test_restarts4_benchmark_progress_equals_its_run_files() -> None:
    """RESULTS.md's progress of ``vade-restarts4`` on the recovery benchmark equals
    results/recovery/progress.json, and that file equals its run files today."""
    from idvae.experiments.recovery import paired_progress

    out = ROOT / "results" / "recovery"
    text = _read_squeezed("RESULTS.md")
    progress = json.loads((out / "progress.json").read_text())["vade-restarts4"]
    assert progress == paired_progress(out, "vade-restarts4")  # not stale

    def progress_of(out: Path, method: str) -> dict:
        return paired_progress(out, method)["families"]["all"]

    pooled = progress["families"]["all"]

    def names(instances: list[str]) -> str:
        return ", ".join(instances) if instances else "none"

    assert pooled["n"] == 54
    assert (
        f"has run on all 54 instances: it "
        f"recovers {pooled['recovered']} of them, `vade-default` "
        f"{pooled['reference_recovered']} of the same; gained: {names(pooled['gained'])}; "
        f"lost: {names(pooled['lost'])}."
    ) in text
    summary = json.loads((out / "results.json").read_text())["summary"]
    seconds = [summary[m]["median_seconds"] for m in ("vade-restarts4", "vade-default")]
    assert (
        f"a median of {seconds[0]:.0f} s per instance, against the defaults' {seconds[1]:.1f} s"
        in text
    )
    oracle = set(progress_of(out, "vade-truth-start")["gained"])
    reached = sorted(oracle & set(pooled["gained"]))
    assert (
        f"Of the {len(oracle)} misses of the search it recovers "
        f"{len(reached)} ({', '.join(reached)})" in text
    )
    count = f"{pooled['recovered']}/54"
    assert (
        f"the eleventh round of docs/recovery_levers.md); {count}, RESULTS.md"
        in (ROOT / "docs" / "recovery.md").read_text()
    )
    levers = _read_squeezed("docs/recovery_levers.md")
    assert (
        f"it recovers {pooled['recovered']} of the 54, not the estimated 32, against the "
        f"defaults' {pooled['reference_recovered']}. Of the {len(oracle)} misses of the search "
        f"it recovers {len(reached)} ({', '.join(reached)})" in levers
    )


def test_fair_refit_finding_equals_results_levers() -> None:
    """Finding 34 of docs/recovery_levers.md (the fair prior refit) against the fits of
    results/levers."""
    text = _read_squeezed("docs/recovery_levers.md")
    fits = {
        c: {
            s: json.loads((ROOT / "results" / "levers" / c / f"seed{s}.json").read_text())
            for s in range(10)
        }
        for c in ("vae50-iw10-refit-full", "vae50-iw10-refit-full-moments")
    }
    before, after = fits.values()
    moved = max(abs(before[s]["weak_mcc"] - after[s]["weak_mcc"]) for s in range(10))
    assert f"the weak MCC moves by at most {moved:.3f}" in text
    for seed in (8, 0):
        pair = f"{before[seed]['accuracy']:.3f} to {after[seed]['accuracy']:.3f}"
        assert pair in text, seed
    assert f"(weak MCC {after[7]['weak_mcc']:.4f}," in text and not after[7]["recovered"]


def test_full_posterior_finding_equals_results_levers() -> None:
    """Finding 35 of docs/recovery_levers.md (q of full covariance) against results/levers."""
    text = _read_squeezed("docs/recovery_levers.md")
    before, after = (
        {
            s: json.loads((ROOT / "results" / "levers" / c / f"seed{s}.json").read_text())
            for s in range(10)
        }
        for c in ("vae50-iw10-refit-full", "vae50-iw10-refit-full-qfull")
    )
    for seed in (2, 7):
        assert f"{before[seed]['weak_mcc']:.3f} to {after[seed]['weak_mcc']:.3f}" in text, seed
        assert after[seed]["recovered"]
    assert f"on accuracy ({after[1]['accuracy']:.3f})" in text and not after[1]["recovered"]
    assert f"(weak MCC {after[5]['weak_mcc']:.3f})" in text and not after[5]["recovered"]
    assert not any(after[s]["recovered"] for s in (0, 4, 8))


def test_full_posterior_benchmark_progress_equals_its_run_files() -> None:
    """RESULTS.md's and docs/recovery_levers.md's account of ``vade-qfull`` on the recovery
    benchmark equals results/recovery/progress.json, and that file its run files today."""
    from idvae.experiments.recovery import paired_progress

    out = ROOT / "results" / "recovery"
    progress = json.loads((out / "progress.json").read_text())["vade-qfull"]
    assert progress == paired_progress(out, "vade-qfull")  # not stale
    pooled, random = (progress["families"][f] for f in ("all", "random"))
    assert pooled["n"] == 54 and random["n"] == 40
    text = _read_squeezed("RESULTS.md")
    assert (
        f"it has run on all 54 instances: it recovers {pooled['recovered']} of them, "
        f"`vade-default` {pooled['reference_recovered']} of the same; gained: "
        f"{', '.join(pooled['gained'])}; lost: {', '.join(pooled['lost'])}. On the 40 random "
        f"instances it gains {len(random['gained'])} and loses {len(random['lost'])}:"
    ) in text
    runs = out / "runs" / "random-05"
    weak = [
        json.loads((runs / f"{m}.json").read_text())["weak_mcc"]
        for m in ("vade-default", "vade-qfull")
    ]
    assert f"on random-05 the weak MCC falls from {weak[0]:.3f} to {weak[1]:.3f}" in text
    summary = json.loads((out / "results.json").read_text())["summary"]
    seconds = [summary[m]["median_seconds"] for m in ("vade-qfull", "vade-default")]
    assert (
        f"a median of {seconds[0]:.0f} s per instance, against the defaults' {seconds[1]:.1f} s"
        in text
    )
    levers = _read_squeezed("docs/recovery_levers.md")
    seeds = progress["families"]["seed"]
    facets = progress["families"]["facets"]
    assert (
        f"(`vade-qfull`, RESULTS.md) it recovers {pooled['recovered']} against the defaults' "
        f"{pooled['reference_recovered']}, gaining seeds 2 and 7 and one random instance "
        f"({random['gained'][0]}) and losing {len(random['lost'])} of the random instances, "
        f"one facets instance and seed 1."
    ) in levers
    assert sorted(seeds["gained"]) == ["seed-2", "seed-7"] and seeds["lost"] == ["seed-1"]
    assert len(random["gained"]) == 1 and len(facets["lost"]) == 1 and not facets["gained"]


def test_pretrain_probes_table_equals_its_results() -> None:
    """The sixteenth round's table and findings 40-42 (docs/recovery_levers.md) equal
    results/levers/pretrain_probes/, whose ``defaults`` are the fifteenth round's fits."""
    levers = ROOT / "results" / "levers"
    probes = {
        p.stem: json.loads(p.read_text()) for p in (levers / "pretrain_probes").glob("*.json")
    }
    assert set(probes) == {
        "defaults",
        "iw-pretrain",
        "refit-every-epoch",
        "scratch-refit-every-epoch",
        "round-components",
        "spread-scratch",
    }
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)
    for name, probe in probes.items():
        rows = probe["rows"]
        assert [r["seed"] for r in rows] == list(range(10))
        assert probe["recovered"] == sum(
            r["weak_mcc"] >= 0.95 and r["accuracy"] >= 0.95 for r in rows
        )
        cells = " | ".join(f"{r['weak_mcc']:.3f} / {r['accuracy']:.3f}" for r in rows)
        assert f"| `{name}` | {cells} | {probe['recovered']}/10 |" in doc
    geometry = json.loads((levers / "pretrain_geometry.json").read_text())
    for row in probes["defaults"]["rows"]:  # the same fit as the fifteenth round's
        assert row["weak_mcc"] == geometry[str(row["seed"])]["trained"]["weak_mcc"]
    iw, base = probes["iw-pretrain"]["rows"], probes["defaults"]["rows"]
    pre = [r["pretrained_weak_mcc"] for r in iw]
    at_095 = sum(p >= 0.95 for p in pre)
    assert f"| {' | '.join(f'{p:.3f}' for p in pre)} | {at_095}/10 at ≥ 0.95 |" in doc
    assert (
        f"goes from weak MCC {geometry['0']['pretrained']['weak_mcc']:.3f} (the ELBO, "
        f"fifteenth round) to {pre[0]:.3f}"
    ) in text
    assert f"ends at {iw[0]['weak_mcc']:.3f} with accuracy {iw[0]['accuracy']:.3f}" in text
    gained = [r["seed"] for r, b in zip(iw, base, strict=True) if r["recovered"] > b["recovered"]]
    lost = [r["seed"] for r, b in zip(iw, base, strict=True) if r["recovered"] < b["recovered"]]
    assert gained == [7] and not lost and f"a hair ({base[7]['weak_mcc']:.3f} here)" in text
    assert (
        f"recovers {probes['iw-pretrain']['recovered']} against the defaults' "
        f"{probes['defaults']['recovered']}"
    ) in text
    after = {
        key: [
            json.loads((levers / folder / f"seed{s}.json").read_text())["after_50"]
            for s in (0, 4, 5, 8)
        ]
        for key, folder in (("iw", "pretrain_probes/drift-iw"), ("elbo", "pretrain_drift"))
    }

    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:.3f}" for v in values[:-1]) + f" and {values[-1]:.3f}"

    assert (
        f"50 epochs of it ended at weak MCC {listed(after['iw'])} on seeds 0, 4, 5 and 8, "
        f"against {listed(after['elbo'])} for the ELBO"
    ) in text
    count = {name: probe["recovered"] for name, probe in probes.items()}
    assert (
        f"Refitting it every epoch recovers {count['refit-every-epoch']} of 10 after the VAE "
        f"pretraining and {count['scratch-refit-every-epoch']} of 10 without one."
    ) in text
    spread = probes["spread-scratch"]["rows"]
    assert f"it recovers {count['spread-scratch']} of 10" in text
    assert f"{spread[0]['weak_mcc']:.3f} / {spread[0]['accuracy']:.3f}" in text
    best_other = max(p["rows"][0]["weak_mcc"] for n, p in probes.items() if n != "spread-scratch")
    assert spread[0]["weak_mcc"] > best_other
    assert all(spread[s]["accuracy"] < 0.95 <= base[s]["accuracy"] for s in (3, 6))
    rounded = probes["round-components"]["rows"]
    moved = [
        max(abs(r[k] - b[k]) for r, b in zip(rounded, base, strict=True))
        for k in ("weak_mcc", "accuracy")
    ]
    assert (
        f"the weak MCC moves by at most {moved[0]:.3f} and the accuracy by at most "
        f"{moved[1]:.3f} from the defaults' fit"
    ) in text
    assert f"seed 7 crossing the line ({rounded[7]['weak_mcc']:.3f})" in text


def test_basin_table_equals_its_results() -> None:
    """Finding 44's table and statements (docs/recovery_levers.md) equal
    results/levers/pretrain_probes/basin/."""
    folder = ROOT / "results" / "levers" / "pretrain_probes" / "basin"
    runs = {i: json.loads((folder / f"{i}.json").read_text()) for i in BASIN_INSTANCES}
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)
    for instance, run in runs.items():
        for r in run["rows"]:
            cells = (
                f"{r['start_weak_mcc']:.3f} | {r['weak_mcc']:.3f} / {r['accuracy']:.3f} | "
                f"{r['log_likelihood']:.3f}"
            )
            assert f"| {instance} | {r['t']:g} | {cells} |" in doc
    rows = {i: {r["t"]: r for r in run["rows"]} for i, run in runs.items()}
    r37, r39, s2 = rows["random-37"], rows["random-39"], rows["seed-2"]
    near = [r for r in r37.values() if r["start_weak_mcc"] >= 0.905]
    assert all(abs(r["weak_mcc"] - r["start_weak_mcc"]) <= 0.03 for r in near)
    back = [r37[t] for t in (0.25, 0.5, 0.75)]  # the starts closest to the truth
    assert f"starts at {r37[0.75]['start_weak_mcc']:.3f} or above come back" in text
    assert (
        f"({min(r['weak_mcc'] for r in back):.3f}–{max(r['weak_mcc'] for r in back):.3f})" in text
    )
    assert (
        f"a start at {r37[0.85]['start_weak_mcc']:.3f} ends at {r37[0.85]['weak_mcc']:.3f}" in text
    )
    assert (
        f"even a start at {r39[0.5]['start_weak_mcc']:.3f} ends at {r39[0.5]['weak_mcc']:.3f}"
        in text
    )
    assert (
        f"a start at {s2[0.5]['start_weak_mcc']:.3f} already falls to {s2[0.5]['weak_mcc']:.3f}, "
        f"and one at {s2[0.75]['start_weak_mcc']:.3f} falls to {s2[0.75]['weak_mcc']:.3f}"
    ) in text
    ends = [rows[i][1.0] for i in BASIN_INSTANCES]
    starts = [r["start_weak_mcc"] for r in ends]
    results = json.loads((ROOT / "results" / "recovery" / "results.json").read_text())
    defaults = {
        r["instance"]: r["weak_mcc"] for r in results["rows"] if r["method"] == "vade-default"
    }
    assert (
        f"(t = 1, at {min(starts):.3f}–{max(starts):.3f}) the fits end at "
        f"{ends[0]['weak_mcc']:.3f}, {ends[1]['weak_mcc']:.3f} and {ends[2]['weak_mcc']:.3f}, "
        f"near the defaults' own fits on the benchmark ({defaults['seed-2']:.3f}, "
        f"{defaults['random-37']:.3f} and {defaults['random-39']:.3f})"
    ) in text
    assert all(
        abs(r["weak_mcc"] - defaults[i]) < 0.03 for i, r in zip(BASIN_INSTANCES, ends, strict=True)
    )
    # finding 45: the nearest start's fit is the most likely; a dip in the middle
    ll = {i: {t: r["log_likelihood"] for t, r in rows[i].items()} for i in BASIN_INSTANCES}
    for i in BASIN_INSTANCES:
        assert max(ll[i], key=ll[i].get) == min(ll[i])
    gains = [ll[i][min(ll[i])] - ll[i][1.0] for i in ("random-37", "random-39", "seed-2")]
    assert (
        f"by {gains[0]:.2f} nats per point on random-37 ({ll['random-37'][0.25]:.3f} against "
        f"{ll['random-37'][1.0]:.3f}), {gains[1]:.2f} on random-39 and {gains[2]:.2f} on seed-2"
    ) in text
    r37_ll = [ll["random-37"][t] for t in sorted(ll["random-37"])]
    assert r37_ll == sorted(r37_ll, reverse=True)  # falls steadily along the path
    assert ll["random-39"][0.85] < ll["random-39"][1.0] < ll["random-39"][0.5]
    assert (
        f"({ll['random-39'][0.85]:.3f} at t = 0.85 against {ll['random-39'][1.0]:.3f} at t = 1)"
    ) in text
    assert ll["seed-2"][0.85] < min(ll["seed-2"][0.9], ll["seed-2"][0.5])
    assert (
        f"({ll['seed-2'][0.85]:.3f} at t = 0.85, against {ll['seed-2'][0.9]:.3f} at t = 0.9 and "
        f"{ll['seed-2'][0.5]:.3f} at t = 0.5)"
    ) in text


BASIN_INSTANCES = ("seed-2", "random-37", "random-39")


def test_union_of_the_fits_equals_its_results() -> None:
    """RESULTS.md's count of what a perfect choice among the non-oracle fits would reach
    equals results/recovery/union.json, and that file the benchmark's results today."""
    union = benchmark_module("recovery_progress").union

    out = ROOT / "results" / "recovery"
    stored = json.loads((out / "union.json").read_text())
    assert stored == union(out)  # not stale
    results = json.loads((out / "results.json").read_text())
    dims = {spec["id"]: spec["latent_dim"] for spec in results["instances"]}
    beyond = stored["truth_start_beyond"]
    fam = stored["families"]
    text = _read_squeezed("RESULTS.md")
    assert (
        f"recovers the truth: the baselines, every VaDE configuration above and MFCVAE. "
        f"Together they recover **{stored['recovered']} of the {stored['n']}**. By family that "
        f"is {fam['seeds']['recovered']} of the {fam['seeds']['n']} seeds, "
        f"{fam['random']['recovered']} of the {fam['random']['n']} random instances and "
        f"{fam['facets']['recovered']} of the {fam['facets']['n']} facets instances. A perfect "
        f"choice among those fits would reach {stored['recovered'] / stored['n']:.0%}"
    ) in text
    assert f"at least one of the {len(stored['methods'])} configurations" in text
    names = ", ".join(beyond[:-1]) + f" and {beyond[-1]}"
    assert f"The truth start recovers {len(beyond)} more: {names}." in text
    assert f"All {len(beyond)} have a latent dimension of 4 or 5." in text
    assert {dims[i] for i in beyond} == {4, 5}
    floor = -(-3 * stored["n"] // 4)  # 75 % of the instances, rounded up: 41 of 54
    assert stored["recovered"] < floor and f"floor of 75% ({floor} instances)" in text


def test_pretrain_geometry_table_equals_its_results() -> None:
    """The fifteenth round's table (docs/recovery_levers.md) equals
    results/levers/pretrain_geometry.json, and findings 36-37 hold there."""
    rows = json.loads((ROOT / "results" / "levers" / "pretrain_geometry.json").read_text())
    rows = [rows[str(s)] for s in range(10)]
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()

    def line(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    pre, post = ([r[k] for r in rows] for k in ("pretrained", "trained"))
    assert line("weak MCC after pretraining", [f"{r['weak_mcc']:.3f}" for r in pre]) in doc
    assert line("weak MCC after training", [f"{r['weak_mcc']:.3f}" for r in post]) in doc
    within = [
        f"{a['within_true_cluster']:.3f} → {b['within_true_cluster']:.3f}"
        for a, b in zip(pre, post, strict=True)
    ]
    assert line("inside the components, pretrained → trained", within) in doc
    ratio = [
        f"{max(a['cluster_condition']):.1f} → {max(b['cluster_condition']):.1f}"
        for a, b in zip(pre, post, strict=True)
    ]
    label = "largest singular-value ratio of a component, pretrained → trained"
    assert line(label, ratio) in doc
    moved = [r["moved"] for r in rows]
    assert line("moved (pretrained against trained)", [f"{v:.3f}" for v in moved]) in doc
    text = _squeezed(doc)
    assert f"(weak MCC {min(moved):.3f}–{max(moved):.3f} between" in text
    recovered = [s for s in range(10) if post[s]["weak_mcc"] >= 0.95]
    missed = [s for s in range(10) if s not in recovered]
    assert recovered == [1, 3, 6, 9]  # the seeds the defaults recover (finding 36)
    lo, hi = min(pre[s]["weak_mcc"] for s in recovered), max(pre[s]["weak_mcc"] for s in recovered)
    assert f"left the pretraining at weak MCC {lo:.3f}–{hi:.3f}" in text
    lo, hi = min(pre[s]["weak_mcc"] for s in missed), max(pre[s]["weak_mcc"] for s in missed)
    assert f"the others left it at {lo:.3f}–{hi:.3f} and stay below 0.95" in text
    gain = max(b["weak_mcc"] - a["weak_mcc"] for a, b in zip(pre, post, strict=True))
    assert f"by at most {gain:.3f} (seed 0)" in text


def test_pretrain_screen_table_equals_its_results() -> None:
    """The pretraining screen's table (docs/recovery_levers.md) equals
    results/levers/pretrain_screen/, and finding 38 holds there."""
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    files = sorted((ROOT / "results" / "levers" / "pretrain_screen").glob("*.json"))
    rows = {f.stem: json.loads(f.read_text()) for f in files}
    assert len(rows) == 13
    for variant, row in rows.items():
        cells = " | ".join(f"{w:.3f}" for w in row["weak_mcc"])
        assert f"| `{variant}` | {cells} | {row['at_least_095']}/10 |" in doc, variant
    vae = [r for v, r in rows.items() if v not in ("ae", "isomap", "spectral")]
    folded = [r["weak_mcc"][s] for r in vae for s in (0, 2)]
    assert 0.515 <= min(folded) < 0.525 and 0.745 <= max(folded) < 0.755  # "0.52–0.75"
    assert {r["at_least_095"] for r in vae} == {2, 3, 4}
    assert all(max(r["weak_mcc"][s] for r in rows.values()) < 0.95 for s in (4, 5, 8))
    text = _squeezed(doc)
    isomap, spectral = rows["isomap"]["weak_mcc"][2], rows["spectral"]["weak_mcc"][0]
    assert (
        f"Isomap lifts seed 2 to {isomap:.3f} and the spectral embedding seed 0 to {spectral:.3f}"
        in text
    )
    assert rows["spectral"]["at_least_095"] == 0


def test_pretrain_drift_table_equals_its_results() -> None:
    """Finding 39's table (docs/recovery_levers.md) equals results/levers/pretrain_drift/,
    and its claims hold there and in the oracle fits it cites."""
    levers = ROOT / "results" / "levers"
    rows = [
        json.loads((levers / "pretrain_drift" / f"seed{s}.json").read_text()) for s in range(10)
    ]
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    labels = {
        "start": "regressed on the true z",
        "after_5": "after 5 epochs of the N(0, I) pretraining",
        "after_20": "after 20 epochs",
        "after_50": "after 50 epochs",
        "refit": "the defaults fitted from that latent",
    }
    for key, label in labels.items():
        assert f"| {label} | " + " | ".join(f"{r[key]:.3f}" for r in rows) + " |" in doc, key
    end = [r["after_50"] for r in rows]
    text = _squeezed(doc)
    assert f"50 epochs of it end at weak MCC {min(end):.3f}–{max(end):.3f}" in text
    assert [s for s, v in enumerate(end) if v < 0.95] == [0, 4, 5, 8]
    refit = [rows[s]["refit"] for s in (0, 4, 8)]
    assert max(refit) < 0.95 and f"not come back on seeds 0, 4 and 8 ({min(refit):.3f}–" in text
    assert f"{max(refit):.3f}): 50 epochs" in text
    oracle = [
        json.loads((levers / c / f"seed{s}.json").read_text())["weak_mcc"]
        for c in ("truth-iw10", "truth-dec16-iw10-full", "truth-defaults")
        for s in (4, 5)
    ]
    assert f"(weak MCC {min(oracle):.3f}–{max(oracle):.3f} in the oracle" in text


def test_results_probes_paragraph_equals_its_results() -> None:
    """RESULTS.md's summary of the sixteenth round equals results/levers/pretrain_probes/."""
    folder = ROOT / "results" / "levers" / "pretrain_probes"
    count = {p.stem: json.loads(p.read_text())["recovered"] for p in folder.glob("*.json")}
    text = _read_squeezed("RESULTS.md")
    assert (
        f"The defaults recover {count['defaults']} of the ten seeds in that run. Pretraining "
        f"on the importance-weighted bound recovers {count['iw-pretrain']}, and so does "
        f"rounding the mixture's components towards a common shape "
        f"({count['round-components']})"
    ) in text
    assert count["iw-pretrain"] == count["round-components"] == count["defaults"] + 1
    assert (
        f"refitted every epoch it recovers {count['refit-every-epoch']} after the VAE "
        f"pretraining and {count['scratch-refit-every-epoch']} without one, and started as a "
        f"fixed spread of Gaussians it recovers {count['spread-scratch']}."
    ) in text
    worse = ("refit-every-epoch", "scratch-refit-every-epoch", "spread-scratch")
    assert all(count[n] < count["defaults"] for n in worse)


def test_results_pretraining_paragraph_equals_its_results() -> None:
    """RESULTS.md's summary of the fifteenth round equals its results files."""
    levers = ROOT / "results" / "levers"
    geometry = json.loads((levers / "pretrain_geometry.json").read_text())
    moved = [r["moved"] for r in geometry.values()]
    drift = [
        json.loads((levers / "pretrain_drift" / f"seed{s}.json").read_text())["after_50"]
        for s in range(10)
    ]
    screen = [json.loads(f.read_text()) for f in (levers / "pretrain_screen").glob("*.json")]
    text = _read_squeezed("RESULTS.md")
    assert f"(weak MCC {min(moved):.3f}–{max(moved):.3f} between the two)" in text
    assert f"None of {len(screen)} variants" in text
    assert f"more than {max(r['at_least_095'] for r in screen)} of the ten seeds" in text
    assert f"to weak MCC {min(drift):.3f}–{max(drift):.3f} after 50 epochs" in text
    ended = [s for s, r in geometry.items() if r["trained"]["weak_mcc"] >= 0.95]
    started = min(geometry[s]["pretrained"]["weak_mcc"] for s in ended)
    assert f"those the pretraining left at {started:.3f} or more" in text
    assert all(r["pretrained"]["weak_mcc"] < started for s, r in geometry.items() if s not in ended)


COMBINE_STARTS = ("vae", "vae-rs1", "ae", "isomap", "spectral")
COMBINE_INSTANCES = (*(f"seed-{s}" for s in range(10)), "random-32", "random-37", "random-39")


def _recovers(fit: dict) -> bool:
    return fit["weak_mcc"] >= 0.95 and fit["accuracy"] >= 0.95


def test_combine_starts_tables_and_findings_equal_their_results() -> None:
    """The seventeenth round's tables and findings 46-48 (docs/recovery_levers.md) equal
    results/levers/combine_starts/, whose `vae` fits are the sixteenth round's defaults."""
    folder = ROOT / "results" / "levers" / "combine_starts"
    runs = {i: json.loads((folder / f"{i}.json").read_text()) for i in COMBINE_INSTANCES}
    assert {p.stem for p in folder.glob("*.json")} == set(COMBINE_INSTANCES)
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)

    def cell(fit: dict) -> str:
        return f"{fit['weak_mcc']:.3f} / {fit['accuracy']:.3f}"

    for i, r in runs.items():
        starts = r["starts"]
        assert list(starts) == list(COMBINE_STARTS)
        likeliest = max(starts, key=lambda s: starts[s]["log_likelihood"])
        assert r["likeliest"] == likeliest
        cells = " | ".join(cell(starts[s]) for s in COMBINE_STARTS)
        assert f"| {i} | {r['latent_dim']}, {r['n_components']} | {cells} | `{likeliest}` |" in doc
        parts = r["parts_on_true_arrangement"].values()
        assert (
            f"| {i} | {r['consensus_weak_mcc']:.3f} | {cell(r['from_consensus'])} | "
            f"{r['best_parts_on_fit_arrangement']:.3f} | "
            f"{r['best_mixed_placement']['weak_mcc']:.3f} | {min(parts):.3f}–{max(parts):.3f} |"
        ) in doc
    n = len(runs)
    counts = [sum(_recovers(r["starts"][s]) for r in runs.values()) for s in COMBINE_STARTS]
    kept = sum(_recovers(r["starts"][r["likeliest"]]) for r in runs.values())
    assert f"| recovered | | {' | '.join(f'{c}/{n}' for c in counts)} | {kept}/{n} |" in doc
    consensus = sum(_recovers(r["from_consensus"]) for r in runs.values())
    assert f"| recovered | | {consensus}/{n} | | | |" in doc
    probes = json.loads(
        (ROOT / "results" / "levers" / "pretrain_probes" / "defaults.json").read_text()
    )
    for row in probes["rows"]:  # the `vae` start is the defaults' fit, bit for bit
        fit = runs[f"seed-{row['seed']}"]["starts"]["vae"]
        assert (fit["weak_mcc"], fit["accuracy"]) == (row["weak_mcc"], row["accuracy"])
    # finding 46
    best = {i: max(f["weak_mcc"] for f in r["starts"].values()) for i, r in runs.items()}
    gap = {i: r["consensus_weak_mcc"] - best[i] for i, r in runs.items()}
    above = sorted(i for i, g in gap.items() if g >= 0)
    assert above == ["seed-6", "seed-9"] and max(gap.values()) < 0.0025
    assert f"below the best of its five starts on {n - len(above)} of the {n} instances" in text
    assert f"on seed-2 it is {-gap['seed-2']:.3f} below" in text
    assert f"the defaults recover {consensus} of {n} against the `vae` start's {counts[0]}" in text
    gained = [
        i for i, r in runs.items() if _recovers(r["from_consensus"]) > _recovers(r["starts"]["vae"])
    ]
    lost = [
        i for i, r in runs.items() if _recovers(r["from_consensus"]) < _recovers(r["starts"]["vae"])
    ]
    assert gained == ["seed-7", "random-32"] and lost == ["seed-3"]
    r32 = runs["random-32"]
    accuracies = [f["accuracy"] for f in r32["starts"].values()]
    assert max(accuracies) < 0.95
    assert (
        f"({cell(r32['from_consensus'])}, where every start misses on accuracy, at "
        f"{min(accuracies):.3f}–{max(accuracies):.3f})"
    ) in text
    assert f"lose seed-3 (accuracy {runs['seed-3']['from_consensus']['accuracy']:.3f})" in text
    # finding 47
    parts = [v for r in runs.values() for v in r["parts_on_true_arrangement"].values()]
    assert f"every start's latent gives weak MCC {min(parts):.3f}–{max(parts):.3f}" in text
    assert f"seed-2's `vae` start at {runs['seed-2']['starts']['vae']['weak_mcc']:.3f}" in text
    moved = max(
        abs(r["best_parts_on_fit_arrangement"] - r["starts"][r["likeliest"]]["weak_mcc"])
        for r in runs.values()
    )
    assert f"moves that fit's weak MCC by at most {moved:.3f}" in text
    # finding 48
    mix = {i: r["best_mixed_placement"]["weak_mcc"] - best[i] for i, r in runs.items()}
    assert max(mix, key=mix.get) == "random-32"
    assert (
        f"beats the best single start by at most {mix['random-32']:.3f} (random-32: "
        f"{r32['best_mixed_placement']['weak_mcc']:.3f} against {best['random-32']:.3f})"
    ) in text
    stuck = ("seed-4", "seed-8", "random-37", "random-39")
    ceiling = max(max(best[i], runs[i]["best_mixed_placement"]["weak_mcc"]) for i in stuck)
    assert f"is at or below {ceiling:.3f}" in text
    # RESULTS.md and the Status section quote the same figures
    results = _read_squeezed("RESULTS.md")
    assert f"below the best of its starts on {n - len(above)} of the {n} instances" in results
    assert f"recover {consensus} of {n} against the defaults' own {counts[0]}" in results
    lowest = runs["seed-2"]["starts"]["vae"]["weak_mcc"]
    assert (
        f"reaches weak MCC {min(parts):.3f}–{max(parts):.3f}, even where the start itself is "
        f"at {lowest:.3f}"
    ) in results
    assert f"beats the best start by at most {mix['random-32']:.3f}" in results
    assert f"every start reaches weak MCC {min(parts):.3f}–{max(parts):.3f}" in text
    assert f"past the best start by more than {mix['random-32']:.3f} (finding 48)" in text


def test_combine_starts_more_data_equals_its_results() -> None:
    """Finding 49 (docs/recovery_levers.md) equals results/levers/combine_starts/more-data/:
    with 4 and 3 times the points the defaults still miss random-37 and random-39."""
    folder = ROOT / "results" / "levers" / "combine_starts"
    text = _read_squeezed("docs/recovery_levers.md")
    for instance, factor in (("random-37", 4), ("random-39", 3)):
        more = json.loads((folder / "more-data" / f"{instance}-x{factor}.json").read_text())
        base = json.loads((folder / f"{instance}.json").read_text())["starts"]["vae"]
        fit = more["defaults"]
        assert more["factor"] == factor and not _recovers(fit) and not _recovers(base)
        n = more["n_samples"]
        assert (
            f"with {factor} times the points ({n:,}) they end at {fit['weak_mcc']:.3f} / "
            f"{fit['accuracy']:.3f}, against {base['weak_mcc']:.3f} / {base['accuracy']:.3f} "
            f"on its {n // factor:,}"
        ) in text
    assert (
        "with 3 and 4 times the points the defaults still miss random-39 and random-37 (finding 49)"
    ) in text


def test_contact_glue_table_and_findings_equal_their_results() -> None:
    """The eighteenth round's table and findings 50-52 (docs/recovery_levers.md), and the
    RESULTS.md paragraph, equal results/levers/contact_glue/, whose defaults are the
    seventeenth round's `vae` fits."""
    folder = ROOT / "results" / "levers" / "contact_glue"
    runs = {i: json.loads((folder / f"{i}.json").read_text()) for i in COMBINE_INSTANCES}
    assert {p.stem for p in folder.glob("*.json")} == set(COMBINE_INSTANCES)
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text, results = _squeezed(doc), _read_squeezed("RESULTS.md")

    def cell(fit: dict) -> str:
        return f"{fit['weak_mcc']:.3f} / {fit['accuracy']:.3f}"

    worst = {i: min(r["within_component_weak_mcc"].values()) for i, r in runs.items()}
    for i, r in runs.items():
        d = r["defaults"]
        vae = json.loads((ROOT / "results" / "levers" / "combine_starts" / f"{i}.json").read_text())
        assert (d["weak_mcc"], d["accuracy"]) == (  # bit for bit
            vae["starts"]["vae"]["weak_mcc"],
            vae["starts"]["vae"]["accuracy"],
        )
        assert (
            f"| {i} | {cell(d)} | {worst[i]:.3f} | {r['scrambled_oracle_weak_mcc']:.3f} → "
            f"{r['glued_oracle_weak_mcc']:.3f} | {r['glued_defaults_weak_mcc']:.3f} | "
            f"{r['noise_estimate']:.4f} / {d['noise_variance']:.4f} / "
            f"{r['true_noise_variance']:.4f} | {cell(r['noise_fixed'])} |"
        ) in doc
    n = len(runs)
    hits = sorted(i for i, r in runs.items() if _recovers(r["defaults"]))
    fixed = sum(_recovers(r["noise_fixed"]) for r in runs.values())
    assert f"| recovered | {len(hits)}/{n} | | | | | {fixed}/{n} |" in doc
    # finding 50
    oracle = {i: r["glued_oracle_weak_mcc"] for i, r in runs.items()}
    placed = [i for i, v in oracle.items() if v >= 0.95]
    assert sorted(set(runs) - set(placed)) == sorted(["seed-3", "seed-8", "random-37", "random-39"])
    span = f"{min(oracle.values()):.3f}–{max(oracle.values()):.3f}"
    assert f"reach weak MCC {span} on the {n} instances, and 0.95 or more on {len(placed)}" in text
    assert f"weak MCC {span}, and 0.95 or more on {len(placed)} of the {n} instances" in results
    # finding 51
    moved = {i: r["glued_defaults_weak_mcc"] - r["defaults"]["weak_mcc"] for i, r in runs.items()}
    near = [i for i, v in moved.items() if abs(v) <= 0.02]
    assert sorted(set(runs) - set(near)) == ["random-39", "seed-0"]
    assert f"within 0.02 of the defaults on {len(near)} of the {n} instances" in text
    assert f"seed-0 loses {-moved['seed-0']:.3f}; random-39 loses {-moved['random-39']:.3f}" in text
    assert not any(_recovers({**r["defaults"], "weak_mcc": r["glued_defaults_weak_mcc"]})
                   and not _recovers(r["defaults"]) for r in runs.values())  # fmt: skip
    misses = [i for i in runs if i not in hits]
    low = [i for i in misses if worst[i] < min(worst[h] for h in hits)]
    assert sorted(set(misses) - set(low)) == ["random-32"]
    hit_span = f"{min(worst[h] for h in hits):.3f}–{max(worst[h] for h in hits):.3f}"
    low_span = f"{min(worst[i] for i in low):.3f}–{max(worst[i] for i in low):.3f}"
    assert f"reaches weak MCC {hit_span} on the four recovered instances" in text
    assert f"On {len(low)} of the {len(misses)} misses it is lower, {low_span}" in text
    assert f"accuracy alone, {worst['random-32']:.3f})" in text
    assert f"{low_span} on {len(low)} of {len(misses)} misses against {hit_span}" in text
    assert f"{low_span} on {len(low)} of the {len(misses)} misses, against {hit_span}" in results
    # finding 52
    seeds = [r for i, r in runs.items() if i.startswith("seed-")]
    wide = [r for i, r in runs.items() if i.startswith("random-")]

    def span4(rows: list[dict], get) -> str:  # noqa: ANN001
        values = [get(r) for r in rows]
        return f"{min(values):.4f}–{max(values):.4f}"

    assert (
        f"below the truth on the seeds ({span4(seeds, lambda r: r['noise_estimate'])} against "
        f"{span4(seeds, lambda r: r['true_noise_variance'])}), where the defaults learn close "
        f"to it ({span4(seeds, lambda r: r['defaults']['noise_variance'])})"
    ) in text
    assert (
        f"({span4(wide, lambda r: r['noise_estimate'])} against "
        f"{span4(wide, lambda r: r['true_noise_variance'])}), where the learned variance is well "
        f"above it ({span4(wide, lambda r: r['defaults']['noise_variance'])})"
    ) in text
    assert all(
        r["noise_fixed"]["log_likelihood"] < r["defaults"]["log_likelihood"] for r in runs.values()
    )
    assert f"the defaults recover {fixed} of {n} against {len(hits)}, with a lower" in text
    assert f"recovers {fixed} of {n} against the defaults' {len(hits)}" in results


def test_contact_glue_rechart_tables_and_findings_equal_their_results() -> None:
    """The --rechart tables and findings 53-54 (docs/recovery_levers.md), and RESULTS.md,
    equal results/levers/contact_glue/rechart/, whose defaults came from another host than
    the round's other files."""
    folder = ROOT / "results" / "levers" / "contact_glue"
    runs = {
        i: json.loads((folder / "rechart" / f"{i}.json").read_text()) for i in COMBINE_INSTANCES
    }
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text, results = _squeezed(doc), _read_squeezed("RESULTS.md")
    n = len(runs)

    def cell(fit: dict) -> str:
        return f"{fit['weak_mcc']:.3f} / {fit['accuracy']:.3f}"

    def fits(r: dict) -> list[dict]:
        return [r["defaults"], *(step["refit"] for step in r["passes"])]

    def pair(r: dict) -> str:  # the likelier of the defaults and the first refit
        first = r["passes"][0]["refit"]
        return "refit" if first["log_likelihood"] > r["defaults"]["log_likelihood"] else "defaults"

    base = {i: json.loads((folder / f"{i}.json").read_text())["defaults"] for i in runs}
    shift = [max(abs(base[i][k] - r["defaults"][k]) for i, r in runs.items()) for k in
             ("weak_mcc", "accuracy")]  # fmt: skip
    assert f"up to {shift[0]:.3f} in weak MCC and {shift[1]:.3f} in accuracy" in text
    assert not _recovers(base["seed-7"]) and _recovers(runs["seed-7"]["defaults"])
    for i, r in runs.items():
        assert len(r["passes"]) == 3
        names = ["defaults", *(f"pass-{k + 1}" for k in range(3))]
        likeliest = max(zip(names, fits(r), strict=True), key=lambda t: t[1]["log_likelihood"])
        assert r["kept"] == likeliest[0]
        d, first = r["defaults"], r["passes"][0]
        starts = ", ".join(first["chart_starts"][c] for c in sorted(first["chart_starts"], key=int))
        for step in r["passes"]:
            for c, chosen in step["chart_starts"].items():
                lls = step["chart_log_likelihoods"][c]
                assert lls[chosen] == max(lls.values())
        f = first["refit"]
        assert (
            f"| {i} | {cell(d)} | {starts} | {first['glued_weak_mcc']:.3f} | {cell(f)} | "
            f"{d['log_likelihood']:.2f} / {f['log_likelihood']:.2f} | {pair(r)} |"
        ) in doc
        lls = " / ".join(f"{fit['log_likelihood']:.2f}" for fit in fits(r))
        cells = " | ".join(cell(fit) for fit in fits(r))
        assert f"| {i} | {cells} | {lls} | {r['kept']} |" in doc
    counts = [sum(_recovers(fits(r)[k]) for r in runs.values()) for k in range(4)]
    pairs = sum(_recovers(fits(r)[pair(r) == "refit"]) for r in runs.values())
    assert f"| recovered | {counts[0]}/{n} | | | {counts[1]}/{n} | | {pairs}/{n} |" in doc
    kept = sum(_recovers(fits(r)[0 if r["kept"] == "defaults" else int(r["kept"][-1])])
               for r in runs.values())  # fmt: skip
    row = " | ".join(f"{c}/{n}" for c in counts)
    assert f"| recovered | {row} | | {kept}/{n} |" in doc
    gained = [i for i, r in runs.items() if _recovers(fits(r)[1]) and not _recovers(r["defaults"])]
    lost = [i for i, r in runs.items() if _recovers(r["defaults"]) and not _recovers(fits(r)[1])]
    assert gained == [] and lost == ["seed-3", "seed-7"]
    assert f"It recovers {counts[1]} of {n} against the defaults' {counts[0]}" in text
    assert f"the pair recovers {pairs} of {n}" in text
    for i in ("seed-0", "random-37"):
        r = runs[i]
        assert fits(r)[1]["log_likelihood"] > r["defaults"]["log_likelihood"]
        assert f"{i} from {r['defaults']['weak_mcc']:.3f} to {fits(r)[1]['weak_mcc']:.3f}" in text
    seed3, seed7 = fits(runs["seed-3"])[1], fits(runs["seed-7"])[1]
    assert (
        f"on accuracy ({seed3['accuracy']:.3f}, {seed7['accuracy']:.3f} with weak MCC "
        f"{seed7['weak_mcc']:.3f})"
    ) in text
    assert 0.9495 <= fits(runs["seed-5"])[1]["weak_mcc"] < 0.95
    below = sum(
        r["passes"][0]["glued_weak_mcc"] <= r["defaults"]["weak_mcc"] for r in runs.values()
    )
    assert f"below the defaults on {below} of {n} instances" in text
    seed2 = fits(runs["seed-2"])
    assert f"here it moves it from {seed2[0]['weak_mcc']:.3f} to {seed2[1]['weak_mcc']:.3f}" in text
    earlier = json.loads((folder / "rechart" / "earlier-host" / "seed-2.json").read_text())
    move = f"{earlier['defaults']['weak_mcc']:.3f} to {earlier['refit']['weak_mcc']:.3f}"
    assert f"moved the folded seed-2 from {move}" in text
    for i in ("seed-0", "seed-2"):
        moves = ", ".join(f"{fit['weak_mcc']:.3f}" for fit in fits(runs[i])[1:])
        assert f"{i}: {moves}" in text
    assert runs["seed-2"]["kept"] == "pass-2" and _recovers(seed2[3]) and not _recovers(seed2[2])
    assert f"the fits recover {kept} of {n} against the defaults' {counts[0]}" in text
    oracle = sum(any(_recovers(fit) for fit in fits(r)) for r in runs.values())
    assert f"{oracle} of {n} instances have a recovered fit among the four" in text
    assert f"first refit recovers {counts[1]} of {n} against the defaults' {counts[0]}." in results
    assert f"three passes, the fits recover {kept} of {n}." in results
    assert f"seed-2 from weak MCC {move}; here it moves it from" in results


def test_kernel_rounding_table_and_findings_equal_their_results() -> None:
    """The nineteenth round's table and findings 55-56 (docs/recovery_levers.md) equal
    results/levers/kernel_rounding/."""
    folder = ROOT / "results" / "levers"
    runs = {
        i: json.loads((folder / "kernel_rounding" / f"{i}.json").read_text())
        for i in COMBINE_INSTANCES
    }
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)
    kernels = ("native", "avx2-host", "generic")
    n = len(runs)
    for i, r in runs.items():
        fits = r["fits"]
        assert [fits[k]["dispatched"] for k in kernels] == ["AVX512", "AVX2", "DEFAULT"]
        cells = " | ".join(
            f"{fits[k]['weak_mcc']:.3f} / {fits[k]['accuracy']:.3f}" for k in kernels
        )
        assert f"| {i} | {cells} |" in doc
    counts = " | ".join(
        f"{sum(_recovers(r['fits'][k]) for r in runs.values())}/{n}" for k in kernels
    )
    assert f"| recovered | {counts} |" in doc

    def spread(r: dict, key: str) -> float:
        values = [r["fits"][k][key] for k in kernels]
        return max(values) - min(values)

    assert f"moves by at most {max(spread(r, 'weak_mcc') for r in runs.values()):.3f}" in text
    others = max(spread(r, "accuracy") for i, r in runs.items() if i != "seed-8")
    assert f"Accuracy moves by at most {others:.3f} too, except on seed-8" in text
    seed8 = [runs["seed-8"]["fits"][k]["accuracy"] for k in kernels]
    assert f"(0.737 against {seed8[1]:.3f}-{seed8[2]:.3f}" in text and f"{seed8[0]:.3f}" == "0.737"
    flips = [i for i, r in runs.items() if len({_recovers(r["fits"][k]) for k in kernels}) > 1]
    assert flips == ["seed-7", "random-32"] and "But seed-7 and random-32 sit on the line" in text
    earlier = json.loads((folder / "contact_glue" / "seed-2.json").read_text())["defaults"]
    avx2 = runs["seed-2"]["fits"]["avx2-host"]["weak_mcc"]
    assert f"seed-2 ({avx2:.3f} here against {earlier['weak_mcc']:.3f} there)" in text
    first = json.loads((folder / "contact_glue" / "rechart" / "seed-2.json").read_text())
    before = json.loads(
        (folder / "contact_glue" / "rechart" / "earlier-host" / "seed-2.json").read_text()
    )
    move = f"from {before['refit']['weak_mcc']:.3f} (earlier host) to "
    assert move + f"{first['passes'][0]['refit']['weak_mcc']:.3f} (here)" in text


def test_exact_start_tables_and_findings_equal_their_results() -> None:
    """The twentieth round's tables and findings 57-58 (docs/recovery_levers.md) equal
    results/levers/exact_start/ and its ablate/."""
    folder = ROOT / "results" / "levers" / "exact_start"
    names = ("seed-0", "seed-4", "seed-8", "random-13")
    runs = {i: json.loads((folder / f"{i}.json").read_text()) for i in names}
    ablated = {i: json.loads((folder / "ablate" / f"{i}.json").read_text()) for i in names}
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)

    def cell(fit: dict) -> str:
        return f"{fit['weak_mcc']:.3f} / {fit['accuracy']:.3f}"

    def lls(fit: dict) -> str:
        return f"{fit['log_likelihood']:.2f} / {fit['held_log_likelihood']:.2f}"

    def span(values: list[float], digits: int) -> str:
        return f"{min(values):.{digits}f}-{max(values):.{digits}f}"

    variants = ("encoder-prior", "initial-noise", "regressed", "wide")
    for i, r in runs.items():
        t, s, d, e = r["true_model"], r["truth_start"], r["defaults"], r["exact_start"]
        exact = e["all_trained"]
        assert (
            f"| {i} | {lls(t)} | {cell(s)} | {lls(s)} | {cell(d)} | {lls(d)} | {cell(exact)} | "
            f"{lls(exact)} |"
        ) in doc
        cells = " | ".join(cell(ablated[i][v]["all_trained"]) for v in variants)
        assert f"| {i} | {cell(exact)} | {cells} |" in doc
    exact = {i: r["exact_start"]["all_trained"] for i, r in runs.items()}
    assert f"weak MCC {span([f['weak_mcc'] for f in exact.values()], 3)}, and" in text
    gap = {i: runs[i]["true_model"]["held_log_likelihood"] - f["held_log_likelihood"]
           for i, f in exact.items()}  # fmt: skip
    seeds = [gap[i] for i in names[:3]]
    assert f"within {span(seeds, 3)} nats per point" in text
    assert f"({gap['random-13']:.2f} on random-13)" in text
    assert [i for i, f in exact.items() if _recovers(f)] == ["seed-0", "seed-4"]
    assert not any(_recovers(r["truth_start"]) for r in runs.values())
    below = {
        key: span([r["true_model"][key] - r[fit][key] for r in runs.values()
                   for fit in ("truth_start", "defaults")], 2)
        for key in ("held_log_likelihood", "log_likelihood")
    }  # fmt: skip
    assert (
        f"{below['held_log_likelihood']} nats per point below the true model on held-out rows, "
        f"{below['log_likelihood']} on the training rows"
    ) in text
    weak = {v: [ablated[i][v]["all_trained"]["weak_mcc"] for i in names] for v in variants}
    base = [exact[i]["weak_mcc"] for i in names]
    prior = max(abs(a - b) for a, b in zip(weak["encoder-prior"], base, strict=True))
    noise = max(abs(a - b) for a, b in zip(weak["initial-noise"], base, strict=True))
    assert prior <= 0.001 and "ends where it ends with it (weak MCC within 0.001)" in text
    assert f"weak MCC (at most {noise:.3f})" in text
    seed8 = ablated["seed-8"]["initial-noise"]["all_trained"]["accuracy"]
    assert f"from {exact['seed-8']['accuracy']:.3f} to {seed8:.3f}" in text
    assert f"loses the truth on all four (weak MCC {span(weak['regressed'], 3)})" in text
    assert f"keeps it ({span(weak['wide'], 3)})" in text
    truth = [runs[i]["truth_start"]["weak_mcc"] for i in names]
    assert all(w > t for w, t in zip(weak["wide"], truth, strict=True))


EXACT_START_MORE = (
    *(f"facets-{k}" for k in range(4)),
    *(f"random-{k:02d}" for k in range(8)),
)


def test_exact_start_on_twelve_more_instances_equals_its_results() -> None:
    """The table after finding 59 and finding 60 (docs/recovery_levers.md) equal the 12
    files of results/levers/exact_start/ run on the lent machine's CPUs."""
    folder = ROOT / "results" / "levers" / "exact_start"
    runs = {i: json.loads((folder / f"{i}.json").read_text()) for i in EXACT_START_MORE}
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)

    def cell(fit: dict) -> str:
        return f"{fit['weak_mcc']:.3f} / {fit['accuracy']:.3f}"

    above, short = [], []
    for i, r in runs.items():
        t, s, d = r["true_model"], r["truth_start"], r["defaults"]
        staged, exact = r["exact_start"]["encoder_trained"], r["exact_start"]["all_trained"]
        held = "held_log_likelihood"
        assert (
            f"| {i} | {t['log_likelihood']:.2f} / {t[held]:.2f} | {staged[held]:.2f} | "
            f"{cell(s)} | {s[held]:.2f} | {cell(d)} | {d[held]:.2f} | {cell(exact)} | "
            f"{exact[held]:.2f} |"
        ) in doc, i
        above.append(exact[held] - max(s[held], d[held]))
        short.append(t[held] - staged[held])
    counts = {
        k: sum(_recovers(r[k].get("all_trained", r[k])) for r in runs.values())
        for k in ("truth_start", "defaults", "exact_start")
    }
    row = f"| recovered | | | {counts['truth_start']}/12 | | {counts['defaults']}/12 | | "
    assert row + f"{counts['exact_start']}/12 | |" in doc
    missed = [i for i, r in runs.items() if not _recovers(r["exact_start"]["all_trained"])]
    assert missed == ["random-06"] and "recovers all but random-06" in text
    pipelines = f"recovers {counts['truth_start']} and the defaults {counts['defaults']} in"
    assert f"The truth start {pipelines}" in text
    assert min(above) > 0 and f"by {min(above):.2f}-{max(above):.2f} nats per point" in text
    assert f"falls {min(short):.2f}-{max(short):.2f} nats per point below" in text
    assert f"(facets-3 {short[3]:.2f}, facets-0 {short[0]:.2f})" in text
    four = [
        json.loads((folder / f"{i}.json").read_text())
        for i in ("seed-0", "seed-4", "seed-8", "random-13")
    ]
    total = counts["exact_start"] + sum(_recovers(r["exact_start"]["all_trained"]) for r in four)
    assert f"the exact start recovers {total} of 16" in text
    results = _read_squeezed("RESULTS.md")
    assert (
        f"the exact start recovers {counts['exact_start']} (all but random-06, which the "
        f"ceiling misses too) against {counts['truth_start']} for the truth start and "
        f"{counts['defaults']} for the defaults, and ends the likeliest fit on all 12"
    ) in results


DRIFT_INSTANCES = ("random-22", "random-18", "random-17", "random-13", "seed-8", "seed-0")


def test_drift_table_and_finding_equal_their_results() -> None:
    """The --drift table and finding 61 (docs/recovery_levers.md) equal
    results/levers/exact_start/drift/, and its runs repeat --kept-truth's steps."""
    folder = ROOT / "results" / "levers" / "exact_start"
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text = _squeezed(doc)

    def arrow(a: float, b: float, digits: int) -> str:
        return f"{a:.{digits}f} → {b:.{digits}f}"

    falls, ratios, above = [], [], []
    for i in DRIFT_INSTANCES:
        points = json.loads((folder / "drift" / f"{i}.json").read_text())["drift"]["points"]
        true = json.loads((folder / f"{i}.json").read_text())["true_model"]
        kept = json.loads((folder / "kept-truth" / f"{i}.json").read_text())["kept_truth"]
        kept = kept["all_trained"]
        assert len(points) == 13 and [p["step"] for p in points] == list(range(0, 6001, 500))
        a, b = points[0], points[-1]
        assert b["weak_mcc"] == kept["weak_mcc"]  # the same steps
        cells = [
            arrow(a["weak_mcc"], b["weak_mcc"], 3),
            arrow(a["accuracy"], b["accuracy"], 3),
            arrow(a["bound"], b["bound"], 2),
            arrow(a["log_likelihood"], b["log_likelihood"], 2),
            arrow(a["held_log_likelihood"], b["held_log_likelihood"], 2),
            f"{true['log_likelihood']:.2f} / {true['held_log_likelihood']:.2f}",
            arrow(a["noise_variance"], b["noise_variance"], 4),
        ]
        assert f"| {i} | {' | '.join(cells)} |" in doc, i
        for key in ("bound", "log_likelihood", "held_log_likelihood"):
            assert b[key] > a[key], (i, key)
        assert b["weak_mcc"] < a["weak_mcc"]
        weak = [p["weak_mcc"] for p in points]
        falls.append(sum(q < p for p, q in itertools.pairwise(weak)))
        ratios.append(a["noise_variance"] / b["noise_variance"])
        if b["log_likelihood"] > true["log_likelihood"]:
            above.append(i)
            assert b["held_log_likelihood"] < true["held_log_likelihood"]
            quoted = f"{b['log_likelihood']:.2f} against {true['log_likelihood']:.2f}"
            assert quoted in text
    assert f"(at {min(falls)}-{max(falls)} of the 12 checkpoints)" in text
    assert f"noise variance falls {min(ratios):.1f}-{max(ratios):.1f} times" in text
    assert sorted(above) == ["random-17", "random-18", "seed-0"]
    assert "Three fits end above the true model's log-likelihood on the training rows" in text
    assert "seed-0, which keeps the truth (weak MCC 0.993;" in text
    results = _read_squeezed("RESULTS.md")
    assert "on two of six instances the drifted fit ends likelier on the training rows" in results


def test_rounding_and_exact_start_paragraphs_of_results_equal_their_results() -> None:
    """RESULTS.md's paragraphs on the nineteenth and twentieth rounds agree with the
    findings' results."""
    folder = ROOT / "results" / "levers"
    results = _read_squeezed("RESULTS.md")
    kernels = [json.loads((folder / "kernel_rounding" / f"{i}.json").read_text())["fits"]
               for i in COMBINE_INSTANCES]  # fmt: skip
    spread = max(
        max(f[k]["weak_mcc"] for k in f) - min(f[k]["weak_mcc"] for k in f) for f in kernels
    )
    counts = sorted(
        sum(_recovers(f[k]) for f in kernels) for k in ("native", "avx2-host", "generic")
    )
    assert f"Weak MCC moves by at most {spread:.3f}" in results
    assert f"the defaults recover {counts[0]}, {counts[1]} or {counts[2]} of 13" in results
    runs = {i: json.loads((folder / "exact_start" / f"{i}.json").read_text())
            for i in ("seed-0", "seed-4", "seed-8", "random-13")}  # fmt: skip
    weak = [r["exact_start"]["all_trained"]["weak_mcc"] for r in runs.values()]
    assert (
        f"it keeps weak MCC {min(weak):.3f}-{max(weak):.3f} and recovers seeds 0 and 4" in results
    )
    wide = [json.loads((folder / "exact_start" / "ablate" / f"{i}.json").read_text())["wide"][
        "all_trained"]["weak_mcc"] for i in runs]  # fmt: skip
    assert f"(weak MCC {min(wide):.3f}-{max(wide):.3f}, `--ablate`" in results
    doc = _read_squeezed("docs/recovery_levers.md")
    for phrase in ("within 0.025-0.052 nats per point", "0.15-1.97 nats per point below"):
        assert phrase in results and phrase in doc


def test_kept_truth_table_and_finding_equal_their_results() -> None:
    """The --kept-truth table and finding 59 (docs/recovery_levers.md), and RESULTS.md,
    equal results/levers/exact_start/kept-truth/ and the recovery benchmark's rows."""
    folder = ROOT / "results" / "levers" / "exact_start" / "kept-truth"
    bench = json.loads((ROOT / "results" / "recovery" / "results.json").read_text())["rows"]
    rows = {(r["instance"], r["method"]): r for r in bench}
    misses = [
        i for (i, method), r in rows.items() if method == "vade-truth-start" and not r["recovered"]
    ]
    runs = {i: json.loads((folder / f"{i}.json").read_text())["kept_truth"] for i in misses}
    assert len(runs) == 13
    doc = (ROOT / "docs" / "recovery_levers.md").read_text()
    text, results = _squeezed(doc), _read_squeezed("RESULTS.md")

    def cell(fit: dict) -> str:
        return f"{fit['weak_mcc']:.3f} / {fit['accuracy']:.3f}"

    stages = ("regressed", "encoder_trained", "all_trained")
    for i, k in runs.items():
        ceiling, truth = rows[(i, "true-posterior")], rows[(i, "vade-truth-start")]
        cells = " | ".join(cell(k[s]) for s in stages)
        assert f"| {i} | {cell(ceiling)} | {cell(truth)} | {cells} |" in doc
        assert k["all_trained"]["weak_mcc"] > truth["weak_mcc"]
    counts = [sum(_recovers(k[s]) for k in runs.values()) for s in stages]
    ceiling = sum(rows[(i, "true-posterior")]["recovered"] for i in runs)
    row = " | ".join(f"{c}/13" for c in counts)
    assert f"| recovered | {ceiling}/13 | 0/13 | {row} |" in doc
    kept = [i for i, k in runs.items() if _recovers(k["all_trained"])]
    assert kept == ["seed-0", "seed-4", "random-01", "random-09", "facets-3"]
    assert all(rows[(i, "true-posterior")]["recovered"] for i in kept)
    assert f"recovers {len(kept)} of the 13 instances it misses" in text
    assert f"recovers {len(kept)} of the 13 benchmark instances it misses" in results
    total = sum(r["recovered"] for (i, method), r in rows.items() if method == "vade-truth-start")
    assert f"at least {total + len(kept)}, if the kept" in text
    drops = [k["regressed"]["weak_mcc"] - k["all_trained"]["weak_mcc"] for k in runs.values()]
    assert min(drops) > 0 and f"(by {min(drops):.3f}-{max(drops):.3f})" in text
    r13 = runs["random-13"]
    assert _recovers(r13["regressed"]) and not _recovers(r13["all_trained"])
    assert f"regression alone ({cell(r13['regressed'])})" in text


def test_kept_truth_on_the_truth_start_recoveries_equals_its_results() -> None:
    """The paragraph after finding 59 (docs/recovery_levers.md) and RESULTS.md equal the
    --kept-truth files of the instances that vade-truth-start recovers (a resumable run:
    the count of instances done is part of the statement)."""
    folder = ROOT / "results" / "levers" / "exact_start" / "kept-truth"
    bench = json.loads((ROOT / "results" / "recovery" / "results.json").read_text())["rows"]
    recovered = [
        r["instance"] for r in bench if r["method"] == "vade-truth-start" and r["recovered"]
    ]
    done = {i: json.loads((folder / f"{i}.json").read_text())["kept_truth"]["all_trained"]
            for i in recovered if (folder / f"{i}.json").exists()}  # fmt: skip
    kept = sum(_recovers(fit) for fit in done.values())
    text, results = _read_squeezed("docs/recovery_levers.md"), _read_squeezed("RESULTS.md")
    statement = f"on {len(done)} of the {len(recovered)} instances the truth start recovers"
    assert statement in text and statement in results
    assert f"the kept training recovers {kept} of those {len(done)}" in text
    low = min(fit["weak_mcc"] for fit in done.values())
    assert f"(weak MCC {low:.3f} or more)" in text
    misses = [
        r["instance"] for r in bench if r["method"] == "vade-truth-start" and not r["recovered"]
    ]
    runs = [json.loads((folder / f"{i}.json").read_text())["kept_truth"] for i in misses]
    gained = sum(_recovers(run["all_trained"]) for run in runs)
    measured = len(done) + len(misses)
    assert f"recovers {kept + gained} of the {measured} instances measured" in text
    assert f"against the truth start's {len(done)} on the same {measured}" in text

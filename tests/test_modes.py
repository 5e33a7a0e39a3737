"""Modes of a stability study (idvae.experiments.modes) and the held-out split of studies.

The grouping and the warnings are pure functions of latents and scores: they are tested on
latents built with a known answer (affine images of a few base arrays), with no training.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from idvae.experiments import derive_seeds, stability
from idvae.experiments.agreement import agreement_matrix, group_runs
from idvae.experiments.modes import (
    AGREEMENT_IS_NOT_RECOVERY,
    MODES_DISAGREE,
    NO_TRUTH,
    Mode,
    ModeReport,
    ModeWarning,
    find_modes,
    mode_warnings,
    warn_modes,
)
from idvae.experiments.runs import RunContext
from idvae.experiments.study import MIN_HOLDOUT_SAMPLES, StabilityResult, holdout_split

N = 400


def _base(kind: int) -> np.ndarray:
    """Base latents no affine map relates: a 3-cluster mixture, and a nonlinear fold of it."""
    rng = np.random.default_rng(10)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    z = centres[rng.integers(0, 3, N)] + rng.normal(scale=0.7, size=(N, 2))
    if kind == 0:
        return z
    # the same points folded: cubic in one coordinate, a sine in the other
    return np.column_stack([(z[:, 0] - 2.0) ** 3, np.sin(1.5 * z[:, 1]) + 0.1 * z[:, 0]])


def _latents(pattern: str, seed: int = 0) -> list[np.ndarray]:
    """One run per letter: "A" an affine image of base 0, "B" of base 1 (random maps)."""
    rng = np.random.default_rng(seed)
    runs = []
    for letter in pattern:
        z = _base("AB".index(letter))
        mixing = rng.normal(size=(2, 2)) + 3.0 * np.eye(2)
        runs.append(z @ mixing + rng.normal(scale=5.0, size=2))
    return runs


# --------------------------------------------------------------------------- grouping


def test_bases_are_not_affinely_related():
    a, b = _latents("AB")
    agreement = agreement_matrix([a, b], random_state=0)
    assert agreement[0, 1] < 0.9


def test_three_and_two_affine_images_form_two_modes():
    latents = _latents("ABABA")
    report = find_modes(latents, [-3.0, -2.0, -3.1, -2.2, -3.2], random_state=0)
    assert [m.members for m in report.modes] == [(0, 2, 4), (1, 3)]
    assert [m.size for m in report.modes] == [3, 2]
    assert [m.index for m in report.modes] == [1, 2]
    first, second = report.modes
    assert first.heldout_elbo_mean == pytest.approx(-3.1)
    assert first.heldout_elbo_max == -3.0 and first.best_run == 0
    assert second.heldout_elbo_max == -2.0 and second.best_run == 1
    assert report.mode_of(3) == 2 and report.mode_of(4) == 1
    # within a mode the agreement is ~1, across modes it is below the threshold
    assert np.all(report.agreement[np.ix_([0, 2, 4], [0, 2, 4])] > 0.99)
    assert np.all(report.agreement[np.ix_([0, 2, 4], [1, 3])] < 0.95)
    np.testing.assert_allclose(report.agreement, report.agreement.T)


def test_failed_runs_are_in_no_mode():
    a1, a2 = _latents("AA")
    report = find_modes([a1, None, a2], [-1.0, None, -1.5], random_state=0)
    assert [m.members for m in report.modes] == [(0, 2)]
    assert report.mode_of(1) is None and report.n_grouped == 2
    assert np.isnan(report.agreement[1]).all()


def test_group_runs_is_single_linkage():
    # 0-1 and 1-2 agree, 0-2 do not: one chain, one mode; run 3 alone; run 4 failed (NaN)
    agreement = np.array(
        [
            [1.00, 0.97, 0.50, 0.10, np.nan],
            [0.97, 1.00, 0.96, 0.10, np.nan],
            [0.50, 0.96, 1.00, 0.10, np.nan],
            [0.10, 0.10, 0.10, 1.00, np.nan],
            [np.nan] * 5,
        ]
    )
    assert group_runs(agreement, 0.95) == [[0, 1, 2], [3]]
    assert group_runs(agreement, 0.965) == [[0, 1], [2], [3]]
    with pytest.raises(ValueError, match=r"threshold in \(0, 1\]"):
        group_runs(agreement, 1.5)
    with pytest.raises(ValueError, match="square"):
        group_runs(agreement[:2], 0.9)


def test_best_run_is_the_highest_heldout_elbo_and_scores_the_truth():
    latents = _latents("AAB")
    truth = [0.7, 0.9, 0.4]
    report = find_modes(latents, [-2.0, -1.0, -5.0], weak_mcc_to_truth=truth, random_state=0)
    assert report.modes[0].best_run == 1 and report.modes[0].weak_mcc_to_truth == 0.9
    assert report.modes[1].weak_mcc_to_truth == 0.4
    assert report.has_truth and not any(NO_TRUTH in line for line in report.statements())
    # without held-out ELBOs the first member stands for the mode, and the reason is said
    bare = find_modes(latents, None, weak_mcc_to_truth=truth, random_state=0)
    assert bare.modes[0].best_run == 0 and bare.modes[0].heldout_elbo_max is None
    assert any("held-out ELBO not available" in line for line in bare.statements())


# --------------------------------------------------------------------------- warnings


def _warnings(pattern: str, elbo: list[float | None]) -> list[str]:
    return list(find_modes(_latents(pattern), elbo, random_state=0).warnings)


def test_agreement_warning_fires_when_an_outside_run_has_a_higher_elbo():
    messages = _warnings("AAAB", [-3.0, -3.1, -3.2, -2.0])
    assert len(messages) == 1 and messages[0].startswith(AGREEMENT_IS_NOT_RECOVERY)
    assert "run 3" in messages[0] and "3 of 4 runs" in messages[0]


@pytest.mark.parametrize(
    "elbo",
    [
        [-3.0, -3.1, -3.2, -4.0],  # the outside run is worse
        [-3.0, -3.1, -3.2, -3.0],  # equal is not higher
        [-3.0, -3.1, -3.2, None],  # the outside run has no held-out ELBO
        [None, None, None, -2.0],  # the largest mode has none: nothing to compare
        [None, None, None, None],
    ],
)
def test_agreement_warning_is_silent_otherwise(elbo):
    assert _warnings("AAAB", elbo) == []


def test_one_mode_raises_no_warning():
    assert _warnings("AAA", [-3.0, -2.0, -1.0]) == []
    assert _warnings("A", [-3.0]) == []
    assert find_modes([None, None], None).modes == ()


@pytest.mark.parametrize(
    ("pattern", "elbo", "why"),
    [
        ("AABB", [-3.0, -3.0, -2.0, -2.0], "no mode holds a majority"),  # 2 + 2
        ("AAABB", [-3.0, -3.0, -3.0, -4.0, -4.0], "2 modes hold two runs or more"),  # 3 + 2
        ("AB", [-1.0, -2.0], "no mode holds a majority"),  # 1 + 1
    ],
)
def test_disagreement_warning(pattern, elbo, why):
    messages = _warnings(pattern, elbo)
    assert len(messages) == 1 and messages[0].startswith(MODES_DISAGREE)
    assert why in messages[0]


def test_both_warnings_can_fire():
    # 3 + 2: a majority mode, a second shared mode, and a better ELBO outside the first
    messages = _warnings("AAABB", [-3.0, -3.0, -3.0, -2.0, -2.5])
    assert [m.split(":")[0] for m in messages] == [
        AGREEMENT_IS_NOT_RECOVERY.split(":")[0],
        MODES_DISAGREE,
    ]


def test_mode_warnings_on_modes_alone():
    modes = [Mode(1, (0, 1), -3.0, -3.0, 0), Mode(2, (2,), -1.0, -1.0, 2)]
    assert mode_warnings(modes, [-3.0, -3.0, -1.0])[0].startswith(AGREEMENT_IS_NOT_RECOVERY)
    assert mode_warnings(modes, [-3.0, -3.0, -4.0]) == []
    assert mode_warnings([], []) == []


def test_warn_modes_issues_each_warning_as_a_mode_warning():
    report = find_modes(_latents("AAABB"), [-3.0, -3.0, -3.0, -2.0, -2.5], random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_modes(report)
    assert [str(w.message) for w in caught] == list(report.warnings)
    assert all(issubclass(w.category, ModeWarning) for w in caught)


def test_no_truth_statement_never_presents_agreement_as_recovery():
    report = find_modes(_latents("AAA"), [-1.0, -1.0, -1.0], random_state=0)
    lines = report.statements()
    assert lines[0].startswith("3 runs fall into 1 mode")
    assert NO_TRUTH in lines and "does not establish recovery" in NO_TRUTH


def test_report_round_trips_through_json():
    report = find_modes(
        [*_latents("AAB"), None], [-2.0, -1.0, -5.0, None], weak_mcc_to_truth=[0.7, 0.9, 0.4, None]
    )
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    again = ModeReport.from_dict(data)
    assert again.modes == report.modes and again.warnings == report.warnings
    np.testing.assert_array_equal(again.agreement, report.agreement)
    assert again.heldout_elbo == report.heldout_elbo
    assert again.weak_mcc_to_truth == report.weak_mcc_to_truth
    rows = report.rows()
    assert {r["metric"] for r in rows if r["scope"] == "mode"} >= {"size", "heldout_elbo_max"}


# --------------------------------------------------------------------------- held-out split


def test_holdout_split_is_disjoint_complete_and_seeded():
    fit, held = holdout_split(100, 0.2, random_state=3)
    assert held.size == 20 and fit.size == 80
    assert np.intersect1d(fit, held).size == 0
    np.testing.assert_array_equal(np.union1d(fit, held), np.arange(100))
    again_fit, again_held = holdout_split(100, 0.2, random_state=3)
    np.testing.assert_array_equal(held, again_held)
    assert not np.array_equal(held, holdout_split(100, 0.2, random_state=4)[1])
    with pytest.raises(ValueError, match=f"at least {MIN_HOLDOUT_SAMPLES} held-out rows"):
        holdout_split(20, 0.2)
    with pytest.raises(ValueError, match=r"holdout in \[0, 1\)"):
        holdout_split(100, 1.0)


def test_run_context_splits_per_sample_fit_arguments():
    x = np.arange(20.0).reshape(10, 2)
    u = np.arange(10)
    context = RunContext(
        make_estimator=lambda s: None,
        x=x,
        fit_kwargs={"u": u, "flag": "keep"},
        holdout_rows=np.array([1, 4]),
    )
    x_fit, kwargs = context.fit_arguments()
    np.testing.assert_array_equal(kwargs["u"], [0, 2, 3, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(x_fit[:, 0] / 2, kwargs["u"])
    assert kwargs["flag"] == "keep"
    x_held, held_kwargs = context.holdout_arguments()
    np.testing.assert_array_equal(held_kwargs["u"], [1, 4])
    np.testing.assert_array_equal(x_held, x[[1, 4]])


class Recorder:
    """PCA latents with a seed-dependent linear map, a Gaussian score, and a record of the
    rows it was fitted and scored on (in-process runs only)."""

    fitted: list[np.ndarray] = []
    scored: list[np.ndarray] = []

    def __init__(self, *, random_state: int | None = None) -> None:
        self.random_state = random_state

    def fit(self, x: np.ndarray) -> Recorder:
        Recorder.fitted.append(x.copy())
        rng = np.random.default_rng(self.random_state)
        self.mean_ = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        self.components_ = vt[:2]
        self.mixing_ = rng.normal(size=(2, 2)) + 2.0 * np.eye(2)
        self.scale_ = float(x.std()) * (1.0 + (self.random_state or 0) % 7)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) @ self.components_.T @ self.mixing_.T

    def score(self, x: np.ndarray) -> float:
        Recorder.scored.append(x.copy())
        return float(-0.5 * np.mean(((x - self.mean_) / self.scale_) ** 2) - np.log(self.scale_))


def _rows_of(x: np.ndarray, part: np.ndarray) -> np.ndarray:
    """The indices of ``part``'s rows in ``x`` (rows are distinct)."""
    lookup = {row.tobytes(): i for i, row in enumerate(x)}
    return np.sort([lookup[row.tobytes()] for row in part])


def test_study_fits_no_run_on_the_heldout_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    Recorder.fitted.clear()
    Recorder.scored.clear()
    result = stability(lambda s: Recorder(random_state=s), x, n_runs=3, random_state=5)
    fit_rows, held_rows = holdout_split(200, 0.2, random_state=5)
    np.testing.assert_array_equal(result.holdout_rows, held_rows)
    assert len(Recorder.fitted) == 3 and len(Recorder.scored) == 3
    for fitted, scored in zip(Recorder.fitted, Recorder.scored, strict=True):
        np.testing.assert_array_equal(_rows_of(x, fitted), fit_rows)
        np.testing.assert_array_equal(_rows_of(x, scored), held_rows)
    assert all(r.heldout_elbo is not None for r in result.runs)
    assert result.latents[0].shape == (200, 2)  # every run transforms all of X
    # the runs differ by a linear map of the same PCA scores: one mode, no warning
    assert [m.size for m in result.modes.modes] == [3]
    assert result.config["holdout"] == {"fraction": 0.2, "n_holdout": 40, "n_fit": 160,
                                        "note": None}  # fmt: skip


def test_tiny_data_says_there_is_no_split():
    x = np.random.default_rng(0).normal(size=(30, 3))
    Recorder.fitted.clear()
    with pytest.warns(ModeWarning, match="no held-out split"):
        result = stability(lambda s: Recorder(random_state=s), x, n_runs=2)
    assert all(f.shape[0] == 30 for f in Recorder.fitted)  # fitted on all rows
    assert result.holdout_rows is None
    assert all(r.heldout_elbo is None for r in result.runs)
    assert "no held-out split" in result.modes.heldout_note
    assert any("held-out ELBO not available" in line for line in result.modes.statements())


def test_holdout_zero_fits_all_rows_quietly():
    x = np.random.default_rng(0).normal(size=(100, 3))
    Recorder.fitted.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = stability(lambda s: Recorder(random_state=s), x, n_runs=2, holdout=0)
    assert all(f.shape[0] == 100 for f in Recorder.fitted)
    assert result.modes.heldout_note.startswith("holdout=0")


def test_resume_regroups_stored_runs_without_refitting(tmp_path):
    x = np.random.default_rng(1).normal(size=(150, 4))
    out = tmp_path / "study"
    Recorder.fitted.clear()
    first = stability(lambda s: Recorder(random_state=s), x, n_runs=2, random_state=1, out=out)
    second = stability(
        lambda s: Recorder(random_state=s), x, n_runs=3, random_state=1, out=out, resume=True
    )
    assert len(Recorder.fitted) == 3  # two runs, then only the third
    assert [r.resumed for r in second.runs] == [True, True, False]
    # the stored runs keep their held-out ELBO and are regrouped with the new one
    assert [r.heldout_elbo for r in second.runs[:2]] == [r.heldout_elbo for r in first.runs]
    assert first.modes.n_grouped == 2 and second.modes.n_grouped == 3
    stored = json.loads((out / "stability.json").read_text())
    assert [m["members"] for m in stored["modes"]["modes"]] == [[0, 1, 2]]
    again = StabilityResult.from_dict(stored)
    assert again.modes.modes == second.modes.modes


class Folding(Recorder):
    """A Recorder whose latents are cubed when ``fold``: no affine map undoes that."""

    def __init__(self, *, fold: bool = False, random_state: int | None = None) -> None:
        super().__init__(random_state=random_state)
        self.fold = fold

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = super().transform(x)
        return z**3 if self.fold else z


def test_stability_issues_the_disagreement_warning():
    """Two runs whose latents no affine map relates: the modes disagree, as a warning."""
    x = np.random.default_rng(2).normal(size=(300, 2)) @ np.diag([3.0, 1.0])
    second = derive_seeds(0, 2)[1]
    with pytest.warns(ModeWarning, match=MODES_DISAGREE):
        result = stability(
            lambda s: Folding(fold=s == second, random_state=s), x, n_runs=2, random_state=0
        )
    assert [m.members for m in result.modes.modes] in ([(0,), (1,)], [(1,), (0,)])
    assert result.modes.warnings[0].startswith(MODES_DISAGREE)


# --------------------------------------------------------------------------- end to end


def test_small_vade_study_returns_modes(tmp_path):
    from idvae.experiments import EstimatorSpec
    from idvae.report import stability_section
    from idvae.report.stability import PAPER_AFFINE_CLAIM
    from idvae.simulate import sample_model

    sim = sample_model(300, latent_dim=2, obs_dim=5, n_components=2, random_state=0)
    spec = EstimatorSpec(
        "vade",
        {"n_components": 2, "encoder_sizes": [16], "decoder_sizes": [16],
         "pretrain_epochs": 1, "epochs": 2, "batch_size": 50},
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModeWarning)  # two barely trained runs may disagree
        result = stability(spec, sim.x, n_runs=2, z_true=sim.z, prior_true=sim.prior,
                           out=tmp_path / "study")  # fmt: skip
    assert result.n_failed == 0 and result.holdout_rows.size == 60
    elbo = [r.heldout_elbo for r in result.runs]
    assert all(np.isfinite(e) for e in elbo)
    assert sorted(r for m in result.modes.modes for r in m.members) == [0, 1]
    assert result.modes.has_truth
    for mode in result.modes.modes:
        assert mode.heldout_elbo_max == max(elbo[r] for r in mode.members)
        assert 0.0 <= mode.weak_mcc_to_truth <= 1.0
    stored = json.loads((tmp_path / "study" / "stability.json").read_text())
    assert stored["modes"]["modes"][0]["size"] == result.modes.modes[0].size
    stored_run = json.loads((tmp_path / "study" / "runs" / "000" / "result.json").read_text())
    assert stored_run["heldout_elbo"] == elbo[0]
    section = stability_section(result, heading="tiny")
    assert any(t.columns[0] == "mode" for t in section.tables)
    assert "Modes:" in section.text and "Ours, not the paper's" in section.text
    # the paper's claim is drawn as the paper's, apart from our text
    assert section.claims == (PAPER_AFFINE_CLAIM,)
    assert str(PAPER_AFFINE_CLAIM).startswith("Paper (Kivva et al.")


# --------------------------------------------------------------------------- the command


def test_stability_command_names_the_modes(tmp_path):
    import csv

    from typer.testing import CliRunner

    from idvae.cli import app
    from idvae.simulate import sample_model

    sim = sample_model(300, latent_dim=2, obs_dim=5, n_components=2, random_state=0)
    sim.save(tmp_path / "sim.npz")
    np.save(tmp_path / "x.npy", sim.x)
    fast = ["--runs", "2", "--components", "2", "--epochs", "2", "--pretrain-epochs", "1"]
    runner = CliRunner()

    with_truth = runner.invoke(
        app, ["stability", str(tmp_path / "sim.npz"), "--out", str(tmp_path / "a"), *fast]
    )
    assert with_truth.exit_code == 0, with_truth.output
    assert "Modes" in with_truth.output and "runs fall into" in with_truth.output
    assert "weak MCC (affine) to the truth of each mode's best run" in with_truth.output
    assert NO_TRUTH not in with_truth.output
    html = (tmp_path / "a" / "report.html").read_text()
    assert "held-out ELBO, max" in html
    assert '<span class="paper-label">Paper (Kivva et al., NeurIPS 2022, Thms' in html
    rows = list(csv.DictReader((tmp_path / "a" / "results.csv").open()))
    assert {r["metric"] for r in rows if r["scope"] == "mode"} >= {"size", "heldout_elbo_max"}
    assert any(r["metric"] == "heldout_elbo" for r in rows if r["scope"] == "run")

    # no truth: the output says that agreement does not establish recovery
    bare = runner.invoke(
        app, ["stability", str(tmp_path / "x.npy"), "--out", str(tmp_path / "b"), *fast]
    )
    assert bare.exit_code == 0, bare.output
    assert "runs fall into" in bare.output and NO_TRUTH in bare.output
    assert "does not establish recovery" in (tmp_path / "b" / "report.html").read_text()

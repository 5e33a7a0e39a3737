"""The demo's verdict (idvae.experiments.demo): agreement is not recovery."""

from __future__ import annotations

import numpy as np
import pytest

from idvae.experiments import RunRecord, StabilityResult
from idvae.experiments.demo import AGREEMENT_THRESHOLD, demo_verdict, study_verdict
from idvae.metrics import mcc

WRONG_OPTIMUM = "share an optimum that is not the truth"


def test_runs_that_agree_and_recover_the_truth():
    v = demo_verdict([0.99, 0.98, 0.97], [0.99, 0.98, 0.96])
    assert v.agree is True and v.n_recovered == 3 and v.n_runs == 3
    assert "the runs agree up to an affine map" in v.lines[0]
    assert "every run recovers the truth" in v.lines[1]
    assert "0.980" in v.lines[0] and "smallest pair 0.970" in v.lines[0]


def test_runs_that_agree_on_a_wrong_optimum():
    v = demo_verdict([0.99], [0.61, 0.63])
    assert v.agree is True and v.n_recovered == 0
    assert WRONG_OPTIMUM in v.lines[1]
    assert "0.620" in v.lines[1] and "lowest 0.610" in v.lines[1]


@pytest.mark.parametrize(
    ("between", "truth", "words"),
    [
        ([0.80], [0.57, 0.70], "no run recovers the truth"),
        ([0.80], [0.99, 0.70], "1 of 2 runs recover the truth"),
        # The mean of the pairs (0.975) passes the threshold; the smallest pair does not.
        ([0.99, 0.99, 0.99, 0.99, 0.99, 0.90], [0.6, 0.6, 0.6, 0.6], "no run recovers"),
    ],
)
def test_runs_that_disagree_are_never_said_to_share_an_optimum(between, truth, words):
    v = demo_verdict(between, truth)
    assert v.agree is False
    assert "the runs disagree" in v.lines[0]
    assert words in v.lines[1]
    assert WRONG_OPTIMUM not in " ".join(v.lines)


def test_threshold_is_inclusive_and_one_run_has_no_agreement():
    t = AGREEMENT_THRESHOLD
    v = demo_verdict([t], [t, t])
    assert v.agree is True and v.n_recovered == 2
    single = demo_verdict([], [0.5])
    assert single.agree is None and single.n_recovered == 0 and len(single.lines) == 1
    assert "the run does not recover the truth" in single.lines[0]
    assert "recovers the truth" in demo_verdict([], [0.99]).lines[0]


def test_without_truth_agreement_is_not_called_recovery():
    v = demo_verdict([0.99, 0.99, 0.98], None, n_runs=3)
    assert v.agree is True and v.n_recovered is None and v.n_runs == 3
    assert v.lines[1] == "no true z to compare with: agreement is not recovery"
    assert demo_verdict([0.5], None).lines == (demo_verdict([0.5], None).lines[0],)


def _fold(z: np.ndarray) -> np.ndarray:
    """A non-affine image of z: no affine map takes it back to z."""
    return np.column_stack([z[:, 0], z[:, 1] + 2.0 * z[:, 0] ** 2])


def test_each_branch_is_reached_from_latents_of_known_relation():
    """Weak MCC is 1 between affine images of one latent space and about 0.67 between z and
    the fold (z0, z1 + 2 z0^2) of Gaussian z: its second coordinate has correlation
    1 / sqrt(1 + 8) = 1/3 with the best linear function of z."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 2))
    a, b = np.array([[2.0, 1.0], [0.5, -1.0]]), np.array([[0.0, 3.0], [-1.0, 0.2]])

    def weak(p, q):
        return mcc(p, q, alignment="cca", random_state=1)

    assert weak(z, _fold(z)) == pytest.approx(2 / 3, abs=0.03)
    cases = {
        "agree, recover": [z @ a + 1.0, z @ b - 2.0],
        "agree, wrong optimum": [_fold(z) @ a, _fold(z) @ b + 5.0],
        "disagree": [z @ a, _fold(z) @ b],
    }
    verdicts = {}
    for name, (run_a, run_b) in cases.items():
        verdicts[name] = demo_verdict([weak(run_a, run_b)], [weak(z, run_a), weak(z, run_b)])
    assert (verdicts["agree, recover"].agree, verdicts["agree, recover"].n_recovered) == (True, 2)
    wrong = verdicts["agree, wrong optimum"]
    assert (wrong.agree, wrong.n_recovered) == (True, 0) and WRONG_OPTIMUM in wrong.lines[1]
    split = verdicts["disagree"]
    assert (split.agree, split.n_recovered) == (False, 1)
    assert "1 of 2 runs recover the truth" in split.lines[1]


def test_study_verdict_reads_finished_runs_only():
    nan = np.nan
    weak = np.array([[1.0, nan, 0.99], [nan, 1.0, nan], [0.99, nan, 1.0]])
    result = StabilityResult(
        runs=[
            RunRecord(0, 11, "ok", truth={"weak_mcc": 0.6}),
            RunRecord(1, 12, "failed", error="loss became NaN"),
            RunRecord(2, 13, "ok", truth={"weak_mcc": 0.62}),
        ],
        matrices={"weak_mcc": weak},
        latents=[None, None, None],
    )
    v = study_verdict(result)
    assert v == demo_verdict([0.99], [0.6, 0.62])
    assert v.agree is True and v.n_runs == 2 and WRONG_OPTIMUM in v.lines[1]


class _RecordingEstimator:
    """Stands in for VaDE: its latents are an affine map of the true z (the first two columns
    of x), and its score is the mean of the rows' first column, so the reference's numbers
    say which rows it was fitted and scored on."""

    def __init__(self, pretrain, random_state, scale=2.0):
        self.pretrain, self.random_state, self.scale = np.asarray(pretrain), random_state, scale

    fitted: list = []

    def fit(self, x):
        np.testing.assert_array_equal(x[:, :2], self.pretrain)  # started at the rows' truth
        self.fitted.append(x[:, 2].copy())
        return self

    def transform(self, x):
        return self.scale * x[:, :2] + 1.0

    def score(self, x):
        return float(x[:, 0].mean())


def test_oracle_reference_fits_the_fit_rows_from_their_truth_and_scores_the_held_out_rows():
    from types import SimpleNamespace

    from idvae.experiments.demo import oracle_reference
    from idvae.experiments.runs import EstimatorSpec

    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 2))
    x = np.column_stack([z, np.arange(200.0)])
    sim = SimpleNamespace(x=x, z=z)
    held = np.arange(150, 200)
    result = StabilityResult(runs=[], matrices={}, latents=[])
    result.holdout_rows = held
    spec = EstimatorSpec(f"{__name__}:_RecordingEstimator", {"scale": 3.0})
    reference = oracle_reference(spec, sim, result, random_state=5)
    np.testing.assert_array_equal(_RecordingEstimator.fitted[-1], np.arange(150.0))
    # scored on the held-out rows only; fitted on the others, from their true z
    assert reference["heldout_elbo"] == pytest.approx(x[held, 0].mean())
    assert reference["weak_mcc_to_truth"] == pytest.approx(1.0)
    result.holdout_rows = None
    assert oracle_reference(spec, sim, result, random_state=5)["heldout_elbo"] is None


@pytest.mark.parametrize(
    ("best", "reference", "words"),
    [
        (10.10, 10.15, "the runs did not find the highest-ELBO optimum"),
        (10.15, 10.10, "no fit reaches a higher held-out ELBO than the runs' best mode"),
        (10.15, 10.15, "no fit reaches a higher held-out ELBO than the runs' best mode"),
        (None, 10.15, "cannot say whether the runs found the highest-ELBO optimum"),
        (10.15, None, "cannot say whether the runs found the highest-ELBO optimum"),
    ],
)
def test_reference_line_says_whether_the_runs_found_the_highest_elbo(best, reference, words):
    from idvae.experiments.demo import reference_line

    line = reference_line(best, {"heldout_elbo": reference, "weak_mcc_to_truth": 0.98})
    assert words in line and "weak MCC 0.980" in line
    if best is not None and reference is not None and reference > best:
        assert f"+{reference - best:.4f} per sample" in line

"""The seeds of a study's runs and the rows it keeps out of every fit.

Everything random in a study derives from one ``SeedSequence(random_state)``: run i's seed is
its stream i, the held-out rows come from stream ``HOLDOUT_STREAM``, the rows a large study
scores its runs on from ``SCORE_STREAM`` and the out-of-sample splits of the metrics from
stream ``METRIC_STREAM``. Seed i does not depend on the number of
runs, so a study extended to more runs keeps its first runs, and an int ``random_state``
gives the same seeds and split on every machine.
"""

from __future__ import annotations

import warnings

import numpy as np

from idvae._validation import RandomState, check_positive_int, check_random_state
from idvae.experiments.modes import ModeWarning

__all__ = [
    "HOLDOUT",
    "HOLDOUT_STREAM",
    "METRIC_STREAM",
    "MIN_HOLDOUT_SAMPLES",
    "SCORE_STREAM",
    "base_entropy",
    "check_holdout",
    "child_seed",
    "derive_seeds",
    "holdout_split",
    "score_subset",
    "split_rows",
    "study_holdout",
]

# the default fraction of X kept out of every run's fit, and the fewest held-out rows
# for which a held-out ELBO is computed
HOLDOUT = 0.2
MIN_HOLDOUT_SAMPLES = 10

# stream indices of SeedSequence(random_state) beside the runs' 0, 1, ...
METRIC_STREAM = 2**31 - 1
HOLDOUT_STREAM = 2**31 - 2
SCORE_STREAM = 2**31 - 3


def base_entropy(random_state: RandomState) -> int:
    """The entropy of a study's ``SeedSequence``: an int as it is, else drawn from it."""
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        check_random_state(int(random_state))  # validates >= 0
        return int(random_state)
    return int(check_random_state(random_state).integers(2**63 - 1))


def derive_seeds(random_state: RandomState, n_runs: int) -> list[int]:
    """The seeds of runs 0..n_runs-1: independent streams of ``SeedSequence(random_state)``.

    Seed i does not depend on ``n_runs``, so a study extended to more runs keeps its first
    runs. An int ``random_state`` gives the same seeds on every machine.
    """
    base = base_entropy(random_state)
    return [child_seed(base, i) for i in range(check_positive_int(n_runs, "n_runs"))]


def child_seed(base: int, index: int) -> int:
    """The seed (a non-negative int32) of stream ``index`` of ``SeedSequence(base)``."""
    ss = np.random.SeedSequence(entropy=base, spawn_key=(index,))
    return int(ss.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def holdout_split(
    n_samples: int, holdout: float = HOLDOUT, random_state: RandomState = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The rows a study fits on and the rows it keeps out of every fit.

    ``round(holdout * n_samples)`` rows drawn without replacement from a stream of
    ``SeedSequence(random_state)`` of its own (the runs' seeds are not affected); the same
    ``random_state`` gives the same split as ``stability(..., random_state=random_state)``.

    Args:
        n_samples: the rows of X.
        holdout: the fraction kept out, in (0, 1).
        random_state: int, Generator or None.

    Returns:
        ``(fit_rows, holdout_rows)``: sorted, disjoint int arrays covering ``range(n_samples)``.

    Raises:
        ValueError: when fewer than ``MIN_HOLDOUT_SAMPLES`` rows would be held out or fewer
            than 2 left to fit on.
    """
    return split_rows(
        check_positive_int(n_samples, "n_samples"),
        check_holdout(holdout),
        base_entropy(random_state),
    )


def check_holdout(holdout: float) -> float:
    """``holdout`` as a float in [0, 1), or a TypeError / ValueError."""
    if isinstance(holdout, bool) or not isinstance(holdout, int | float | np.floating):
        raise TypeError(f"Expected holdout to be a number but got {type(holdout).__name__}")
    if not 0.0 <= float(holdout) < 1.0:
        raise ValueError(f"Expected holdout in [0, 1) but got {holdout}")
    return float(holdout)


def split_rows(n_samples: int, holdout: float, base: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`holdout_split` from checked arguments and the study's base entropy."""
    n_holdout = int(round(holdout * n_samples))
    if n_holdout < MIN_HOLDOUT_SAMPLES or n_samples - n_holdout < 2:
        raise ValueError(
            f"Expected at least {MIN_HOLDOUT_SAMPLES} held-out rows and 2 rows to fit on but "
            f"holdout={holdout:g} of {n_samples} rows keeps out {n_holdout}"
        )
    rng = np.random.default_rng(child_seed(base, HOLDOUT_STREAM))
    order = rng.permutation(n_samples)
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])


def study_holdout(
    n_samples: int, holdout: float, base: int
) -> tuple[np.ndarray | None, str | None]:
    """The held-out rows, or None and why there are none (a warning when the data are tiny).

    The warning is attributed to the caller of the function that calls this one (the caller
    of :func:`~idvae.experiments.study.stability`).
    """
    if holdout == 0.0:
        return None, "holdout=0: every run was fitted on all of X"
    try:
        _, rows = split_rows(n_samples, holdout, base)
    except ValueError as err:
        note = f"no held-out split ({err}); every run was fitted on all of X"
        warnings.warn(note, ModeWarning, stacklevel=3)
        return None, note
    return rows, None


def score_subset(n_samples: int, score_rows: int | None, base: int) -> np.ndarray | None:
    """The sorted rows a study's runs are transformed and scored on, or None for all of them.

    None when ``score_rows`` is None or the data have at most that many rows; else
    ``score_rows`` rows drawn without replacement from stream ``SCORE_STREAM`` of ``base``.
    """
    if score_rows is None:
        return None
    score_rows = check_positive_int(score_rows, "score_rows", minimum=2)
    if n_samples <= score_rows:
        return None
    rng = np.random.default_rng(child_seed(base, SCORE_STREAM))
    return np.sort(rng.choice(n_samples, score_rows, replace=False))

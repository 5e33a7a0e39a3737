"""Experiments: stability studies, executors (local pool, Ray) and the paper's reproductions.

``idvae.stability`` is :func:`idvae.experiments.study.stability`; the modes its runs fall
into (and the warnings that agreement is not recovery) are :mod:`idvae.experiments.modes`;
the experiments of App. J (Table 2, pinwheel, Table 3, the MLE study) run through
:mod:`idvae.experiments.reproduce`, their configurations are :mod:`idvae.experiments.configs`,
and the demo is :mod:`idvae.experiments.demo`.
"""

from __future__ import annotations

from idvae.experiments.demo import run_demo
from idvae.experiments.executors import execute_runs
from idvae.experiments.modes import Mode, ModeReport, ModeWarning, find_modes
from idvae.experiments.reproduce import EXPERIMENTS, experiment, reproduce
from idvae.experiments.runs import EstimatorSpec, RunContext, RunOutput
from idvae.experiments.study import (
    RunRecord,
    StabilityResult,
    StudyStore,
    derive_seeds,
    holdout_split,
    stability,
)

__all__ = [
    "EXPERIMENTS",
    "EstimatorSpec",
    "Mode",
    "ModeReport",
    "ModeWarning",
    "RunContext",
    "RunOutput",
    "RunRecord",
    "StabilityResult",
    "StudyStore",
    "derive_seeds",
    "execute_runs",
    "experiment",
    "find_modes",
    "holdout_split",
    "reproduce",
    "run_demo",
    "stability",
]

"""Experiments: stability studies, executors (local pool, Ray) and the paper's reproductions.

``idvae.stability`` is :func:`idvae.experiments.study.stability`; the configurations of
App. J (Table 2, pinwheel, Table 3, the MLE study) and the demo live in
:mod:`idvae.experiments.reproduce` and :mod:`idvae.experiments.demo`.
"""

from __future__ import annotations

from idvae.experiments.demo import run_demo
from idvae.experiments.executors import EstimatorSpec, RunContext, RunOutput, execute_runs
from idvae.experiments.reproduce import EXPERIMENTS, experiment, reproduce
from idvae.experiments.study import (
    RunRecord,
    StabilityResult,
    StudyStore,
    derive_seeds,
    stability,
)

__all__ = [
    "EXPERIMENTS",
    "EstimatorSpec",
    "RunContext",
    "RunOutput",
    "RunRecord",
    "StabilityResult",
    "StudyStore",
    "derive_seeds",
    "execute_runs",
    "experiment",
    "reproduce",
    "run_demo",
    "stability",
]

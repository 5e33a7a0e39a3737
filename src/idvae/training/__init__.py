"""The training engine shared by every estimator, kept apart from the models.

One epoch loop (``loop.fit_loop``) serves every model and both ways of fitting: a single
module (``stepper.ModuleStepper``) and R seeds trained as one batched model
(``stack.StackStepper``), through the small stepper protocol of ``stepper``. The loop owns
mini-batch order (each member's seeded ``torch.Generator``), Adam, the step learning-rate
schedule (``schedule``, as VaDE's code uses), the per-epoch records, optional early
stopping, the progress display (``progress``), the checkpoint hook and one non-finite
policy (``loop``'s docstring):

- **checkpoints** (``checkpoint``): after every epoch the whole state (model, optimiser,
  schedule, RNG states, epoch, history, config) is written atomically to
  ``checkpoint.pt``, a plain torch state dict readable with
  ``torch.load(..., weights_only=True)``; resuming from it gives bitwise the result of an
  uninterrupted run on CPU;
- **NaN/inf guard**: a non-finite loss or gradient rolls the member back to the start of
  the epoch, halves its learning rate and retries on its own; after ``max_retries`` it
  fails with ``TrainingError``;
- collapse detection lives with the estimators (``ComponentCollapseWarning``).

A *phase* (e.g. autoencoder pretraining, then the ELBO) is a ``Phase``; the estimator
asks for its phases in a fixed order through ``idvae.models._base.FitContext``, which hands
each to a phase runner: ``run_phase`` (one fit, checkpointed) by default, or the one of
``idvae.vectorize.fit_seeds``, which trains the same phase of several seeds with
``train_stacked``.
"""

from idvae.training.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CHECKPOINT_NAME,
    load_checkpoint,
    numpy_rng_state,
    save_checkpoint,
    set_numpy_rng_state,
)
from idvae.training.config import (
    ComponentCollapseWarning,
    Phase,
    PhaseResult,
    PhaseRunner,
    TrainConfig,
    TrainingError,
    resolve_device,
)
from idvae.training.loop import fit_loop, run_phase, train
from idvae.training.schedule import lr_at, preload_optimizer, step_lr
from idvae.training.stack import StackStepper, VectorizationError, train_stacked
from idvae.training.stepper import ModuleStepper, Stepper

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CHECKPOINT_NAME",
    "ComponentCollapseWarning",
    "ModuleStepper",
    "Phase",
    "PhaseResult",
    "PhaseRunner",
    "StackStepper",
    "Stepper",
    "TrainConfig",
    "TrainingError",
    "VectorizationError",
    "fit_loop",
    "load_checkpoint",
    "lr_at",
    "numpy_rng_state",
    "preload_optimizer",
    "resolve_device",
    "run_phase",
    "save_checkpoint",
    "set_numpy_rng_state",
    "step_lr",
    "train",
    "train_stacked",
]

"""The shared base of every idvae estimator, and the contract a model implements.

Two layers: a torch module that computes the model, and a scikit-learn estimator that
validates, scales, trains (through ``idvae.training``), saves and answers.

Contract of the torch module (subclass ``LatentModule``)
--------------------------------------------------------
Inputs are float32 tensors already scaled by the estimator; ``*aux`` are the auxiliary
tensors (empty for unsupervised models; ``(u,)`` for IVAE).

- ``loss(x, *aux, generator) -> dict[str, Tensor]``: key ``"loss"`` is the mean over the
  batch of the negative ELBO (a scalar to minimise); other keys are named scalar terms
  for the log (``"recon"``, ``"kl_z"``, ``"kl_c"``, ...), also batch means. ``generator``
  (on the module's device) draws the reparameterisation noise; use no other randomness.
- ``encode(x, *aux) -> (mean, logvar)``: the posterior q(z|x), arrays (n, latent_dim).
- ``decode(z) -> Tensor``: the mean of p(x|z) in scaled units, (n, n_features).
- ``prior_gmm() -> idvae.GMM``: the prior over z as a numpy mixture (float64).
- ``sample(n, generator) -> (x, z)``: decoder means of n draws from the prior, and the z.
- ``mixture_weights() -> list[Tensor]``: the weights of each mixture of the prior (one
  tensor per mixture/facet; ``[]`` when there is none); used by the collapse guard.
- every prior parameter is an ``nn.Parameter`` (so it is trained, saved and checkpointed).

Contract of the estimator (subclass ``LatentEstimator``)
--------------------------------------------------------
- ``__init__`` stores its keyword arguments only. The base reads these attributes:
  ``latent_dim``, ``epochs``, ``batch_size``, ``lr``, ``random_state``, ``device``,
  ``verbose``, and when present ``likelihood`` (``"gaussian"`` standardises X inside and
  ``sample`` undoes it; ``"bernoulli"`` requires X in [0, 1]), ``lr_decay``,
  ``lr_decay_every``, ``early_stopping``, ``patience``, ``max_retries``.
- ``_parameter_constraints`` (scikit-learn's format), checked at the start of ``fit``.
- class attributes ``_registry_name`` (``"vade"``, ...) and ``_aux_name`` (None, or the
  name of the auxiliary argument, ``"u"`` for IVAE), and the decorator ``@register``
  (``idvae.models._registry``; re-exported here with the rest of the contract), which is
  all it takes for ``load``, the CLI and the executors to find the model.
- ``_build_module(n_features, aux_dims) -> LatentModule`` (weights drawn from torch's
  default initialisers; the base seeds them without touching the global RNG).
- ``_check_data(n_samples, n_features)``: raise ``ValueError`` for impossible data
  (latent_dim > n_features, Remark 3.3; n_samples < n_components).
- ``_fit_phases(ctx)``: run the training phases through ``ctx.run_phase`` (checkpointed,
  resumable; a phase trained on other tensors than ``ctx.data``, e.g. with targets, passes
  them as ``data``) and deterministic steps through ``ctx.run_step`` (re-run on resume
  only when the checkpoint precedes them). The default runs one phase ``"train"`` of
  ``epochs``. ``ctx.run_phase`` hands each phase to the fit's phase runner (by default
  ``idvae.training.run_phase``; ``idvae.vectorize.fit_seeds`` passes its own), so a model
  never trains a module itself.
- optional ``_check_aux(aux, n_samples, fitting)`` (IVAE), ``_after_fit(data)`` (the
  scaled training tensors on the device, e.g. to set ``labels_`` without scaling X again),
  ``_fitted_state() / _set_fitted_state(d)`` (extra JSON-able fitted attributes to save),
  ``_test_config()`` (a small fast configuration for the contract tests) and
  ``_expected_failed_checks()`` (scikit-learn checks that cannot apply, with reasons).
- public methods with an auxiliary argument (IVAE: ``fit(X, u)``, ``transform(X, u)``)
  call ``self.fit_with(X, (u,), ...)`` / ``self._transform(X, (u,))``.

``fit_with(X, aux, phase_runner=...)`` is the one fit every ``fit`` delegates to, and the
public seam through which ``idvae.vectorize.fit_seeds`` trains the phases of several seeds
together: it passes a phase runner; nothing of the estimator is replaced at run time.

Fitted state: ``module_`` (the torch module, eval mode, on CPU after fit unless trained
elsewhere), ``prior_`` (``idvae.GMM``), ``history_`` (list of per-epoch dicts),
``n_features_in_``, ``aux_dims_``, ``scaler_mean_``, ``scaler_scale_``, ``n_iter_``,
``stopped_early_``, ``collapsed_components_`` (list of (mixture, component) pairs),
``device_`` (the device trained on).

The module is long because it is the contract and the one base of every model: the module's
interface, the fit context and the estimator (validation, scaling, fit, inference, save) are
read together when a model is written.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from idvae import __version__
from idvae._validation import check_positive_int, check_random_state
from idvae.mixture import GMM
from idvae.models._io import jsonable_params, save
from idvae.models._layers import (
    MIN_NOISE_VARIANCE,
    MIN_POSTERIOR_VARIANCE,
    MIN_PRIOR_VARIANCE,
    Decoder,
    GaussianEncoder,
    autoencoder_loss,
    check_sizes,
    gaussian_entropy,
    inverse_softplus,
    reparameterize,
    standard_vae_loss,
)
from idvae.models._registry import REGISTRY, register
from idvae.training import (
    CHECKPOINT_FORMAT_VERSION,
    CHECKPOINT_NAME,
    ComponentCollapseWarning,
    Phase,
    PhaseRunner,
    TrainConfig,
    TrainingError,
    load_checkpoint,
    numpy_rng_state,
    preload_optimizer,
    resolve_device,
    run_phase,
    save_checkpoint,
    set_numpy_rng_state,
    step_lr,
)

if TYPE_CHECKING:
    from idvae.training import PhaseResult

__all__ = [
    "COLLAPSE_FACTOR",
    "MIN_NOISE_VARIANCE",
    "MIN_POSTERIOR_VARIANCE",
    "MIN_PRIOR_VARIANCE",
    "ComponentCollapseWarning",
    "Decoder",
    "FitContext",
    "GaussianEncoder",
    "LatentEstimator",
    "LatentModule",
    "REGISTRY",
    "TrainingError",
    "autoencoder_loss",
    "check_sizes",
    "gaussian_entropy",
    "inverse_softplus",
    "register",
    "reparameterize",
    "standard_vae_loss",
]

# a component is collapsed when its weight < COLLAPSE_FACTOR / J
COLLAPSE_FACTOR = 1e-3
_MIN_SCALE = 1e-8
# What resuming reads from a checkpoint besides what ``idvae.training`` reads itself.
_RESUME_KEYS = frozenset(
    {"config", "module", "numpy_rng", "phase", "phase_index", "history_before", "engine", "epoch"}
)
_EVAL_BATCH = 4096
# rows per block when scaling or hashing X: float64 temporaries of ~2 MB, never a copy of X
_BLOCK_ELEMENTS = 2**18


def _row_blocks(X: np.ndarray) -> list[slice]:
    """Consecutive blocks of rows of X, each holding about ``_BLOCK_ELEMENTS`` numbers."""
    rows = max(1, _BLOCK_ELEMENTS // max(1, X.shape[1]))
    return [slice(start, start + rows) for start in range(0, X.shape[0], rows)]


def _column_moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased) variance of each column of X, float64, without a float64 copy of X."""
    if X.dtype == np.float64:
        return X.mean(axis=0), X.var(axis=0)
    mean = X.mean(axis=0, dtype=np.float64)
    sq = np.zeros(X.shape[1])
    for rows in _row_blocks(X):
        sq += ((X[rows] - mean) ** 2).sum(axis=0)
    return mean, sq / X.shape[0]


class LatentModule(nn.Module):
    """Base of the torch modules behind the estimators (see the module docstring)."""

    latent_dim: int

    def loss(self, x: torch.Tensor, *aux: torch.Tensor, generator: torch.Generator) -> dict:
        raise NotImplementedError

    def encode(self, x: torch.Tensor, *aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prior_gmm(self) -> GMM:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def mixture_weights(self) -> list[torch.Tensor]:
        return []


@dataclass(eq=False)
class FitContext:
    """Runs an estimator's training phases with checkpoints and resume.

    Phases are numbered in the order they are called; the checkpoint records the number of
    the phase it belongs to, so on resume earlier phases and steps are skipped (their
    result is in the restored module) and the checkpointed phase continues. Each phase is
    trained by ``phase_runner`` (``idvae.training.run_phase`` unless the fit is given
    another, as ``idvae.vectorize.fit_seeds`` does).

    Attributes:
        module: the torch module being trained.
        data: the training tensors on the device, ``(x, *aux)``.
        rng: the numpy Generator of the fit (restored on resume); draw seeds from it.
        device: the training device.
        history: the per-epoch records of all finished phases.
        last_result: the ``PhaseResult`` of the last phase trained, or None.
    """

    estimator: LatentEstimator
    module: LatentModule
    data: tuple[torch.Tensor, ...]
    rng: np.random.Generator
    generator: torch.Generator
    noise_generator: torch.Generator
    device: torch.device
    _: KW_ONLY
    checkpoint_path: Path | None
    fingerprint: str
    resume_state: dict[str, Any] | None
    phase_runner: PhaseRunner = run_phase
    history: list[dict[str, Any]] = field(init=False, default_factory=list)
    last_result: PhaseResult | None = field(init=False, default=None)
    _counter: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.resume_state is not None:
            self.history = json.loads(self.resume_state["history_before"])

    def _skip(self, index: int, name: str) -> bool:
        """Whether phase ``index`` finished before the checkpoint being resumed."""
        if self.resume_state is None:
            return False
        saved = int(self.resume_state["phase_index"])
        if saved == index and self.resume_state["phase"] != name:
            raise ValueError(
                f"Expected the checkpoint to be in phase {name!r} but it is in phase "
                f"{self.resume_state['phase']!r}; it was written by another model"
            )
        return saved > index

    def run_step(self, name: str, fn: Callable[[], None]) -> None:
        """Run a deterministic, untrained step (e.g. a GMM initialisation) unless resumed past."""
        index = self._counter
        self._counter += 1
        if not self._skip(index, name):
            fn()

    def run_phase(
        self,
        name: str,
        config: TrainConfig,
        *,
        loss_fn: Callable[..., dict[str, torch.Tensor]] | None = None,
        parameters: Sequence[nn.Parameter] | None = None,
        data: tuple[torch.Tensor, ...] | None = None,
    ) -> None:
        """Train for one phase (checkpointed after each epoch when a directory is given).

        Args:
            name: the phase's name (in the history and the checkpoint).
            config: its settings.
            loss_fn: a method of ``self.module`` to minimise (default ``module.loss``).
            parameters: the parameters trained (default all).
            data: the tensors the phase trains on (default ``self.data``), e.g. x paired
                with pretraining targets, so that batches index them together.
        """
        index = self._counter
        self._counter += 1
        if self._skip(index, name):
            return
        resume = None
        if self.resume_state is not None and int(self.resume_state["phase_index"]) == index:
            resume = self.resume_state
        history_before = json.dumps(self.history)

        def write(state: dict[str, Any]) -> None:
            state.update(
                format_version=CHECKPOINT_FORMAT_VERSION,
                idvae_version=__version__,
                config=self.fingerprint,
                phase_index=index,
                numpy_rng=numpy_rng_state(self.rng),
                history_before=history_before,
            )
            save_checkpoint(self.checkpoint_path, state)

        phase = Phase(
            name,
            config,
            self.module,
            self.data if data is None else data,
            self.generator,
            self.noise_generator,
            loss_fn=loss_fn,
            parameters=parameters,
            on_epoch_end=self.estimator._on_epoch_end(self.module),
            resume_state=resume,
            checkpoint=write if self.checkpoint_path is not None else None,
        )
        result = self.phase_runner(phase)
        self.history.extend(result.history)
        self.last_result = result


class LatentEstimator(TransformerMixin, BaseEstimator):
    """Base of the idvae estimators: validation, scaling, training, save, transform."""

    _registry_name: ClassVar[str] = ""
    _aux_name: ClassVar[str | None] = None

    # The parameters every estimator shares are declared once, here, with their constraints;
    # subclasses extend them with ``| {...}``. Their names and defaults are still spelled
    # out in each estimator's ``__init__``: scikit-learn reads an estimator's parameters
    # from the explicit signature of its own ``__init__`` (``get_params``, ``clone``;
    # ``*args`` is refused and ``**kwargs`` hides the parameters), and each estimator
    # adds parameters of its own and chooses its own defaults.
    _common_constraints: ClassVar[dict] = {
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "device": [str],
        "verbose": ["verbose"],
        "likelihood": [StrOptions({"gaussian", "bernoulli"})],
        "lr_decay": [Interval(Real, 0, 1, closed="right")],
        "lr_decay_every": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "max_retries": [Interval(Integral, 0, None, closed="left")],
    }

    # -- hooks for subclasses ---------------------------------------------------------------
    def _build_module(self, n_features: int, aux_dims: tuple[int, ...]) -> LatentModule:
        raise NotImplementedError

    def _check_data(self, n_samples: int, n_features: int) -> None:
        if self.latent_dim > n_features:
            raise ValueError(
                f"Expected latent_dim <= n_features but got latent_dim = {self.latent_dim}, "
                f"n_features = {n_features}; a decoder from a larger latent space to a "
                "smaller one cannot be injective, so the model is not identifiable "
                "(Remark 3.3)"
            )

    def _check_aux(
        self, aux: tuple[Any, ...], n_samples: int, fitting: bool
    ) -> tuple[np.ndarray, ...]:
        """Validate the auxiliary arrays; unsupervised models take none."""
        if any(a is not None for a in aux):
            raise TypeError(f"{type(self).__name__} takes no auxiliary variable but got one")
        return ()

    def _fit_phases(self, ctx: FitContext) -> None:
        ctx.run_phase("train", self._train_config(self.epochs))

    def _after_fit(self, data: tuple[torch.Tensor, ...]) -> None:
        """Set extra fitted attributes from the scaled training tensors ``(x, *aux)``.

        They are the tensors the module was trained on (float32, on the training device),
        so answers computed from them equal those of ``predict(X)`` without validating
        and scaling X again.
        """

    def _fitted_state(self) -> dict[str, Any]:
        """Extra JSON-able fitted attributes to save (beyond the base's)."""
        return {}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        # only the keys this class saves: a hand-edited file must not set module_ or prior_
        saved = set(self._fitted_state())
        unknown = sorted(set(state) - saved)
        if unknown:
            raise ValueError(f"the saved extra state holds {unknown}, not only {sorted(saved)}")
        for key, value in state.items():
            setattr(self, key, value)

    @classmethod
    def _test_config(cls) -> dict[str, Any]:
        """A small, fast configuration for the contract tests."""
        return {"latent_dim": 2, "epochs": 2, "batch_size": 32, "random_state": 0}

    @classmethod
    def _expected_failed_checks(cls) -> dict[str, str]:
        """scikit-learn estimator checks that cannot apply to this estimator, with reasons."""
        return {}

    # -- helpers ------------------------------------------------------------------------------
    @property
    def _likelihood(self) -> str:
        return getattr(self, "likelihood", "gaussian")

    def _train_config(self, epochs: int, **overrides: Any) -> TrainConfig:
        """The engine settings of a phase from the estimator's parameters."""
        settings = {
            "epochs": int(epochs),
            "batch_size": int(self.batch_size),
            "lr": float(self.lr),
            "lr_decay": float(getattr(self, "lr_decay", 1.0)),
            "lr_decay_every": int(getattr(self, "lr_decay_every", 10)),
            "early_stopping": bool(getattr(self, "early_stopping", False)),
            "patience": int(getattr(self, "patience", 5)),
            "max_retries": int(getattr(self, "max_retries", 5)),
            "verbose": int(self.verbose),
        }
        settings.update(overrides)
        return TrainConfig(**settings)

    def _train_with_refits(
        self,
        ctx: FitContext,
        epochs: int,
        data: tuple[torch.Tensor, ...],
        every: int | None,
        refit: Callable[[], None],
        first_epoch: int = 0,
    ) -> None:
        """``epochs`` epochs of the phase ``train`` on ``data`` in chunks of ``every`` (None:
        one chunk), with the step ``refit`` (of the prior) between chunks; the learning
        rate's step schedule runs on across the chunks, from epoch ``first_epoch``."""
        every = epochs if every is None else int(every)
        done = 0
        while done < epochs or epochs == 0:
            chunk = min(every, epochs - done)
            config = self._train_config(chunk)
            lr = step_lr(config.lr, config.lr_decay, config.lr_decay_every, first_epoch + done)
            ctx.run_phase("train", replace(config, lr=lr), data=data)
            done += chunk
            last = ctx.last_result
            if done >= epochs or (last is not None and last.stopped_early):
                break
            ctx.run_step("refit", refit)

    def _encoder_means(self, ctx: FitContext, x: torch.Tensor | None = None) -> np.ndarray:
        """E[z | x] on the training rows (or on the scaled rows x), float64, shape (n, m)."""
        return self._encoder_moments(ctx, x)[0]

    def _encoder_moments(
        self, ctx: FitContext, x: torch.Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The means and marginal variances of q(z | x) on the training rows (or on the
        scaled rows x), float64, shape (n, m) each; the module's mode is left as it was."""
        module = ctx.module
        x = ctx.data[0] if x is None else x
        was_training = module.training
        module.eval()
        with torch.no_grad():
            parts = [self._posterior_moments(module, b) for b in x.split(_EVAL_BATCH)]
        module.train(was_training)
        mean = torch.cat([p[0] for p in parts]).double().cpu().numpy()
        return mean, torch.cat([p[1] for p in parts]).double().cpu().numpy()

    @staticmethod
    def _posterior_moments(module: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The means and marginal variances of q(z | x) on the rows x, for a module whose
        ``encoder(x)`` returns the means and log-variances."""
        mean, logvar = module.encoder(x)
        return mean, logvar.double().exp()

    def _on_epoch_end(self, module: LatentModule) -> Callable[[int, dict], dict]:
        def record(epoch: int, _: dict) -> dict:
            weights = module.mixture_weights()
            if not weights:
                return {}
            return {"min_weight": float(min(float(w.detach().min()) for w in weights))}

        return record

    def _scale_fit(self, X: np.ndarray) -> None:
        if self._likelihood == "bernoulli":
            if X.min() < 0 or X.max() > 1:
                raise ValueError(
                    "Expected X in [0, 1] for likelihood='bernoulli' but got values in "
                    f"[{X.min():.4g}, {X.max():.4g}]"
                )
            self.scaler_mean_ = np.zeros(X.shape[1])
            self.scaler_scale_ = np.ones(X.shape[1])
        else:
            # centre each feature but divide all by ONE scale (the root mean variance): the
            # isotropic noise of model (3) stays isotropic, and features that are mostly
            # noise are not blown up to unit variance
            with np.errstate(over="ignore", invalid="ignore"):
                self.scaler_mean_, variance = _column_moments(X)
                scale = float(np.sqrt(np.mean(variance)))
            largest = max(abs(float(X.min())), abs(float(X.max())))
            if not (np.all(np.isfinite(self.scaler_mean_)) and np.isfinite(scale)):
                raise ValueError(
                    "Expected X whose mean and variance are finite in float64 but they "
                    f"overflow (|X| up to {largest:.3g}); divide X by a constant first"
                )
            if not scale > _MIN_SCALE * (1.0 + largest):
                scale = 1.0  # constant data: nothing to standardise
            self.scaler_scale_ = np.full(X.shape[1], scale)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        """(X - mean) / scale as a new float32 array (computed in float64, block by block).

        Equal bit for bit to ``((X.astype(float64) - mean) / scale).astype(float32)``, but
        the float64 temporaries hold a block of rows, never all of X.
        """
        mean, scale = self.scaler_mean_, self.scaler_scale_
        if not np.any(mean) and np.all(scale == 1.0):  # the identity (Bernoulli likelihood)
            return np.array(X, dtype=np.float32)
        out = np.empty(X.shape, dtype=np.float32)
        for rows in _row_blocks(X):
            out[rows] = (X[rows] - mean) / scale
        return out

    def _unscale(self, X: np.ndarray) -> np.ndarray:
        return X.astype(np.float64) * self.scaler_scale_ + self.scaler_mean_

    def _fingerprint(self, X: np.ndarray, aux: tuple[np.ndarray, ...]) -> str:
        """What a checkpoint must match to be resumed: class, parameters and data.

        The data are hashed as float64, block by block, so the same numbers give the same
        fingerprint whether X came as float32 or float64.
        """
        digest = hashlib.sha1()
        for rows in _row_blocks(X):
            digest.update(np.ascontiguousarray(X[rows], dtype=np.float64).view(np.uint8))
        for a in aux:
            digest.update(np.ascontiguousarray(a).view(np.uint8))
        # how training is displayed or where it runs does not change what is trained
        params = {
            k: v for k, v in self.get_params(deep=False).items() if k not in ("verbose", "device")
        }
        return json.dumps(
            {
                "class": type(self).__name__,
                "params": jsonable_params(params),
                "n_samples": int(X.shape[0]),
                "n_features": int(X.shape[1]),
                "data_sha1": digest.hexdigest(),
            },
            sort_keys=True,
        )

    def _new_module(self, n_features: int, aux_dims: tuple[int, ...], seed: int) -> LatentModule:
        """Build the module with weights seeded by ``seed``, leaving torch's global RNG as is."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._build_module(n_features, aux_dims)
        return module.float()

    def _validate_X(self, X: Any, *, reset: bool) -> np.ndarray:
        """X as a finite float64 or float32 array of shape (n_samples, n_features).

        float32 and float64 input is kept as it is (not copied); anything else becomes
        float64. The networks compute in float32, and ``_scale`` converts block by block,
        so a float32 X (e.g. MNIST) is never copied to float64. scikit-learn's
        ``validate_data`` gives the messages its estimator checks expect (sparse, complex,
        empty, wrong number of features, NaN/inf) and records ``n_features_in_`` when
        ``reset``.
        """
        if sp.issparse(X):
            raise TypeError(
                f"Expected a dense array X but got a sparse {type(X).__name__}; sparse input "
                "is not supported, convert it with X.toarray()"
            )
        return validate_data(
            self, X, reset=reset, dtype=(np.float64, np.float32), ensure_min_samples=1
        )

    # -- fit ----------------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ) -> LatentEstimator:
        """Fit the model to X.

        Args:
            X: array of shape (n_samples, n_features).
            y: ignored (accepted for scikit-learn pipelines).
            checkpoint_dir: when given, the whole training state is written to
                ``checkpoint_dir/checkpoint.pt`` after every epoch.
            resume: continue from the checkpoint in ``checkpoint_dir`` when there is one
                (it must come from the same class, parameters and data); the result is
                then identical to an uninterrupted run on CPU.

        Returns:
            self
        """
        return self.fit_with(X, (), checkpoint_dir=checkpoint_dir, resume=resume)

    def fit_with(
        self,
        X: Any,
        aux: tuple[Any, ...] = (),
        *,
        phase_runner: PhaseRunner = run_phase,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ) -> LatentEstimator:
        """Fit the model to X and its auxiliary arrays, training each phase with ``phase_runner``.

        Every public ``fit`` delegates here: ``fit(X)`` is ``fit_with(X)`` and IVAE's
        ``fit(X, u)`` is ``fit_with(X, (u,))``. It is also the seam for code that trains the
        phases itself: ``phase_runner`` receives each ``idvae.training.Phase`` of the fit, in
        order, and returns its ``PhaseResult``. The default, ``idvae.training.run_phase``,
        trains the phase on its own; ``idvae.vectorize.fit_seeds`` passes a runner that
        trains the same phase of several seeds in one stack. Everything else (validation,
        scaling, the per-seed initialisation, the deterministic steps, the fitted state) is
        this fit's own, whatever the runner.

        Args:
            X: array of shape (n_samples, n_features).
            aux: the auxiliary arrays, ``()`` for unsupervised models (IVAE: ``(u,)``).
            phase_runner: trains one ``Phase`` and returns its ``PhaseResult``.
            checkpoint_dir: as in ``fit``.
            resume: as in ``fit``.

        Returns:
            self
        """
        self._validate_params()
        # the first optimiser of a process imports torch._dynamo (1-3 s): start that now, in
        # the background, while X is validated and scaled and the prior initialised
        preload_optimizer()
        X = self._validate_X(X, reset=True)
        n_samples, n_features = X.shape
        aux_arrays = self._check_aux(aux, n_samples, True)
        self._check_data(n_samples, n_features)
        if resume and checkpoint_dir is None:
            raise ValueError("Expected a checkpoint_dir with resume=True but got None")

        self._scale_fit(X)
        rng = check_random_state(self.random_state)
        module_seed, shuffle_seed, noise_seed = (int(s) for s in rng.integers(0, 2**62, size=3))
        device = resolve_device(self.device)
        aux_dims = tuple(int(a.shape[1]) for a in aux_arrays)
        module = self._new_module(n_features, aux_dims, module_seed).to(device)
        generator = torch.Generator().manual_seed(shuffle_seed)
        noise_generator = torch.Generator(device=device).manual_seed(noise_seed)
        data = (torch.as_tensor(self._scale(X), device=device),) + tuple(
            torch.as_tensor(a, dtype=torch.float32, device=device) for a in aux_arrays
        )

        checkpoint_path, resume_state, fingerprint = None, None, ""
        if checkpoint_dir is not None:
            fingerprint = self._fingerprint(X, aux_arrays)
            checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME
            if resume and checkpoint_path.exists():
                resume_state = _restore_checkpoint(checkpoint_path, fingerprint, module, rng)

        ctx = FitContext(
            self,
            module,
            data,
            rng,
            generator,
            noise_generator,
            device,
            checkpoint_path=checkpoint_path,
            fingerprint=fingerprint,
            resume_state=resume_state,
            phase_runner=phase_runner,
        )
        self._fit_phases(ctx)
        self._set_fit_result(ctx, n_features, aux_dims)
        self._after_fit(data)
        return self

    def _set_fit_result(self, ctx: FitContext, n_features: int, aux_dims: tuple[int, ...]) -> None:
        """The fitted state once the phases of ``ctx`` have run."""
        ctx.module.eval()
        self.module_ = ctx.module
        self.device_ = str(ctx.device)
        self.n_features_in_ = n_features
        self.aux_dims_ = list(aux_dims)
        self.history_ = ctx.history
        last = ctx.last_result
        self.n_iter_ = last.epochs_run if last is not None else self.epochs
        self.stopped_early_ = bool(last.stopped_early) if last is not None else False
        self._finish_fit()

    def _finish_fit(self) -> None:
        """Derived fitted state: the prior, the collapse check; also used by ``load``."""
        self.prior_ = self.module_.prior_gmm()
        collapsed: list[tuple[int, int]] = []
        for i, w in enumerate(self.module_.mixture_weights()):
            w = w.detach().cpu().double().numpy()
            threshold = COLLAPSE_FACTOR / w.shape[0]
            collapsed.extend((i, int(j)) for j in np.flatnonzero(w < threshold))
        self.collapsed_components_ = collapsed
        if collapsed:
            warnings.warn(
                f"{len(collapsed)} mixture component(s) of {type(self).__name__} collapsed "
                f"(weight < {COLLAPSE_FACTOR:g}/J): {collapsed} as (mixture, component); "
                "consider fewer components or a different seed",
                ComponentCollapseWarning,
                stacklevel=3,
            )

    # -- inference ----------------------------------------------------------------------------
    def _check_input(self, X: Any, aux: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
        check_is_fitted(self, "module_")
        X = self._validate_X(X, reset=False)
        aux_arrays = self._check_aux(aux, X.shape[0], False)
        device = next(self.module_.parameters()).device
        return (torch.as_tensor(self._scale(X), device=device),) + tuple(
            torch.as_tensor(a, dtype=torch.float32, device=device) for a in aux_arrays
        )

    def _map_batches(
        self, fn: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...]
    ) -> np.ndarray:
        """Apply ``fn(*batch)`` in eval mode without gradients; concatenate as float64."""
        self.module_.eval()
        out = []
        with torch.no_grad():
            for start in range(0, int(tensors[0].shape[0]), _EVAL_BATCH):
                batch = [t[start : start + _EVAL_BATCH] for t in tensors]
                out.append(fn(*batch).detach().cpu().double().numpy())
        return np.concatenate(out, axis=0)

    def _transform(self, X: Any, aux: tuple[Any, ...]) -> np.ndarray:
        tensors = self._check_input(X, aux)
        z = self._map_batches(lambda *b: self.module_.encode(*b)[0], tensors)
        bad = ~np.all(np.isfinite(z), axis=1)
        if bad.any():
            raise ValueError(
                f"Expected finite latents but the encoder returned NaN/inf for {int(bad.sum())} "
                "sample(s); the input is probably far outside the training data's range"
            )
        return z

    def transform(self, X: Any) -> np.ndarray:
        """Posterior means E[z | x].

        Args:
            X: array of shape (n_samples, n_features).

        Returns:
            Array of shape (n_samples, latent_dim), float64.
        """
        return self._transform(X, ())

    def _score(self, X: Any, aux: tuple[Any, ...]) -> float:
        tensors = self._check_input(X, aux)
        # a fixed seed makes the one-sample Monte Carlo estimate reproducible
        generator = torch.Generator(device=tensors[0].device).manual_seed(0)
        losses = self._map_batches(
            lambda *b: self.module_.loss(*b, generator=generator)["loss"].reshape(1) * len(b[0]),
            tensors,
        )
        elbo = -float(losses.sum()) / int(tensors[0].shape[0])
        # the ELBO of the scaled data; the change of variables adds -sum(log scale)
        return elbo - float(np.log(self.scaler_scale_).sum())

    def score(self, X: Any, y: Any = None) -> float:
        """Mean ELBO per sample (a lower bound of the mean log-likelihood of X; higher is better).

        Args:
            X: array of shape (n_samples, n_features).
            y: ignored.
        """
        return self._score(X, ())

    def sample(
        self, n_samples: int = 1, random_state: Any = None, *, return_latent: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Draw from the fitted generative model.

        Returns the decoder means f(z) (in the units of the training data) of z drawn from
        the prior; the observation noise is not added.

        Args:
            n_samples: how many points.
            random_state: seed of the draws.
            return_latent: also return the z.

        Returns:
            x of shape (n_samples, n_features), and z of shape (n_samples, latent_dim) when
            ``return_latent``.
        """
        check_is_fitted(self, "module_")
        n_samples = check_positive_int(n_samples, "n_samples")
        rng = check_random_state(random_state)
        device = next(self.module_.parameters()).device
        generator = torch.Generator(device=device).manual_seed(int(rng.integers(0, 2**62)))
        self.module_.eval()
        with torch.no_grad():
            x, z = self.module_.sample(n_samples, generator)
        x = x.cpu().double().numpy()
        if self._likelihood != "bernoulli":
            x = self._unscale(x)
        z = z.cpu().double().numpy()
        return (x, z) if return_latent else x

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted estimator to the directory ``path`` (atomically); see ``idvae.load``."""
        return save(self, path)

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags


def _restore_checkpoint(
    path: Path, fingerprint: str, module: LatentModule, rng: np.random.Generator
) -> dict[str, Any]:
    """Load the checkpoint at ``path`` into ``module`` and ``rng``; return its state.

    Raises:
        ValueError: it is not an idvae training checkpoint, or another model's, parameters'
            or data's.
    """
    state = load_checkpoint(path)
    missing = sorted(_RESUME_KEYS - set(state))
    if missing:
        raise ValueError(
            f"Expected an idvae training checkpoint in {path} but it lacks {missing}; drop "
            "--resume to start again"
        )
    _check_fingerprint(state, fingerprint, path)
    try:
        module.load_state_dict(state["module"])
    except (RuntimeError, KeyError) as err:
        raise ValueError(
            f"Expected the checkpoint {path} to hold this model's weights but they do not "
            f"match ({type(err).__name__})"
        ) from None
    set_numpy_rng_state(rng, state["numpy_rng"])
    return state


def _check_fingerprint(state: dict[str, Any], fingerprint: str, path: Path) -> None:
    saved = json.loads(state.get("config", "{}"))
    current = json.loads(fingerprint)
    if saved == current:
        return
    if saved.get("class") != current["class"]:
        raise ValueError(
            f"Expected a checkpoint of {current['class']} in {path} but it was written by "
            f"{saved.get('class')}; use another directory or drop --resume"
        )
    diff = [
        f"{k}: {saved['params'].get(k)!r} vs {v!r}"
        for k, v in current["params"].items()
        if saved.get("params", {}).get(k) != v
    ]
    if diff:
        raise ValueError(
            f"Expected the checkpoint in {path} to have the same parameters but they differ "
            f"({'; '.join(diff)})"
        )
    raise ValueError(
        f"Expected the checkpoint in {path} to come from the same data but it was trained on "
        "different data"
    )

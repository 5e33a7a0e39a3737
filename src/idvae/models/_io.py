"""Save and load fitted estimators as a directory of JSON, CSV and a torch state dict.

A saved model is a folder (written atomically, so a crash leaves the old one or none):

- ``config.json``: format version, idvae version, registry name and class, constructor
  parameters, fitted shapes, scaler, the estimator's extra fitted state, the prior;
- ``weights.pt``: the module's state dict (tensors only; read with ``weights_only=True``);
- ``environment.json``: python, torch, numpy, scikit-learn versions and the platform;
- ``history.csv``: one row per training epoch;
- ``checkpoint.pt``: kept when the directory already held one (``fit(checkpoint_dir=...)``
  into the same directory), so ``resume`` still works there.

No pickled code: loading rebuilds the module from the class named in ``config.json`` (looked
up in the registry, never imported by name) and fills in the tensors.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_is_fitted

from idvae import __version__
from idvae._validation import (
    atomic_directory,
    check_format_version,
    csv_text,
    jsonable,
    parameter_complaint,
)
from idvae.mixture import GMM
from idvae.models._registry import REGISTRY, model_name
from idvae.training import CHECKPOINT_NAME, ComponentCollapseWarning
from idvae.training.checkpoint import load_torch_file

__all__ = ["FORMAT_VERSION", "jsonable_params", "load", "read_config", "save"]

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "weights.pt"
ENVIRONMENT = "environment.json"
HISTORY = "history.csv"


def environment() -> dict[str, str]:
    """Versions of the software a model was trained with."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "idvae": __version__,
        "platform": platform.platform(),
        "executable": sys.executable,
    }


def jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    """Constructor parameters as JSON values (tuples become lists, a Generator None)."""
    return jsonable(params, default=_generator_as_none)


def _generator_as_none(value: Any) -> None:
    if isinstance(value, np.random.Generator):
        return None
    raise TypeError(f"Expected a JSON-serialisable parameter but got {type(value).__name__}")


def save(estimator: Any, path: str | Path) -> Path:
    """Write a fitted estimator to the directory ``path``; returns the path.

    An existing directory is replaced as a whole once the new one is complete (a training
    checkpoint in it is carried over).
    """
    check_is_fitted(estimator, "module_")
    path = Path(path)
    config = {
        "format_version": FORMAT_VERSION,
        "idvae_version": __version__,
        "model": model_name(estimator),
        "class": type(estimator).__name__,
        "params": jsonable_params(estimator.get_params(deep=False)),
        "fitted": {
            "n_features_in_": int(estimator.n_features_in_),
            "aux_dims_": [int(d) for d in estimator.aux_dims_],
            "latent_dim": int(estimator.module_.latent_dim),
            "scaler_mean_": np.asarray(estimator.scaler_mean_).tolist(),
            "scaler_scale_": np.asarray(estimator.scaler_scale_).tolist(),
            "n_iter_": int(estimator.n_iter_),
            "stopped_early_": bool(estimator.stopped_early_),
            "device_": str(estimator.device_),
            "extra": estimator._fitted_state(),
        },
        # None: a prior with no finite mixture (IVAE with continuous u)
        "prior": None if estimator.prior_ is None else estimator.prior_.to_dict(),
    }
    state = {k: v.detach().cpu().clone() for k, v in estimator.module_.state_dict().items()}
    with atomic_directory(path) as tmp:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        buffer = io.BytesIO()  # torch's own file writer turns a full disk into a RuntimeError
        torch.save(state, buffer)
        (tmp / WEIGHTS).write_bytes(buffer.getbuffer())
        (tmp / ENVIRONMENT).write_text(json.dumps(environment(), indent=2) + "\n")
        # one row per epoch; the columns are the union of the records' keys
        (tmp / HISTORY).write_text(csv_text(estimator.history_))
        checkpoint = path / CHECKPOINT_NAME
        if checkpoint.is_file():  # a training checkpoint in the directory is kept
            shutil.copy2(checkpoint, tmp / CHECKPOINT_NAME)
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    """Read and check ``config.json`` of a saved model directory."""
    path = Path(path)
    if not path.is_dir():
        raise OSError(f"Expected a saved model directory at {path} but there is none")
    file = path / CONFIG
    if not file.is_file():
        raise OSError(f"Expected {file} in the saved model but it is missing")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"Expected valid JSON in {file} but it is damaged ({err})") from None
    check_format_version(
        config, file, FORMAT_VERSION, kind="model config", other="another JSON file"
    )
    for key, kinds in (("model", str), ("params", dict), ("fitted", dict), ("prior", dict)):
        if key not in config:
            raise ValueError(f"Expected key {key!r} in {file} but it is missing")
        value = config[key]
        if not isinstance(value, kinds) and not (key == "prior" and value is None):
            raise ValueError(
                f"Expected {key!r} in {file} to be a JSON {'string' if kinds is str else 'object'}"
                f" but got {type(value).__name__}"
            )
    return config


def load(path: str | Path) -> Any:
    """Load an estimator saved with ``estimator.save(path)``.

    Args:
        path: the saved model directory.

    Returns:
        The fitted estimator, of the class it was saved from.

    Raises:
        OSError: the directory or one of its files is missing.
        ValueError: a file is damaged, truncated, from a newer format, or does not match.
    """
    path = Path(path)
    config = read_config(path)
    file = path / CONFIG
    estimator = _unfitted_estimator(config, file)
    fitted = config["fitted"]
    n_features, aux_dims, scaler_mean, scaler_scale = _fitted_shapes(fitted, file)
    state = _read_weights(path / WEIGHTS)
    # seed 0: the initial weights are overwritten by the saved ones
    try:
        module = estimator._new_module(n_features, aux_dims, seed=0)
    except (ValueError, TypeError, RuntimeError) as err:
        raise ValueError(f"Expected a consistent model description in {file} but {err}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(
            f"Expected the weights in {path / WEIGHTS} to match the model in {file} but they "
            f"do not ({first})"
        ) from None
    module.eval()
    estimator.module_ = module
    estimator.n_features_in_ = n_features
    estimator.aux_dims_ = list(aux_dims)
    estimator.scaler_mean_ = scaler_mean
    estimator.scaler_scale_ = scaler_scale
    estimator.n_iter_ = int(fitted.get("n_iter_", 0))
    estimator.stopped_early_ = bool(fitted.get("stopped_early_", False))
    estimator.device_ = "cpu"
    estimator.history_ = read_history(path / HISTORY)
    _restore_derived_state(estimator, config, file)
    return estimator


def _unfitted_estimator(config: dict[str, Any], file: Path) -> Any:
    """The estimator that ``config`` describes, its parameters checked, not fitted."""
    cls = REGISTRY.get(config["model"])
    if cls is None:
        raise ValueError(
            f"Expected a model in {sorted(REGISTRY)} in {file} but got {config['model']!r}"
        )
    try:
        # JSON has no tuples: parameters saved as lists (layer sizes) come back as tuples
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in config["params"].items()}
        estimator = cls(**params)
        estimator._validate_params()
    except InvalidParameterError as err:
        name, must, got = parameter_complaint(err)
        raise ValueError(f"Expected {name} in {file} to be {must} but got {got}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"Expected a consistent model description in {file} but {err}") from None
    return estimator


def _fitted_shapes(
    fitted: dict[str, Any], file: Path
) -> tuple[int, tuple[int, ...], np.ndarray, np.ndarray]:
    """n_features, the auxiliary widths and the scaler's mean and scale, checked."""
    try:
        n_features = int(fitted["n_features_in_"])
        aux_dims = tuple(int(d) for d in fitted["aux_dims_"])
        scaler_mean = np.asarray(fitted["scaler_mean_"], dtype=np.float64)
        scaler_scale = np.asarray(fitted["scaler_scale_"], dtype=np.float64)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"Expected a consistent model description in {file} but {err}") from None
    if scaler_mean.shape != (n_features,) or scaler_scale.shape != (n_features,):
        raise ValueError(
            f"Expected scaler arrays of shape ({n_features},) in {file} but got "
            f"{scaler_mean.shape} and {scaler_scale.shape}"
        )
    return n_features, aux_dims, scaler_mean, scaler_scale


def _read_weights(weights_file: Path) -> dict[str, torch.Tensor]:
    """The saved state dict, tensors only (loaded with ``weights_only``)."""
    if not weights_file.is_file():
        raise OSError(f"Expected {weights_file} in the saved model but it is missing")
    state = load_torch_file(weights_file, "readable weights")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"Expected a state dict of tensors in {weights_file} but got another object"
        )
    return state


def _restore_derived_state(estimator: Any, config: dict[str, Any], file: Path) -> None:
    """The model's extra fitted state and its prior, checked against the saved prior."""
    extra = config["fitted"].get("extra", {})
    if not isinstance(extra, dict):
        raise ValueError(f"Expected fitted.extra in {file} to be a JSON object but it is not")
    try:
        estimator._set_fitted_state(extra)
        with warnings.catch_warnings():  # a collapse was reported when the model was fitted
            warnings.simplefilter("ignore", ComponentCollapseWarning)
            estimator._finish_fit()
    except (ValueError, TypeError, KeyError, RuntimeError) as err:
        raise ValueError(f"Expected a consistent model description in {file} but {err}") from None
    if (config["prior"] is None) != (estimator.prior_ is None):
        raise ValueError(f"Expected the prior in {file} to match the weights but it does not")
    saved_prior = None if config["prior"] is None else GMM.from_dict(config["prior"])
    if saved_prior is not None and not np.allclose(
        saved_prior.means, estimator.prior_.means, atol=1e-5
    ):
        raise ValueError(f"Expected the prior in {file} to match the weights but it does not")


def read_history(file: Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``history.csv`` (numbers parsed; empty when missing)."""
    if not file.is_file():
        return []
    rows = []
    try:
        with open(file, newline="") as fh:
            for row in csv.DictReader(fh):
                rows.append({k: _parse(v) for k, v in row.items()})
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(
            f"Expected a CSV training log in {file} but it is damaged ({err})"
        ) from None
    return rows


def _parse(value: str | None) -> Any:
    if value is None or value == "":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value

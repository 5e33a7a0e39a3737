"""The run store of a study on disk, and the fingerprint that ties a directory to its study.

A study directory holds ``study.json`` (the study's configuration and fingerprint: the
estimator, a digest of the data and of the fit arguments, the seed) and one directory per
finished run under ``runs/``, each written atomically, so an interrupted study continues
where it stopped (:class:`StudyStore`).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from idvae._validation import atomic_directory, jsonable, write_json_atomic
from idvae.experiments.runs import RunOutput

__all__ = ["StudyStore", "array_digest", "describe_estimator", "kwargs_digest"]


def array_digest(x: np.ndarray) -> str:
    """The sha256 of an array's dtype, shape and bytes."""
    arr = np.ascontiguousarray(x)
    digest = hashlib.sha256()
    digest.update(str((arr.dtype.str, arr.shape)).encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def describe_estimator(make_estimator: Callable[[int], Any]) -> dict[str, Any]:
    """A JSON description of what ``make_estimator`` builds (for the study's fingerprint)."""
    if hasattr(make_estimator, "to_dict"):
        return dict(make_estimator.to_dict())
    description: dict[str, Any] = {
        "factory": getattr(make_estimator, "__qualname__", type(make_estimator).__name__)
    }
    try:
        estimator = make_estimator(0)
    except Exception as err:  # reported when the runs fail; the fingerprint stays usable
        description["error"] = f"{type(err).__name__}: {err}"
        return description
    description["class"] = f"{type(estimator).__module__}.{type(estimator).__qualname__}"
    if hasattr(estimator, "get_params"):
        params = {k: v for k, v in estimator.get_params().items() if k != "random_state"}
        description["params"] = {k: _jsonable_or_repr(v) for k, v in sorted(params.items())}
    return description


def _jsonable_or_repr(value: Any) -> Any:
    try:
        return jsonable(value)
    except TypeError:
        return repr(value)


def kwargs_digest(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Fit or transform arguments as JSON: arrays and sequences by their digest."""
    out: dict[str, Any] = {}
    for key, value in sorted(kwargs.items()):
        if hasattr(value, "shape") or isinstance(value, list | tuple):
            out[key] = array_digest(np.asarray(value))
        else:
            out[key] = _jsonable_or_repr(value)
    return out


class StudyStore:
    """The on-disk layout of a study: ``DIR/study.json`` and ``DIR/runs/<id>/``.

    Each finished run is one directory written atomically: ``result.json`` (seed, status,
    error, time, prior, held-out ELBO), ``latents.npy``, ``predictions.npy`` and ``model/``
    (the estimator's ``save``). A study interrupted at any moment is continued with
    ``resume=True``: finished runs are read back, failed and missing ones are run again.
    ``study.json`` holds the study's fingerprint; resuming into a directory of another study
    is refused.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def study_file(self) -> Path:
        return self.root / "study.json"

    def run_dir(self, run_id: int) -> Path:
        return self.root / "runs" / f"{run_id:03d}"

    def open(self, config: Mapping[str, Any], *, resume: bool) -> None:
        """Create the study directory, or check that a resumed one holds this study."""
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"Expected {self.root} to be a directory but it is a file")
        if self.study_file.exists():
            try:
                stored = json.loads(self.study_file.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(
                    f"Expected a study record in {self.study_file} but it is damaged ({err}); "
                    "remove it to start the study again"
                ) from None
            if not isinstance(stored, dict):
                raise ValueError(f"Expected a study record in {self.study_file} but got another")
            if not resume:
                raise ValueError(
                    f"Expected a new directory but {self.root} already holds a study; "
                    "pass resume=True (--resume) to continue it or choose another directory"
                )
            differing = sorted(
                key
                for key in set(stored.get("fingerprint", {})) | set(config["fingerprint"])
                if stored.get("fingerprint", {}).get(key) != config["fingerprint"].get(key)
            )
            if differing:
                raise ValueError(
                    f"Expected {self.root} to hold the same study to resume but it holds "
                    f"another one (differs in: {', '.join(differing)})"
                )
        elif self.root.exists() and any(
            p.name not in ("runs",) and not p.name.startswith(".") for p in self.root.iterdir()
        ):
            if not resume:
                raise ValueError(
                    f"Expected a new or empty directory but {self.root} is not empty and holds "
                    "no study"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.study_file, dict(config))

    def finished(self, run_id: int, seed: int) -> RunOutput | None:
        """The stored output of a successful run, or None when it must be (re)run."""
        path = self.run_dir(run_id)
        result_file = path / "result.json"
        if not result_file.exists():
            return None
        # a damaged or incomplete run directory is run again, not an error
        try:
            data = json.loads(result_file.read_text())
            if data.get("status") != "ok" or int(data.get("seed", -1)) != seed:
                return None
            latents = np.load(path / "latents.npy", allow_pickle=False)
            predictions_file = path / "predictions.npy"
            predictions = (
                np.load(predictions_file, allow_pickle=False) if predictions_file.exists() else None
            )
        except (OSError, ValueError, TypeError, AttributeError, EOFError, zipfile.BadZipFile):
            return None
        if latents.ndim != 2:
            return None
        return RunOutput(
            run_id=run_id,
            seed=seed,
            status="ok",
            fit_seconds=float(data.get("fit_seconds", 0.0)),
            latents=latents,
            predictions=predictions,
            prior=data.get("prior"),
            history=data.get("history"),
            vectorized=bool(data.get("vectorized", False)),
            heldout_elbo=data.get("heldout_elbo"),
            heldout_error=data.get("heldout_error"),
        )

    def write(self, output: RunOutput) -> None:
        """Write one run's directory atomically (replacing an earlier failed attempt)."""
        with atomic_directory(self.run_dir(output.run_id)) as tmp:
            result = {
                "run_id": output.run_id,
                "seed": output.seed,
                "status": output.status,
                "error": output.error,
                "traceback": output.traceback,
                "fit_seconds": output.fit_seconds,
                "prior": output.prior,
                "history": output.history,
                "vectorized": output.vectorized,
                "heldout_elbo": output.heldout_elbo,
                "heldout_error": output.heldout_error,
            }
            (tmp / "result.json").write_text(json.dumps(jsonable(result), indent=2) + "\n")
            if output.latents is not None:
                np.save(tmp / "latents.npy", output.latents, allow_pickle=False)
            if output.predictions is not None:
                np.save(tmp / "predictions.npy", output.predictions, allow_pickle=False)
            for rel, payload in output.model_files.items():
                target = tmp / "model" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(payload)

"""Checkpoint files: one atomically written torch state dict, read with ``weights_only``."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from idvae._validation import atomic_write, check_format_version

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CHECKPOINT_NAME",
    "load_checkpoint",
    "numpy_rng_state",
    "save_checkpoint",
    "set_numpy_rng_state",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically with torch.save."""
    buffer = io.BytesIO()  # torch's own file writer turns a full disk into a RuntimeError
    torch.save(state, buffer)
    with atomic_write(path, "wb") as fh:
        fh.write(buffer.getbuffer())


def load_torch_file(path: Path, what: str) -> Any:
    """``torch.load`` of a file with ``weights_only=True`` on the CPU; damage is a ValueError.

    Torch raises many kinds of exception for a truncated or corrupted file and warns about a
    raw pickle before refusing it; both become one message naming the file and ``what`` was
    expected in it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for damaged files
        raise ValueError(
            f"Expected {what} in {path} but it is damaged or truncated ({type(err).__name__})"
        ) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; refuse damaged or newer files.

    Raises:
        OSError: the file is missing or unreadable.
        ValueError: the file is truncated, corrupted, not a checkpoint, or from a newer
            format version.
    """
    path = Path(path)
    if not path.is_file():
        raise OSError(f"Expected a checkpoint file at {path} but none exists")
    state = load_torch_file(path, "a readable idvae checkpoint")
    return check_format_version(
        state, path, CHECKPOINT_FORMAT_VERSION, kind="checkpoint", other="another kind of file"
    )


def numpy_rng_state(rng: np.random.Generator) -> str:
    """The state of a numpy Generator as a JSON string (for checkpoints)."""
    return json.dumps(rng.bit_generator.state)


def set_numpy_rng_state(rng: np.random.Generator, state: str) -> None:
    """Restore a state produced by ``numpy_rng_state``."""
    rng.bit_generator.state = json.loads(state)

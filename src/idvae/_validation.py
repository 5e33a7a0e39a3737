"""Input checks and conversions shared by every public function, and the output writers.

Errors say what was expected and what was got; they are raised at the boundary so the
library's inner code can assume clean float64 / float32 arrays. Every file idvae writes goes
through the atomic writers here (a temporary file renamed into place), JSON through
``jsonable`` and CSV through ``csv_text``.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import numbers
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "OutputError",
    "RandomState",
    "atomic_directory",
    "atomic_write",
    "check_array",
    "check_format_version",
    "check_list_of",
    "check_positive_int",
    "check_random_state",
    "csv_text",
    "jsonable",
    "parameter_complaint",
    "write_json_atomic",
    "write_text_atomic",
]

RandomState = int | np.random.Generator | None


def check_random_state(random_state: RandomState) -> np.random.Generator:
    """Convert ``random_state`` (int, Generator or None) into a ``numpy.random.Generator``.

    An int seeds a new PCG64 generator; a Generator is returned as is (shared state);
    None gives fresh OS entropy.
    """
    if random_state is None or isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state)
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"Expected random_state >= 0 but got {random_state}")
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "Expected random_state to be an int, a numpy.random.Generator or None "
        f"but got {type(random_state).__name__}"
    )


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, raising if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Expected {name} to be an integer but got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"Expected {name} >= {minimum} but got {name} = {value}")
    return int(value)


def check_array(
    x: object,
    name: str = "X",
    *,
    ndim: int = 2,
    dtype: type = np.float64,
    min_samples: int = 1,
    n_features: int | None = None,
    allow_nan: bool = False,
) -> np.ndarray:
    """Validate an array-like of numbers and return it as a contiguous array of ``dtype``.

    Args:
        x: the input; lists, numpy arrays and torch tensors are accepted.
        name: how the error messages call the argument.
        ndim: the required rank (1 or 2). A 1-D input where 2-D is required is refused with
            a hint, as scikit-learn does.
        dtype: the dtype of the returned array.
        min_samples: the smallest admissible number of rows.
        n_features: when given, the required number of columns.
        allow_nan: whether NaN/inf are admissible.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().numpy()
    if isinstance(x, str | bytes) or x is None:
        raise TypeError(f"Expected {name} to be an array of numbers but got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"Expected {name} to hold numbers but got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"Expected {name} to hold real numbers but got dtype {arr.dtype}")
    if arr.ndim != ndim:
        hint = ""
        if ndim == 2 and arr.ndim == 1:
            hint = " (use x.reshape(-1, 1) for one feature or x.reshape(1, -1) for one sample)"
        raise ValueError(f"Expected {name} to be a {ndim}-D array but got {arr.ndim}-D{hint}")
    if arr.shape[0] < min_samples:
        raise ValueError(
            f"Expected {name} to have at least {min_samples} sample(s) but got {arr.shape[0]}"
        )
    if ndim == 2 and arr.shape[1] < 1:
        raise ValueError(f"Expected {name} to have at least 1 feature but got 0")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"Expected {name} with {n_features} features but got {arr.shape[1]} features"
        )
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not allow_nan and not np.all(np.isfinite(arr)):
        raise ValueError(f"Expected {name} to be finite but it contains NaN or infinity")
    return arr


def check_format_version(
    document: Any, path: str | os.PathLike, newest: int, *, kind: str, other: str
) -> dict[str, Any]:
    """A loaded file as a dict whose int ``format_version`` is at most ``newest``.

    Args:
        document: what was read from ``path``.
        path: the file, named in the errors.
        newest: the newest format version this idvae reads.
        kind: what the file should be (``"checkpoint"``, ``"model config"``).
        other: what it is said to be when it is not one (``"another kind of file"``).

    Raises:
        ValueError: it is not an idvae ``kind``, or a newer idvae wrote it.
    """
    if not isinstance(document, dict) or "format_version" not in document:
        raise ValueError(f"Expected an idvae {kind} in {path} but got {other}")
    version = document["format_version"]
    if not isinstance(version, int) or version > newest:
        raise ValueError(
            f"Expected {kind} format version <= {newest} in {path} but got {version}; it was "
            "written by a newer idvae"
        )
    return document


def check_list_of(values: Any, name: str, kind: type, a_kind: str, kinds: str) -> None:
    """Raise TypeError unless ``values`` is a sequence (not a mapping) of ``kind`` instances.

    Args:
        values: the argument.
        name: its name in the errors (``"sections"``; items are ``name[i]``).
        kind: the type of every item.
        a_kind, kinds: how the errors name one item and several (``"a dict"``, ``"dicts"``).
    """
    if isinstance(values, Mapping) or not isinstance(values, Sequence):
        raise TypeError(f"Expected {name} to be a list of {kinds} but got {type(values).__name__}")
    for i, value in enumerate(values):
        if not isinstance(value, kind):
            raise TypeError(f"Expected {name}[{i}] to be {a_kind} but got {type(value).__name__}")


def parameter_complaint(err: Exception) -> tuple[str, str, str]:
    """(parameter, what it must be, what it got) of scikit-learn's ``InvalidParameterError``.

    Its message reads "The 'lr' parameter of VaDE must be a float in the range (0.0, inf).
    Got -1.0 instead."; idvae's messages say "Expected ... but got ...".
    """
    match = re.fullmatch(r"The '(\w+)' parameter of \w+ must be (.*)\. Got (.*) instead\.",
                         str(err).strip(), flags=re.DOTALL)  # fmt: skip
    if match is None:
        return "a parameter", "valid", str(err)
    return match.group(1), match.group(2), match.group(3)


def _default_file_mode() -> int:
    """The mode ``open`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# Errors of a write that fails for lack of room or rights rather than for a bad path.
_WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)


class OutputError(OSError):
    """An output could not be written: names the output (never its temporary file) and why.

    Attributes:
        path: the output as the caller named it.
        reason: why, as the operating system said it (``"No space left on device"``).
    """

    def __init__(self, path: str | os.PathLike, reason: str, code: int | None = None) -> None:
        super().__init__(f"Expected to write {path} but: {reason}")
        self.errno = code
        self.path = Path(path)
        self.reason = reason


def _output_error(err: OSError, tmp: Path, path: Path) -> OSError:
    """``err`` renamed onto ``path`` when it is a failure to write ``tmp``; else ``err``."""
    if isinstance(err, OutputError):
        if str(tmp) not in str(err.path):
            return err
        return OutputError(str(err.path).replace(str(tmp), str(path)), err.reason, err.errno)
    names = [str(n) for n in (err.filename, err.filename2) if n is not None]
    if not any(str(tmp) in n for n in names) and not (err.errno in _WRITE_ERRNOS and not names):
        return err
    reason = err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0]
    return OutputError(path, reason, err.errno)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success.

    Raises:
        OutputError: the file could not be written (no space, no rights); the message names
            ``path``, not the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _default_file_mode())  # mkstemp makes 0600; outputs are ordinary files
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _output_error(err, Path(tmp), path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only on success.

    A failure anywhere inside the block leaves ``path`` exactly as it was. A failure to
    write into the temporary directory (no space, no rights) is an ``OutputError`` that
    names ``path``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"Expected {path} to be a directory but it is a file")
    if path.exists() and not overwrite and any(path.iterdir()):
        raise ValueError(f"Expected an empty or new directory but {path} is not empty")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _output_error(err, tmp, path) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write ``jsonable(payload)`` to ``path`` atomically (indented; NaN/inf refused)."""
    write_text_atomic(path, json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n")


def jsonable(
    value: Any,
    *,
    default: Callable[[Any], Any] | None = None,
    nonfinite: Literal["keep", "none", "str"] = "keep",
) -> Any:
    """A copy of ``value`` made of JSON types only.

    Mappings become dicts with str keys; lists, tuples and numpy arrays become lists; numpy
    scalars become Python scalars.

    Args:
        value: the object to convert.
        default: called on anything else; its result is converted in turn. None raises.
        nonfinite: what NaN and +-inf floats become: kept as they are (``json.dumps``
            writes them only with ``allow_nan``), None, or the str ``"nan"``/``"inf"``.

    Raises:
        TypeError: a value that is not JSON-serialisable and ``default`` is None.
    """

    def convert(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): convert(item) for k, item in v.items()}
        if isinstance(v, list | tuple):
            return [convert(item) for item in v]
        if isinstance(v, np.ndarray):
            return convert(v.tolist())
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or isinstance(v, bool | int | str):
            return v
        if isinstance(v, float):
            if nonfinite == "keep" or math.isfinite(v):
                return v
            return None if nonfinite == "none" else str(v)
        if default is None:
            raise TypeError(f"Expected a JSON-serialisable value but got {type(v).__name__}")
        return convert(default(v))

    return convert(value)


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of a table as CSV text with a header (None and missing cells are empty).

    Args:
        rows: one mapping per row.
        columns: the columns in order; by default every key of the rows, in first-seen order.
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    return buffer.getvalue()

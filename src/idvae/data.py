"""Data and the truth behind them: :class:`Data`, its ``.npz`` format and ``load_array``.

One type carries observations together with whatever is known of how they were made: the
latent points z, the hidden state u, the labels and the true prior of Z. Every producer
returns it and every consumer takes it, under the same field names:

* ``idvae.simulate.sample_model`` returns a :class:`~idvae.simulate.Simulation`, a
  ``Data`` that also holds the decoder f and the noise level;
* ``idvae.datasets.pinwheel`` and ``parallelograms`` return a
  :class:`~idvae.datasets.Dataset`, a ``Data`` that also holds the embedding of the plane;
* :func:`load_array` returns a ``Data`` (``idvae.datasets.load_array`` is this function);
* the studies take one: ``idvae.stability(make_estimator, data)`` scores against its
  z, prior and labels, and an experiment's :class:`~idvae.experiments.configs.StudyData`
  is a ``Data`` with the arguments of its fits.

``Data.save`` writes the ``.npz`` keys that :func:`load_array` reads back (``x``; ``z``,
``u``, ``labels`` and ``prior_weights``, ``prior_means``, ``prior_covariances`` when known),
so a saved simulation, a saved dataset and a user's file are read the same way.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idvae._validation import atomic_write, check_array
from idvae.mixture import GMM

__all__ = ["PRIOR_KEYS", "Data", "load_array"]

PRIOR_KEYS = ("prior_weights", "prior_means", "prior_covariances")


@dataclass(frozen=True, eq=False)
class Data:
    """Observations and, where known, the truth behind them (model (3): U → Z → X).

    Only ``x`` is always there; a field that is not known is None. The subclasses
    (``Simulation``, ``Dataset``, ``StudyData``) add what only they know, with keyword-only
    fields, and keep these names, so nothing translates between a simulator, a dataset, a
    file and a study.

    Attributes:
        x: array of shape (n_samples, n_features): the observations.
        z: float64 array of shape (n_samples, latent_dim): the true latent points, or None.
        u: array of shape (n_samples,) or (n_samples, k): the hidden state U of each point
            (k = 1: its component; multivariate U: the state of each U_i), or for data read
            from a file an auxiliary variable (iVAE's u), or None.
        prior: the true law of Z as a ``GMM``, or None.
        labels: int64 array of shape (n_samples,): the true cluster (the component of
            ``prior``, or the class of a dataset) of each point, or None.

    Raises:
        ValueError: z, u or labels do not have one row per row of x, or the prior's
            dimension is not z's.
        TypeError: the prior is not an ``idvae.GMM``.

    Example:
        >>> import numpy as np
        >>> from idvae.data import Data
        >>> data = Data(np.zeros((4, 3)), z=np.zeros((4, 2)), labels=np.array([0, 0, 1, 1]))
        >>> data.n_samples, data.u is None
        (4, True)
    """

    x: np.ndarray
    z: np.ndarray | None = None
    u: np.ndarray | None = None
    prior: GMM | None = None
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = np.shape(self.x)[0] if np.ndim(self.x) else 0
        for name in ("z", "u", "labels"):
            value = getattr(self, name)
            if value is not None and (np.ndim(value) == 0 or np.shape(value)[0] != n):
                raise ValueError(
                    f"Expected {name} with {n} rows (one per row of x) but got shape "
                    f"{np.shape(value)}"
                )
        if self.prior is not None:
            if not isinstance(self.prior, GMM):
                raise TypeError(f"Expected prior to be an idvae.GMM but got {type(self.prior)}")
            if self.z is not None and self.prior.dim != np.shape(self.z)[1]:
                raise ValueError(
                    f"Expected a prior of z's dimension {np.shape(self.z)[1]} but got one "
                    f"of dimension {self.prior.dim}"
                )

    @property
    def n_samples(self) -> int:
        """The number of points."""
        return int(np.shape(self.x)[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The ``.npz`` keys and arrays that :meth:`save` writes (the known fields only)."""
        out: dict[str, np.ndarray] = {"x": np.asarray(self.x)}
        for name in ("z", "u", "labels"):
            value = getattr(self, name)
            if value is not None:
                out[name] = np.asarray(value)
        if self.prior is not None:
            prior = self.prior
            values = (prior.weights, prior.means, prior.covariances)
            out.update(zip(PRIOR_KEYS, values, strict=True))
        return out

    def save(self, path: str | Path) -> Path:
        """Write the data and the known truth to a ``.npz`` file, atomically.

        Keys: those of :meth:`arrays`; :func:`load_array` reads them back into a ``Data``
        with the same fields. Subclasses add keys of their own.

        Returns:
            The path written.
        """
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"Expected a path ending in .npz but got {str(path)!r}")
        arrays = self.arrays()
        with atomic_write(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path


# -- reading ------------------------------------------------------------------------------
def load_array(path: str | Path) -> Data:
    """Read observations (and optional truth) from ``.npy``, ``.npz`` or ``.csv``.

    * ``.npy``: a 2-D numeric array, x.
    * ``.npz``: key ``x`` (2-D); optional ``z`` (2-D), ``u`` (1-D or 2-D) and ``labels``
      (1-D, integers), each with as many rows as x, and the true prior of Z
      (``prior_weights``, ``prior_means``, ``prior_covariances``, all three, as
      :meth:`Data.save` writes them). Other keys are ignored.
    * ``.csv``: rows of comma-separated numbers (whitespace-separated when no comma occurs),
      an optional header line of column names.

    Returns:
        A :class:`Data`; its fields are None where the file does not hold them.

    Pickled (object) arrays are refused. Errors (ValueError, or FileNotFoundError for a
    missing file) name the file and say what was expected.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from idvae.data import load_array
        >>> path = os.path.join(tempfile.mkdtemp(), "data.npz")
        >>> np.savez(path, x=np.ones((3, 2)), labels=[0, 1, 1])
        >>> data = load_array(path)
        >>> data.x.shape, data.labels.tolist()
        ((3, 2), [0, 1, 1])
    """
    path = Path(path)
    try:
        return _load_array(path)
    except TypeError as err:  # wrong content of a file is a value error, like any other
        raise ValueError(str(err)) from None


def _load_array(path: Path) -> Data:
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz", ".csv"):
        raise ValueError(f"Expected a data file ending in .npy, .npz or .csv but got {str(path)!r}")
    if not path.exists():
        raise FileNotFoundError(f"Expected a data file at {path} but it does not exist")
    if not path.is_file():
        raise ValueError(f"Expected {path} to be a file but it is a directory")
    if path.stat().st_size == 0:
        raise ValueError(f"Expected data in {path} but the file is empty")
    if suffix == ".csv":
        return Data(x=_check_x(_read_csv(path), path))
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zlib.error) as err:
        raise _numpy_error(err, path) from None
    is_archive = isinstance(loaded, np.lib.npyio.NpzFile)
    if is_archive != (suffix == ".npz"):
        if is_archive:
            loaded.close()
        kind = "a .npz archive" if is_archive else "a single .npy array"
        raise ValueError(f"Expected a {suffix} file at {path} but it holds {kind}")
    if suffix == ".npy":
        return Data(x=_check_x(loaded, path))
    with loaded:
        keys = set(loaded.files)
        if "x" not in keys:
            raise ValueError(
                f"Expected a key 'x' in {path} but it has keys {sorted(keys) or 'none'}"
            )
        try:
            wanted = ("x", "z", "u", "labels", *PRIOR_KEYS)
            arrays = {key: loaded[key] for key in wanted if key in keys}
        except (ValueError, OSError, EOFError, zlib.error) as err:
            raise _numpy_error(err, path) from None
    x = _check_x(arrays["x"], path)
    n = x.shape[0]
    z = u = labels = None
    if "z" in arrays:
        z = check_array(arrays["z"], f"z in {path}", ndim=2)
        _check_rows(z, n, "z", path)
    if "u" in arrays:
        u = _check_u(arrays["u"], n, path)
    if "labels" in arrays:
        labels = _check_labels(arrays["labels"], n, path)
    prior = _read_prior(arrays, z, path)
    return Data(x=x, z=z, u=u, prior=prior, labels=labels)


def _read_prior(arrays: dict[str, np.ndarray], z: np.ndarray | None, path: Path) -> GMM | None:
    """The prior of a ``.npz`` that holds all three of ``PRIOR_KEYS``, else None."""
    if not all(key in arrays for key in PRIOR_KEYS):
        return None
    try:
        prior = GMM(*(arrays[key] for key in PRIOR_KEYS))
    except (ValueError, TypeError) as err:
        raise ValueError(f"Expected a valid prior (a GMM) in {path} but: {err}") from None
    if z is not None and prior.dim != z.shape[1]:
        raise ValueError(
            f"Expected the prior in {path} to have z's dimension {z.shape[1]} but it has "
            f"{prior.dim}"
        )
    return prior


def _numpy_error(err: BaseException, path: Path) -> ValueError:
    if "Object arrays" in str(err):
        return ValueError(
            f"Expected numeric arrays in {path} but it holds pickled objects (refused)"
        )
    return ValueError(
        f"Expected a valid {path.suffix} file at {path} but it could not be read "
        f"(corrupted, or not written by numpy): {err}"
    )


def _check_x(x: Any, path: Path) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(
            f"Expected x in {path} to be a 2-D array (n_samples, n_features) but got "
            f"{arr.ndim}-D with shape {arr.shape}"
        )
    return check_array(arr, f"x in {path}", ndim=2)


def _check_rows(arr: np.ndarray, n: int, name: str, path: Path) -> None:
    if arr.shape[0] != n:
        raise ValueError(
            f"Expected {name} in {path} to have {n} rows like x but got {arr.shape[0]}"
        )


def _check_u(u: Any, n: int, path: Path) -> np.ndarray:
    arr = np.asarray(u)
    if arr.ndim not in (1, 2):
        raise ValueError(f"Expected u in {path} to be 1-D or 2-D but got {arr.ndim}-D")
    values = check_array(arr, f"u in {path}", ndim=arr.ndim)
    _check_rows(values, n, "u", path)
    if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_):
        return arr.astype(np.int64)
    return values


def _check_labels(labels: Any, n: int, path: Path) -> np.ndarray:
    values = check_array(labels, f"labels in {path}", ndim=1)
    _check_rows(values, n, "labels", path)
    if not np.all(values == np.round(values)):
        raise ValueError(f"Expected integer labels in {path} but got non-integer values")
    return values.astype(np.int64)


def _read_csv(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"Expected a text CSV file at {path} but it is not UTF-8 text") from None
    lines = [(i + 1, line.strip()) for i, line in enumerate(text.splitlines()) if line.strip()]
    if not lines:
        raise ValueError(f"Expected data in {path} but the file has no rows")
    sep = "," if any("," in line for _, line in lines) else None
    rows: list[list[float]] = []
    for index, (lineno, line) in enumerate(lines):
        fields = [f.strip() for f in (line.split(sep) if sep else line.split())]
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            if index == 0:
                continue  # a header line of column names
            bad = next(f for f in fields if not _is_number(f))
            raise ValueError(
                f"Expected numbers in {path} but line {lineno} holds {bad!r}"
            ) from None
    if not rows:
        raise ValueError(f"Expected rows of numbers in {path} but found only a header")
    width = len(rows[0])
    for (lineno, _), row in zip(lines[len(lines) - len(rows) :], rows, strict=True):
        if len(row) != width:
            raise ValueError(
                f"Expected {width} columns on every line of {path} but line {lineno} has {len(row)}"
            )
    return np.asarray(rows, dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

"""The ``idvae`` command. Thin: parse, call the library, print.

Each group of commands lives in its own module and registers itself on ``app``;
``main`` turns every user error into one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="idvae",
    help="Identifiable deep latent variable models (Kivva et al., NeurIPS 2022).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules; each registers its commands on `app` at import.
_COMMAND_MODULES = (
    "idvae.cli.data",
    "idvae.cli.models",
    "idvae.cli.experiments",
    "idvae.cli.identify",
    "idvae.cli.exact",
)


def _register_commands() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real missing dependency, not a missing command module
                raise


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit status 2."""


# What reading a truncated or corrupted file raises besides ValueError/OSError.
DAMAGED_FILE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)
USER_ERRORS = (ValueError, TypeError, OSError, UserError, MemoryError, *DAMAGED_FILE_ERRORS)


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is the user's to fix: bad input, or training that diverged on it
    (``idvae.training.TrainingError``, e.g. a learning rate far too large)."""
    if isinstance(err, USER_ERRORS):
        return True
    training = sys.modules.get("idvae.training")  # loaded whenever it could have raised
    return training is not None and isinstance(err, training.TrainingError)


def check_memory(n_bytes: float, what: str) -> None:
    """Refuse up front a request whose output arrays alone exceed this machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: no check
        return
    if n_bytes > total:
        raise ValueError(
            f"Expected {what} to fit in memory but its arrays alone take "
            f"{n_bytes / 2**30:.1f} GiB and this machine has {total / 2**30:.1f} GiB"
        )


# Estimator parameters whose command-line option is not --<name with dashes>.
_OPTION_OF = {"n_components": "--components", "facet_components": "--facets"}


def one_line(err: BaseException) -> str:
    """The first line of an error's message (its class name when empty).

    scikit-learn's parameter errors are said in the options' names and idvae's words.
    """
    from sklearn.utils._param_validation import InvalidParameterError

    if isinstance(err, InvalidParameterError):
        from idvae._validation import parameter_complaint

        name, must, got = parameter_complaint(err)
        option = _OPTION_OF.get(name, "--" + name.replace("_", "-"))
        return f"Expected {option} to be {must} but got {got}"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def reading(path: Path | str) -> Iterator[None]:
    """Turn the errors of a damaged (truncated, corrupted) file into one naming the file."""
    try:
        yield
    except DAMAGED_FILE_ERRORS as err:
        raise ValueError(
            f"Expected a readable file at {path} but it is damaged ({one_line(err)})"
        ) from None


def load_data(path: Path | str) -> Any:
    """``idvae.datasets.load_array(path)``; a damaged file is a user error naming it."""
    from idvae.datasets import load_array

    with reading(path):
        return load_array(path)


def int_list(text: str | None, option: str, *, positive: bool = False) -> tuple[int, ...] | None:
    """An option's comma-separated integers: '2,3' -> (2, 3); None stays None.

    Args:
        text: the option's value.
        option: its name, for the error (``"--facets"``).
        positive: every value must be at least 1.

    Raises:
        ValueError: not integers, none, or (``positive``) one below 1.
    """
    if text is None:
        return None
    kind, example = ("positive integers", "3,4") if positive else ("integers", "2,3")
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or (positive and min(values) < 1):
        raise ValueError(
            f"Expected {option} as comma-separated {kind} like {example} but got {text!r}"
        )
    return values


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a function as an ``idvae`` sub-command (arguments as ``app.command``).

    User errors raised inside (``ValueError``, ``TypeError``, ``OSError``, ``UserError``)
    become one line on stderr and exit status 2, also under typer's ``CliRunner``.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return func(*a, **kw)
            except Exception as err:
                if not is_user_error(err):
                    raise
                typer.echo(f"error: {one_line(err)}", err=True)
                raise typer.Exit(2) from None

        app.command(*args, **kwargs)(wrapper)
        return wrapper

    return decorate


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``idvae`` console script."""
    try:
        app(args=argv, prog_name="idvae", standalone_mode=True)
    except Exception as err:
        if not is_user_error(err):
            raise
        typer.echo(f"error: {one_line(err)}", err=True)
        sys.exit(2)


_register_commands()

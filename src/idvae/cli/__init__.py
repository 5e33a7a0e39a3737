"""The ``idvae`` command. Thin: parse, call the library, print.

Each group of commands lives in its own module and registers itself on ``app``;
``main`` turns every user error into one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
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


USER_ERRORS = (ValueError, TypeError, OSError, UserError)


def one_line(err: BaseException) -> str:
    """The first line of an error's message (its class name when empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
            except USER_ERRORS as err:
                typer.echo(f"error: {one_line(err)}", err=True)
                raise typer.Exit(2) from None

        app.command(*args, **kwargs)(wrapper)
        return wrapper

    return decorate


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``idvae`` console script."""
    try:
        app(args=argv, prog_name="idvae", standalone_mode=True)
    except USER_ERRORS as err:
        typer.echo(f"error: {one_line(err)}", err=True)
        sys.exit(2)


_register_commands()

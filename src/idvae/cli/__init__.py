"""The ``idvae`` command. Thin: parse, call the library, print.

Each group of commands lives in its own module and registers itself on ``app``;
``main`` turns every user error into one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

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
)


def _register_commands() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real missing dependency, not a missing command module
                raise


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit status 2."""


def fail(message: str) -> None:
    """Print one line to stderr and exit with status 2."""
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``idvae`` console script."""
    _register_commands()
    try:
        app(args=argv, prog_name="idvae", standalone_mode=True)
    except (ValueError, TypeError, OSError, UserError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        typer.echo(f"error: {msg}", err=True)
        sys.exit(2)

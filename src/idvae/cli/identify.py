"""``idvae identify MODEL_DIR``: which row of Table 1 a saved model meets, and what follows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from idvae._validation import atomic_write
from idvae.cli import command, load_data

__all__ = ["identify"]


@command("identify")
def identify(
    model_dir: Path = typer.Argument(
        ..., help="A model saved with estimator.save(path), or a simulation .npz (the truth)."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Data (.npz key x, .npy, .csv) to map to canonical latents."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    out: Path | None = typer.Option(
        None, "--out", help="Write the canonical latents of --data to this .npy file."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the decoder's empirical checks."),
) -> None:
    """Check (P1)-(P3) on the prior and (F2)-(F4) on the decoder; canonicalise latents."""
    from idvae.identify.report import identifiability_report
    from idvae.models import load

    if out is not None and data is None:
        raise ValueError("Expected --data together with --out (the latents of which data?)")
    if out is not None and out.suffix != ".npy":
        raise ValueError(f"Expected --out to end in .npy but got {str(out)!r}")
    if model_dir.is_file() and model_dir.suffix == ".npz":
        from idvae.simulate import Simulation

        estimator = Simulation.load(model_dir)  # the true prior and decoder
        if data is not None:
            raise ValueError("Expected --data only with a fitted model, not with a simulation")
    elif not model_dir.is_dir():
        raise OSError(f"Expected a saved model directory or a simulation .npz but got {model_dir}")
    else:
        estimator = load(model_dir)
    x = None
    if data is not None:
        x = load_data(data).x
    report = identifiability_report(estimator, x, random_state=seed)
    if out is not None:
        if report.latents is None:
            raise ValueError(
                "(P2) fails for this model's prior: there are no canonical latents to write"
            )
        with atomic_write(out, "wb") as fh:
            np.save(fh, report.latents)
    if as_json:
        payload = report.to_dict()
        if out is not None:
            payload["latents_file"] = str(out)
        typer.echo(json.dumps(payload, indent=2))
        return
    _print_rich(report, out)


def _print_rich(report, out: Path | None) -> None:  # noqa: ANN001
    from rich.console import Console
    from rich.panel import Panel

    console = Console()
    from idvae.identify.report import TABLE_1

    prior_a, decoder_a, claim = TABLE_1[report.row]
    how = "" if report.row == 0 or report.row_certified else " (decoder checked empirically)"
    console.print(
        Panel(
            f"[bold]Table 1, row {report.row}[/bold]{how}: prior {prior_a}, "
            f"decoder {decoder_a}\n"
            f"=> {claim}",
            title="identifiability",
        ),
        markup=True,
    )
    body = str(report).split("\n", 2)[2]
    console.print(body, markup=False, highlight=False)
    if out is not None:
        console.print(f"canonical latents written to {out}", markup=False)

"""``idvae simulate`` and ``idvae dataset``: write simulated or synthetic data to ``.npz``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import typer

from idvae.cli import check_memory, command, int_list

__all__ = ["dataset", "simulate"]

# Placing J well-separated means takes time quadratic in J (about a second for 1,000 in two
# dimensions, a minute for 10,000): larger requests are refused rather than left to hang.
MAX_COMPONENTS = 1000


def _neighbors(text: str | None) -> tuple[tuple[int, ...], ...] | None:
    """'0,1;2,3' -> ((0, 1), (2, 3))."""
    if text is None:
        return None
    return tuple(int_list(block, "--neighbors") or () for block in text.split(";"))


def _check_out(out: Path) -> None:
    if out.suffix != ".npz":
        raise ValueError(f"Expected --out to end in .npz but got {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"Expected --out to be a file path but {out} is a directory")


@command("simulate")
def simulate(
    out: Path = typer.Option(..., "--out", help="Output .npz file (written atomically)."),
    n_samples: int = typer.Option(5000, "--n-samples", help="Number of points."),
    latent_dim: int = typer.Option(2, "--latent-dim", help="m, the dimension of Z."),
    obs_dim: int = typer.Option(10, "--obs-dim", help="n, the dimension of X (n >= m)."),
    components: int | None = typer.Option(
        None, "--components", help="J, mixture components (default 3 unless --facets)."
    ),
    facets: str | None = typer.Option(
        None, "--facets", help="Multivariate U: states per facet, e.g. 2,3."
    ),
    neighbors: str | None = typer.Option(
        None, "--neighbors", help="ne(U_i) per facet, e.g. '0,1;2,3' (default: blocks)."
    ),
    covariance: str = typer.Option("diag", "--covariance", help="diag or full."),
    decoder: str = typer.Option("leaky_relu", "--decoder", help="leaky_relu or relu."),
    hidden: str | None = typer.Option(
        None, "--hidden", help="Decoder hidden widths, e.g. 4,8 (default: geometric m..n)."
    ),
    noise_std: float = typer.Option(0.05, "--noise-std", help="Standard deviation of ε."),
    non_injective: bool = typer.Option(
        False, "--non-injective", help="Allow any widths and rank (no App. H conditions)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Simulate model (3): U → Z → X = f(Z) + ε; write x, z, u, labels and the truth."""
    from idvae.simulate import sample_model

    _check_out(out)
    facet_sizes = int_list(facets, "--facets")
    if components is None and facet_sizes is None:
        components = 3
    if n_samples < 1:
        raise ValueError(f"Expected --n-samples >= 1 but got {n_samples}")
    n_states = components if components is not None else math.prod(facet_sizes or (1,))
    if n_states > n_samples:
        raise ValueError(
            f"Expected at most --n-samples = {n_samples} mixture components but got {n_states}"
        )
    if n_states > MAX_COMPONENTS:
        raise ValueError(
            f"Expected at most {MAX_COMPONENTS} mixture components (placing separated means "
            f"takes time quadratic in their number) but got {n_states}"
        )
    # x, z, u and labels, float64: a lower bound of what the simulation holds at once
    check_memory(8.0 * n_samples * (obs_dim + latent_dim + 2), f"--n-samples {n_samples}")
    sim = sample_model(
        n_samples,
        latent_dim=latent_dim,
        obs_dim=obs_dim,
        n_components=components,
        covariance=covariance,
        decoder=decoder,
        hidden=int_list(hidden, "--hidden"),
        noise_std=noise_std,
        injective=not non_injective,
        facets=facet_sizes,
        neighbors=_neighbors(neighbors),
        random_state=seed,
    )
    sim.save(out)
    widths = [sim.decoder[0].in_features] + [
        layer.out_features for layer in sim.decoder if hasattr(layer, "out_features")
    ]
    structure = f"J = {sim.prior.n_components} components"
    if sim.facets is not None:
        structure += f" (facets {','.join(map(str, sim.facets))})"
    if non_injective:
        kind = "no injectivity conditions"
    else:  # App. H, Cor. H.4; Cor. H.2's ReLU claim fails (identify.counterexamples.relu_fold)
        kind = (
            "injective, (F4)"
            if decoder == "leaky_relu"
            else "App. H widths and ranks; ReLU: no guarantee"
        )
    typer.echo(
        f"wrote {out}: {sim.n_samples} samples, x {sim.x.shape}, z {sim.z.shape}, "
        f"{structure}, {decoder} decoder {'-'.join(map(str, widths))} ({kind}), "
        f"noise_std {sim.noise_std:g}, seed {seed}"
    )


@command("dataset")
def dataset(
    name: str = typer.Argument(..., help="pinwheel, parallelograms or mnist."),
    out: Path | None = typer.Option(
        None, "--out", help="Output .npz file (x, labels; z, u, points for synthetic data)."
    ),
    n_samples: int = typer.Option(5000, "--n-samples", help="Number of points (synthetic)."),
    n_classes: int = typer.Option(3, "--classes", help="Arms / parallelograms (synthetic)."),
    obs_dim: int = typer.Option(2, "--obs-dim", help="Dimension of x (synthetic)."),
    noise_std: float | None = typer.Option(
        None, "--noise-std", help="Gaussian noise (default 0.05 parallelograms, 0 pinwheel)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (synthetic)."),
    root: Path = typer.Option(Path("data/mnist"), "--root", help="MNIST folder."),
    download: bool = typer.Option(False, "--download", help="Fetch missing MNIST files."),
) -> None:
    """Generate pinwheel / parallelograms data, or check (and fetch) MNIST."""
    from idvae import datasets

    if out is not None:
        _check_out(out)
    if name == "mnist":
        x, labels = datasets.load_mnist_combined(root, download=download)
        data = datasets.Data(x, labels=labels)
    elif name in ("pinwheel", "parallelograms"):
        if name == "pinwheel":
            data = datasets.pinwheel(
                n_samples,
                n_classes,
                obs_dim=obs_dim,
                noise_std=0.0 if noise_std is None else noise_std,
                random_state=seed,
            )
        else:
            data = datasets.parallelograms(
                n_samples,
                n_classes,
                obs_dim,
                0.05 if noise_std is None else noise_std,
                random_state=seed,
            )
    else:
        raise ValueError(f"Expected a dataset pinwheel, parallelograms or mnist but got {name!r}")
    summary = f"{name}: x {data.x.shape}, {len(np.unique(data.labels))} classes"
    if out is None:
        typer.echo(f"{summary} (nothing written: no --out)")
        return
    data.save(out)
    typer.echo(f"wrote {out}: {summary}")

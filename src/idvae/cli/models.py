"""``idvae fit | transform | sample | info``: train, apply and inspect saved estimators."""

from __future__ import annotations

import fcntl
import inspect
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, Any

import numpy as np
import typer

from idvae._validation import atomic_directory, atomic_write
from idvae.cli import check_memory, command, int_list, load_data, reading

__all__ = ["fit", "info", "sample", "transform"]


def _load_x(path: Path) -> Any:
    """The data file as ``idvae.datasets.load_array`` reads it (x, optional z, u, labels)."""
    return load_data(path)


def _aux_array(aux: Path | None, data: Any, model: str) -> np.ndarray | None:
    """u for IVAE: from --aux, else the data file's ``u`` (or ``labels``)."""
    if aux is not None:
        loaded = _load_x(aux) if aux.suffix.lower() != ".npy" else None
        if loaded is None:
            with reading(aux):
                u = np.load(aux, allow_pickle=False)
        else:
            u = loaded.x
        return np.asarray(u)
    for key in ("u", "labels"):
        value = getattr(data, key, None)
        if value is not None:
            return np.asarray(value)
    raise ValueError(
        f"Expected --aux U.npy (or a key u or labels in the data file) for --model {model} "
        "but got none"
    )


def _check_npy(path: Path, option: str) -> None:
    if path.suffix != ".npy":
        raise ValueError(f"Expected {option} to end in .npy but got {str(path)!r}")


@contextmanager
def _writing(path: Path, option: str) -> Iterator[IO[bytes]]:
    """``atomic_write(path)``; an OS error names the option and the path, not the temp file."""
    _check_npy(path, option)
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"Expected {option} {path} in a folder but {path.parent} is a file")
    try:
        with atomic_write(path, "wb") as fh:
            yield fh
    except OSError as err:
        reason = getattr(err, "reason", None) or err.strerror or str(err)
        raise ValueError(f"Expected to write {option} {path} but: {reason}") from None


def _save_npy(path: Path, array: np.ndarray, option: str = "--out") -> None:
    with _writing(path, option) as fh:
        np.save(fh, array, allow_pickle=False)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links too


def _check_distinct(out: Path, option: str, others: dict[str, Path | None]) -> None:
    """Refuse an output path that is another file of the command (it would replace it)."""
    for what, given in others.items():
        if given is not None and _same_file(out, given):
            raise ValueError(
                f"Expected {option} to be another file than {what} but both are {given}; "
                f"writing there would replace {what}"
            )


def _fit_and_save(estimator: Any, args: tuple[Any, ...], out: Path, resume: bool) -> None:
    """Fit with checkpoints and save to ``out``; a failure leaves ``out`` as it was.

    A new (or empty) ``out`` holds the checkpoint while training, so that a killed run can
    be resumed; if the fit fails it is emptied again (and removed when this call made it).
    A model already in ``out`` (``--overwrite``) is replaced only once the new one is
    saved: training checkpoints go to a temporary directory beside it. ``--resume``
    continues in ``out`` itself. Ctrl-C keeps the checkpoint of a new ``out`` for
    ``--resume``.
    """
    if resume:
        estimator.fit(*args, checkpoint_dir=out, resume=True)
        estimator.save(out)
        return
    if out.is_dir() and any(out.iterdir()):  # --overwrite: the old model stays until the end
        with atomic_directory(out) as tmp:
            estimator.fit(*args, checkpoint_dir=tmp)
            estimator.save(tmp)
        return
    made = not out.exists()
    try:
        estimator.fit(*args, checkpoint_dir=out)
        estimator.save(out)
    except Exception:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        elif out.is_dir():  # it was empty: whatever is in it now is this fit's
            for entry in out.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise


@contextmanager
def _fit_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for one fit: a second fit into it is refused.

    The lock is ``flock`` on the file ``.<name>.lock`` beside ``out`` (inside it, the lock
    would be replaced along with the model by ``--overwrite``); it is removed when the fit
    ends, and a lock file left by a killed fit is free again (the kernel drops its lock).
    """
    lock = out.parent / f".{out.name}.lock"
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(
                f"Expected no other fit into {out} but another fit holds its lock ({lock}); "
                "wait for it to end or choose another --out"
            ) from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break  # a holder that just finished unlinks the file: lock the new one
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _check_out_dir(out: Path, model: str, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a model directory unless told, and --resume across models."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"Expected --out to be a directory but {out} is a file")
    if not out.exists() or not any(out.iterdir()):
        return
    config = out / "config.json"
    if resume:
        if config.is_file():
            try:
                saved = json.loads(config.read_text()).get("model")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                saved = None
            if saved is not None and saved != model:
                raise ValueError(
                    f"Expected a directory of a {model} model to resume but {out} holds a "
                    f"{saved} model"
                )
        return
    if not overwrite:
        raise ValueError(
            f"Expected a new or empty --out directory but {out} is not empty; pass --resume to "
            "continue its training or --overwrite to replace it"
        )


@command("fit")
def fit(
    data: Path = typer.Argument(..., help="Data file: .npz (key x), .npy or .csv."),
    out: Path = typer.Option(..., "--out", help="Model directory (checkpoints, then the model)."),
    model: str = typer.Option("vade", "--model", help="vade, mfcvae, vae or ivae."),
    aux: Path | None = typer.Option(None, "--aux", help="Auxiliary u (.npy) for ivae."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model in --out."),
    latent_dim: int | None = typer.Option(None, "--latent-dim", help="Latent dimension m."),
    components: int | None = typer.Option(None, "--components", help="Mixture components J."),
    facets: str | None = typer.Option(None, "--facets", help="mfcvae: components per facet."),
    facet_dims: str | None = typer.Option(None, "--facet-dims", help="mfcvae: dims per facet."),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs."),
    pretrain_epochs: int | None = typer.Option(None, "--pretrain-epochs", help="Pretraining."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Mini-batch size."),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate."),
    likelihood: str | None = typer.Option(None, "--likelihood", help="gaussian or bernoulli."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
) -> None:
    """Fit an estimator to DATA and save it to --out (checkpointed every epoch)."""
    from idvae.models import get_estimator

    cls = get_estimator(model)
    requested = {
        "latent_dim": latent_dim,
        "n_components": components,
        "facet_components": int_list(facets, "--facets", positive=True),
        "facet_dims": int_list(facet_dims, "--facet-dims", positive=True),
        "epochs": epochs,
        "pretrain_epochs": pretrain_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "likelihood": likelihood,
    }
    if out.exists() and not out.is_dir():
        raise ValueError(f"Expected --out to be a directory but {out} is a file")
    with _fit_lock(out):  # checked and written under the lock: one fit per folder
        _check_out_dir(out, model, resume, overwrite)
        estimator, args = _estimator_and_args(cls, model, data, aux, requested)
        estimator.set_params(random_state=seed, device=device, verbose=0 if quiet else 1)
        _run_fit(estimator, args, out, resume)
    last = estimator.history_[-1] if estimator.history_ else {}
    loss = f", final loss {last['loss']:.4g}" if "loss" in last else ""
    typer.echo(f"saved {type(estimator).__name__} to {out}{loss}")


def _estimator_and_args(
    cls: type, model: str, data: Path, aux: Path | None, requested: dict[str, Any]
) -> tuple[Any, tuple[Any, ...]]:
    """The estimator with the options given, and the arrays its ``fit`` takes."""
    from idvae.models import aux_argument

    loaded = _load_x(data)
    accepted = set(inspect.signature(cls).parameters)
    for name, value in requested.items():
        if value is not None and name not in accepted:
            option = "--" + {"n_components": "components", "facet_components": "facets"}.get(
                name, name
            ).replace("_", "-")
            raise ValueError(f"Expected no {option} for --model {model} but got {value}")
    estimator = cls(**{k: v for k, v in requested.items() if v is not None})
    if aux_argument(cls) is not None:
        return estimator, (loaded.x, _aux_array(aux, loaded, model))
    if aux is not None:
        raise ValueError(f"Expected no --aux for --model {model} but got {aux}")
    return estimator, (loaded.x,)


def _run_fit(estimator: Any, args: tuple[Any, ...], out: Path, resume: bool) -> None:
    """``_fit_and_save``; Ctrl-C says what was kept and exits 130."""
    replacing = not resume and out.is_dir() and any(out.iterdir())
    try:
        _fit_and_save(estimator, args, out, resume)
    except KeyboardInterrupt:
        if replacing:
            where = f"the model in {out} is unchanged"
        elif (out / "checkpoint.pt").is_file():
            where = f"the last finished epoch is saved in {out}: add --resume to continue"
        else:
            where = "no epoch had finished, nothing was saved"
        typer.echo(f"interrupted; {where}", err=True)
        raise typer.Exit(130) from None


@command("transform")
def transform(
    model_dir: Path = typer.Argument(..., help="A model directory written by idvae fit."),
    data: Path = typer.Argument(..., help="Data file: .npz (key x), .npy or .csv."),
    out: Path = typer.Option(..., "--out", help="Output .npy of posterior means (n, m)."),
    aux: Path | None = typer.Option(None, "--aux", help="Auxiliary u (.npy) for ivae."),
) -> None:
    """Write the posterior means E[z | x] of DATA under a saved model."""
    from idvae.models import aux_argument, load, model_name

    _check_distinct(out, "--out", {"DATA": data, "--aux": aux})
    estimator = load(model_dir)
    loaded = _load_x(data)
    if aux_argument(estimator) is not None:
        z = estimator.transform(loaded.x, _aux_array(aux, loaded, model_name(estimator)))
    else:
        z = estimator.transform(loaded.x)
    _save_npy(out, z)
    typer.echo(f"wrote {z.shape[0]} x {z.shape[1]} latents to {out}")


@command("sample")
def sample(
    model_dir: Path = typer.Argument(..., help="A model directory written by idvae fit."),
    n_samples: int = typer.Option(..., "-n", "--n-samples", help="Number of points."),
    out: Path = typer.Option(..., "--out", help="Output .npy of samples (n, n_features)."),
    latent_out: Path | None = typer.Option(None, "--latent-out", help="Also the z (.npy)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Draw from a saved model: decoder means f(z) of z from the prior."""
    from idvae.models import load

    if n_samples < 1:
        raise ValueError(f"Expected -n >= 1 but got {n_samples}")
    _check_npy(out, "--out")
    if latent_out is not None:
        _check_npy(latent_out, "--latent-out")
        _check_distinct(latent_out, "--latent-out", {"--out": out})
    estimator = load(model_dir)
    width = int(estimator.n_features_in_) + int(estimator.module_.latent_dim)
    check_memory(8.0 * n_samples * width, f"-n {n_samples}")
    x, z = estimator.sample(n_samples, random_state=seed, return_latent=True)
    # Both files are complete before either is renamed into place: all or nothing.
    latents = _writing(latent_out, "--latent-out") if latent_out is not None else nullcontext()
    with _writing(out, "--out") as fx, latents as fz:
        np.save(fx, x, allow_pickle=False)
        if fz is not None:
            np.save(fz, z, allow_pickle=False)
    typer.echo(f"wrote {x.shape[0]} samples to {out}")


@command("info")
def info(
    model_dir: Path = typer.Argument(..., help="A model directory written by idvae fit."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    tail: int = typer.Option(5, "--tail", help="How many of the last epochs to show."),
) -> None:
    """Describe a saved model: class, parameters, prior and the end of its training log."""
    from idvae.models import load
    from idvae.models._io import read_config

    config = read_config(model_dir)
    estimator = load(model_dir)
    prior = estimator.prior_
    summary = {
        "class": type(estimator).__name__,
        "idvae_version": config.get("idvae_version"),
        "params": config["params"],
        "n_features": int(estimator.n_features_in_),
        "latent_dim": int(prior.dim),
        "prior": {
            "n_components": int(prior.n_components),
            "weights": np.round(prior.weights, 4).tolist(),
            "means": np.round(prior.means, 4).tolist(),
            "diagonal": bool(prior.is_diagonal()),
        },
        "epochs_run": len(estimator.history_),
        "collapsed_components": [list(c) for c in estimator.collapsed_components_],
        "history_tail": estimator.history_[-max(tail, 0) :] if tail > 0 else [],
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"{summary['class']} (idvae {summary['idvae_version']}) in {model_dir}")
    typer.echo(f"  n_features {summary['n_features']}, latent_dim {summary['latent_dim']}")
    params = ", ".join(f"{k}={v}" for k, v in summary["params"].items())
    typer.echo(f"  params: {params}")
    typer.echo(f"  prior: {prior.n_components} component(s), weights {summary['prior']['weights']}")
    if summary["collapsed_components"]:
        typer.echo(f"  collapsed components: {summary['collapsed_components']}")
    typer.echo(f"  epochs run: {summary['epochs_run']}")
    for record in summary["history_tail"]:
        terms = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in record.items()
            if k != "time_s"
        )
        typer.echo(f"    {terms}")

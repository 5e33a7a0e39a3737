"""``idvae stability``, ``idvae demo`` and ``idvae reproduce``: multi-run studies."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from idvae.cli import command, load_data

__all__ = ["demo", "reproduce", "stability"]

_EXECUTORS = ("local", "ray")


# Options shared by stability, demo and reproduce.
EXECUTOR_OPTION = typer.Option("local", "--executor", help="local or ray.")
JOBS_OPTION = typer.Option(1, "--jobs", help="Local worker processes.")
ADDRESS_OPTION = typer.Option(None, "--address", help="Ray cluster address.")
NO_VECTORIZE_OPTION = typer.Option(
    False, "--no-vectorize", help="Fit seeds one by one, not as one batched model."
)
THREADS_OPTION = typer.Option(
    1, "--threads", help="torch threads of in-process fits (1 is fastest for small nets)."
)


def _check_executor(executor: str, address: str | None) -> None:
    if executor not in _EXECUTORS:
        raise ValueError(f"Expected --executor local or ray but got {executor!r}")
    if address is not None and executor != "ray":
        raise ValueError("Expected --address only with --executor ray")


@contextmanager
def _progress(total: int, description: str) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields a callback taking a run record."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,  # a log file gets the run lines, not bar frames
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(*args: Any) -> None:
            record = args[-1]
            status = "ok" if record.status == "ok" else f"FAILED ({record.error})"
            prefix = f"{args[0]} " if len(args) > 1 else ""
            bar.console.print(
                f"  {prefix}run {record.run_id} (seed {record.seed}): {status}, "
                f"{record.fit_seconds:.1f} s"
            )
            bar.advance(task)

        try:
            yield advance
        except BaseException:
            # A failed command prints its one error line, not a stalled bar above it.
            bar.live.transient = True
            raise


@contextmanager
def _interrupted(kept: str) -> Iterator[None]:
    """Ctrl-C: one line saying what was kept and how to go on, exit status 130."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(f"interrupted; {kept}", err=True)
        raise typer.Exit(130) from None


def _set_threads(threads: int) -> None:
    """Torch threads for fits run in this process (pool and Ray workers use one each)."""
    import torch

    if threads < 1:
        raise ValueError(f"Expected --threads >= 1 but got {threads}")
    torch.set_num_threads(threads)


@command("stability")
def stability(
    data: Path = typer.Argument(..., help="Data file: .npz (key x), .npy or .csv."),
    out: Path = typer.Option(..., "--out", help="Output directory (runs saved as they finish)."),
    runs: int = typer.Option(5, "--runs", help="Number of runs (seeds)."),
    model: str = typer.Option("vade", "--model", help="vade, mfcvae, vae, ivae."),
    latent_dim: int = typer.Option(2, "--latent-dim", help="m, the latent dimension."),
    components: int = typer.Option(3, "--components", help="J, mixture components."),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs (model default)."),
    pretrain_epochs: int | None = typer.Option(
        None, "--pretrain-epochs", help="Pretraining epochs (VaDE/MFCVAE; model default)."
    ),
    executor: str = EXECUTOR_OPTION,
    jobs: int = JOBS_OPTION,
    address: str | None = ADDRESS_OPTION,
    resume: bool = typer.Option(False, "--resume", help="Continue the study in --out."),
    truth: Path | None = typer.Option(
        None, "--truth", help=".npz with the true z (and labels, prior_*); default: DATA's."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed the run seeds derive from."),
    no_vectorize: bool = NO_VECTORIZE_OPTION,
    threads: int = THREADS_OPTION,
    holdout: float = typer.Option(
        0.2, "--holdout", help="Fraction of DATA kept out of every fit (held-out ELBO); 0: none."
    ),
    mode_threshold: float = typer.Option(
        0.95, "--mode-threshold", help="Weak MCC (affine) at which two runs share a mode."
    ),
    score_rows: int | None = typer.Option(
        None, "--score-rows", help="Score the runs on at most this many rows (a seeded subset)."
    ),
) -> None:
    """Fit a model --runs times, measure how alike the latent spaces are (MCC, distAff) and
    group the runs into modes with their held-out ELBO: agreement is not recovery."""
    _set_threads(threads)
    import warnings

    from idvae.experiments import stability as run_stability
    from idvae.experiments.modes import ModeWarning

    _check_executor(executor, address)
    loaded = _with_truth(load_data(data), truth)
    spec, aux = _study_spec(
        model, loaded, latent_dim, components, epochs, pretrain_epochs, holdout, data
    )
    # the modes' warnings are printed below with the modes, not as Python warnings
    with (
        _interrupted(f"the finished runs are saved in {out}: add --resume to continue"),
        _progress(runs, f"{model} × {runs}") as advance,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", ModeWarning)
        result = run_stability(
            spec,
            loaded,
            n_runs=runs,
            random_state=seed,
            out=out,
            fit_kwargs=aux,
            transform_kwargs=aux,
            progress=advance,
            **_where_to_run(executor, jobs, address, resume, no_vectorize),
            holdout=holdout,
            mode_threshold=mode_threshold,
            score_rows=score_rows,
        )
    _report_study(result, model, data, out, labels=loaded.labels, z_true=loaded.z)


def _where_to_run(
    executor: str, jobs: int, address: str | None, resume: bool, no_vectorize: bool
) -> dict[str, Any]:
    """The options that say where and how runs go, as ``stability`` and ``reproduce`` take them."""
    return {
        "executor": executor,
        "jobs": jobs,
        "address": address,
        "resume": resume,
        "vectorize": not no_vectorize,
    }


def _with_truth(loaded: Any, truth: Path | None) -> Any:
    """DATA as ``load_array`` reads it, with the true z, labels and prior of --truth where
    that file has them; a prior whose dimension is not the true z's is dropped."""
    if truth is None:
        return loaded
    given = load_data(truth)
    z = loaded.z if given.z is None else given.z
    labels = loaded.labels if given.labels is None else given.labels
    prior = loaded.prior if given.prior is None else given.prior
    if prior is not None and z is not None and prior.dim != z.shape[1]:
        prior = None
    return replace(loaded, z=z, labels=labels, prior=prior)


def _study_spec(
    model: str,
    loaded: Any,
    latent_dim: int,
    components: int,
    epochs: int | None,
    pretrain_epochs: int | None,
    holdout: float,
    data: Path,
) -> tuple[Any, dict[str, Any]]:
    """The study's ``EstimatorSpec``, and the auxiliary variable of fit and transform."""
    from idvae.experiments import EstimatorSpec
    from idvae.models import aux_argument, get_estimator

    cls = get_estimator(model.lower())
    params = _model_params(cls, latent_dim, components)
    if epochs is not None:
        params["epochs"] = epochs
    if pretrain_epochs is not None:
        params["pretrain_epochs"] = pretrain_epochs
    _check_settings(cls, params, loaded.x.shape, holdout)
    aux = aux_argument(cls)
    if aux is None:
        return EstimatorSpec(model.lower(), params), {}
    value = getattr(loaded, aux, None)
    if value is None:
        raise ValueError(
            f"Expected DATA with a key {aux} (the auxiliary variable) for {model}: {data}"
        )
    return EstimatorSpec(model.lower(), params), {aux: value}


def _report_study(
    result: Any, model: str, data: Path, out: Path, *, labels: Any, z_true: Any
) -> None:
    """Print the study's tables and modes; write results.csv and report.html beside it."""
    from idvae._validation import write_text_atomic
    from idvae.experiments.tables import results_csv, stability_rows
    from idvae.report import write_html_report
    from idvae.report.stability import stability_section

    runs = result.n_runs
    console = Console()
    console.print(result.table(title=f"Stability of {model} over {runs} runs"))
    console.print(result.runs_table())
    if result.modes is not None:
        console.print(result.modes_table())
        for line in result.modes.statements():
            console.print(line, soft_wrap=True, markup=False)
    write_text_atomic(out / "results.csv", results_csv(stability_rows("stability", "data", result)))
    section = stability_section(
        result,
        heading=f"{model} on {data.name}",
        labels=result.scored(labels),
        reference=result.scored(z_true),
    )
    write_html_report(out / "report.html", title=f"Stability: {data.name}", sections=[section])
    typer.echo(f"wrote {out / 'stability.json'}, results.csv, report.html and runs/")
    if result.n_failed == result.n_runs:
        first = next((r.error for r in result.runs if r.error), "no error recorded")
        raise ValueError(
            f"Expected at least one run to succeed but all {result.n_runs} failed (run 0: {first})"
        )


def _check_settings(
    cls: type, params: dict[str, Any], shape: tuple[int, ...], holdout: float
) -> None:
    """Refuse up front the settings every run would fail on, as ``fit`` does."""
    estimator = cls(**params)
    estimator._validate_params()
    n_fit = shape[0] - round(holdout * shape[0]) if 0.0 < holdout < 1.0 else shape[0]
    estimator._check_data(n_fit, shape[1])


def _model_params(cls: type, latent_dim: int, components: int) -> dict[str, Any]:
    """--latent-dim/--components in the parameter names the estimator's constructor takes.

    A faceted model (``facet_dims``) gets one facet; a model without ``n_components`` (no
    mixture prior of its own: VAE, iVAE) gets the latent dimension only.
    """
    accepted = inspect.signature(cls).parameters
    if "facet_dims" in accepted:
        return {"facet_dims": [latent_dim], "facet_components": [components]}
    params: dict[str, Any] = {"latent_dim": latent_dim}
    if "n_components" in accepted:
        params["n_components"] = components
    return params


@command("demo")
def demo(
    out: Path = typer.Option(Path("idvae-demo"), "--out", help="Output directory."),
    quick: bool = typer.Option(False, "--quick", help="A much smaller version (seconds)."),
    runs: int | None = typer.Option(None, "--runs", help="VaDE runs (default 5; quick 2)."),
    jobs: int | None = typer.Option(
        None, "--jobs", help="Worker processes (default: one per core; quick: 1)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the runs."),
    no_vectorize: bool = NO_VECTORIZE_OPTION,
    threads: int = THREADS_OPTION,
) -> None:
    """Simulate model (3), fit VaDE 5 times, print how identifiable the latent space is."""
    _set_threads(threads)
    from idvae.experiments.demo import DEMO_MODEL, DEMO_RUNS, QUICK_MODEL, QUICK_RUNS, run_demo

    model = QUICK_MODEL if quick else DEMO_MODEL
    n_runs = runs or (QUICK_RUNS if quick else DEMO_RUNS)
    console = Console()
    console.print(
        f"Simulating model (3): LeakyReLU decoder, m = {model['latent_dim']}, "
        f"n = {model['obs_dim']}, J = {model['n_components']}, {model['n_samples']} samples; "
        f"fitting VaDE {n_runs} times, and once from the true z"
        + (
            ""
            if no_vectorize or (jobs or 1) > 1
            else " as one batched model (--no-vectorize: one by one)"
        )
    )
    with _progress(n_runs, "VaDE runs") as advance:
        outcome = run_demo(out, quick=quick, n_runs=runs, jobs=jobs, random_state=seed,
                           vectorize=not no_vectorize, progress=advance)  # fmt: skip
    result = outcome.result
    console.print(result.table(title="Identifiability of the learned latent space"))
    for line in [*outcome.verdict.lines, outcome.reference_line]:
        console.print(line, soft_wrap=True)
    if result.modes is not None:
        for line in result.modes.statements():
            console.print(line, soft_wrap=True)
    console.print(
        f"wrote {out / 'results.json'} and {out / 'latents.png'} in {outcome.wall_seconds:.0f} s"
    )


@command("reproduce")
def reproduce(
    name: str = typer.Argument(
        ...,
        help="table2, pinwheel, table3, mle, all (the paper's); table2-defaults, "
        "pinwheel-defaults, vade-mnist (VaDE's defaults); or recovery.",
    ),
    out: Path = typer.Option(..., "--out", help="Output directory (one folder per experiment)."),
    quick: bool = typer.Option(False, "--quick", help="A small version that runs in minutes."),
    runs: int | None = typer.Option(None, "--runs", help="Runs per study (paper's default)."),
    executor: str = EXECUTOR_OPTION,
    jobs: int = JOBS_OPTION,
    address: str | None = ADDRESS_OPTION,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    mnist_root: Path | None = typer.Option(
        None, "--mnist-root", help="Folder with the MNIST IDX files (table3, vade-mnist)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every study."),
    no_vectorize: bool = NO_VECTORIZE_OPTION,
    threads: int = THREADS_OPTION,
    instances: int | None = typer.Option(
        None, "--instances", help="recovery: random instances (default 40; --quick 2)."
    ),
    methods: str | None = typer.Option(
        None, "--methods", help="recovery: configurations, comma-separated (default all)."
    ),
    families: str | None = typer.Option(
        None, "--families", help="recovery: seeds,random,facets (default all; --quick random)."
    ),
    studies: str | None = typer.Option(
        None, "--studies", help="Only these studies of the experiment, comma-separated."
    ),
) -> None:
    """Rerun the paper's experiments (App. J); writes results.json/.csv and report.html.

    ``recovery`` is the recovery benchmark (docs/recovery.md): every configuration scored
    against the truth on random instances of model (3); writes OUT/recovery/results.json,
    results.csv and runs/<instance>/<method>.json.
    """
    _set_threads(threads)
    from idvae.experiments.reproduce import DEFAULTS_VARIANTS, EXPERIMENTS
    from idvae.experiments.reproduce import reproduce as run_reproduce

    _check_executor(executor, address)
    if name == "recovery":
        if runs is not None or mnist_root is not None or studies is not None:
            raise ValueError("Expected no --runs, --mnist-root or --studies with recovery")
        _reproduce_recovery(out / "recovery", quick=quick, executor=executor, jobs=jobs,
                            address=address, resume=resume, seed=seed, instances=instances,
                            methods=methods, families=families)  # fmt: skip
        return
    if instances is not None or methods is not None or families is not None:
        raise ValueError("Expected --instances, --methods and --families only with recovery")
    if name != "all" and name not in EXPERIMENTS + DEFAULTS_VARIANTS:
        known = [*EXPERIMENTS, "all", *DEFAULTS_VARIANTS, "recovery"]
        raise ValueError(f"Expected an experiment in {known} but got {name!r}")
    console = Console(stderr=True)

    def progress(key: str, record: Any) -> None:
        status = "ok" if record.status == "ok" else f"FAILED ({record.error})"
        console.print(f"  {key} run {record.run_id}: {status}, {record.fit_seconds:.1f} s")

    results = run_reproduce(
        name,
        out,
        quick=quick,
        n_runs=runs,
        mnist_root=mnist_root,
        random_state=seed,
        progress=progress,
        studies=None if studies is None else [k.strip() for k in studies.split(",") if k.strip()],
        **_where_to_run(executor, jobs, address, resume, no_vectorize),
    )
    _print_reproduced(results, out)


def _print_reproduced(results: dict[str, Any], out: Path) -> None:
    """One summary per experiment reproduced, and the files it wrote."""
    stdout = Console()
    for exp_name, payload in results.items():
        stdout.print(f"[bold]{payload['title']}[/bold] ({payload['wall_seconds']} s)")
        if exp_name == "mle":
            summary = payload["summary"]
            stdout.print(
                f"  truth is the unique global minimiser in {summary.get('n_unique')} of "
                f"{summary.get('n_simulations')} simulations (paper: 50 of 50)"
            )
        else:
            for key, study in payload["studies"].items():
                between = study["result"]["summary"]["between_runs"]
                cells = ", ".join(
                    f"{metric} {stat['mean']:.3f}"
                    for metric, stat in between.items()
                    if stat["mean"] is not None
                )
                failed = study["result"]["summary"]["n_failed"]
                stdout.print(f"  {key}: {cells}; {failed} failed")
        stdout.print(f"  wrote {out / exp_name}/results.json, results.csv, report.html")


def _reproduce_recovery(
    out: Path,
    *,
    quick: bool,
    executor: str,
    jobs: int,
    address: str | None,
    resume: bool,
    seed: int,
    instances: int | None,
    methods: str | None,
    families: str | None,
) -> None:
    """``idvae reproduce recovery``: run the benchmark, print its table."""
    from idvae.experiments.recovery import recovery_instances, run_recovery

    def names(text: str) -> list[str]:
        return [part.strip() for part in text.split(",") if part.strip()]

    if families is not None:
        chosen = names(families)
    else:
        chosen = ["random"] if quick else ["seeds", "random", "facets"]
    if instances is None:
        instances = 2 if quick else 40
    specs = recovery_instances(
        instances, seed, families=chosen, n_facet_instances=1 if quick else 4, quick=quick
    )
    console = Console(stderr=True)

    def progress(record: Any) -> None:
        if record["status"] != "ok":
            status = f"FAILED ({record['error']})"
        elif record["method"] == "truth":
            status = f"QDA accuracy {record['separability']:.3f}"
        else:
            parts = [f"{record.get('seconds', 0.0):.1f} s"]
            for key in ("weak_mcc", "accuracy"):
                if record.get(key) is not None:
                    parts.append(f"{key} {record[key]:.3f}")
            status = ", ".join(parts)
        console.print(f"  {record['instance']} {record['method']}: {status}", markup=False)

    result = run_recovery(
        out,
        instances=specs,
        methods=names(methods) if methods else None,
        random_state=seed,
        quick=quick,
        executor=executor,  # type: ignore[arg-type]
        jobs=jobs,
        address=address,
        resume=resume,
        progress=progress,
    )
    Console().print(result.table(title=f"Recovery of the truth: {len(specs)} instances"))
    typer.echo(f"wrote {out / 'results.json'}, results.csv and runs/")

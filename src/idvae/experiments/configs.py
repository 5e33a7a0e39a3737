"""The configurations of the paper's experiments (App. J), built from ``idvae.nets``.

An :class:`Experiment` is a tuple of :class:`StudyConfig` (a model on a dataset, fitted
``n_runs`` times); :func:`experiment` builds the one of a name in :data:`EXPERIMENTS`. The
networks come from :func:`idvae.nets.architecture` (``"paper"`` for the synthetic data,
``"arch1"``-``"arch3"`` for MNIST), the paper's numbers from :mod:`idvae.experiments.paper`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idvae._validation import check_positive_int
from idvae.data import Data
from idvae.experiments.mnist import check_mnist_root, load_mnist_all
from idvae.experiments.paper import (
    PAPER_PINWHEEL,
    PAPER_SETUPS,
    PAPER_TABLE2,
    PAPER_TABLE3,
    VADE_MNIST,
)
from idvae.experiments.runs import EstimatorSpec
from idvae.models.vade import ELBO_PIPELINE
from idvae.nets import architecture

__all__ = [
    "DEFAULTS_VARIANTS",
    "EXPERIMENTS",
    "Experiment",
    "StudyConfig",
    "StudyData",
    "experiment",
    "ivae_params",
    "mfcvae_params",
    "paper_vade_net",
    "vade_defaults_params",
    "vade_mnist_params",
    "vade_params",
]

EXPERIMENTS: tuple[str, ...] = ("table2", "pinwheel", "table3", "mle")
# VaDE with its defaults (not part of "all"): the data of Table 2 and the pinwheel fitted
# so instead of with App. J.3.2's configuration, and MNIST (VaDE's own benchmark, 10 seeds
# trained from scratch, nothing selected).
DEFAULTS_VARIANTS: tuple[str, ...] = ("table2-defaults", "pinwheel-defaults", "vade-mnist")


@dataclass(frozen=True, eq=False, kw_only=True)
class StudyData(Data):
    """The data of one study and the truth behind it, when known: an ``idvae.data.Data``
    (x; z, u, prior and labels where known) with how its runs are fitted and described.

    ``stability(spec, data)`` takes it as it is (its z, prior and labels are the truth the
    runs are scored against).

    Attributes:
        fit_kwargs: extra keyword arguments of ``fit`` (iVAE's u).
        transform_kwargs: extra keyword arguments of ``transform`` (iVAE's u).
        description: how the data were made (JSON).
    """

    fit_kwargs: Mapping[str, Any] = field(default_factory=dict)
    transform_kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyConfig:
    """One stability study of an experiment: a model on a dataset, fitted ``n_runs`` times.

    Attributes:
        key: a directory-safe name (``"parallelograms-1"``).
        title: the name shown in reports (``"Random parallelograms #1"``).
        estimator: the model and its parameters.
        load: loads the :class:`StudyData` (called in the driver only).
        paper: the paper's numbers for this study, metric -> (mean, std).
        group: a heading to group studies under in reports (e.g. ``"Arch1"``).
        score_rows: ``stability``'s ``score_rows``: the runs are scored on a seeded subset
            of at most this many rows (None: all), which keeps the run store small.
    """

    key: str
    title: str
    estimator: EstimatorSpec
    load: Callable[[], StudyData]
    paper: Mapping[str, tuple[float, float | None]] = field(default_factory=dict)
    group: str = ""
    score_rows: int | None = None


@dataclass(frozen=True)
class Experiment:
    """A named experiment of App. J: its studies and the number of runs of each.

    ``paper_setup`` is the setup the paper states for it, as (where, what): reports show it
    labelled as the paper's, after our own numbers.
    """

    name: str
    title: str
    studies: tuple[StudyConfig, ...]
    n_runs: int
    quick: bool
    paper_setup: tuple[str, str] | None = None


# --------------------------------------------------------------------------- models


def paper_vade_net() -> dict[str, Any]:
    """VaDE with the paper's synthetic networks (App. J.3.2) and its m = 2, 3 components.

    Encoder n-64-512-64-m and decoder m-64-512-512-n (``architecture("paper")``), LeakyReLU;
    the base of :func:`vade_params` and of the demo's VaDE.
    """
    encoder, decoder = architecture("paper")
    return {
        "latent_dim": 2,
        "n_components": 3,
        "encoder_sizes": list(encoder),
        "decoder_sizes": list(decoder),
        "activation": "leaky_relu",
    }


def vade_params(quick: bool, n_features: int, *, paper_faithful: bool = False) -> dict[str, Any]:
    """VaDE of App. J.3.2: enc n-64-512-64-m, dec m-64-512-512-n, LeakyReLU, 15 + 20 epochs.

    The architecture and the 15 pretraining + 20 VaDE epochs are the paper's, trained on the
    ELBO with no prior refit (``ELBO_PIPELINE``: the published Table 2 and pinwheel figures
    were measured so; VaDE's defaults now use the importance-weighted bound). Two settings
    differ from ``ELBO_PIPELINE`` (``paper_faithful=False``, the default here):

    * ``noise_variance=0.001`` (fixed, in the units of the internally standardised x) instead
      of a learned noise variance. The data's noise (std 0.05 on coordinates of std ~1.5-2)
      is about 0.001 there. With a learned variance, runs reach a local optimum where a
      cluster's spread in one direction is explained as observation noise: its latents
      collapse onto a segment, differently in every run (docs/vade_table2.md). A fixed-scale
      reconstruction loss is also what VaDE's reference implementations optimise.
    * ``covariance_type="full"``: the clusters are rotated parallelograms, which a
      diagonal-covariance component cannot follow, so runs disagreed more on the prior.

    ``paper_faithful=True`` gives ``ELBO_PIPELINE``'s learned noise variance and diagonal
    covariances.
    ``n_features`` is accepted for symmetry with the data; the networks' hidden sizes do
    not depend on it.
    """
    del n_features
    params = ELBO_PIPELINE | paper_vade_net() | {"pretrain_epochs": 15, "epochs": 20}
    if not paper_faithful:
        params.update(noise_variance=0.001, covariance_type="full")
    if quick:
        params.update(pretrain_epochs=2, epochs=3, encoder_sizes=[32, 64, 32])
        params.update(decoder_sizes=[32, 64, 64])
    return params


def vade_defaults_params(quick: bool) -> dict[str, Any]:
    """VaDE with its defaults (m = 2, J = 3): no setting chosen for the data or the paper.

    ``quick`` caps the epochs and the networks as :func:`vade_params` does.
    """
    params: dict[str, Any] = {"latent_dim": 2, "n_components": 3}
    if quick:
        params.update(pretrain_epochs=2, epochs=3, encoder_sizes=[16, 16])
        params.update(decoder_sizes=[16, 16])
    return params


def mfcvae_params(arch: str, activation: str, quick: bool) -> dict[str, Any]:
    """MFCVAE of Table 3: one facet of dimension 5 with 25 components (App. J.3.3 reads "latent
    dimension 5 and 25 components"), Bernoulli likelihood for the [0, 1] pixels."""
    encoder, decoder = architecture(arch)
    params: dict[str, Any] = {
        "facet_dims": [5],
        "facet_components": [25],
        "encoder_sizes": list(encoder),
        "decoder_sizes": list(decoder),
        "activation": activation,
        "likelihood": "bernoulli",
    }
    params.update(_epochs(quick))
    return params


def ivae_params(arch: str, quick: bool) -> dict[str, Any]:
    """iVAE of Table 3: latent dimension 5, LeakyReLU, Bernoulli likelihood, no pretraining."""
    encoder, decoder = architecture(arch)
    params: dict[str, Any] = {
        "latent_dim": 5,
        "encoder_sizes": list(encoder),
        "decoder_sizes": list(decoder),
        "activation": "leaky_relu",
        "likelihood": "bernoulli",
    }
    params.update(_epochs(quick, pretrain=False))
    return params


def _epochs(quick: bool, *, pretrain: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"epochs": 2 if quick else 50}
    if pretrain:
        out["pretrain_epochs"] = 1 if quick else 10
    return out


def vade_mnist_params(quick: bool, *, elbo_pipeline: bool = False) -> dict[str, Any]:
    """VaDE on MNIST with idvae's defaults: only what the data and the model fix is set.

    Fixed by VaDE's MNIST setup (Jiang et al., 2017): m = 10, J = 10 digits, the
    784-500-500-2000 encoder and its mirror as decoder (``architecture("vade")``), ReLU, a
    Bernoulli likelihood for the [0, 1] pixels. Everything else is VaDE's default (the
    importance-weighted bound, prior refits, full covariances, VAE pretraining, the epochs),
    except ``batch_size=512`` instead of 64: 70,000 images at 64 per step would take
    150 x 1,094 steps per seed. ``elbo_pipeline=True`` fits ``ELBO_PIPELINE`` instead (the
    plain ELBO of VaDE's paper, diagonal covariances, no refit, 10 + 40 epochs) on the same
    network. ``quick`` caps epochs and networks.
    """
    encoder, decoder = architecture("vade")
    params: dict[str, Any] = (ELBO_PIPELINE if elbo_pipeline else {}) | {
        "latent_dim": 10,
        "n_components": 10,
        "encoder_sizes": list(encoder),
        "decoder_sizes": list(decoder),
        "activation": "relu",
        "likelihood": "bernoulli",
        "batch_size": 512,
    }
    if quick:
        params.update(pretrain_epochs=2, epochs=3, encoder_sizes=[64, 64])
        params.update(decoder_sizes=[64, 64])
        if not elbo_pipeline:
            params.update(prior_refit_every=2)
    return params


# --------------------------------------------------------------------------- data


def _parallelogram_loader(index: int, n_samples: int) -> Callable[[], StudyData]:
    def load() -> StudyData:
        from idvae.datasets import parallelograms

        data = parallelograms(n_samples, 3, random_state=index)
        return StudyData(
            x=data.x,
            z=data.z,
            labels=data.labels,
            description={
                "dataset": "parallelograms",
                "n_samples": n_samples,
                "n_parallelograms": 3,
                "random_state": index,
            },
        )

    return load


def _pinwheel_loader(n_samples: int) -> Callable[[], StudyData]:
    def load() -> StudyData:
        from idvae.datasets import pinwheel

        data = pinwheel(n_samples, 3, random_state=0)
        return StudyData(
            x=data.x,
            z=data.z,
            labels=data.labels,
            description={"dataset": "pinwheel", "n_samples": n_samples, "n_classes": 3},
        )

    return load


def _mnist_loader(root: Path, n_samples: int | None, *, aux: bool) -> Callable[[], StudyData]:
    def load() -> StudyData:
        x, labels = load_mnist_all(root)
        if n_samples is not None:
            x, labels = x[:n_samples], labels[:n_samples]
        return StudyData(
            x=x,
            labels=labels,
            # iVAE's u: the digit labels (IVAE one-hot encodes class labels itself); its
            # encoder q(z | x, u) needs u in transform too
            fit_kwargs={"u": labels} if aux else {},
            transform_kwargs={"u": labels} if aux else {},
            description={"dataset": "mnist", "n_samples": int(x.shape[0]), "root": str(root)},
        )

    return load


# --------------------------------------------------------------------------- experiments


def experiment(
    name: str,
    *,
    quick: bool = False,
    n_runs: int | None = None,
    mnist_root: str | Path | None = None,
) -> Experiment:
    """The configuration of an experiment of App. J.

    Args:
        name: ``"table2"``, ``"pinwheel"``, ``"table3"`` or ``"mle"``; or
            ``"table2-defaults"`` / ``"pinwheel-defaults"``, the same data fitted with VaDE's
            defaults (``vade_defaults_params``); or ``"vade-mnist"``, VaDE's defaults on all
            70,000 MNIST images (``vade_mnist_params``), 10 seeds.
        quick: a small version (minutes on a laptop); numbers not comparable to the paper.
        n_runs: runs per study (default: the paper's, 5 for table2/pinwheel and 10 for
            table3 and vade-mnist; 2 when quick).
        mnist_root: the MNIST directory (table3 and vade-mnist).
    """
    if name not in EXPERIMENTS + DEFAULTS_VARIANTS:
        raise ValueError(
            f"Expected an experiment in {[*EXPERIMENTS, *DEFAULTS_VARIANTS]} or 'all' but got "
            f"{name!r}"
        )
    if n_runs is not None:
        n_runs = check_positive_int(n_runs, "runs")
    if name == "vade-mnist":
        return _vade_mnist(quick, n_runs, check_mnist_root(mnist_root))
    defaults = name in DEFAULTS_VARIANTS
    vade = EstimatorSpec("vade", vade_defaults_params(quick) if defaults else vade_params(quick, 2))
    if name.startswith("table2"):
        return _table2(name, vade, quick, n_runs)
    if name.startswith("pinwheel"):
        return _pinwheel(name, vade, quick, n_runs)
    if name == "table3":
        return _table3(quick, n_runs, check_mnist_root(mnist_root))
    return Experiment(name, "Maximum likelihood (Fig. 1, App. J.3.1)", (), 1, quick)


def _with_defaults(title: str, name: str) -> str:
    return f"{title} (VaDE's defaults)" if name in DEFAULTS_VARIANTS else title


def _table2(name: str, vade: EstimatorSpec, quick: bool, n_runs: int | None) -> Experiment:
    n_samples = 600 if quick else 5000
    studies = tuple(
        StudyConfig(
            key=f"parallelograms-{i}",
            title=f"Random parallelograms #{i}",
            estimator=vade,
            load=_parallelogram_loader(i, n_samples),
            paper=PAPER_TABLE2[f"parallelograms-{i}"],
        )
        for i in (1, 2, 3)
    )
    return Experiment(
        name,
        _with_defaults("Table 2: VaDE on random parallelograms", name),
        studies,
        n_runs or (2 if quick else 5),
        quick,
        PAPER_SETUPS["table2"],
    )


def _pinwheel(name: str, vade: EstimatorSpec, quick: bool, n_runs: int | None) -> Experiment:
    n_samples = 600 if quick else 5000
    study = StudyConfig(
        key="pinwheel",
        title="Pinwheel, 3 arms",
        estimator=vade,
        load=_pinwheel_loader(n_samples),
        paper=PAPER_PINWHEEL["pinwheel"],
    )
    return Experiment(
        name,
        _with_defaults("Pinwheel (Fig. 2): VaDE, 5 runs", name),
        (study,),
        n_runs or (2 if quick else 5),
        quick,
        PAPER_SETUPS["pinwheel"],
    )


# Table 3's runs are scored on 5,000 of the 70,000 images (the same seeded subset for every
# run): each run then stores 5,000 x 5 latents and predictions, about 0.25 MB, so the run
# store of the whole table (90 runs) can be committed and resumed in another session.
TABLE3_SCORE_ROWS = 5_000


def _table3(quick: bool, n_runs: int | None, root: Path) -> Experiment:
    n_samples = 1000 if quick else None
    archs = ("arch1",) if quick else ("arch1", "arch2", "arch3")
    studies: list[StudyConfig] = []
    for arch in archs:
        group = arch.capitalize()
        for activation in ("relu", "leaky_relu"):
            studies.append(
                StudyConfig(
                    key=f"{arch}-mfcvae-{activation}",
                    title=f"{group} MFCVAE {_ACTIVATION_LABELS[activation]}",
                    estimator=EstimatorSpec("mfcvae", mfcvae_params(arch, activation, quick)),
                    load=_mnist_loader(root, n_samples, aux=False),
                    paper=PAPER_TABLE3[f"{arch}-mfcvae-{activation}"],
                    group=group,
                    score_rows=TABLE3_SCORE_ROWS,
                )
            )
        studies.append(
            StudyConfig(
                key=f"{arch}-ivae-leaky_relu",
                title=f"{group} iVAE LeakyReLU (u = labels)",
                estimator=EstimatorSpec("ivae", ivae_params(arch, quick)),
                load=_mnist_loader(root, n_samples, aux=True),
                paper=PAPER_TABLE3[f"{arch}-ivae-leaky_relu"],
                group=group,
                score_rows=TABLE3_SCORE_ROWS,
            )
        )
    return Experiment(
        "table3",
        "Table 3: MFCVAE vs iVAE on MNIST",
        tuple(studies),
        n_runs or (2 if quick else 10),
        quick,
        PAPER_SETUPS["table3"],
    )


def _vade_mnist(quick: bool, n_runs: int | None, root: Path) -> Experiment:
    load = _mnist_loader(root, 1000 if quick else None, aux=False)
    studies = tuple(
        StudyConfig(
            key=key,
            title=title,
            estimator=EstimatorSpec("vade", vade_mnist_params(quick, elbo_pipeline=elbo)),
            load=load,
            paper=VADE_MNIST["vade-mnist"],
        )
        for key, title, elbo in (
            ("vade-mnist", "VaDE's defaults", False),
            ("vade-mnist-elbo", "VaDE, ELBO_PIPELINE (the ELBO of VaDE's paper)", True),
        )
    )
    return Experiment(
        "vade-mnist",
        "VaDE on MNIST over seeds, trained from scratch, nothing selected",
        studies,
        n_runs or (2 if quick else 10),
        quick,
        PAPER_SETUPS["vade-mnist"],
    )


# how study titles name the activations of Table 3
_ACTIVATION_LABELS = {"relu": "ReLU", "leaky_relu": "LeakyReLU"}

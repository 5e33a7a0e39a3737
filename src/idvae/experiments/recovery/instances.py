"""Instances of model (3) for the recovery benchmark: small JSON specs, drawn from a seed.

See :func:`recovery_instances` and docs/recovery.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from idvae._validation import check_positive_int

__all__ = ["FAMILIES", "n_components", "recovery_instances", "simulate_instance"]

FAMILIES: tuple[str, ...] = ("seeds", "random", "facets")
SIMULATOR_SEEDS = tuple(range(10))
QUICK_SAMPLES = 400


def recovery_instances(
    n_instances: int = 40,
    random_state: int = 0,
    *,
    families: Sequence[str] = FAMILIES,
    n_facet_instances: int = 4,
    quick: bool = False,
) -> list[dict[str, Any]]:
    """The benchmark's instances of model (3), drawn reproducibly from ``random_state``.

    Args:
        n_instances: instances of the ``random`` family.
        random_state: int >= 0; the ``random`` and ``facets`` draws derive from it (the
            ``seeds`` family is fixed).
        families: which of ``"seeds"``, ``"random"``, ``"facets"`` to include.
        n_facet_instances: instances of the ``facets`` family.
        quick: tiny instances for tests and smoke runs (400 samples, m = 2, J = 3, one
            hidden layer, n <= 8, facets (2, 2)); the ``seeds`` family is unchanged.

    Returns:
        A list of dicts (JSON types only), each with ``id``, ``family`` and the arguments
        of ``sample_model`` (``n_samples``, ``latent_dim``, ``obs_dim``, ``n_components``
        or ``facets`` and ``facet_weights``, ``decoder``, ``hidden``, ``noise_std``,
        ``random_state``); :func:`simulate_instance` draws the data.

    Example:
        >>> specs = recovery_instances(3, families=["random"])
        >>> [s["id"] for s in specs]
        ['random-00', 'random-01', 'random-02']
    """
    n_instances = check_positive_int(n_instances, "n_instances", minimum=0)
    n_facet_instances = check_positive_int(n_facet_instances, "n_facet_instances", minimum=0)
    seed = check_positive_int(random_state, "random_state", minimum=0)
    unknown = sorted(set(families) - set(FAMILIES))
    if isinstance(families, str) or unknown:
        raise ValueError(f"Expected families among {list(FAMILIES)} but got {families!r}")
    specs: list[dict[str, Any]] = []
    if "seeds" in families:
        specs += [
            {
                "id": f"seed-{s}",
                "family": "seeds",
                "n_samples": 3000,
                "latent_dim": 2,
                "obs_dim": 10,
                "n_components": 3,
                "random_state": s,
            }
            for s in SIMULATOR_SEEDS
        ]
    if "random" in families:
        streams = np.random.SeedSequence([seed, 0]).spawn(n_instances)
        for i, stream in enumerate(streams):
            spec = _draw_random(np.random.default_rng(stream), quick)
            specs.append({"id": f"random-{i:02d}", "family": "random", **spec})
    if "facets" in families:
        streams = np.random.SeedSequence([seed, 1]).spawn(n_facet_instances)
        for i, stream in enumerate(streams):
            spec = _draw_faceted(np.random.default_rng(stream), i, quick)
            specs.append({"id": f"facets-{i}", "family": "facets", **spec})
    return specs


def _draw_decoder(rng: np.random.Generator, m: int, n: int, depth: int) -> dict[str, Any]:
    hidden = sorted(int(h) for h in rng.integers(m, n + 1, size=depth))
    return {"decoder": str(rng.choice(["leaky_relu", "relu"])), "hidden": hidden}


def _draw_samples(rng: np.random.Generator) -> int:
    return int(round(math.exp(rng.uniform(math.log(2000), math.log(20000))), -2))


def _draw_random(rng: np.random.Generator, quick: bool) -> dict[str, Any]:
    if quick:
        m, n, J, depth, n_samples = 2, int(rng.integers(5, 9)), 3, 1, QUICK_SAMPLES
    else:
        m = int(rng.integers(2, 6))
        n = int(rng.integers(max(8, m), 51))
        J = int(rng.integers(3, 9))
        depth = int(rng.integers(1, 4))
        n_samples = _draw_samples(rng)
    return {
        "n_samples": n_samples,
        "latent_dim": m,
        "obs_dim": n,
        "n_components": J,
        **_draw_decoder(rng, m, n, depth),
        "noise_std": 0.05,
        "random_state": int(rng.integers(2**31 - 1)),
    }


FACET_SHAPES = ((2, 2), (2, 3), (3, 3), (2, 2, 2))


def _draw_faceted(rng: np.random.Generator, index: int, quick: bool) -> dict[str, Any]:
    facets = (2, 2) if quick else FACET_SHAPES[index % len(FACET_SHAPES)]
    k = len(facets)
    if quick:
        m, n, depth, n_samples = 2, 6, 1, QUICK_SAMPLES
    else:
        m = int(rng.integers(max(2, k), 6))
        n = int(rng.integers(8, 51))
        depth = int(rng.integers(1, 4))
        n_samples = _draw_samples(rng)
    # independent facets (MFCVAE's prior is a product); every weight >= 1 / (2 d)
    weights = [(0.5 / d + 0.5 * rng.dirichlet(2.0 * np.ones(d))).tolist() for d in facets]
    return {
        "n_samples": n_samples,
        "latent_dim": m,
        "obs_dim": n,
        "facets": list(facets),
        "facet_weights": weights,
        **_draw_decoder(rng, m, n, depth),
        "noise_std": 0.05,
        "random_state": int(rng.integers(2**31 - 1)),
    }


def simulate_instance(spec: Mapping[str, Any]) -> Any:
    """Draw an instance's data and truth: ``sample_model`` with the spec's arguments.

    Returns:
        An ``idvae.simulate.Simulation``.
    """
    from idvae.simulate import sample_model

    keys = ("latent_dim", "obs_dim", "n_components", "decoder", "hidden", "noise_std", "facets")
    kwargs = {key: spec[key] for key in keys if key in spec}
    if "facet_weights" in spec:
        kwargs["joint"] = _outer(spec["facet_weights"])
    return sample_model(int(spec["n_samples"]), **kwargs, random_state=int(spec["random_state"]))


def _outer(weights: Sequence[Sequence[float]]) -> np.ndarray:
    joint = np.ones(())
    for w in weights:
        joint = np.multiply.outer(joint, np.asarray(w, dtype=np.float64))
    return joint / joint.sum()


def n_components(spec: Mapping[str, Any]) -> int:
    if "facets" in spec:
        return math.prod(spec["facets"])
    return int(spec["n_components"])

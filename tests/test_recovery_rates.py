"""Recovery of a known truth as rates over consecutive seeds, never one chosen seed (issue 8).

Each estimator is fitted to the simulator's instances with seeds 0-7; a test asserts how many
of the eight recover the truth. Where the rate the project aims for (7 of 8) is not reached
yet, that assertion is a strict expected failure whose reason gives the measured rate: it
fails loudly the day it starts to pass. Beside it, an assertion that holds today and can
fail: VaDE must beat PCA on the same eight instances.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from idvae.metrics import cluster_accuracy, mcc
from idvae.models import IVAE, MFCVAE, VaDE
from idvae.simulate import sample_model

pytestmark = pytest.mark.slow

SEEDS = range(8)
TARGET = 7  # of 8


def _weak(z_true: np.ndarray, z: np.ndarray) -> float:
    return float(mcc(z_true, z, alignment="affine", random_state=0))


@pytest.fixture(scope="module")
def vade_and_pca() -> dict[str, list[tuple[float, float]]]:
    """(weak MCC, accuracy) per seed: VaDE with its defaults, and PCA + GaussianMixture."""
    rows: dict[str, list[tuple[float, float]]] = {"vade": [], "pca": []}
    for seed in SEEDS:
        sim = sample_model(3000, latent_dim=2, obs_dim=10, n_components=3, random_state=seed)
        model = VaDE(2, 3, random_state=seed, device="cpu").fit(sim.x)
        rows["vade"].append(
            (_weak(sim.z, model.transform(sim.x)), cluster_accuracy(sim.u, model.labels_))
        )
        z = PCA(2).fit_transform((sim.x - sim.x.mean(0)) / sim.x.std())
        labels = GaussianMixture(3, n_init=3, random_state=seed).fit_predict(z)
        rows["pca"].append((_weak(sim.z, z), cluster_accuracy(sim.u, labels)))
    return rows


def _recovered(rows: list[tuple[float, float]]) -> int:
    return sum(weak >= 0.95 and accuracy >= 0.95 for weak, accuracy in rows)


@pytest.mark.xfail(
    strict=True,
    reason="issue 8: VaDE's defaults (IW bound, prior refits, full covariances) recover 4 of "
    "seeds 0-7 here (measured 2026-11-30; the earlier ELBO pipeline 1 of 8); the target is 7",
)
def test_vade_recovers_seven_of_eight_instances(vade_and_pca):
    assert _recovered(vade_and_pca["vade"]) >= TARGET, vade_and_pca["vade"]


def test_vade_beats_pca_on_the_same_instances(vade_and_pca):
    """Median weak MCC and median cluster accuracy above PCA + GaussianMixture's."""
    vade, pca = np.array(vade_and_pca["vade"]), np.array(vade_and_pca["pca"])
    assert np.median(vade[:, 0]) > np.median(pca[:, 0]), (vade, pca)
    assert np.median(vade[:, 1]) > np.median(pca[:, 1]), (vade, pca)


def ivae_scores() -> list[float]:
    """Weak MCC to the true z per seed, u = the true component labels (m = 2, n = 10, J = 5).

    IVAE with its defaults. Until 2026-12-02 this test fitted smaller networks for 30 epochs
    (64-64, batch 128), which left the fits short of convergence: 5 of 8 seeds there.
    """
    scores = []
    for seed in SEEDS:
        sim = sample_model(2000, latent_dim=2, obs_dim=10, n_components=5, random_state=seed)
        model = IVAE(2, random_state=seed, device="cpu").fit(sim.x, sim.u)
        assert model.prior_.n_components == 5
        scores.append(_weak(sim.z, model.transform(sim.x, sim.u)))
    return scores


@functools.cache
def mfcvae_fits() -> list[tuple[float, float]]:
    """(lower per-facet cluster accuracy, weak MCC to the true z) per seed, facets matched
    first.

    Two independent facets of 3 states, 2 latent coordinates per facet (ne(U_i) = block i,
    as MFCVAE assumes), one hidden LeakyReLU layer to 12 dimensions. Facets are identifiable
    up to their order, so they are matched to the truth first. MFCVAE with its defaults
    (until 2026-12-02 this test fitted (64, 64) networks for 10 + 40 + 20 epochs with the
    joint route, 5 of 8; the facet refits of 2026-12-02 reached 6 of 8; the basis refits
    and 60 epochs of 2026-12-03 reach 7, benchmarks/levers_mfcvae.py refit5-basis-e60).
    """
    joint = np.outer([0.3, 0.3, 0.4], [0.25, 0.35, 0.4])
    fits = []
    for seed in SEEDS:
        sim = sample_model(
            3000, latent_dim=4, obs_dim=12, facets=(3, 3), joint=joint, hidden=(12,),
            random_state=seed,
        )  # fmt: skip
        model = MFCVAE((2, 2), (3, 3), random_state=seed, device="cpu").fit(sim.x)
        labels = model.predict(sim.x)
        accuracy = max(
            min(cluster_accuracy(sim.u[:, i], labels[:, order[i]]) for i in range(2))
            for order in ((0, 1), (1, 0))
        )
        fits.append((accuracy, _weak(sim.z, model.transform(sim.x))))
    return fits


def mfcvae_scores() -> list[float]:
    """The lower of the two per-facet cluster accuracies per seed (``mfcvae_fits``)."""
    return [accuracy for accuracy, _ in mfcvae_fits()]


SCORES = {"ivae": ivae_scores, "mfcvae": mfcvae_scores}
_cache: dict[str, list[float]] = {}


def _scores(name: str) -> list[float]:
    """Each estimator's eight fits run once per session, shared by the tests below."""
    if name not in _cache:
        _cache[name] = SCORES[name]()
    return _cache[name]


@pytest.mark.parametrize("name", list(SCORES))
def test_recovers_on_seven_of_eight_seeds(name):
    """iVAE: weak MCC >= 0.9 given the true u; MFCVAE: each facet's accuracy >= 0.9."""
    scores = _scores(name)
    assert sum(s >= 0.9 for s in scores) >= TARGET, scores


@pytest.mark.parametrize("name", list(SCORES))
def test_median_over_eight_seeds(name):
    """The median over the eight seeds reaches the per-seed threshold, 0.9."""
    scores = _scores(name)
    assert np.median(scores) >= 0.9, scores


@pytest.mark.xfail(
    strict=True,
    reason="issue 8: at its bar (weak MCC and each facet's accuracy >= 0.95) MFCVAE's defaults "
    "recover 5 of seeds 0-7 (benchmarks/levers_mfcvae.py refit5-basis-e60, 2026-12-03: seeds "
    "3, 6 and 7 miss); the target is 7",
)
def test_mfcvae_recovers_both_facets_at_issue_8s_bar_on_seven_of_eight():
    fits = mfcvae_fits()
    assert sum(a >= 0.95 and w >= 0.95 for a, w in fits) >= TARGET, fits

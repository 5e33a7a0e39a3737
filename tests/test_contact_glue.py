"""The geometry of benchmarks/contact_glue.py (eighteenth round of docs/recovery_levers.md):
exact where x is an affine image of z, and the noise read from x alone."""

from __future__ import annotations

import numpy as np

from benchmark_scripts import benchmark_module


def _augmented(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    h = np.eye(len(b) + 1)
    h[:-1, :-1], h[:-1, -1] = a, b
    return h


def test_synchronise_recovers_consistent_affine_maps_exactly() -> None:
    """Pairwise maps H_ij = T_i^-1 T_j of affine maps T_c give back T_0^-1 T_c."""
    module = benchmark_module("contact_glue")
    rng = np.random.default_rng(0)
    m, n_components = 3, 4
    maps = [_augmented(rng.normal(size=(m, m)), rng.normal(size=m)) for _ in range(n_components)]
    pairs = {
        (i, j): (*np.split(np.linalg.solve(maps[i], maps[j])[:m], [m], axis=1), 1.0)
        for i in range(n_components)
        for j in range(i + 1, n_components)
    }
    pairs = {key: (a, b.ravel(), w) for key, (a, b, w) in pairs.items()}
    g = module.synchronise(pairs, n_components, m)
    for c in range(n_components):
        np.testing.assert_allclose(g[c], np.linalg.solve(maps[0], maps[c])[:m], atol=1e-9)


def test_tangent_agreement_is_one_on_a_shared_flat_and_zero_across() -> None:
    module = benchmark_module("contact_glue")
    rng = np.random.default_rng(1)
    jac = rng.normal(size=(6, 2))
    assert abs(module.tangent_agreement(jac, jac @ rng.normal(size=(2, 2))) - 1.0) < 1e-12
    e = np.eye(6)
    assert abs(module.tangent_agreement(e[:, :2], e[:, 2:4])) < 1e-12


def test_glue_at_contacts_places_scrambled_components_of_an_affine_decoder() -> None:
    """x an affine image of z (no noise): each component's chart moved by its own affine
    map is glued back into one affine image of z."""
    module = benchmark_module("contact_glue")
    from idvae.simulate import sample_model

    sim = sample_model(900, latent_dim=2, obs_dim=5, n_components=3, random_state=0)
    rng = np.random.default_rng(2)
    x = sim.z @ rng.normal(size=(2, 5)) + rng.normal(size=5)
    scrambled = module.scrambled_truth(sim, seed=3)
    design = np.c_[scrambled, np.ones(len(x))]
    before = np.linalg.lstsq(design, sim.z, rcond=None)[1].sum() / (len(x) * sim.z.var(0).sum())
    assert before > 0.05  # the scrambling breaks the arrangement
    glued = module.glue_at_contacts(x, scrambled, sim.labels)
    design = np.c_[glued, np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(design, sim.z, rcond=None)
    np.testing.assert_allclose(design @ coef, sim.z, atol=1e-6)


def test_local_noise_variance_reads_the_noise_of_a_flat() -> None:
    """Points on a 2-flat in R^12 with isotropic noise of variance s2: the estimate is s2 in
    the scaled units (root mean variance one) to within 30%, and below it: the smallest
    eigenvalues of a covariance of 18 neighbours lie below the noise (21% here)."""
    module = benchmark_module("contact_glue")
    rng = np.random.default_rng(4)
    z = rng.normal(size=(4000, 2))
    clean = z @ rng.normal(size=(2, 12))
    x = clean + 0.1 * rng.normal(size=clean.shape)
    expected = 0.01 / x.var(0).mean()
    assert 0.7 < module.local_noise_variance(x, 2) / expected < 1.0

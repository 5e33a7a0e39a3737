"""App. H: check_decoder on certified, refuted and empirical cases; the counterexamples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from torch import nn

from idvae.identify import check_decoder
from idvae.identify.counterexamples import (
    example_1,
    example_4,
    example_5,
    pushforward_pdf,
    relu_fold,
    remark_3_6,
)
from idvae.identify.decoder import decoder_layers
from idvae.nets import mlp


def f_np(net: nn.Module, z: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net.double()(torch.as_tensor(np.atleast_2d(z), dtype=torch.float64)).numpy()


def seeded_mlp(sizes, activation, seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    return mlp(sizes, activation)


# --------------------------------------------------------------------------------------
# certificates
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sizes", [[2, 8, 10], [3, 3, 3], [2, 16, 64, 64], [5, 5, 20, 20, 30]])
def test_app_h_leaky_architectures_are_certified_injective(sizes) -> None:
    rep = check_decoder(seeded_mlp(sizes, "leaky_relu"))
    assert rep.injective and rep.observably_injective and rep.weakly_injective
    assert all(rep.certified.values())
    assert any("Lemma H.3" in r for r in rep.reasons)
    assert rep.widths == tuple(sizes)


def test_simulator_decoders_are_certified() -> None:
    from idvae.simulate import sample_model

    sim = sample_model(20, latent_dim=3, obs_dim=8, n_components=2, random_state=0)
    rep = check_decoder(sim.decoder)
    assert rep.injective is True and rep.certified["injective"]


def test_narrow_output_and_rank_deficient_first_layer_are_refuted() -> None:
    rep = check_decoder(seeded_mlp([4, 8, 3], "leaky_relu"))
    assert rep.output_dim < rep.input_dim
    assert (rep.weakly_injective, rep.observably_injective, rep.injective) == (False,) * 3
    assert all(rep.certified.values())
    rep = check_decoder(seeded_mlp([4, 2, 10], "leaky_relu"))  # kernel in the first layer
    assert rep.injective is False and rep.weakly_injective is False
    assert all(rep.certified.values())
    assert "kernel" in rep.reasons[0]


def test_relu_net_with_contracting_layer_is_not_injective() -> None:
    net = seeded_mlp([2, 10, 3, 10], "relu")
    rep = check_decoder(net, random_state=0)
    assert rep.injective is False and rep.certified["injective"]
    z1, z2 = rep.witness
    assert np.linalg.norm(z1 - z2) > 1e-6
    np.testing.assert_allclose(f_np(net, z1), f_np(net, z2), atol=1e-8)


def _piece_orientations(net: nn.Sequential) -> set[int]:
    """Signs of det J over the linear pieces of z -> W2 leaky(W1 z + b1) + b2, the part of
    the net [2, 8, 2, 8] before its last LeakyReLU and its rank-2 last layer (both
    injective). Sampled on a grid reaching past every vertex of the 8 lines W1 z + b1 = 0,
    so that every linear region holds grid points."""
    first, act, second = net[0], net[1], net[2]
    w1, b1 = first.weight.detach().double().numpy(), first.bias.detach().double().numpy()
    w2 = second.weight.detach().double().numpy()
    vertices = [
        np.linalg.solve(w1[[i, j]], -b1[[i, j]])
        for i in range(len(b1))
        for j in range(i)
        if abs(np.linalg.det(w1[[i, j]])) > 1e-12
    ]
    radius = 2 * max(np.abs(v).max() for v in vertices) + 1
    axis = np.linspace(-radius, radius, 801)
    z = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    slopes = np.where(z @ w1.T + b1 > 0, 1.0, act.negative_slope)  # (points, 8)
    jacobians = np.einsum("ij,pj,jk->pik", w2, slopes, w1)
    return set(np.sign(np.linalg.det(jacobians)).astype(int).tolist())


def _coordinatewise_net() -> nn.Sequential:
    """[2, 8, 2, 8] whose middle map sends z to (h(z_1), h(z_2)), h a sum of increasing
    leaky ramps: injective, though the 8 -> 2 layer puts it outside App. H's conditions."""
    net = seeded_mlp([2, 8, 2, 8], "leaky_relu")
    scales = np.array([1.0, 1.0, 2.0, 2.0, 0.5, 0.5, 1.0, 1.0])[:, None]
    with torch.no_grad():
        net[0].weight.copy_(torch.as_tensor(np.tile(np.eye(2), (4, 1)) * scales))
        net[0].bias.copy_(torch.as_tensor([0.0] * 6 + [1.0, 1.0]))
        net[2].weight.copy_(torch.as_tensor(np.tile(np.eye(2), (1, 4)) / 4))
    return net


@pytest.mark.parametrize(
    "make_net",
    [lambda: seeded_mlp([2, 8, 2, 8], "leaky_relu", seed=1), _coordinatewise_net],
    ids=["seeded", "coordinatewise"],
)
def test_leaky_net_with_contracting_layer_is_decided_empirically(make_net) -> None:
    net = make_net()
    rep = check_decoder(net, random_state=0)
    assert not rep.certified["weakly_injective"]
    assert any("App. H's sufficient conditions do not apply" in r for r in rep.reasons)
    # Independent reference: a continuous piecewise-linear map of R^2 onto itself is
    # injective iff all its pieces have Jacobian determinants of one sign (coherent
    # orientation); two adjacent pieces of opposite orientation fold the plane.
    orientations = _piece_orientations(net)
    assert rep.injective is (len(orientations) == 1 and 0 not in orientations)
    if rep.injective is False:
        z1, z2 = rep.witness
        assert np.linalg.norm(z1 - z2) > 1e-6
        np.testing.assert_allclose(f_np(net, z1), f_np(net, z2), atol=1e-8)


def test_unsupported_layers_are_named() -> None:
    with pytest.raises(TypeError, match="Tanh"):
        check_decoder(nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 4)))
    with pytest.raises(TypeError, match="Conv1d"):
        check_decoder(nn.Sequential(nn.Conv1d(1, 1, 1)))
    with pytest.raises(TypeError, match="nn.Module"):
        check_decoder("not a net")


def test_nested_sequential_merges_affine_layers() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Linear(2, 6), nn.Linear(6, 6)),
        nn.Dropout(0.1),
        nn.LeakyReLU(0.1),
        nn.Sequential(nn.Linear(6, 7)),
    )
    ops = decoder_layers(net)
    assert [op[0] for op in ops] == ["affine", "act", "affine"]
    z = np.random.default_rng(0).normal(size=(4, 2))
    h = z @ ops[0][1].T + ops[0][2]
    h = np.where(h > 0, h, 0.1 * h)
    np.testing.assert_allclose(h @ ops[2][1].T + ops[2][2], f_np(net.eval(), z), atol=1e-6)
    assert check_decoder(net).injective  # 2 -> 6 -> 7 with full column rank


# --------------------------------------------------------------------------------------
# counterexamples
# --------------------------------------------------------------------------------------
def test_remark_3_6_equal_pushforwards_but_not_affinely_related() -> None:
    ce = remark_3_6(sigma=0.7)
    x = np.linspace(-1.0, 12.0, 3001)
    np.testing.assert_allclose(pushforward_pdf(ce.f, ce.p, x), pushforward_pdf(ce.g, ce.q, x))
    # the density of |X| on [0, inf) is p(x) + p(-x) and integrates to one
    total = quad(lambda t: pushforward_pdf(ce.f, ce.p, np.array([t]))[0], 0, np.inf)[0]
    assert total == pytest.approx(1.0, abs=1e-8)
    # Monte Carlo agrees with the closed form
    xs = np.abs(ce.p.sample(200_000, 0)).ravel()
    hist, edges = np.histogram(xs, bins=40, range=(0, 6), density=True)
    mids = 0.5 * (edges[1:] + edges[:-1])
    np.testing.assert_allclose(hist, pushforward_pdf(ce.f, ce.p, mids), atol=0.02)
    # no affine map a x + b sends P to P' (equal variances force |a| = 1)
    mu_p, mu_q = ce.p.means.ravel(), np.sort(ce.q.means.ravel())
    for a in (1.0, -1.0):
        images = np.sort(a * mu_p)
        assert not np.allclose(np.diff(images), np.diff(mu_q))


def test_example_4_equal_laws_different_maps() -> None:
    ce = example_4()
    x = np.linspace(-12.0, 12.0, 4001)
    pf, pg = pushforward_pdf(ce.f, ce.p, x), pushforward_pdf(ce.g, ce.p, x)
    np.testing.assert_allclose(pf, pg, atol=1e-14)
    mass = quad(lambda t: pushforward_pdf(ce.f, ce.p, np.array([t]))[0], -60, 60, limit=200)
    assert mass[0] == pytest.approx(1.0, abs=1e-7)
    # Monte Carlo: f(Y) and g(Y) from the same draws have matching histograms
    y = ce.p.sample(200_000, 1).ravel()
    hf, _ = np.histogram(ce.f(y), bins=30, range=(-4, 4), density=True)
    hg, _ = np.histogram(ce.g(y), bins=30, range=(-4, 4), density=True)
    np.testing.assert_allclose(hf, hg, atol=0.03)
    # an affine reparametrisation a∘g∘h keeps the number of kinks: 3 vs 4
    assert len(ce.f.kinks()) == 3 and len(ce.g.kinks()) == 4
    assert not np.allclose(ce.f(x), ce.g(x))


def test_example_5_is_abs_over_two_and_flagged() -> None:
    ce = example_5()
    x = np.linspace(-5, 5, 101)
    np.testing.assert_allclose(f_np(ce.f, x[:, None]).ravel(), np.abs(x) / 2, atol=1e-12)
    rep = check_decoder(ce.f, random_state=0)
    assert (rep.weakly_injective, rep.observably_injective, rep.injective) == (False,) * 3
    assert all(rep.certified.values())  # m = 1: decided exactly from the linear pieces
    z1, z2 = rep.witness
    assert abs(z1[0] - z2[0]) > 1e-6
    np.testing.assert_allclose(f_np(ce.f, z1), f_np(ce.f, z2), atol=1e-10)


def test_example_1_is_zero_and_flagged() -> None:
    ce = example_1()
    x = np.linspace(-5, 5, 11)[:, None]
    np.testing.assert_array_equal(f_np(ce.f, x), 0.0)
    rep = check_decoder(ce.f, random_state=0)
    assert rep.weakly_injective is False and rep.injective is False
    assert all(rep.certified.values())


def _net(*layers) -> nn.Sequential:
    mods = []
    for spec in layers:
        if isinstance(spec, nn.Module):
            mods.append(spec)
            continue
        W = torch.tensor(spec, dtype=torch.float64)
        lin = nn.Linear(W.shape[1], W.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.zero_()
        mods.append(lin)
    return nn.Sequential(*mods)


def test_one_dimensional_latents_are_decided_exactly() -> None:
    # Example 1: ReLU is observably injective but not injective
    rep = check_decoder(_net([[1.0]], nn.ReLU(), [[1.0]]))
    assert (rep.weakly_injective, rep.observably_injective, rep.injective) == (True, True, False)
    assert all(rep.certified.values())
    # x -> (ReLU(x), ReLU(-x)) is injective although ReLU is not
    rep = check_decoder(_net([[1.0], [-1.0]], nn.ReLU(), [[1.0, 0.0], [0.0, 1.0]]))
    assert (rep.weakly_injective, rep.observably_injective, rep.injective) == (True,) * 3
    assert all(rep.certified.values())
    # x -> (ReLU(x) + ReLU(-x), 0) = (|x|, 0) folds: nothing holds
    rep = check_decoder(_net([[1.0], [-1.0]], nn.ReLU(), [[1.0, 1.0], [0.0, 0.0]]))
    assert (rep.weakly_injective, rep.observably_injective, rep.injective) == (False,) * 3
    # a partial fold: x -> |x| on [-1, inf) only is weakly but not observably injective
    net = _net([[1.0], [-1.0], [1.0]], nn.ReLU(), [[1.0, 1.0, 0.0]])
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
        net[2].weight.copy_(torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64))
        net[2].bias.zero_()
    # f(x) = |x| (the third unit is unused): still folds everywhere
    rep = check_decoder(net)
    assert rep.weakly_injective is False
    # f(x) = (x, 0) for x >= 0, (-x, 0) on [-1, 0), (1, -x - 1) below -1: the fold covers
    # only (0, 1] x {0}, so weakly but not observably injective
    net = _net([[1.0], [-1.0], [-1.0]], nn.ReLU(), [[1.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    np.testing.assert_allclose(
        f_np(net, np.array([[0.5], [-0.5], [-3.0]])), [[0.5, 0], [0.5, 0], [1, 2]]
    )
    rep = check_decoder(net)
    assert rep.injective is False and rep.observably_injective is False
    assert rep.weakly_injective is True and all(rep.certified.values())


def test_relu_fold_meets_cor_h2_hypotheses_but_is_not_weakly_injective() -> None:
    ce = relu_fold()
    ops = decoder_layers(ce.f)
    affines = [op[1] for op in ops if op[0] == "affine"]
    widths = [affines[0].shape[1]] + [W.shape[0] for W in affines]
    assert widths == sorted(widths)  # nondecreasing 1 -> 2 -> 2 -> 2
    assert all(np.linalg.matrix_rank(W) == W.shape[1] for W in affines)  # full column rank
    x = np.linspace(-4, 4, 81)[:, None]
    out = f_np(ce.f, x)
    np.testing.assert_allclose(out, np.c_[np.abs(x), np.zeros_like(x)], atol=1e-12)
    np.testing.assert_allclose(f_np(ce.f, -x), out)  # f(x) = f(-x)
    rep = check_decoder(ce.f, random_state=0)
    assert rep.weakly_injective is False and rep.certified["weakly_injective"]
    assert rep.observably_injective is False and rep.certified["observably_injective"]


def test_idvae_decoder_modules_are_unwrapped() -> None:
    from idvae.models._base import Decoder

    torch.manual_seed(0)
    dec = Decoder([2, 8, 10], "leaky_relu", "gaussian")
    rep = check_decoder(dec)
    assert rep.injective and rep.certified["injective"] and rep.widths == (2, 8, 10)

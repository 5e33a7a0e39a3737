"""The peer VaDE of the speed benchmark (benchmarks/peer_vade.py, bench_vade_peer.py).

Nothing here is timed: the peer trains (its loss is finite and falls on a tiny batch), and
the two networks the benchmark compares have the same size, so the comparison is like for
like.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark_scripts import benchmark_module

peer_vade = benchmark_module("peer_vade")
bench = benchmark_module("bench_vade_peer")


def test_peer_loss_is_finite_and_decreases_after_a_few_adam_steps() -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = peer_vade.PeerVaDE(n_features=20, latent_dim=2, n_components=3, hidden=(16, 16))
    x = (torch.rand(32, 20, generator=gen) < 0.3).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_at(seed: int) -> float:
        # the same noise for both evaluations, so the drop is the parameters' doing
        with torch.no_grad():
            return float(model.loss(x, torch.Generator().manual_seed(seed)))

    before = loss_at(123)
    for _ in range(30):
        loss = model.loss(x, gen)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = loss_at(123)
    assert np.isfinite(before) and np.isfinite(after)
    # 20 Bernoulli pixels start near 20 log 2 ~ 13.9 nats of reconstruction; 30 steps at
    # lr 1e-2 bring the whole negative ELBO well below where it started
    assert after < before - 1.0, (before, after)


def test_peer_train_epoch_returns_the_mean_loss_and_visits_each_row_once() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = peer_vade.PeerVaDE(n_features=12, latent_dim=2, n_components=2, hidden=(8,))
    x = (torch.rand(25, 12, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    seen = []
    original = model.loss

    def spy(batch, generator=None):
        seen.append(len(batch))
        return original(batch, generator)

    model.loss = spy
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    mean = peer_vade.train_epoch(model, optimizer, x, 10, torch.Generator().manual_seed(3))
    assert seen == [10, 10, 5]
    assert np.isfinite(mean) and mean > 0


def test_the_component_log_pdf_equals_torch_distributions() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        model = peer_vade.PeerVaDE(n_features=6, latent_dim=3, n_components=4, hidden=(5,))
        with torch.no_grad():
            model.log_sigma2_c.normal_()
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(5))
    normal = torch.distributions.Normal(model.mu_c, torch.exp(0.5 * model.log_sigma2_c))
    expected = normal.log_prob(z[:, None, :]).sum(-1)
    assert torch.allclose(model.component_log_pdf(z), expected, atol=1e-5)


def test_benchmarked_networks_have_the_same_parameter_count_and_layers() -> None:
    ours, peer = bench.idvae_module(), bench.peer_module()
    assert bench.n_parameters(ours) == bench.n_parameters(peer)
    # 784-500-500-2000-(2 x 10) and 10-2000-500-500-784, and 10 + 2 x 10 x 10 for the prior
    widths = [(784, 500), (500, 500), (500, 2000), (2000, 20), (10, 2000), (2000, 500)]
    widths += [(500, 500), (500, 784)]
    linear = sum(i * o + o for i, o in widths)
    assert bench.n_parameters(peer) == linear + 10 + 2 * 10 * 10

    def linear_shapes(module: torch.nn.Module) -> list[tuple[int, int]]:
        return sorted(
            (m.in_features, m.out_features)
            for m in module.modules()
            if isinstance(m, torch.nn.Linear)
        )

    # idvae has one 2000 -> 20 head where the peer has two 2000 -> 10 heads
    peer_shapes = [s for s in linear_shapes(peer) if s != (2000, 10)]
    ours_shapes = [s for s in linear_shapes(ours) if s != (2000, 20)]
    assert peer_shapes == ours_shapes
    assert bench.linear_flops_per_sample(ours) == pytest.approx(bench.linear_flops_per_sample(peer))


def test_random_binary_data_stand_in_when_mnist_is_absent(tmp_path: Path) -> None:
    x, source = bench.load_data(tmp_path / "no-mnist", subset=50)
    assert x.shape == (50, 784) and x.dtype == torch.float32
    assert set(torch.unique(x).tolist()) <= {0.0, 1.0}
    assert source.startswith("random binary") and "not found" in source
    assert "/work/" not in source and str(tmp_path) not in source


def test_mnist_root_comes_from_the_option_then_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("IDVAE_MNIST_ROOT", str(tmp_path / "env"))
    assert bench.mnist_root(str(tmp_path / "opt")) == tmp_path / "opt"
    assert bench.mnist_root() == tmp_path / "env"
    monkeypatch.delenv("IDVAE_MNIST_ROOT")
    assert bench.mnist_root() == bench.REPO.parent / "shared" / "data" / "mnist"


def test_the_side_by_side_writes_both_implementations_figures(monkeypatch, tmp_path) -> None:
    # the structure of the results file on a tiny run; the matmul probe is stubbed out and no
    # figure's value is checked, only that every epoch of each implementation is there
    monkeypatch.setattr(bench, "matmul_gflops", lambda *a, **k: [100.0])
    results = bench.measure(tmp_path / "no-mnist", subset=40, epochs=2, batch_sizes=(16,))
    bench.write(results, tmp_path / "out.json")
    written = json.loads((tmp_path / "out.json").read_text())
    case = written["batch"]["16"]
    assert written["settings"]["subset_images"] == 40
    assert written["data"].startswith("random binary")
    assert written["parameters"]["idvae"] == written["parameters"]["peer"]
    for who in ("idvae", "peer"):
        assert len(case[f"{who}_epoch_s"]["all"]) == 2
        assert all(np.isfinite(case["epoch_mean_loss"][who]))
    assert len(case["ratio_peer_over_idvae_per_round"]["all"]) == 2

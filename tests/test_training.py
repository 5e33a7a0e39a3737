"""The training engine: schedule, determinism, checkpoints and resume, NaN guard, errors."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from idvae.training import (
    CHECKPOINT_FORMAT_VERSION,
    Phase,
    PhaseResult,
    TrainConfig,
    TrainingError,
    load_checkpoint,
    resolve_device,
    run_phase,
    save_checkpoint,
    train,
    train_stacked,
)


class Regression(nn.Module):
    """A tiny module with a noisy loss: least squares plus a reparameterised noise term."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

    def loss(self, x: torch.Tensor, *, generator: torch.Generator) -> dict[str, torch.Tensor]:
        target = x.sum(dim=1, keepdim=True)
        noise = torch.randn(target.shape, generator=generator)
        mse = ((self.net(x) + 0.01 * noise - target) ** 2).mean()
        return {"loss": mse, "mse": mse}


def _data(n: int = 200) -> tuple[torch.Tensor]:
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(n, 3)), dtype=torch.float32)
    return (x,)


def _params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _run(epochs: int = 6, **kwargs):
    module = Regression()
    config = TrainConfig(epochs=epochs, batch_size=32, lr=1e-2, lr_decay=0.5, lr_decay_every=2)
    result = train(module, _data(), config, generator=torch.Generator().manual_seed(1), **kwargs)
    return module, result


def test_training_reduces_the_loss_and_follows_the_step_schedule() -> None:
    module, result = _run()
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.5 * losses[0]
    # lr * decay ** (epoch // every), epochs counted from 0
    assert [r["lr"] for r in result.history] == pytest.approx(
        [1e-2 * 0.5 ** (e // 2) for e in range(6)]
    )
    assert [r["epoch"] for r in result.history] == list(range(1, 7))


def test_same_seed_gives_identical_parameters() -> None:
    a, _ = _run()
    b, _ = _run()
    assert all(torch.equal(p, q) for p, q in zip(_params(a), _params(b), strict=True))


class _Crash(Exception):
    pass


def test_resume_from_a_checkpoint_is_bitwise_identical(tmp_path: Path) -> None:
    full, full_result = _run()
    path = tmp_path / "checkpoint.pt"

    def write_then_crash(state: dict) -> None:
        save_checkpoint(path, state)
        if state["epoch"] == 3:
            raise _Crash

    with pytest.raises(_Crash):
        _run(checkpoint=write_then_crash)
    state = load_checkpoint(path)
    assert state["epoch"] == 3
    module = Regression(seed=123)  # other initial weights: the checkpoint must override them
    config = TrainConfig(epochs=6, batch_size=32, lr=1e-2, lr_decay=0.5, lr_decay_every=2)
    result = train(
        module, _data(), config, generator=torch.Generator().manual_seed(999), resume_state=state
    )
    assert all(torch.equal(p, q) for p, q in zip(_params(full), _params(module), strict=True))
    assert [r["loss"] for r in result.history] == [r["loss"] for r in full_result.history]


def test_a_non_finite_loss_rolls_back_and_halves_the_learning_rate() -> None:
    module = Regression()
    calls = {"n": 0}

    def flaky_loss(x: torch.Tensor, *, generator: torch.Generator) -> dict:
        calls["n"] += 1
        terms = module.loss(x, generator=generator)
        if calls["n"] == 10:  # once, in the second epoch
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    config = TrainConfig(epochs=4, batch_size=32, lr=1e-2)
    result = train(
        module, _data(), config, generator=torch.Generator().manual_seed(1), loss_fn=flaky_loss
    )
    assert result.retries == 1
    assert result.lr_scale == 0.5
    assert len(result.history) == 4
    assert [r["lr"] for r in result.history] == pytest.approx([1e-2, 5e-3, 5e-3, 5e-3])
    assert all(math.isfinite(r["loss"]) for r in result.history)
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_a_non_finite_gradient_with_a_finite_loss_is_caught() -> None:
    module = Regression()
    calls = {"n": 0}

    def bad_gradient(x: torch.Tensor, *, generator: torch.Generator) -> dict:
        calls["n"] += 1
        terms = module.loss(x, generator=generator)
        if calls["n"] == 3:
            # d/dw sqrt(0 * w) is infinite while the value is 0
            w = next(module.parameters())
            terms["loss"] = terms["loss"] + torch.sqrt((w * 0).abs()).sum()
        return terms

    config = TrainConfig(epochs=2, batch_size=32, lr=1e-2)
    result = train(
        module, _data(), config, generator=torch.Generator().manual_seed(1), loss_fn=bad_gradient
    )
    assert result.retries == 1
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_a_loss_that_stays_non_finite_raises_training_error() -> None:
    module = Regression()
    before = _params(module)

    def nan_loss(x: torch.Tensor, *, generator: torch.Generator) -> dict:
        return {"loss": module.net(x).sum() * float("nan")}

    config = TrainConfig(epochs=3, batch_size=32, max_retries=2)
    with pytest.raises(TrainingError, match="non-finite in epoch 1 after 2 retries"):
        train(module, _data(), config, generator=torch.Generator(), loss_fn=nan_loss)
    # rolled back to the last good state, not left with NaN weights
    assert all(torch.equal(p, q) for p, q in zip(before, _params(module), strict=True))


def test_early_stopping_stops_when_the_loss_stalls() -> None:
    module = Regression()

    def flat(x: torch.Tensor, *, generator: torch.Generator) -> dict:
        return {"loss": module.net(x).sum() * 0.0 + 1.0}

    config = TrainConfig(epochs=50, batch_size=64, early_stopping=True, patience=3)
    result = train(module, _data(), config, generator=torch.Generator(), loss_fn=flat)
    assert result.stopped_early
    assert result.epochs_run == 4  # the first epoch sets the best loss, then 3 without gain


def test_parameters_outside_the_optimised_set_are_untouched() -> None:
    module = Regression()
    last = _params(module.net[2])
    train(
        module,
        _data(),
        TrainConfig(epochs=2, batch_size=32),
        generator=torch.Generator(),
        parameters=list(module.net[0].parameters()),
    )
    assert all(torch.equal(p, q) for p, q in zip(last, _params(module.net[2]), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": -1}, "epochs >= 0"),
        ({"epochs": 1, "batch_size": 0}, "batch_size >= 1"),
        ({"epochs": 1, "lr": 0.0}, "positive finite lr"),
        ({"epochs": 1, "lr": float("inf")}, "positive finite lr"),
        ({"epochs": 1, "lr_decay": 1.5}, "lr_decay"),
        ({"epochs": 1, "grad_clip": -1.0}, "grad_clip"),
    ],
)
def test_train_config_refuses_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_data_tensors_of_unequal_length_are_refused() -> None:
    x = torch.zeros(10, 3)
    with pytest.raises(ValueError, match="equal first dimension"):
        train(Regression(), (x, x[:5]), TrainConfig(epochs=1), generator=torch.Generator())


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="Expected device"):
        resolve_device("tpu")
    with pytest.raises(TypeError):
        resolve_device(3)  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


# -- checkpoint files ----------------------------------------------------------------------------
def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format_version": CHECKPOINT_FORMAT_VERSION, "w": torch.ones(1000)})
    return path


def test_checkpoints_load_with_weights_only(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(1000))
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_a_truncated_checkpoint_is_refused_with_its_name(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="checkpoint.pt.*damaged or truncated"):
        load_checkpoint(path)


def test_a_corrupted_checkpoint_is_refused(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    data[: len(data) // 2] = b"\x00" * (len(data) // 2)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged or truncated"):
        load_checkpoint(path)


def test_a_checkpoint_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format_version": CHECKPOINT_FORMAT_VERSION + 1})
    with pytest.raises(ValueError, match="newer idvae"):
        load_checkpoint(path)


def test_other_files_are_not_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="another kind of file"):
        load_checkpoint(path)
    with pytest.raises(OSError, match="none exists"):
        load_checkpoint(tmp_path / "missing.pt")


# -- a real crash: SIGKILL in the middle of a run ---------------------------------------------
def _resume_case():
    """The data and the model of the SIGKILL test (imported by its subprocesses too)."""
    import idvae

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(150, 4)) + 4 * k for k in range(3)])
    model = idvae.VaDE(
        latent_dim=2, n_components=3, encoder_sizes=(16,), decoder_sizes=(16,),
        pretrain_epochs=3, epochs=40, batch_size=16, gmm_n_init=1, random_state=0,
        device="cpu",
    )  # fmt: skip
    return X, model


_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[3])
    from test_training import _resume_case
    X, model = _resume_case()
    model.fit(X, checkpoint_dir=sys.argv[1], resume=sys.argv[2] == "resume")
    """
)


def test_sigkill_mid_run_then_resume_gives_bitwise_the_uninterrupted_result(
    tmp_path: Path,
) -> None:
    X, uninterrupted = _resume_case()
    uninterrupted.fit(X)  # in this process, one thread like the subprocesses
    script = tmp_path / "fit.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ck = tmp_path / "ck"
    run = [sys.executable, str(script), str(ck)]
    tests_dir = str(Path(__file__).resolve().parent)
    proc = subprocess.Popen([*run, "fresh", tests_dir], env=env)
    # wait until a checkpoint of the ELBO phase exists, then kill without warning
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (ck / "checkpoint.pt").exists():
            try:
                state = load_checkpoint(ck / "checkpoint.pt")
            except (OSError, ValueError):
                state = None
            if state is not None and state["phase"] == "train" and state["epoch"] >= 2:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the 40 epochs run as two phases of 20 with a prior refit between (prior_refit_every)
    killed_at = load_checkpoint(ck / "checkpoint.pt")["epoch"]
    assert killed_at <= 20

    subprocess.run([*run, "resume", tests_dir], check=True, env=env)
    final = load_checkpoint(ck / "checkpoint.pt")
    assert final["phase"] == "train" and final["epoch"] == 20
    expected = uninterrupted.module_.state_dict()
    assert final["module"].keys() == expected.keys()
    assert all(torch.equal(final["module"][k], expected[k]) for k in expected)


# -- one loop for a stack of modules: the same policy as a single fit ---------------------------
class Spiky(Regression):
    """Regression whose loss is NaN whenever a rare noise draw comes up (a transient fault)."""

    def loss(self, x: torch.Tensor, *, generator: torch.Generator) -> dict[str, torch.Tensor]:
        target = x.sum(dim=1, keepdim=True)
        noise = torch.randn(target.shape, generator=generator)
        mse = ((self.net(x) + 0.01 * noise - target) ** 2).mean()
        spike = torch.where(noise.abs().max() > 3.2, float("nan"), 0.0)
        return {"loss": mse + spike, "mse": mse}


def _phase(seed: int, module: nn.Module, config: TrainConfig) -> Phase:
    return Phase(
        "train",
        config,
        module,
        _data(),
        torch.Generator().manual_seed(100 + seed),
        torch.Generator().manual_seed(200 + seed),
    )


def test_a_stack_follows_the_non_finite_policy_of_a_single_fit() -> None:
    config = TrainConfig(epochs=5, batch_size=32, lr=1e-2, lr_decay=0.5, lr_decay_every=2)
    seeds = range(5)
    stacked = train_stacked([_phase(s, Spiky(seed=s), config) for s in seeds])
    modules = [Spiky(seed=s) for s in seeds]
    for seed, module, outcome in zip(seeds, modules, stacked, strict=True):
        ref = run_phase(_phase(seed, module, config))
        assert isinstance(outcome, PhaseResult)
        # the same retries at the same epochs, so the same learning rates
        assert (outcome.retries, outcome.lr_scale) == (ref.retries, ref.lr_scale)
        assert [r["lr"] for r in outcome.history] == [r["lr"] for r in ref.history]
        for a, b in zip(outcome.history, ref.history, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    retries = [o.retries for o in stacked]
    assert min(retries) == 0 and max(retries) >= 1  # the case is neither trivial nor all-failing


def test_a_stacked_member_that_stays_non_finite_fails_alone() -> None:
    config = TrainConfig(epochs=2, batch_size=32, max_retries=1)
    modules = [Regression(seed=s) for s in range(3)]
    with torch.no_grad():
        modules[1].net[0].weight.fill_(float("nan"))
    outcomes = train_stacked([_phase(s, m, config) for s, m in enumerate(modules)])
    assert isinstance(outcomes[1], TrainingError)
    assert "non-finite in epoch 1 after 1 retries" in str(outcomes[1])
    for s in (0, 2):
        ref = run_phase(_phase(s, Regression(seed=s), config))
        assert [r["loss"] for r in outcomes[s].history] == pytest.approx(
            [r["loss"] for r in ref.history], rel=1e-4
        )


def test_fit_preloads_the_optimizers_import_in_the_background_once() -> None:
    """Importing idvae imports no torch._dynamo; fit starts it at once, off the first epoch."""
    script = textwrap.dedent(
        """
        import sys, threading
        import numpy as np
        import idvae
        from idvae.training import preload_optimizer, schedule

        assert "torch._dynamo" not in sys.modules  # no side effect on import
        model = idvae.VAE(**idvae.VAE._test_config())
        try:
            model.fit(np.full((5, 3), np.nan))  # fails at validation, after the preload starts
        except ValueError:
            pass
        assert schedule._preload_started
        for thread in threading.enumerate():
            if thread.name == "idvae-preload":
                assert thread.daemon  # never holds up the exit of a failed command
                thread.join()
        assert "torch._dynamo" in sys.modules
        preload_optimizer()  # already done: no second thread
        assert not [t for t in threading.enumerate() if t.name == "idvae-preload"]
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

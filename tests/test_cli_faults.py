"""Hostile input to the real ``idvae`` command (a subprocess): no data lost, one line, exit 2."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import idvae
from idvae import cli

IDVAE = str(Path(sys.executable).with_name("idvae"))
OPTS = ["--latent-dim", "2", "--components", "3", "--epochs", "2", "--pretrain-epochs", "1",
        "--batch-size", "32", "--device", "cpu", "--quiet"]  # fmt: skip


def idvae_cmd(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [IDVAE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *texts: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for text in texts:
        assert text in lines[0], lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """data.npz (300 x 5, three clusters), one_row.npy, and a fitted model in model/."""
    root = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    x = rng.normal(scale=3.0, size=(3, 5))[labels] + rng.normal(size=(300, 5))
    np.savez(root / "data.npz", x=x, labels=labels)
    np.save(root / "one_row.npy", x[:1])
    fitted = idvae_cmd("fit", "data.npz", "--out", "model", *OPTS, cwd=root)
    assert fitted.returncode == 0, fitted.stderr
    return root


def test_failed_fit_overwrite_leaves_the_existing_model_intact(work, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name, content in snapshot(work / "model").items():
        (model / name).write_bytes(content)
    before = snapshot(model)
    assert "checkpoint.pt" in before
    failed = idvae_cmd(
        "fit", work / "one_row.npy", "--out", model, "--overwrite", *OPTS, "--components", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(failed, "1 sample")
    assert snapshot(model) == before  # config, weights and checkpoint untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left
    # The original run can still be resumed from its own checkpoint.
    resumed = idvae_cmd("fit", work / "data.npz", "--out", model, *OPTS, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


def test_successful_fit_overwrite_replaces_model_and_checkpoint(work, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name, content in snapshot(work / "model").items():
        (model / name).write_bytes(content)
    done = idvae_cmd("fit", work / "data.npz", "--out", model, "--overwrite", *OPTS,
                     "--seed", "7", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert idvae.load(model).random_state == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    # the checkpoint is the new run's: resuming with the new settings is accepted
    again = idvae_cmd("fit", work / "data.npz", "--out", model, *OPTS, "--seed", "7", "--resume",
                      cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("existing", [False, True], ids=["new", "empty"])
def test_failed_fit_leaves_no_partial_output(work, tmp_path, existing):
    out = tmp_path / "m"
    if existing:
        out.mkdir()
    failed = idvae_cmd(
        "fit", work / "one_row.npy", "--out", out, *OPTS, "--components", "1", cwd=tmp_path
    )
    assert_one_line_error(failed, "1 sample")
    assert out.exists() is existing
    if existing:
        assert list(out.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == (["m"] if existing else [])


def test_transform_refuses_to_write_over_its_input(work, tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.load(work / "data.npz")["x"])
    before = data.read_bytes()
    (tmp_path / "link.npy").symlink_to(data)
    for out in ("x.npy", "./x.npy", "link.npy"):
        refused = idvae_cmd("transform", work / "model", data, "--out", out, cwd=tmp_path)
        assert_one_line_error(refused, "--out", "DATA")
        assert data.read_bytes() == before


def test_sample_refuses_the_same_file_for_samples_and_latents(work, tmp_path):
    refused = idvae_cmd(
        "sample", work / "model", "-n", "5", "--out", "s.npy", "--latent-out", "s.npy",
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(refused, "--latent-out", "--out")
    assert list(tmp_path.iterdir()) == []


def _damaged_copies(work: Path, folder: Path) -> list[Path]:
    data = (work / "data.npz").read_bytes()
    truncated = folder / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    # One flipped byte inside the stored x.npy: the archive opens, the CRC check fails.
    flipped = bytearray(data)
    flipped[data.index(b"\x93NUMPY") + 200] ^= 0xFF
    corrupted = folder / "corrupted.npz"
    corrupted.write_bytes(bytes(flipped))
    return [truncated, corrupted]


@pytest.mark.parametrize("command", ["fit", "transform", "identify", "stability"])
def test_damaged_npz_is_one_line_naming_the_file(work, tmp_path, command):
    for bad in _damaged_copies(work, tmp_path):
        args = {
            "fit": ("fit", bad, "--out", "m", *OPTS),
            "transform": ("transform", work / "model", bad, "--out", "z.npy"),
            "identify": ("identify", work / "model", "--data", bad, "--out", "z.npy"),
            "stability": ("stability", bad, "--runs", "1", "--out", "st"),
        }[command]
        proc = idvae_cmd(*args, cwd=tmp_path)
        assert_one_line_error(proc, str(bad), "damaged")
        assert "Traceback" not in proc.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupted.npz", "truncated.npz"]


def test_diverging_training_is_one_line_and_leaves_nothing(work, tmp_path):
    proc = idvae_cmd("fit", work / "data.npz", "--out", "m", *OPTS, "--lr", "1e30", cwd=tmp_path)
    assert_one_line_error(proc, "non-finite", "smaller lr")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "texts"),
    [
        # 10^10 samples: a terabyte of arrays, more than any machine this runs on
        (("simulate", "--n-samples", "10000000000", "--out", "s.npz"), ("fit in memory",)),
        (("simulate", "--n-samples", "100", "--components", "1000000", "--out", "s.npz"),
         ("at most --n-samples = 100", "1000000")),
        (("simulate", "--n-samples", "200000", "--components", "100000", "--out", "s.npz"),
         ("at most 1000", "100000")),
        (("sample", "{model}", "-n", "100000000000", "--out", "s.npy"), ("fit in memory",)),
        (("mle", "--tol", "-1", "--out", "o"), ("--tol >= 0",)),
    ],
    ids=["simulate-huge", "simulate-components", "simulate-many-components", "sample-huge",
         "mle-tol"],
)  # fmt: skip
def test_impossible_requests_are_refused_up_front(work, tmp_path, args, texts):
    args = [str(work / "model") if a == "{model}" else a for a in args]
    proc = idvae_cmd(*args, cwd=tmp_path)  # refused before any work: no hang
    assert_one_line_error(proc, *texts)
    assert list(tmp_path.iterdir()) == []


def test_sample_writes_nothing_when_latent_out_cannot_be_written(work, tmp_path):
    (tmp_path / "afile").write_text("")
    proc = idvae_cmd(
        "sample", work / "model", "-n", "5", "--out", "s.npy", "--latent-out", "afile/z.npy",
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(proc, "--latent-out", "afile")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


@pytest.mark.parametrize(
    ("args", "texts"),
    [
        (("--latent-dim", "3"), ("latent_dim = 3", "n_features = 2")),
        (("--components", "1000000"), ("n_components = 1000000",)),
        (("--components", "0"), ("--components", "[1, inf)")),
    ],
    ids=["latent-dim", "components", "components-0"],
)
def test_stability_refuses_up_front_what_fit_refuses(tmp_path, args, texts):
    np.save(tmp_path / "x2.npy", np.random.default_rng(0).normal(size=(60, 2)))
    proc = idvae_cmd("stability", "x2.npy", "--runs", "2", "--out", "st", *args, cwd=tmp_path)
    assert_one_line_error(proc, *texts)
    assert [p.name for p in tmp_path.iterdir()] == ["x2.npy"]


def test_stability_where_every_run_failed_exits_2(tmp_path):
    # finite numbers whose variance overflows float64: each run fails while scaling X
    np.save(tmp_path / "big.npy", np.random.default_rng(0).normal(size=(60, 2)) * 1e306)
    proc = idvae_cmd(
        "stability", "big.npy", "--runs", "2", "--out", "st",
        "--epochs", "1", "--pretrain-epochs", "1", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "all 2 failed" in last and "overflow" in last
    assert (tmp_path / "st" / "stability.json").is_file()  # the record of what failed


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_once(args: list[str | Path], cwd: Path, written: Path) -> tuple[int, str]:
    """Run ``idvae *args``, send Ctrl-C once ``written`` exists; (exit status, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a test run started in the background (nohup, &) passes SIGINT on as ignored, and a
    # Python that starts with SIGINT ignored never raises KeyboardInterrupt: the child gets
    # the default disposition back, as an interactive shell would give it
    child = subprocess.Popen([IDVAE, *map(str, args)], cwd=cwd, env=env, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             preexec_fn=_default_sigint)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not written.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, stderr


def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(work, tmp_path):
    args = ["fit", work / "data.npz", "--out", "m", *OPTS, "--epochs", "100000"]
    returncode, stderr = interrupt_once(args, tmp_path, tmp_path / "m" / "checkpoint.pt")
    assert returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        "interrupted; the last finished epoch is saved in m: add --resume to continue"
    ]
    # The checkpoint is the interrupted run's: --resume reads it, and refuses other settings.
    probe = idvae_cmd("fit", work / "data.npz", "--out", "m", *OPTS, "--resume", cwd=tmp_path)
    assert probe.returncode == 2 and "epochs" in probe.stderr


@pytest.mark.parametrize("command", ["stability", "demo"])
def test_an_error_after_the_progress_display_started_is_still_one_line(work, tmp_path, command):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    args = {
        "stability": ("stability", work / "data.npz", "--runs", "1", "--out", "mine"),
        "demo": ("demo", "--quick", "--out", "mine"),
    }[command]
    proc = idvae_cmd(*args, cwd=tmp_path)
    assert_one_line_error(proc, "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["thesis.tex"]


def test_a_second_fit_into_the_same_folder_is_refused_while_the_first_runs(work, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [IDVAE, "fit", str(work / "data.npz"), "--out", "m", *OPTS, "--epochs", "100000"]
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "m" / "checkpoint.pt").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        for extra in ((), ("--overwrite",), ("--resume",)):
            second = idvae_cmd("fit", work / "data.npz", "--out", "m", *OPTS, "--seed", "5",
                               *extra, cwd=tmp_path)  # fmt: skip
            assert_one_line_error(second, "another fit", "m")
        assert first.poll() is None  # the first fit was not disturbed
    finally:
        first.kill()  # SIGKILL: the kernel releases its lock, a stale lock file stays
        first.wait()
    # the lock is free again: --resume gets as far as reading the killed run's checkpoint
    probe = idvae_cmd("fit", work / "data.npz", "--out", "m", *OPTS, "--resume", cwd=tmp_path)
    assert probe.returncode == 2 and "epochs" in probe.stderr and "another fit" not in probe.stderr


def _enospc(*args: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
def test_a_full_disk_is_one_line_naming_the_output_and_loses_nothing(
    work, tmp_path, monkeypatch, capsys, overwrite
):
    model = tmp_path / "model"
    if overwrite:
        model.mkdir()
        for name, content in snapshot(work / "model").items():
            (model / name).write_bytes(content)
    before = snapshot(model) if overwrite else None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "fsync", _enospc)  # every atomic write fails as on a full disk
    args = ["fit", str(work / "data.npz"), "--out", "model", *OPTS]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*args, "--overwrite"] if overwrite else args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "No space left on device" in lines[0] and "model" in lines[0], lines[0]
    assert "Errno" not in lines[0] and ".tmp" not in lines[0], lines[0]
    if overwrite:
        assert snapshot(model) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == (["model"] if overwrite else [])


def test_save_on_a_full_disk_names_the_model_folder(work, tmp_path, monkeypatch):
    estimator = idvae.load(work / "model")
    real_write_bytes = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if self.name == "weights.pt":
            _enospc()
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(OSError, match="Expected to write .*saved but: No space left") as info:
        estimator.save(tmp_path / "saved")
    assert ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def _edited_model(work: Path, folder: Path, edit) -> Path:  # noqa: ANN001
    model = folder / "edited"
    model.mkdir()
    for name, content in snapshot(work / "model").items():
        (model / name).write_bytes(content)
    config = json.loads((model / "config.json").read_text())
    edit(config)
    (model / "config.json").write_text(json.dumps(config))
    return model


@pytest.mark.parametrize(
    ("edit", "texts"),
    [
        (lambda c: c.update(params=[1, 2]), ("'params'", "JSON object")),
        (lambda c: c["params"].update(latent_dim=-1), ("latent_dim", "[1, inf)", "-1")),
        (lambda c: c["params"].update(lr="abc"), ("lr", "'abc'")),
        (lambda c: c["params"].update(bogus=1), ("bogus",)),
        (lambda c: c["fitted"].update(extra={"module_": 5}), ("module_",)),
        (lambda c: c["fitted"].update(extra=[1]), ("fitted.extra",)),
        (lambda c: c.update(fitted="x"), ("'fitted'",)),
    ],
    ids=["params-list", "latent-dim", "lr-str", "unknown-param", "extra-module", "extra-list",
         "fitted-str"],
)  # fmt: skip
def test_a_hand_edited_config_is_one_line_naming_it(work, tmp_path, edit, texts):
    model = _edited_model(work, tmp_path, edit)
    for args in (("info", model), ("transform", model, work / "data.npz", "--out", "z.npy")):
        proc = idvae_cmd(*args, cwd=tmp_path)
        assert_one_line_error(proc, "config.json", *texts)
    assert not (tmp_path / "z.npy").exists()


def test_damaged_history_and_raw_pickle_weights_are_one_line(work, tmp_path):
    model = _edited_model(work, tmp_path, lambda c: None)
    (model / "history.csv").write_bytes(b"\xff\xfe\x00")
    assert_one_line_error(idvae_cmd("info", model, cwd=tmp_path), "history.csv")
    (tmp_path / "x").mkdir()
    model = _edited_model(work, tmp_path / "x", lambda c: None)
    (model / "weights.pt").write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4))
    assert_one_line_error(idvae_cmd("info", model, cwd=tmp_path), "weights.pt")  # no warning


def test_a_checkpoint_without_phase_index_is_one_line(work, tmp_path):
    import torch

    model = _edited_model(work, tmp_path, lambda c: None)
    state = torch.load(model / "checkpoint.pt", weights_only=True)
    del state["phase_index"]
    torch.save(state, model / "checkpoint.pt")
    proc = idvae_cmd("fit", work / "data.npz", "--out", model, *OPTS, "--resume", cwd=tmp_path)
    assert_one_line_error(proc, "checkpoint.pt", "phase_index")


@pytest.mark.parametrize(
    ("edit", "texts"),
    [
        (lambda d: d.pop("decoder_bias_1"), ("decoder_bias_1",)),
        (lambda d: d.update(decoder_weight_1=np.zeros((4, 9))), ("decoder layer 1",)),
        (lambda d: d.update(decoder_activation=np.zeros((7, 7))), ("decoder_activation",)),
        (lambda d: d.update(prior_means=np.zeros(3)), ("means",)),
    ],
    ids=["missing-bias", "weight-shape", "activation", "prior-shape"],
)
def test_identify_on_a_damaged_simulation_is_one_line(tmp_path, edit, texts):
    made = idvae_cmd("simulate", "--out", "sim.npz", "--n-samples", "100", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    with np.load(tmp_path / "sim.npz") as npz:
        arrays = dict(npz)
    edit(arrays)
    np.savez(tmp_path / "sim.npz", **arrays)
    assert_one_line_error(idvae_cmd("identify", "sim.npz", cwd=tmp_path), "sim.npz", *texts)


def test_data_whose_variance_overflows_is_one_line(tmp_path):
    np.save(tmp_path / "big.npy", np.random.default_rng(0).normal(size=(60, 5)) * 1e306)
    proc = idvae_cmd("fit", "big.npy", "--out", "m", *OPTS, cwd=tmp_path)
    assert_one_line_error(proc, "overflow")
    assert [p.name for p in tmp_path.iterdir()] == ["big.npy"]


@pytest.mark.parametrize(
    ("args", "text"),
    [(("--lr", "-1"), "Expected --lr to be a float in the range (0.0, inf) but got -1.0"),
     (("--components", "0"), "Expected --components to be an int in the range [1, inf)"),
     (("--likelihood", "foo"), "Expected --likelihood to be a str among")],
    ids=["lr", "components", "likelihood"],
)  # fmt: skip
def test_parameter_errors_name_the_option(work, tmp_path, args, text):
    proc = idvae_cmd("fit", work / "data.npz", "--out", "m", *OPTS, *args, cwd=tmp_path)
    assert_one_line_error(proc, text)
    assert "parameter of" not in proc.stderr


def test_stability_resume_reruns_a_run_whose_files_are_damaged(work, tmp_path):
    args = ("stability", work / "data.npz", "--runs", "2", "--out", "st", "--epochs", "1",
            "--pretrain-epochs", "1", "--no-vectorize")  # fmt: skip
    first = idvae_cmd(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    kept = (tmp_path / "st/runs/000/latents.npy").read_bytes()
    latents = tmp_path / "st/runs/001/latents.npy"
    latents.write_bytes(latents.read_bytes()[:100])
    resumed = idvae_cmd(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert np.load(latents).shape == (300, 2)  # run 1 was run again
    assert (tmp_path / "st/runs/000/latents.npy").read_bytes() == kept  # run 0 not rerun
    (tmp_path / "st/study.json").write_text('{"a":')
    assert_one_line_error(idvae_cmd(*args, "--resume", cwd=tmp_path), "study.json", "damaged")


def test_ctrl_c_in_stability_says_what_is_kept_and_how_to_resume(work, tmp_path):
    args = ["stability", work / "data.npz", "--runs", "50", "--out", "st", "--epochs", "300",
            "--pretrain-epochs", "1", "--no-vectorize"]  # fmt: skip
    first_run = tmp_path / "st" / "runs" / "000" / "result.json"
    returncode, stderr = interrupt_once(args, tmp_path, first_run)
    assert returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        "interrupted; the finished runs are saved in st: add --resume to continue"
    )

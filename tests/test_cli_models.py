"""``idvae fit | transform | sample | info`` through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import idvae
from idvae.cli import app

runner = CliRunner()
TINY = [
    "--latent-dim", "2", "--components", "3", "--epochs", "2", "--pretrain-epochs", "1",
    "--batch-size", "32", "--device", "cpu", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    x = rng.normal(scale=3.0, size=(3, 5))[labels] + rng.normal(size=(300, 5))
    path = tmp_path_factory.mktemp("data") / "data.npz"
    np.savez(path, x=x, labels=labels)
    return path


@pytest.fixture(scope="module")
def model_dir(data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "vade"
    result = runner.invoke(app, ["fit", str(data), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert text in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_fit_saves_a_model_with_its_checkpoint(model_dir: Path, data: Path) -> None:
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "weights.pt", "environment.json", "history.csv"} <= names
    assert "checkpoint.pt" in names
    model = idvae.load(model_dir)
    assert isinstance(model, idvae.VaDE)
    assert model.get_params()["n_components"] == 3 and model.random_state == 0
    assert len(model.history_) == 3  # 1 pretraining epoch and 2 ELBO epochs


def test_resume_of_a_finished_run_reproduces_the_model(model_dir: Path, data: Path) -> None:
    x = np.load(data)["x"]
    before = idvae.load(model_dir).transform(x)
    # with the progress display on this time: display settings do not block a resume
    loud = [a for a in TINY if a != "--quiet"]
    result = runner.invoke(app, ["fit", str(data), "--out", str(model_dir), *loud, "--resume"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(idvae.load(model_dir).transform(x), before)


def test_transform_and_sample_write_arrays(model_dir: Path, data: Path, tmp_path: Path) -> None:
    z_path, x_path, zs_path = tmp_path / "z.npy", tmp_path / "x.npy", tmp_path / "zs.npy"
    result = runner.invoke(app, ["transform", str(model_dir), str(data), "--out", str(z_path)])
    assert result.exit_code == 0, result.output
    model = idvae.load(model_dir)
    assert np.array_equal(np.load(z_path), model.transform(np.load(data)["x"]))
    result = runner.invoke(
        app,
        ["sample", str(model_dir), "-n", "7", "--out", str(x_path), "--latent-out", str(zs_path)],
    )
    assert result.exit_code == 0, result.output
    assert np.load(x_path).shape == (7, 5) and np.load(zs_path).shape == (7, 2)
    assert np.array_equal(np.load(x_path), model.sample(7, random_state=0))


def test_info_describes_the_model(model_dir: Path) -> None:
    result = runner.invoke(app, ["info", str(model_dir), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["class"] == "VaDE"
    assert summary["prior"]["n_components"] == 3
    assert summary["epochs_run"] == 3 and len(summary["history_tail"]) == 3
    text = runner.invoke(app, ["info", str(model_dir)])
    assert text.exit_code == 0 and "VaDE" in text.stdout and "weights" in text.stdout


def test_fit_vae_and_refuse_options_it_does_not_take(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "vae"
    args = ["fit", str(data), "--model", "vae", "--out", str(out), "--latent-dim", "2"]
    result = runner.invoke(app, [*args, "--epochs", "1", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert isinstance(idvae.load(out), idvae.VAE)
    bad = runner.invoke(app, [*args, "--components", "3", "--overwrite", "--quiet"])
    _one_line_error(bad, "Expected no --components for --model vae")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "nope"], "Expected a model in"),
        (["--latent-dim", "9"], "latent_dim <= n_features"),
        (["--components", "400"], "n_samples >= n_components"),
        (["--lr", "-1"], "Expected --lr to be a float in the range (0.0, inf)"),
        (["--facets", "3,x"], "Expected --facets as comma-separated"),
    ],
)
def test_bad_fit_input_is_one_line_and_leaves_no_directory(
    data: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "model"
    result = runner.invoke(
        app, ["fit", str(data), "--out", str(out), "--epochs", "1", "--quiet", *extra]
    )
    _one_line_error(result, message)
    assert not out.exists()


def test_bad_data_files_are_refused(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["fit", str(tmp_path / "none.npz"), "--out", str(tmp_path / "m")])
    assert missing.exit_code == 2 and not (tmp_path / "m").exists()
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((50, 3), np.nan))
    result = runner.invoke(app, ["fit", str(nan), "--out", str(tmp_path / "m"), "--quiet"])
    assert result.exit_code == 2 and not (tmp_path / "m").exists()


def test_resume_refuses_another_model_or_configuration(model_dir: Path, data: Path) -> None:
    other_model = runner.invoke(
        app, ["fit", str(data), "--out", str(model_dir), "--model", "vae", "--resume"]
    )
    _one_line_error(other_model, "holds a vade model")
    other_config = [*TINY]
    other_config[other_config.index("--epochs") + 1] = "5"
    result = runner.invoke(
        app, ["fit", str(data), "--out", str(model_dir), *other_config, "--resume"]
    )
    _one_line_error(result, "epochs: 2 vs 5")


def test_fit_does_not_clobber_a_model_without_resume_or_overwrite(
    model_dir: Path, data: Path
) -> None:
    result = runner.invoke(app, ["fit", str(data), "--out", str(model_dir), *TINY])
    _one_line_error(result, "is not empty")


def test_damaged_model_directories_are_refused(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    weights = broken / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:200])
    result = runner.invoke(app, ["info", str(broken)])
    _one_line_error(result, "weights.pt")
    (broken / "config.json").write_text("{not json")
    _one_line_error(runner.invoke(app, ["info", str(broken)]), "config.json")
    out = tmp_path / "z.txt"
    result = runner.invoke(app, ["transform", str(model_dir), str(model_dir), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()


def test_fit_ivae_with_aux_and_mfcvae_with_facets(data: Path, tmp_path: Path) -> None:
    labels = np.load(data)["labels"]
    u_path = tmp_path / "u.npy"
    np.save(u_path, np.eye(3)[labels])
    ivae_dir, z_path = tmp_path / "ivae", tmp_path / "z.npy"
    args = ["--epochs", "1", "--device", "cpu", "--quiet"]
    fit_ivae = ["fit", str(data), "--model", "ivae", "--aux", str(u_path), "--out", str(ivae_dir)]
    result = runner.invoke(app, [*fit_ivae, "--latent-dim", "2", *args])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["transform", str(ivae_dir), str(data), "--aux", str(u_path), "--out", str(z_path)]
    )
    assert result.exit_code == 0, result.output
    model = idvae.load(ivae_dir)
    assert np.array_equal(np.load(z_path), model.transform(np.load(data)["x"], np.eye(3)[labels]))

    mfc_dir = tmp_path / "mfcvae"
    fit_mfc = ["fit", str(data), "--model", "mfcvae", "--facets", "3,2", "--facet-dims", "1,1"]
    result = runner.invoke(app, [*fit_mfc, "--out", str(mfc_dir), *args])
    assert result.exit_code == 0, result.output
    assert idvae.load(mfc_dir).prior_.n_components == 6
    bad = runner.invoke(app, [*fit_mfc, "--components", "3", "--out", str(tmp_path / "x")])
    _one_line_error(bad, "Expected no --components for --model mfcvae")


def test_resume_from_a_truncated_checkpoint_is_refused(
    model_dir: Path, data: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    checkpoint = copy / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:300])
    result = runner.invoke(app, ["fit", str(data), "--out", str(copy), *TINY, "--resume"])
    _one_line_error(result, "damaged or truncated")
    assert idvae.load(copy).n_features_in_ == 5  # the saved model is untouched

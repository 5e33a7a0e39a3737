import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from idvae._mnist import check_sha256
from idvae.cli import app
from idvae.datasets import (
    MNIST_FILES,
    load_array,
    load_mnist,
    load_mnist_combined,
    parallelograms,
    pinwheel,
    read_idx,
)


def assert_balanced(labels: np.ndarray, n_classes: int) -> None:
    counts = np.bincount(labels, minlength=n_classes)
    assert len(counts) == n_classes and counts.max() - counts.min() <= 1


# -- pinwheel -----------------------------------------------------------------------------
def test_pinwheel_shapes_balance_and_determinism():
    data = pinwheel(1001, 4, random_state=0)
    assert data.x.shape == (1001, 2) and data.x.dtype == np.float64
    assert data.labels.dtype == np.int64 and data.points.shape == (1001, 2)
    assert_balanced(data.labels, 4)
    assert data.embedding is None and data.vertices is None
    np.testing.assert_array_equal(data.x, data.points)  # obs_dim = 2, no noise: the plane
    again = pinwheel(1001, 4, random_state=0)
    np.testing.assert_array_equal(again.x, data.x)
    np.testing.assert_array_equal(again.labels, data.labels)
    assert not np.allclose(pinwheel(1001, 4, random_state=1).x, data.x)
    # shuffled: the first hundred points are not all from one arm
    assert len(np.unique(data.labels[:100])) == 4


def test_pinwheel_geometry():
    # without tangential spread a point is (r, 0) rotated by 2πc/K + rate·exp(r)
    data = pinwheel(3000, 3, radial_std=0.1, tangential_std=0.0, rate=0.4, random_state=2)
    r = np.linalg.norm(data.points, axis=1)
    assert r.mean() == pytest.approx(1.0, abs=0.01) and r.std() == pytest.approx(0.1, rel=0.1)
    expected = 2 * np.pi * data.labels / 3 + 0.4 * np.exp(r)
    angle = np.arctan2(data.points[:, 1], data.points[:, 0])
    diff = np.angle(np.exp(1j * (angle - expected)))  # wrapped to (-π, π]
    np.testing.assert_allclose(diff, 0, atol=1e-9)


def test_pinwheel_embedding_in_higher_dimension():
    data = pinwheel(500, 3, obs_dim=6, noise_std=0.1, random_state=0)
    assert data.x.shape == (500, 6) and isinstance(data.embedding, torch.nn.Module)
    with torch.no_grad():
        clean = data.embedding(torch.from_numpy(data.points)).numpy()
    assert (data.x - clean).std() == pytest.approx(0.1, rel=0.1)


# -- parallelograms -----------------------------------------------------------------------
def coordinates(points, vertices):
    """(s, t) with point = v0 + s (v1 - v0) + t (v3 - v0)."""
    basis = np.stack([vertices[1] - vertices[0], vertices[3] - vertices[0]], axis=1)
    return np.linalg.solve(basis, (points - vertices[0]).T).T


def test_parallelograms_points_lie_inside_and_are_uniform():
    data = parallelograms(6000, 3, random_state=0)
    assert data.x.shape == (6000, 2) and data.points.shape == (6000, 2)
    assert data.vertices.shape == (3, 4, 2)
    assert_balanced(data.labels, 3)
    for k in range(3):
        mine = data.points[data.labels == k]
        st = coordinates(mine, data.vertices[k])
        assert np.all((st >= -1e-12) & (st <= 1 + 1e-12))
        # uniform in the parallelogram = uniform (s, t) in the unit square
        np.testing.assert_allclose(st.mean(axis=0), 0.5, atol=4 * np.sqrt(1 / 12 / len(st)))
        np.testing.assert_allclose(st.var(axis=0), 1 / 12, rtol=0.1)
        # and no point of another parallelogram lies inside this one (they are separated)
        other = coordinates(data.points[data.labels != k], data.vertices[k])
        assert not np.any(np.all((other >= 0) & (other <= 1), axis=1))
    # parallelograms: opposite sides equal
    v = data.vertices
    np.testing.assert_allclose(v[:, 1] - v[:, 0], v[:, 2] - v[:, 3], atol=1e-12)
    # Gaussian noise of the requested spread
    assert (data.x - data.points).std() == pytest.approx(0.05, rel=0.05)


def test_parallelograms_linear_embedding_is_an_isometry():
    data = parallelograms(300, 4, obs_dim=7, noise_std=0.0, embedding="linear", random_state=1)
    assert data.x.shape == (300, 7)
    assert_balanced(data.labels, 4)
    d_points = np.linalg.norm(data.points[:50, None] - data.points[None, :50], axis=-1)
    d_x = np.linalg.norm(data.x[:50, None] - data.x[None, :50], axis=-1)
    np.testing.assert_allclose(d_x, d_points, atol=1e-10)


def test_parallelograms_injective_embedding():
    data = parallelograms(400, 3, obs_dim=5, noise_std=0.0, random_state=2)
    widths = [m.out_features for m in data.embedding if isinstance(m, torch.nn.Linear)]
    assert widths == sorted(widths) and widths[-1] == 5
    for layer in (m for m in data.embedding if isinstance(m, torch.nn.Linear)):
        assert np.linalg.matrix_rank(layer.weight.numpy()) == layer.in_features
    with torch.no_grad():
        clean = data.embedding(torch.from_numpy(data.points)).numpy()
    np.testing.assert_allclose(data.x, clean, atol=1e-12)


@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        (pinwheel, dict(n_samples=2, n_classes=3), "n_samples >= 3"),
        (pinwheel, dict(obs_dim=1), "obs_dim >= 2"),
        (pinwheel, dict(radial_std=-1.0), "radial_std >= 0"),
        (pinwheel, dict(rate=np.nan), "finite rate"),
        (parallelograms, dict(n_samples=2), "n_samples >= 3"),
        (parallelograms, dict(noise_std=-0.1), "noise_std >= 0"),
        (parallelograms, dict(obs_dim=3, embedding="tanh"), "embedding"),
    ],
)
def test_synthetic_datasets_refuse_bad_input(func, kwargs, match):
    with pytest.raises(ValueError, match=match):
        func(**kwargs)


# -- load_array ---------------------------------------------------------------------------
def test_load_array_formats(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    np.save(tmp_path / "a.npy", x)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy").x, x)

    z, u, labels = x[:, :2] * 2, np.array([0, 1, 1, 0]), np.array([2, 0, 1, 2])
    np.savez(tmp_path / "b.npz", x=x, z=z, u=u, labels=labels, extra=np.ones(2))
    data = load_array(tmp_path / "b.npz")
    np.testing.assert_array_equal(data.x, x)
    np.testing.assert_array_equal(data.z, z)
    assert data.u.dtype == np.int64 and data.labels.dtype == np.int64
    np.testing.assert_array_equal(data.labels, labels)
    np.savez(tmp_path / "c.npz", x=x)
    only_x = load_array(tmp_path / "c.npz")
    assert only_x.z is None and only_x.u is None and only_x.labels is None
    np.savez(tmp_path / "d.npz", x=x, u=np.full((4, 2), 0.5))  # continuous auxiliary u
    assert load_array(tmp_path / "d.npz").u.dtype == np.float64

    (tmp_path / "h.csv").write_text(
        "a,b,c\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in x)
    )
    np.testing.assert_array_equal(load_array(tmp_path / "h.csv").x, x)
    (tmp_path / "n.csv").write_text(
        "\n".join(",".join(repr(float(v)) for v in r) for r in x) + "\n\n"
    )
    np.testing.assert_array_equal(load_array(tmp_path / "n.csv").x, x)
    (tmp_path / "w.csv").write_text("1 2\n3 4\n")
    np.testing.assert_array_equal(load_array(tmp_path / "w.csv").x, [[1, 2], [3, 4]])


def write_bad(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    elif name.endswith(".npy"):
        np.save(path, content)
    else:
        np.savez(path, **content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.csv", "", "is empty"),
        ("blank.csv", "\n \n", "no rows"),
        ("text.csv", "a,b\n1,2\n3,x\n", "line 3 holds 'x'"),
        ("header.csv", "a,b\n", "only a header"),
        ("ragged.csv", "1,2\n3\n", "line 2 has 1"),
        ("nan.csv", "1,2\nnan,4\n", "finite"),
        ("inf.npy", np.array([[1.0, np.inf]]), "finite"),
        ("vector.npy", np.arange(3.0), "2-D"),
        ("cube.npy", np.zeros((2, 2, 2)), "2-D"),
        ("strings.npy", np.array([["a", "b"]]), "numbers"),
        ("objects.npy", np.array([[1, None]], dtype=object), "pickled"),
        ("nox.npz", {"z": np.zeros((2, 2))}, "key 'x'.*\\['z'\\]"),
        ("objx.npz", {"x": np.array([[1, None]], dtype=object)}, "pickled"),
        ("rows.npz", {"x": np.zeros((3, 2)), "labels": np.zeros(2)}, "3 rows"),
        ("float.npz", {"x": np.zeros((2, 2)), "labels": [0.5, 1]}, "integer labels"),
        ("zrank.npz", {"x": np.zeros((2, 2)), "z": np.zeros(2)}, "2-D"),
        ("garbage.npz", b"this is not a zip archive", "could not be read"),
        ("garbage.npy", b"\x93NUMPY garbage", "could not be read"),
        ("data.txt", "1,2\n", ".npy, .npz or .csv"),
    ],
)
def test_load_array_refuses_bad_files(tmp_path, name, content, match):
    path = write_bad(tmp_path, name, content)
    with pytest.raises(ValueError, match=match):
        load_array(path)


def test_load_array_missing_file_and_wrong_container(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_array(tmp_path / "nothing.npz")
    np.savez(tmp_path / "archive.npz", x=np.zeros((2, 2)))
    (tmp_path / "archive.npy").write_bytes((tmp_path / "archive.npz").read_bytes())
    with pytest.raises(ValueError, match="holds a .npz archive"):
        load_array(tmp_path / "archive.npy")


# -- IDX / MNIST --------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_tiny_mnist(root: Path, *, gz: dict | None = None, seed: int = 0) -> dict:
    """Four tiny IDX files (5 train and 3 test images of 28 x 28); returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(5, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=5),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(3, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=3),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if (gz or {}).get(name, True):
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(idx_bytes(array)) if gz else idx_bytes(array))
    out = read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)


def test_load_mnist_tiny_files_gzip_and_plain(tmp_path):
    mixed = {"train-labels-idx1-ubyte": False, "t10k-images-idx3-ubyte": False}
    arrays = write_tiny_mnist(tmp_path, gz=mixed)
    mnist = load_mnist(tmp_path, verify=False)
    assert mnist.x_train.shape == (5, 784) and mnist.x_train.dtype == np.float32
    assert mnist.x_test.shape == (3, 784) and mnist.y_test.dtype == np.int64
    np.testing.assert_allclose(
        mnist.x_train, arrays["train-images-idx3-ubyte"].reshape(5, 784) / 255.0, rtol=1e-6
    )
    assert 0.0 <= mnist.x_train.min() and mnist.x_train.max() <= 1.0
    np.testing.assert_array_equal(mnist.y_train, arrays["train-labels-idx1-ubyte"])
    x, y = load_mnist_combined(tmp_path, verify=False)
    np.testing.assert_array_equal(x, np.concatenate([mnist.x_train, mnist.x_test]))
    np.testing.assert_array_equal(y, np.concatenate([mnist.y_train, mnist.y_test]))


def test_load_mnist_hash_mismatch_names_the_file(tmp_path):
    write_tiny_mnist(tmp_path)
    with pytest.raises(ValueError, match="sha256 .*train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


def test_load_mnist_missing_file_suggests_download(tmp_path):
    write_tiny_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.*download=True"):
        load_mnist(tmp_path, verify=False)


def test_load_mnist_corrupted_and_truncated_files(tmp_path):
    write_tiny_mnist(tmp_path)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    raw = target.read_bytes()
    target.write_bytes(raw[: len(raw) // 2])  # truncated gzip stream
    with pytest.raises(ValueError, match="gzip .*corrupted or truncated"):
        load_mnist(tmp_path, verify=False)
    target.write_bytes(gzip.compress(gzip.decompress(raw)[:-10]))  # truncated IDX content
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(tmp_path, verify=False)
    target.write_bytes(gzip.compress(b"\x01\x02" + gzip.decompress(raw)[2:]))
    with pytest.raises(ValueError, match="magic number"):
        load_mnist(tmp_path, verify=False)


def test_load_mnist_inconsistent_labels(tmp_path):
    write_tiny_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes([1, 2, 3])))
    with pytest.raises(ValueError, match="3 labels for 5 images"):
        load_mnist(tmp_path, verify=False)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes([1] * 4 + [12])))
    with pytest.raises(ValueError, match="labels 0-9"):
        load_mnist(tmp_path, verify=False)


def test_download_from_a_mirror_is_verified_and_atomic(tmp_path):
    mirror = tmp_path / "mirror"
    arrays = write_tiny_mnist(mirror)
    root = tmp_path / "root"
    mnist = load_mnist(root, download=True, verify=False, mirrors=[mirror.as_uri() + "/"])
    np.testing.assert_array_equal(mnist.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{n}.gz" for n in MNIST_FILES)
    # with verification the tiny files do not match the real hashes: nothing is kept
    fresh = tmp_path / "fresh"
    with pytest.raises(OSError, match="Could not download .*sha256"):
        load_mnist(fresh, download=True, mirrors=[mirror.as_uri() + "/"])
    assert list(fresh.iterdir()) == []


def test_mnist_hash_constants_are_sha256_of_the_right_files(tmp_path):
    # the check is on the decompressed bytes: a gzip of known bytes with the right digest
    data = idx_bytes(np.zeros(1))
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "f.gz").write_bytes(gzip.compress(data))
    check_sha256(gzip.decompress((tmp_path / "f.gz").read_bytes()), digest, tmp_path)
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in MNIST_FILES.values())


def test_real_mnist_loads_and_verifies(mnist):
    mnist = load_mnist(mnist)  # verify=True: sha256 of all four files
    assert mnist.x_train.shape == (60000, 784) and mnist.x_test.shape == (10000, 784)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int64
    assert mnist.x_train.min() == 0.0 and mnist.x_train.max() == 1.0
    assert mnist.y_train[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first digits
    assert np.bincount(mnist.y_train).tolist()[1] == 6742  # ones are the largest class
    assert np.bincount(mnist.y_test, minlength=10).sum() == 10000


# -- CLI ----------------------------------------------------------------------------------
runner = CliRunner()


def test_cli_simulate_writes_the_sample(tmp_path):
    out = tmp_path / "sim.npz"
    args = ["simulate", "--n-samples", "300", "--latent-dim", "2", "--obs-dim", "6"]
    args += ["--components", "4", "--seed", "3", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1 and "wrote" in result.stdout and "J = 4" in result.stdout
    data = load_array(out)
    assert data.x.shape == (300, 6) and data.z.shape == (300, 2) and data.labels.max() < 4
    with np.load(out) as f:
        assert f["prior_means"].shape == (4, 2) and float(f["noise_std"]) == 0.05
    from idvae.simulate import sample_model

    same = sample_model(300, latent_dim=2, obs_dim=6, n_components=4, random_state=3)
    np.testing.assert_array_equal(data.x, same.x)


def test_cli_simulate_facets(tmp_path):
    out = tmp_path / "f.npz"
    args = ["simulate", "--n-samples", "200", "--latent-dim", "3", "--obs-dim", "5"]
    args += ["--facets", "2,3", "--neighbors", "0,1;1,2", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = load_array(out)
    assert data.u.shape == (200, 2)
    np.testing.assert_array_equal(data.labels, data.u[:, 0] * 3 + data.u[:, 1])
    with np.load(out) as f:
        np.testing.assert_array_equal(f["neighbors"], [[1, 1, 0], [0, 1, 1]])


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--latent-dim", "5", "--obs-dim", "3"], "Remark 3.3"),
        (["--facets", "2,x"], "comma-separated"),
        (["--facets", "2,2", "--components", "3"], "∏ d_i = 4"),
        (["--noise-std", "-1"], "noise_std"),
    ],
)
def test_cli_simulate_bad_input_exits_2_with_one_line(tmp_path, extra, match):
    out = tmp_path / "bad.npz"
    result = runner.invoke(app, ["simulate", "--n-samples", "50", *extra, "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert match in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_cli_simulate_refuses_other_suffixes(tmp_path):
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path / "sim.csv")])
    assert result.exit_code == 2 and ".npz" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_dataset(tmp_path):
    out = tmp_path / "p.npz"
    result = runner.invoke(
        app, ["dataset", "parallelograms", "--n-samples", "90", "--seed", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with np.load(out) as f:
        np.testing.assert_array_equal(f["points"], parallelograms(90, random_state=1).points)
        assert f["vertices"].shape == (3, 4, 2)
    result = runner.invoke(app, ["dataset", "spirals"])
    assert result.exit_code == 2 and "spirals" in result.stderr
    result = runner.invoke(app, ["dataset", "mnist", "--root", str(tmp_path / "none")])
    assert result.exit_code == 2 and "download" in result.stderr

"""MNIST/Fashion-MNIST IDX files: the reader, its checks, the search for the files, the loading.

The files are written here by a writer that follows the format's description (LeCun's MNIST
page) with ``struct``; the real Fashion-MNIST is used when Debian's package is installed.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustagg.training import idx
from robustagg.training.data import DatasetError, load_dataset
from robustagg.training.idx import IDXError, find_idx_dataset, load_idx_dataset, read_idx

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
DEBIAN = "/usr/share/datasets/fashion-mnist"


def idx_bytes(arr: np.ndarray, code: int | None = None) -> bytes:
    """The IDX encoding of ``arr``: 0, 0, type code, ndim, big-endian uint32 dims, big-endian data."""
    arr = np.asarray(arr)
    code = CODES[arr.dtype.type] if code is None else code
    head = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path, payload: bytes, gz: bool = False) -> str:
    path = str(path) + (".gz" if gz else "")
    with open(path, "wb") as fh:
        fh.write(gzip.compress(payload) if gz else payload)
    return path


def write_dataset(directory, rng, n_train=60, n_test=20, size=(4, 3), gz=True, classes=3):
    """Four IDX files in ``directory``; returns the arrays written."""
    os.makedirs(directory, exist_ok=True)
    tr_x = rng.integers(0, 256, size=(n_train, *size), dtype=np.uint8)
    te_x = rng.integers(0, 256, size=(n_test, *size), dtype=np.uint8)
    tr_x[:, 0, 0] = 0  # a constant (border) pixel
    te_x[:, 0, 0] = 0
    tr_y = (np.arange(n_train) % classes).astype(np.uint8)
    te_y = (np.arange(n_test) % classes).astype(np.uint8)
    for role, arr in (
        ("train_images", tr_x),
        ("train_labels", tr_y),
        ("test_images", te_x),
        ("test_labels", te_y),
    ):
        write(os.path.join(directory, idx.IDX_FILES[role]), idx_bytes(arr), gz=gz)
    return tr_x, tr_y, te_x, te_y


# ------------------------------------------------------------------------------------------------
# the reader


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", list(CODES), ids=lambda t: t.__name__)
def test_read_idx_round_trips_every_type(tmp_path, rng, dtype, gz):
    arr = (rng.normal(size=(5, 3, 2)) * 100).astype(dtype)
    path = write(tmp_path / "a-idx3", idx_bytes(arr), gz=gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    dtype=st.sampled_from(list(CODES)),
    gz=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_read_idx_round_trip_property(tmp_path_factory, shape, dtype, gz, seed):
    arr = (np.random.default_rng(seed).normal(size=shape) * 50).astype(dtype)
    path = write(tmp_path_factory.mktemp("p") / "x", idx_bytes(arr), gz=gz)
    out = read_idx(path)
    assert out.shape == tuple(shape)
    np.testing.assert_array_equal(out, arr)


def _header(code=0x08, dims=(2, 2)):
    return struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "too short for an IDX header"),
        (b"\x00\x00", "too short for an IDX header"),
        (b"\x1f\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        (b"PK\x03\x04" + b"\x00" * 20, "not an IDX file"),
        (_header(code=0x07) + b"\x00" * 4, "unknown IDX data type code 0x07"),
        (b"\x00\x00\x08\x00", "declares 0 dimensions"),
        (_header(dims=(2, 2))[:9], "truncated IDX header"),
        (_header(dims=(2, 2)) + b"\x00" * 3, "truncated: the header declares shape (2, 2)"),
        (
            _header(code=0x0D, dims=(3,)) + b"\x00" * 11,
            "truncated: the header declares shape (3,) of float32",
        ),
        (_header(dims=(60000, 28, 28)) + b"\x00" * 100, "holds 100"),
        (_header(dims=(2, 2)) + b"\x00" * 5, "1 bytes after the data"),
    ],
    ids=[
        "empty",
        "2-bytes",
        "magic",
        "zip",
        "type-code",
        "0-dims",
        "short-header",
        "truncated",
        "truncated-float",
        "huge-declared",
        "trailing",
    ],
)
def test_each_malformation_is_a_clear_error_naming_the_file(tmp_path, payload, message, gz):
    path = write(tmp_path / "bad-idx", payload, gz=gz)
    with pytest.raises(IDXError) as info:
        read_idx(path)
    assert message in str(info.value) and path in str(info.value)
    assert isinstance(info.value, ValueError)


def test_damaged_gzip_files(tmp_path, rng):
    good = gzip.compress(idx_bytes(rng.integers(0, 255, size=(50, 7), dtype=np.uint8)))
    truncated = write(tmp_path / "t", good[: len(good) // 2])
    with pytest.raises(IDXError, match="truncated gzip file") as info:
        read_idx(truncated)
    assert truncated in str(info.value)
    crc = bytearray(good)
    crc[-8] ^= 0xFF  # the CRC-32 of the uncompressed data
    with pytest.raises(IDXError, match="damaged gzip file") as info:
        read_idx(write(tmp_path / "c", bytes(crc)))
    assert str(tmp_path / "c") in str(info.value)
    with pytest.raises(IDXError, match="cannot be read"):
        read_idx(tmp_path)  # a directory


# ------------------------------------------------------------------------------------------------
# a dataset's four files


def _source(directory, name="fashion-mnist"):
    return find_idx_dataset(name, directory, environ={})


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_load_idx_dataset_scales_and_standardises_once_in_float32(tmp_path, rng, gz):
    tr_x, tr_y, te_x, te_y = write_dataset(tmp_path / "d", rng, gz=gz)
    data = load_idx_dataset(_source(tmp_path / "d"))
    assert data.name == "fashion-mnist" and data.n_classes == 3 and data.n_features == 12
    assert data.X_train.dtype == np.float32 and data.X_test.dtype == np.float32
    # oracle: float64, pixels / 255, the training set's mean and (population) std, scale 1 if constant
    X = tr_x.reshape(len(tr_x), -1) / 255.0
    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd[sd == 0] = 1.0
    np.testing.assert_allclose(data.X_train, (X - mu) / sd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        data.X_test, (te_x.reshape(len(te_x), -1) / 255.0 - mu) / sd, rtol=1e-5, atol=1e-5
    )
    assert np.all(data.X_train[:, 0] == 0) and np.all(data.X_test[:, 0] == 0)  # constant pixel: exactly 0
    np.testing.assert_array_equal(data.y_train, tr_y)  # labels 0..2 kept, official order kept
    np.testing.assert_array_equal(data.y_test, te_y)


def _overwrite(directory, role, payload, gz=True):
    base = os.path.join(directory, idx.IDX_FILES[role])
    for p in (base, base + ".gz"):
        if os.path.exists(p):
            os.remove(p)
    return write(base, payload, gz=gz)


@pytest.mark.parametrize(
    "role, array, message",
    [
        ("train_labels", np.zeros(59, np.uint8), "59 labels, but"),
        ("test_labels", np.zeros(21, np.uint8), "21 labels, but"),
        ("train_labels", np.zeros((60, 1), np.uint8), "expected labels, a 1-D array"),
        ("test_labels", np.zeros(20, np.int32), "expected labels, a 1-D array of unsigned bytes"),
        ("train_images", np.zeros((60, 12), np.uint8), "expected images, a 3-D array"),
        ("train_images", np.zeros((60, 4, 3), np.float32), "expected images, a 3-D array of unsigned bytes"),
        ("test_images", np.zeros((20, 3, 4), np.uint8), "images of 3x4 pixels"),
        ("train_images", np.zeros((0, 4, 3), np.uint8), "no images"),
    ],
)
def test_dataset_level_checks_name_the_file(tmp_path, rng, role, array, message):
    write_dataset(tmp_path / "d", rng)
    path = _overwrite(tmp_path / "d", role, idx_bytes(array))
    with pytest.raises(IDXError) as info:
        load_idx_dataset(_source(tmp_path / "d"))
    assert message in str(info.value) and path in str(info.value)


def test_a_damaged_file_is_reported_not_skipped(tmp_path, rng, monkeypatch):
    """A later place holding good files does not hide a damaged file in an earlier one."""
    write_dataset(tmp_path / "first", rng)
    write_dataset(tmp_path / "second", rng)
    path = _overwrite(tmp_path / "first", "test_images", _header(dims=(20, 4, 3)) + b"\x00" * 7)
    src = find_idx_dataset(
        "fashion-mnist", tmp_path / "first", environ={"ROBUSTAGG_DATA": str(tmp_path / "second")}
    )
    assert src.paths["test_images"] == path
    with pytest.raises(IDXError, match="truncated") as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "first")
    assert path in str(info.value)


# ------------------------------------------------------------------------------------------------
# where the files are looked for


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No real dataset anywhere: an empty home, working directory and Debian root."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ROBUSTAGG_DATA", raising=False)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(idx, "DEBIAN_ROOT", str(tmp_path / "debian"))
    return tmp_path


def test_search_order_and_layouts(nowhere, rng):
    t = nowhere
    write_dataset(t / "debian" / "fashion-mnist", rng)
    assert find_idx_dataset("fashion-mnist").paths["train_images"].startswith(str(t / "debian"))
    keras = t / "home" / ".keras" / "datasets" / "fashion-mnist"
    write_dataset(keras, rng)
    assert find_idx_dataset("fashion-mnist").where.startswith(str(t / "debian"))  # Debian before Keras
    write_dataset(t / "env" / "FashionMNIST" / "raw", rng, gz=False)  # torchvision's layout
    env = {"ROBUSTAGG_DATA": str(t / "env")}
    src = find_idx_dataset("fashion-mnist", environ=env)
    assert src.paths["train_images"] == str(t / "env" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte")
    write_dataset(t / "env" / "fashion-mnist", rng)  # ROOT/<name>/ before ROOT/FashionMNIST/raw/
    assert find_idx_dataset("fashion-mnist", environ=env).where.startswith(str(t / "env" / "fashion-mnist"))
    write_dataset(t / "mine", rng)  # --data-dir holding the files directly, before everything
    src = find_idx_dataset("fashion-mnist", t / "mine", environ=env)
    assert src.where.startswith(str(t / "mine")) and "--data-dir" in src.where
    # raw files are preferred over .gz next to them
    write_dataset(t / "mine", rng, gz=False)
    assert not find_idx_dataset("fashion-mnist", t / "mine", environ={}).paths["test_labels"].endswith(".gz")
    # only the Keras cache left
    import shutil

    for d in ("debian", "env", "mine"):
        shutil.rmtree(t / d)
    assert find_idx_dataset("fashion-mnist", environ={}).where.startswith(str(keras))
    # torchvision's ./data root, relative to the working directory, last
    shutil.rmtree(t / "home" / ".keras")
    write_dataset(t / "data" / "FashionMNIST" / "raw", rng)
    assert find_idx_dataset("fashion-mnist", environ={}).where.startswith(str(t / "data" / "FashionMNIST"))


def test_mnist_from_keras_npz(nowhere, rng):
    tr_x, tr_y, te_x, te_y = (
        rng.integers(0, 256, size=(30, 5, 5), dtype=np.uint8),
        np.arange(30, dtype=np.uint8) % 10,
        rng.integers(0, 256, size=(10, 5, 5), dtype=np.uint8),
        np.arange(10, dtype=np.uint8) % 10,
    )
    keras = nowhere / "home" / ".keras" / "datasets"
    keras.mkdir(parents=True)
    np.savez(keras / "mnist.npz", x_train=tr_x, y_train=tr_y, x_test=te_x, y_test=te_y)
    data = load_dataset("mnist")
    assert data.name == "mnist" and data.X_train.shape == (30, 25) and data.X_train.dtype == np.float32
    np.testing.assert_array_equal(data.y_test, te_y)
    # the same images as IDX files in --data-dir/mnist/ come first and give the same arrays
    for role, arr in (
        ("train_images", tr_x),
        ("train_labels", tr_y),
        ("test_images", te_x),
        ("test_labels", te_y),
    ):
        os.makedirs(nowhere / "dd" / "mnist", exist_ok=True)
        write(nowhere / "dd" / "mnist" / idx.IDX_FILES[role], idx_bytes(arr), gz=True)
    other = load_dataset("mnist", data_dir=nowhere / "dd")
    np.testing.assert_array_equal(other.X_train, data.X_train)
    assert other.fingerprint == data.fingerprint
    # a Keras file with the wrong arrays is an error naming it
    np.savez(keras / "mnist.npz", x_train=tr_x, y_train=tr_y[:-1], x_test=te_x, y_test=te_y)
    with pytest.raises(DatasetError, match="29 labels") as info:
        load_dataset("mnist")
    assert str(keras / "mnist.npz") in str(info.value)


def test_not_found_lists_the_places_and_how_to_install(nowhere, rng):
    (nowhere / "partial").mkdir()
    write(nowhere / "partial" / "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 2, 2), np.uint8)))
    with pytest.raises(FileNotFoundError) as info:
        find_idx_dataset(
            "fashion-mnist", nowhere / "partial", environ={"ROBUSTAGG_DATA": str(nowhere / "env")}
        )
    msg = str(info.value)
    for place in (
        nowhere / "partial" / "fashion-mnist",
        nowhere / "partial" / "FashionMNIST" / "raw",
        nowhere / "env",
        nowhere / "debian" / "fashion-mnist",
        nowhere / "home" / ".keras" / "datasets" / "fashion-mnist",
        nowhere / "data" / "FashionMNIST" / "raw",
    ):
        assert str(place) in msg, place
    assert msg.index("--data-dir") < msg.index("$ROBUSTAGG_DATA") < msg.index("Debian") < msg.index("Keras")
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir DIR" in msg
    assert "holds 1 of the 4 files, lacks train-labels-idx1-ubyte" in msg
    with pytest.raises(FileNotFoundError) as info:
        find_idx_dataset("mnist", environ={})
    assert "mnist.npz" in str(info.value) and "apt-get" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        find_idx_dataset("mnist", nowhere / "no-such-dir")


# ------------------------------------------------------------------------------------------------
# the real data (Debian's dataset-fashion-mnist)


_DEBIAN_INSTALLED = all(os.path.isfile(os.path.join(DEBIAN, f + ".gz")) for f in idx.IDX_FILES.values())


@pytest.mark.slow
@pytest.mark.skipif(
    not _DEBIAN_INSTALLED and os.environ.get("ROBUSTAGG_REQUIRE_REAL_DATA") != "1",
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_smoke(monkeypatch):
    """Skipped where the Debian package is absent, except in CI (ROBUSTAGG_REQUIRE_REAL_DATA=1,
    set by .ci/run after installing it), where its absence fails."""
    from robustagg.training import run_federated

    assert _DEBIAN_INSTALLED, f"{DEBIAN} lacks the four IDX files: apt-get install dataset-fashion-mnist"
    monkeypatch.delenv("ROBUSTAGG_DATA", raising=False)
    data = load_dataset("fashion-mnist", data_dir=DEBIAN)
    assert data.X_train.shape == (60000, 784) and data.X_test.shape == (10000, 784)
    assert data.X_train.dtype == np.float32 and data.n_classes == 10
    np.testing.assert_array_equal(np.bincount(data.y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(data.y_test), np.full(10, 1000))
    mean = data.X_train.mean(axis=0, dtype=np.float64)
    sd = data.X_train.std(axis=0, dtype=np.float64)
    assert np.abs(mean).max() < 1e-4 and np.all(np.abs(sd - 1) < 1e-4)
    res = run_federated(data, rule="mean", attack="none", epochs=1, n_clients=50, batch_size=16, lr=0.1)
    assert res.summary["rounds"] == 75 and res.history["round"].tolist() == [0, 75]
    assert res.summary["best_accuracy"] > 0.7  # one epoch of the MLP; chance is 0.1

import gzip
import logging
import struct

import numpy as np
import pytest

from mitigate import data


def write_idx(path, array, compress=False):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(payload)


def make_fashion_dir(folder, n_train=12, n_test=6, compress=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_train, 28, 28)), compress)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", np.arange(n_train) % 10, compress)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_test, 28, 28)), compress)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", np.arange(n_test) % 10, compress)


@pytest.mark.parametrize("compress", [True, False])
def test_load_fashion_from_idx_files(tmp_path, compress):
    make_fashion_dir(tmp_path, compress=compress)
    splits = data.load_fashion_mnist(tmp_path, fallback=False)
    assert splits.train_images.shape == (12, 1, 28, 28)
    assert splits.audit_images.shape == (6, 1, 28, 28)
    assert splits.train_images.dtype == np.float32
    assert splits.train_images.min() >= 0.0
    assert splits.train_images.max() <= 1.0
    np.testing.assert_array_equal(splits.train_labels, np.arange(12) % 10)


def test_missing_files_error_says_where_and_how(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        data.load_fashion_mnist(tmp_path, fallback=False)
    assert str(tmp_path) in str(info.value)


def test_missing_files_fall_back_to_digits(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mitigate.data"):
        splits = data.load_fashion_mnist(tmp_path, fallback=True)
    assert splits.source.startswith("sklearn-digits")
    assert splits.train_images.shape[1:] == (1, 8, 8)
    assert "Falling back to scikit-learn's digits" in caplog.text


def test_read_idx_rejects_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        data.read_idx(path)


def test_read_idx_rejects_truncated(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(path)


def test_plant_rates_follow_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=20000)
    images = np.zeros((labels.size, 1, 28, 28), dtype=np.float32)
    box = data.square_box(28, size=4, corner="top_right")
    planted, has = data.plant_spurious_square(images, labels, target_class=2, p_target=0.9,
                                              p_other=0.05, box=box, seed=0)
    assert has[labels == 2].mean() == pytest.approx(0.9, abs=0.02)
    assert has[labels != 2].mean() == pytest.approx(0.05, abs=0.01)
    assert planted[has][:, 0, 1:5, 23:27].min() == 1.0
    assert planted[~has].max() == 0.0
    assert images.max() == 0.0  # input untouched


def test_square_box_rejects_bad_corner():
    with pytest.raises(ValueError, match="invalid corner 'middle'"):
        data.square_box(28, size=4, corner="middle")

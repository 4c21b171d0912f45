"""IDX files: the real MNIST test files (gzipped and not), a Fashion-style set, and bad files."""
import gzip
import os
import shutil

import numpy as np
import pytest

from data_pipeline.errors import DataError
from data_pipeline.formats import idx
from data_fixtures import write_idx, write_idx_set


def test_reads_shared_mnist_test_files(shared_mnist_dir):
    images, labels = idx.read_split(shared_mnist_dir, "t10k")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and set(np.unique(labels)) == set(range(10))
    assert images.min() == 0 and images.max() == 255
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test digits
    assert idx.has_split(shared_mnist_dir, "t10k") and not idx.has_split(shared_mnist_dir, "train")


def test_plain_files_read_like_gzipped(shared_mnist_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(os.path.join(shared_mnist_dir, name + ".gz")) as src, \
                open(tmp_path / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    plain = idx.read_split(str(tmp_path), "t10k")
    zipped = idx.read_split(shared_mnist_dir, "t10k")
    for a, b in zip(plain, zipped):
        np.testing.assert_array_equal(a, b)


def test_fashion_style_set_round_trips(tmp_path):
    arrays = write_idx_set(str(tmp_path), train=7, test=3)
    images, labels = idx.read_split(str(tmp_path), "train")
    np.testing.assert_array_equal(images, arrays["train_images"])
    np.testing.assert_array_equal(labels, arrays["train_labels"])


def _message(path, ndim=3) -> str:
    with pytest.raises(DataError) as info:
        idx.read_idx(str(path), ndim)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_bad_magic_number(tmp_path):
    path = tmp_path / "x-images-idx3-ubyte"
    write_idx(str(path), np.zeros((2, 28, 28)))
    assert "bad IDX magic number 0x00000803" in _message(path, ndim=1)
    path.write_bytes(b"\x12\x34\x08\x03" + bytes(100))
    assert "bad IDX magic number 0x12340803" in _message(path)


def test_wrong_length(tmp_path):
    path = tmp_path / "x-images-idx3-ubyte"
    write_idx(str(path), np.zeros((2, 28, 28)))
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    assert "should be 1584 bytes, found 1574" in _message(path)
    path.write_bytes(data[:10])
    assert "truncated IDX header" in _message(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x-images-idx3-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    assert "cannot read" in _message(path)


def test_missing_files_and_count_mismatch(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte: no such file"):
        idx.read_split(str(tmp_path), "train")
    write_idx(str(tmp_path / "t10k-images-idx3-ubyte"), np.zeros((4, 28, 28)))
    write_idx(str(tmp_path / "t10k-labels-idx1-ubyte"), np.zeros(3))
    with pytest.raises(DataError, match="3 labels for 4 images"):
        idx.read_split(str(tmp_path), "t10k")

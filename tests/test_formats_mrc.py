"""MRC stacks: round trips, memory mapping, streaming writes and every bad input."""
import os

import mrcfile
import numpy as np
import pytest

from data_pipeline.errors import DataError
from data_pipeline.formats.mrc import StackWriter, open_stack, write_stack


def _images(n=5, h=6, w=7, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w)).astype(np.float32)


@pytest.mark.parametrize("name", ["stack.mrcs", "stack.mrc"])
def test_round_trip_keeps_pixels_and_pixel_size(tmp_path, name):
    path = str(tmp_path / name)
    images = _images()
    write_stack(path, images[..., None], pixel_size=1.7)
    with open_stack(path) as stack:
        assert stack.shape == (5, 6, 7) and len(stack) == 5 and stack.path == path
        assert stack.pixel_size == pytest.approx(1.7)
        np.testing.assert_array_equal(stack.read(0, 5), images)
        part = stack.read(1, 3)
        assert part.dtype == np.float32
        np.testing.assert_array_equal(part, images[1:3])
    with mrcfile.open(path) as mrc:
        assert mrc.is_image_stack() == name.endswith(".mrcs")
        assert mrc.header.dmax == pytest.approx(images.max())
    assert os.listdir(tmp_path) == [name]  # no temporary left behind


def test_reading_is_memory_mapped(tmp_path):
    path = str(tmp_path / "s.mrcs")
    write_stack(path, _images(), pixel_size=1.0)
    with open_stack(path) as stack:
        assert isinstance(stack._data, np.memmap)


def test_single_image_is_a_stack_of_one(tmp_path):
    path = str(tmp_path / "one.mrc")
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.arange(12, dtype=np.int16).reshape(3, 4))
    with open_stack(path) as stack:
        assert stack.shape == (1, 3, 4)
        np.testing.assert_array_equal(stack.read(0, 1)[0], np.arange(12).reshape(3, 4))


def test_stack_writer_streams_batches_and_renames(tmp_path):
    path = str(tmp_path / "out.mrcs")
    images = _images(n=10)
    with StackWriter(path, 10, 6, 7, pixel_size=2.5) as writer:
        for start in range(0, 10, 4):
            writer.write(start, images[start:start + 4])
        assert not os.path.exists(path)
    with open_stack(path) as stack:
        np.testing.assert_array_equal(stack.read(0, 10), images)
        assert stack.pixel_size == pytest.approx(2.5)


def test_stack_writer_leaves_nothing_on_error(tmp_path):
    path = str(tmp_path / "out.mrcs")
    with pytest.raises(RuntimeError):
        with StackWriter(path, 4, 6, 7, pixel_size=1.0) as writer:
            writer.write(0, _images(n=2))
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_stack_writer_rejects_wrong_batch_shape(tmp_path):
    with pytest.raises(ValueError, match="cannot write"):
        with StackWriter(str(tmp_path / "o.mrcs"), 4, 6, 7, pixel_size=1.0) as writer:
            writer.write(3, _images(n=2))


def test_nonfinite_indices(tmp_path):
    path = str(tmp_path / "nan.mrcs")
    images = _images(n=6)
    images[2, 1, 1] = np.nan
    images[4, 0, 0] = -np.inf
    write_stack(path, images, pixel_size=1.0)
    with open_stack(path) as stack:
        assert stack.nonfinite_indices(0, 6) == [2, 4]
        assert stack.nonfinite_indices(3, 6) == [4]


def _error(path) -> str:
    with pytest.raises(DataError) as info:
        open_stack(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_missing_file(tmp_path):
    assert "no such file" in _error(str(tmp_path / "absent.mrcs"))


def test_not_an_mrc_file(tmp_path):
    path = tmp_path / "text.mrcs"
    path.write_text("hello world\n" * 200)
    assert "not an MRC file" in _error(str(path))


def test_truncated_file(tmp_path):
    path = str(tmp_path / "cut.mrcs")
    write_stack(path, _images(n=4), pixel_size=1.0)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-50])
    message = _error(path)
    assert "truncated" in message and str(len(data)) in message


def test_empty_stack(tmp_path):
    path = str(tmp_path / "empty.mrcs")
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((0, 6, 7), np.float32))
    assert "empty stack" in _error(path)

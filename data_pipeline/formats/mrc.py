"""MRC particle stacks, read through a memory map so a stack never has to fit in RAM.

A stack is `n` images of `h` x `w` pixels (MRC sections). A file with a single 2D image is a stack
of one. Files are read as RELION reads them: a header without the "MAP " ID string or with an
unknown machine stamp (older writers, RELION's own stacks among them) is accepted, and modes 0
(int8), 1 (int16), 2 (float32), 6 (uint16) and 12 (float16) are read as float32. Writers go
through a temporary file beside the target and rename it on success, so a failed run never leaves
a half-written stack behind.
"""
import contextlib
import os
import warnings
from types import TracebackType

import mrcfile
import numpy as np
from mrcfile.utils import data_dtype_from_header

from data_pipeline.atomic import atomic_path
from data_pipeline.errors import DataError

HEADER_BYTES = 1024


READ_MODES = (0, 1, 2, 6, 12)


def _open_permissive(path: str, header_only: bool = False) -> mrcfile.mrcfile.MrcFile:
    """The file opened read-only as RELION would (module docstring): mrcfile's warnings about
    the ID string and machine stamp are silenced, a bad mode or size still fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if header_only:
            return mrcfile.open(path, header_only=True, permissive=True)
        return mrcfile.mmap(path, mode="r", permissive=True)


def _check_file(path: str) -> None:
    """Checks that `path` is an MRC file of a mode we read whose data block is as long as its
    header says."""
    if not os.path.isfile(path):
        raise DataError(path, "no such file")
    try:
        with _open_permissive(path, header_only=True) as mrc:
            header = mrc.header
            mode = int(header.mode)
            if mode not in READ_MODES:
                raise DataError(path, f"not an MRC file of a mode read here (mode {mode}; "
                                f"modes read: {', '.join(map(str, READ_MODES))})")
            dtype = data_dtype_from_header(header)
            if min(int(header.nx), int(header.ny)) < 1 or int(header.nz) < 0:
                raise ValueError(f"its header gives images of {int(header.nx)} x "
                                 f"{int(header.ny)} pixels")
    except (ValueError, OSError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(path, f"not an MRC file ({e})") from None
    expected = (HEADER_BYTES + int(header.nsymbt)
                + int(header.nx) * int(header.ny) * int(header.nz) * dtype.itemsize)
    actual = os.path.getsize(path)
    if actual < expected:
        raise DataError(path, f"truncated MRC file: {actual} bytes, the header needs {expected}")


class MrcStack:
    """An open, memory-mapped MRC stack. Use `open_stack` to make one."""

    def __init__(self, path: str):
        path = os.fspath(path)
        _check_file(path)
        try:
            self._mrc = _open_permissive(path)
        except (ValueError, OSError) as e:
            raise DataError(path, f"cannot read MRC file ({e})") from None
        data = self._mrc.data
        if data is None or data.ndim not in (2, 3):
            self._mrc.close()
            raise DataError(path, "expected a stack of 2D images, found "
                            f"{'no data' if data is None else f'{data.ndim}D data'}")
        self._data = data[np.newaxis] if data.ndim == 2 else data
        if self._data.shape[0] == 0:
            self._mrc.close()
            raise DataError(path, "empty stack (0 images)")
        self.path = path

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n, h, w): number of images, rows, columns."""
        n, h, w = self._data.shape
        return int(n), int(h), int(w)

    @property
    def pixel_size(self) -> float | None:
        """Pixel size in Å (the header's voxel size along x); None where the header has 0 (or
        less): many writers leave it unset."""
        size = float(self._mrc.voxel_size.x)
        return size if size > 0 else None

    def __len__(self) -> int:
        return self.shape[0]

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"{self.path}: range [{start}, {stop}) outside a stack of {len(self)}")

    def read(self, start: int, stop: int) -> np.ndarray:
        """Images start..stop-1 as a float32 array [k, h, w] (copied out of the memory map)."""
        self._check_range(start, stop)
        return np.array(self._data[start:stop], dtype=np.float32)

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Images at `indices` (any order, 0-based) as float32 [k, h, w]; only they are read."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and not (0 <= indices.min() and indices.max() < len(self)):
            raise IndexError(f"{self.path}: indices outside a stack of {len(self)}")
        return np.array(self._data[indices], dtype=np.float32)

    def nonfinite_indices(self, start: int, stop: int) -> list[int]:
        """Indices in [start, stop) of images that contain a NaN or an infinity."""
        images = self.read(start, stop)
        bad = ~np.isfinite(images).reshape(len(images), -1).all(axis=1)
        return [start + int(i) for i in np.flatnonzero(bad)]

    def close(self) -> None:
        self._mrc.close()

    def __enter__(self) -> "MrcStack":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_stack(path: str) -> MrcStack:
    """Opens an MRC stack read-only and memory-mapped; `DataError` if it is missing or invalid.

    Use it as a context manager: `with open_stack(path) as stack: stack.read(0, 64)`.
    """
    return MrcStack(path)


class StackWriter:
    """Streams a float32 stack of `n` images of h x w into `path`, in batches.

    The file is memory-mapped on a temporary path beside `path` and renamed on a clean exit from
    the `with` block (removed on an exception), so outputs larger than RAM can be written safely.
    """

    def __init__(self, path: str, n: int, h: int, w: int, pixel_size: float):
        if min(n, h, w) <= 0:
            raise ValueError(f"{path}: a stack needs n, h, w > 0, got {(n, h, w)}")
        self.path = os.fspath(path)
        self.shape = (int(n), int(h), int(w))
        self.pixel_size = float(pixel_size)
        self._stack = contextlib.ExitStack()
        self._mrc = None
        self._count, self._sum, self._sum_sq = 0, 0.0, 0.0
        self._min, self._max = np.inf, -np.inf

    def __enter__(self) -> "StackWriter":
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._mrc = mrcfile.new_mmap(tmp, shape=self.shape, mrc_mode=2, overwrite=True)
        self._stack.callback(self._mrc.close)
        if self.path.endswith(".mrcs"):
            self._mrc.set_image_stack()
        self._mrc.voxel_size = self.pixel_size
        return self

    def write(self, start: int, batch: np.ndarray) -> None:
        """Writes images [k, h, w] (or [k, h, w, 1]) at positions start..start+k-1."""
        batch = _as_stack(batch, self.path)
        if batch.shape[1:] != self.shape[1:] or not 0 <= start <= self.shape[0] - len(batch):
            raise ValueError(f"{self.path}: cannot write a batch of {batch.shape} at {start} "
                             f"into a stack of {self.shape}")
        if not len(batch):  # nothing to write (a batch whose particles were all left out)
            return
        self._mrc.data[start:start + len(batch)] = batch
        values = batch.astype(np.float64)
        self._count += values.size
        self._sum += values.sum()
        self._sum_sq += np.square(values).sum()
        self._min, self._max = min(self._min, values.min()), max(self._max, values.max())

    def _set_header_statistics(self) -> None:
        """Header min/max/mean/rms from the batches written (no second pass over the file)."""
        header = self._mrc.header
        if self._count == 0:
            self._mrc.reset_header_stats()
            return
        mean = self._sum / self._count
        header.dmin, header.dmax, header.dmean = self._min, self._max, mean
        with np.errstate(invalid="ignore"):  # a stack may hold NaN/Inf; its statistics then too
            header.rms = np.sqrt(max(self._sum_sq / self._count - mean**2, 0.0))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc_type is None:
            self._set_header_statistics()
        return self._stack.__exit__(exc_type, exc, tb)


def _as_stack(images: np.ndarray, path: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"{path}: expected images [n, h, w] or [n, h, w, 1], got {images.shape}")
    return images.astype(np.float32, copy=False)


def write_stack(path: str, images: np.ndarray, pixel_size: float) -> None:
    """Writes images [n, h, w] or [n, h, w, 1] as a float32 MRC stack, atomically."""
    images = _as_stack(images, path)
    with StackWriter(path, *images.shape, pixel_size=pixel_size) as writer:
        writer.write(0, images)


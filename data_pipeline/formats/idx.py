"""IDX files, the format of MNIST and Fashion-MNIST (`train-images-idx3-ubyte[.gz]` and friends).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian int32 per dimension, then the values. Only unsigned bytes (type 0x08) occur in these
data sets, so only they are read; every file is checked against its header before use.
"""
import gzip
import os
import struct
import zlib

import numpy as np

from data_pipeline.errors import DataError

UBYTE = 0x08
# The standard file names of a split: images (3 dims) and labels (1 dim).
IMAGES = "{prefix}-images-idx3-ubyte"
LABELS = "{prefix}-labels-idx1-ubyte"
PREFIXES = ("train", "t10k")


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return gzip.decompress(raw) if path.endswith(".gz") else raw
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, f"cannot read ({e})") from None


def read_idx(path: str, ndim: int) -> np.ndarray:
    """The uint8 array stored in an IDX file, which must have `ndim` dimensions."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(path, f"not an IDX file: {len(data)} bytes")
    zero, type_code, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code != UBYTE or dims != ndim:
        raise DataError(path, f"bad IDX magic number 0x{data[:4].hex()}: expected "
                        f"0x0000{UBYTE:02x}{ndim:02x} (unsigned bytes, {ndim} dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(path, f"truncated IDX header: {len(data)} bytes, expected {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(path, f"IDX file of shape {shape} should be {expected} bytes, "
                        f"found {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def find_file(folder: str, name: str) -> str | None:
    """`folder/name` or `folder/name.gz`, whichever exists (the plain file first), else None."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def has_split(folder: str, prefix: str) -> bool:
    """Whether `folder` holds both files of split `prefix` ('train' or 't10k')."""
    return all(find_file(folder, name.format(prefix=prefix)) for name in (IMAGES, LABELS))


def read_split(folder: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [n, h, w] and labels uint8 [n] of split `prefix` ('train' or 't10k')."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown IDX split {prefix!r}; expected one of {PREFIXES}")
    paths = []
    for name in (IMAGES, LABELS):
        name = name.format(prefix=prefix)
        path = find_file(folder, name)
        if path is None:
            raise DataError(os.path.join(folder, name), "no such file (nor with .gz)")
        paths.append(path)
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if len(images) != len(labels):
        raise DataError(paths[1], f"{len(labels)} labels for {len(images)} images in {paths[0]}")
    return images, labels

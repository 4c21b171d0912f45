"""Small data sets written in the real on-disk layouts, for the data pipeline tests."""
import gzip
import importlib.util
import os
import pickle
import struct

import mrcfile
import numpy as np

from data_pipeline import rotation

HDB_SIZE = 40


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array as an IDX file (gzipped when `path` ends in .gz)."""
    array = np.asarray(array, dtype=np.uint8)
    data = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if path.endswith(".gz") else data)


def write_idx_set(folder: str, train: int, test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A Fashion-MNIST-style folder (train and t10k, gzipped); returns the arrays written."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", train), ("t10k", test)):
        arrays[f"{prefix}_images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}_labels"] = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), arrays[f"{prefix}_images"])
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), arrays[f"{prefix}_labels"])
    return arrays


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth, off-centre blobs [n, size, size] inside the inscribed disc (rotate cleanly)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    images = np.zeros((n, size, size), np.float32)
    for image in images:
        for _ in range(3):
            cy, cx = rng.uniform(-size / 5, size / 5, size=2)
            image += rng.uniform(0.5, 2.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
    return images


def inscribed_disc(size: int, fraction: float = 0.8) -> np.ndarray:
    """Mask [size, size] of the pixels within `fraction` of the inscribed circle's radius."""
    return rotation.inscribed_disc(size, fraction * size / 2)


def write_hdb_archive(parent: str, per_folder: int = 3, seed: int = 0) -> dict[int, tuple]:
    """`parent/5HDB/<k>_/{imgdata.mrc, pardata.pkl}` for k = 0..19, as in the spatial-VAE tarball.

    Returns {k: (canonical images [n, 40, 40], angles [n])}; observed = rotate(canonical, angle).
    """
    rng = np.random.default_rng(seed)
    truth = {}
    for k in range(20):
        folder = os.path.join(parent, "5HDB", f"{k}_")
        os.makedirs(folder)
        canonical = smooth_images(per_folder, HDB_SIZE, seed=seed + k)
        angles = rng.uniform(-np.pi, np.pi, size=per_folder).astype(np.float32)
        observed = rotation.rotate(canonical[..., None], angles).numpy()[..., 0]
        with mrcfile.new(os.path.join(folder, "imgdata.mrc")) as mrc:
            mrc.set_data(observed)
        with open(os.path.join(folder, "pardata.pkl"), "wb") as f:
            pickle.dump({"i": angles.astype(np.float64), "j": np.zeros(per_folder)}, f)
        truth[k] = (canonical, angles)
    return truth


def correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of images in [B, H, W] arrays."""
    a = a - a.mean(axis=(1, 2), keepdims=True)
    b = b - b.mean(axis=(1, 2), keepdims=True)
    return (a * b).sum((1, 2)) / np.sqrt((a * a).sum((1, 2)) * (b * b).sum((1, 2)))


def load_module(path: str, name: str):
    """The Python file `path` imported as module `name` (benchmark scripts and fixture makers are
    not packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

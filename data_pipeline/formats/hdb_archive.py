"""The spatial-VAE authors' 5HDB archive: simulated particle images of a hinged protein.

Layout: `5HDB/<k>_/imgdata.mrc` (an MRC stack of 40x40 observed images) and `5HDB/<k>_/pardata.pkl`
(a pickled dict whose key `'i'` holds each image's in-plane rotation in radians), k = 0..19, one
folder per conformation. Folders 0-15 are the train split, 16-19 the test split. The canonical image
is the observation rotated back, `image = rotate(observed, -angle)` (`data_pipeline/angles.py`).
"""
import dataclasses
import os
import pickle
from typing import Iterable, Iterator

import numpy as np

from data_pipeline import rotation
from data_pipeline.errors import DataError
from data_pipeline.formats.mrc import open_stack

ROOT = "5HDB"
IMAGES = "imgdata.mrc"
PARAMETERS = "pardata.pkl"
ANGLE_KEY = "i"
SPLITS = {"train": range(0, 16), "test": range(16, 20)}


@dataclasses.dataclass(frozen=True)
class HdbFolder:
    """One conformation's particles: observed images float32 [n, h, w], angles float32 [n]."""

    conformation: int
    observed: np.ndarray
    angles: np.ndarray


def find_root(path: str) -> str:
    """The `5HDB/` folder: `path/5HDB`, or `path` itself when it holds the `<k>_` folders."""
    path = os.fspath(path)
    if os.path.isdir(os.path.join(path, ROOT)):
        return os.path.join(path, ROOT)
    if os.path.isdir(os.path.join(path, "0_")):
        return path
    raise DataError(path, f"no {ROOT}/ folder (expected {ROOT}/0_/{IMAGES} ... {ROOT}/19_/)")


def _read_angles(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(path, "no such file")
    try:
        with open(path, "rb") as f:
            # The archive's pickles may come from Python 2 with NumPy arrays inside.
            parameters = pickle.load(f, encoding="latin1")
    except Exception as e:  # a corrupt pickle can raise nearly anything
        raise DataError(path, f"cannot unpickle ({type(e).__name__}: {e})") from None
    if not isinstance(parameters, dict) or ANGLE_KEY not in parameters:
        raise DataError(path, f"expected a dict with key {ANGLE_KEY!r} (in-plane angles)")
    try:
        angles = np.asarray(parameters[ANGLE_KEY], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(path, f"key {ANGLE_KEY!r} is not a list of numbers ({e})") from None
    if not np.isfinite(angles).all():
        raise DataError(path, f"angle {int(np.flatnonzero(~np.isfinite(angles))[0])} is not finite")
    return angles.astype(np.float32)


def read_folder(root: str, conformation: int) -> HdbFolder:
    """Reads and checks folder `<conformation>_` of the archive at `root` (see `find_root`)."""
    folder = os.path.join(root, f"{conformation}_")
    if not os.path.isdir(folder):
        raise DataError(folder, "no such folder")
    images_path = os.path.join(folder, IMAGES)
    angles = _read_angles(os.path.join(folder, PARAMETERS))
    with open_stack(images_path) as stack:
        bad = stack.nonfinite_indices(0, len(stack))
        if bad:
            raise DataError(images_path, f"{len(bad)} images with NaN/Inf pixels, first {bad[0]}")
        observed = stack.read(0, len(stack))
    if len(angles) != len(observed):
        raise DataError(os.path.join(folder, PARAMETERS),
                        f"{len(angles)} angles for {len(observed)} images in {IMAGES}")
    return HdbFolder(conformation, observed, angles)


def iter_folders(path: str, conformations: Iterable[int]) -> Iterator[HdbFolder]:
    """Reads the given folders in order; `path` is `5HDB/` or the folder that contains it."""
    root = find_root(path)
    for conformation in conformations:
        yield read_folder(root, conformation)


def canonical_images(observed: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Observed images [n, h, w] rotated back by their angles: `rotate(observed, -angle)`."""
    rotated = rotation.rotate(observed[..., np.newaxis], -np.asarray(angles, np.float32))
    return rotated.numpy()[..., 0]

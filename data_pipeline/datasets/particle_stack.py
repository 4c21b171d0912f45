"""A streaming `tf.data.Dataset` over any MRC particle stack (`.mrcs`/`.mrc`), optionally with the
RELION STAR file that gives each particle's in-plane angle.

The stack is read through its memory map a chunk at a time, so it never has to fit in RAM. Elements:
`observed` float32 [H, W, 1] (raw units), `index` int64 (position in the stack) and, with a STAR file,
`angle` float32 (radians, from `rlnAnglePsi` via `star.psi_degrees_to_angle`), and `image`:
- with angles, the canonical image `rotate(observed, -angle)`, as for every data set
  (`observed = rotate(image, angle)`);
- without them there is no ground truth, so `image` is the observed particle itself (training on it
  reconstructs what it sees, and the statistics of `image` are those of the stack).

STAR rows are matched to images by `rlnImageName` (`<k>@<stack>`, 1-based, rows naming other stacks
are ignored) when that column exists, and by row order otherwise. Images with NaN/Inf pixels stop
the iteration with a `DataError` naming the stack and the particle.
"""
import hashlib
import os
from typing import Iterator

import numpy as np
import tensorflow as tf

from data_pipeline import rotation
from data_pipeline.errors import DataError
from data_pipeline.formats import star as star_format
from data_pipeline.formats.mrc import open_stack

NAME = "particle_stack"


def _angles_from_star(star_path: str, stack_path: str, count: int) -> np.ndarray:
    """Angles [count] (radians) of the stack's particles, in stack order."""
    table = star_format.particles_block(star_format.read_star(star_path), star_path)
    if "rlnAnglePsi" not in table:
        raise DataError(star_path, "no rlnAnglePsi column (the in-plane angles)")
    try:
        psi = np.array(table.column("rlnAnglePsi"), dtype=np.float64)
    except ValueError as e:
        raise DataError(star_path, f"rlnAnglePsi is not numeric ({e})") from None
    if "rlnImageName" not in table:
        if len(psi) != count:
            raise DataError(star_path, f"{len(psi)} particles for {count} images in {stack_path}")
        positions = np.arange(count)
    else:
        positions, psi = _positions_in_stack(star_path, table.column("rlnImageName"), psi,
                                             stack_path, count)
    if not np.isfinite(psi).all():
        raise DataError(star_path, "rlnAnglePsi holds NaN/Inf")
    angles = np.empty(count, np.float32)
    angles[positions] = star_format.psi_degrees_to_angle(psi)
    return angles


def _positions_in_stack(star_path: str, names: list[str], psi: np.ndarray, stack_path: str,
                        count: int) -> tuple[np.ndarray, np.ndarray]:
    """The 0-based stack positions of the rows that name `stack_path`, and their psi values."""
    stack_name = os.path.basename(stack_path)
    positions, kept = [], []
    for row, name in enumerate(names):
        number, at, file = name.partition("@")
        if not at or os.path.basename(file) != stack_name:
            continue
        if not number.isdigit() or not 1 <= int(number) <= count:
            raise DataError(star_path, f"particle row {row + 1}: bad image {name!r} for a stack "
                            f"of {count}")
        positions.append(int(number) - 1)
        kept.append(psi[row])
    positions = np.array(positions, dtype=np.int64)
    if len(positions) != count or len(np.unique(positions)) != count:
        raise DataError(star_path, f"{len(np.unique(positions))} distinct rows name {stack_name}, "
                        f"expected one for each of its {count} images")
    return positions, np.array(kept)


def _chunks(path: str, angles: np.ndarray | None, chunk_size: int) -> Iterator[dict]:
    with open_stack(path) as stack:
        for start in range(0, len(stack), chunk_size):
            stop = min(start + chunk_size, len(stack))
            bad = stack.nonfinite_indices(start, stop)
            if bad:
                raise DataError(path, f"particle {bad[0]} has NaN/Inf pixels")
            observed = stack.read(start, stop)[..., np.newaxis]
            chunk = {"observed": observed, "index": np.arange(start, stop, dtype=np.int64)}
            if angles is not None:
                chunk["angle"] = angles[start:stop]
            yield chunk


def _add_image(chunk: dict) -> dict:
    """`image`: the observed chunk rotated back by its angles, or the chunk itself without them."""
    observed = chunk["observed"]
    image = rotation.rotate(observed, -chunk["angle"]) if "angle" in chunk else observed
    return {**chunk, "image": image}


def particle_stack_dataset(stack: str, star: str | None = None,
                           chunk_size: int = 256) -> tf.data.Dataset:
    """The unbatched dataset of a stack's particles, streamed `chunk_size` images at a time.

    The stack (and STAR file) are checked here, so bad input raises `DataError` right away.
    """
    stack = os.fspath(stack)
    with open_stack(stack) as opened:
        n, h, w = opened.shape
    angles = _angles_from_star(os.fspath(star), stack, n) if star else None
    image = tf.TensorSpec([None, h, w, 1], tf.float32)
    signature = {"observed": image, "index": tf.TensorSpec([None], tf.int64)}
    if angles is not None:
        signature["angle"] = tf.TensorSpec([None], tf.float32)
    chunks = tf.data.Dataset.from_generator(lambda: _chunks(stack, angles, chunk_size),
                                            output_signature=signature)
    chunks = chunks.map(_add_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return chunks.unbatch().apply(tf.data.experimental.assert_cardinality(n))


def statistics_key(stack: str) -> str:
    """A folder name that changes when the stack file does (path, size, modification time)."""
    info = os.stat(stack)
    fingerprint = f"{os.path.abspath(stack)}|{info.st_size}|{info.st_mtime_ns}"
    stem = os.path.splitext(os.path.basename(stack))[0]
    return f"{stem}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:12]}"

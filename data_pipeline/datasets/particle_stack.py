"""A streaming `tf.data.Dataset` over particles: an MRC stack (`.mrcs`/`.mrc`), a RELION STAR file
or a cryoSPARC `.cs` file, read by `data_pipeline.particles` (names, optics groups, CTF).

Particles are read through their stacks' memory maps a chunk at a time, so they never have to fit
in RAM. Elements: `observed` float32 [H, W, 1] (raw units), `index` int64 (the particle's 0-based
position among the particles, whatever the split: its stack position for a stack), with angles
`angle` float32 (radians, via `star.psi_degrees_to_angle`), with CTF values each name of
`ctf.CTF_FEATURES` (float32; `defocus_angle` is the astigmatism angle of `image`, which is the
particle's own turned by -angle when `image` is derotated), and `image`:
- with angles, the canonical image `rotate(observed, -angle)`, as for every data set
  (`data_pipeline/angles.py`);
- without them there is no ground truth, so `image` is the observed particle itself (training on it
  reconstructs what it sees, and the statistics of `image` are those of the stack).

Splits: `validation` and `test` each hold half of `holdout_fraction` of the particles (at least one
each), `train` the rest, and `all` is every particle. Which particle goes where depends only on
its position and the particle count (a fixed hash, `SPLIT_SEED`), never on the training seed, so
every run and every program sees the same held-out particles. Each split streams in order.
"""
import hashlib
import os
from typing import Iterator

import numpy as np
import tensorflow as tf

from data_pipeline import ctf as ctf_lib
from data_pipeline import rotation
from data_pipeline.errors import DataError
from data_pipeline.formats import star as star_format
from data_pipeline.particles import read_particles
from data_pipeline.settings import DEFAULT_HOLDOUT_FRACTION

NAME = "particle_stack"
SPLITS = ("train", "validation", "test", "all")
SPLIT_SEED = 0x5EED_57AC  # part of the split's definition: changing it moves held-out particles
_MASK64 = (1 << 64) - 1


def _hash(positions: np.ndarray) -> np.ndarray:
    """SplitMix64 of (SPLIT_SEED, position): well-mixed uint64 keys, the same on every platform."""
    x = positions.astype(np.uint64) + np.uint64((SPLIT_SEED * 0x9E3779B97F4A7C15) & _MASK64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def split_positions(count: int, split: str, holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
                    path: str = NAME) -> np.ndarray:
    """The sorted stack positions of `split` in a stack of `count` particles (module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {NAME!r}; expected one of "
                         f"{', '.join(SPLITS)}")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
    if split == "all":
        return np.arange(count, dtype=np.int64)
    held = max(1, round(count * holdout_fraction / 2))
    if 2 * held >= count:
        raise DataError(path, f"{count} particles are too few to hold out {held} for validation "
                        f"and {held} for test and still train")
    order = np.argsort(_hash(np.arange(count)), kind="stable")
    chosen = {"validation": order[:held], "test": order[held:2 * held],
              "train": order[2 * held:]}[split]
    return np.sort(chosen).astype(np.int64)


def _add_image(chunk: dict) -> dict:
    """`image`: the observed chunk rotated back by its angles, or the chunk itself without them.

    The rotation op loses the static image shape, which callers read (the model's image size), so
    it is restored here."""
    observed = chunk["observed"]
    if "angle" not in chunk:
        return {**chunk, "image": observed}
    image = tf.ensure_shape(rotation.rotate(observed, -chunk["angle"]), observed.shape)
    if "defocus_angle" in chunk:  # the astigmatism of `image`, turned with it
        chunk = {**chunk, "defocus_angle": ctf_lib.rotated_defocus_angle(
            chunk["defocus_angle"], -chunk["angle"])}
    return {**chunk, "image": image}


def _fingerprint(path: str) -> str:
    info = os.stat(path)
    return f"{os.path.abspath(path)}|{info.st_size}|{info.st_mtime_ns}"


class ParticleStack:
    """The particles of a stack and/or its STAR/.cs file (`data_pipeline.particles`), checked
    once (bad input, NaN/Inf pixels included, raises `DataError` here); `dataset(split)` streams
    one split.

    With `stack` and `star`, the file's rows for that stack in its image order; with `star` alone
    every particle the file names, in its row order; with `stack` alone the bare stack."""

    def __init__(self, stack: str | None = None, star: str | None = None,
                 holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION):
        if not stack and not star:
            raise ValueError("dataset particle_stack needs stack=<.mrcs/.mrc> or star=<.star/.cs>")
        self.stack = os.fspath(stack) if stack else None
        self.star = os.fspath(star) if star else None
        self.holdout_fraction = holdout_fraction
        self.particles = (read_particles(self.star, self.stack) if self.star
                          else read_particles(self.stack))
        self.particles.check_finite()
        self.count = len(self.particles)
        self.height, self.width = self.particles.height, self.particles.width
        self.angles: np.ndarray | None = (  # float32 radians
            None if self.particles.psi is None
            else star_format.psi_degrees_to_angle(self.particles.psi).astype(np.float32))
        self.ctf = self.particles.ctf_values()  # name -> float32 [count], or None

    @property
    def path(self) -> str:
        """The file that names the particles (for messages)."""
        return self.star or self.stack

    def describe(self) -> str:
        """One line on what the metadata gave: angles or not, CTF or not (and why not)."""
        if not self.star:
            return f"{self.stack}: no STAR/.cs file: no angles, no CTF"
        angles = "in-plane angles" if self.angles is not None else "no in-plane angles"
        if self.ctf is None:
            return f"{self.star}: {angles}; no CTF (no defocus columns)"
        groups = len(self.particles.groups)
        ranges = ", ".join(
            f"{name.replace('_', ' ')} {values.min():g}" + (
                f"-{values.max():g}" if values.max() > values.min() else "")
            for name, values in self.ctf.items() if name != "defocus_angle")
        return (f"{self.star}: {angles}; CTF per particle, {groups} optics "
                f"group{'s' if groups > 1 else ''} ({ranges})")

    def _chunks(self, positions: np.ndarray, chunk_size: int) -> Iterator[dict]:
        with self.particles.open() as reader:
            for start in range(0, len(positions), chunk_size):
                chosen = positions[start:start + chunk_size]
                chunk = {"observed": reader.take(chosen)[..., np.newaxis], "index": chosen}
                if self.angles is not None:
                    chunk["angle"] = self.angles[chosen]
                if self.ctf is not None:
                    for name, values in self.ctf.items():
                        chunk[name] = values[chosen]
                yield chunk

    def dataset(self, split: str = "all", chunk_size: int = 256) -> tf.data.Dataset:
        """The unbatched dataset of `split`, streamed `chunk_size` images at a time."""
        positions = split_positions(self.count, split, self.holdout_fraction, self.path)
        image = tf.TensorSpec([None, self.height, self.width, 1], tf.float32)
        signature = {"observed": image, "index": tf.TensorSpec([None], tf.int64)}
        if self.angles is not None:
            signature["angle"] = tf.TensorSpec([None], tf.float32)
        if self.ctf is not None:
            signature.update({name: tf.TensorSpec([None], tf.float32)
                              for name in ctf_lib.CTF_FEATURES})
        chunks = tf.data.Dataset.from_generator(lambda: self._chunks(positions, chunk_size),
                                                output_signature=signature)
        chunks = chunks.map(_add_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return chunks.unbatch().apply(tf.data.experimental.assert_cardinality(len(positions)))

    def statistics_key(self) -> str:
        """A folder name for the training split's statistics: it changes when the stack, the
        angle file or the split does (paths, sizes, modification times, holdout fraction)."""
        parts = [*(_fingerprint(p) for p in self.particles.stacks),
                 _fingerprint(self.star) if self.star else "-",
                 f"{self.holdout_fraction!r}|{SPLIT_SEED}"]
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
        return f"{os.path.splitext(os.path.basename(self.path))[0]}-{digest}"


def particle_stack_dataset(stack: str | None, star: str | None = None, chunk_size: int = 256,
                           split: str = "all",
                           holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION) -> tf.data.Dataset:
    """The unbatched dataset of one split of a stack (`ParticleStack(...).dataset(split)`)."""
    return ParticleStack(stack, star, holdout_fraction).dataset(split, chunk_size)

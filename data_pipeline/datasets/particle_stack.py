"""A streaming `tf.data.Dataset` over any MRC particle stack (`.mrcs`/`.mrc`), optionally with the
file that gives each particle's in-plane angle: a RELION STAR file (`rlnAnglePsi`) or a cryoSPARC
`.cs` file (`alignments2D/pose`, see `formats.cryosparc`).

The stack is read through its memory map a chunk at a time, so it never has to fit in RAM. Elements:
`observed` float32 [H, W, 1] (raw units), `index` int64 (the particle's 0-based position in the
stack, whatever the split), with angles `angle` float32 (radians, via
`star.psi_degrees_to_angle`), with CTF values (`star.read_ctf`, `cryosparc.read_cs`; all of them in
`ParticleStack.ctf`) each particle's whole CTF, `ctf.CTF_FEATURES` float32 (`defocus_angle` is the
astigmatism angle of `image`, which is the particle's own turned by -angle when `image` is
derotated), and `image`:
- with angles, the canonical image `rotate(observed, -angle)`, as for every data set
  (`data_pipeline/angles.py`);
- without them there is no ground truth, so `image` is the observed particle itself (training on it
  reconstructs what it sees, and the statistics of `image` are those of the stack).

Splits: `validation` and `test` each hold half of `holdout_fraction` of the particles (at least one
each), `train` the rest, and `all` is the whole stack. Which particle goes where depends only on
its position in the stack and the stack's size (a fixed hash, `SPLIT_SEED`), never on the training
seed, so every run and every program sees the same held-out particles. Each split streams in stack
order.

Metadata rows are matched to images by `rlnImageName` (`<k>@<stack>`, 1-based) or by `blob/path`
and `blob/idx` (0-based), comparing file names; rows naming other stacks are ignored. A STAR file
without `rlnImageName` is matched by row order. Images with NaN/Inf pixels stop the iteration with a
`DataError` naming the stack and the particle.
"""
import dataclasses
import hashlib
import os
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from data_pipeline import ctf as ctf_lib
from data_pipeline import rotation
from data_pipeline.errors import DataError
from data_pipeline.formats import cryosparc
from data_pipeline.formats import star as star_format
from data_pipeline.formats.mrc import open_stack
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


@dataclasses.dataclass
class _MetadataRows:
    """A metadata file's rows: each row's stack position (-1: another stack; `count`: not an image
    of this stack), a description of a row for messages, and its per-row values."""

    positions: np.ndarray
    describe: Callable[[int], str]
    psi: np.ndarray | None  # rlnAnglePsi, degrees
    ctf: star_format.CtfColumns | None


def _rows_from_star(path: str, stack_name: str, count: int) -> _MetadataRows:
    blocks = star_format.read_star(path)
    table = star_format.particles_block(blocks, path)
    psi = None
    if star_format.ANGLE_PSI in table:
        try:
            psi = np.array(table.column(star_format.ANGLE_PSI), dtype=np.float64)
        except ValueError as e:
            raise DataError(path, f"rlnAnglePsi is not numeric ({e})") from None
    ctf = star_format.read_ctf(blocks, path)
    if psi is None and ctf is None:
        raise DataError(path, "no rlnAnglePsi column (the in-plane angles) and no CTF columns "
                        f"({', '.join(star_format.DEFOCUS_COLUMNS)})")
    if star_format.IMAGE_NAME not in table:
        if len(table) != count:
            raise DataError(path, f"{len(table)} particles for {count} images in {stack_name}")
        return _MetadataRows(np.arange(count), lambda row: f"row {row + 1}", psi, ctf)
    names = table.column(star_format.IMAGE_NAME)
    positions = np.full(len(names), -1, np.int64)
    for row, name in enumerate(names):
        number, at, file = name.partition("@")
        if at and os.path.basename(file) == stack_name:
            valid = number.isdigit() and int(number) >= 1
            positions[row] = int(number) - 1 if valid else count  # count: out of range
    return _MetadataRows(positions, lambda row: f"image {names[row]!r}", psi, ctf)


def _rows_from_cs(path: str, stack_name: str, count: int) -> _MetadataRows:
    particles = cryosparc.read_cs(path)
    if particles.psi_degrees is None and particles.ctf is None:
        raise DataError(path, f"no {cryosparc.POSE} field (the in-plane angles) and no ctf/* "
                        f"fields")
    ours = np.array([os.path.basename(s) == stack_name for s in particles.stacks], bool)
    mine = ours[particles.stack_ids]
    positions = np.where(mine, particles.indices, -1)
    return _MetadataRows(positions, lambda row: f"{cryosparc.INDEX} {particles.indices[row]}",
                         particles.psi_degrees, particles.ctf)


def _stack_rows(path: str, stack_path: str, count: int) -> tuple[np.ndarray, _MetadataRows]:
    """The metadata row of each image of the stack, in stack order, and the rows themselves."""
    stack_name = os.path.basename(stack_path)
    read = _rows_from_cs if cryosparc.is_cs_file(path) else _rows_from_star
    found = read(path, stack_name, count)
    positions, describe = found.positions, found.describe
    rows = np.flatnonzero(positions >= 0)
    beyond = rows[positions[rows] >= count]  # also unreadable numbers, set to count
    if len(beyond):
        raise DataError(path, f"particle row {beyond[0] + 1}: {describe(beyond[0])} is not one "
                        f"of the {count} images of {stack_name}")
    distinct = len(np.unique(positions[rows]))
    if len(rows) != count or distinct != count:
        raise DataError(path, f"{distinct} distinct rows name {stack_name}, expected one for "
                        f"each of its {count} images")
    if found.psi is not None:
        nonfinite = rows[~np.isfinite(found.psi[rows])]
        if len(nonfinite):
            raise DataError(path, f"particle row {nonfinite[0] + 1}: the in-plane angle is "
                            f"NaN/Inf")
    order = np.empty(count, np.int64)
    order[positions[rows]] = rows
    return order, found


def _stack_ctf(columns: star_format.CtfColumns, order: np.ndarray, stack_pixel_size: float,
               path: str) -> dict[str, np.ndarray]:
    """Each particle's CTF (`ctf.particle_ctf`) in stack order; the pixel size from the metadata,
    else from the stack's header."""
    pixel_size = columns.pixel_size or stack_pixel_size
    try:
        optics = ctf_lib.Optics(columns.voltage, columns.spherical_aberration,
                                columns.amplitude_contrast, pixel_size)
    except ValueError as e:
        raise DataError(path, str(e)) from None
    phase_shift = np.broadcast_to(columns.phase_shift, columns.defocus_u.shape)[order]
    return ctf_lib.particle_ctf(columns.defocus_u[order], columns.defocus_v[order],
                                columns.defocus_angle[order], optics, phase_shift)


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
    """A stack and its optional STAR/.cs file, checked once (bad input raises `DataError` here);
    `dataset(split)` streams one split."""

    def __init__(self, stack: str, star: str | None = None,
                 holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION):
        self.stack = os.fspath(stack)
        self.star = os.fspath(star) if star else None
        self.holdout_fraction = holdout_fraction
        with open_stack(self.stack) as opened:
            self.count, self.height, self.width = opened.shape
            stack_pixel_size = opened.pixel_size
        self.angles: np.ndarray | None = None  # float32 radians, stack order
        self.ctf: dict[str, np.ndarray] | None = None  # `ctf.CTF_FEATURES`, stack order
        if self.star:
            order, rows = _stack_rows(self.star, self.stack, self.count)
            if rows.psi is not None:
                self.angles = star_format.psi_degrees_to_angle(rows.psi[order]).astype(np.float32)
            if rows.ctf is not None:
                self.ctf = _stack_ctf(rows.ctf, order, stack_pixel_size, self.star)

    def describe(self) -> str:
        """One line on what the metadata gave: angles or not, CTF or not (and why not)."""
        if not self.star:
            return f"{self.stack}: no STAR/.cs file: no angles, no CTF"
        angles = "in-plane angles" if self.angles is not None else "no in-plane angles"
        if self.ctf is None:
            return f"{self.star}: {angles}; no CTF (no defocus columns)"
        c = self.ctf
        return (f"{self.star}: {angles}; CTF per particle (defocus "
                f"{c['defocus_u'].min():.0f}-{c['defocus_u'].max():.0f} Å, "
                f"{c['voltage'][0]:g} kV, Cs {c['spherical_aberration'][0]:g} mm, amplitude "
                f"contrast {c['amplitude_contrast'][0]:g}, pixel {c['pixel_size'][0]:g} Å)")

    def _chunks(self, positions: np.ndarray, chunk_size: int) -> Iterator[dict]:
        with open_stack(self.stack) as stack:
            for start in range(0, len(positions), chunk_size):
                chosen = positions[start:start + chunk_size]
                observed = stack.take(chosen)
                finite = np.isfinite(observed).reshape(len(observed), -1).all(axis=1)
                if not finite.all():
                    bad = chosen[np.flatnonzero(~finite)[0]]
                    raise DataError(self.stack, f"particle {bad} has NaN/Inf pixels")
                chunk = {"observed": observed[..., np.newaxis], "index": chosen}
                if self.angles is not None:
                    chunk["angle"] = self.angles[chosen]
                if self.ctf is not None:
                    for name in ctf_lib.CTF_FEATURES:
                        chunk[name] = self.ctf[name][chosen]
                yield chunk

    def dataset(self, split: str = "all", chunk_size: int = 256) -> tf.data.Dataset:
        """The unbatched dataset of `split`, streamed `chunk_size` images at a time."""
        positions = split_positions(self.count, split, self.holdout_fraction, self.stack)
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
        parts = [_fingerprint(self.stack), _fingerprint(self.star) if self.star else "-",
                 f"{self.holdout_fraction!r}|{SPLIT_SEED}"]
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
        return f"{os.path.splitext(os.path.basename(self.stack))[0]}-{digest}"


def particle_stack_dataset(stack: str, star: str | None = None, chunk_size: int = 256,
                           split: str = "all",
                           holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION) -> tf.data.Dataset:
    """The unbatched dataset of one split of a stack (`ParticleStack(...).dataset(split)`)."""
    return ParticleStack(stack, star, holdout_fraction).dataset(split, chunk_size)

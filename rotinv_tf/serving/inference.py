"""Stream a particle stack through an exported SavedModel: canonical images and in-plane angles.

Input is an MRC stack (any name not ending in `.star` or `.cs`), a RELION STAR file whose particle
table's `rlnImageName` entries (`index@stack.mrcs`, 1-based, relative to the STAR file's folder) may
point into several stacks, or a cryoSPARC `.cs` particle file (`blob/path`, `blob/idx`; stacks found
by the rule of `data_pipeline.formats.cryosparc`). Particles are read through memory maps,
`batch_size` at a time, so stacks larger than RAM work.

Outputs:
- a float32 MRC stack of the canonical images (raw pixel units), with the pixel size of the input;
- a STAR file with one row per particle: `rlnImageName` = `000001@canonical.mrcs` (1-based,
  6 digits, the stack path relative to the STAR file's folder) and `rlnAnglePsi`. For a STAR input
  every other block, row and column is carried over; for an MRC or `.cs` input a RELION 3.1
  `data_optics` block (pixel size, image size) and a `data_particles` block are written (rows in
  the `.cs` file's order).

Angles: `data_pipeline/angles.py`; `rlnAnglePsi` is the model's angle in degrees, wrapped to
(-180, 180] (`star.angle_to_psi_degrees`, as the simulator writes its true angles).

CTF: a model trained with a CTF correction (`rotinv_tf.models.autoencoder`) takes each particle's
CTF, read from the input (a STAR file's rlnDefocusU/V/Angle, rlnPhaseShift and optics, a `.cs`
file's `ctf/*` fields, written out in RELION's columns; the pixel size is the resampled one); a
comment line at the top of the STAR file names the correction (with `model` the canonical images
are CTF-free). Refinement then compares like with like (`_refinement_pair`).

Refinement (on unless `refine=False`): each network angle is refined by a local search
(`rotinv_tf.pose.refine`, ±`REFINE_WINDOW_DEGREES` in `REFINE_STEP_DEGREES` steps) against a
reference image per particle: for a learned frame the template of the particle's class (the
SavedModel's `reference` output, the mean of all the class's particles), otherwise the particle's
own canonical image, the decoder output. A decoded image is a worse reference than that mean:
refining a learned frame's angle against it cost accuracy (issue 15, 1,000 particles: psi MAE
0.49° -> 0.97° at SNR 1, 1.67° -> 4.15° at SNR 0.1), against the template it does not (0.49° ->
0.51°, benchmarks/results/poses.md), while a supervised network's angle gains from its decoded
image (3.76° -> 1.14°). Exports from before the `reference` output are refined against their
decoded images. With `refine_max_shift` > 0 also integer shifts, written as
`rlnOriginXAngst/YAngst` (RELION: the particle sits at the box centre minus the origin, as the
simulator writes them). A comment line at the top of the STAR file says whether and how the
angles were refined.

Resampling (`resample=True`, for images whose size differs from the model's): Fourier cropping
(downsampling) or zero-padding (upsampling) of the centred 2D spectrum, which keeps the band-limited
content and the mean pixel value; the pixel size becomes `old × old_size / new_size`.

Both outputs are written under temporary names and renamed only when every particle went through,
so a failed run (bad input, NaN/Inf pixels, an error in the model) leaves no output behind.
"""
import dataclasses
import os
import time
from typing import Callable

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.formats import cryosparc
from data_pipeline.formats.mrc import MrcStack, StackWriter, open_stack
from data_pipeline import ctf
from data_pipeline.formats.star import (ANGLE_PSI, DEFOCUS_COLUMNS, IMAGE_NAME, IMAGE_PIXEL_SIZE,
                                        IMAGE_SIZE, OPTICS_GROUP, ORIGIN_COLUMNS, CtfColumns,
                                        StarBlock, StarWriter, angle_to_psi_degrees, image_name,
                                        optics_block, particles_block, read_ctf, read_star)
from rotinv_tf.config import describe
from rotinv_tf.pose.refine import RefinedPoses, refine_poses
from rotinv_tf.serving.saved_model import load_serving_model

_MAX_LISTED = 20  # bad particle numbers listed in an error message
_MAX_OPEN = 16  # input stacks memory-mapped at the same time
REFINE_WINDOW_DEGREES = 10.0
REFINE_STEP_DEGREES = 0.5


@dataclasses.dataclass(frozen=True)
class CanonicalizeSummary:
    """What a run did: particle count, streaming time, outputs and their pixel size."""

    particles: int
    seconds: float
    output: str
    star: str
    pixel_size: float
    training: str  # the model's training data and objective (`rotinv_tf.config.describe`)

    @property
    def particles_per_second(self) -> float:
        return self.particles / self.seconds if self.seconds > 0 else float("inf")


def fourier_resample(images: np.ndarray, size: int) -> np.ndarray:
    """Images [k, h, w] -> [k, size, size] by cropping or zero-padding the centred spectrum.

    The zero frequency stays at the centre and values are rescaled so the mean pixel value is kept.
    """
    k, h, w = images.shape
    if (h, w) == (size, size):
        return images.astype(np.float32, copy=False)
    spectrum = np.fft.fftshift(np.fft.fft2(images.astype(np.float64)), axes=(1, 2))
    out = np.zeros((k, size, size), np.complex128)
    rows, cols = min(h, size), min(w, size)
    src_r, src_c = h // 2 - rows // 2, w // 2 - cols // 2
    dst_r, dst_c = size // 2 - rows // 2, size // 2 - cols // 2
    out[:, dst_r:dst_r + rows, dst_c:dst_c + cols] = \
        spectrum[:, src_r:src_r + rows, src_c:src_c + cols]
    resampled = np.fft.ifft2(np.fft.ifftshift(out, axes=(1, 2))).real * (size * size / (h * w))
    return resampled.astype(np.float32)


class _Particles:
    """The input particles in order: which stack and which image of it each one is.

    Every stack is checked when the input is opened, but at most `_MAX_OPEN` stay memory-mapped at
    a time, so a STAR file may reference thousands of stacks.
    """

    def __init__(self, path: str):
        self.path = path
        self.stack_paths: list[str] = []
        self.blocks: dict[str, StarBlock] | None = None
        self._cs_ctf: CtfColumns | None = None  # a .cs file's CTF fields
        self._open: dict[int, MrcStack] = {}
        shapes = set()
        if path.lower().endswith(".star"):
            self._from_star(path, shapes)
        elif cryosparc.is_cs_file(path):
            self._from_cs(path, shapes)
        else:
            n, _, _, self.pixel_size = self._check_stack(path, shapes)
            self.count = n  # one stack read in order: nothing kept per particle
            self.stack_ids = self.indices = None
        if len(shapes) > 1:
            raise DataError(path, f"the stacks hold images of different sizes: "
                            f"{', '.join(f'{h}x{w}' for h, w in sorted(shapes))}")
        (self.height, self.width), = shapes

    def _check_stack(self, stack_path: str, shapes: set) -> tuple[int, int, int, float]:
        """Validates a stack (DataError if bad) -> (n, h, w, pixel size); records its path."""
        with open_stack(stack_path) as stack:
            n, h, w = stack.shape
            pixel_size = stack.pixel_size
        self.stack_paths.append(stack_path)
        shapes.add((h, w))
        return n, h, w, pixel_size

    def _from_star(self, path: str, shapes: set) -> None:
        self.blocks = read_star(path)
        table = particles_block(self.blocks, path)
        if IMAGE_NAME not in table:
            raise DataError(path, f"the particle table has no {IMAGE_NAME} column")
        if len(table) == 0:
            raise DataError(path, "the particle table has no rows")
        folder = os.path.dirname(os.path.abspath(path))
        names = table.column(IMAGE_NAME)
        stack_paths, indices = [], []
        for row, name in enumerate(names, start=1):
            index, _, stack_path = name.partition("@")
            if not stack_path or not index.isdigit() or int(index) < 1:
                raise DataError(path, f"particle {row}: {IMAGE_NAME} {name!r} is not index@stack")
            stack_paths.append(os.path.normpath(os.path.join(folder, stack_path)))
            indices.append(int(index) - 1)
        self._add_rows(path, stack_paths, indices, shapes,
                       lambda row: f"{IMAGE_NAME} {names[row]!r}")

    def _from_cs(self, path: str, shapes: set) -> None:
        particles = cryosparc.read_cs(path)
        resolved = [cryosparc.resolve_stack(path, stack) for stack in particles.stacks]
        self._add_rows(path, [resolved[i] for i in particles.stack_ids], particles.indices,
                       shapes, lambda row: f"{cryosparc.INDEX} {particles.indices[row]}")
        self._cs_ctf = particles.ctf

    def _add_rows(self, path: str, stack_paths: list[str], indices, shapes: set,
                  describe: Callable[[int], str]) -> None:
        """Checks each particle's stack and 0-based index (`describe(row)` names a bad one)."""
        known: dict[str, tuple[int, int]] = {}  # stack path -> (stack id, number of images)
        stack_ids = np.empty(len(indices), np.int64)
        for row, (stack_path, index) in enumerate(zip(stack_paths, indices)):
            if stack_path not in known:
                n, _, _, pixel_size = self._check_stack(stack_path, shapes)
                if not known:
                    self.pixel_size = pixel_size  # the output takes the first stack's
                known[stack_path] = (len(known), n)
            stack_ids[row], n = known[stack_path]
            if index >= n:
                raise DataError(path, f"particle {row + 1}: {describe(row)} is beyond the "
                                f"{n} images of {stack_path}")
        self.stack_ids = stack_ids
        self.indices = np.array(indices, np.int64)
        self.count = len(indices)

    def __len__(self) -> int:
        return self.count

    def _stack(self, stack_id: int) -> MrcStack:
        if stack_id not in self._open:
            if len(self._open) >= _MAX_OPEN:
                oldest = next(iter(self._open))
                self._open.pop(oldest).close()
            self._open[stack_id] = open_stack(self.stack_paths[stack_id])
        return self._open[stack_id]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Particles start..stop-1 as float32 [k, h, w], reading contiguous runs in one go."""
        if self.indices is None:
            return self._stack(0).read(start, stop)
        ids, idx = self.stack_ids[start:stop], self.indices[start:stop]
        breaks = np.flatnonzero((np.diff(ids) != 0) | (np.diff(idx) != 1)) + 1
        runs = zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(idx)]]))
        return np.concatenate([self._stack(ids[a]).read(idx[a], idx[a] + (b - a))
                               for a, b in runs])

    def ctf(self) -> CtfColumns | None:
        """Each particle's CTF, when the input has one (a STAR file's columns are checked only
        here, so a model without a CTF correction never needs them to be valid)."""
        if self.blocks is not None:
            return read_ctf(self.blocks, self.path)
        return self._cs_ctf

    def output_star(self, size: int, pixel_size: float, columns: list[str]) -> "_OutputStar":
        """The output STAR file's layout: the input's blocks (its particle table gaining
        `columns`), or fresh RELION 3.1 optics + particles blocks (with a .cs file's CTF in
        RELION's columns)."""
        if self.blocks is None:
            cs_ctf = self._cs_ctf
            if cs_ctf is None:
                optics = optics_block(pixel_size, size)
                base = [IMAGE_NAME, ANGLE_PSI, OPTICS_GROUP]
            else:  # a .cs file's CTF, in RELION's columns
                optics = optics_block(pixel_size, size, cs_ctf.voltage,
                                      cs_ctf.spherical_aberration, cs_ctf.amplitude_contrast)
                base = [IMAGE_NAME, ANGLE_PSI, OPTICS_GROUP, *DEFOCUS_COLUMNS]
            table = base + [c for c in columns if c not in base]
            pad = [""] * (len(table) - len(base))

            def fresh_row(row: int) -> list[str]:
                defocus = [] if cs_ctf is None else [
                    f"{values[row]:.2f}" for values in (cs_ctf.defocus_u, cs_ctf.defocus_v,
                                                        cs_ctf.defocus_angle)]
                return ["", "", "1"] + defocus + pad

            return _OutputStar({"optics": optics}, "particles", table, {}, fresh_row)
        source = particles_block(self.blocks, self.path)
        blocks = {name: block if block is source else
                  dataclasses.replace(block, columns=list(block.columns),
                                      rows=[list(row) for row in block.rows])
                  for name, block in self.blocks.items()}
        optics = blocks.get("optics")
        if size != self.height and optics is not None and optics.loop:
            # Resampled: every optics group's images change size, and their pixels with them.
            if IMAGE_SIZE in optics:
                optics.set_column(IMAGE_SIZE, [size] * len(optics))
            if IMAGE_PIXEL_SIZE in optics:
                optics.set_column(IMAGE_PIXEL_SIZE, [
                    f"{self._number(p, IMAGE_PIXEL_SIZE) * self.height / size:.6f}"
                    for p in optics.column(IMAGE_PIXEL_SIZE)])
        names = list(blocks)
        at = next(i for i, name in enumerate(names) if blocks[name] is source)
        table = source.columns + [c for c in columns if c not in source.columns]
        pad = [""] * (len(table) - len(source.columns))
        return _OutputStar({n: blocks[n] for n in names[:at]}, names[at], table,
                           {n: blocks[n] for n in names[at + 1:]},
                           lambda row: source.rows[row] + pad)

    def _number(self, value: str, column: str) -> float:
        try:
            return float(value)
        except ValueError:
            raise DataError(self.path, f"{column} {value!r} is not a number") from None

    def close(self) -> None:
        for stack in self._open.values():
            stack.close()
        self._open.clear()


@dataclasses.dataclass(frozen=True)
class _OutputStar:
    """The output STAR file around its particle table, whose rows are written batch by batch so
    that a million particles' rows are never held in memory."""

    before: dict[str, StarBlock]  # blocks written before the particle table
    table: str  # its block name
    columns: list[str]
    after: dict[str, StarBlock]  # blocks written after it
    base_row: Callable[[int], list[str]]  # a fresh copy of row i before the new values

    def rows(self, start: int, values: dict[str, list[str]]) -> list[list[str]]:
        """Rows start, start+1, ... with `values` (column -> one value per row) filled in."""
        at = [self.columns.index(column) for column in values]
        rows = []
        for i, row_values in enumerate(zip(*values.values())):
            row = self.base_row(start + i)
            for j, value in zip(at, row_values):
                row[j] = value
            rows.append(row)
        return rows


def _nonfinite_message(bad: list[int]) -> str:
    listed = ", ".join(str(i) for i in bad[:_MAX_LISTED])
    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    noun = "particle" if len(bad) == 1 else "particles"
    verb = "contains" if len(bad) == 1 else "contain"
    return f"{noun} {listed}{more} (1-based) {verb} NaN/Inf pixel values"


def canonicalize_particles(saved_model: str, input_path: str, output: str, star: str,
                           batch_size: int = 256, resample: bool = False,
                           progress: Callable[[int, int], None] | None = None,
                           refine: bool = True, refine_max_shift: int = 0
                           ) -> CanonicalizeSummary:
    """Runs every particle of `input_path` through the SavedModel; writes `output` and `star`.

    `refine`: refine the network's angles (module docstring), searching shifts of up to
    `refine_max_shift` pixels too. `progress(done, total)` is
    called after each batch. Raises `DataError` for bad input (nothing is written then). The
    summary's time covers the streaming (read, model, refinement, write), not loading.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    output, star = os.path.abspath(output), os.path.abspath(star)
    if output == star:
        raise DataError(output, "the canonical stack and the STAR file need different paths")
    model = load_serving_model(saved_model)
    particles = _Particles(input_path)
    try:
        inputs = {os.path.abspath(p) for p in [input_path, *particles.stack_paths]}
        for path in (output, star):
            if path in inputs:
                raise DataError(path, "the output would overwrite an input file")
        return _stream(model, particles, output, star, batch_size, resample, progress,
                       refine_max_shift if refine else None)
    finally:
        particles.close()


def _particle_ctf(model, particles: _Particles) -> dict[str, np.ndarray] | None:
    """Each input particle's CTF (`ctf.CTF_FEATURES`, at the pixel size of the images the model
    sees, resampled) when the model corrects the CTF, else None."""
    if model.ctf_correction == "none":
        return None
    c = particles.ctf()
    if c is None:
        raise DataError(particles.path, f"the model corrects the CTF ({model.ctf_correction}) "
                        f"but the input has no CTF values ({', '.join(DEFOCUS_COLUMNS)} in a "
                        f"STAR file, ctf/* in a .cs file)")
    pixel_size = (c.pixel_size or particles.pixel_size) * particles.height / model.image_size
    try:
        optics = ctf.Optics(c.voltage, c.spherical_aberration, c.amplitude_contrast, pixel_size)
    except ValueError as e:
        raise DataError(particles.path, str(e)) from None
    return ctf.particle_ctf(c.defocus_u, c.defocus_v, c.defocus_angle, optics, c.phase_shift)


def _ctf_comment(model) -> str:
    """The STAR file's comment line on the CTF: how the model corrected it."""
    meaning = {"model": "canonical images are CTF-free (the CTF was in the model's forward "
                        "model)",
               "phase_flip": "canonical images are phase-flipped (their CTF amplitude remains)",
               "none": "the CTF was not corrected"}
    return (f"rotinv_tf: CTF correction {model.ctf_correction}: "
            f"{meaning[model.ctf_correction]}")


def _refine_comment(max_shift: int | None, served: tuple[str, ...]) -> str:
    """The STAR file's comment line: how `rlnAnglePsi` was made (`served`: the model's outputs)."""
    if max_shift is None:
        return "rotinv_tf: rlnAnglePsi is the network's angle, not refined (--refine=false)"
    shifts = (f" and integer shifts of up to {max_shift} px (rlnOriginXAngst/YAngst)"
              if max_shift else "")
    reference = ("its class template (the learned frame's mean of its particles)"
                 if "reference" in served else "each particle's canonical image")
    return (f"rotinv_tf: rlnAnglePsi is the network's angle refined within "
            f"+-{REFINE_WINDOW_DEGREES:g} deg in {REFINE_STEP_DEGREES:g} deg steps{shifts} "
            f"against {reference} (--refine)")


def _training_comment(model) -> str:
    """The STAR file's comment line on how the model was trained (its saved config)."""
    if not model.config:
        return "rotinv_tf: the model's training config was not recorded"
    return f"rotinv_tf: model {describe(model.config)}"


def _frame_comment(metadata: dict) -> str:
    """The STAR file's comment line on the model: which frame its angles are in."""
    frame = metadata.get("frame")
    meaning = {"learned": "learned from the particles without angles (an arbitrary rotation of "
                          "any other frame)",
               "supervised": "defined by the canonical images or angles it was trained with"}
    return (f"rotinv_tf: model {metadata.get('model_class', 'unknown')}, frame "
            f"{meaning.get(frame, 'not recorded')}")


def _refinement_pair(correction: str, batch_ctf: dict | None, images: np.ndarray,
                     result: dict) -> tuple[np.ndarray, np.ndarray]:
    """(particles, references) that refinement compares, alike in their CTF. A learned frame's
    reference is its class template (`reference`), an average of particles as the frame sees
    them, phase-flipped under any CTF correction: the particles are flipped too. Otherwise the
    canonical images: with `model` the CTF-free ones through each particle's CTF (its
    astigmatism turned into the canonical frame by the network's angle), with `phase_flip` the
    particles flipped."""
    reference = result.get("reference", result["canonical_image"])
    if correction == "none":
        return images, reference
    if correction == "phase_flip" or "reference" in result:
        flipped = ctf.apply_ctf(images.astype(np.float32), batch_ctf, "phase_flip", pad_factor=2)
        return flipped.numpy(), reference
    turned = {**batch_ctf, "defocus_angle": ctf.rotated_defocus_angle(
        batch_ctf["defocus_angle"], -result["angle"])}
    modulated = ctf.apply_ctf(reference, turned, "model", pad_factor=2)
    return images, modulated.numpy()


def _refine(particles: np.ndarray, references: np.ndarray, angles: np.ndarray,
            batch_size: int, max_shift: int) -> RefinedPoses:
    """`refine_poses` of one batch, a short last batch padded to `batch_size` (its last particle
    repeated) so that a stream traces the compiled search once."""
    count = len(particles)
    padding = batch_size - count

    def padded(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        return np.concatenate([values, np.repeat(values[-1:], padding, axis=0)])

    refined = refine_poses(padded(particles), padded(references), padded(angles),
                           REFINE_WINDOW_DEGREES, REFINE_STEP_DEGREES, max_shift)
    return RefinedPoses(refined.angles[:count], refined.shifts[:count], refined.scores[:count])


def _stream(model, particles: _Particles, output: str, star: str, batch_size: int,
            resample: bool, progress: Callable[[int, int], None] | None,
            refine_max_shift: int | None) -> CanonicalizeSummary:
    """`refine_max_shift`: None = no refinement."""
    size = model.image_size
    h, w = particles.height, particles.width
    if (h, w) != (size, size):
        if not resample:
            raise DataError(particles.path, f"particles are {h}x{w} pixels but the model takes "
                            f"{size}x{size}; pass --resample to Fourier-resample them")
        if h != w:
            raise DataError(particles.path, f"cannot resample non-square {h}x{w} particles")
    if refine_max_shift is not None and not 0 <= refine_max_shift < size // 2:
        raise DataError(model.path, f"refine_max_shift {refine_max_shift} must be in "
                        f"[0, {size // 2}) for the model's {size}x{size} images")
    pixel_size = particles.pixel_size * h / size
    particle_ctf = _particle_ctf(model, particles)
    n = len(particles)
    columns = [IMAGE_NAME, ANGLE_PSI, *(ORIGIN_COLUMNS if refine_max_shift else ())]
    layout = particles.output_star(size, pixel_size, columns)
    stack_name = os.path.relpath(output, os.path.dirname(star))
    training = _training_comment(model)
    comments = [_frame_comment(model.metadata), training, _ctf_comment(model),
                _refine_comment(refine_max_shift, model.outputs)]
    bad: list[int] = []
    start_time = time.perf_counter()
    with StarWriter(star, comments) as star_writer, \
            StackWriter(output, n, size, size, pixel_size) as writer:
        for name, block in layout.before.items():
            star_writer.write_block(name, block)
        star_writer.begin_loop(layout.table, layout.columns)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            images = particles.read(start, stop)
            finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
            bad += [start + 1 + int(i) for i in np.flatnonzero(~finite)]
            if not bad:  # after the first bad particle, only scan for the others
                images = fourier_resample(images, size)
                batch_ctf = None if particle_ctf is None else {
                    name: values[start:stop] for name, values in particle_ctf.items()}
                result = model.predict(images, batch_ctf)
                writer.write(start, result["canonical_image"])
                angles = np.asarray(result["angle"], np.float64)
                values = {IMAGE_NAME: [image_name(i, stack_name)
                                       for i in range(start + 1, stop + 1)]}
                if refine_max_shift is not None:
                    refined = _refine(*_refinement_pair(model.ctf_correction, batch_ctf,
                                                        images, result),
                                      result["angle"], batch_size, refine_max_shift)
                    angles = np.asarray(refined.angles, np.float64)
                    if refine_max_shift:  # pixels, x then y (down the rows) -> RELION origins
                        for column, shift in zip(ORIGIN_COLUMNS, np.asarray(refined.shifts).T):
                            values[column] = [f"{-v * pixel_size:.6f}" for v in shift]
                values[ANGLE_PSI] = [f"{p:.6f}" for p in angle_to_psi_degrees(angles)]
                star_writer.write_rows(layout.rows(start, values))
            if progress is not None:
                progress(stop, n)
        if bad:
            raise DataError(particles.path, _nonfinite_message(bad))
        for name, block in layout.after.items():
            star_writer.write_block(name, block)
    return CanonicalizeSummary(particles=n, seconds=time.perf_counter() - start_time,
                               output=output, star=star, pixel_size=pixel_size,
                               training=training.removeprefix("rotinv_tf: "))

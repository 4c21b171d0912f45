"""Stream particles through an exported SavedModel: canonical images and in-plane angles.

Input is whatever `data_pipeline.particles` reads: an MRC stack, a RELION STAR file (any
version; stacks named from the working directory as RELION does, optics groups) or a cryoSPARC
`.cs` file. Particles are read through memory maps, `batch_size` at a time, so stacks larger than
RAM work. Everything is checked before the first particle goes through: sizes, the optics the
output needs (`optics` fills in what the input lacks), finite pixels.

Outputs:
- a float32 MRC stack of the canonical images (raw pixel units), its header's pixel size the
  output's (the first optics group's, after resampling);
- a STAR file as RELION 3.1+ reads it (`data_pipeline.particle_star`: a complete optics table,
  every input row and column carried over), one row per particle, with `rlnImageName` =
  `000001@Canonical/job003/canonical.mrcs` (1-based, 6 digits, the stack as RELION finds it:
  relative to the working directory, a project's root, when below it, else absolute;
  `particle_star.relion_path`) and `rlnAnglePsi`.

Angles: `data_pipeline/angles.py`; `rlnAnglePsi` is the model's angle in degrees, wrapped to
(-180, 180] (`star.angle_to_psi_degrees`, as the simulator writes its true angles).

CTF: a model trained with a CTF correction (`rotinv_tf.models.ctf_corrections`) takes each
particle's defocus, read from the input (a STAR file's rlnDefocusU/V/Angle and optics, a `.cs`
file's `ctf/*` fields, written out in RELION's columns); a comment line at the top of the STAR
file names the correction (with `model` the canonical images are CTF-free). Refinement then
compares like with like (the correction's `refinement_pair`).

Refinement (on unless `refine=False`): each network angle is refined by a local search
(`rotinv_tf.pose.refine`, ±`refine_window_degrees` in `refine_step_degrees` steps) against a
reference image per particle: for a learned frame the template of the particle's class (the
SavedModel's `reference` output, the mean of all the class's particles), otherwise the particle's
own canonical image, the decoder output. A decoded image is a worse reference than that mean:
refining a learned frame's angle against it cost accuracy (issue 15, 1,000 particles: psi MAE
0.49° -> 0.97° at SNR 1, 1.67° -> 4.15° at SNR 0.1), against the template it does not (0.49° ->
0.51°, benchmarks/results/poses.md), while a supervised network's angle gains from its decoded
image (3.76° -> 1.14°). Exports from before the `reference` output are refined against their
decoded images. A model that serves offsets (a learned frame with an offset search,
`template_frame.OFFSET`) has each particle re-centred by its offset before refinement; with
`refine_max_shift` > 0 refinement also searches shifts (sub-pixel) about it. The offset (the
served one plus refinement's) is written as `rlnOriginXAngst/YAngst` in RELION's convention
(`star.relion_origins`: the particle sits at the box centre minus the origin), for the input's
box. A comment line at the top of the STAR file says whether and how the angles were refined.

Resampling (`resample=True`, for images whose size differs from the model's): Fourier cropping
(downsampling) or zero-padding (upsampling) of the centred 2D spectrum, which keeps the band-limited
content and the mean pixel value; the pixel size becomes `old × old_size / new_size`.

Classes (a model that serves a learned frame's grades, `template_frame.CLASS_OUTPUTS`): the STAR
file also gets each particle's class and grades, and beside it go the class averages and a model
STAR, as RELION's 2D classification writes them (`rotinv_tf.serving.classes`). `select_classes`
keeps only those classes' particles in every output. Models without the grades (supervised ones,
exports from before them) write none of this.

All outputs are written under temporary names and renamed only when every particle went through,
so a failed run (bad input, NaN/Inf pixels, an error in the model) leaves no output behind.
"""
import contextlib
import dataclasses
import os
import tempfile
import time
from typing import Callable, Sequence

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.formats.mrc import StackWriter, open_stack
from data_pipeline.outputs import check_output_file
from data_pipeline.formats.star import (ANGLE_PSI, DEFOCUS_COLUMNS, IMAGE_NAME, ORIGIN_COLUMNS,
                                        StarWriter, angle_to_psi_degrees, image_name,
                                        relion_origins)
from data_pipeline.particle_star import output_star, relion_path
from data_pipeline.particles import Particles, read_particles
from data_pipeline.settings import raise_problems
from rotinv_tf.config import describe
from rotinv_tf.models.ctf_corrections import CORRECTIONS
from rotinv_tf.models.frames import FRAMES
from rotinv_tf.pose.refine import RefinedPoses, refine_poses
from rotinv_tf.pose.template_frame import CLASS_OUTPUTS, OFFSET
from rotinv_tf.serving.overview import Overview, overview_path
from rotinv_tf.serving.classes import (COLUMNS as CLASS_COLUMNS, ClassSummary, class_paths,
                                       recentred_particles)
from rotinv_tf.serving.saved_model import load_serving_model

# The refinement's defaults (canonicalize's --refine_window_degrees, --refine_step_degrees).
REFINE_WINDOW_DEGREES = 10.0
REFINE_STEP_DEGREES = 0.5


@dataclasses.dataclass(frozen=True)
class Refinement:
    """How each angle is refined (module docstring): ±`window_degrees` in `step_degrees` steps,
    and shifts of up to `max_shift` pixels (sub-pixel; 0: none)."""

    window_degrees: float
    step_degrees: float
    max_shift: int

    def problems(self) -> list[str]:
        """What `refine_poses` would refuse whatever the box (`max_shift` is checked against the
        model's box, once it is loaded)."""
        if not (0 < self.step_degrees <= 90 and self.window_degrees >= 0):
            return [f"refinement needs 0 < refine_step_degrees <= 90 and refine_window_degrees "
                    f">= 0, got {self.step_degrees}, {self.window_degrees}"]
        return []


@dataclasses.dataclass(frozen=True)
class CanonicalizeSummary:
    """What a run did: particle count, streaming time, outputs and their pixel size."""

    particles: int
    seconds: float
    output: str
    star: str
    pixel_size: float
    training: str  # the model's training data and objective (`rotinv_tf.config.describe`)
    notes: tuple[str, ...] = ()  # how the input was read (`Particles.notes`)
    classes: str | None = None  # the class averages stack, for a model with classes
    model_star: str | None = None  # the model STAR beside them
    particles_star: str | None = None  # the same rows naming the input's particles
    overview: str | None = None  # the PNG a user looks at (`rotinv_tf.serving.overview`)

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


def canonicalize_particles(saved_model: str, input_path: str, output: str, star: str,
                           batch_size: int = 256, resample: bool = False,
                           progress: Callable[[int, int], None] | None = None,
                           refine: bool = True, refine_max_shift: int = 0,
                           refine_window_degrees: float = REFINE_WINDOW_DEGREES,
                           refine_step_degrees: float = REFINE_STEP_DEGREES,
                           optics: dict[str, float | None] | None = None,
                           select_classes: Sequence[int] | None = None
                           ) -> CanonicalizeSummary:
    """Runs every particle of `input_path` through the SavedModel; writes `output` and `star`
    (and, for a model with classes, the class averages and model STAR beside `star`).

    `refine`: refine the network's angles (module docstring) within ±`refine_window_degrees` in
    `refine_step_degrees` steps, searching shifts of up to `refine_max_shift` pixels too.
    `optics` (`particles.OPTICS_NAMES` -> value) gives every optics group the values the input
    lacks or gets wrong. `select_classes`: the 1-based classes whose particles are written
    (None: all), for a model with classes. `progress(done, total)` is called after each batch.
    Raises ValueError for settings out of range, `DataError` for bad input, checked before any
    particle is processed (nothing is written then). The summary's time covers the streaming
    (read, model, refinement, write), not loading and checking.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    refinement = (Refinement(refine_window_degrees, refine_step_degrees, refine_max_shift)
                  if refine else None)
    if refinement is not None:
        raise_problems(refinement.problems())
    output, star = os.path.abspath(output), os.path.abspath(star)
    outputs = (output, star, *class_paths(star), overview_path(star))
    if len(set(outputs)) < len(outputs):
        raise DataError(output, "the canonical stack and the STAR file (and the class files "
                        "beside it) need different paths")
    for path in outputs:  # before the model loads
        check_output_file(path)
    model = load_serving_model(saved_model)
    if select_classes is not None and not has_classes(model):
        raise DataError(model.path, f"the model serves no classes ({', '.join(CLASS_OUTPUTS)}"
                        f"; a learned frame exported since issue 30 does): --select_classes "
                        f"needs them")
    particles = read_particles(input_path).with_optics(**(optics or {}))
    inputs = {os.path.abspath(p) for p in [input_path, *particles.stacks]}
    for path in outputs:
        if path in inputs:
            raise DataError(path, "the output would overwrite an input file")
    return _stream(model, particles, output, star, batch_size, resample, progress,
                   refinement, select_classes)


def has_classes(model) -> bool:
    """Whether a loaded SavedModel serves a learned frame's classes and grades."""
    return all(name in model.outputs for name in CLASS_OUTPUTS)


def _particle_ctf(model, particles: Particles, pixel_scale: float
                  ) -> dict[str, np.ndarray] | None:
    """Each particle's CTF (`Particles.ctf_values`, pixels scaled by resampling) when the model
    corrects the CTF, None otherwise."""
    if model.ctf_correction == "none":
        return None
    values = particles.ctf_values(pixel_scale)
    if values is None:
        raise DataError(particles.path, f"the model corrects the CTF ({model.ctf_correction}) "
                        f"but the input has no CTF values ({', '.join(DEFOCUS_COLUMNS)} in a "
                        f"STAR file, ctf/* in a .cs file)")
    return values


def _ctf_comment(model) -> str:
    """The STAR file's comment line on the CTF: how the model corrected it."""
    return (f"rotinv_tf: CTF correction {model.ctf_correction}: "
            f"{CORRECTIONS[model.ctf_correction].served}")


def _refine_comment(refinement: Refinement | None, served: tuple[str, ...]) -> str:
    """The STAR file's comment line: what made `rlnAnglePsi` (`served`: the model's outputs; a
    learned frame's angle is its EM templates', not the network's, which it serves apart)."""
    source = ("the learned frame's angle (the posterior of its EM templates; the network's own "
              "is served as network_angle)" if "reference" in served
              else "the network's angle")
    if refinement is None:
        return f"rotinv_tf: rlnAnglePsi is {source}, not refined (--refine=false)"
    shifts = (f" and shifts of up to {refinement.max_shift} px (rlnOriginXAngst/YAngst)"
              if refinement.max_shift else "")
    reference = ("its class template (the learned frame's mean of its particles)"
                 if "reference" in served else "each particle's canonical image")
    return (f"rotinv_tf: rlnAnglePsi is {source} refined within "
            f"+-{refinement.window_degrees:g} deg in {refinement.step_degrees:g} deg "
            f"steps{shifts} against {reference} (--refine)")


def _training_comment(model) -> str:
    """The STAR file's comment line on how the model was trained (its saved config)."""
    if not model.config:
        return "rotinv_tf: the model's training config was not recorded"
    return f"rotinv_tf: model {describe(model.config)}"


def _frame_comment(metadata: dict) -> str:
    """The STAR file's comment line on the model: which frame its angles are in."""
    frame = FRAMES.get(metadata.get("frame"))
    return (f"rotinv_tf: model {metadata.get('model_class', 'unknown')}, frame "
            f"{'not recorded' if frame is None else frame.served}")


def _refine(particles: np.ndarray, references: np.ndarray, angles: np.ndarray,
            batch_size: int, refinement: Refinement) -> RefinedPoses:
    """`refine_poses` of one batch, a short last batch padded to `batch_size` (its last particle
    repeated) so that a stream traces the compiled search once."""
    count = len(particles)
    padding = batch_size - count

    def padded(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        return np.concatenate([values, np.repeat(values[-1:], padding, axis=0)])

    refined = refine_poses(padded(particles), padded(references), padded(angles),
                           refinement.window_degrees, refinement.step_degrees,
                           refinement.max_shift)
    return RefinedPoses(refined.angles[:count], refined.shifts[:count], refined.scores[:count])


def _origins(offsets: np.ndarray, pixel_scale: float, input_size: int,
             input_pixel_sizes: np.ndarray) -> np.ndarray:
    """RELION origins [B, 2] Å in the input's box of particles at `offsets` [B, 2] pixels of the
    model's box (`pixel_scale` input pixels each, Fourier resampling keeping pixel 0 in place:
    the model's centre (n-1)/2 lies (1 - pixel_scale)/2 input pixels from the input's)."""
    moved = np.asarray(offsets, np.float64) * pixel_scale + (1.0 - pixel_scale) / 2
    return relion_origins(moved, input_size, input_pixel_sizes)


def _stream(model, particles: Particles, output: str, star: str, batch_size: int,
            resample: bool, progress: Callable[[int, int], None] | None,
            refinement: Refinement | None, select_classes: Sequence[int] | None
            ) -> CanonicalizeSummary:
    """`refinement`: None = none. Checks everything, then streams. With a selection the
    canonical images go to a scratch stack first (how many are kept is known only at the end),
    then to `output`."""
    size = model.image_size
    h, w = particles.height, particles.width
    if (h, w) != (size, size):
        if not resample:
            raise DataError(particles.path, f"particles are {h}x{w} pixels but the model takes "
                            f"{size}x{size}; pass --resample to Fourier-resample them")
        if h != w:
            raise DataError(particles.path, f"cannot resample non-square {h}x{w} particles")
    max_shift = refinement.max_shift if refinement is not None else 0
    if not 0 <= max_shift < size // 2:
        raise DataError(model.path, f"refine_max_shift {max_shift} must be in "
                        f"[0, {size // 2}) for the model's {size}x{size} images")
    pixel_scale = h / size
    classified = has_classes(model)
    served_offsets = OFFSET in model.outputs
    columns = [IMAGE_NAME, ANGLE_PSI, *(ORIGIN_COLUMNS if max_shift or served_offsets else ()),
               *(CLASS_COLUMNS if classified else ())]
    ctf_values = _particle_ctf(model, particles, pixel_scale)
    layout = output_star(particles, size, pixel_scale, columns)  # checks the optics
    # With classes, the same rows for the input's own particles (`classes` module docstring).
    particle_layout = output_star(particles, h, 1.0, columns) if classified else None
    input_stacks = [relion_path(path) for path in particles.stacks]
    pixel_sizes = particles.pixel_sizes() * pixel_scale
    particles.check_finite()
    n = len(particles)
    stack_name = relion_path(output)
    training = _training_comment(model)
    comments = [_frame_comment(model.metadata), training, _ctf_comment(model),
                _refine_comment(refinement, model.outputs), *particles.notes]
    summary = None  # the classes' ClassSummary, made on the first batch (K comes with it)
    written = 0  # particles written so far
    start_time = time.perf_counter()
    picture = Overview()
    created = [path for path in (output, *class_paths(star), overview_path(star))
               if not os.path.exists(path)]
    try:
        with StarWriter(star, comments) as star_writer, particles.open() as reader, \
                (StarWriter(class_paths(star)[2], comments) if classified
                 else contextlib.nullcontext()) as particle_writer, \
                (tempfile.TemporaryDirectory(dir=os.path.dirname(output), prefix=".select.")
                 if select_classes else contextlib.nullcontext()) as scratch:
            stack = output if scratch is None else os.path.join(scratch, "all.mrcs")
            tables = [(star_writer, layout)] + ([(particle_writer, particle_layout)]
                                                if classified else [])
            for writer_of_star, table in tables:
                for name, block in table.before.items():
                    writer_of_star.write_block(name, block)
                writer_of_star.begin_loop(table.table, table.columns)
            with StackWriter(stack, n, size, size, pixel_sizes[0]) as writer:
                for start in range(0, n, batch_size):
                    stop = min(start + batch_size, n)
                    images = fourier_resample(reader.read(start, stop), size)
                    batch_ctf = None if ctf_values is None else {
                        name: values[start:stop] for name, values in ctf_values.items()}
                    result = model.predict(images, batch_ctf)
                    angles = np.asarray(result["angle"], np.float64)
                    values = {}
                    shifts = result[OFFSET] if served_offsets else None
                    if refinement is not None:
                        pair = CORRECTIONS[model.ctf_correction].refinement_pair(
                            batch_ctf, images, result)
                        if served_offsets:
                            pair = (recentred_particles(pair[0], shifts), pair[1])
                        refined = _refine(*pair, result["angle"], batch_size, refinement)
                        angles = np.asarray(refined.angles, np.float64)
                        if max_shift:
                            shifts = refined.shifts + (0.0 if shifts is None else shifts)
                    if shifts is not None:
                        origins = _origins(shifts, pixel_scale, h,
                                           pixel_sizes[start:stop] / pixel_scale)
                        for column, origin in zip(ORIGIN_COLUMNS, origins.T):
                            values[column] = [f"{v:.6f}" for v in origin]
                    values[ANGLE_PSI] = [f"{p:.6f}" for p in angle_to_psi_degrees(angles)]
                    kept = np.ones(stop - start, bool)
                    if classified:
                        if summary is None:
                            summary = _class_summary(model, result, select_classes)
                        kept, class_values = summary.add(result, images, angles, shifts)
                        values = {column: [v for v, keep in zip(column_values, kept) if keep]
                                  for column, column_values in values.items()}
                        values.update(class_values)
                    rows = np.flatnonzero(kept)
                    values[IMAGE_NAME] = [image_name(i, stack_name)
                                          for i in range(written + 1, written + len(rows) + 1)]
                    writer.write(written, result["canonical_image"][rows])
                    picture.add(images[rows], result["canonical_image"][rows, ..., 0],
                                result["features"][rows],
                                np.argmax(result["class_probabilities"][rows], axis=1)
                                if classified else np.zeros(len(rows), int))
                    star_writer.write_rows(layout.rows(start + rows, values))
                    if particle_writer is not None:
                        particle_writer.write_rows(particle_layout.rows(start + rows, {
                            **values, IMAGE_NAME: _input_names(particles, input_stacks,
                                                               start + rows)}))
                    written += len(rows)
                    if progress is not None:
                        progress(stop, n)
            for writer_of_star, table in tables:
                for name, block in table.after.items():
                    writer_of_star.write_block(name, block)
            if summary is not None:
                if not written:
                    raise DataError(particles.path, f"no particle is in classes "
                                    f"{','.join(map(str, select_classes))} (--select_classes)")
                if scratch is not None:
                    _copy_stack(stack, output, written, pixel_sizes[0])
                for writer_of_star, _ in tables:
                    writer_of_star.add_comments(summary.comments())
                summary.write(star, float(pixel_sizes[0]))
            picture.write(overview_path(star), None if summary is None else summary.averages())
    except BaseException:
        for path in created:  # a class file or a copied stack renamed before the failure
            if os.path.exists(path):
                os.remove(path)
        raise
    class_files = class_paths(star) if summary is not None else (None, None, None)
    return CanonicalizeSummary(particles=written, seconds=time.perf_counter() - start_time,
                               output=output, star=star, pixel_size=float(pixel_sizes[0]),
                               training=training.removeprefix("rotinv_tf: "),
                               notes=particles.notes, classes=class_files[0],
                               model_star=class_files[1], particles_star=class_files[2],
                               overview=overview_path(star))


def _input_names(particles: Particles, stacks: list[str], rows: np.ndarray) -> list[str]:
    """`rlnImageName` of the input's particles `rows` (`stacks`: their stacks' names as RELION
    finds them, `relion_path`)."""
    return [image_name(int(particles.indices[i]) + 1, stacks[particles.stack_ids[i]])
            for i in rows]


def _class_summary(model, result: dict, select_classes: Sequence[int] | None) -> ClassSummary:
    """The classes' summary, for the model's number of classes (its first batch's
    `class_probabilities`); `DataError` if `select_classes` names a class it lacks."""
    num_classes = int(np.shape(result["class_probabilities"])[1])
    if select_classes is not None and max(select_classes) > num_classes:
        raise DataError(model.path, f"the model has {num_classes} classes; --select_classes "
                        f"asked for {','.join(map(str, select_classes))}")
    return ClassSummary(num_classes, model.image_size, select_classes)


def _copy_stack(source: str, output: str, count: int, pixel_size: float,
                chunk: int = 1024) -> None:
    """The first `count` images of the stack `source` into a new stack `output`."""
    with open_stack(source) as stack, \
            StackWriter(output, count, stack.shape[1], stack.shape[2], pixel_size) as writer:
        for start in range(0, count, chunk):
            writer.write(start, stack.read(start, min(start + chunk, count)))

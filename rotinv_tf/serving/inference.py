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

CTF: a model trained with a CTF correction (`rotinv_tf.models.autoencoder`) takes each particle's
defocus, read from the input (a STAR file's rlnDefocusU/V/Angle and optics, a `.cs` file's `ctf/*`
fields, written out in RELION's columns); a comment line at the top of the STAR file names the
correction (with `model` the canonical images are CTF-free). Refinement then compares like with
like (`_refinement_pair`).

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

from data_pipeline import ctf
from data_pipeline.errors import DataError
from data_pipeline.formats.mrc import StackWriter
from data_pipeline.outputs import check_output_file
from data_pipeline.formats.star import (ANGLE_PSI, DEFOCUS_COLUMNS, IMAGE_NAME, ORIGIN_COLUMNS,
                                        StarWriter, angle_to_psi_degrees, image_name)
from data_pipeline.particle_star import output_star, relion_path
from data_pipeline.particles import Particles, read_particles
from rotinv_tf.config import describe
from rotinv_tf.pose.refine import RefinedPoses, refine_poses
from rotinv_tf.serving.saved_model import load_serving_model

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
    notes: tuple[str, ...] = ()  # how the input was read (`Particles.notes`)

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
                           optics: dict[str, float | None] | None = None
                           ) -> CanonicalizeSummary:
    """Runs every particle of `input_path` through the SavedModel; writes `output` and `star`.

    `refine`: refine the network's angles (module docstring), searching shifts of up to
    `refine_max_shift` pixels too. `optics` (`particles.OPTICS_NAMES` -> value) gives every
    optics group the values the input lacks or gets wrong. `progress(done, total)` is called
    after each batch. Raises `DataError` for bad input, checked before any particle is
    processed (nothing is written then). The summary's time covers the streaming (read, model,
    refinement, write), not loading and checking.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    output, star = os.path.abspath(output), os.path.abspath(star)
    if output == star:
        raise DataError(output, "the canonical stack and the STAR file need different paths")
    for path in (output, star):  # before the model loads
        check_output_file(path)
    model = load_serving_model(saved_model)
    particles = read_particles(input_path).with_optics(**(optics or {}))
    inputs = {os.path.abspath(p) for p in [input_path, *particles.stacks]}
    for path in (output, star):
        if path in inputs:
            raise DataError(path, "the output would overwrite an input file")
    return _stream(model, particles, output, star, batch_size, resample, progress,
                   refine_max_shift if refine else None)


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
        flipped = ctf.apply_ctf(images.astype(np.float32), batch_ctf, "phase_flip",
                                pad_factor=2)
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


def _stream(model, particles: Particles, output: str, star: str, batch_size: int,
            resample: bool, progress: Callable[[int, int], None] | None,
            refine_max_shift: int | None) -> CanonicalizeSummary:
    """`refine_max_shift`: None = no refinement. Checks everything, then streams."""
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
    pixel_scale = h / size
    columns = [IMAGE_NAME, ANGLE_PSI, *(ORIGIN_COLUMNS if refine_max_shift else ())]
    ctf_values = _particle_ctf(model, particles, pixel_scale)
    layout = output_star(particles, size, pixel_scale, columns)  # checks the optics
    pixel_sizes = particles.pixel_sizes() * pixel_scale
    particles.check_finite()
    n = len(particles)
    stack_name = relion_path(output)
    training = _training_comment(model)
    comments = [_frame_comment(model.metadata), training, _ctf_comment(model),
                _refine_comment(refine_max_shift, model.outputs), *particles.notes]
    start_time = time.perf_counter()
    with StarWriter(star, comments) as star_writer, \
            StackWriter(output, n, size, size, pixel_sizes[0]) as writer, \
            particles.open() as reader:
        for name, block in layout.before.items():
            star_writer.write_block(name, block)
        star_writer.begin_loop(layout.table, layout.columns)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            images = fourier_resample(reader.read(start, stop), size)
            batch_ctf = None if ctf_values is None else {
                name: values[start:stop] for name, values in ctf_values.items()}
            result = model.predict(images, batch_ctf)
            writer.write(start, result["canonical_image"])
            angles = np.asarray(result["angle"], np.float64)
            values = {IMAGE_NAME: [image_name(i, stack_name) for i in range(start + 1, stop + 1)]}
            if refine_max_shift is not None:
                refined = _refine(*_refinement_pair(model.ctf_correction, batch_ctf, images,
                                                    result),
                                  result["angle"], batch_size, refine_max_shift)
                angles = np.asarray(refined.angles, np.float64)
                if refine_max_shift:  # pixels, x then y (down the rows) -> RELION origins
                    for column, shift in zip(ORIGIN_COLUMNS, np.asarray(refined.shifts).T):
                        values[column] = [f"{v:.6f}" for v in -shift * pixel_sizes[start:stop]]
            values[ANGLE_PSI] = [f"{p:.6f}" for p in angle_to_psi_degrees(angles)]
            star_writer.write_rows(layout.rows(start, values))
            if progress is not None:
                progress(stop, n)
        for name, block in layout.after.items():
            star_writer.write_block(name, block)
    return CanonicalizeSummary(particles=n, seconds=time.perf_counter() - start_time,
                               output=output, star=star, pixel_size=float(pixel_sizes[0]),
                               training=training.removeprefix("rotinv_tf: "),
                               notes=particles.notes)

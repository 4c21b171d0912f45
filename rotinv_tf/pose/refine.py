"""Local refinement of in-plane poses against a reference image per particle, batched in TF.

After the network: its angle is the start, its canonical image (the decoder output) the reference.
Particle and reference are resampled onto the same polar grid (`rotinv_tf.pose.classical`), where
`particle ≈ rotate(reference, ψ)` (the project convention) rolls the angle axis by ψ, so one FFT
along the rings gives the correlation at every ψ; zero-padding its spectrum interpolates it onto a
`step_degrees` grid (band-limited, so both images see the same interpolation and no angle is
favoured), and the best ψ within the window around the start wins. With `max_shift`, shifts (the
peak of a Cartesian FFT cross-correlation with the reference turned by ψ, refined between whole
pixels by a parabola through the peak and its neighbours on each axis) and ψ are found in turn.
Runs on an accelerator when TensorFlow has one.
"""
import dataclasses
import functools
import math

import numpy as np
import tensorflow as tf

from data_pipeline.angles import wrap_angle
from data_pipeline.rotation import rotate, translate
from rotinv_tf.pose.classical import image_batch, normalised_spectra
from rotinv_tf.pose.polar_em import PolarEM, parabola_vertex

_MIN_RADIUS = 2.0  # pixels: the innermost rings hardly constrain ψ
_SHIFT_ROUNDS = 2  # alternations of (shift, ψ) after the first ψ


@dataclasses.dataclass(frozen=True)
class RefinedPoses:
    """`angles` [B] radians and `shifts` [B, 2] pixels (x along columns, y down the rows) with
    `particle ≈ rotate(reference, angle)` moved by `shift` (`data_pipeline.rotation`'s offsets);
    `scores` [B]: the normalised correlation there (1 = identical up to scale and offset)."""

    angles: np.ndarray
    shifts: np.ndarray
    scores: np.ndarray


def _best_shifts(particles: tf.Tensor, references: tf.Tensor, max_shift: int) -> tf.Tensor:
    """The shift [B, 2] (x, y), within ±`max_shift`, that best moves each reference
    [B, N, N, 1] onto its particle: the peak of their FFT cross-correlation in that window,
    refined between whole pixels by a parabola on each axis (within ±0.5 px)."""
    size = int(particles.shape[1])

    def spectrum(images: tf.Tensor) -> tf.Tensor:
        images = images[..., 0] - tf.reduce_mean(images, axis=[1, 2, 3])[:, None, None]
        return tf.signal.fft2d(tf.complex(images, 0.0))

    # correlation[d] = Σ_x particle(x) reference(x - d): the reference moved by d.
    correlation = tf.math.real(tf.signal.ifft2d(
        spectrum(particles) * tf.math.conj(spectrum(references))))
    window = np.arange(-max_shift, max_shift + 1)
    correlation = tf.gather(tf.gather(correlation, window % size, axis=1), window % size, axis=2)
    width = len(window)
    best = tf.argmax(tf.reshape(correlation, [-1, width ** 2]), axis=1, output_type=tf.int32)
    row, col = best // width, best % width

    def vertex(along_rows: bool) -> tf.Tensor:
        """The parabola's peak about the best cell along one axis, [B]."""
        values = []
        for step in (-1, 0, 1):
            r = tf.clip_by_value(row + step, 0, width - 1) if along_rows else row
            c = col if along_rows else tf.clip_by_value(col + step, 0, width - 1)
            values.append(tf.gather_nd(correlation, tf.stack([r, c], axis=1), batch_dims=1))
        return parabola_vertex(*values)

    whole = tf.cast(tf.stack([col, row], axis=1) - max_shift, tf.float32)
    return whole + tf.stack([vertex(False), vertex(True)], axis=1)


def refine_poses(particles: np.ndarray | tf.Tensor, references: np.ndarray | tf.Tensor,
                 angles: np.ndarray | tf.Tensor, window_degrees: float = 10.0,
                 step_degrees: float = 0.5, max_shift: int = 0) -> RefinedPoses:
    """The angle within `angles` ± `window_degrees` (radians in and out; steps of
    `step_degrees`, rounded to divide the circle) and, with `max_shift` pixels, the shift
    that best match each particle [B, N, N(, 1)] with its own reference [B, N, N(, 1)] turned by
    the angle. Both are compared over the disc between 2 px and the box edge, each normalised to
    zero mean and unit variance, so the reference's scale and offset do not matter."""
    particles, references = image_batch(particles), image_batch(references)
    angles = tf.reshape(tf.convert_to_tensor(angles, tf.float32), [-1])
    count, size = int(particles.shape[0]), int(particles.shape[1])
    if references.shape != particles.shape or angles.shape[0] != count:
        raise ValueError(f"need one reference and one angle per particle: particles "
                         f"{particles.shape}, references {references.shape}, angles "
                         f"{angles.shape}")
    if not (0 < step_degrees <= 90 and window_degrees >= 0 and 0 <= max_shift < size // 2):
        raise ValueError(f"need 0 < step_degrees <= 90, window_degrees >= 0 and 0 <= max_shift "
                         f"< {size // 2}; got {step_degrees}, {window_degrees}, {max_shift}")
    if not bool(tf.reduce_all(tf.math.is_finite(angles))):
        raise ValueError("angles contain NaN/Inf values")
    psi, shifts, score = _searcher(size, window_degrees, step_degrees, max_shift)(
        particles, references, angles)
    return RefinedPoses(angles=psi.numpy(), shifts=shifts.numpy(), scores=score.numpy())


@functools.lru_cache(maxsize=8)
def _searcher(size: int, window_degrees: float, step_degrees: float, max_shift: int):
    """The search of `refine_poses` for one box size and setting, as a `tf.function` over
    (particles, references, angles) built once: eager, its many small ops and the polar
    resampler's set-up cost more than the arithmetic (about 2x the time per batch of 64)."""
    # Samples per ring: enough for the ~π r harmonics a ring of the pixel grid carries (more only
    # cost time); ψ is interpolated onto the requested step from the spectrum anyway.
    num_angles = 8 * math.ceil((math.pi * (size / 2 - 1) + 2) / 4)
    polar = PolarEM(size, num_angles, _MIN_RADIUS)
    steps = int(round(360 / step_degrees))
    step = 2 * math.pi / steps
    reach = int(math.floor(window_degrees / (360 / steps) + 1e-9))

    @tf.function  # traced once per batch shape (inference pads a stream's short last batch)
    def run(particles: tf.Tensor, references: tf.Tensor, angles: tf.Tensor):
        templates = normalised_spectra(references, 0.0, polar)
        weighted = templates * tf.cast(polar.area[:, tf.newaxis], tf.complex64)
        template_energy = polar.energy(templates)
        start = tf.cast(tf.round(angles / step), tf.int32)
        candidates = start[:, tf.newaxis] + tf.range(-reach, reach + 1)  # [B, C] grid indices

        def search(shifts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            """ψ within the window for the particles moved back by `shifts`, and its score."""
            spectra = normalised_spectra(translate(particles, -shifts), 0.0, polar)
            # Σ over rings and angles of particle × reference turned by each grid ψ [B, steps];
            # the finer inverse FFT divides by `steps`, the polar sums want `num_angles`.
            correlation = tf.signal.irfft(
                tf.reduce_sum(spectra * tf.math.conj(weighted), axis=1), [steps]) * (
                    steps / num_angles)
            window = tf.gather(correlation, candidates % steps, batch_dims=1)
            best = tf.argmax(window, axis=1, output_type=tf.int32)
            psi = tf.cast(tf.gather(candidates, best, batch_dims=1), tf.float32) * step
            score = tf.reduce_max(window, axis=1) / tf.sqrt(
                tf.maximum(polar.energy(spectra) * template_energy, 1e-30))
            return wrap_angle(psi), score

        shifts = tf.zeros([tf.shape(particles)[0], 2], tf.float32)
        psi, score = search(shifts)
        for _ in range(_SHIFT_ROUNDS if max_shift else 0):
            shifts = _best_shifts(particles, rotate(references, psi), max_shift)
            psi, score = search(shifts)
        return psi, shifts, score

    return run

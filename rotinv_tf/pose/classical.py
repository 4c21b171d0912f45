"""Classical in-plane pose baselines, batched in TensorFlow: what cryo-EM users run, no network.

- `align_reference_free`: reference-free alignment by polar cross-correlation, an EM with soft
  assignments over angles (and over K templates for stacks holding several views).
- `align_to_templates`: the same correlation against given templates (new particles of a stack
  already aligned), the best template and angle per particle.
- `coaligned`: an alignment's classes put in one shared frame.
- `invariant_features`: rotation-invariant features by construction (magnitudes of the angular
  Fourier coefficients of each polar ring), optionally reduced by `pca`.

Both low-pass the particles a little, normalise each to zero mean and unit variance over the disc,
and work on the angular spectra of their rings on the polar grid of `rotinv_tf.pose.polar_em`
(radii from `min_radius` to the box edge, where a rotation by θ rolls the angle axis by +θ/Δφ).
`align_reference_free` also searches offsets when given a `max_shift`; `align_to_templates`
assumes centred particles. Angles and offsets follow `data_pipeline.rotation`.
"""
import dataclasses
import math
from typing import Callable

import numpy as np
import tensorflow as tf

from data_pipeline.angles import wrap_angle
from data_pipeline.rotation import rotate
from rotinv_tf.pose.polar_em import EMState, PolarEM, Statistics, parabola_vertex, posterior

_CHUNK = 2048  # images resampled at a time: the polar gather holds 4 taps per grid point
_EM_CHUNK = 256  # images per E step: its posterior holds K x offsets x angles per image


@dataclasses.dataclass(frozen=True)
class Alignment:
    """Result of `align_reference_free`.

    `angles` [B] radians with `particle ≈ rotate(templates[classes], angles)`, so rotating each
    particle by `-angles` aligns it to its template; each template's frame is arbitrary (one global
    offset per class). `templates` [K, N, N]: the particles so re-centred and derotated, averaged
    with their class probabilities (input units). `classes` [B] int64, `class_probabilities`
    [B, K]. `offsets` [B, 2]: where each particle's centre is, in pixels
    (`data_pipeline.rotation`'s convention; `PolarEM.peak_offsets`: the centre of mass of its
    template, turned and moved as the particle), zeros without an offset search.
    """

    angles: np.ndarray
    templates: np.ndarray
    classes: np.ndarray
    class_probabilities: np.ndarray
    offsets: np.ndarray


def image_batch(images: np.ndarray | tf.Tensor) -> tf.Tensor:
    """[B, N, N] or [B, N, N, 1] -> float32 [B, N, N, 1]; ValueError if not a batch of finite
    square images."""
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape.rank == 3:
        images = images[..., tf.newaxis]
    shape = images.shape
    if shape.rank != 4 or shape[-1] != 1 or shape[1] != shape[2] or shape[0] == 0:
        raise ValueError(f"expected a non-empty batch of square images [B, N, N(, 1)], "
                         f"got {shape}")
    if not bool(tf.reduce_all(tf.math.is_finite(images))):
        raise ValueError("images contain NaN/Inf values")
    return images


def gaussian_lowpass(images: tf.Tensor, sigma: float) -> tf.Tensor:
    """Images [B, N, N, 1] blurred by a Gaussian of `sigma` pixels (zero padding); 0 = unchanged."""
    if sigma <= 0:
        return images
    half = int(math.ceil(3 * sigma))
    taps = np.exp(-np.arange(-half, half + 1) ** 2 / (2 * sigma ** 2))
    taps = tf.constant(taps / taps.sum(), tf.float32)
    blurred = tf.nn.conv2d(images, tf.reshape(taps, [-1, 1, 1, 1]), 1, "SAME")
    return tf.nn.conv2d(blurred, tf.reshape(taps, [1, -1, 1, 1]), 1, "SAME")


def normalised(images: tf.Tensor, lowpass_sigma: float, grid: PolarEM) -> tf.Tensor:
    """Images [B, N, N, 1] low-passed and scaled to zero mean and unit variance over the polar
    grid's disc (the grid's sampling weights: a polar sample of a constant is that constant)."""
    return tf.concat([_normalised(images[i:i + _CHUNK], lowpass_sigma, grid)
                      for i in range(0, int(images.shape[0]), _CHUNK)], axis=0)


def _normalised(images: tf.Tensor, lowpass_sigma: float, grid: PolarEM) -> tf.Tensor:
    images = gaussian_lowpass(images, lowpass_sigma)
    polar = grid.polar(images)  # [B, R, A]
    weights = grid.area[:, tf.newaxis] / grid.disc_area
    mean = tf.reduce_sum(polar * weights, axis=[1, 2])
    variance = tf.reduce_sum((polar - mean[:, None, None]) ** 2 * weights, axis=[1, 2])
    scale = tf.math.divide_no_nan(1.0, tf.sqrt(variance))
    return (images - mean[:, None, None, None]) * scale[:, None, None, None]


def normalised_spectra(images: tf.Tensor, lowpass_sigma: float, grid: PolarEM) -> tf.Tensor:
    """`normalised` images' angular spectra on the grid, [B, R, F]."""
    return tf.concat([grid.spectra(grid.polar(_normalised(images[i:i + _CHUNK], lowpass_sigma,
                                                          grid)))
                      for i in range(0, int(images.shape[0]), _CHUNK)], axis=0)


def align_reference_free(images: np.ndarray | tf.Tensor, num_classes: int = 1,
                         num_rounds: int = 12, num_angles: int = 360, min_radius: float = 2.0,
                         lowpass_sigma: float = 0.5, seed: int = 0,
                         num_restarts: int | None = None, max_shift: float = 0.0,
                         shift_step: float = 1.0) -> Alignment:
    """In-plane angles (and, with `max_shift` > 0, offsets) of particles [B, N, N(, 1)] without a
    reference.

    Batch expectation-maximisation (`polar_em`, rate 1) over (template, offset, angle) per
    particle: the posterior weights are softmax((correlation - |template|²/2) / σ²) over all
    angles, offsets and templates (plus the log class and offset priors), the templates their
    posterior-weighted means of the re-centred, derotated particles, and the temperature σ² the
    expected per-pixel residual, re-estimated every round, so early rounds against blurred
    templates stay soft (argmax assignments were seen to oscillate at SNR 0.1, issue 15). Starts
    from random angles and classes drawn with `seed`; correlations over all `num_angles`
    rotations are one FFT along the rings, over offsets (`shift_step` pixels within `max_shift`)
    against moved templates.

    With several classes EM can end in a local optimum (two classes merged), so it is run from
    `num_restarts` random starts (seeds `seed`, `seed + 1`, ...; default 1 for one class, 4
    otherwise) and the run with the smallest final residual is kept.
    """
    if num_classes < 1 or num_rounds < 1:
        raise ValueError(f"num_classes and num_rounds must be >= 1, got {num_classes}, "
                         f"{num_rounds}")
    images = image_batch(images)
    grid = PolarEM(int(images.shape[1]), num_angles, min_radius, max_shift, shift_step)
    prepared = normalised(images, lowpass_sigma, grid)
    restarts = num_restarts or (1 if num_classes == 1 else 4)
    if restarts < 1:
        raise ValueError(f"num_restarts must be >= 1, got {restarts}")
    statistics = _compiled_statistics(grid)
    runs = [_expectation_maximisation(grid, statistics, prepared, num_classes, num_rounds,
                                      seed + i) for i in range(restarts)]
    state = min(runs, key=lambda run: float(run[1]))[0]
    angles, classes, probabilities, offsets = [], [], [], []
    references = grid.references(state.templates)
    for start in range(0, int(prepared.shape[0]), _EM_CHUNK):
        chunk = _pose(grid, prepared[start:start + _EM_CHUNK], state, references)
        for found, value in zip((angles, classes, probabilities, offsets), chunk):
            found.append(value)
    angles, classes, probabilities, offsets = (tf.concat(found, 0) for found in
                                               (angles, classes, probabilities, offsets))
    derotated = rotate(grid.recentred(images, offsets), -angles)[..., 0]
    averages = tf.einsum("bk,bhw->khw", probabilities, derotated) / tf.maximum(
        tf.reduce_sum(probabilities, axis=0), 1e-12)[:, tf.newaxis, tf.newaxis]
    return Alignment(angles=angles.numpy(), templates=averages.numpy(),
                     classes=classes.numpy(), class_probabilities=probabilities.numpy(),
                     offsets=offsets.numpy())


def _pose(grid: PolarEM, images: tf.Tensor, state: EMState,
          references: tuple[tf.Tensor, tf.Tensor]
          ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(angles [B], classes [B], class probabilities [B, K], offsets [B, 2]) of prepared images
    against the final templates (their `references`): the class of largest posterior mass,
    within it the angle of the most probable (offset, angle), refined between grid angles
    (`_peak_angles`), and the offset of its centre (`PolarEM.peak_offsets`)."""
    references, energy = references
    spectrum = grid.correlation_spectra(grid.spectra(grid.polar(images)), references)
    logits = grid.logits(grid.angular(spectrum), energy, state)
    probabilities = tf.reduce_sum(posterior(logits), axis=[2, 3])  # [B, K]
    classes = tf.argmax(probabilities, axis=1, output_type=tf.int32)
    within = tf.gather(logits, classes, batch_dims=1)  # [B, S, A]
    best_shift = tf.argmax(tf.reduce_max(within, axis=2), axis=1)
    angles = _peak_angles(tf.gather(within, best_shift, batch_dims=1), grid.num_angles)
    offsets = grid.peak_offsets(spectrum, energy, state, classes, angles)
    return angles, tf.cast(classes, tf.int64), probabilities, offsets


def align_to_templates(images: np.ndarray | tf.Tensor, templates: np.ndarray | tf.Tensor,
                       num_angles: int = 360, min_radius: float = 2.0,
                       lowpass_sigma: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(angles [B], classes [B]) of centred particles against templates [K, N, N(, 1)], e.g. an
    `Alignment`'s: `particle ≈ rotate(templates[class], angle)`, the template and angle of highest
    normalised correlation (every rotation, one FFT along the rings)."""
    images, templates = image_batch(images), image_batch(templates)
    if images.shape[1:] != templates.shape[1:]:
        raise ValueError(f"templates {templates.shape} do not match images {images.shape}")
    grid = PolarEM(int(images.shape[1]), num_angles, min_radius)
    spectra = normalised_spectra(images, lowpass_sigma, grid)
    references = normalised_spectra(templates, lowpass_sigma, grid)
    correlation = grid.correlation(spectra, references[:, tf.newaxis])[:, :, 0]
    correlation /= tf.sqrt(grid.energy(references))[:, tf.newaxis]
    classes = tf.argmax(tf.reduce_max(correlation, axis=2), axis=1)
    angles = _peak_angles(tf.gather(correlation, classes, batch_dims=1), num_angles)
    return angles.numpy(), classes.numpy()


def coaligned(alignment: Alignment) -> Alignment:
    """`alignment` with every class in the heaviest class's frame: each template turned onto it
    (best correlation, `align_to_templates`) and its particles' angles shifted to match.

    Each class's frame is arbitrary, but the views of one specimen often look alike and EM splits
    a view across classes; in unrelated frames half such a view gets a wrong angle. On poses.py's
    three-view SNR 0.1 stack (seed 1) twelve restarts gave psi MAE 4.8-53°, 3.2-3.6° with one
    offset per (view, class): the angles within each class were right, the frames apart; in one
    frame 3.5-4.0° for every restart (issue 15).
    """
    if len(alignment.templates) == 1:
        return alignment
    reference = int(np.argmax(alignment.class_probabilities.sum(axis=0)))
    # templates[k] ≈ rotate(templates[reference], turns[k]), so a particle
    # ≈ rotate(templates[k], a) ≈ rotate(templates[reference], a + turns[k]).
    turns, _ = align_to_templates(alignment.templates,
                                  alignment.templates[reference:reference + 1])
    turns[reference] = 0.0
    templates = rotate(image_batch(alignment.templates), -tf.constant(turns))[..., 0]
    return dataclasses.replace(
        alignment, angles=wrap_angle(tf.constant(alignment.angles + turns[alignment.classes]))
        .numpy(),
        templates=templates.numpy())


def _compiled_statistics(grid: PolarEM) -> Callable[..., Statistics]:
    """`grid.statistics` of a chunk of images against (state, references), as one graph: eagerly
    an E step on 256 particles took 1.8x as long (48-px boxes, 81 offsets, 128 angles)."""
    @tf.function
    def compiled(images, templates, class_mass, noise, references, energy):
        found = grid.statistics(images, EMState(templates, class_mass, noise),
                                (references, energy))[0]
        return found.mass, found.sums, found.residual

    return lambda images, state, references: Statistics(*compiled(
        images, state.templates, state.class_mass, state.noise, *references))


def _expectation_maximisation(grid: PolarEM, statistics: Callable[..., Statistics],
                              images: tf.Tensor, num_classes: int, num_rounds: int, seed: int
                              ) -> tuple[EMState, tf.Tensor]:
    """One EM run from random angles and classes (E steps by `statistics`,
    `_compiled_statistics`) -> (final state, its last round's noise variance σ²)."""
    count = int(images.shape[0])
    rng = np.random.default_rng(seed)
    state = grid.start(images, tf.constant(rng.integers(num_classes, size=count), tf.int32),
                       tf.constant(rng.integers(grid.num_angles, size=count), tf.int32),
                       num_classes)
    for _ in range(num_rounds):
        total = None
        references = grid.references(state.templates)
        for start in range(0, count, _EM_CHUNK):
            chunk = images[start:start + _EM_CHUNK]
            found = statistics(chunk, state, references).scaled(
                int(chunk.shape[0]) / count)
            total = found if total is None else total + found
        state = grid.em_step(state, total, 1.0)
    return state, total.residual


def _peak_angles(correlation: tf.Tensor, num_angles: int) -> tf.Tensor:
    """Correlations [B, A] over grid angles -> each one's peak angle [B] (radians), refined
    between grid points by a parabola through the peak and its two neighbours."""
    best = tf.argmax(correlation, axis=1, output_type=tf.int32)
    around = tf.stack([(best - 1) % num_angles, best, (best + 1) % num_angles], axis=1)
    steps = tf.cast(best, tf.float32) + parabola_vertex(
        *tf.unstack(tf.gather(correlation, around, batch_dims=1), axis=1))
    return wrap_angle(steps * (2 * math.pi / num_angles))


def invariant_features(images: np.ndarray | tf.Tensor, num_components: int | None = None,
                       num_angles: int = 360, min_radius: float = 2.0,
                       lowpass_sigma: float = 0.5) -> np.ndarray:
    """Rotation-invariant features [B, D] of particles [B, N, N(, 1)].

    The magnitudes of the angular Fourier coefficients of every polar ring, scaled so a feature
    vector's squared length is the particle's energy over the disc (rings weighted by their area);
    a rotation only changes the coefficients' phases. With `num_components`, reduced by `pca`.
    """
    images = image_batch(images)
    grid = PolarEM(int(images.shape[1]), num_angles, min_radius)
    features = tf.sqrt(grid.power(normalised_spectra(images, lowpass_sigma, grid)))
    features = tf.reshape(features, [features.shape[0], -1]).numpy()
    return features if num_components is None else pca(features, num_components)


def pca(features: np.ndarray, num_components: int) -> np.ndarray:
    """Features [B, D] -> their coordinates [B, num_components] along the leading principal axes."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or not 1 <= num_components <= min(features.shape):
        raise ValueError(f"need 1 <= num_components <= min{features.shape}, got {num_components}")
    centred = features - features.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return (centred @ axes[:num_components].T).astype(np.float32)

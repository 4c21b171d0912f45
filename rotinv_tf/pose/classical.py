"""Classical in-plane pose baselines, batched in TensorFlow: what cryo-EM users run, no network.

- `align_reference_free`: reference-free alignment by polar cross-correlation, an EM with soft
  assignments over angles (and over K templates for stacks holding several views).
- `align_to_templates`: the same correlation against given templates (new particles of a stack
  already aligned), the best template and angle per particle.
- `coaligned`: an alignment's classes put in one shared frame.
- `invariant_features`: rotation-invariant features by construction (magnitudes of the angular
  Fourier coefficients of each polar ring), optionally reduced by `pca`.

Both low-pass the particles a little, resample them onto the polar grid of `data_pipeline.polar`
(radii from `min_radius` to the box edge, where a rotation by θ rolls the angle axis by +θ/Δφ),
normalise each to zero mean and unit variance over the disc, and work on the rings' angular spectra.
Particles are assumed centred (no shift search). Angles follow `data_pipeline.rotation`.
"""
import dataclasses
import math

import numpy as np
import tensorflow as tf

from data_pipeline.polar import PolarResampler, default_radii
from data_pipeline.angles import wrap_angle
from data_pipeline.rotation import rotate

_MIN_NOISE_VARIANCE = 1e-6  # per pixel, relative to the particles' unit variance (noiseless data)
_CHUNK = 2048  # images resampled at a time: the polar gather holds 4 taps per grid point


@dataclasses.dataclass(frozen=True)
class Alignment:
    """Result of `align_reference_free`.

    `angles` [B] radians with `particle ≈ rotate(templates[classes], angles)`, so rotating each
    particle by `-angles` aligns it to its template; each template's frame is arbitrary (one global
    offset per class). `templates` [K, N, N]: the particles so derotated, averaged with their class
    probabilities (input units). `classes` [B] int64, `class_probabilities` [B, K].
    """

    angles: np.ndarray
    templates: np.ndarray
    classes: np.ndarray
    class_probabilities: np.ndarray


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


class PolarSpectra:
    """Normalised particles -> angular spectra of their polar rings, [B, R, F] complex64.

    F keeps the harmonics a ring of the pixel grid can carry (about π r cycles at radius r);
    `area` [R] is each ring's share of the disc (r Δr Δφ per sample), so weighted sums over the
    polar grid approximate sums over pixels; `multiplicity` [F] counts each harmonic f >= 1 for
    itself and -f (Parseval for a real signal), the constant and Nyquist ones once.
    """

    def __init__(self, image_size: int, num_angles: int, min_radius: float):
        if num_angles < 8:
            raise ValueError(f"num_angles must be >= 8, got {num_angles}")
        if not 0 <= min_radius <= image_size / 2 - 1:
            raise ValueError(f"min_radius {min_radius} leaves no ring in a {image_size}-px box")
        radii = default_radii(image_size, min_radius=min_radius)
        self.resampler = PolarResampler(image_size, num_angles, radii)
        self.num_angles = num_angles
        self.harmonics = min(num_angles // 2 + 1, int(math.pi * radii[-1]) + 2)
        spacing = radii[1] - radii[0] if len(radii) > 1 else 1.0
        self.area = tf.constant(radii * spacing * 2 * math.pi / num_angles, tf.float32)
        harmonic = np.arange(self.harmonics)
        self.multiplicity = tf.constant(
            np.where((harmonic == 0) | (2 * harmonic == num_angles), 1.0, 2.0), tf.float32)

    def __call__(self, images: tf.Tensor, lowpass_sigma: float) -> tf.Tensor:
        return tf.concat([self._spectra(images[i:i + _CHUNK], lowpass_sigma)
                          for i in range(0, int(images.shape[0]), _CHUNK)], axis=0)

    def _spectra(self, images: tf.Tensor, lowpass_sigma: float) -> tf.Tensor:
        polar = self.resampler(gaussian_lowpass(images, lowpass_sigma))  # [B, R, A]
        weights = self.area[:, tf.newaxis] / (tf.reduce_sum(self.area) * self.num_angles)
        mean = tf.reduce_sum(polar * weights, axis=[1, 2], keepdims=True)
        variance = tf.reduce_sum((polar - mean) ** 2 * weights, axis=[1, 2], keepdims=True)
        polar = tf.math.divide_no_nan(polar - mean, tf.sqrt(variance))
        return tf.signal.rfft(polar)[..., :self.harmonics]

    def power(self, spectra: tf.Tensor) -> tf.Tensor:
        """Spectra [..., R, F] -> the energy each coefficient stands for, [..., R, F]: summed,
        the disc's Σ of the squared polar image (the dropped harmonics being zero)."""
        return (tf.abs(spectra) ** 2 * self.area[:, tf.newaxis] * self.multiplicity
                / self.num_angles)

    def energy(self, spectra: tf.Tensor) -> tf.Tensor:
        """Σ over the disc of the squared polar image, [...]."""
        return tf.reduce_sum(self.power(spectra), axis=[-2, -1])


def align_reference_free(images: np.ndarray | tf.Tensor, num_classes: int = 1,
                         num_rounds: int = 12, num_angles: int = 360, min_radius: float = 2.0,
                         lowpass_sigma: float = 0.5, seed: int = 0,
                         num_restarts: int | None = None) -> Alignment:
    """In-plane angles of centred particles [B, N, N(, 1)] without a reference.

    An expectation-maximisation over (template, angle) per particle: the posterior weights are
    softmax((correlation - |template|²/2) / σ²) over all angles and templates (plus the log class
    prior), the templates their posterior-weighted means of the derotated particles, and the
    temperature σ² the expected per-pixel residual, re-estimated every round, so early rounds
    against blurred templates stay soft (argmax assignments were seen to oscillate at SNR 0.1,
    issue 15). Starts from random angles and classes drawn with `seed`; correlations over all
    `num_angles` rotations are one FFT along the rings.

    With several classes EM can end in a local optimum (two classes merged), so it is run from
    `num_restarts` random starts (seeds `seed`, `seed + 1`, ...; default 1 for one class, 4
    otherwise) and the run with the smallest final residual is kept.
    """
    if num_classes < 1 or num_rounds < 1:
        raise ValueError(f"num_classes and num_rounds must be >= 1, got {num_classes}, "
                         f"{num_rounds}")
    images = image_batch(images)
    polar = PolarSpectra(int(images.shape[1]), num_angles, min_radius)
    spectra = polar(images, lowpass_sigma)  # [B, R, F]
    restarts = num_restarts or (1 if num_classes == 1 else 4)
    if restarts < 1:
        raise ValueError(f"num_restarts must be >= 1, got {restarts}")
    runs = [_expectation_maximisation(polar, spectra, num_classes, num_rounds, seed + i)
            for i in range(restarts)]
    posterior, correlation, _ = min(runs, key=lambda run: float(run[2]))
    probabilities = tf.reduce_sum(posterior, axis=2)  # [B, K]
    classes = tf.argmax(probabilities, axis=1)
    angles = _peak_angles(tf.gather(correlation, classes, batch_dims=1), num_angles)
    derotated = rotate(images, -angles)[..., 0]
    averages = tf.einsum("bk,bhw->khw", probabilities, derotated) / tf.maximum(
        tf.reduce_sum(probabilities, axis=0), 1e-12)[:, tf.newaxis, tf.newaxis]
    return Alignment(angles=angles.numpy(), templates=averages.numpy(),
                     classes=classes.numpy(), class_probabilities=probabilities.numpy())


def align_to_templates(images: np.ndarray | tf.Tensor, templates: np.ndarray | tf.Tensor,
                       num_angles: int = 360, min_radius: float = 2.0,
                       lowpass_sigma: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(angles [B], classes [B]) of centred particles against templates [K, N, N(, 1)], e.g. an
    `Alignment`'s: `particle ≈ rotate(templates[class], angle)`, the template and angle of highest
    normalised correlation (every rotation, one FFT along the rings)."""
    images, templates = image_batch(images), image_batch(templates)
    if images.shape[1:] != templates.shape[1:]:
        raise ValueError(f"templates {templates.shape} do not match images {images.shape}")
    polar = PolarSpectra(int(images.shape[1]), num_angles, min_radius)
    spectra, references = polar(images, lowpass_sigma), polar(templates, lowpass_sigma)
    weighted = spectra * tf.cast(polar.area[:, tf.newaxis], tf.complex64)
    correlation = tf.signal.irfft(
        tf.einsum("brf,krf->bkf", weighted, tf.math.conj(references)), [num_angles])
    correlation /= tf.sqrt(polar.energy(references))[:, tf.newaxis]
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
    # templates[k] ≈ rotate(templates[reference], offsets[k]), so a particle
    # ≈ rotate(templates[k], a) ≈ rotate(templates[reference], a + offsets[k]).
    offsets, _ = align_to_templates(alignment.templates,
                                    alignment.templates[reference:reference + 1])
    offsets[reference] = 0.0
    templates = rotate(image_batch(alignment.templates), -tf.constant(offsets))[..., 0]
    return dataclasses.replace(
        alignment, angles=wrap_angle(tf.constant(alignment.angles + offsets[alignment.classes]))
        .numpy(),
        templates=templates.numpy())


def _expectation_maximisation(polar: PolarSpectra, spectra: tf.Tensor, num_classes: int,
                              num_rounds: int, seed: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One EM run from random angles and classes -> (posterior [B, K, A], correlation [B, K, A],
    final noise variance σ²)."""
    count, num_angles = int(spectra.shape[0]), polar.num_angles
    weighted = spectra * tf.cast(polar.area[:, tf.newaxis], tf.complex64)
    particle_energy = polar.energy(spectra)  # [B]
    disc_area = tf.reduce_sum(polar.area) * num_angles
    rng = np.random.default_rng(seed)
    start = (rng.integers(num_classes, size=count) * num_angles
             + rng.integers(num_angles, size=count))
    posterior = tf.reshape(tf.one_hot(start, num_classes * num_angles),
                           [count, num_classes, num_angles])
    for _ in range(num_rounds):
        # M step: templates (derotating by s multiplies a spectrum by exp(+2πifs/A)) and priors.
        rolls = tf.signal.rfft(posterior)[..., :polar.harmonics]  # [B, K, F]
        mass = tf.reduce_sum(posterior, axis=[0, 2])  # [K]
        templates = tf.einsum("brf,bkf->krf", spectra, tf.math.conj(rolls)) / tf.cast(
            tf.maximum(mass, 1e-12)[:, tf.newaxis, tf.newaxis], tf.complex64)
        template_energy = polar.energy(templates)  # [K]
        log_prior = tf.math.log(tf.maximum(mass / count, 1e-12))
        # Correlation of each particle with each template rotated by every grid angle s.
        correlation = tf.signal.irfft(
            tf.einsum("brf,krf->bkf", weighted, tf.math.conj(templates)), [num_angles])
        residual = (particle_energy - 2 * tf.reduce_sum(posterior * correlation, axis=[1, 2])
                    + tf.reduce_sum(tf.reduce_sum(posterior, axis=2) * template_energy, axis=1))
        noise = tf.maximum(tf.reduce_mean(residual) / disc_area, _MIN_NOISE_VARIANCE)
        posterior = class_angle_posterior(correlation, template_energy, noise, log_prior)
    return posterior, correlation, noise


def class_angle_logits(correlation: tf.Tensor, template_energy: tf.Tensor, noise: tf.Tensor,
                       log_prior: tf.Tensor) -> tf.Tensor:
    """log p(x, k, s) [B, K, A] of each particle x, template k and angle bin s, up to a
    per-particle constant.

    Under white Gaussian noise of per-pixel variance σ² (`noise`), log p(x | k, s) is
    (corr[b, k, s] - |T_k|²/2) / σ² - |x|²/(2σ²) (+ a constant); `log_prior` [K] adds the class
    prior. `correlation` [B, K, A] holds the image-plane inner products with each rotated template.
    """
    return ((correlation - template_energy[:, tf.newaxis] / 2) / noise
            + log_prior[:, tf.newaxis])


def class_angle_posterior(correlation: tf.Tensor, template_energy: tf.Tensor, noise: tf.Tensor,
                          log_prior: tf.Tensor) -> tf.Tensor:
    """The E step: posterior [B, K, A] over (template k, angle bin s) of each particle, the
    softmax of `class_angle_logits`."""
    logits = class_angle_logits(correlation, template_energy, noise, log_prior)
    flat = tf.nn.softmax(tf.reshape(logits, [tf.shape(logits)[0], -1]))
    return tf.reshape(flat, tf.shape(logits))


def _peak_angles(correlation: tf.Tensor, num_angles: int) -> tf.Tensor:
    """Correlations [B, A] over grid angles -> each one's peak angle [B] (radians), refined
    between grid points by a parabola through the peak and its two neighbours."""
    best = tf.argmax(correlation, axis=1, output_type=tf.int32)
    around = tf.stack([(best - 1) % num_angles, best, (best + 1) % num_angles], axis=1)
    left, centre, right = tf.unstack(tf.gather(correlation, around, batch_dims=1), axis=1)
    curvature = left - 2 * centre + right
    offset = tf.where(curvature < 0, 0.5 * (left - right) / tf.minimum(curvature, -1e-12), 0.0)
    steps = tf.cast(best, tf.float32) + tf.clip_by_value(offset, -0.5, 0.5)
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
    polar = PolarSpectra(int(images.shape[1]), num_angles, min_radius)
    features = tf.sqrt(polar.power(polar(images, lowpass_sigma)))
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

"""`TemplateFrame`: the canonical frame of a stack whose angles nobody knows, learned online by EM.

The frame is a polar template of the canonical particle, held by the model as non-trainable weights
and refined on every training step, as expectation-maximisation over in-plane angles:

- E step: each particle's polar image P (`data_pipeline.polar`, where a rotation is a circular shift)
  is cross-correlated with the template T along the angle axis (FFT); under white Gaussian noise of
  per-pixel variance σ² the posterior over the angle bins is softmax(corr / σ²).
- M step: T moves towards the batch mean of the particles aligned by their posteriors (soft
  assignments, as RELION's 2D classification; hard ones oscillate at low SNR), and σ² towards the
  posterior-weighted residual.

A particle's frame angle θ is the circular mean of its posterior: the rotation with
`particle = rotate(canonical, θ)` (`data_pipeline.rotation`'s convention). The network learns to
predict θ from the particle (and θ + α from the particle rotated by α), so the frame generalises
to new particles; the template itself is only a training device. Which way the template points is
arbitrary: scores compare frames after one global rotation.

Correlations are weighted by each ring's area (r·Δr·Δφ), so they are the pixel inner products of
the image plane.
"""
import keras
import numpy as np
import tensorflow as tf

from rotinv_tf.pose.classical import PolarSpectra


class TemplateFrame(keras.layers.Layer):
    """The online-EM frame: `assign(images)` -> posterior angles; `update(...)` the M step."""

    def __init__(self, image_size: int, num_angles: int = 128, momentum: float = 0.1,
                 **kwargs):
        super().__init__(**kwargs)
        if num_angles < 8 or num_angles % 4:
            raise ValueError(f"num_angles must be a multiple of 4 >= 8, got {num_angles}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.image_size = image_size
        self.num_angles = num_angles
        self.momentum = momentum
        # The polar grid and its ring areas, as the classical baselines use them (radii from 1 px).
        grid = PolarSpectra(image_size, num_angles, min_radius=1.0)
        self.resampler = grid.resampler
        radii = self.resampler.radii
        self._area = grid.area[:, tf.newaxis]  # [R, 1]
        self._total_area = float(tf.reduce_sum(grid.area)) * num_angles
        phi = 2 * np.pi * np.arange(num_angles) / num_angles
        self._cos, self._sin = tf.constant(np.cos(phi), tf.float32), tf.constant(np.sin(phi),
                                                                                  tf.float32)
        shape = (len(radii), num_angles)
        self.template = self.add_weight(shape=shape, initializer="zeros", trainable=False,
                                        name="template")
        self.noise_variance = self.add_weight(shape=(), initializer="ones", trainable=False,
                                              name="noise_variance")
        self.initialized = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                           name="initialized")

    def polar(self, images: tf.Tensor) -> tf.Tensor:
        """Images [B, N, N, 1] -> polar images [B, R, A] (float32)."""
        return self.resampler(tf.cast(images, tf.float32))

    def _correlation(self, spectra: tf.Tensor, template: tf.Tensor) -> tf.Tensor:
        """corr[b, s] = Σ area_r P_b(r, a) T(r, a - s): the image-plane inner product of particle b
        (angular spectra `rfft(P)` [B, R, F]) with the template rotated by s angle bins."""
        spectrum = spectra * tf.math.conj(tf.signal.rfft(template))[None]
        weighted = tf.reduce_sum(spectrum * tf.cast(self._area, tf.complex64)[None], axis=1)
        return tf.signal.irfft(weighted, fft_length=[self.num_angles])

    def _aligned(self, spectra: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        """Σ_s w_b(s) P_b(r, a + s): each particle turned back by its posterior [B, R, A]."""
        spectrum = spectra * tf.math.conj(tf.signal.rfft(weights))[:, None, :]
        return tf.signal.irfft(spectrum, fft_length=[self.num_angles])

    def _weights(self, corr: tf.Tensor) -> tf.Tensor:
        """Posterior weights [B, A] over the angle bins from correlations [B, A]."""
        return tf.nn.softmax(corr / tf.maximum(self.noise_variance, 1e-8), axis=-1)

    def angles(self, weights: tf.Tensor) -> tf.Tensor:
        """Circular mean angle [B] (radians, (-π, π]) of posterior weights [B, A]."""
        return tf.atan2(tf.reduce_sum(weights * self._sin, axis=-1),
                        tf.reduce_sum(weights * self._cos, axis=-1))

    def assign(self, images: tf.Tensor) -> tf.Tensor:
        """Frame angles [B] of normalised images [B, N, N, 1] (E step only; no update)."""
        spectra = tf.signal.rfft(self.polar(images))
        return self.angles(self._weights(self._correlation(spectra, self.template)))

    def _initialize(self, polar: tf.Tensor, spectra: tf.Tensor,
                    seed: keras.random.SeedGenerator) -> None:
        """First batch: the template is the mean of the particles turned by random angle bins, and
        σ² their pixel variance, so the first posteriors are soft and symmetry breaks gently."""
        bins = keras.random.randint([tf.shape(polar)[0]], 0, self.num_angles, seed=seed)
        weights = tf.one_hot(bins, self.num_angles)
        self.template.assign(tf.reduce_mean(self._aligned(spectra, weights), axis=0))
        centred = polar - tf.reduce_mean(polar, axis=0, keepdims=True)
        self.noise_variance.assign(tf.reduce_sum(tf.reduce_mean(tf.square(centred), axis=0)
                                                 * self._area) / self._total_area)
        self.initialized.assign(1.0)

    def update(self, images: tf.Tensor, seed: keras.random.SeedGenerator) -> tf.Tensor:
        """One EM step on a training batch; returns its frame angles [B] (before the update)."""
        polar = self.polar(images)
        spectra = tf.signal.rfft(polar)  # once per step: the E and the M step both use it
        tf.cond(self.initialized > 0, lambda: None,
                lambda: self._initialize(polar, spectra, seed))
        corr = self._correlation(spectra, self.template)
        weights = self._weights(corr)
        energy = (tf.reduce_sum(tf.square(polar) * self._area, axis=[1, 2])
                  + tf.reduce_sum(tf.square(self.template) * self._area))
        residual = energy - 2.0 * tf.reduce_sum(weights * corr, axis=-1)  # E_w ||x - T_s||²
        mu = self.momentum
        self.template.assign((1 - mu) * self.template
                             + mu * tf.reduce_mean(self._aligned(spectra, weights), axis=0))
        self.noise_variance.assign((1 - mu) * self.noise_variance
                                   + mu * tf.reduce_mean(residual) / self._total_area)
        return self.angles(weights)

    def get_config(self) -> dict:
        return {**super().get_config(), "image_size": self.image_size,
                "num_angles": self.num_angles, "momentum": self.momentum}


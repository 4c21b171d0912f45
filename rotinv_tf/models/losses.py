"""Loss terms of the method, as pure tensor functions (each returns a batch mean)."""
from typing import Callable

import tensorflow as tf

from data_pipeline.angles import wrap_angle


def angle_difference(true_angles: tf.Tensor, predicted_angles: tf.Tensor,
                     wrap: bool) -> tf.Tensor:
    """θ - θ̂, wrapped to (-π, π] when angles span the full circle."""
    diff = tf.cast(true_angles, tf.float32) - tf.cast(predicted_angles, tf.float32)
    return wrap_angle(diff) if wrap else diff


def angle_loss(true_angles: tf.Tensor, predicted_angles: tf.Tensor, wrap: bool) -> tf.Tensor:
    """The paper's angle loss exp(|θ - θ̂|) - 1, mean over the batch."""
    return tf.reduce_mean(tf.exp(tf.abs(angle_difference(true_angles, predicted_angles, wrap))) - 1.0)


RECONSTRUCTION_NORMS = ("l1_l2", "l2")


def reconstruction_loss(images: tf.Tensor, reconstructions: tf.Tensor,
                        norm: str = "l1_l2") -> tf.Tensor:
    """The per-image reconstruction norm, mean over the batch: `l1_l2`, ||x - x̂||₂ + ||x - x̂||₁
    (the paper's Eq. 5 norms); `l2`, √P·||x - x̂||₂ (P pixels).

    Norms, not the per-pixel means of the authors' code (`F.l1_loss + F.mse_loss`), because the
    WGAN-GP critic is held to a gradient norm of about 1 per image: beside it, these norms give the
    decoder a gradient of norm 1 (L2 term) + √P (L1 term) per image, so the paper's weight 1 on
    -D(x̂) makes the critic's pull about 1/(1 + √P) of the reconstruction's (1/41 at 40x40): a
    regulariser. Per-pixel means divide the reconstruction gradient by P (norm ≈ 1/√P), so with
    equal weights the critic would outpull it ~√P times (40x); the authors' critic had no gradient
    penalty (their weight clipping was a no-op), so their balance does not carry over.

    `l2` keeps that balance (its gradient norm is √P per image, as the L1 term's) without the L1
    term, whose optimum is each pixel's conditional median: where one noisy input says little
    about the target (SNR-0.1 particles whose hinge only moves a faint lobe), the median of each
    pixel over the plausible targets is the data set's median image, and L1 rewards no partial
    information, so the decoder stays there (ours on the simulated particles: validation MSE
    0.00106, the median training image's 0.00103, the mean's 0.00091). The L2 norm's gradient is
    the residual's direction: any information about the target lowers it.
    """
    if norm not in RECONSTRUCTION_NORMS:
        raise ValueError(f"norm must be one of {', '.join(RECONSTRUCTION_NORMS)}, got {norm!r}")
    diff = tf.reshape(tf.cast(images, tf.float32) - tf.cast(reconstructions, tf.float32),
                      [tf.shape(images)[0], -1])
    l2 = tf.sqrt(tf.reduce_sum(tf.square(diff), axis=1) + 1e-12)
    if norm == "l2":
        return tf.reduce_mean(tf.sqrt(tf.cast(tf.shape(diff)[1], tf.float32)) * l2)
    l1 = tf.reduce_sum(tf.abs(diff), axis=1)
    return tf.reduce_mean(l2 + l1)


def gradient_penalty(critic: Callable[[tf.Tensor], tf.Tensor], real: tf.Tensor, fake: tf.Tensor,
                     alpha: tf.Tensor) -> tf.Tensor:
    """WGAN-GP penalty mean((||∇D(x̃)||₂ - 1)²) at x̃ = real + alpha (fake - real).

    `alpha` is [B, 1, 1, 1], drawn by the caller so this stays a pure function.
    """
    real = tf.convert_to_tensor(real)
    interpolates = real + alpha * (tf.convert_to_tensor(fake) - real)
    with tf.GradientTape() as tape:
        tape.watch(interpolates)
        scores = critic(interpolates)
    grads = tf.reshape(tape.gradient(scores, interpolates), [tf.shape(real)[0], -1])
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=1) + 1e-12)
    return tf.reduce_mean(tf.square(norms - 1.0))


def batch_covariances(latent: tf.Tensor, features: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(latent covariance [D, D], latent/feature covariance [D, F]) over the batch ([B, D],
    [B, F]), each feature standardised to unit variance (0 for a constant one)."""
    latent = tf.cast(latent, tf.float32)
    latent = latent - tf.reduce_mean(latent, axis=0, keepdims=True)
    features = tf.cast(features, tf.float32)
    features = features - tf.reduce_mean(features, axis=0, keepdims=True)
    features *= tf.math.rsqrt(tf.reduce_mean(tf.square(features), axis=0, keepdims=True) + 1e-8)
    count = tf.cast(tf.shape(latent)[0], tf.float32)
    return (tf.matmul(latent, latent, transpose_a=True) / count,
            tf.matmul(latent, features, transpose_a=True) / count)


def linear_readout_r2(latent_covariance: tf.Tensor, cross_covariance: tf.Tensor,
                      ridge: float = 1e-3) -> tf.Tensor:
    """Σ over unit-variance features of the R² of the best linear read-out of each from the
    latent, c_fᵀ Σ⁻¹ c_f, from the covariances of `batch_covariances` (Σ ridged by `ridge` x its
    mean variance): what a linear adversary (probe) finds. Unlike per-latent correlations it
    also sees a feature hidden in a low-variance direction, as z₁ - z₂ for z₁,₂ = s ± εf."""
    size = tf.shape(latent_covariance)[0]
    regularised = latent_covariance + (ridge * tf.linalg.trace(latent_covariance)
                                       / tf.cast(size, tf.float32) + 1e-8) * tf.eye(size)
    return tf.reduce_sum(cross_covariance * tf.linalg.solve(regularised, cross_covariance))

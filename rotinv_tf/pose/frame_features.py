"""`FrameFeatures`: what a learned-frame model serves as each particle's features.

The particle turned into its learned frame is masked to a central disc (`mask_radius` of the box
width, soft edge) and projected onto the leading `num_axes` principal axes of the training
particles so turned and masked (fitted once after training, `fit`; the mask is folded into the
axes, so serving is one matrix product), and, with several templates, the frame's class posterior
is appended, scaled to `class_weight` of the projections' spread. Both are rotation invariant up
to the frame angle's error. The three are settings of the model (`AutoencoderConfig.feature_*`),
their defaults tuned as below. Why not the encoder's latent: on poses.py's three-view hinge stacks (1,000 particles, 8 or
40 epochs, issue 15) k-means on the content latent found the (conformation bin, view) pairs with
ARI 0.25-0.27 at SNR 1 and 0.03-0.06 at SNR 0.1, and the decoded canonical images 0.26-0.36 /
0.02-0.09, where the frame's turned particles reached 0.63-0.65 / 0.31-0.37, as classical
alignment + PCA does. Why the mask, fewer axes and a lighter class weight: at SNR 0.1 the pixels
outside the particle and the trailing axes are noise that k-means spreads its clusters over; on a
tuning stack of that benchmark (simulation seed 1; mean ARI over 4 k-means seeds), a radius of a
quarter of the box, 12 axes and the class posterior at a quarter of the projections' spread,
instead of no mask, 20 axes and half, raised the ARI from 0.30 to 0.40 at SNR 0.1 and from 0.64
to 0.69 at SNR 1; the Spearman ρ of the hinge went from 0.86 to 0.88 and stayed 0.98 (8 axes:
ARI 0.40 / 0.66). Low-pass filtering, whitening and subtracting the class templates did not help.
"""
import keras
import numpy as np
import tensorflow as tf


def disc_mask(image_size: int, mask_radius: float) -> np.ndarray:
    """[N * N] weights: 1 within `mask_radius` * N of the box centre, 0 a pixel beyond, linear
    between."""
    centre = (image_size - 1) / 2
    yy, xx = np.mgrid[:image_size, :image_size]
    radius = np.hypot(yy - centre, xx - centre)
    return np.clip(mask_radius * image_size + 1 - radius, 0, 1).reshape(-1)


class FrameFeatures(keras.layers.Layer):
    """`fit(framed)` once; `features(framed, posterior)` -> [B, num_axes (+ K)]."""

    def __init__(self, image_size: int, num_classes: int, num_axes: int, mask_radius: float,
                 class_weight: float, **kwargs):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.num_classes = num_classes
        self.num_axes = num_axes
        self.mask_radius = mask_radius
        self.class_weight = class_weight
        pixels = image_size * image_size
        self.mean = self.add_weight(shape=(pixels,), initializer="zeros", trainable=False,
                                    name="feature_mean")
        self.axes = self.add_weight(shape=(pixels, num_axes), initializer="zeros",
                                    trainable=False, name="feature_axes")
        self.class_scale = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                           name="class_scale")

    def _projected(self, framed: tf.Tensor) -> tf.Tensor:
        flat = tf.reshape(tf.cast(framed, tf.float32), [tf.shape(framed)[0], -1])
        return tf.matmul(flat - self.mean, self.axes)

    def fit(self, framed: np.ndarray) -> None:
        """Principal axes of `framed` particles [B, N, N, 1] within the disc mask (the mask folded
        into the kept axes), and the class posterior's scale."""
        flat = np.asarray(framed, np.float64).reshape(len(framed), -1)
        mean = flat.mean(axis=0)
        mask = disc_mask(self.image_size, self.mask_radius)
        _, _, axes = np.linalg.svd((flat - mean) * mask, full_matrices=False)
        kept = np.zeros((flat.shape[1], self.num_axes))
        kept[:, :min(self.num_axes, len(axes))] = axes[:self.num_axes].T
        self.mean.assign(mean.astype(np.float32))
        self.axes.assign((mask[:, None] * kept).astype(np.float32))
        coords = self._projected(framed).numpy()
        self.class_scale.assign(self.class_weight * float(np.sqrt(np.mean(np.sum(coords ** 2, 1)))))

    def features(self, framed: tf.Tensor, posterior: tf.Tensor) -> tf.Tensor:
        """Projections of `framed` particles, and their class probabilities `posterior` [B, K]
        (scaled) where there are several classes."""
        coords = self._projected(framed)
        if self.num_classes < 2:
            return coords
        return tf.concat([coords, self.class_scale * tf.cast(posterior, tf.float32)], axis=1)

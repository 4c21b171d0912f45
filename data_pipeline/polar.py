"""Resampling images onto a polar grid, where an in-plane rotation becomes a circular shift.

Grid point (r, a) lies at radius `radii[r]` pixels from the image centre ((W-1)/2, (H-1)/2), at
angle φ_a = 2π a / num_angles counter-clockwise from the +x (column) axis as the image is displayed
(row 0 at the top): the rotation convention of `data_pipeline.rotation`. So for
`observed = rotate(image, θ)`, `to_polar(observed)[:, r, a] ≈ to_polar(image)[:, r, a - θ/Δφ]`:
the polar image is rolled by +θ along its angle axis (exactly for θ a multiple of 90° when
`num_angles` is a multiple of 4).
"""
import math

import numpy as np
import tensorflow as tf


def default_radii(image_size: int, num_radii: int | None = None, min_radius: float = 1.0
                  ) -> np.ndarray:
    """Radii from `min_radius` to the largest circle inside the box (`image_size`/2 - 1), one per
    pixel unless `num_radii` is given."""
    max_radius = image_size / 2 - 1
    count = num_radii or int(round(max_radius - min_radius)) + 1
    return np.linspace(min_radius, max_radius, count)


def _bilinear_taps(image_size: int, radii: np.ndarray, num_angles: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices [4, R, A] and weights [4, R, A] of each grid point's four neighbours."""
    centre = (image_size - 1) / 2
    phi = 2 * math.pi * np.arange(num_angles) / num_angles
    cols = centre + radii[:, None] * np.cos(phi)[None, :]
    rows = centre - radii[:, None] * np.sin(phi)[None, :]
    c0, r0 = np.floor(cols), np.floor(rows)
    indices, weights = [], []
    for dr in (0, 1):
        for dc in (0, 1):
            c, r = c0 + dc, r0 + dr
            weight = (1 - np.abs(cols - c)) * (1 - np.abs(rows - r))
            inside = (c >= 0) & (c < image_size) & (r >= 0) & (r < image_size)
            indices.append(np.where(inside, r * image_size + c, 0).astype(np.int32))
            weights.append(np.where(inside, weight, 0.0).astype(np.float32))
    return np.stack(indices), np.stack(weights)


class PolarResampler:
    """`resampler(images)`: [B, N, N] or [B, N, N, 1] -> [B, R, A], bilinear, in the images' dtype.

    The sampling taps are computed once, so calls are one gather and a weighted sum (differentiable
    with respect to the images, and usable inside `tf.function` and on an accelerator).
    """

    def __init__(self, image_size: int, num_angles: int, radii: np.ndarray | None = None):
        self.image_size = int(image_size)
        self.num_angles = int(num_angles)
        self.radii = default_radii(image_size) if radii is None else np.asarray(radii, np.float64)
        indices, weights = _bilinear_taps(self.image_size, self.radii, self.num_angles)
        self._indices = tf.constant(indices)
        self._weights = tf.constant(weights)

    @property
    def angle_step(self) -> float:
        """Radians between neighbouring angle bins."""
        return 2 * math.pi / self.num_angles

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        flat = tf.reshape(images, [tf.shape(images)[0], self.image_size * self.image_size])
        taps = tf.gather(flat, self._indices, axis=1)  # [B, 4, R, A]
        return tf.reduce_sum(taps * tf.cast(self._weights, flat.dtype), axis=1)

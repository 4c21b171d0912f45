"""Resampling images onto a polar grid, where an in-plane rotation becomes a circular shift.

Grid point (r, a) lies at radius `radii[r]` pixels from the image centre ((W-1)/2, (H-1)/2), at
angle φ_a = 2π a / num_angles counter-clockwise from the +x (column) axis as the image is displayed
(row 0 at the top): the rotation convention of `data_pipeline.rotation`. So for
`observed = rotate(image, θ)`, `to_polar(observed)[:, r, a] ≈ to_polar(image)[:, r, a - θ/Δφ]`:
the polar image is rolled by +θ along its angle axis (exactly for θ a multiple of 90° when
`num_angles` is a multiple of 4).
"""
import functools
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


def _image_taps(image_size: int, radii: np.ndarray, num_angles: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Flat polar-grid indices [4, N·N] and weights [4, N·N] of each pixel's four neighbours
    (two rings, two angle bins; radii outside the rings' range clamped to it)."""
    centre = (image_size - 1) / 2
    y, x = np.mgrid[:image_size, :image_size].astype(np.float64)
    dx, dy = (x - centre).ravel(), (centre - y).ravel()  # +y up, as the grid's angles
    ring = np.interp(np.hypot(dx, dy), radii, np.arange(len(radii)))
    r0 = np.minimum(np.floor(ring).astype(np.int64), len(radii) - 1)
    r1 = np.minimum(r0 + 1, len(radii) - 1)
    fr = ring - r0
    bins = np.mod(np.arctan2(dy, dx), 2 * np.pi) / (2 * np.pi) * num_angles
    a0 = np.floor(bins).astype(np.int64) % num_angles
    a1 = (a0 + 1) % num_angles
    fa = bins - np.floor(bins)
    indices = np.stack([r0 * num_angles + a0, r0 * num_angles + a1,
                        r1 * num_angles + a0, r1 * num_angles + a1]).astype(np.int32)
    weights = np.stack([(1 - fr) * (1 - fa), (1 - fr) * fa, fr * (1 - fa), fr * fa])
    return indices, weights.astype(np.float32)


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

    @functools.cached_property
    def _image_taps(self) -> tuple[np.ndarray, np.ndarray]:
        return _image_taps(self.image_size, self.radii, self.num_angles)

    def to_image(self, polar: tf.Tensor) -> tf.Tensor:
        """Polar images [B, R, A] -> images [B, N, N, 1], the way back onto the pixel grid: each
        pixel bilinear in radius (clamped to the rings') and angle."""
        indices, weights = self._image_taps
        polar = tf.convert_to_tensor(polar)
        flat = tf.reshape(polar, [tf.shape(polar)[0], -1])
        pixels = tf.reduce_sum(tf.gather(flat, indices, axis=1) * tf.cast(weights, flat.dtype),
                               axis=1)
        return tf.reshape(pixels, [-1, self.image_size, self.image_size, 1])

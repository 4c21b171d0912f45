"""Batched in-plane rotation and translation of images, built on the core TF op
`ImageProjectiveTransformV3`, and random or fixed angles to rotate by (the convention:
`data_pipeline/angles.py`).

Offsets (`translate`, and every offset in the project) are pixels (x, y): x along the columns, y down
the rows, the particle's centre at the box centre ((N-1)/2, (N-1)/2) plus the offset; rotating an
image by θ moves a point at offset (x, y) to `rotated_offsets`' (x cos θ + y sin θ,
-x sin θ + y cos θ). RELION's origins differ in sign, units and centre: `formats.star.relion_origins`.

`ImageProjectiveTransformV3` has CPU and GPU kernels, so calling `rotate` inside a compiled train
step keeps the augmentation on the accelerator.
"""
import math

import keras
import numpy as np
import tensorflow as tf

from data_pipeline.settings import ANGLE_DISTRIBUTIONS



def rotation_transforms(angles: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Projective transforms [batch, 8] that rotate images of size height x width by `angles`.

    The op maps each output pixel (x, y) to the input point it samples, so this is the inverse
    rotation, written about the image centre.
    """
    angles = tf.cast(angles, tf.float32)
    cos, sin = tf.cos(angles), tf.sin(angles)
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    zeros = tf.zeros_like(angles)
    return tf.stack(
        [cos, -sin, cx - cos * cx + sin * cy,
         sin, cos, cy - sin * cx - cos * cy,
         zeros, zeros], axis=1)


def translation_transforms(offsets: tf.Tensor) -> tf.Tensor:
    """Projective transforms [batch, 8] that move images by `offsets` [batch, 2] (x, y) pixels:
    output pixel (x, y) samples the input at (x - dx, y - dy)."""
    offsets = tf.cast(offsets, tf.float32)
    ones, zeros = tf.ones_like(offsets[:, 0]), tf.zeros_like(offsets[:, 0])
    return tf.stack([ones, zeros, -offsets[:, 0], zeros, ones, -offsets[:, 1], zeros, zeros],
                    axis=1)


def rotated_offsets(offsets: tf.Tensor, angles: tf.Tensor) -> tf.Tensor:
    """Offsets [..., 2] (module docstring) after a rotation of the image by `angles` [...]."""
    cos, sin = tf.cos(angles), tf.sin(angles)
    x, y = offsets[..., 0], offsets[..., 1]
    return tf.stack([cos * x + sin * y, -sin * x + cos * y], axis=-1)


def rotate(images: tf.Tensor, angles: tf.Tensor, fill_value: float = 0.0,
           xla_compatible: bool = False) -> tf.Tensor:
    """Rotates each image of a [batch, H, W, C] tensor by its own angle (`data_pipeline.angles`).

    Bilinear interpolation; pixels that come from outside the image take `fill_value`. The default
    uses `ImageProjectiveTransformV3`, which XLA cannot compile; `xla_compatible=True` computes the
    same rotation with gathers, for train steps compiled with `jit_compile`.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    return _transformed(images, rotation_transforms(angles, shape[1], shape[2]), fill_value,
                        xla_compatible)


def translate(images: tf.Tensor, offsets: tf.Tensor, fill_value: float | tf.Tensor = 0.0,
              xla_compatible: bool = False) -> tf.Tensor:
    """Moves each image of a [batch, H, W, C] tensor by its own offset [batch, 2] (x, y) pixels
    (bilinear: exact for whole pixels); what comes in from outside takes `fill_value` (a scalar,
    or one per image [batch])."""
    images = tf.convert_to_tensor(images)
    fill = tf.reshape(tf.cast(fill_value, images.dtype), [-1, 1, 1, 1])
    return _transformed(images - fill, translation_transforms(offsets), 0.0,
                        xla_compatible) + fill


def recentred(images: tf.Tensor, offsets: tf.Tensor, xla_compatible: bool = False) -> tf.Tensor:
    """Images [batch, H, W, C] moved back by their `offsets` [batch, 2] (each particle to the box
    centre), what comes in at the edges taking each image's mean."""
    images = tf.convert_to_tensor(images)
    mean = tf.reduce_mean(images, axis=[1, 2, 3])
    return translate(images, -tf.cast(offsets, tf.float32), mean, xla_compatible)


def _transformed(images: tf.Tensor, transforms: tf.Tensor, fill_value: float,
                 xla_compatible: bool) -> tf.Tensor:
    """`images` [batch, H, W, C] through projective `transforms` [batch, 8], bilinear."""
    dtype = images.dtype
    shape = tf.shape(images)
    if xla_compatible:
        rotated = _bilinear_sample(tf.cast(images, tf.float32), transforms, fill_value)
    else:
        rotated = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(images, tf.float32),
            transforms=transforms,
            output_shape=shape[1:3],
            fill_value=tf.constant(fill_value, tf.float32),
            interpolation="BILINEAR",
            fill_mode="CONSTANT")
    return tf.cast(rotated, dtype)


def _bilinear_sample(images: tf.Tensor, transforms: tf.Tensor, fill_value: float) -> tf.Tensor:
    """`ImageProjectiveTransformV3` (affine, bilinear, constant fill) written with gathers."""
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32),
                         indexing="ij")
    t = transforms[:, :, None, None]
    src_x = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]  # [B, H, W]
    src_y = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
    x0, y0 = tf.floor(src_x), tf.floor(src_y)
    flat = tf.reshape(images, [-1, channels])
    base = tf.range(batch)[:, None, None] * height * width
    out = tf.zeros([batch, height, width, channels], tf.float32)
    for dy in (0.0, 1.0):
        for dx in (0.0, 1.0):
            px, py = x0 + dx, y0 + dy
            weight = (1.0 - tf.abs(src_x - px)) * (1.0 - tf.abs(src_y - py))
            inside = ((px >= 0) & (px <= tf.cast(width - 1, tf.float32))
                      & (py >= 0) & (py <= tf.cast(height - 1, tf.float32)))
            index = base + tf.cast(py, tf.int32) * width + tf.cast(px, tf.int32)
            values = tf.gather(flat, tf.where(inside, index, 0))
            values = tf.where(inside[..., None], values, fill_value)
            out += weight[..., None] * values
    return out


def inscribed_disc(size: int, radius: float | None = None) -> np.ndarray:
    """[size, size] bool: the pixels within `radius` (default size / 2: the inscribed circle) of
    the rotation centre ((size - 1) / 2, (size - 1) / 2), the part of a box that every rotation
    keeps (`rotate` fills the corners from outside the box)."""
    radius = size / 2 if radius is None else radius
    axis = np.arange(size) - (size - 1) / 2
    return axis[:, None] ** 2 + axis[None, :] ** 2 <= radius ** 2


def _check_distribution(distribution: str) -> None:
    if distribution not in ANGLE_DISTRIBUTIONS:
        raise ValueError(
            f"unknown angle distribution {distribution!r}; expected one of {ANGLE_DISTRIBUTIONS}")


def sample_angles(batch_size: tf.Tensor, distribution: str = "uniform", scale: float = math.pi,
                  seed: keras.random.SeedGenerator | None = None) -> tf.Tensor:
    """Random angles [batch_size]: uniform on [-scale, scale) or normal N(0, scale²).

    `seed` is the model's `keras.random.SeedGenerator`, whose state is saved with the model.
    """
    _check_distribution(distribution)
    shape = tf.reshape(batch_size, [1])
    if distribution == "uniform":
        return (2.0 * keras.random.uniform(shape, seed=seed) - 1.0) * scale
    return keras.random.normal(shape, seed=seed) * scale


def fixed_angles(indices: tf.Tensor, seed: int, distribution: str = "uniform",
                 scale: float = math.pi) -> tf.Tensor:
    """Deterministic angles for evaluation: a pure function of (seed, element index).

    Every evaluation of a split therefore sees the same rotated inputs, whatever the batching.
    """
    _check_distribution(distribution)
    indices = tf.cast(tf.reshape(indices, [-1]), tf.int32)

    def one(index):
        pair = tf.stack([tf.constant(seed, tf.int32), index])
        if distribution == "uniform":
            return 2.0 * tf.random.stateless_uniform([], pair) - 1.0
        return tf.random.stateless_normal([], pair)

    return tf.map_fn(one, indices, fn_output_signature=tf.float32) * scale

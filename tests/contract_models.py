"""Small models that follow the model contract of docs/architecture.md, for export/inference tests.

`TinyContractModel` is a randomly initialised conv encoder + dense decoder: its numbers are
arbitrary but deterministic, which is all the export round-trip tests need. `TemplateMatcher` knows
the canonical image and finds each input's angle by rotational cross-correlation, so tests can
check angle conventions end to end without training anything; `ClassFrameMatcher` does the same
for a learned frame with several classes and serves its grades.
"""
import math

import keras
import numpy as np
import tensorflow as tf

from data_pipeline.rotation import rotate
from rotinv_tf.models.frames import LearnedFrame
from rotinv_tf.pose.template_frame import TemplateFrame


class TinyContractModel(keras.Model):
    """canonicalize/encode on normalised images; latent of size `latent_dim`."""

    def __init__(self, image_size: int, latent_dim: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.encoder = keras.Sequential([
            keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(latent_dim + 2),
        ])
        self.decoder = keras.Sequential([
            keras.layers.Dense(image_size * image_size),
            keras.layers.Reshape((image_size, image_size, 1)),
        ])

    def encode(self, images: tf.Tensor) -> dict:
        h = self.encoder(images)
        d = self.latent_dim
        return {"latent": h[:, :d], "angle": tf.atan2(h[:, d], h[:, d + 1])}

    def canonicalize(self, images: tf.Tensor) -> dict:
        encoded = self.encode(images)
        return {"canonical_image": self.decoder(encoded["latent"]), **encoded}

    def call(self, images: tf.Tensor) -> dict:
        return self.canonicalize(images)


class TemplateMatcher(keras.Model):
    """Angle = the rotation of `template` (normalised units) that best matches each image.

    `angle` follows the project convention `images ≈ rotate(canonical_image, angle)`, on a grid of
    `steps` angles; `latent` is the best correlation and its angle's cosine and sine.
    `canonical_image` is the input turned back by `-angle`, or with `returns_template` the template
    itself, as a decoder would return it (then a coarse grid leaves room for refinement).
    """

    def __init__(self, template: np.ndarray, steps: int = 360, returns_template: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.returns_template = returns_template
        template = np.asarray(template, np.float32).reshape(template.shape[0], template.shape[1], 1)
        self.template = self.add_weight(
            shape=template.shape, initializer=keras.initializers.Constant(template),
            trainable=False, name="template")
        self.grid = np.linspace(-math.pi, math.pi, steps, endpoint=False).astype(np.float32)

    def _angles(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        grid = tf.constant(self.grid)
        templates = rotate(tf.repeat(self.template[tf.newaxis], len(self.grid), axis=0), grid)
        flat_t = tf.reshape(templates, [len(self.grid), -1])
        flat_t -= tf.reduce_mean(flat_t, axis=1, keepdims=True)
        flat_t = tf.math.l2_normalize(flat_t, axis=1)
        flat_x = tf.reshape(images, [tf.shape(images)[0], -1])
        flat_x -= tf.reduce_mean(flat_x, axis=1, keepdims=True)
        flat_x = tf.math.l2_normalize(flat_x, axis=1)
        scores = tf.matmul(flat_x, flat_t, transpose_b=True)
        best = tf.argmax(scores, axis=1)
        return tf.gather(grid, best), tf.reduce_max(scores, axis=1)

    def encode(self, images: tf.Tensor) -> dict:
        angle, score = self._angles(images)
        return {"latent": tf.stack([score, tf.cos(angle), tf.sin(angle)], axis=1), "angle": angle}

    def canonicalize(self, images: tf.Tensor) -> dict:
        encoded = self.encode(images)
        if self.returns_template:
            canonical = tf.repeat(self.template[tf.newaxis], tf.shape(images)[0], axis=0)
        else:
            canonical = rotate(images, -encoded["angle"])
        return {"canonical_image": canonical, **encoded}

    def call(self, images: tf.Tensor) -> dict:
        return self.canonicalize(images)


def built(model: keras.Model, image_size: int) -> keras.Model:
    """`model`, built by calling it on a batch of zeros."""
    model(np.zeros((2, image_size, image_size, 1), np.float32))
    return model


class ClassFrameMatcher(keras.Model):
    """A learned frame that knows its class templates (`templates` [K, N, N], normalised units):
    a `TemplateFrame` holding them with per-pixel noise variance `noise_variance`, serving what a
    trained learned frame serves (angle, reference, its grades of each particle), without
    training."""

    frame = LearnedFrame  # its kind of frame, which exports record by name

    def __init__(self, templates: np.ndarray, noise_variance: float, num_angles: int = 64,
                 **kwargs):
        super().__init__(**kwargs)
        templates = np.asarray(templates, np.float32)[..., None]
        self.template_frame = TemplateFrame(templates.shape[1], num_angles,
                                            num_classes=len(templates))
        self.template_frame.template.assign(self.template_frame.polar(templates))
        self.template_frame.noise_variance.assign(noise_variance)
        self.template_frame.initialized.assign(1.0)

    def encode(self, images: tf.Tensor) -> dict:
        weights, grades = self.template_frame.assessment(images)
        return {"latent": grades["class_probabilities"],
                "angle": self.template_frame.angles(weights)[0], **grades}

    def canonicalize(self, images: tf.Tensor) -> dict:
        encoded = self.encode(images)
        classes = tf.argmax(encoded["class_probabilities"], axis=1, output_type=tf.int32)
        return {"canonical_image": rotate(images, -encoded["angle"]),
                "reference": tf.gather(self.template_frame.images(), classes), **encoded}

    def call(self, images: tf.Tensor) -> dict:
        return self.canonicalize(images)

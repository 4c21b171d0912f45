"""Batched, prefetched `tf.data` pipelines for training and evaluation, on any data set of `load`.

Both keep only the model's keys (`image`, `observed`, `angle`, `index` and a particle stack's CTF
values `ctf.CTF_FEATURES`, whichever exist) and apply
the training split's `Normalization` to `image` and `observed`. Training pipelines do not rotate:
the model samples angles and rotates on the device. Evaluation pipelines always carry `observed`
and `angle`: when the data has no angles, `angle = fixed_angles(index, seed)` and
`observed = rotate(image, angle)`, so every evaluation of a split sees the same inputs whatever the
batch size. That rotation is applied to the normalised image, as the model does in training, so the
pixels it brings in from outside the frame have the same value in both.
"""
import math
from typing import Any

import tensorflow as tf

from data_pipeline import datasets, rotation
from data_pipeline.ctf import CTF_FEATURES
from data_pipeline.preprocessing import Normalization
from data_pipeline.settings import STREAM_CACHE_BYTES, STREAMED_DATASETS

MODEL_KEYS = ("image", "observed", "angle", "index", *CTF_FEATURES)
IMAGE_KEYS = ("image", "observed")


def _model_inputs(dataset: tf.data.Dataset, normalization: Normalization) -> tf.data.Dataset:
    """Keeps the model's keys and normalises the images."""

    def select(element: dict) -> dict:
        return {key: normalization.normalize(value) if key in IMAGE_KEYS else value
                for key, value in element.items() if key in MODEL_KEYS}

    return dataset.map(select, num_parallel_calls=tf.data.AUTOTUNE)


def _split_bytes(dataset: tf.data.Dataset) -> float:
    """Bytes of an unbatched data set's tensors (infinite when its size or shapes are unknown)."""
    count = int(dataset.cardinality())
    if count < 0:
        return math.inf
    size = 0
    for spec in tf.nest.flatten(dataset.element_spec):
        if not spec.shape.is_fully_defined():
            return math.inf
        size += spec.shape.num_elements() * spec.dtype.size
    return float(count * size)


def train_input(name: str, batch_size: int, *, data_dir: str | None = None, seed: int = 0,
                shuffle_buffer: int = 10_000, drop_remainder: bool = True,
                **dataset_options: Any) -> tuple[tf.data.Dataset, Normalization]:
    """The training split: normalised, shuffled (seeded, anew each epoch), batched; cached in
    memory after the first epoch, but for the data sets streamed from their files every epoch
    (`settings.STREAMED_DATASETS`: a particle stack may be larger than memory) whose split is
    larger than `settings.STREAM_CACHE_BYTES`. Caching changes no batch: the shuffle sees the
    same elements in the same order either way.

    `dataset_options` go to `datasets.load` (mnist_dir, manual_dir, stack, star, simulation).
    """
    dataset, normalization = datasets.load(name, "train", data_dir, **dataset_options)
    dataset = _model_inputs(dataset, normalization)
    if name not in STREAMED_DATASETS or _split_bytes(dataset) <= STREAM_CACHE_BYTES:
        dataset = dataset.cache()
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE), normalization


def eval_input(name: str, batch_size: int, *, split: str = "test", data_dir: str | None = None,
               angle_seed: int = 1234, angle_distribution: str = "uniform",
               angle_scale: float = math.pi, normalization: Normalization | None = None,
               **dataset_options: Any) -> tuple[tf.data.Dataset, Normalization]:
    """An evaluation split in order, normalised, batched (last batch kept) and prefetched.

    Data without angles gets the fixed, seeded ones described in the module docstring.
    `normalization`: another data set's training normalisation to apply instead of this one's
    (a test set simulated apart from the training set, scored on the training set's scale).
    """
    dataset, own = datasets.load(name, split, data_dir, **dataset_options)
    normalization = normalization or own
    has_angles = "angle" in dataset.element_spec
    dataset = _model_inputs(dataset, normalization).batch(batch_size)
    if not has_angles:

        def add_rotation(batch: dict) -> dict:
            angle = rotation.fixed_angles(batch["index"], angle_seed, angle_distribution,
                                          angle_scale)
            return {**batch, "angle": angle, "observed": rotation.rotate(batch["image"], angle)}

        dataset = dataset.map(add_rotation, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), normalization

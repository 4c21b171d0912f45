"""The one preprocessing step shared by training, evaluation and the exported serving signature.

Pixels are mapped to the range the model trains on with the training split's statistics of the
canonical `image`: `(x - min) / (max - min)`, so clean images lie in [0, 1] (the scale on which the
paper reports MSE) and noisy observations are on the same scale. The statistics are computed once
per dataset version and stored as JSON beside it.
"""
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from data_pipeline.atomic import write_text

STATISTICS_FILE = "statistics.json"


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Statistics of a dataset's canonical images, and the normalisation they define."""

    mean: float
    std: float
    min: float
    max: float

    @property
    def scale(self) -> float:
        return (self.max - self.min) or 1.0

    def normalize(self, images: tf.Tensor) -> tf.Tensor:
        """Raw pixel values -> training range (clean images in [0, 1])."""
        return (tf.cast(images, tf.float32) - self.min) / self.scale

    def denormalize(self, images: tf.Tensor) -> tf.Tensor:
        """Training range -> raw pixel values."""
        return tf.cast(images, tf.float32) * self.scale + self.min

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Normalization":
        return cls(**{k: float(v) for k, v in json.loads(text).items()})


def compute_statistics(images: tf.data.Dataset) -> Normalization:
    """One streaming pass over a dataset of image tensors (any shape) -> Normalization."""
    count, total, total_sq = 0, 0.0, 0.0
    lo, hi = np.inf, -np.inf
    for batch in images.batch(1024).as_numpy_iterator():
        batch = batch.astype(np.float64)
        count += batch.size
        total += batch.sum()
        total_sq += np.square(batch).sum()
        lo, hi = min(lo, batch.min()), max(hi, batch.max())
    if count == 0:
        raise ValueError("cannot compute statistics of an empty dataset")
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean**2, 0.0)))
    return Normalization(mean=float(mean), std=std, min=float(lo), max=float(hi))


def mean_image(images: tf.data.Dataset, limit: int = 10_000) -> np.ndarray:
    """The pixel-wise mean of the first `limit` images of a dataset of [H, W, 1] tensors: the
    trivial baseline's constant output (enough images for a mean, without a pass over a big stack)."""
    total, count = None, 0
    for batch in images.take(limit).batch(1024).as_numpy_iterator():
        batch_sum = batch.astype(np.float64).sum(axis=0)
        total = batch_sum if total is None else total + batch_sum
        count += len(batch)
    if count == 0:
        raise ValueError("cannot average an empty dataset")
    return (total / count).astype(np.float32)


def load_or_compute_statistics(directory: str, images: tf.data.Dataset) -> Normalization:
    """Reads `statistics.json` in `directory`, or computes it from `images` and stores it there."""
    path = os.path.join(directory, STATISTICS_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            return Normalization.from_json(f.read())
    stats = compute_statistics(images)
    write_text(path, stats.to_json())
    return stats

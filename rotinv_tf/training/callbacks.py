"""Keras callbacks for training: the paper's step learning-rate decay, TensorBoard step scalars and
pictures, backups."""
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from data_pipeline.atomic import atomic_path, write_text
from data_pipeline.angles import wrap_angle
from rotinv_tf.models.ctf_corrections import observed_particle_ctf


class StepDecay(keras.callbacks.Callback):
    """lr = base × factor once `decay_epoch` epochs are done (paper: ×0.1 after epoch 200), on every
    optimizer of the model; logs `learning_rate` so TensorBoard shows it."""

    def __init__(self, optimizers: list, base_learning_rates: list[float], decay_epoch: int,
                 factor: float):
        super().__init__()
        self.optimizers = optimizers
        self.base_learning_rates = base_learning_rates
        self.decay_epoch = decay_epoch
        self.factor = factor

    def _rate(self, base: float, epoch: int) -> float:
        return base * (self.factor if 0 < self.decay_epoch <= epoch else 1.0)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for optimizer, base in zip(self.optimizers, self.base_learning_rates):
            optimizer.learning_rate.assign(self._rate(base, epoch))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(self.optimizers[0].learning_rate.numpy())


class CpuBudget(keras.callbacks.Callback):
    """Stops training after the step at which the process has spent `seconds` CPU seconds since
    `fit` began (`time.process_time`: every thread, validation and callbacks included); Keras then
    validates and ends the epoch as usual. Logs `train_cpu_seconds` each epoch. CPU time rather
    than wall time so that runs compared on a shared machine get the same work."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.process_time()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if time.process_time() - self.start >= self.seconds:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["train_cpu_seconds"] = time.process_time() - self.start


class Throughput(keras.callbacks.Callback):
    """Logs `train_images_per_second`: training steps only, validation excluded."""

    def __init__(self, global_batch_size: int):
        super().__init__()
        self.global_batch_size = global_batch_size

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start, self.last, self.steps = time.perf_counter(), None, 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps += 1
        self.last = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None and self.last is not None and self.last > self.start:
            logs["train_images_per_second"] = (
                self.steps * self.global_batch_size / (self.last - self.start))


class StepSummaries(keras.callbacks.Callback):
    """Every `every` training steps, the step's logs as `batch_<name>` scalars in `<log_dir>/train`
    (Keras' TensorBoard callback writes the epoch summaries)."""

    def __init__(self, log_dir: str, every: int):
        super().__init__()
        self.every = every
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        if logs and step % self.every == 0:
            with self.writer.as_default(), tf.summary.record_if(True):
                for name, value in logs.items():
                    tf.summary.scalar(f"batch_{name}", float(np.mean(value)), step=step)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.writer.flush()


def image_grid(columns: list[np.ndarray]) -> np.ndarray:
    """Stacks [B, H, W, 1] arrays side by side, one row per example (e.g. input | output | ground
    truth), all scaled to [0, 1] by the last column's range."""
    lo, hi = float(columns[-1].min()), float(columns[-1].max())
    scaled = [np.clip((c - lo) / ((hi - lo) or 1.0), 0.0, 1.0) for c in columns]
    rows = np.concatenate(scaled, axis=2)  # [B, H, k*W, 1]
    return np.concatenate(list(rows), axis=0)[None]  # [1, B*H, k*W, 1]


class EvalSummaries(keras.callbacks.Callback):
    """Each epoch: an image grid (input | decoder output | ground truth) and a histogram of θ̂ − θ
    on a fixed evaluation batch, written to `<log_dir>/validation`."""

    def __init__(self, log_dir: str, batch: dict, max_images: int = 8):
        super().__init__()
        self.batch = batch
        self.max_images = max_images
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "validation"))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        particle_ctf = observed_particle_ctf(self.batch)
        out = self.model.canonicalize(self.batch["observed"], **(
            {"particle_ctf": particle_ctf} if getattr(self.model, "uses_ctf", False) else {}))
        errors = wrap_angle(out["angle"] - self.batch["angle"])
        shown = slice(0, self.max_images)
        grid = image_grid([np.asarray(self.batch["observed"][shown]),
                           np.asarray(out["canonical_image"][shown]),
                           np.asarray(self.batch["image"][shown])])
        # Keras' TensorBoard callback records only every `update_freq` steps: always record here.
        with self.writer.as_default(), tf.summary.record_if(True):
            tf.summary.image("input | decoder output | ground truth", grid, step=epoch)
            tf.summary.histogram("angle_error_rad", errors, step=epoch)
        self.writer.flush()


BACKUP_WEIGHTS = "latest.weights.h5"  # the model's weights, its optimizers' state included
BACKUP_METADATA = "training_metadata.json"  # {"epoch": epochs completed}


class EpochBackup(keras.callbacks.Callback):
    """At the end of every epoch, saves the model (weights and optimizer state) and the number of
    epochs done to `directory`, for `restore_backup`. Each file is written under a temporary name
    and renamed, so a process killed while saving leaves the previous backup whole."""

    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with atomic_path(os.path.join(self.directory, BACKUP_WEIGHTS)) as tmp:
            # Keras insists on the `.weights.h5` ending.
            self.model.save_weights(tmp + ".weights.h5", overwrite=True)
            os.replace(tmp + ".weights.h5", tmp)
        write_text(os.path.join(self.directory, BACKUP_METADATA),
                   json.dumps({"epoch": epoch + 1}))


def restore_backup(model: keras.Model, directory: str) -> int:
    """Loads the backup an `EpochBackup` left in `directory` into `model` (built, its optimizers
    too) and returns the epochs it had completed: the epoch to train next. 0, and the model left
    as it is, when `directory` holds no backup."""
    weights = os.path.join(directory, BACKUP_WEIGHTS)
    metadata = os.path.join(directory, BACKUP_METADATA)
    if not (os.path.isfile(weights) and os.path.isfile(metadata)):
        return 0
    model.load_weights(weights)
    with open(metadata) as f:
        return int(json.load(f)["epoch"])


class AverageMovingStatistics(keras.callbacks.Callback):
    """At the end of every epoch, sets batch norm's moving statistics to their mean over workers.

    Keras updates them from each worker's first replica, that is from each worker's own share of
    the data, so without this the workers' copies drift apart (and only the chief's would be
    saved). Put it before the callbacks that save the model."""

    def __init__(self, strategy: tf.distribute.Strategy):
        super().__init__()
        self.strategy = strategy

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        stats = [v for v in self.model.non_trainable_weights
                 if v.path.endswith(("moving_mean", "moving_variance"))]
        # One all-reduce of them all, flattened (the strategy reduces one tensor at a time).
        local = self.strategy.run(lambda: tf.concat([tf.reshape(v.value, [-1]) for v in stats], 0))
        means = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None)
        for variable, mean in zip(stats, tf.split(means, [math.prod(v.shape) for v in stats])):
            variable.assign(tf.reshape(mean, variable.shape))

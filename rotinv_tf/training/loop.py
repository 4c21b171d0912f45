"""Keras `fit`'s epochs as a short loop over `strategy.run`, for `MultiWorkerMirroredStrategy`.

Keras (3.15) `Model.fit` cannot start under that strategy on batches that are dicts: it first
all-reduces a batch to build the model, and the multi-worker strategy reduces one tensor at a
time. This loop runs the model's own `train_step`/`test_step` on every replica (they are written
per replica: `models/replicas.py`), averages their logs over replicas, validates each epoch, and
calls the same callbacks with the same logs (`val_` ones included) as `fit` does, with public Keras
APIs only.
"""
import itertools
from typing import Callable, Sequence

import keras
import tensorflow as tf


def _distributed(step: Callable[[dict], dict], strategy: tf.distribute.Strategy,
                 jit_compile: bool) -> Callable[[object], dict]:
    """`step` (a train or test step) on every replica's share of a distributed batch; its logs
    averaged over the replicas."""
    per_replica = tf.function(step, jit_compile=True) if jit_compile else step

    @tf.function(reduce_retracing=True)
    def run(batch: object) -> dict:
        logs = strategy.run(per_replica, args=(batch,))
        return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                for name, value in logs.items()}

    return run


def fit(model: keras.Model, strategy: tf.distribute.Strategy, data: tf.data.Dataset, *,
        epochs: int, steps_per_epoch: int | None, initial_epoch: int,
        validation_data: tf.data.Dataset, callbacks: Sequence[keras.callbacks.Callback],
        verbose: int) -> keras.callbacks.History:
    """Trains `model` as `model.fit(data, ...)` would with these arguments (`steps_per_epoch`
    batches of one iterator per epoch, or each epoch a fresh pass over `data` when None)."""
    train_step = _distributed(model.train_step, strategy, model.jit_compile)
    test_step = _distributed(model.test_step, strategy, model.jit_compile)
    train_batches = strategy.experimental_distribute_dataset(data)
    eval_batches = strategy.experimental_distribute_dataset(validation_data)
    repeated = iter(train_batches) if steps_per_epoch else None
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, verbose=verbose,
        epochs=epochs, steps=steps_per_epoch, model=model)
    model.stop_training = False
    callback_list.on_train_begin()
    logs, epoch_logs = {}, {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        batches = itertools.islice(repeated, steps_per_epoch) if repeated else train_batches
        for step, batch in enumerate(batches):
            callback_list.on_train_batch_begin(step)
            logs = train_step(batch)
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        epoch_logs.update({f"val_{name}": value for name, value in
                           _evaluate(model, test_step, eval_batches, callback_list).items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(epoch_logs)
    return model.history


def _evaluate(model: keras.Model, test_step: Callable[[object], dict], batches: object,
              callback_list: keras.callbacks.CallbackList) -> dict:
    """One pass of `test_step` over `batches` from reset metrics, as `fit` validates: its logs."""
    callback_list.on_test_begin()
    model.reset_metrics()
    logs = {}
    for step, batch in enumerate(batches):
        callback_list.on_test_batch_begin(step)
        logs = test_step(batch)
        callback_list.on_test_batch_end(step, logs)
    callback_list.on_test_end(logs)
    return logs

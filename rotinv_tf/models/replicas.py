"""The `tf.distribute` plumbing a custom `train_step` needs, in one place for every model.

Under a `MirroredStrategy` each replica runs `train_step` on its share of the global batch:
- a model's `keras.random.SeedGenerator` state is mirrored, so replicas drawing n numbers each would
  all draw the same ones: `draw` gives each replica its own slice of one global draw;
- gradients are summed over replicas, so a replica's loss is divided by their number (and scaled
  for a `LossScaleOptimizer`): `minimize`;
- an optimizer step taken on some steps only (the critic's) all-reduces its gradients, which
  `tf.distribute` refuses inside a `tf.cond` in replica context: `run_if`.
With the default strategy each is the plain single-device operation.
"""
from typing import Callable

import keras
import tensorflow as tf


def num_replicas() -> int:
    """Replicas of the current strategy (1 outside any)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def draw(sample: Callable[[tf.Tensor], tf.Tensor], batch_size: tf.Tensor) -> tf.Tensor:
    """`sample(n)` (n random rows) for this replica's `batch_size` examples, different on every
    replica: each draws rows for the global batch and keeps its own slice."""
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    if replicas == 1:
        return sample(batch_size)
    rows = sample(batch_size * replicas)
    start = context.replica_id_in_sync_group * batch_size
    return rows[start:start + batch_size]


def minimize(optimizer: keras.optimizers.Optimizer, losses: Callable[[], dict],
             variables: list, key: str = "loss") -> dict:
    """Computes `losses()` (a dict whose `key` is a mean over this replica's examples) and takes
    one optimizer step on it, scaled so that the gradients summed over replicas are those of the
    global batch's mean (and for a `LossScaleOptimizer`). Returns the dict."""
    with tf.GradientTape() as tape:
        out = losses()
        scaled = optimizer.scale_loss(out[key] / num_replicas())
    optimizer.apply(tape.gradient(scaled, variables), variables)
    return out


def run_if(condition: tf.Tensor, step: Callable[..., object], *args: object) -> None:
    """`step(*args)` on every replica when `condition` (the same on all replicas) is true.

    The branch is taken in cross-replica context, and the taken branch runs `step` on each
    replica, so `step` may all-reduce (apply an optimizer). With the default strategy this is a
    plain `tf.cond`."""

    def branch(strategy: tf.distribute.Strategy, condition, *args) -> None:
        def run() -> tf.Tensor:
            strategy.extended.call_for_each_replica(step, args=args)
            return tf.constant(True)

        take = strategy.experimental_local_results(condition)[0]
        tf.cond(take, run, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(branch, args=(condition, *args))

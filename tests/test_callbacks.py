"""Training callbacks on a tiny Keras model: the CPU-time budget stops a run early."""
import time

import keras
import numpy as np

from rotinv_tf.training.callbacks import CpuBudget


class _SlowStep(keras.callbacks.Callback):
    """Burns CPU in every step, so that a budget is spent after a known number of steps."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        end = time.process_time() + self.seconds
        while time.process_time() < end:
            pass


def _fit(budget: float, epochs: int = 3) -> dict:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.zeros((40, 2), np.float32), np.zeros((40, 1), np.float32)
    history = model.fit(x, y, batch_size=4, epochs=epochs, validation_data=(x, y), verbose=0,
                        callbacks=[_SlowStep(0.02), CpuBudget(budget)])
    return history.history


def test_budget_stops_the_run_within_the_first_epoch_and_still_validates():
    history = _fit(budget=0.05)  # each epoch of 10 steps burns >= 0.2 CPU s
    assert len(history["loss"]) == 1
    assert "val_loss" in history
    assert history["train_cpu_seconds"][0] >= 0.05


def test_a_large_budget_leaves_the_run_alone():
    history = _fit(budget=1e6)
    assert len(history["loss"]) == 3
    assert history["train_cpu_seconds"] == sorted(history["train_cpu_seconds"])

"""Training callbacks on a tiny Keras model: the CPU-time budget stops a run early; a backup
restores weights, optimizer state and the epoch to train next."""
import json
import os
import time

import keras
import numpy as np

from rotinv_tf.training.callbacks import (BACKUP_METADATA, BACKUP_WEIGHTS, CpuBudget,
                                          EpochBackup, restore_backup)


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


def _dense() -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.1), "mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_a_backup_restores_weights_optimizer_state_and_the_next_epoch(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(2, 8, 2)).astype(np.float32)
    trained = _dense()
    trained.fit(x, y[:, :1], batch_size=4, epochs=3, verbose=0,
                callbacks=[EpochBackup(str(tmp_path))])
    assert sorted(os.listdir(tmp_path)) == sorted([BACKUP_METADATA, BACKUP_WEIGHTS])
    assert json.loads((tmp_path / BACKUP_METADATA).read_text()) == {"epoch": 3}

    restored = _dense()
    assert restore_backup(restored, str(tmp_path)) == 3
    for a, b in zip(trained.weights + trained.optimizer.variables,
                    restored.weights + restored.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(restored.optimizer.iterations) == 6  # 3 epochs of 2 steps


def test_no_backup_leaves_the_model_alone(tmp_path):
    model = _dense()
    before = [np.asarray(w) for w in model.weights]
    assert restore_backup(model, str(tmp_path / "missing")) == 0
    (tmp_path / BACKUP_WEIGHTS).write_text("")  # weights without their epoch: not a backup
    assert restore_backup(model, str(tmp_path)) == 0
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, np.asarray(b))

"""The private Keras names multi-worker training relies on (`train_lib._adapt_to_multi_worker`
replaces `Model._maybe_symbolic_build`; `callbacks.WorkerBackup` writes the files
`BackupAndRestore` reads back from `_weights_path` and `_training_metadata_path`), checked by name:
a Keras release that renames one fails here, saying which, rather than as a silent misstep of a
two-worker run. `setup.cfg` pins the Keras versions these were tested with."""
import inspect
import json
import os

import keras
import numpy as np
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

from rotinv_tf.training.callbacks import WorkerBackup


def test_fit_still_builds_the_model_through_maybe_symbolic_build():
    assert "_maybe_symbolic_build" in inspect.getsource(TensorFlowTrainer.fit), \
        f"Keras {keras.__version__}: fit no longer calls _maybe_symbolic_build"
    assert callable(getattr(keras.Model, "_maybe_symbolic_build", None))


def test_a_worker_backup_is_what_backup_and_restore_resumes_from(tmp_path):
    """WorkerBackup's files, at the paths Keras' own attributes name, restore weights and epoch."""
    def model() -> keras.Model:
        built = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        built.compile(optimizer="sgd", loss="mse")
        return built

    saved = model()
    backup = WorkerBackup(str(tmp_path), str(tmp_path))
    backup.set_model(saved)
    backup.on_epoch_end(2)
    assert sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(p) for p in (backup._weights_path, backup._training_metadata_path))
    assert json.loads(open(backup._training_metadata_path).read())["epoch"] == 3

    restored = model()
    resume = keras.callbacks.BackupAndRestore(str(tmp_path), delete_checkpoint=False)
    history = restored.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=4, verbose=0,
                           callbacks=[resume])
    assert len(history.history["loss"]) == 1  # epoch 4 only: it resumed after the backup's 3

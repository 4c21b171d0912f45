"""The training program end to end on a tiny simulated set: learning, resume, export, bad flags."""
import glob
import json
import math
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from rotinv_tf import config as configs
from rotinv_tf.training import train_lib
from rotinv_tf.training.resolve import resolve
from rotinv_tf.config import Config
from tests.cli_output import user_facing_lines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SIMULATION = {"sim_image_size": 24, "sim_num_conformations": 6,
                   "sim_images_per_conformation": 64, "sim_test_conformations": 2, "sim_snr": 1.0,
                   "sim_seed": 3}


def _config(tmp_path, **overrides) -> Config:
    settings = dict(
        name="tiny", dataset="simulated_particles", **TINY_SIMULATION,
        data_dir=str(tmp_path / "tfds"), epochs=4, batch_size=32, learning_rate=2e-3,
        critic_learning_rate=2e-3, lr_decay_epoch=0, latent_dim=8, filters=8,
        model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "saved_models"))
    settings.update(overrides)
    return Config().replace(**settings)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("train")
    config = _config(tmp_path)
    return config, train_lib.train(config, verbose=0)


def test_training_reduces_error_and_exports(trained):
    config, result = trained
    history = result.history
    assert history["reconstruction_mse"][-1] < 0.2 * history["reconstruction_mse"][0]
    # Four short epochs teach the angle; the canonical image needs longer (test_autoencoder).
    assert history["val_angle_error_deg"][-1] < history["val_angle_error_deg"][0]
    assert history["loss"][-1] < history["loss"][0]
    assert result.export_path == os.path.join(config.runtime.export_dir, "tiny", "1")
    assert os.path.exists(os.path.join(result.export_path, "saved_model.pb"))
    # The run's config travels with it: in model_dir and in the SavedModel.
    trained = resolve(config)  # config.json records what `auto` became
    assert trained.model.autoencoder.frame == "supervised" != config.model.autoencoder.frame
    assert configs.load(os.path.join(config.runtime.model_dir, configs.CONFIG_FILE)) == trained
    assert configs.load(os.path.join(result.export_path, "assets", configs.CONFIG_FILE)) == trained
    tags = _summary_tags(os.path.join(config.runtime.model_dir, "logs"))
    assert {"validation/input | decoder output | ground truth", "validation/angle_error_rad",
            "train/epoch_learning_rate", "train/epoch_train_images_per_second",
            "validation/epoch_angle_error_deg", "train/batch_loss"} <= tags


def _summary_tags(log_dir: str) -> set:
    tags = set()
    for path in glob.glob(os.path.join(log_dir, "*", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            subdir = os.path.basename(os.path.dirname(path))
            tags.update(f"{subdir}/{value.tag}" for value in event.summary.value)
    return tags


def test_rerun_resumes_from_the_saved_epoch(trained, tmp_path, capsys):
    config, first = trained
    more = config.replace(epochs=config.schedule.epochs + 1)
    second = train_lib.train(more, verbose=0)
    # The rerun says what changed since the run it resumes.
    assert "epochs: 4 -> 5" in capsys.readouterr().out
    # Only the one missing epoch ran, on top of the restored optimizer state.
    assert len(second.history["loss"]) == 1
    assert second.export_path.endswith(os.path.join("tiny", "2"))
    train_images = 4 * 64 - 4 * 64 // 10  # 4 train conformations x 64, less every 10th
    steps_per_epoch = train_images // 32
    state = train_lib.build_model(more, 24)
    state.load_weights(os.path.join(config.runtime.model_dir, "checkpoints",
                                    "latest.weights.h5"))
    epochs = config.schedule.epochs + 1
    assert int(state.generator_optimizer.iterations) == epochs * steps_per_epoch
    assert int(state.critic_optimizer.iterations) == math.ceil(epochs * steps_per_epoch / 4)


def _train_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "rotinv_tf.train", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["--dataset=cifar"], "dataset"),
    (["--epochs=-1"], "epochs"),
    (["--critic_filters=0"], "critic_filters"),
    (["--architecture=resnet"], "architecture"),
    (["--stack_holdout_fraction=1.5"], "stack_holdout_fraction"),
    (["--flagfile=/nonexistent/missing.cfg"], "missing.cfg"),
    (["--no_such_flag=1"], "no_such_flag"),
])
def test_bad_flags_give_one_line_error(args, message, tmp_path):
    result = _train_cli(*args, f"--model_dir={tmp_path}/run", f"--export_dir={tmp_path}/out")
    assert result.returncode == 2
    lines = user_facing_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not os.path.exists(tmp_path / "out")


def test_cli_trains_from_a_flagfile_with_overrides(tmp_path):
    flagfile = tmp_path / "tiny.cfg"
    flagfile.write_text("\n".join([
        "--name=cli", "--dataset=simulated_particles", "--sim_image_size=16",
        "--sim_num_conformations=3", "--sim_images_per_conformation=32",
        "--sim_test_conformations=1", "--latent_dim=4", "--filters=4", "--critic_filters=2",
        "--epochs=5", "--batch_size=16", f"--data_dir={tmp_path}/tfds"]))
    result = _train_cli(f"--flagfile={flagfile}", "--epochs=1", f"--model_dir={tmp_path}/run",
                        f"--export_dir={tmp_path}/saved")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tensorboard --logdir" in result.stdout
    assert os.path.exists(tmp_path / "saved" / "cli" / "1" / "saved_model.pb")
    # The command-line --epochs=1 beat the flagfile's 5.
    metadata = json.loads((tmp_path / "run" / "checkpoints" / "training_metadata.json").read_text())
    assert metadata["epoch"] == 1


def test_spatial_vae_size_comes_from_the_config():
    config = Config().replace(model="spatial_vae", svae_hidden_units=16,
                              svae_num_hidden_layers=1)
    model = train_lib.build_model(config, image_size=8)
    assert (model.settings.hidden_units, model.settings.num_hidden_layers) == (16, 1)
    assert model.optimizer.built  # so that restore_backup restores its state, as the autoencoder's
    assert Config().model.spatial_vae.hidden_units == 500  # the original's default


def test_one_iterator_gives_each_epoch_the_batches_of_a_fresh_iterator():
    def shuffled() -> tf.data.Dataset:
        return (tf.data.Dataset.range(40).shuffle(100, seed=3, reshuffle_each_iteration=True)
                .batch(8, drop_remainder=True).prefetch(2))

    data = shuffled()
    fresh = [batch.numpy().tolist() for _ in range(3) for batch in data]
    repeated, steps = train_lib.one_iterator(shuffled(), None)
    assert steps == 5
    assert [batch.numpy().tolist() for batch in repeated.take(3 * steps)] == fresh
    assert fresh[:5] != fresh[5:10]  # each epoch reshuffled
    assert train_lib.one_iterator(data, 3) == (data, 3)  # as asked
    unknown = data.filter(lambda batch: True)
    assert train_lib.one_iterator(unknown, None) == (unknown, None)

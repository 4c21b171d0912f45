"""RotationInvariantAutoencoder: shapes, the update schedule, and learning on a tiny set."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline.rotation import rotate
from rotinv_tf.models import frames, networks
from rotinv_tf.models.frames import Inputs
from rotinv_tf.training import train_lib
from rotinv_tf.models.autoencoder import RotationInvariantAutoencoder
from rotinv_tf.config import Config


def _model(image_size=16, latent_dim=8, filters=8, **settings):
    keras.utils.set_random_seed(0)
    model = RotationInvariantAutoencoder(image_size, latent_dim=latent_dim, filters=filters,
                                         critic_filters=filters, **settings)
    model.compile(keras.optimizers.Adam(2e-3), keras.optimizers.Adam(2e-3))
    return model


def _blobs(n, size, seed=0):
    """Asymmetric images: a bright off-centre blob and a fainter one, positions varying a little."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) - (size - 1) / 2
    images = []
    for _ in range(n):
        ay, ax = rng.normal([-size / 5, 0], 0.5)
        by, bx = rng.normal([0, size / 6], 0.5)
        img = np.exp(-((yy - ay) ** 2 + (xx - ax) ** 2) / 4) \
            + 0.5 * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / 3)
        images.append(img)
    return np.stack(images)[..., None].astype(np.float32)


@pytest.mark.parametrize("size", [16, 28, 40])
def test_call_shapes(size):
    model = _model(size)
    canonical, angle = model(np.zeros((3, size, size, 1), np.float32))
    assert canonical.shape == (3, size, size, 1)
    assert angle.shape == (3,)
    out = model.canonicalize(np.zeros((5, size, size, 1), np.float32))
    assert out["latent"].shape == (5, 7)
    assert np.all(np.abs(out["angle"].numpy()) <= math.pi)


def test_critic_width_is_set_apart_from_the_encoder_and_decoder():
    model = RotationInvariantAutoencoder(16, latent_dim=8, filters=8, critic_filters=4)
    first_kernel = {name: getattr(model, name).layers[1].kernel.shape
                    for name in ("encoder", "critic")}
    assert first_kernel == {"encoder": (3, 3, 1, 8), "critic": (3, 3, 1, 4)}


def test_learned_frame_settings_come_from_the_config():
    config = Config().replace(latent_dim=8, filters=8, frame="learned", frame_angles=32,
                              frame_classes=3)
    model = train_lib.build_model(config, 16)
    assert model.frame.name == "learned"
    assert model.template_frame.template.shape[0] == 3
    assert (model.settings.frame_angles, model.settings.frame_classes) == (32, 3)


def test_the_config_offers_every_registered_frame_and_no_other():
    for name, frame in frames.FRAMES.items():
        assert frame.name == name
        Config().replace(frame=name).check()
    with pytest.raises(ValueError, match="frame"):
        Config().replace(frame="unregistered").check()


def test_paper_architecture_trains():
    keras.utils.set_random_seed(0)
    model = train_lib.build_model(Config().replace(latent_dim=8, architecture="paper"), 28)
    paper = networks.build_networks("paper", 28, 8)
    assert model.count_params() == sum(net.count_params() for net in paper)
    data = tf.data.Dataset.from_tensor_slices({"image": _blobs(16, 28)}).batch(8)
    logs = model.fit(data, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][-1])


def test_bad_settings_are_refused_in_one_message():
    with pytest.raises(ValueError, match="filters must be >= 1.*frame_angles must be"):
        RotationInvariantAutoencoder(16, filters=0, frame_angles=30)
    with pytest.raises(TypeError):
        RotationInvariantAutoencoder(16, no_such_setting=1)


def test_learned_frame_latent_does_not_turn_with_the_particle():
    """The latent is the encoder's of the particle in its frame: a rotated copy gets (up to
    interpolation) the same latent, which an untrained encoder of the raw particle would not."""
    keras.utils.set_random_seed(0)
    model = RotationInvariantAutoencoder(16, 8, filters=8, frame="learned", frame_angles=64)
    images = tf.constant(np.repeat(_blobs(1, 16), 64, axis=0))
    angles = np.random.default_rng(0).uniform(-np.pi, np.pi, 64).astype(np.float32)
    copies = rotate(images, angles)
    seed = keras.random.SeedGenerator(0)
    for _ in range(5):
        model.template_frame.update(copies, seed)
    latents = model.encode(copies)["latent"].numpy()
    spread = np.linalg.norm(latents - latents.mean(0), axis=1).mean()
    assert spread < 0.1 * np.linalg.norm(latents.mean(0))


def test_odd_image_size_is_rejected():
    with pytest.raises(ValueError, match="even"):
        RotationInvariantAutoencoder(27)


@pytest.mark.parametrize("ratio,expected_critic_updates", [
    ({"generator_steps_per_critic_step": 4}, 3),   # steps 1, 5, 9 of 10
    ({"generator_steps_per_critic_step": 1}, 10),
])
def test_update_schedule_counts(ratio, expected_critic_updates):
    model = _model(**ratio)
    data = tf.data.Dataset.from_tensor_slices({"image": _blobs(20, 16)}).batch(4).repeat()
    model.fit(data, steps_per_epoch=5, epochs=2, verbose=0)
    assert int(model.generator_optimizer.iterations) == 10
    assert int(model.critic_optimizer.iterations) == expected_critic_updates


def _inputs(model: RotationInvariantAutoencoder, batch: dict, training: bool):
    """A supervised model's (canonical, observed, angles, turn) of a `batch` without CTF."""
    view = model.correction.view(None)
    if training:
        return model.frame.training_inputs(batch, view, None, model.seed_generator)
    return model.frame.evaluation_inputs(batch, view, model.seed_generator)


def test_uses_dataset_angles_when_provided():
    """With `observed`/`angle` in the batch the model trains on them, not on its own rotations."""
    images = _blobs(8, 16)
    angles = np.full(8, 0.3, np.float32)
    batch = {"image": images, "observed": rotate(images, angles), "angle": angles}
    model = _model()
    image, observed, angle, _ = _inputs(model, batch, training=True)
    np.testing.assert_array_equal(angle, angles)
    np.testing.assert_array_equal(observed, batch["observed"])
    _, observed, angle, _ = _inputs(model, {"image": images}, training=True)
    assert not np.allclose(angle, angles)
    np.testing.assert_allclose(observed, rotate(images, angle), atol=1e-6)


def test_quarter_turn_augmentation_keeps_image_and_angle_consistent_in_training_only():
    images = _blobs(16, 24)
    angles = np.linspace(-3.0, 3.0, 16).astype(np.float32)
    batch = {"image": images, "observed": rotate(images, angles), "angle": angles}
    keras.utils.set_random_seed(0)
    model = RotationInvariantAutoencoder(24, latent_dim=8, filters=8, augment_quarter_turns=True)
    _, observed, angle, _ = _inputs(model, batch, training=True)
    turns = np.round(np.mod(angle.numpy() - angles, 2 * math.pi) / (math.pi / 2)) % 4
    assert len(set(turns)) > 1  # images get their own turns
    for i, k in enumerate(turns.astype(int)):  # exact pixel moves, angle advanced by k·90°
        np.testing.assert_array_equal(observed[i], np.rot90(batch["observed"][i], k))
    assert np.all(np.abs(angle) <= math.pi + 1e-6)
    _, observed, angle, _ = _inputs(model, batch, training=False)
    np.testing.assert_array_equal(angle, angles)


def test_learns_on_a_tiny_set():
    """A few epochs on 256 rotated blobs cut reconstruction MSE and angle error."""
    images = _blobs(256, 16)
    model = _model(adversarial_weight=0.0)
    eval_angles = np.linspace(-math.pi, math.pi, 64, endpoint=False).astype(np.float32)
    eval_batch = {"image": images[:64], "observed": rotate(images[:64], eval_angles),
                  "angle": eval_angles}
    eval_data = tf.data.Dataset.from_tensor_slices(eval_batch).batch(64)
    before = model.evaluate(eval_data, return_dict=True, verbose=0)
    train = tf.data.Dataset.from_tensor_slices({"image": images}).shuffle(256, seed=0) \
        .batch(32, drop_remainder=True).repeat()
    history = model.fit(train, steps_per_epoch=40, epochs=5, verbose=0).history
    after = model.evaluate(eval_data, return_dict=True, verbose=0)
    assert history["loss"][-1] < history["loss"][0]
    assert after["reconstruction_mse"] < 0.5 * before["reconstruction_mse"]
    assert after["angle_error_deg"] < 0.5 * before["angle_error_deg"]


@pytest.mark.parametrize("norm", ["l1_l2", "l2"])
def test_reconstruction_loss_follows_the_norm_setting(norm):
    from rotinv_tf.models import losses
    images = _blobs(4, 16)
    angles = np.full(4, 0.5, np.float32)
    model = _model(reconstruction_norm=norm)
    out = model._generator_losses(images, Inputs(images, rotate(images, angles), angles, None),
                                  training=False)
    expected = losses.reconstruction_loss(images, out["reconstructions"], norm)
    assert float(out["reconstruction_loss"]) == pytest.approx(float(expected), rel=1e-6)
    other = losses.reconstruction_loss(images, out["reconstructions"],
                                       "l2" if norm == "l1_l2" else "l1_l2")
    assert float(out["reconstruction_loss"]) != pytest.approx(float(other), rel=1e-3)

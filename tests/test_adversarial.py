"""The WGAN-GP terms point the right way: the critic learns to score real images above decoder
outputs, and the adversarial term moves the decoder's outputs toward what the critic calls real.
Flipping the sign of either term makes one of these tests fail."""
import keras
import numpy as np
import tensorflow as tf

from rotinv_tf.models.autoencoder import RotationInvariantAutoencoder

SIZE = 16


def _model(**weights) -> RotationInvariantAutoencoder:
    return RotationInvariantAutoencoder(SIZE, latent_dim=4, filters=4, critic_filters=4, seed=1,
                                        **weights)


def _compile(model: RotationInvariantAutoencoder, generator_lr: float, critic_lr: float) -> None:
    model.compile(generator_optimizer=keras.optimizers.Adam(generator_lr),
                  critic_optimizer=keras.optimizers.Adam(critic_lr))


def _images(level: float, n: int = 32) -> tf.Tensor:
    noise = np.random.default_rng(0).normal(0.0, 0.05, (n, SIZE, SIZE, 1))
    return tf.constant(level + noise, tf.float32)


def test_critic_updates_score_real_images_above_fakes():
    model = _model()
    _compile(model, generator_lr=0.0, critic_lr=1e-2)
    real, fake = _images(0.5), _images(-0.5)
    for _ in range(30):
        model._critic_update(real, fake)
    distance = model.trackers["wasserstein_distance"].result()
    scores = model.critic(real) - model.critic(fake)
    assert float(tf.reduce_mean(scores)) > 0.5
    assert float(distance) > 0.0


def test_adversarial_term_moves_decoder_output_toward_what_the_critic_calls_real():
    """With only the adversarial term on and a frozen critic that scores brightness, training
    the generator makes the decoder's outputs brighter."""
    model = _model(angle_weight=0.0, reconstruction_weight=0.0, adversarial_weight=1.0)
    model.critic = keras.Sequential([
        keras.Input((SIZE, SIZE, 1)), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros")])
    _compile(model, generator_lr=1e-2, critic_lr=0.0)
    images = _images(0.0)
    before = float(tf.reduce_mean(model(images)[0]))
    for _ in range(10):
        model.train_step({"image": images})
    after = float(tf.reduce_mean(model(images)[0]))
    assert after > before + 0.1

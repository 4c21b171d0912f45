"""Loss terms on hand-made inputs."""
import math

import numpy as np
import pytest
import tensorflow as tf

from rotinv_tf.models import losses


def test_angle_loss_matches_formula():
    true = np.array([0.0, 1.0, -0.5], np.float32)
    pred = np.array([0.0, 0.5, 0.5], np.float32)
    expected = np.mean(np.exp(np.abs(true - pred)) - 1.0)
    assert losses.angle_loss(true, pred, wrap=False).numpy() == pytest.approx(expected, rel=1e-6)


def test_angle_loss_wraps_across_pi_only_when_asked():
    true = np.array([math.pi - 0.05], np.float32)
    pred = np.array([-math.pi + 0.05], np.float32)
    wrapped = losses.angle_loss(true, pred, wrap=True).numpy()
    unwrapped = losses.angle_loss(true, pred, wrap=False).numpy()
    assert wrapped == pytest.approx(math.exp(0.1) - 1.0, rel=1e-4)
    assert unwrapped == pytest.approx(math.exp(2 * math.pi - 0.1) - 1.0, rel=1e-4)


def test_reconstruction_loss_is_l2_plus_l1_per_image_averaged():
    x = np.zeros((2, 2, 2, 1), np.float32)
    y = x.copy()
    y[0, 0, 0, 0] = 3.0
    y[0, 1, 1, 0] = 4.0  # image 0: l2 = 5, l1 = 7
    y[1] = -1.0  # image 1: l2 = 2, l1 = 4
    assert losses.reconstruction_loss(x, y).numpy() == pytest.approx((12 + 6) / 2, rel=1e-5)
    assert losses.reconstruction_loss(x, x).numpy() == pytest.approx(0.0, abs=1e-5)
    # l2: sqrt(4 pixels) x the L2 norm.
    assert losses.reconstruction_loss(x, y, "l2").numpy() == pytest.approx((10 + 4) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="norm must be one of"):
        losses.reconstruction_loss(x, y, "l1")


@pytest.mark.parametrize("norm, expected", [("l1_l2", 0.0), ("l2", 1 / 9)])
def test_l1_term_keeps_an_uninformed_output_at_the_median_and_l2_at_the_mean(norm, expected):
    """Targets: a lobe at one of nine pixels, equally likely. The constant output that minimises
    the loss is the per-pixel median (no lobe) with the paper's norms, the mean (a ninth of a lobe
    everywhere it may be) with `l2`: what a decoder answers when its input says nothing."""
    targets = np.eye(9, dtype=np.float32).reshape(9, 3, 3, 1)
    output = tf.Variable(np.full((1, 3, 3, 1), 0.2, np.float32))
    optimizer = tf.keras.optimizers.SGD(0.002)
    for _ in range(600):
        with tf.GradientTape() as tape:
            loss = losses.reconstruction_loss(targets, tf.repeat(output, 9, axis=0), norm)
        optimizer.apply_gradients([(tape.gradient(loss, output), output)])
    np.testing.assert_allclose(output.numpy().ravel(), expected, atol=0.02)


def test_gradient_penalty_equals_analytic_value_for_linear_critic():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(1, 4, 4, 1)).astype(np.float32)

    def critic(images):  # D(x) = <w, x>: gradient w everywhere
        return tf.reduce_sum(images * w, axis=[1, 2, 3])

    real = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
    fake = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
    alpha = rng.uniform(size=(3, 1, 1, 1)).astype(np.float32)
    expected = (np.linalg.norm(w) - 1.0) ** 2
    assert losses.gradient_penalty(critic, real, fake, alpha).numpy() == pytest.approx(
        expected, rel=1e-4)
    # A critic with unit-norm gradient pays no penalty.
    unit = w / np.linalg.norm(w)
    penalty = losses.gradient_penalty(lambda x: tf.reduce_sum(x * unit, axis=[1, 2, 3]),
                                      real, fake, alpha)
    assert penalty.numpy() == pytest.approx(0.0, abs=1e-5)


def test_paper_balance_gives_the_critic_one_over_one_plus_sqrt_pixels_of_the_pull():
    """What `reconstruction_loss`'s docstring says of the paper's weights (all 1): against a
    critic of gradient norm 1, the decoder's reconstruction gradient has norm 1 + √P at 40x40
    (P = 1600)."""
    from rotinv_tf.config import AutoencoderConfig
    config = AutoencoderConfig(adversarial_weight=1.0)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(1, 40, 40, 1)).astype(np.float32)
    signs = np.where(rng.uniform(size=images.shape) < 0.5, -1.0, 1.0).astype(np.float32)
    output = tf.Variable(images + 0.1 * signs)  # every pixel off by ±0.1
    w = rng.normal(size=images.shape).astype(np.float32)
    w /= np.linalg.norm(w)  # a linear critic D(x) = <w, x>, gradient norm 1
    with tf.GradientTape(persistent=True) as tape:
        reconstruction = config.reconstruction_weight * losses.reconstruction_loss(images, output)
        adversarial = config.adversarial_weight * -tf.reduce_sum(w * output)
    pull = {name: np.linalg.norm(tape.gradient(loss, output).numpy())
            for name, loss in (("reconstruction", reconstruction), ("critic", adversarial))}
    assert pull["critic"] / pull["reconstruction"] == pytest.approx(1 / 41, rel=1e-4)

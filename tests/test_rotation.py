"""The rotation op and angle sampling: direction, per-image angles, XLA path, determinism."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline.angles import wrap_angle, wrap_degrees
from data_pipeline.rotation import fixed_angles, inscribed_disc, rotate, sample_angles


def _smooth_images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    centres = rng.uniform(-size / 5, size / 5, (n, 2))
    return np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2)
                  / size).astype(np.float32)[..., None]


def test_rotation_by_zero_is_identity():
    x = np.random.default_rng(1).random((3, 10, 14, 2), dtype=np.float32)
    np.testing.assert_allclose(rotate(x, np.zeros(3, np.float32)), x, atol=1e-6)


@pytest.mark.parametrize("size", [7, 8])
def test_quarter_turn_matches_np_rot90(size):
    x = np.random.default_rng(2).random((2, size, size, 1), dtype=np.float32)
    rotated = rotate(x, np.full(2, math.pi / 2, np.float32)).numpy()
    np.testing.assert_allclose(rotated, np.rot90(x, k=1, axes=(1, 2)), atol=1e-5)
    assert not np.allclose(rotated, np.rot90(x, k=-1, axes=(1, 2)), atol=1e-3)


def test_rotate_then_rotate_back_inside_inscribed_disc():
    x = _smooth_images(4, 32)
    angles = np.array([0.4, -1.3, 2.9, -3.0], np.float32)
    back = rotate(rotate(x, angles), -angles).numpy()
    mask = inscribed_disc(32, 32 / 2 - 2)
    assert np.abs(back - x)[:, mask].max() < 0.04  # two bilinear resamplings blur a little


def test_inscribed_disc_is_the_circle_about_the_rotation_centre():
    # 4x4: centre (1.5, 1.5); the corners lie 1.5·√2 > 2 away, every other pixel within 2.
    expected = np.ones((4, 4), bool)
    expected[[0, 0, 3, 3], [0, 3, 0, 3]] = False
    np.testing.assert_array_equal(inscribed_disc(4), expected)
    np.testing.assert_array_equal(inscribed_disc(4, 1.0), np.pad(np.ones((2, 2), bool), 1))
    # 5x5 (centre pixel (2, 2)), radius 1: the centre and its four neighbours.
    assert np.argwhere(inscribed_disc(5, 1.0)).tolist() == [[1, 2], [2, 1], [2, 2], [2, 3], [3, 2]]


def test_each_image_gets_its_own_angle():
    x = np.repeat(_smooth_images(1, 16), 3, axis=0)
    angles = np.array([0.0, math.pi / 2, math.pi], np.float32)
    rotated = rotate(x, angles).numpy()
    for i, k in enumerate([0, 1, 2]):
        np.testing.assert_allclose(rotated[i], np.rot90(x[0], k=k), atol=1e-5)


def test_xla_compatible_path_matches_and_compiles():
    x = np.random.default_rng(3).random((4, 9, 12, 2), dtype=np.float32)
    angles = np.array([0.3, -2.0, math.pi / 2, 1.0], np.float32)
    compiled = tf.function(lambda im, a: rotate(im, a, xla_compatible=True), jit_compile=True)
    np.testing.assert_allclose(compiled(x, angles), rotate(x, angles), atol=1e-5)


def test_fixed_angles_are_a_function_of_seed_and_index():
    a = fixed_angles(tf.range(10), seed=7).numpy()
    b = fixed_angles(tf.constant([3, 4, 5]), seed=7).numpy()
    np.testing.assert_array_equal(a[3:6], b)
    assert not np.allclose(fixed_angles(tf.range(10), seed=8).numpy(), a)
    assert np.all(np.abs(a) <= math.pi)


@pytest.mark.parametrize("distribution,scale,expected_std", [
    ("uniform", math.pi, math.pi / math.sqrt(3)),
    ("normal", math.pi / 4, math.pi / 4),
])
def test_sample_angles_distribution(distribution, scale, expected_std):
    angles = sample_angles(20000, distribution, scale, keras.random.SeedGenerator(0)).numpy()
    assert angles.shape == (20000,)
    assert abs(angles.mean()) < 0.05
    assert angles.std() == pytest.approx(expected_std, rel=0.03)
    if distribution == "uniform":
        assert np.abs(angles).max() <= scale


def test_sample_angles_rejects_unknown_distribution():
    with pytest.raises(ValueError, match="unknown angle distribution"):
        sample_angles(3, "cauchy")


def test_wrap_angle_range():
    wrapped = wrap_angle(tf.constant([math.pi, -math.pi, 3 * math.pi / 2, 7.0, 0.1])).numpy()
    assert np.all(wrapped > -math.pi - 1e-6) and np.all(wrapped <= math.pi + 1e-6)
    np.testing.assert_allclose(np.cos(wrapped), np.cos([math.pi, -math.pi, 3 * math.pi / 2, 7.0,
                                                        0.1]), atol=1e-5)


def test_wrap_degrees_matches_wrap_angle():
    degrees = np.array([180.0, -180.0, 270.0, 401.0, -0.5])
    np.testing.assert_allclose(wrap_degrees(degrees), [180.0, 180.0, -90.0, 41.0, -0.5])
    np.testing.assert_allclose(np.radians(wrap_degrees(degrees)),
                               wrap_angle(tf.constant(np.radians(degrees), tf.float32)), atol=1e-5)

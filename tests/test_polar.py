"""The polar resampler: rotations become circular shifts along the angle axis."""
import numpy as np
import pytest

from data_pipeline.polar import PolarResampler, default_radii
from data_pipeline.rotation import rotate


def _blob_image(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    image = np.zeros((size, size), np.float32)
    for _ in range(5):
        cy, cx = rng.uniform(size * 0.25, size * 0.75, 2)
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    return image


def test_quarter_turn_is_an_exact_roll():
    image = _blob_image(24)
    resampler = PolarResampler(24, num_angles=64)
    polar = resampler(image[None]).numpy()[0]
    turned = resampler(np.rot90(image)[None].copy()).numpy()[0]
    np.testing.assert_allclose(turned, np.roll(polar, 16, axis=1), atol=1e-5)


def test_rotation_rolls_by_the_angle():
    image = _blob_image(32, seed=1)
    resampler = PolarResampler(32, num_angles=90)
    angle = 12 * resampler.angle_step  # 48 degrees
    rotated = rotate(image[None, :, :, None], np.array([angle], np.float32)).numpy()
    polar = resampler(image[None]).numpy()[0]
    moved = resampler(rotated).numpy()[0]
    inner = resampler.radii < 12  # away from the corners the rotation leaves empty
    error = np.abs(moved - np.roll(polar, 12, axis=1))[inner].max()
    assert error < 0.1 * polar.max()  # two bilinear interpolations of 2-px blobs
    assert np.abs(moved - polar)[inner].max() > 0.2 * polar.max()  # the roll is not a no-op


def test_centre_pixel_value_and_shapes():
    size = 16
    image = np.zeros((2, size, size, 1), np.float32)
    image[:, 8, 11] = 1.0  # 3 px right of the centre column 7.5, 0.5 px below the centre row
    radii = default_radii(size)
    assert radii[0] == 1.0 and radii[-1] == size / 2 - 1
    polar = PolarResampler(size, num_angles=8, radii=radii)(image).numpy()
    assert polar.shape == (2, len(radii), 8)
    assert polar[0, :, 0].argmax() == 2  # radius 3, angle 0 (+x)
    assert polar.sum(axis=1)[0, 4] == pytest.approx(0.0)  # nothing to the left


def test_to_image_takes_a_polar_image_back_onto_the_pixel_grid():
    image = _blob_image(32, seed=2)
    resampler = PolarResampler(32, num_angles=128)
    back = resampler.to_image(resampler(image[None])).numpy()
    assert back.shape == (1, 32, 32, 1)
    yy, xx = np.mgrid[:32, :32]
    inside = np.hypot(yy - 15.5, xx - 15.5) < 12
    error = np.abs(back[0, ..., 0] - image)[inside].max()
    assert error < 0.1 * image.max()  # two bilinear interpolations of 2-px blobs
    turned = np.rot90(image)  # a mix-up of the grid's angle direction would show here
    assert np.abs(back[0, ..., 0] - turned)[inside].max() > 0.2 * image.max()

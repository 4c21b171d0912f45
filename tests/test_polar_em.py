"""The polar-EM core: the offset grid, moved templates, offsets in the image frame, the EM step."""
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline.rotation import recentred, rotate, rotated_offsets, translate
from rotinv_tf.pose.polar_em import EMState, PolarEM, shift_grid
from tests.test_template_frame import SIZE, _asymmetric_image


def test_shift_grid_is_the_lattice_within_the_disc():
    grid = shift_grid(5.0, 1.0)
    assert len(grid) == 81  # RELION's 5 px / 1 px: the lattice points within radius 5
    np.testing.assert_array_equal(grid[0], [0.0, 0.0])
    assert np.hypot(*grid.T).max() == pytest.approx(5.0)
    assert len({tuple(p) for p in grid}) == len(grid)
    np.testing.assert_array_equal(shift_grid(0.0, 1.0), [[0.0, 0.0]])
    assert len(shift_grid(2.0, 0.5)) == len(shift_grid(4.0, 1.0))
    for bad in ((-1.0, 1.0), (5.0, 0.0)):
        with pytest.raises(ValueError, match="frame_"):
            shift_grid(*bad)
    with pytest.raises(ValueError, match="at most 0.2 of the 24-px box"):
        PolarEM(SIZE, 64, 1.0, max_shift=6.0)


def test_rotated_offsets_follow_rotate():
    """A point at offset d of a turned image sits at `rotated_offsets(d, θ)`."""
    image = np.zeros((1, 25, 25, 1), np.float32)
    image[0, 12, 12 + 3] = 1.0  # 3 px right of the centre
    for angle in (np.pi / 2, np.pi, -np.pi / 2):
        turned = rotate(image, np.float32([angle])).numpy()[0, ..., 0]
        row, col = np.unravel_index(np.argmax(turned), turned.shape)
        expected = rotated_offsets(tf.constant([3.0, 0.0]), tf.constant(angle)).numpy()
        np.testing.assert_allclose([col - 12, row - 12], expected, atol=1e-5)


def test_a_moved_turned_template_is_found_at_its_offset_and_angle():
    """Particles that are the template turned by θ and moved by d (image frame): the most probable
    (offset, angle) is d and θ, and the peak offset (the template's centre of mass, zero here up
    to the blobs' own, moved with it) recovers d to a fraction of a pixel."""
    grid = PolarEM(SIZE, 64, 1.0, max_shift=4.0)
    template = _asymmetric_image()[None]
    centre = grid.centres_of_mass(grid.polar(template))[0].numpy()
    angles = np.float32([0.0, 1.0, -2.0, 2.5])
    offsets = np.float32([[0.0, 0.0], [2.0, -1.0], [-3.0, 1.0], [1.4, 2.3]])
    particles = translate(rotate(np.repeat(template, 4, 0), angles), offsets)
    state = EMState(grid.polar(template), tf.ones([1]), tf.constant(0.01))
    references, energy = grid.references(state.templates)
    spectrum = grid.correlation_spectra(grid.spectra(grid.polar(particles)), references)
    logits = grid.logits(grid.angular(spectrum), energy, state)
    flat = tf.reshape(logits, [4, -1]).numpy().argmax(axis=1)
    shift, angle_bin = np.unravel_index(flat, logits.shape[1:])[1:]
    found = rotated_offsets(tf.gather(grid.offsets, shift),
                            (angle_bin * 2 * np.pi / 64).astype(np.float32)).numpy()
    np.testing.assert_allclose(found[:3], offsets[:3], atol=0.6)
    peaks = grid.peak_offsets(spectrum, energy, state, tf.zeros(4, tf.int32), angles).numpy()
    expected = offsets + rotated_offsets(tf.constant(centre), tf.constant(angles)).numpy()
    assert np.abs(peaks - expected).max() < 0.35


def test_batch_em_step_re_centres_the_particles_it_averages():
    """From the true template, one batch EM step (rate 1) on moved, turned noiseless copies gives
    back the template (what the particles share once re-centred and turned back), and σ² near
    0; at rate 0 the state is kept."""
    grid = PolarEM(SIZE, 64, 1.0, max_shift=4.0)
    template = _asymmetric_image()[None]
    rng = np.random.default_rng(0)
    angles = rng.uniform(-np.pi, np.pi, 32).astype(np.float32)
    offsets = rng.uniform(-2.5, 2.5, (32, 2)).astype(np.float32)
    particles = translate(rotate(np.repeat(template, 32, 0), angles), offsets)
    state = EMState(grid.polar(template), tf.ones([1]), tf.constant(0.01))
    statistics = grid.statistics(particles, state)[0]
    after = grid.em_step(state, statistics, 1.0)
    truth = state.templates.numpy().ravel()
    correlation = np.corrcoef(after.templates.numpy().ravel(), truth)[0, 1]
    assert correlation > 0.97
    assert float(after.noise) < 0.05 * float(tf.math.reduce_variance(particles))
    np.testing.assert_allclose(after.class_mass.numpy(), [1.0], atol=1e-5)
    kept = grid.em_step(state, statistics, 0.0)
    np.testing.assert_array_equal(kept.templates.numpy(), state.templates.numpy())
    # Without the offset search, the same step averages the particles as they are: a blur.
    plain = PolarEM(SIZE, 64, 1.0)
    blurred = plain.em_step(state, plain.statistics(particles, state)[0], 1.0)
    assert np.corrcoef(blurred.templates.numpy().ravel(), truth)[0, 1] < correlation - 0.03


def test_recentred_undoes_translate():
    image = _asymmetric_image()[None]
    moved = translate(image, np.float32([[2.0, -3.0]]))
    back = recentred(moved, np.float32([[2.0, -3.0]])).numpy()
    inner = (slice(None), slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(back[inner], image[inner], atol=1e-5)

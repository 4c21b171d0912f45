"""The classical baselines: reference-free alignment and rotation-invariant polar features."""
import math

import numpy as np
import pytest

from data_pipeline.rotation import rotate
from data_pipeline.simulator import SimulationConfig, Simulator
from rotinv_tf.evaluation import angle_error_deg, estimate_frame_rotation, frame_aligned_errors_deg
from rotinv_tf.pose.classical import (Alignment, align_reference_free, align_to_templates,
                                      coaligned, invariant_features, pca)

SIZE = 32


def simulator(snr: float = math.inf, conformations: int = 1) -> Simulator:
    return Simulator(SimulationConfig(image_size=SIZE, snr=snr, num_conformations=conformations,
                                      test_conformations=0))


def rotated_copies(image: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` copies of `image` [N, N] turned by random angles with `rotate`, and the angles."""
    angles = np.random.default_rng(seed).uniform(-np.pi, np.pi, count).astype(np.float32)
    stack = np.repeat(image[None, ..., None], count, axis=0)
    return rotate(stack, angles).numpy()[..., 0], angles


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_rotated_copies_of_one_image_are_aligned_exactly():
    image = simulator().canonical[0]
    particles, angles = rotated_copies(image, 48, seed=0)
    result = align_reference_free(particles, seed=3)
    assert frame_aligned_errors_deg(angles, result.angles).max() < 1.0
    assert result.templates.shape == (1, SIZE, SIZE)
    assert list(result.classes) == [0] * 48
    # The contract: each particle is its template turned by its angle.
    turned = rotate(np.repeat(result.templates[..., None], 48, axis=0), result.angles).numpy()
    assert min(correlation(t, p) for t, p in zip(turned, particles)) > 0.95
    # And the template is the image itself, in a frame of its own.
    offset = estimate_frame_rotation(angles, result.angles)
    unturned = rotate(result.templates[..., None], np.float32([offset])).numpy()[0, ..., 0]
    assert correlation(unturned, image) > 0.98


def test_noisy_projections_at_snr_1():
    sim = simulator(snr=1.0)
    batch = sim.simulate(np.arange(200))
    result = align_reference_free(batch["observed"])
    errors = frame_aligned_errors_deg(batch["angle"], result.angles)
    assert errors.mean() < 3.0 and np.median(errors) < 2.5


def test_two_templates_separate_an_image_from_its_mirror():
    image = simulator().canonical[0]
    first, first_angles = rotated_copies(image, 30, seed=1)
    second, second_angles = rotated_copies(np.fliplr(image), 30, seed=2)
    result = align_reference_free(np.concatenate([first, second]), num_classes=2, seed=0)
    assert len(set(result.classes[:30])) == 1 and len(set(result.classes[30:])) == 1
    assert result.classes[0] != result.classes[30]
    np.testing.assert_allclose(result.class_probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert frame_aligned_errors_deg(first_angles, result.angles[:30]).max() < 1.5
    assert frame_aligned_errors_deg(second_angles, result.angles[30:]).max() < 1.5


def test_new_particles_are_aligned_to_given_templates_with_no_offset():
    image = simulator().canonical[0]
    particles, angles = rotated_copies(image, 20, seed=4)
    mirrored, _ = rotated_copies(np.fliplr(image), 10, seed=5)
    found, classes = align_to_templates(np.concatenate([particles, mirrored]),
                                        np.stack([np.fliplr(image), image]))
    assert list(classes) == [1] * 20 + [0] * 10
    # The template's own frame: no offset to forgive.
    assert np.abs(angle_error_deg(angles, found[:20])).max() < 1.0
    with pytest.raises(ValueError, match="do not match"):
        align_to_templates(particles, image[None, :16, :16])


def test_coaligned_puts_two_classes_of_one_image_in_one_frame():
    """Class 1's template is class 0's turned by 0.9 rad: afterwards both templates match and
    every particle's angle is relative to the same (heavier) template."""
    image = simulator().canonical[0]
    particles, angles = rotated_copies(image, 40, seed=3)
    classes = (np.arange(40) % 3 == 0).astype(np.int64)  # class 0 heavier
    turned = rotate(image[None, ..., None], np.float32([0.9])).numpy()[0, ..., 0]
    templates = np.stack([image, turned])
    given = np.where(classes == 1, angles - 0.9, angles)  # relative to each class's template
    shared = coaligned(Alignment(angles=given, templates=templates, classes=classes,
                                 class_probabilities=np.eye(2, dtype=np.float32)[classes],
                                 offsets=np.zeros((40, 2), np.float32)))
    assert np.abs(angle_error_deg(angles, shared.angles)).max() < 1.0
    assert correlation(shared.templates[0], shared.templates[1]) > 0.98
    assert np.abs(angle_error_deg(angles, given)).max() > 40.0  # they were apart


def test_invariant_features_ignore_rotation_but_not_the_image():
    sim = simulator(conformations=2)  # the two ends of the hinge
    open_, closed = sim.canonical
    turned, _ = rotated_copies(open_, 3, seed=4)
    features = invariant_features(np.stack([open_, *turned, closed]))
    scale = np.linalg.norm(features[0])
    for copy in features[1:4]:
        assert np.linalg.norm(copy - features[0]) < 0.05 * scale
    assert np.linalg.norm(features[4] - features[0]) > 0.2 * scale

    reduced = invariant_features(np.stack([open_, *turned, closed]), num_components=2)
    assert reduced.shape == (5, 2)
    spread = np.abs(reduced[1:4, 0] - reduced[0, 0]).max()
    assert np.abs(reduced[4, 0] - reduced[0, 0]) > 10 * spread


def test_pca_finds_the_direction_of_largest_variance():
    rng = np.random.default_rng(0)
    position = rng.normal(size=100)
    direction = rng.normal(size=6)
    points = np.outer(position, direction) + 0.01 * rng.normal(size=(100, 6)) + 5.0
    scores = pca(points, 1)
    assert scores.shape == (100, 1)
    assert abs(np.corrcoef(scores[:, 0], position)[0, 1]) > 0.999
    with pytest.raises(ValueError, match="num_components"):
        pca(points, 7)


@pytest.mark.parametrize("images, kwargs, problem", [
    (np.full((4, SIZE, SIZE), np.nan, np.float32), {}, "NaN/Inf"),
    (np.zeros((4, SIZE, SIZE + 2), np.float32), {}, "square images"),
    (np.zeros((0, SIZE, SIZE), np.float32), {}, "non-empty"),
    (np.zeros((4, SIZE, SIZE), np.float32), {"num_classes": 0}, "num_classes"),
    (np.zeros((4, SIZE, SIZE), np.float32), {"min_radius": SIZE}, "no ring"),
])
def test_bad_arguments_are_value_errors(images, kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        align_reference_free(images, **kwargs)


def test_restarts_keep_the_run_that_separates_the_classes():
    """Seed 0 alone merges an image and its mirror into one class (a local optimum of EM);
    the restarts find the run with the smaller residual, which separates them."""
    image = simulator().canonical[0]
    stack = np.concatenate([rotated_copies(image, 30, seed=1)[0],
                            rotated_copies(np.fliplr(image), 30, seed=2)[0]])
    single = align_reference_free(stack, num_classes=2, seed=0, num_restarts=1)
    restarted = align_reference_free(stack, num_classes=2, seed=0)
    assert single.classes[0] == single.classes[30]
    assert restarted.classes[0] != restarted.classes[30]
    with pytest.raises(ValueError, match="num_restarts"):
        align_reference_free(stack, num_classes=2, num_restarts=-1)

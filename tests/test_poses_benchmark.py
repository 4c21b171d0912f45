"""The feature scores of `benchmarks.poses` (`benchmarks.pose_metrics`) on cases with known
answers (its psi errors: tests/test_evaluation.py)."""
import numpy as np
import pytest

from benchmarks import pose_metrics as pm


def test_ari_is_one_for_the_same_partition_and_near_zero_for_chance():
    truth = np.repeat(np.arange(5), 40)
    assert pm.adjusted_rand_index(truth, (truth + 3) % 5 * 7) == pytest.approx(1.0)
    chance = np.random.default_rng(1).integers(0, 5, len(truth))
    assert abs(pm.adjusted_rand_index(truth, chance)) < 0.05
    merged = np.minimum(truth, 3)
    assert 0.5 < pm.adjusted_rand_index(truth, merged) < 1


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(2)
    truth = np.repeat(np.arange(4), 50)
    centres = rng.normal(0, 10, (4, 3))
    features = centres[truth] + rng.normal(0, 0.5, (200, 3))
    assert pm.adjusted_rand_index(truth, pm.kmeans(features, 4)) == pytest.approx(1.0)


def test_linear_spearman_finds_a_hidden_linear_direction_and_not_noise():
    rng = np.random.default_rng(3)
    hinge = rng.uniform(-1, 1, 300)
    groups = np.repeat([0, 1, 2], 100)
    mixing = rng.normal(size=(6,))
    features = rng.normal(0, 0.05, (300, 6)) + hinge[:, None] * mixing
    assert pm.linear_spearman(features, hinge, groups) > 0.95
    assert pm.linear_spearman(rng.normal(size=(300, 6)), hinge, groups) < 0.3
    # Monotonic, not just linear, relations count in full.
    assert pm.spearman(hinge, hinge ** 3) == pytest.approx(1.0)

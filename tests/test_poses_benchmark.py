"""The scores of benchmarks/poses.py (benchmarks/pose_metrics.py) on cases with known answers."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import pose_metrics as pm  # noqa: E402


def test_psi_errors_forgive_one_offset_per_group_only():
    rng = np.random.default_rng(0)
    true = rng.uniform(-np.pi, np.pi, 200)
    groups = np.repeat([0, 1], 100)
    offsets = np.where(groups == 0, 1.0, -2.5)
    np.testing.assert_allclose(pm.psi_errors(true, true + offsets, groups), 0, atol=1e-9)
    # One offset for both groups cannot absorb two different rotations.
    assert pm.psi_errors(true, true + offsets, np.zeros(200)).mean() > 40
    noisy = true + offsets + np.radians(rng.normal(0, 2, 200))
    assert 1 < pm.error_summary(pm.psi_errors(true, noisy, groups))["psi_mae_deg"] < 2.5


def test_error_summary():
    summary = pm.error_summary(np.array([1.0, 2.0, 20.0, 30.0]))
    assert summary == {"psi_mae_deg": 13.25, "psi_median_deg": 11.0, "psi_over_15_percent": 50.0}


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

"""Local pose refinement against a reference image per particle."""
import math

import numpy as np
import pytest

from data_pipeline.simulator import SimulationConfig, Simulator
from rotinv_tf.evaluation import angle_error_deg
from rotinv_tf.pose.refine import refine_poses

SIZE, COUNT = 32, 64


def projections(max_shift: float = 0.0) -> tuple[dict, np.ndarray]:
    """Noiseless projections (the simulator turns the molecule, not the image) and their
    canonical image repeated as each one's reference."""
    sim = Simulator(SimulationConfig(image_size=SIZE, snr=math.inf, num_conformations=1,
                                     test_conformations=0, max_shift=max_shift))
    return sim.simulate(np.arange(COUNT)), np.repeat(sim.canonical, COUNT, axis=0)


def off_by_degrees(angles: np.ndarray, low: float, high: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    off = rng.uniform(low, high, len(angles)) * rng.choice([-1, 1], len(angles))
    return angles + np.radians(off).astype(np.float32)


@pytest.mark.parametrize("step", [0.5, 0.25])
def test_recovers_the_true_angle_to_within_its_step(step):
    batch, references = projections()
    start = off_by_degrees(batch["angle"], 2.0, 8.0)
    refined = refine_poses(batch["observed"], references, start, step_degrees=step)
    assert np.abs(angle_error_deg(batch["angle"], refined.angles)).max() <= step
    assert np.abs(angle_error_deg(batch["angle"], start)).min() > 2 * step  # it did move
    assert refined.scores.min() > 0.99
    np.testing.assert_array_equal(refined.shifts, 0)


def test_the_reference_scale_and_offset_do_not_matter():
    batch, references = projections()
    start = off_by_degrees(batch["angle"], 2.0, 8.0)
    plain = refine_poses(batch["observed"], references, start)
    scaled = refine_poses(batch["observed"], 3.0 * references + 7.0, start)
    np.testing.assert_allclose(scaled.angles, plain.angles, atol=1e-6)


def test_the_search_stays_within_its_window():
    batch, references = projections()
    start = off_by_degrees(batch["angle"], 30.0, 40.0)
    refined = refine_poses(batch["observed"], references, start, window_degrees=10.0)
    moved = np.abs(angle_error_deg(start, refined.angles))
    assert moved.max() <= 10.0 + 0.5  # the window, on the grid nearest the start
    assert np.abs(angle_error_deg(batch["angle"], refined.angles)).min() > 15.0


@pytest.mark.parametrize("max_shift", [0, 2])
def test_a_window_narrower_than_a_step_keeps_the_grid_angle(max_shift):
    batch, references = projections()
    start = off_by_degrees(batch["angle"], 2.0, 8.0)
    refined = refine_poses(batch["observed"], references, start, window_degrees=0.0,
                           step_degrees=0.5, max_shift=max_shift)
    on_grid = np.round(start / math.radians(0.5)) * math.radians(0.5)
    assert np.abs(angle_error_deg(on_grid, refined.angles)).max() < 1e-3
    assert refined.shifts.shape == (COUNT, 2)


def test_shifts_are_found_with_the_angle():
    batch, references = projections(max_shift=2.0)
    start = off_by_degrees(batch["angle"], 2.0, 6.0)
    refined = refine_poses(batch["observed"], references, start, max_shift=3)
    # Sub-pixel: the parabola through the correlation peak finds the fractional offsets.
    assert np.sqrt(np.mean((refined.shifts - batch["shift"]) ** 2)) < 0.2
    assert np.abs(refined.shifts - np.round(refined.shifts)).max() > 0.2
    errors = np.abs(angle_error_deg(batch["angle"], refined.angles))
    assert errors.mean() < 1.0
    unshifted = refine_poses(batch["observed"], references, start)
    assert np.abs(angle_error_deg(batch["angle"], unshifted.angles)).mean() > 2 * errors.mean()


@pytest.mark.parametrize("kwargs, problem", [
    ({"references": np.zeros((COUNT, SIZE + 2, SIZE + 2), np.float32)}, "one reference"),
    ({"angles": np.zeros(COUNT - 1, np.float32)}, "one angle"),
    ({"angles": np.full(COUNT, np.nan, np.float32)}, "NaN/Inf"),
    ({"step_degrees": 0.0}, "step_degrees"),
    ({"max_shift": SIZE // 2}, "max_shift"),
])
def test_bad_arguments_are_value_errors(kwargs, problem):
    batch, references = projections()
    arguments = {"particles": batch["observed"], "references": references,
                 "angles": batch["angle"], **kwargs}
    with pytest.raises(ValueError, match=problem):
        refine_poses(**arguments)


def test_a_stream_traces_the_compiled_search_once():
    """canonicalize pads a short last batch, so its batches share one traced search, and the
    padding does not change the padded batch's angles."""
    from rotinv_tf.pose import refine
    from rotinv_tf.serving import inference

    batch, references = projections()
    start = off_by_degrees(batch["angle"], 2.0, 8.0)
    settings = inference.Refinement(inference.REFINE_WINDOW_DEGREES,
                                    inference.REFINE_STEP_DEGREES, max_shift=0)
    full = inference._refine(batch["observed"][:8], references[:8], start[:8], 8, settings)
    search = refine._searcher(SIZE, settings.window_degrees, settings.step_degrees, 0)
    traced = search.experimental_get_tracing_count()
    short = inference._refine(batch["observed"][:5], references[:5], start[:5], 8, settings)
    assert search.experimental_get_tracing_count() == traced
    assert short.angles.shape == (5,) and short.shifts.shape == (5, 2)
    np.testing.assert_allclose(short.angles, full.angles[:5], atol=1e-6)

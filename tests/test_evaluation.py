"""Evaluation: metrics on hand-made predictions, the evaluation pass on fake and exported models,
the report writer, and the `rotinv_tf.evaluate` CLI end to end on a tiny simulated data set."""
import csv
import json
import math
import os
import subprocess
import sys

import keras
import matplotlib.image
import numpy as np
import pytest

from tests.contract_models import TemplateMatcher, TinyContractModel, built
from tests.data_fixtures import smooth_images, write_idx
from data_pipeline import datasets, input_fn
from data_pipeline.angles import to_degrees
from data_pipeline.errors import DataError
from data_pipeline.preprocessing import Normalization
from data_pipeline.rotation import rotate
from rotinv_tf import evaluation
from rotinv_tf.models.autoencoder import RotationInvariantAutoencoder
from rotinv_tf.serving.export import export_saved_model
from rotinv_tf.serving.saved_model import load_serving_model

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
SIM_SIZE = 24
SIMULATION = {"image_size": SIM_SIZE, "num_conformations": 3, "images_per_conformation": 16,
              "test_conformations": 1}
CONFIG = f"""# a tiny config in the format of configs/*.cfg
--dataset=simulated_particles
--sim_image_size={SIM_SIZE}
--sim_num_conformations=3
--sim_images_per_conformation=16
--sim_test_conformations=1
--angle_distribution=uniform
--angle_scale_deg=180
--eval_angle_seed=7
--batch_size=5
"""
METRIC_KEYS = {"avg_mse", "worst_mse", "median_mse", "worst_index", "angle_mae_deg",
               "angle_rmse_deg", "angle_mse_rad2", "num_images", "dataset", "split", "saved_model",
               "eval_angle_seed", "angle_distribution", "angle_scale_deg"}


def _evaluate_saved_model(path: str, batches, normalization) -> evaluation.EvaluationResult:
    """One SavedModel evaluated on `batches` (see `evaluation.evaluate_models`)."""
    return evaluation.evaluate_models([load_serving_model(path)], batches, normalization)[0]


# Metrics on hand-made numbers.

def test_angle_error_wraps_to_half_open_interval():
    true = np.radians([170, -170, 0, 0, 90, 10, -180])
    predicted = np.radians([-170, 170, 180, -180, 450, 5, 180])
    np.testing.assert_allclose(evaluation.angle_error_deg(true, predicted),
                               [20, -20, 180, 180, 0, -5, 0], atol=1e-9)


def test_per_image_mse():
    truth = np.zeros((2, 2, 2, 1))
    output = np.array([[1.0, 1.0, 1.0, 1.0], [0.5, 0.0, 0.0, 0.0]]).reshape(2, 2, 2, 1)
    np.testing.assert_allclose(evaluation.per_image_mse(truth, output), [1.0, 0.0625])


def test_metrics_on_hand_made_predictions():
    index = np.array([10, 11, 12, 13])
    true = np.radians([179.0, 0.0, 0.0, -90.0])
    predicted = np.radians([-179.0, 10.0, -30.0, -90.0])  # errors 2, 10, -30, 0 degrees
    metrics = evaluation.compute_metrics(index, true, predicted, np.array([0.1, 0.4, 0.2, 0.4]))
    assert metrics["avg_mse"] == pytest.approx(0.275)
    assert metrics["median_mse"] == pytest.approx(0.3)
    assert metrics["worst_mse"] == pytest.approx(0.4)
    assert metrics["worst_index"] == 11  # the first of two equally bad images, by split index
    assert metrics["angle_mae_deg"] == pytest.approx(10.5)
    assert metrics["angle_rmse_deg"] == pytest.approx(math.sqrt((4 + 100 + 900) / 4))
    assert metrics["angle_mse_rad2"] == pytest.approx((4 + 100 + 900) / 4 * (math.pi / 180) ** 2)
    assert metrics["num_images"] == 4
    with pytest.raises(ValueError, match="no images"):
        evaluation.compute_metrics(index[:0], true[:0], predicted[:0], np.zeros(0))


# The evaluation pass.

NORMALIZATION = Normalization(mean=180.0, std=40.0, min=100.0, max=300.0)


class EchoModel:
    """A stand-in ServingModel: returns its raw input as the canonical image, angle = 2 × mean.

    It checks that it is fed raw units: the observed images below are constant in [0, 1] when
    normalised, hence in [100, 300] raw.
    """

    path = "echo"
    image_size = 4

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        assert images.min() >= 100.0 and images.max() <= 300.0, "fed normalised images"
        return {"canonical_image": images, "angle": 2.0 * images.mean(axis=(1, 2, 3)) / 300.0,
                "latent": np.zeros((len(images), 2), np.float32)}


def fake_batches(offsets: list[list[float]]) -> list[dict]:
    """Batches with zero ground truth and observed images equal to `offset` (normalised)."""
    batches, start = [], 0
    for batch in offsets:
        n = len(batch)
        observed = np.broadcast_to(np.array(batch, np.float32)[:, None, None, None], (n, 4, 4, 1))
        batches.append({"image": np.zeros((n, 4, 4, 1), np.float32), "observed": observed.copy(),
                        "angle": np.full(n, 0.1, np.float32),
                        "index": np.arange(start, start + n, dtype=np.int64)})
        start += n
    return batches


def test_evaluation_pass_streams_batches():
    offsets = [[0.1, 0.2, 0.3], [0.9, 0.5, 0.9], [0.2, 0.4]]
    result, = evaluation.evaluate_models([EchoModel()], fake_batches(offsets), NORMALIZATION,
                                         pool_size=2)
    flat = np.concatenate(offsets)
    np.testing.assert_array_equal(result.index, np.arange(8))
    # output (normalised) = observed, ground truth 0: MSE = offset²
    np.testing.assert_allclose(result.mse, flat**2, rtol=1e-5)
    np.testing.assert_allclose(result.predicted_angle, 2.0 * (flat * 200 + 100) / 300, rtol=1e-5)
    assert result.metrics["worst_index"] == 3 and result.worst.index == 3
    np.testing.assert_allclose(result.worst.output, np.full((4, 4), 0.9), rtol=1e-5)
    np.testing.assert_array_equal(result.worst.image, np.zeros((4, 4)))
    # Pool of 2 over 8 images: the stride doubled to 4.
    assert sorted(result.examples) == [0, 4]
    assert result.examples[4].mse == pytest.approx(0.25)


def test_evaluation_pass_rejects_wrong_image_size_and_empty_data():
    model = EchoModel()
    model.image_size = 8
    with pytest.raises(DataError, match="echo: the model takes 8x8 images but the data are 4x4"):
        evaluation.evaluate_models([model], fake_batches([[0.1]]), NORMALIZATION)
    with pytest.raises(DataError, match="no images"):
        evaluation.evaluate_models([EchoModel()], [], NORMALIZATION)


def test_template_matcher_recovers_angles_and_canonical_images(tmp_path):
    """An exported model that knows the answer scores near 0: checks the raw/normalised plumbing
    and the angle convention through a real SavedModel and `eval_input`'s fixed angles."""
    template = smooth_images(1, 28, seed=3)[0]
    template = np.round(255 * template / template.max()).astype(np.uint8)  # raw min 0, max 255
    digits = str(tmp_path / "digits")
    os.makedirs(digits)
    for prefix, n in (("train", 4), ("t10k", 12)):
        write_idx(os.path.join(digits, f"{prefix}-images-idx3-ubyte.gz"),
                  np.repeat(template[None], n, axis=0))
        write_idx(os.path.join(digits, f"{prefix}-labels-idx1-ubyte.gz"), np.zeros(n))
    batches, normalization = input_fn.eval_input(
        "mnist", 5, data_dir=str(tmp_path / "tfds"), mnist_dir=digits, angle_seed=11)
    assert (normalization.min, normalization.max) == (0.0, 255.0)
    matcher = built(TemplateMatcher(template / 255.0), 28)
    path = export_saved_model(matcher, normalization, 28, str(tmp_path / "models"), "matcher")
    result = _evaluate_saved_model(path, batches.as_numpy_iterator(), normalization)
    assert result.metrics["num_images"] == 12
    assert np.ptp(np.degrees(result.true_angle)) > 90  # the inputs really are rotated
    assert result.metrics["angle_mae_deg"] < 1.0
    # Rotating back and forth blurs a little; a wrong (de)normalisation costs ~ mean(template²).
    assert result.metrics["avg_mse"] < 0.01 * np.mean(np.square(template / 255.0))


# The report writer.

@pytest.fixture(scope="module")
def echo_result() -> evaluation.EvaluationResult:
    result, = evaluation.evaluate_models([EchoModel()], fake_batches([[0.1, 0.2, 0.3, 0.9]]),
                                         NORMALIZATION)
    return result


def test_report_failure_leaves_nothing(echo_result, tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(evaluation, "_angles_figure", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        evaluation.write_report(str(tmp_path / "report"), echo_result)
    assert os.listdir(tmp_path) == []


def test_report_into_existing_folder_replaces_only_report_files(echo_result, tmp_path):
    folder = tmp_path / "report"
    evaluation.write_report(str(folder), echo_result, baseline=echo_result)
    assert (folder / "baseline_metrics.json").is_file()
    (folder / "notes.txt").write_text("mine")
    written = evaluation.write_report(str(folder), echo_result, context={"split": "test"})
    assert sorted(os.listdir(folder)) == sorted(
        ["metrics.json", "per_image.csv", "notes.txt", *evaluation.FIGURES])
    assert sorted(written) == sorted(str(folder / n) for n in os.listdir(folder)
                                     if n != "notes.txt")
    assert json.loads((folder / "metrics.json").read_text())["split"] == "test"
    assert sorted(os.listdir(tmp_path)) == ["report"]  # no temporary folders left


# The CLI, end to end.

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rotinv_tf.evaluate", *args], env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """A tiny simulated data set, its flagfile, and untrained exports: ours, a baseline and a
    model for another image size."""
    root = tmp_path_factory.mktemp("evaluate")
    data_dir = str(root / "tfds")
    batches, normalization = input_fn.eval_input("simulated_particles", 5, data_dir=data_dir,
                                                 simulation=SIMULATION)
    keras.utils.set_random_seed(0)
    exports = str(root / "saved_models")
    ours = built(RotationInvariantAutoencoder(SIM_SIZE, latent_dim=8, filters=4), SIM_SIZE)
    baseline = built(TinyContractModel(SIM_SIZE, latent_dim=4), SIM_SIZE)
    small = built(TinyContractModel(16, latent_dim=4), 16)
    flagfile = root / "tiny.cfg"
    flagfile.write_text(CONFIG + f"--data_dir={data_dir}\n")
    return {"root": root, "flagfile": str(flagfile), "batches": batches, "data_dir": data_dir,
            "normalization": normalization,
            "ours": export_saved_model(ours, normalization, SIM_SIZE, exports, "ours"),
            "baseline": export_saved_model(baseline, normalization, SIM_SIZE, exports, "svae"),
            "small": export_saved_model(small, normalization, 16, exports, "small")}


def read_csv(path: str) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(evaluation.CSV_COLUMNS)
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}


def test_cli_writes_the_report(workspace):
    out = workspace["root"] / "report"
    done = run_cli(f"--flagfile={workspace['flagfile']}", f"--saved_model={workspace['ours']}",
                   f"--baseline_saved_model={workspace['baseline']}", f"--output_dir={out}")
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(out)) == sorted(evaluation.REPORT_FILES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == METRIC_KEYS
    assert (metrics["dataset"], metrics["split"], metrics["saved_model"]) == (
        "simulated_particles", "test", workspace["ours"])
    assert (metrics["eval_angle_seed"], metrics["angle_distribution"]) == (7, "uniform")

    rows = read_csv(str(out / "per_image.csv"))
    assert metrics["num_images"] == len(rows["mse"]) == 16
    np.testing.assert_array_equal(rows["index"], np.arange(16))
    assert metrics["avg_mse"] == pytest.approx(rows["mse"].mean(), rel=1e-9)
    assert metrics["median_mse"] == pytest.approx(np.median(rows["mse"]), rel=1e-9)
    assert metrics["worst_mse"] == pytest.approx(rows["mse"].max(), rel=1e-9)
    assert metrics["worst_index"] == rows["index"][np.argmax(rows["mse"])]
    wrapped = (rows["predicted_angle_deg"] - rows["true_angle_deg"] + 180) % 360 - 180
    np.testing.assert_allclose(np.abs(rows["angle_error_deg"]), np.abs(wrapped), atol=1e-4)
    assert metrics["angle_mae_deg"] == pytest.approx(np.abs(rows["angle_error_deg"]).mean(),
                                                     abs=1e-5)
    assert metrics["angle_rmse_deg"] == pytest.approx(
        np.sqrt(np.square(rows["angle_error_deg"]).mean()), abs=1e-5)

    # The same numbers as the library on the data the config names, and a distinct baseline.
    expected = _evaluate_saved_model(
        workspace["ours"], workspace["batches"].as_numpy_iterator(), workspace["normalization"])
    assert metrics["avg_mse"] == pytest.approx(expected.metrics["avg_mse"], rel=1e-5)
    np.testing.assert_allclose(rows["true_angle_deg"], to_degrees(expected.true_angle),
                               atol=1e-4)
    baseline = json.loads((out / "baseline_metrics.json").read_text())
    assert set(baseline) == METRIC_KEYS and baseline["saved_model"] == workspace["baseline"]
    assert baseline["num_images"] == 16 and baseline["avg_mse"] != metrics["avg_mse"]

    # The trivial baseline: the mean training image, angle 0, scored on the same images.
    trivial = json.loads((out / "mean_image_metrics.json").read_text())
    assert trivial["saved_model"] == "mean training image" and trivial["num_images"] == 16
    train, normalization = datasets.load("simulated_particles", "train", workspace["data_dir"],
                                         simulation=SIMULATION)
    mean = np.mean([e["image"] for e in train.as_numpy_iterator()], axis=0)
    truth = np.concatenate([b["image"] for b in workspace["batches"].as_numpy_iterator()])
    expected_mse = evaluation.per_image_mse(truth, normalization.normalize(mean)[None]).mean()
    assert trivial["avg_mse"] == pytest.approx(expected_mse, rel=1e-4)
    assert trivial["angle_mae_deg"] == pytest.approx(np.abs(rows["true_angle_deg"]).mean(),
                                                     abs=1e-3)
    assert "mean image: 16 images" in done.stdout

    for name in evaluation.FIGURES:
        image = matplotlib.image.imread(str(out / name))
        assert image.ndim == 3 and min(image.shape[:2]) > 100 and image.std() > 0, name
    # Fig. 2 layout: ground truth, input, baseline, ours.
    examples = matplotlib.image.imread(str(out / "examples.png"))
    assert examples.shape[1] == pytest.approx(4 * 160, abs=2)
    assert "ours: 16 images" in done.stdout and "baseline: 16 images" in done.stdout


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2 and a single `error: ...` line (TensorFlow's C++ start-up logs aside)."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_cli_missing_saved_model(workspace):
    out = workspace["root"] / "missing_report"
    missing = str(workspace["root"] / "saved_models" / "nothing" / "1")
    done = run_cli(f"--flagfile={workspace['flagfile']}", f"--saved_model={missing}",
                   f"--output_dir={out}")
    assert_one_line_error(done, missing, "no such SavedModel folder")
    assert not out.exists()


def test_cli_image_size_mismatch(workspace):
    out = workspace["root"] / "mismatch_report"
    done = run_cli(f"--flagfile={workspace['flagfile']}", f"--saved_model={workspace['small']}",
                   f"--output_dir={out}")
    assert_one_line_error(done, workspace["small"], "16x16", "24x24")
    assert not out.exists()


# Frame alignment.

def _blob(size: int = 24) -> np.ndarray:
    """An asymmetric image that is ~0 near the border, so rotations lose nothing at the corners."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    return (np.exp(-((x - 4) ** 2 + (y + 2) ** 2) / 8.0)
            + 0.5 * np.exp(-((x + 3) ** 2 + (y - 3) ** 2) / 5.0)).astype(np.float32)


class TurnedFrameModel:
    """A stand-in ServingModel that is exact up to its canonical frame: canonical image
    rotate(truth, psi) and angle θ − psi, as a model with a learned frame turned by psi would."""

    path = "turned"
    image_size = 24

    def __init__(self, truth: np.ndarray, angles: list[np.ndarray], psi: float):
        self.canonical = np.asarray(rotate(truth[None, ..., None], [psi]))[0]
        self.angles, self.psi = iter(angles), psi

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n = len(images)
        canonical = NORMALIZATION.denormalize(np.repeat(self.canonical[None], n, axis=0))
        return {"canonical_image": np.asarray(canonical), "angle": next(self.angles) - self.psi,
                "latent": np.zeros((n, 2), np.float32)}


def test_frame_alignment_recovers_a_turned_canonical_frame():
    truth = _blob()
    angles = [np.radians([-150.0, -40.0, 10.0, 95.0]), np.radians([170.0, -175.0, 60.0])]
    batches, start = [], 0
    for angle in angles:
        n = len(angle)
        image = np.repeat(truth[None, ..., None], n, axis=0)
        batches.append({"image": image, "observed": np.asarray(rotate(image, angle)),
                        "angle": angle.astype(np.float32),
                        "index": np.arange(start, start + n, dtype=np.int64)})
        start += n
    psi = math.radians(70.0)
    raw, = evaluation.evaluate_models([TurnedFrameModel(truth, angles, psi)], batches,
                                      NORMALIZATION)
    estimated = evaluation.estimate_frame_rotation(raw.true_angle, raw.predicted_angle)
    assert estimated == pytest.approx(psi, abs=1e-5)  # circular mean across the ±180° wrap
    aligned, = evaluation.evaluate_models([TurnedFrameModel(truth, angles, psi)], batches,
                                          NORMALIZATION, frame_rotations=[estimated])
    assert raw.metrics["angle_mae_deg"] == pytest.approx(70.0, abs=1e-3)
    assert aligned.metrics["angle_mae_deg"] < 1e-3
    assert aligned.metrics["frame_rotation_deg"] == pytest.approx(70.0, abs=1e-3)
    # Turning the output back by -ψ leaves only interpolation blur; the wrong sign (+ψ) would
    # leave it 140° off.
    signal = np.mean(np.square(truth))
    assert aligned.metrics["worst_mse"] < 0.02 * signal < raw.metrics["avg_mse"]
    wrong, = evaluation.evaluate_models([TurnedFrameModel(truth, angles, psi)], batches,
                                        NORMALIZATION, frame_rotations=[-estimated])
    assert wrong.metrics["avg_mse"] > 0.5 * raw.metrics["avg_mse"]
    with pytest.raises(ValueError, match="2 frame rotations for 1 models"):
        evaluation.evaluate_models([EchoModel()], fake_batches([[0.1]]), NORMALIZATION,
                                   frame_rotations=[0.0, 0.0])


def test_frame_aligned_errors_forgive_one_rotation_per_group_only():
    rng = np.random.default_rng(0)
    true = rng.uniform(-np.pi, np.pi, 200)
    groups = np.repeat([0, 1], 100)
    offsets = np.where(groups == 0, 1.0, -2.5)
    np.testing.assert_allclose(evaluation.frame_aligned_errors_deg(true, true + offsets, groups),
                               0, atol=1e-9)
    # One rotation for both groups cannot absorb two different ones.
    assert evaluation.frame_aligned_errors_deg(true, true + offsets).mean() > 40
    noisy = true + offsets + np.radians(rng.normal(0, 2, 200))
    summary = evaluation.psi_error_summary(evaluation.frame_aligned_errors_deg(true, noisy, groups))
    assert 1 < summary["psi_mae_deg"] < 2.5


def test_frame_aligned_errors_on_hand_made_angles():
    # Differences of ±10° about a common 40° rotation, and of 179° / -179° (the rotation is 180°,
    # across the wrap): each particle 10°, then 1°, off.
    true = np.radians([50.0, 30.0, 179.0, -179.0])
    errors = evaluation.frame_aligned_errors_deg(true, np.zeros(4), np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(errors, [10.0, 10.0, 1.0, 1.0], atol=1e-9)
    with pytest.raises(ValueError, match="3 true angles but 2 predicted"):
        evaluation.frame_aligned_errors_deg(np.zeros(3), np.zeros(2))


def test_least_absolute_rotation_follows_the_unflipped_majority():
    # 6 particles in a frame turned by 30°, 4 more turned 160° further (flipped, 20° off the
    # flip): the circular mean is pulled ~31° away; the least-absolute rotation stays at 30°.
    true = np.radians([-170.0, -100.0, -20.0, 40.0, 90.0, 150.0, -60.0, 10.0, 120.0, 175.0])
    flipped = np.arange(10) >= 6
    predicted = true - np.radians(30.0) + np.where(flipped, np.radians(160.0), 0.0)
    psi = evaluation.least_absolute_frame_rotation(true, predicted)
    assert math.degrees(psi) == pytest.approx(30.0, abs=1e-9)
    errors = evaluation.frame_aligned_errors_deg(true, predicted, None,
                                                 evaluation.least_absolute_frame_rotation)
    np.testing.assert_allclose(errors, np.where(flipped, 160.0, 0.0), atol=1e-9)
    assert evaluation.frame_aligned_errors_deg(true, predicted)[~flipped].min() > 25
    with pytest.raises(ValueError, match="no angles"):
        evaluation.least_absolute_frame_rotation(np.zeros(0), np.zeros(0))


def test_psi_error_summary():
    summary = evaluation.psi_error_summary(np.array([1.0, 2.0, 20.0, 30.0]))
    assert summary == {"psi_mae_deg": 13.25, "psi_median_deg": 11.0, "psi_over_15_percent": 50.0}
    with pytest.raises(ValueError, match="no angle errors"):
        evaluation.psi_error_summary(np.zeros(0))


def test_nearest_reference_oracle_answers_the_reference_the_true_angle_points_to():
    rng = np.random.default_rng(0)
    references = rng.uniform(size=(3, 12, 12)).astype(np.float32)
    images = references[[2, 0, 1, 2]][..., None] + 0.05 * rng.normal(size=(4, 12, 12, 1))
    images = images.astype(np.float32)
    angles = np.array([0.3, -2.0, 1.0, 3.0], np.float32)
    batch = {"image": images, "observed": np.asarray(rotate(images, angles)), "angle": angles,
             "index": np.arange(4)}
    metrics = evaluation.nearest_reference_metrics([batch], references)
    expected = np.mean((images - references[[2, 0, 1, 2]][..., None]) ** 2, axis=(1, 2, 3))
    assert metrics["avg_mse"] == pytest.approx(expected.mean(), rel=1e-5)
    assert metrics["angle_mae_deg"] == 0.0 and metrics["num_images"] == 4


def test_probes_find_what_a_latent_carries_held_out_and_nothing_in_noise():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(600, 8))
    linear = latent @ rng.normal(size=8)
    # A target no linear map reads (even in every coordinate) but nearest neighbours do.
    ring = np.cos(2.0 * latent[:, 0]) + np.cos(2.0 * latent[:, 1])
    assert evaluation.probe_r2(latent, linear) > 0.99
    assert evaluation.probe_r2(latent, ring) < 0.1
    assert evaluation.knn_r2(latent[:, :2], ring) > 0.8
    noise = rng.normal(size=600)  # held out, a probe of noise scores about 0, never well
    assert evaluation.probe_r2(latent, noise) < 0.05
    assert evaluation.knn_r2(latent, noise) < 0.05

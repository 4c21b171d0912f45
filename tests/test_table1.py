"""benchmarks/table1.py's table assembly on hand-made numbers: no training, no data."""
import json
import os

import pytest
from absl import flags

from data_pipeline import settings
from rotinv_tf import config as configs
from rotinv_tf.config import Config
from tests.data_fixtures import load_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def table1():
    return load_module(os.path.join(REPO, "benchmarks", "table1.py"), "table1")


def _scores(avg: float, worst: float, mae_deg: float, psi_deg: float = 0.0) -> dict:
    row = {"avg_mse": avg, "worst_mse": worst, "median_mse": avg / 2, "angle_mae_deg": mae_deg,
           "angle_mse_rad2": (mae_deg * 3.141592653589793 / 180) ** 2, "num_images": 100}
    return {"raw": row, "aligned": {**row, "frame_rotation_deg": psi_deg}}


def _row(dataset: str, method: str, scores: dict) -> dict:
    return {"dataset": dataset, "method": method, **scores, "train_seconds": 120.0,
            "images_per_second": 300.0, "schedule": "3 ep × 8 steps", "export_path": "x/1"}


MACHINE = {"cpu_count": 2, "platform": "Linux", "tensorflow": "2.21.0", "keras": "3.15.0",
           "gpus": 0, "date": "2025-01-01 00:00 UTC"}


def _record(table1, schedule: str, rows: list[dict]) -> dict:
    prefix = "table1_quick" if schedule == "quick" else "table1"
    return table1.assemble(rows, table1.SCHEDULES[schedule], MACHINE, 600.0, 540.0, 1234,
                           "python benchmarks/table1.py", prefix)


def test_ratios_targets_and_paper_numbers(table1):
    rows = [_row("rotated_mnist", "ours", _scores(0.01, 0.1, 3.0)),
            _row("rotated_mnist", "spatial_vae", _scores(0.05, 0.2, 40.0, psi_deg=30.0)),
            _row("simulated_5hdb", "ours", _scores(0.02, 0.3, 12.0)),
            _row("simulated_5hdb", "spatial_vae", _scores(0.04, 0.25, 90.0)),
            {**_row("rotated_mnist", "mean_image", _scores(0.02, 0.1, 45.0)),
             "train_seconds": None, "images_per_second": None}]
    record = _record(table1, "cpu", rows)
    assert record["ratios"]["rotated_mnist"]["raw"] == pytest.approx(
        {"avg_mse": 5.0, "worst_mse": 2.0})
    assert record["ratios"]["simulated_5hdb"]["aligned"]["worst_mse"] == pytest.approx(0.25 / 0.3)
    assert dict(record["targets"]) == {
        "rotated_mnist: ours beats spatial-VAE in avg and worst MSE (raw)": True,
        "rotated_mnist: ours beats spatial-VAE in avg and worst MSE (aligned)": True,
        "simulated_5hdb: ours beats spatial-VAE in avg and worst MSE (raw)": False,
        "simulated_5hdb: ours beats spatial-VAE in avg and worst MSE (aligned)": False,
        "rotated_mnist: ours avg MSE ≤ 1/3 of the mean training image's": False,
        "rotated_mnist: ours avg MSE below the nearest-canonical oracle's": None,
        "simulated_5hdb: ours avg MSE ≤ 1/3 of the mean training image's": None,
        "simulated_5hdb: ours avg MSE below the nearest-canonical oracle's": None,
        "rotated_mnist: ours avg MSE ≤ 0.02": True,
        "simulated_5hdb: ours angle MAE < 10° at SNR 0.1": False}
    assert record["rows"][1]["paper"] == {"avg_mse": 66.07, "worst_mse": 121.82}
    assert record["figures"]["simulated_5hdb aligned"] == "table1_simulated_5hdb_aligned"
    assert "| rotated_mnist | mean training image | 0.02 |" in table1.render_markdown(record)


def test_missing_rows_are_not_measured(table1):
    record = _record(table1, "cpu", [_row("rotated_mnist", "ours", _scores(0.03, 0.1, 3.0))])
    targets = dict(record["targets"])
    assert targets["rotated_mnist: ours avg MSE ≤ 0.02"] is False
    assert targets["simulated_5hdb: ours angle MAE < 10° at SNR 0.1"] is None
    assert record["ratios"] == {}


def test_quick_run_is_labelled_and_written_beside_not_over(table1, tmp_path):
    rows = [_row("rotated_mnist", m, _scores(0.01, 0.1, 3.0)) for m in ("ours", "spatial_vae")]
    quick = table1.write_table(str(tmp_path), "table1_quick", _record(table1, "quick", rows))
    assert [os.path.basename(p) for p in quick] == ["table1_quick.md", "table1_quick.json"]
    text = open(quick[0]).read()
    assert text.startswith("# Table 1 — SMOKE RUN (--quick)")
    assert "[examples](table1_quick_rotated_mnist/examples.png)" in text
    assert "| rotated_mnist | spatial-VAE | 0.01 |" in text
    assert "- rotated_mnist: ours avg MSE ≤ 0.02: met" in text
    assert json.load(open(quick[1]))["schedule"] == "quick"
    table1.write_table(str(tmp_path), "table1", _record(table1, "cpu", rows))
    assert "SMOKE" not in open(tmp_path / "table1.md").read()
    assert sorted(os.listdir(tmp_path)) == ["table1.json", "table1.md", "table1_quick.json",
                                            "table1_quick.md"]


def test_nearest_canonical_oracle_answers_the_training_image_the_true_angle_points_to(table1):
    import numpy as np
    from data_pipeline.rotation import rotate
    rng = np.random.default_rng(0)
    references = rng.uniform(size=(3, 12, 12)).astype(np.float32)
    images = references[[2, 0, 1, 2]][..., None] + 0.05 * rng.normal(size=(4, 12, 12, 1))
    images = images.astype(np.float32)
    angles = np.array([0.3, -2.0, 1.0, 3.0], np.float32)
    batch = {"image": images, "observed": np.asarray(rotate(images, angles)), "angle": angles,
             "index": np.arange(4)}
    row = table1.nearest_canonical_row([batch], references)["raw"]
    expected = np.mean((images - references[[2, 0, 1, 2]][..., None]) ** 2, axis=(1, 2, 3))
    assert row["avg_mse"] == pytest.approx(expected.mean(), rel=1e-5)
    assert row["angle_mae_deg"] == 0.0 and row["num_images"] == 4


def test_cpu_schedule_estimate_fits_the_budget(table1):
    sizes = {"rotated_mnist": (8000, 2000), "simulated_5hdb": (16000, 4000)}
    assert table1.estimate_seconds(table1.SCHEDULES["cpu"], sizes) < 120 * 60
    assert table1.estimate_seconds(table1.SCHEDULES["quick"],
                                   {"rotated_mnist": (8000, 2000),
                                    "simulated_5hdb": (1600, 400)}) < 10 * 60


def test_every_run_is_a_valid_config(table1):
    for schedule in table1.SCHEDULES.values():
        for key, method in schedule.runs:
            options = table1.data_options(key, schedule, "mnist_dir")
            config = table1.train_config(key, method, schedule, options, "work", None, 7)
            config.check()
            assert config.model.name == table1.METHODS[method]
            assert config.data.eval_angle_seed == 7
            if method == "ours":  # trained as the paper, as its config files say
                ours = config.model.autoencoder
                assert (ours.adversarial_weight, config.schedule.adam_beta_1) == (
                    table1.PAPER_SETTINGS["adversarial_weight"],
                    table1.PAPER_SETTINGS["adam_beta_1"])


def test_the_papers_config_files_train_as_table1_does(table1):
    for name in ("simulated_5hdb.cfg", "mnist.cfg", "5hdb.cfg"):
        values = flags.FlagValues()
        settings.define_flags(Config, flag_values=values)
        values(["train", f"--flagfile={os.path.join(REPO, 'configs', name)}"])
        config = configs.from_flags(values)
        assert (config.model.autoencoder.adversarial_weight, config.schedule.adam_beta_1) == (
            table1.PAPER_SETTINGS["adversarial_weight"], table1.PAPER_SETTINGS["adam_beta_1"]), name

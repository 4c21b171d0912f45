"""`benchmarks.table1`'s units, aggregation and table on hand-made numbers: no training."""
import dataclasses
import json
import math
import os

import numpy as np
import pytest
from absl import flags

from data_pipeline import settings
from data_pipeline.simulator import SimulationConfig, simulate_split
from rotinv_tf import config as configs
from rotinv_tf.config import Config
from benchmarks.table1 import estimate, plan, report, run, scoring

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(avg: float, worst: float, mae_deg: float, psi_deg: float = 0.0) -> dict:
    row = {"avg_mse": avg, "worst_mse": worst, "median_mse": avg / 2, "angle_mae_deg": mae_deg,
           "angle_rmse_deg": mae_deg * 1.2, "angle_mse_rad2": math.radians(mae_deg * 1.2) ** 2,
           "num_images": 100}
    return {"raw": row, "aligned": {**row, "frame_rotation_deg": psi_deg}}


def _unit(dataset: str, method: str, seed: int | None, parts: dict) -> dict:
    trained = seed is not None
    return {"dataset": dataset, "method": method, "seed": seed, "parts": parts,
            "train_seconds": 100.0 if trained else None,
            "images_per_second": 500.0 if trained else None,
            "wall_seconds": 120.0 if trained else None, "export_path": "x/1",
            "schedule_text": "2 ep × 4 steps"}


MACHINE = {"cpu_count": 2, "platform": "Linux", "tensorflow": "2.21.0", "keras": "3.15.0",
           "gpus": 0, "date": "2025-01-01 00:00 UTC"}
SPLITS = {"rotated_mnist": {"splits": {"train": {"images": 7200, "distinct_canonical": 7190}},
                            "hinge_deg": {}}}


def _mnist_units() -> list[dict]:
    units = [_unit("rotated_mnist", "ours", s, {"test": _row(0.01 + 0.001 * s, 0.1, 3.0 + s)})
             for s in (0, 1, 2)]
    units += [_unit("rotated_mnist", "spatial_vae", s, {"test": _row(0.05, 0.2, 40.0, 30.0)})
              for s in (0, 1, 2)]
    units += [_unit("rotated_mnist", "mean_image", None, {"test": _row(0.0714, 0.16, 35.0)}),
              _unit("rotated_mnist", "nearest_canonical", None, {"test": _row(0.03, 0.1, 0.0)})]
    return units


def test_rows_are_mean_and_sample_std_over_seeds():
    results = report.aggregate(_mnist_units() + [
        _unit("simulated_5hdb", "ours", 0, {"in_range": _row(0.001, 0.002, 10.0),
                                            "held_out": _row(0.002, 0.004, 20.0)})])
    ours = results["rotated_mnist"]["test"]["ours"]
    assert ours["avg_mse"]["seeds"] == pytest.approx([0.010, 0.011, 0.012])
    assert ours["avg_mse"]["mean"] == pytest.approx(0.011)
    assert ours["avg_mse"]["std"] == pytest.approx(0.001)  # sample std, ddof 1
    assert ours["angle_mae_deg"]["mean"] == pytest.approx(4.0)
    assert ours["seed_ids"] == [0, 1, 2]
    assert set(ours) >= {"avg_mse", "worst_mse", "angle_mae_deg", "angle_mse_rad2",
                         "angle_rmse_deg"}
    assert results["rotated_mnist"]["test"]["spatial_vae"]["aligned"]["frame_rotation_deg"][
        "mean"] == pytest.approx(30.0)
    mean = results["rotated_mnist"]["test"]["mean_image"]
    assert mean["avg_mse"] == {"mean": 0.0714, "std": 0.0, "seeds": [0.0714]}
    assert mean["train_seconds"] is None
    particles = results["simulated_5hdb"]
    assert particles["held_out"]["ours"]["angle_mae_deg"]["mean"] == 20.0
    assert particles["in_range"]["ours"]["angle_mae_deg"]["mean"] == 10.0


def test_targets_need_the_margin_and_two_std():
    targets = dict(report.check_targets(report.aggregate(_mnist_units())))
    # 0.011 ± 0.001 vs the mean image 0.0714: 6.5x. vs spatial-VAE 0.05: 4.5x.
    assert targets["rotated_mnist / test: ours avg MSE ≤ 1/3 of the mean training image's, "
                   "by > 2 std"] is True
    assert targets["rotated_mnist / test: ours avg MSE ≤ 1/2 of spatial-VAE's, by > 2 std"] is True
    assert targets["rotated_mnist / test: ours avg MSE below the nearest-canonical oracle's"]
    assert targets["rotated_mnist: ours avg MSE ≤ 0.02 (the paper's)"] is True
    assert targets["simulated_5hdb / held_out: ours angle MSE ≤ 0.17 rad² at SNR 0.1 (the "
                   "paper's)"] is None
    noisy = [_unit("rotated_mnist", "ours", s, {"test": _row(v, 0.1, 3.0)})
             for s, v in enumerate((0.001, 0.02, 0.039))]  # mean 0.02, std 0.019
    noisy.append(_unit("rotated_mnist", "spatial_vae", 0, {"test": _row(0.05, 0.2, 40.0)}))
    targets = dict(report.check_targets(report.aggregate(noisy)))
    assert targets["rotated_mnist / test: ours avg MSE ≤ 1/2 of spatial-VAE's, by > 2 std"] is False


def test_table_and_json_carry_every_part_and_the_split_statistics(tmp_path):
    units = _mnist_units() + [_unit("rotated_mnist", "ours", 5, {"test": _row(9.0, 9.0, 9.0)})]
    record = report.assemble(units, SPLITS, plan.SCHEDULES["quick"], [0, 1, 2], MACHINE,
                             600.0, 1234, ["python -m benchmarks.table1 --quick"],
                             {"rotated_mnist test": "table1_quick_rotated_mnist_test"})
    paths = report.write_table(str(tmp_path), "table1_quick", record)
    text = open(paths[0]).read()
    assert text.startswith("# Table 1 — SMOKE RUN (--quick)")
    assert "| rotated_mnist | test | ours | 3 | 0.011 ± 0.001 |" in text  # seed 5 left out
    assert "| rotated_mnist | test | mean training image | 1 | 0.0714 |" in text
    assert "| rotated_mnist | train | 7200 | 7190 | – |" in text
    assert "rotated_mnist 6 of 9" in text  # ours and spatial-VAE, no ablation
    assert "[examples](table1_quick_rotated_mnist_test/examples.png)" in text
    saved = json.load(open(paths[1]))
    assert saved["results"]["rotated_mnist"]["test"]["ours"]["angle_mse_rad2"]["seeds"] == \
        pytest.approx([math.radians(3.6) ** 2, math.radians(4.8) ** 2, math.radians(6.0) ** 2])


def test_split_statistics_count_distinct_canonical_images():
    base = dict(image_size=12, num_conformations=4, images_per_conformation=5,
                test_conformations=1)
    discrete = simulate_split(SimulationConfig(**base), "train")["image"]
    continuous = simulate_split(SimulationConfig(**base, continuous_conformations=True),
                                "train")["image"]
    stats = scoring.split_statistics({"discrete": discrete, "continuous": continuous})
    assert stats == {"discrete": {"images": 15, "distinct_canonical": 3},
                     "continuous": {"images": 15, "distinct_canonical": 15}}


def test_held_out_hinge_interval_is_beyond_the_training_one():
    schedule = plan.SCHEDULES["quick"]
    options = plan.data_options("simulated_5hdb", schedule, None)
    intervals = scoring.hinge_intervals("simulated_5hdb", schedule, options)
    assert intervals["train"] == intervals["in_range"] == [-40.0, 24.0]
    assert intervals["held_out"] == [24.0, 40.0]
    parts = plan.test_parts("simulated_5hdb", schedule, options)
    assert parts["in_range"][0]["simulation"]["seed"] != options["simulation"].get("seed", 0)


def test_a_rerun_skips_finished_units_and_reruns_changed_ones(tmp_path, monkeypatch):
    schedule = plan.SCHEDULES["quick"]
    trained = []

    class FakeScorer:
        def __init__(self, key, *args):
            self.key = key

        def baselines(self, schedule):
            return {"units": [_unit(self.key, "mean_image", None, {"test": _row(0.07, 0.1, 35)})],
                    "splits": {}, "hinge_deg": {}}

    def fake_train_unit(config, scorer):
        trained.append(config.runtime.name)
        return {"parts": {"test": _row(0.01, 0.1, 3.0)}, "psi_rad": 0.0, "export_path": "x",
                "train_seconds": 1.0, "images_per_second": 1.0, "wall_seconds": 1.0}

    monkeypatch.setattr(run, "Scorer", FakeScorer)
    monkeypatch.setattr(run, "split_sizes", lambda *a: {"train": 100, "validation": 10,
                                                         "test": 10})
    monkeypatch.setattr(run, "train_unit", fake_train_unit)
    monkeypatch.setattr(run, "write_figures", lambda *a: {})

    def rerun(seeds, schedule=schedule, methods=None):
        run.run_dataset("rotated_mnist", schedule, seeds, str(tmp_path), "t", str(tmp_path),
                        None, "mnist", 1234, methods)

    rerun([0], methods=["ours_no_adversarial"])  # a subset of the methods trains only those
    assert trained == ["rotated_mnist_ours_no_adversarial_seed0"]
    rerun([0])  # the rest of seed 0
    assert trained[1:] == [f"rotated_mnist_{m}_seed0" for m in plan.METHODS
                           if m != "ours_no_adversarial"]
    rerun([0, 1])  # seed 0 is saved: only seed 1 trains
    assert trained[3:] == [f"rotated_mnist_{m}_seed1" for m in plan.METHODS]
    rerun([0, 1])
    assert len(trained) == 6
    saved, _ = run.load_units(str(tmp_path), schedule)
    assert len(saved) == 7  # 6 trained, 1 baseline
    longer = dataclasses.replace(schedule, runs={
        **schedule.runs, ("rotated_mnist", "spatial_vae"): plan.Run(3, 1e-3, 0)})
    rerun([0], longer)  # a unit saved with other settings runs again
    assert trained[6:] == ["rotated_mnist_spatial_vae_seed0"]


def test_the_oracle_row_is_the_library_oracle_in_both_frames():
    from data_pipeline.rotation import rotate
    rng = np.random.default_rng(0)
    references = rng.uniform(size=(2, 8, 8)).astype(np.float32)
    images = references[[1, 0, 1]][..., None]
    angles = np.array([0.5, -1.0, 2.0], np.float32)
    batch = {"image": images, "observed": np.asarray(rotate(images, angles)), "angle": angles,
             "index": np.arange(3)}
    row = scoring.nearest_canonical_row([batch], references)
    assert set(row["raw"]) == set(scoring.SCORES) | {"num_images"}
    assert row["aligned"] == {**row["raw"], "frame_rotation_deg": 0.0}


@pytest.mark.xfail(strict=True, reason="estimate 2 h 38 min, over the 2 h budget: 2,000 particles "
                   "per conformation bin put ours at ~9 min a unit (issue 11's ratio to the mean "
                   "image needs them); spatial-VAE's particle run is capped at ~29k images")
def test_cpu_schedule_estimate_fits_the_budget():
    # Split sizes of the CPU schedule: MNIST's 10k test files; 2,000 particles per conformation
    # (16 training conformations, every 10th validation; 4 held out), 125 per conformation in
    # range.
    sizes = {"rotated_mnist": {"train": 7200, "validation": 800, "test": 2000},
             "simulated_5hdb": {"train": 28800, "validation": 3200, "test": 1800 + 8000}}
    assert estimate.estimate_seconds(plan.SCHEDULES["cpu"], sizes, 3) <= 120 * 60


def test_quick_schedule_estimate_is_minutes():
    assert estimate.estimate_seconds(plan.SCHEDULES["quick"], {
        "rotated_mnist": {"train": 7200, "validation": 800, "test": 2000},
        "simulated_5hdb": {"train": 360, "validation": 40, "test": 244}}, 3) < 20 * 60


def test_every_run_is_a_valid_config():
    for schedule in plan.SCHEDULES.values():
        for key, method in schedule.runs:
            options = plan.data_options(key, schedule, "mnist_dir")
            config = plan.train_config(key, method, schedule, options, "work", None, 7, 3)
            config.check()
            assert config.model.name == plan.METHODS[method]
            assert config.data.eval_angle_seed == 7 and config.runtime.seed == 3
            if method != "spatial_vae":  # trained as the paper, as its config files say
                ours = config.model.autoencoder
                assert config.schedule.adam_beta_1 == plan.PAPER_SETTINGS["adam_beta_1"]
                assert ours.adversarial_weight == (
                    0.0 if method == "ours_no_adversarial"
                    else plan.PAPER_SETTINGS["adversarial_weight"])
                assert ours.architecture == plan.PAPER_SETTINGS["architecture"]
                particles = key == "simulated_5hdb"  # in four poses; no L1 term on either
                assert ours.reconstruction_norm == "l2"
                assert ours.augment_quarter_turns == particles


def test_the_papers_config_files_train_as_table1_does():
    for name in ("simulated_5hdb.cfg", "mnist.cfg", "5hdb.cfg"):
        values = flags.FlagValues()
        settings.define_flags(Config, flag_values=values)
        values(["train", f"--flagfile={os.path.join(REPO, 'configs', name)}"])
        config = configs.from_flags(values)
        ours = config.model.autoencoder
        assert (ours.architecture, ours.adversarial_weight, config.schedule.adam_beta_1) == (
            plan.PAPER_SETTINGS["architecture"], plan.PAPER_SETTINGS["adversarial_weight"],
            plan.PAPER_SETTINGS["adam_beta_1"]), name

"""`benchmarks.equal_time`'s configs and summary on hand-made numbers: no training."""
import json

import pytest

from benchmarks import equal_time


def test_runs_differ_only_in_architecture_and_name():
    options = {"simulation": {"images_per_conformation": 20}}
    configs = [equal_time.run_config("simulated_5hdb", a, 1, options, 60.0, 1e-3, "w", None, 7)
               for a in equal_time.ARCHITECTURES]
    for config, architecture in zip(configs, equal_time.ARCHITECTURES):
        assert config.model.autoencoder.architecture == architecture
        assert config.schedule.max_train_cpu_seconds == 60.0
        assert config.runtime.seed == 1 and config.data.simulation.images_per_conformation == 20
        config.check()
    rest = [c.replace(architecture="conv", name="x", model_dir="x") for c in configs]
    assert rest[0] == rest[1]


def _row(dataset, architecture, seed, avg, mae):
    return {"dataset": dataset, "architecture": architecture, "seed": seed, "avg_mse": avg,
            "worst_mse": 2 * avg, "median_mse": avg, "angle_mae_deg": mae}


def test_summary_and_verdict_compare_the_seed_means():
    rows = [_row("d", "conv", 0, 0.010, 5.0), _row("d", "conv", 1, 0.030, 7.0),
            _row("d", "paper", 0, 0.015, 4.0), _row("d", "paper", 1, 0.016, 4.0),
            _row("d", "mean_image", 0, 0.1, 90.0), _row("d", "mean_image", 1, 0.1, 90.0)]
    summary = {line["architecture"]: line for line in equal_time.summarize(rows)}
    assert summary["conv"]["avg_mse"] == "0.02 ± 0.01414"
    assert summary["paper"]["seeds"] == 2 and "cpu_seconds" not in summary["paper"]
    assert equal_time.verdicts(rows) == {"d": {"avg_mse": False, "angle_mae_deg": False}}


def test_a_later_seed_is_added_only_to_a_report_of_the_same_settings(tmp_path):
    settings = {"budget_cpu_seconds": 60.0, "learning_rate": 1e-3, "images_per_conformation": 20,
                "eval_angle_seed": 7}
    path = tmp_path / "equal_time.json"
    path.write_text(json.dumps({**settings, "seeds": [0], "rows": [_row("d", "paper", 0, 1, 2)],
                                "wall_seconds": 5.0, "command": "python a"}))
    earlier = equal_time.load_earlier(str(path), settings, [1])
    assert earlier["rows"][0]["seed"] == 0 and earlier["commands"] == ["python a"]
    with pytest.raises(equal_time.DataError, match="settings differ \\(budget_cpu_seconds\\)"):
        equal_time.load_earlier(str(path), {**settings, "budget_cpu_seconds": 30.0}, [1])
    with pytest.raises(equal_time.DataError, match="seeds repeat \\(\\[0\\]\\)"):
        equal_time.load_earlier(str(path), settings, [0, 1])

"""`benchmarks.equal_time`'s configs and summary on hand-made numbers: no training."""
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


def test_a_later_seed_is_added_only_to_the_seeds_of_the_same_settings(tmp_path, monkeypatch):
    settings = {"budget_cpu_seconds": 60.0, "learning_rate": 1e-3, "images_per_conformation": 20,
                "eval_angle_seed": 7}
    trained = []

    def fake_seed(seed, options, settings, work_dir, data_dir):
        trained.append((seed, settings["budget_cpu_seconds"]))
        rows = [_row("d", a, seed, 0.01 * (seed + 1), 5.0) for a in ("conv", "paper")]
        return {"seed": seed, "rows": rows, "wall_seconds": 10.0}

    monkeypatch.setattr(equal_time, "run_seed", fake_seed)
    work = str(tmp_path)
    equal_time.compare([0], settings, {}, work, None, "python -m benchmarks.equal_time")
    report = equal_time.compare([0, 1], settings, {}, work, None, "python -m x --seeds=0,1")
    assert trained == [(0, 60.0), (1, 60.0)]  # seed 0 was saved: only seed 1 trained
    assert report["seeds"] == [0, 1] and report["wall_seconds"] == 20.0
    assert [row["seed"] for row in report["rows"]] == [0, 0, 1, 1]
    assert report["commands"] == ["python -m benchmarks.equal_time", "python -m x --seeds=0,1"]
    assert report["summary"][0]["avg_mse"] == "0.015 ± 0.007071"
    # Other settings: seed 0 trains again, and the report holds only what ran with them.
    other = equal_time.compare([0], {**settings, "budget_cpu_seconds": 30.0}, {}, work, None, "c")
    assert trained[2:] == [(0, 30.0)]
    assert other["seeds"] == [0] and other["budget_cpu_seconds"] == 30.0

"""Is the heavier convolutional architecture worth its cost? `--architecture=conv` (the default)
and `paper` trained for the same CPU time on Table 1's two data sets, each scored once on test.

    python -m benchmarks.equal_time [--budget_cpu_seconds=210] [--seeds=0] \
        [--images_per_conformation=200] [--mnist_dir=../shared/datasets/mnist]

For each seed, all four runs (two data sets, two architectures) train at once in processes of
their own, so both architectures see the same machine load, with
`rotinv_tf.training.train_lib.train` under the same `max_train_cpu_seconds` budget (CPU time of
each training process, validation included; wall time is reported beside it). Each run keeps the
weights of the epoch with the lowest validation reconstruction MSE (a partly trained last epoch
included) and exports them; then all SavedModels and the mean training image are scored once on
the same seeded test inputs with `rotinv_tf.evaluation.evaluate_models`. Data sets and their
settings are Table 1's (`benchmarks.table1`), with fewer simulated particles. Writes
`results/equal_time.{md,json}`.

Each seed is a unit (`benchmarks.units`) saved in --work_dir with the settings it ran with: a
rerun skips the seeds saved with the same settings, so `--seeds=0` then `--seeds=0,1` trains seed 1
only, and the report holds every seed saved with the settings of the run that writes it.
"""
import datetime
import multiprocessing
import os
import shutil
import time

import keras
from absl import flags

from benchmarks import driver
from benchmarks.report_files import mean_std, write_results
from benchmarks.table1 import plan
from benchmarks.table1.scoring import metric_row
from benchmarks.units import load_all, record_command, run_once
from data_pipeline import cli, datasets, input_fn
from data_pipeline.errors import DataError
from data_pipeline.preprocessing import mean_image
from rotinv_tf import evaluation
from rotinv_tf.config import Config
from rotinv_tf.serving.saved_model import load_serving_model
from rotinv_tf.training import train_lib

ARCHITECTURES = ("conv", "paper")
DATASETS = ("simulated_5hdb", "rotated_mnist")  # keys of plan.DATA
SELECTION_METRIC = "val_reconstruction_mse"
MAX_EPOCHS = 10_000  # the budget ends every run long before


def define_flags() -> None:
    """The driver's flags."""
    flags.DEFINE_float("budget_cpu_seconds", 210.0, "CPU seconds of training per run.")
    flags.DEFINE_list("seeds", ["0"], "Seeds; each trains both architectures on both data sets.")
    flags.DEFINE_integer("images_per_conformation", 200, "Simulated particles per conformation "
                         "(20 conformations, 16 train, 4 test, 40x40).")
    flags.DEFINE_float("learning_rate", 1e-3, "Learning rate of both optimizers (Table 1's CPU "
                       "schedule), constant.")
    flags.DEFINE_string("work_dir", "runs/equal_time", "Checkpoints, SavedModels and each seed's "
                        "saved unit (units/seed<N>.json).")
    flags.DEFINE_string("data_dir", None, "TensorFlow Datasets folder.")
    flags.DEFINE_string("mnist_dir", "../shared/datasets/mnist", "MNIST IDX files.")
    flags.DEFINE_integer("eval_angle_seed", 1234, "Seed of the fixed validation and test angles.")


FLAGS = flags.FLAGS
# What runs of one comparison share: each seed is a unit (`benchmarks.units`) saved with these, and
# the report holds every seed saved with the settings it is run with.
SHARED_SETTINGS = ("budget_cpu_seconds", "learning_rate", "images_per_conformation",
                   "eval_angle_seed")


def run_config(key: str, architecture: str, seed: int, options: dict, budget: float,
               learning_rate: float, work_dir: str, data_dir: str | None,
               eval_angle_seed: int) -> Config:
    """Table 1's config of ours on `key`, with the architecture, seed and CPU budget."""
    run = plan.Run(epochs=MAX_EPOCHS, learning_rate=learning_rate, lr_decay_epoch=0)
    schedule = plan.Schedule("equal_time", "equal CPU time", {(key, "ours"): run})
    name = f"{key}_{architecture}_seed{seed}"
    return plan.train_config(key, "ours", schedule, options, work_dir, data_dir,
                               eval_angle_seed, seed).replace(
        name=name, architecture=architecture, max_train_cpu_seconds=budget,
        model_dir=os.path.join(work_dir, name), export_dir=os.path.join(work_dir, "saved_models"))


class _StepCount(keras.callbacks.Callback):
    """Counts training steps (the last epoch may be cut short by the budget)."""

    def on_train_begin(self, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def train_run(config_json: str) -> dict:
    """Trains one run afresh (in a process of its own) and exports its best validation epoch."""
    config = Config.from_json(config_json)
    shutil.rmtree(config.runtime.run_dir, ignore_errors=True)
    steps = _StepCount()
    best = keras.callbacks.EarlyStopping(SELECTION_METRIC, patience=MAX_EPOCHS, mode="min",
                                         restore_best_weights=True)
    result = train_lib.train(config, verbose=2, callbacks=[steps, best])
    history = result.history
    rates = history["train_images_per_second"]
    steady = sorted(rates[1:] or rates)  # the first epoch includes tracing
    return {"export_path": result.export_path, "wall_seconds": result.seconds,
            "cpu_seconds": history["train_cpu_seconds"][-1], "epochs": len(history["loss"]),
            "steps": steps.steps, "best_epoch": best.best_epoch + 1,
            "best_val_mse": history[SELECTION_METRIC][best.best_epoch],
            "best_val_angle_error_deg": history["val_angle_error_deg"][best.best_epoch],
            "images_per_second": steady[len(steady) // 2]}


def evaluate(key: str, runs: dict, options: dict, data_dir: str | None,
             eval_angle_seed: int) -> dict:
    """Test metrics (`table1.scoring.metric_row`) of each architecture's SavedModel and of the mean
    training image, all on the same inputs; architecture (or "mean_image") -> row."""
    spec = plan.DATA[key]
    batches, normalization = input_fn.eval_input(
        spec.dataset, 256, split="test", data_dir=data_dir, angle_seed=eval_angle_seed,
        angle_distribution=spec.angle_distribution, angle_scale=spec.angle_scale, **options)
    train, _ = datasets.load(spec.dataset, "train", data_dir, **options)
    models = [load_serving_model(runs[a]["export_path"]) for a in ARCHITECTURES]
    models.append(evaluation.MeanImageModel(mean_image(train.map(lambda e: e["image"]))))
    results = evaluation.evaluate_models(models, batches.as_numpy_iterator(), normalization)
    return {name: metric_row(r.metrics)
            for name, r in zip(ARCHITECTURES + (plan.MEAN_IMAGE,), results)}


def summarize(rows: list[dict]) -> list[dict]:
    """One line per (data set, architecture): test metrics and costs, mean ± std over seeds."""
    cells = {"avg_mse": ".4g", "worst_mse": ".4g", "median_mse": ".4g", "angle_mae_deg": ".2f",
             "cpu_seconds": ".0f", "wall_seconds": ".0f", "epochs": ".1f", "steps": ".0f",
             "best_epoch": ".1f", "best_val_mse": ".4g", "images_per_second": ".0f"}
    lines = []
    for key in dict.fromkeys(r["dataset"] for r in rows):
        for arch in ARCHITECTURES + (plan.MEAN_IMAGE,):
            group = [r for r in rows if r["dataset"] == key and r["architecture"] == arch]
            line = {"dataset": key, "architecture": arch, "seeds": len(group)}
            for name, fmt in cells.items():
                if group and group[0].get(name) is not None:
                    line[name] = mean_std([r[name] for r in group], fmt)
            lines.append(line)
    return lines


def verdicts(rows: list[dict]) -> dict:
    """data set -> whether conv beats paper in mean test avg MSE and in angle MAE."""
    out = {}
    for key in dict.fromkeys(r["dataset"] for r in rows):
        mean = {a: {m: sum(r[m] for r in rows if r["dataset"] == key and r["architecture"] == a)
                    / sum(1 for r in rows if r["dataset"] == key and r["architecture"] == a)
                    for m in ("avg_mse", "angle_mae_deg")} for a in ARCHITECTURES}
        out[key] = {m: mean["conv"][m] < mean["paper"][m] for m in ("avg_mse", "angle_mae_deg")}
    return out


def render(report: dict) -> str:
    """equal_time.md from the report equal_time.json holds."""
    lines = ["# conv vs paper architecture at equal CPU time", "",
             f"{report['date']}, {report['cpu_count']} CPUs shared with other jobs (load "
             f"{report['load']}). Each run: {report['budget_cpu_seconds']:g} CPU seconds of "
             f"training (`max_train_cpu_seconds`: the training process's CPU time, validation "
             f"included), lr {report['learning_rate']:g} constant, batch 256, decoder:critic 4:1; "
             f"all four runs of a seed trained at the same time. Weights of the "
             f"epoch with the lowest validation reconstruction MSE, scored once on test (fixed "
             f"angles, seed {report['eval_angle_seed']}); MSE on the scale where clean images lie "
             f"in [0, 1]. Seeds: {', '.join(map(str, report['seeds']))} (mean ± std where more "
             f"than one). Simulated particles: 40x40, {report['images_per_conformation']} per "
             f"conformation (16 train conformations, every 10th image validation; 4 test). MNIST: "
             f"Table 1's rotated MNIST. Total wall time {report['wall_seconds'] / 60:.1f} min. "
             f"Command{'s' if len(report['commands']) > 1 else ''}: `{report['command']}`.", "",
             "| data set | architecture | test avg MSE | worst MSE | median MSE | angle MAE (°) | "
             "CPU s | wall s | epochs | steps | best epoch | best val MSE | images/s (wall) |",
             "|" + " --- |" * 13]
    for line in report["summary"]:
        lines.append("| " + " | ".join([line["dataset"], line["architecture"]] + [
            line.get(name, "–") for name in (
                "avg_mse", "worst_mse", "median_mse", "angle_mae_deg", "cpu_seconds",
                "wall_seconds", "epochs", "steps", "best_epoch", "best_val_mse",
                "images_per_second")]) + " |")
    lines += ["", "Default lower than paper (mean over seeds):", ""]
    for key, verdict in report["verdicts"].items():
        lines.append(f"- {key}: test avg MSE {'yes' if verdict['avg_mse'] else 'no'}, "
                     f"angle MAE {'yes' if verdict['angle_mae_deg'] else 'no'}")
    return "\n".join(lines) + "\n"


def run_seed(seed: int, options: dict, settings: dict, work_dir: str,
             data_dir: str | None) -> dict:
    """One seed's unit: its four runs trained at once (processes of their own), then scored."""
    start = time.perf_counter()
    keys = [(key, a) for key in DATASETS for a in ARCHITECTURES]
    configs = [run_config(key, a, seed, options[key], settings["budget_cpu_seconds"],
                          settings["learning_rate"], work_dir, data_dir,
                          settings["eval_angle_seed"]).to_json() for key, a in keys]
    print(f"== seed {seed}: {len(keys)} runs at once", flush=True)
    spawn = multiprocessing.get_context("spawn")  # TensorFlow does not survive a fork
    with spawn.Pool(len(keys)) as pool:
        runs = dict(zip(keys, pool.map(train_run, configs)))
    rows = []
    for key in DATASETS:
        trained = {a: runs[(key, a)] for a in ARCHITECTURES}
        scores = evaluate(key, trained, options[key], data_dir, settings["eval_angle_seed"])
        for name, score in scores.items():
            rows.append({"dataset": key, "architecture": name, "seed": seed, **score,
                         **trained.get(name, {})})
            print(f"{key} seed {seed} {name}: {rows[-1]}", flush=True)
    return {"seed": seed, "rows": rows, "wall_seconds": time.perf_counter() - start}


def compare(seeds: list[int], settings: dict, options: dict, work_dir: str,
            data_dir: str | None, command: str) -> dict:
    """Runs every seed not saved with `settings` (`run_seed`); the report of every seed saved
    with them."""
    folder = os.path.join(work_dir, "units")
    commands = record_command(work_dir, command)
    for seed in seeds:
        run_once(os.path.join(folder, f"seed{seed}.json"), settings,
                 lambda: run_seed(seed, options, settings, work_dir, data_dir))
    saved = [unit for _, unit in load_all(folder) if unit["settings"] == settings]
    rows = [row for unit in sorted(saved, key=lambda u: u["seed"]) for row in unit["rows"]]
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu_count": os.cpu_count(), "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
            **settings, "seeds": sorted(unit["seed"] for unit in saved),
            "selection_metric": SELECTION_METRIC,
            "wall_seconds": sum(unit["wall_seconds"] for unit in saved),
            "command": " && ".join(commands), "commands": commands, "rows": rows,
            "summary": summarize(rows), "verdicts": verdicts(rows)}


def main(argv: list[str]) -> None:
    del argv
    mnist_dir = FLAGS.mnist_dir or None
    if mnist_dir and not os.path.isdir(mnist_dir):
        raise DataError(mnist_dir, "no such folder (--mnist_dir; empty to download with TFDS)")
    if FLAGS.budget_cpu_seconds <= 0:
        cli.fail(f"--budget_cpu_seconds must be > 0, got {FLAGS.budget_cpu_seconds}")
    seeds = [int(s) for s in FLAGS.seeds]
    settings = {name: getattr(FLAGS, name) for name in SHARED_SETTINGS}
    schedule = plan.Schedule("equal_time", "", {}, FLAGS.images_per_conformation)
    options = {key: plan.data_options(key, schedule, mnist_dir) for key in DATASETS}
    # The data of results/equal_time.md: discrete conformations (Table 1 has since moved to
    # continuous ones).
    options["simulated_5hdb"]["simulation"]["continuous_conformations"] = False
    for key in DATASETS:  # built here, not by the runs at once
        datasets.num_examples(plan.DATA[key].dataset, "train", FLAGS.data_dir, **options[key])
    report = compare(seeds, settings, options, FLAGS.work_dir, FLAGS.data_dir, driver.command())
    write_results("equal_time", report, render(report))


if __name__ == "__main__":
    driver.start(main, define_flags)

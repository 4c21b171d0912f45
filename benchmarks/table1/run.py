"""Table 1's work as units, each trained, scored and saved once (`benchmarks.units`): one per
(data set, method, seed) and one per data set for the baselines and split statistics; the table
of every unit present, and the first seed's figures."""
import json
import os
import shutil
import time

import keras

from benchmarks.table1.estimate import assumed_rate, estimate_seconds, minutes, unit_seconds
from benchmarks.table1.plan import (METHOD_NAMES, METHODS, Schedule, data_options,
                                    schedule_text, steps_per_epoch, train_config, unit_settings)
from benchmarks.table1.report import assemble, machine_info, write_table
from benchmarks.table1.scoring import Scorer, split_sizes
from benchmarks.units import load_all, record_command, run_once, save
from rotinv_tf import evaluation
from rotinv_tf.config import Config
from rotinv_tf.serving.saved_model import load_serving_model
from rotinv_tf.training import train_lib


def units_dir(work_dir: str, schedule: Schedule) -> str:
    return os.path.join(work_dir, schedule.name, "units")


def unit_path(work_dir: str, schedule: Schedule, key: str, method: str, seed: int) -> str:
    return os.path.join(units_dir(work_dir, schedule), key, f"{method}_seed{seed}.json")


def baselines_path(work_dir: str, schedule: Schedule, key: str) -> str:
    return os.path.join(units_dir(work_dir, schedule), key, "baselines.json")


def train_unit(config: Config, scorer: Scorer) -> dict:
    """Trains one run from scratch and scores it; returns the unit's record (without settings)."""
    start = time.perf_counter()
    shutil.rmtree(config.runtime.run_dir, ignore_errors=True)  # fresh: the time is the whole run
    result = train_lib.train(config, verbose=2)
    keras.backend.clear_session()
    rates = result.history.get("train_images_per_second", [])
    steady = rates[1:] or rates  # the first epoch includes tracing
    model = load_serving_model(result.export_path)
    psi = scorer.frame_rotations([model])
    (parts,), _ = scorer.score([model], psi)
    # Per-epoch losses, validation's included: whether a run (spatial-VAE's ELBO) had flattened.
    history = {name: [float(v) for v in values] for name, values in result.history.items()
               if name.removeprefix("val_") in ("loss", "reconstruction_mse", "angle_error_deg")}
    return {"parts": parts, "psi_rad": psi[0], "export_path": result.export_path,
            "history": history,
            "train_seconds": result.seconds,
            "images_per_second": float(sorted(steady)[len(steady) // 2]) if steady else None,
            "wall_seconds": time.perf_counter() - start}


def load_units(work_dir: str, schedule: Schedule) -> tuple[list[dict], dict]:
    """Every saved unit of a schedule (trained and baseline ones) and data set -> its baselines
    file's split statistics and hinge intervals."""
    units, splits = [], {}
    for path, record in load_all(units_dir(work_dir, schedule), os.path.join("*", "*.json")):
        if os.path.basename(path) == "baselines.json":
            units += record["units"]
            splits[record["units"][0]["dataset"]] = {"splits": record["splits"],
                                                     "hinge_deg": record["hinge_deg"]}
        else:
            units.append(record)
    return units, splits


def write_figures(scorer: Scorer, units: list[dict], output_dir: str, prefix: str,
                  context: dict) -> dict:
    """Report folders (metrics, per-image CSV, figures) per test part and frame for the first
    seed with both ours and spatial-VAE saved: ours beside spatial-VAE and the mean image.
    Returns figure name -> folder (relative to output_dir); {} when no such seed is there."""
    by_seed: dict = {}
    for unit in units:
        if unit["dataset"] == scorer.key and unit["method"] in ("ours", "spatial_vae"):
            by_seed.setdefault(unit["seed"], {})[unit["method"]] = unit
    seeds = [s for s, pair in sorted(by_seed.items()) if len(pair) == 2 and all(
        os.path.isdir(u["export_path"]) for u in pair.values())]
    if not seeds:
        return {}
    pair = by_seed[seeds[0]]
    models = [load_serving_model(pair[m]["export_path"]) for m in ("ours", "spatial_vae")]
    models.append(scorer.mean_image_model())
    _, results = scorer.score(models, [pair["ours"]["psi_rad"], pair["spatial_vae"]["psi_rad"],
                                       0.0])
    figures = {}
    for part, frames in results.items():
        for suffix, (ours, svae, mean) in zip(("", "_aligned"), frames):
            folder = f"{prefix}_{scorer.key}_{part}{suffix}"
            evaluation.write_report(os.path.join(output_dir, folder), ours, svae,
                                    {**context, "dataset": scorer.key, "test_part": part,
                                     "seed": seeds[0], "frame": suffix.strip("_") or "raw"},
                                    trivial=mean)
            figures[f"{scorer.key} {part}{suffix.replace('_', ' ')}"] = folder
    return figures


def run_dataset(key: str, schedule: Schedule, seeds: list[int], output_dir: str, prefix: str,
                work_dir: str, data_dir: str | None, mnist_dir: str | None,
                eval_angle_seed: int, methods: list[str] | None = None) -> dict:
    """Runs every unit of one data set not already saved, of `methods` (None: all); writes its
    figures; returns them."""
    options = data_options(key, schedule, mnist_dir)
    scorer = Scorer(key, schedule, options, data_dir, eval_angle_seed)
    sizes = split_sizes(key, schedule, options, data_dir)
    path = baselines_path(work_dir, schedule, key)
    settings = {"options": options, "eval_angle_seed": eval_angle_seed,
                "in_range_images_per_conformation": schedule.in_range_images_per_conformation}

    def baselines() -> dict:
        print(f"== baselines and split statistics of {key}", flush=True)
        return scorer.baselines(schedule)

    run_once(path, settings, baselines)
    for seed in seeds:
        for method in methods or METHODS:
            run = schedule.runs[(key, method)]

            def trained() -> dict:
                print(f"== training {METHOD_NAMES[method]} on {key}, seed {seed} (estimated "
                      f"{unit_seconds(run, assumed_rate(key, method), sizes):.0f} s)", flush=True)
                config = train_config(key, method, schedule, options, work_dir, data_dir,
                                      eval_angle_seed, seed)
                return {"dataset": key, "method": method, "seed": seed,
                        **train_unit(config, scorer),
                        "schedule_text": schedule_text(key, run, method,
                                                       steps_per_epoch(run, sizes["train"]))}

            unit = run_once(unit_path(work_dir, schedule, key, method, seed),
                            unit_settings(schedule, key, method, options, eval_angle_seed), trained)
            print(f"== {key} {method} seed {seed}: " + (
                "saved, skipped" if unit is None else f"{unit['wall_seconds']:.0f} s wall, "
                f"{unit['images_per_second'] or 0:.0f} images/s"), flush=True)
    units, _ = load_units(work_dir, schedule)
    return write_figures(scorer, [u for u in units if u["seed"] in seeds], output_dir, prefix,
                         {"schedule": schedule.name, "eval_angle_seed": eval_angle_seed})


def run_benchmark(schedule: Schedule, seeds: list[int], keys: list[str], output_dir: str,
                  work_dir: str, data_dir: str | None, mnist_dir: str | None,
                  eval_angle_seed: int, command: str, methods: list[str] | None = None) -> dict:
    """Runs the units of `keys` (of `methods`, None: all) not yet saved, then writes the table
    of every unit present."""
    prefix = "table1_quick" if schedule.name == "quick" else "table1"
    sizes = {key: split_sizes(key, schedule, data_options(key, schedule, mnist_dir), data_dir)
             for key in keys}
    print(f"schedule {schedule.name}, seeds {seeds}: estimated "
          f"{minutes(estimate_seconds(schedule, sizes, len(seeds)))} for {', '.join(keys)} on "
          f"the idle 2-core machine; split sizes {sizes}", flush=True)
    figures_path = os.path.join(work_dir, schedule.name, "figures.json")
    figures = json.load(open(figures_path)) if os.path.exists(figures_path) else {}
    commands = record_command(os.path.join(work_dir, schedule.name), command)
    for key in keys:
        figures[key] = run_dataset(key, schedule, seeds, output_dir, prefix, work_dir, data_dir,
                                   mnist_dir, eval_angle_seed, methods)
        save(figures_path, figures)
    units, splits = load_units(work_dir, schedule)
    present = list(dict.fromkeys(u["dataset"] for u in units))
    all_sizes = {key: sizes.get(key) or split_sizes(
        key, schedule, data_options(key, schedule, mnist_dir), data_dir) for key in present}
    record = assemble(units, splits, schedule, seeds, machine_info(),
                      estimate_seconds(schedule, all_sizes, len(seeds)), eval_angle_seed,
                      commands,
                      {name: folder for key in present for name, folder in
                       figures.get(key, {}).items()})
    paths = write_table(output_dir, prefix, record)
    print(f"units' wall time {minutes(record['unit_wall_seconds'])} (estimated "
          f"{minutes(record['estimated_seconds'])}); wrote {', '.join(paths)}", flush=True)
    return record

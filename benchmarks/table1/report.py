"""Table 1 from its units: scores over seeds (mean ± sample std), the targets, and
`table1.md` / `table1.json`."""
import datetime
import json
import math
import os
import platform

import keras
import numpy as np
import tensorflow as tf

from benchmarks.table1.estimate import minutes
from benchmarks.table1.plan import (BASELINES, DATA, MEAN_IMAGE, METHOD_NAMES, METHODS,
                                    NEAREST_CANONICAL, PAPER_NOTE, Schedule)
from benchmarks.table1.scoring import SCORES
from data_pipeline.atomic import write_text


def summarize(values: list) -> dict:
    """{"mean", "std" (sample std; 0 for one value), "seeds": the values, in seed order}."""
    array = np.asarray(values, np.float64)
    return {"mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0, "seeds": list(values)}


def aggregate(units: list[dict]) -> dict:
    """data set -> test part -> method -> {score: summary, ..., "aligned": {score: summary,
    "frame_rotation_deg": summary}, "seed_ids", "train_seconds", "images_per_second"}, over the
    units' seeds (the baselines have one seed-free unit)."""
    grouped: dict = {}
    for unit in sorted(units, key=lambda u: (u["seed"] is not None, u["seed"] or 0)):
        for part, frames in unit["parts"].items():
            grouped.setdefault(unit["dataset"], {}).setdefault(part, {}).setdefault(
                unit["method"], []).append((unit, frames))
    results: dict = {}
    for key, parts in grouped.items():
        for part, methods in parts.items():
            for method, entries in methods.items():
                raw = {s: summarize([f["raw"][s] for _, f in entries]) for s in SCORES}
                aligned = {s: summarize([f["aligned"][s] for _, f in entries])
                           for s in SCORES + ("frame_rotation_deg",)}
                timing = {name: summarize([u[name] for u, _ in entries])
                          if all(u.get(name) is not None for u, _ in entries) else None
                          for name in ("train_seconds", "images_per_second")}
                results.setdefault(key, {}).setdefault(part, {})[method] = {
                    **raw, "aligned": aligned, "seed_ids": [u["seed"] for u, _ in entries],
                    "num_images": entries[0][1]["raw"]["num_images"], **timing}
    return results


def check_targets(results: dict) -> list[tuple[str, bool | None]]:
    """The issue's targets on the means over seeds (None: not measured). "By more than 2 std":
    the gap of the means exceeds twice the std of their difference, √(σ₁² + σ₂²)."""
    checks: list[tuple[str, bool | None]] = []

    def beats(ours: dict | None, other: dict | None, factor: float) -> bool | None:
        if not ours or not other:
            return None
        a, b = ours["avg_mse"], other["avg_mse"]
        return (a["mean"] * factor <= b["mean"]
                and b["mean"] - a["mean"] > 2 * math.hypot(a["std"], b["std"]))

    for key in DATA:
        for part, methods in results.get(key, {}).items():
            ours = methods.get("ours")
            name = f"{key} / {part}"
            checks.append((f"{name}: ours avg MSE ≤ 1/3 of the mean training image's, by > 2 std",
                           beats(ours, methods.get(MEAN_IMAGE), 3.0)))
            svae = methods.get("spatial_vae")
            checks.append((f"{name}: ours avg MSE ≤ 1/2 of spatial-VAE's, by > 2 std",
                           beats(ours, svae, 2.0)))
            checks.append((f"{name}: ours avg MSE ≤ 1/2 of spatial-VAE's, frame aligned, "
                           "by > 2 std", beats(ours and ours["aligned"],
                                               svae and svae["aligned"], 2.0)))
            oracle = methods.get(NEAREST_CANONICAL)
            checks.append((f"{name}: ours avg MSE below the nearest-canonical oracle's",
                           ours["avg_mse"]["mean"] < oracle["avg_mse"]["mean"]
                           if ours and oracle else None))
    mnist = results.get("rotated_mnist", {}).get("test", {}).get("ours")
    checks.append(("rotated_mnist: ours avg MSE ≤ 0.02 (the paper's)",
                   mnist["avg_mse"]["mean"] <= 0.02 if mnist else None))
    held_out = results.get("simulated_5hdb", {}).get("held_out", {}).get("ours")
    checks.append(("simulated_5hdb / held_out: ours angle MSE ≤ 0.17 rad² at SNR 0.1 (the "
                   "paper's)", held_out["angle_mse_rad2"]["mean"] <= 0.17 if held_out else None))
    return checks


# The table.


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"


def _pm(summary: dict | None, digits: int = 4) -> str:
    """mean ± std (the std left out for a single value)."""
    if summary is None:
        return "–"
    if len(summary["seeds"]) < 2:
        return _num(summary["mean"], digits)
    return f"{_num(summary['mean'], digits)} ± {_num(summary['std'], 2)}"


def render_markdown(record: dict) -> str:
    """table1.md from the record that table1.json holds."""
    quick = record["schedule"] == "quick"
    title = ("# Table 1 — SMOKE RUN (--quick): plumbing check only, the numbers mean nothing"
             if quick else "# Table 1 — ours vs spatial-VAE, mean ± std over seeds")
    meta = record["machine"]
    lines = [title, "",
             f"Schedule **{record['schedule']}**: {record['schedule_description']}. "
             f"{meta['date']}, {meta['cpu_count']} CPUs ({meta['platform']}), TensorFlow "
             f"{meta['tensorflow']}, Keras {meta['keras']}. Seeds {record['seeds']}. Units' wall "
             f"time summed: {minutes(record['unit_wall_seconds'])} (estimated "
             f"{minutes(record['estimated_seconds'])} for the data sets present). Commands: "
             + "; ".join(f"`{c}`" for c in record["commands"]) + ".", "",
             "Units present: " + "; ".join(f"{key} {n['present']} of {n['expected']}"
                                           for key, n in record["completeness"].items()) + ".",
             "",
             "MSE between the canonical ground truth and the decoder output, images normalised so "
             "that clean ones lie in [0, 1], on fixed seeded test inputs (angle seed "
             f"{record['eval_angle_seed']}), the same for every method. *Aligned*: each model's "
             "canonical output turned by −ψ and its angles by +ψ, ψ the circular mean of (true − "
             "predicted angle) over the validation split (spatial-VAE's frame is learned without "
             "supervision). Cells: mean ± std over the seeds (baselines: one seed-free value).",
             ""]
    header = ("| data set | test part | method | seeds | avg MSE | worst MSE | angle MAE (°) | "
              "angle RMSE (°) | angle MSE (rad²) | aligned avg | aligned worst | aligned MAE (°) "
              "| ψ (°) | paper avg | paper worst | train time (s) | images/s | schedule |")
    lines += [header, "|" + " --- |" * (header.count("|") - 1)]
    for key, parts in record["results"].items():
        for part, methods in parts.items():
            for method in list(METHODS) + list(BASELINES):
                row = methods.get(method)
                if row is None:
                    continue
                aligned, paper = row["aligned"], DATA[key].paper.get(method, {})
                lines.append("| " + " | ".join([
                    key, part, METHOD_NAMES[method], str(len(row["avg_mse"]["seeds"])),
                    _pm(row["avg_mse"]), _pm(row["worst_mse"]), _pm(row["angle_mae_deg"], 3),
                    _pm(row["angle_rmse_deg"], 3), _pm(row["angle_mse_rad2"], 3),
                    _pm(aligned["avg_mse"]), _pm(aligned["worst_mse"]),
                    _pm(aligned["angle_mae_deg"], 3), _pm(aligned["frame_rotation_deg"], 3),
                    _num(paper.get("avg_mse")), _num(paper.get("worst_mse")),
                    _pm(row["train_seconds"], 3), _pm(row["images_per_second"], 3),
                    record["schedules"].get(f"{key}/{method}", "–")]) + " |")
    lines += ["", PAPER_NOTE + " Paper 5HDB angle error (ours): mean squared error 0.17 rad².", "",
              "## Splits", "",
              "| data set | split | images | distinct canonical images | hinge (°) |",
              "| --- | --- | --- | --- | --- |"]
    for key, info in record["splits"].items():
        for split, stats in info["splits"].items():
            hinge = info["hinge_deg"].get(split)
            lines.append(f"| {key} | {split} | {stats['images']} | {stats['distinct_canonical']} "
                         f"| {'–' if hinge is None else f'{hinge[0]} to {hinge[1]}'} |")
    lines += ["", "## Targets", ""]
    for text, met in record["targets"]:
        verdict = "not measured" if met is None else ("met" if met else "**NOT met**")
        lines.append(f"- {text}: {verdict}")
    lines += ["", "## Figures (first seed: ours beside spatial-VAE and the mean image)", ""]
    for name, folder in record["figures"].items():
        links = ", ".join(f"[{image.removesuffix('.png').replace('_', ' ')}]({folder}/{image})"
                          for image in ("examples.png", "worst_case.png", "angles.png",
                                        "mse_histogram.png"))
        lines.append(f"- {name}: {links}")
    return "\n".join(lines) + "\n"


def completeness(units: list[dict], seeds: list[int]) -> dict:
    """data set -> {"present", "expected"} trained units of `seeds`."""
    out = {}
    for key in dict.fromkeys(u["dataset"] for u in units):
        present = {(u["method"], u["seed"]) for u in units
                   if u["dataset"] == key and u["method"] in METHODS and u["seed"] in seeds}
        out[key] = {"present": len(present), "expected": len(METHODS) * len(seeds)}
    return out


def assemble(units: list[dict], splits: dict, schedule: Schedule, seeds: list[int],
             machine: dict, estimated_seconds: float, eval_angle_seed: int, commands: list[str],
             figures: dict) -> dict:
    """The record (what table1.json holds) of every unit present: per data set, test part and
    method the scores over seeds, the split statistics and the targets."""
    units = [u for u in units if u["seed"] is None or u["seed"] in seeds]
    results = aggregate(units)
    schedules = {}
    for unit in units:
        if unit["method"] in METHODS:
            schedules[f"{unit['dataset']}/{unit['method']}"] = unit["schedule_text"]
    return {"schedule": schedule.name, "schedule_description": schedule.description,
            "seeds": seeds, "machine": machine,
            "unit_wall_seconds": sum(u.get("wall_seconds") or 0.0 for u in units),
            "estimated_seconds": estimated_seconds, "eval_angle_seed": eval_angle_seed,
            "commands": commands, "completeness": completeness(units, seeds),
            "results": results, "splits": splits, "schedules": schedules,
            "targets": check_targets(results), "figures": figures, "paper_note": PAPER_NOTE}


def write_table(output_dir: str, prefix: str, record: dict) -> list[str]:
    """Writes <prefix>.md and <prefix>.json into `output_dir`, each atomically."""
    paths = [os.path.join(output_dir, f"{prefix}.md"), os.path.join(output_dir, f"{prefix}.json")]
    write_text(paths[0], render_markdown(record))
    write_text(paths[1], json.dumps(record, indent=2, allow_nan=True) + "\n")
    return paths


def machine_info() -> dict:
    """Where the benchmark ran."""
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(terse=True),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}

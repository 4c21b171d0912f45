"""The learned canonical frame on stacks whose angles nobody knows:
`python -m benchmarks.learned_frame`.

For each simulated stack (the project's simulator, 20 hinge conformations, uniform psi, no shifts,
no CTF; one per SNR and seed), trains `configs/stack.cfg` on the particles alone (no STAR file: the
frame is learned), canonicalizes the stack and a second stack of new particles with the SavedModel,
and scores the written `rlnAnglePsi` against the true psi after one global rotation (the learned
frame is arbitrary). As a reference, the same config trains with the STAR file's true angles (the
paper's supervised objective) and is scored alike. Angles are scored refined locally
(`canonicalize`'s default: against the learned frame's class template, the supervised model's
canonical image; results written before issue 15's template reference refined both against the
canonical image) and with `--refine=false`.
Canonical images are scored by their MSE against the clean truth turned into the model's frame,
on the scale where clean images lie in [0, 1], over the inscribed disc (what every rotation keeps)
and over the whole box, beside two trivial rows: the mean clean image and a zero image.

Writes `benchmarks/results/learned_frame.{md,json}`; `--quick` is a smoke run whose numbers mean
nothing (written with a `_quick` suffix); `--rescore=learned_frame.json` scores the SavedModels of
an earlier run again without training.
"""
import json
import math
import os
import subprocess
import sys
import time

import mrcfile
import numpy as np
from absl import flags

from benchmarks import driver
from benchmarks.report_files import mean_std, write_results
from data_pipeline.formats import star
from data_pipeline.rotation import inscribed_disc, rotate
from rotinv_tf import config as configs
from rotinv_tf.config import Config
from rotinv_tf.evaluation import (estimate_frame_rotation, frame_aligned_errors_deg,
                                  psi_error_summary)
from rotinv_tf.serving.inference import canonicalize_particles
from rotinv_tf.training import train_lib
from rotinv_tf.training.resolve import resolve

# What `python -m data_pipeline.simulate` writes (run as a program: it defines flags of its own).
PARTICLES, CANONICAL, STAR = "particles.mrcs", "canonical.mrcs", "particles.star"
FLAGS = flags.FLAGS


def define_flags() -> None:
    """The driver's flags (`configs/stack.cfg` is read before the command line's)."""
    configs.define_flags()
    flags.DEFINE_string("work_dir", "/tmp/rotinv_learned_frame", "Stacks, runs and SavedModels.")
    flags.DEFINE_list("snrs", ["1", "0.1"], "SNRs of the stacks.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: one stack and one training run each.")
    flags.DEFINE_integer("num_particles", 3000, "Particles per stack (and per new-particle "
                         "stack).")
    flags.DEFINE_integer("image_size", 40, "Box size of the stacks.")
    flags.DEFINE_boolean("supervised", True, "Also train with the true angles (the reference).")
    flags.DEFINE_boolean("quick", False, "Smoke run: tiny stacks, one epoch; numbers mean "
                         "nothing.")
    flags.DEFINE_string("rescore", None, "An earlier learned_frame.json: score its SavedModels "
                        "again (in --work_dir) instead of training.")


def _stack(folder: str, snr: float, seed: int, num: int) -> str:
    """Simulates a stack once (particles.mrcs, canonical.mrcs, particles.star) and returns it."""
    if not os.path.exists(os.path.join(folder, STAR)):
        subprocess.run([sys.executable, "-m", "data_pipeline.simulate", f"--output_dir={folder}",
                        f"--num_images={num}", f"--image_size={FLAGS.image_size}",
                        f"--snr={snr}", f"--seed={seed}"], check=True)
    return folder


def _true_psi(folder: str) -> np.ndarray:
    table = star.particles_block(star.read_star(os.path.join(folder, STAR)))
    return star.psi_degrees_to_angle(np.array(table.column(star.ANGLE_PSI), np.float64))


def _read(path: str) -> np.ndarray:
    with mrcfile.open(path, permissive=True) as f:
        return np.asarray(f.data, np.float32)


def score(folder: str, saved_model: str, out: str, refine: bool) -> dict:
    """Canonicalizes `folder`'s particles with `saved_model` (angles refined or not); angle and
    image scores."""
    os.makedirs(out, exist_ok=True)
    summary = canonicalize_particles(saved_model, os.path.join(folder, STAR),  # with its optics
                                     os.path.join(out, "canonical.mrcs"),
                                     os.path.join(out, "canonical.star"), refine=refine)
    table = star.particles_block(star.read_star(summary.star))
    predicted = star.psi_degrees_to_angle(np.array(table.column(star.ANGLE_PSI), np.float64))
    true = _true_psi(folder)
    offset = estimate_frame_rotation(true, predicted)
    error = frame_aligned_errors_deg(true, predicted)
    truth = _read(os.path.join(folder, CANONICAL))
    lo, scale = truth.min(), truth.max() - truth.min()
    # The model's canonical image is the truth turned by the frame rotation (evaluation module).
    in_frame = rotate(((truth - lo) / scale)[..., None], np.full(len(truth), offset, np.float32))
    output = (_read(summary.output)[..., None] - lo) / scale
    squared = np.square(output - np.asarray(in_frame))[..., 0]
    mse = squared.reshape(len(truth), -1).mean(axis=1)
    disc_mse = squared[:, inscribed_disc(truth.shape[1])].mean(axis=1)
    return {**psi_error_summary(error), "psi_mse_rad2": float(np.square(np.radians(error)).mean()),
            "frame_rotation_deg": math.degrees(offset), "avg_mse": float(mse.mean()),
            "worst_mse": float(mse.max()), "disc_avg_mse": float(disc_mse.mean()),
            "disc_worst_mse": float(disc_mse.max()), "particles_per_second": summary.particles_per_second}


def trivial_rows(folder: str) -> dict:
    """MSE of the mean clean image and of a zero image against each particle's clean truth."""
    truth = _read(os.path.join(folder, CANONICAL))
    truth = (truth - truth.min()) / (truth.max() - truth.min())
    rows = {}
    for name, guess in (("mean image", truth.mean(axis=0)), ("zero image", np.zeros_like(truth[0]))):
        squared = np.square(truth - guess)
        mse = squared.reshape(len(truth), -1).mean(axis=1)
        disc_mse = squared[:, inscribed_disc(truth.shape[1])].mean(axis=1)
        rows[name] = {"avg_mse": float(mse.mean()), "worst_mse": float(mse.max()),
                      "disc_avg_mse": float(disc_mse.mean()),
                      "disc_worst_mse": float(disc_mse.max())}
    return rows


def scores(saved_model: str, name: str, folder: str, new: str) -> dict:
    """A SavedModel's scores on its stack and on new particles, with and without refinement."""
    row = {}
    for refine in (True, False):
        suffix = "" if refine else "_unrefined"
        for which, stack in (("stack", folder), ("new_particles", new)):
            out = os.path.join(FLAGS.work_dir, "out", f"{name}_{which}{suffix}")
            row[which + suffix] = score(stack, saved_model, out, refine)
    return row


def train_and_score(base: Config, name: str, folder: str, new: str,
                    star_file: str | None) -> dict:
    config = base.replace(
        name=name, model_dir=os.path.join(FLAGS.work_dir, "runs", name),
        export_dir=os.path.join(FLAGS.work_dir, "saved_models"), dataset="particle_stack",
        stack=os.path.join(folder, PARTICLES), star=star_file,
        data_dir=os.path.join(FLAGS.work_dir, "tfds"))
    result = train_lib.train(config)
    return {"frame": resolve(config).model.autoencoder.frame, "train_seconds": result.seconds,
            "saved_model": result.export_path, **scores(result.export_path, name, folder, new)}


def rescore(path: str) -> dict:
    """Scores again every SavedModel of an earlier report (its first export), keeping the
    training times it recorded: for a report written before a score was added."""
    with open(path) as f:
        report = json.load(f)
    for run in report["runs"]:
        tag = f"snr{run['snr']:g}_seed{run['seed']}"
        folder = os.path.join(FLAGS.work_dir, "stacks", tag)
        for method, prefix in (("learned", "lf"), ("supervised", "sup")):
            if method in run:
                name = f"{prefix}_{tag}"
                saved_model = os.path.join(FLAGS.work_dir, "saved_models", name, "1")
                run[method].update(saved_model=saved_model,
                                   **scores(saved_model, name, folder, folder + "_new"))
    return report


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.rescore:
        report = rescore(FLAGS.rescore)
        write_results("learned_frame", report, markdown(report))
        return
    base = configs.from_flags(FLAGS)
    num = FLAGS.num_particles
    if FLAGS.quick:
        base = base.replace(epochs=1)
        num = 200
    runs = []
    for snr in map(float, FLAGS.snrs):
        for seed in map(int, FLAGS.seeds):
            tag = f"snr{snr:g}_seed{seed}" + ("_quick" if FLAGS.quick else "")
            folder = _stack(os.path.join(FLAGS.work_dir, "stacks", tag), snr, seed, num)
            new = _stack(os.path.join(FLAGS.work_dir, "stacks", tag + "_new"), snr,
                         seed + 1000, num)
            run = {"snr": snr, "seed": seed, "trivial": trivial_rows(folder)}
            start = time.perf_counter()
            run["learned"] = train_and_score(base.replace(seed=seed, frame="auto"),
                                             f"lf_{tag}", folder, new, None)
            run["learned"]["wall_seconds"] = time.perf_counter() - start
            if FLAGS.supervised:
                run["supervised"] = train_and_score(
                    base.replace(seed=seed, frame="auto"), f"sup_{tag}", folder,
                    new, os.path.join(folder, STAR))
            runs.append(run)
            print(json.dumps(run, indent=1), flush=True)
    report = {"num_particles": num, "image_size": FLAGS.image_size,
              "epochs": base.schedule.epochs, "batch_size": base.schedule.batch_size, "runs": runs}
    write_results("learned_frame" + ("_quick" if FLAGS.quick else ""), report, markdown(report))


def markdown(report: dict) -> str:
    """The results table: mean ± std over seeds, per SNR and method."""
    lines = [f"# Learned frame: {report['num_particles']} particles per stack, "
             f"{report['image_size']}x{report['image_size']}, {report['epochs']} epochs "
             f"(batch {report['batch_size']}), mean ± std over seeds", "",
             "| SNR | method | particles | psi MAE (°) | median (°) | > 15° (%) | psi MSE (rad²) "
             "| avg MSE (disc) | worst MSE (disc) | avg MSE (box) | train (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for snr in sorted({r["snr"] for r in report["runs"]}, reverse=True):
        runs = [r for r in report["runs"] if r["snr"] == snr]
        for method in ("learned", "supervised"):
            if method not in runs[0]:
                continue
            for which in ("stack", "new_particles", "stack_unrefined", "new_particles_unrefined"):
                if which not in runs[0][method]:
                    continue
                rows = [r[method][which] for r in runs]
                cells = [mean_std([row[k] for row in rows], ".2f") for k in
                         ("psi_mae_deg", "psi_median_deg", "psi_over_15_percent")]
                cells.append(mean_std([row["psi_mse_rad2"] for row in rows], ".4f"))
                cells += [mean_std([row[k] for row in rows], ".5f") for k in
                          ("disc_avg_mse", "disc_worst_mse", "avg_mse")]
                seconds = mean_std([r[method]["train_seconds"] for r in runs], ".0f")
                label = ("trained on" if which.startswith("stack") else "new") + (
                    ", unrefined" if which.endswith("unrefined") else ", refined")
                lines.append(f"| {snr:g} | {method} frame | {label} | " + " | ".join(cells)
                             + f" | {seconds} |")
        for name in runs[0]["trivial"]:
            rows = [r["trivial"][name] for r in runs]
            lines.append(f"| {snr:g} | {name} | trained on | - | - | - | - | " + " | ".join(
                mean_std([x[k] for x in rows], ".5f")
                for k in ("disc_avg_mse", "disc_worst_mse", "avg_mse")) + " | - |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    driver.start(main, define_flags, driver.STACK_CONFIG)

"""CTF correction on stacks without angles: `python -m benchmarks.ctf`.

For each seed, simulates a CTF stack (the project's simulator: 20 hinge conformations, uniform psi,
defocus uniform in [1, 3] µm, 300 kV, Cs 2.7 mm, amplitude contrast 0.1) and the same particles
without CTF, and trains `configs/stack.cfg` on the particles with a STAR file that has the CTF
values but no angles (the frame is learned), once per `--ctf_correction` (`model`, `phase_flip`,
`none`) and once with `model` but no defocus penalty (`--defocus_decorrelation_weight=0`), plus
once on the CTF-free stack (the reference the conformation target is measured against). Each
SavedModel then encodes every particle (with its CTF) and is scored on:
- psi error (°) of its angle after one global rotation (the learned frame is arbitrary);
- canonical-image MSE against the CTF-free clean truth turned into the model's frame, on the scale
  where clean images lie in [0, 1], over the inscribed disc;
- defocus R²: how much of the latent is defocus, the R² of a linear probe predicting each
  particle's defocus from its latent, 5-fold cross-validated (0: none of it); beside it the same
  with a nonlinear read-out (k nearest neighbours in the standardised latent);
- conformation R²: the same probe predicting the hinge conformation (in [0, 1]) from the latent.
A `mean image` row scores the mean clean image as every particle's canonical image, and RELION 2D
(K = 1, `--ctf`, given the CTF values and no angles; skipped with a line when RELION is not
installed) is scored on psi error.

Writes `benchmarks/results/ctf.{md,json}` (after each seed, so a cut-short run keeps its seeds);
`--quick` is a smoke run whose numbers mean nothing (`_quick` suffix).
"""
import json
import os
import subprocess
import sys
import time

import mrcfile
import numpy as np
from absl import flags

from benchmarks import driver, relion_2d
from benchmarks.report_files import mean_std, write_results
from data_pipeline.datasets.particle_stack import ParticleStack
from data_pipeline.formats import star
from data_pipeline.rotation import inscribed_disc, rotate
from rotinv_tf import config as configs
from rotinv_tf.config import Config
from rotinv_tf.evaluation import (estimate_frame_rotation, frame_aligned_errors_deg, knn_r2,
                                  probe_r2, psi_error_summary)
from rotinv_tf.serving.saved_model import load_serving_model
from rotinv_tf.training import train_lib
from rotinv_tf.training.resolve import resolve

PARTICLES, CANONICAL, STAR = "particles.mrcs", "canonical.mrcs", "particles.star"
NO_ANGLES = "noangles.star"
SETTINGS = ("model", "phase_flip", "none")
NO_PENALTY = "model without defocus penalty"
NO_CTF = "no CTF in the data"
RELION = "RELION 2D --ctf"
ROWS = (*SETTINGS, NO_PENALTY, NO_CTF, RELION)
CTF_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")
NUM_CONFORMATIONS = 20
FLAGS = flags.FLAGS


def define_flags() -> None:
    """The driver's flags (`configs/stack.cfg` is read before the command line's)."""
    configs.define_flags()
    flags.DEFINE_string("work_dir", "/tmp/rotinv_ctf", "Stacks, runs and SavedModels.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: one stack and one run per setting each.")
    flags.DEFINE_integer("num_particles", 2000, "Particles per stack.")
    flags.DEFINE_integer("image_size", 32, "Box size of the stacks.")
    flags.DEFINE_float("stack_snr", 0.5, "SNR of the stacks.")
    flags.DEFINE_integer("relion_iter", 25, "RELION 2D iterations.")
    flags.DEFINE_integer("relion_threads", 2, "RELION --j.")
    flags.DEFINE_list("skip", [], f"Rows to leave out, some of {list(ROWS)}.")
    flags.DEFINE_boolean("quick", False, "Smoke run: tiny stacks, one epoch; numbers mean "
                         "nothing.")


def _read(path: str) -> np.ndarray:
    with mrcfile.open(path, permissive=True) as f:
        return np.asarray(f.data, np.float32)


def simulate_stack(folder: str, seed: int, num: int, ctf: bool) -> str:
    """Simulates a stack once and writes its STAR file without rlnAnglePsi beside it."""
    if not os.path.exists(os.path.join(folder, NO_ANGLES)):
        subprocess.run([sys.executable, "-m", "data_pipeline.simulate", f"--output_dir={folder}",
                        f"--num_images={num}", f"--image_size={FLAGS.image_size}",
                        f"--snr={FLAGS.stack_snr}", f"--seed={seed}",
                        f"--num_conformations={NUM_CONFORMATIONS}", "--defocus_min=1",
                        "--defocus_max=3", "--ctf" if ctf else "--noctf"], check=True)
        blocks = star.read_star(os.path.join(folder, STAR))
        table = blocks["particles"]
        keep = [i for i, c in enumerate(table.columns) if c != "rlnAnglePsi"]
        blocks["particles"] = star.StarBlock([table.columns[i] for i in keep],
                                             [[row[i] for i in keep] for row in table.rows])
        star.write_star(os.path.join(folder, NO_ANGLES), blocks)
    return folder


def _table(folder: str) -> star.StarBlock:
    return star.particles_block(star.read_star(os.path.join(folder, STAR)))


def score(saved_model: str, folder: str, truth_folder: str, defocus: np.ndarray) -> dict:
    """A SavedModel's scores on every particle of `folder` (module docstring); the clean truth
    comes from `truth_folder`'s canonical images and `defocus` (Å) from the CTF stack (the same
    particles)."""
    model = load_serving_model(saved_model)
    table = _table(folder)
    particles = _read(os.path.join(folder, PARTICLES))
    ctf_values = ParticleStack(os.path.join(folder, PARTICLES), os.path.join(folder, STAR)).ctf
    outputs = {"angle": [], "latent": [], "canonical_image": []}
    for start in range(0, len(particles), 256):
        batch = slice(start, start + 256)
        out = model.predict(particles[batch], None if ctf_values is None else
                            {k: v[batch] for k, v in ctf_values.items()})
        for key in outputs:
            outputs[key].append(out[key])
    outputs = {k: np.concatenate(v) for k, v in outputs.items()}
    true = true_angles(folder)
    offset = estimate_frame_rotation(true, outputs["angle"])
    error = frame_aligned_errors_deg(true, outputs["angle"])
    truth = _read(os.path.join(truth_folder, CANONICAL))
    lo, scale = truth.min(), truth.max() - truth.min()
    in_frame = np.asarray(rotate(((truth - lo) / scale)[..., None],
                                 np.full(len(truth), offset, np.float32)))[..., 0]
    output = (outputs["canonical_image"][..., 0] - lo) / scale
    disc = inscribed_disc(truth.shape[1])
    mse = np.square(output - in_frame)[:, disc].mean(axis=1)
    conformation = (np.array(table.column("rlnClassNumber"), np.float64) - 1) / (
        NUM_CONFORMATIONS - 1)
    return {**psi_error_summary(error), "disc_avg_mse": float(mse.mean()),
            "defocus_r2": probe_r2(outputs["latent"], defocus),
            "defocus_r2_knn": knn_r2(outputs["latent"], defocus),
            "conformation_r2": probe_r2(outputs["latent"], conformation)}


def true_angles(folder: str) -> np.ndarray:
    return star.psi_degrees_to_angle(np.array(_table(folder).column("rlnAnglePsi"), np.float64))


def relion_row(folder: str, pixel_size: float) -> dict:
    """RELION 2D, K = 1, `--ctf` on `folder`'s particles with their CTF values (no angles)."""
    table = _table(folder)
    angles, _, seconds, _, _ = relion_2d.run_relion(
        folder, os.path.join(folder, "relion_ctf"), FLAGS.image_size, pixel_size,
        FLAGS.relion_iter, 1, FLAGS.relion_threads,
        ctf={column: table.column(column) for column in CTF_COLUMNS})
    return {**psi_error_summary(frame_aligned_errors_deg(true_angles(folder), angles)),
            "train_seconds": seconds}


def mean_image_row(truth_folder: str) -> dict:
    truth = _read(os.path.join(truth_folder, CANONICAL))
    truth = (truth - truth.min()) / (truth.max() - truth.min())
    squared = np.square(truth - truth.mean(axis=0))[:, inscribed_disc(truth.shape[1])]
    return {"disc_avg_mse": float(squared.mean())}


def train_and_score(base: Config, name: str, folder: str, correction: str,
                    truth_folder: str, defocus: np.ndarray, **changes) -> dict:
    config = base.replace(
        **changes, name=name, model_dir=os.path.join(FLAGS.work_dir, "runs", name),
        export_dir=os.path.join(FLAGS.work_dir, "saved_models"), ctf_correction=correction,
        dataset="particle_stack", stack=os.path.join(folder, PARTICLES),
        # auto: the CTF-free stack, whose STAR file adds nothing
        star=os.path.join(folder, NO_ANGLES) if correction != "auto" else None,
        data_dir=os.path.join(FLAGS.work_dir, "tfds"))
    result = train_lib.train(config)
    return {"frame": resolve(config).model.autoencoder.frame, "train_seconds": result.seconds,
            "saved_model": result.export_path,
            **score(result.export_path, folder, truth_folder, defocus)}


def main(argv: list[str]) -> None:
    del argv
    driver.check_choices("skip", FLAGS.skip, ROWS, empty=True)
    base = configs.from_flags(FLAGS)
    num = FLAGS.num_particles
    if FLAGS.quick:
        base = base.replace(epochs=1)
        num, FLAGS.relion_iter = 200, 2
    suffix = "_quick" if FLAGS.quick else ""
    runs = []
    for seed in map(int, FLAGS.seeds):
        tag = f"seed{seed}{suffix}"
        with_ctf = simulate_stack(os.path.join(FLAGS.work_dir, "stacks", tag), seed, num, True)
        without = simulate_stack(os.path.join(FLAGS.work_dir, "stacks", tag + "_noctf"), seed,
                                 num, False)
        defocus = np.array(_table(with_ctf).column("rlnDefocusU"), np.float64)
        run = {"seed": seed, "mean image": mean_image_row(without)}
        seeded = base.replace(seed=seed, frame="auto")
        trainings = {setting: (f"{setting}_{tag}", with_ctf, setting, {}) for setting in SETTINGS}
        trainings[NO_PENALTY] = (f"model_nopenalty_{tag}", with_ctf, "model",
                                 {"defocus_decorrelation_weight": 0.0})
        trainings[NO_CTF] = (f"noctf_{tag}", without, "auto", {})
        for row, (name, folder, correction, changes) in trainings.items():
            if row in FLAGS.skip:
                continue
            start = time.perf_counter()
            run[row] = train_and_score(seeded, name, folder, correction, without, defocus,
                                       **changes)
            run[row]["wall_seconds"] = time.perf_counter() - start
            print(json.dumps({row: run[row]}), flush=True)
        if RELION not in FLAGS.skip:
            if relion_2d.installed():
                run[RELION] = relion_row(with_ctf, float(star.read_star(os.path.join(
                    with_ctf, STAR))["optics"].column("rlnImagePixelSize")[0]))
                print(json.dumps({RELION: run[RELION]}), flush=True)
            else:
                print("RELION 2D --ctf skipped: relion_refine is not installed", flush=True)
        runs.append(run)
        report = {"num_particles": num, "image_size": FLAGS.image_size, "snr": FLAGS.stack_snr,
                  "epochs": base.schedule.epochs, "batch_size": base.schedule.batch_size,
                  "defocus_decorrelation_weight":
                      base.model.autoencoder.defocus_decorrelation_weight,
                  "relion_iter": FLAGS.relion_iter, "relion_threads": FLAGS.relion_threads,
                  "runs": runs}
        write_results(f"ctf{suffix}", report, markdown(report))


def markdown(report: dict) -> str:
    """The results table: mean ± std over seeds, per setting."""
    runs = report["runs"]
    lines = [f"# CTF correction: {report['num_particles']} particles per stack, "
             f"{report['image_size']}x{report['image_size']}, SNR {report['snr']:g}, defocus "
             f"1-3 µm, no angles (learned frame), {report['epochs']} epochs (batch "
             f"{report['batch_size']}), defocus penalty weight "
             f"{report['defocus_decorrelation_weight']:g}, RELION {report['relion_iter']} "
             f"iterations (--j {report['relion_threads']}), {len(runs)} seed(s), mean ± std over "
             f"seeds; times on 2 CPU cores shared with other jobs", "",
             "| setting | psi MAE (°) | psi median (°) | canonical MSE vs CTF-free truth (disc) "
             "| defocus R² (latent, linear) | defocus R² (latent, 10-NN) "
             "| conformation R² (latent) | train (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    columns = (("psi_mae_deg", ".2f"), ("psi_median_deg", ".2f"), ("disc_avg_mse", ".5f"),
               ("defocus_r2", ".3f"), ("defocus_r2_knn", ".3f"), ("conformation_r2", ".3f"),
               ("train_seconds", ".0f"))
    for setting in ROWS:
        rows = [r[setting] for r in runs if setting in r]
        if not rows:
            continue
        label = f"--ctf_correction={setting}" if setting in SETTINGS else setting
        cells = [mean_std([row[k] for row in rows], fmt) if k in rows[0] else "-"
                 for k, fmt in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| mean image | - | - | " + mean_std(
        [r["mean image"]["disc_avg_mse"] for r in runs], ".5f") + " | - | - | - | - |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    driver.start(main, define_flags, driver.STACK_CONFIG)

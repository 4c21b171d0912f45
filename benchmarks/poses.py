"""rotinv_tf beside what cryo-EM users run (issue 15): `python -m benchmarks.poses`.

Stacks from the project's simulator (RELION's hand; uniform psi, no shifts, no CTF):
homogeneous (one view, one conformation) and heterogeneous (hinge positions drawn from a continuum,
5 bins, x 3 views 40° apart), each at SNR 1 and 0.1. On each, with no angles given:
- RELION 2D classification (`relion_refine`, K = number of views; skipped with a one-line
  message when RELION is not installed),
- classical reference-free alignment (`rotinv_tf.pose.classical`), its aligned images' PCA(20)
  as features, and the rotation-invariant polar Fourier magnitudes, PCA(20),
- spatial-VAE (content latents as features),
- ours: the autoencoder in the learned frame (`--frame=learned`, one template per view), rows
  named by what produced them: the EM frame's angle, which the SavedModel serves
  (`canonicalize --refine=false`), that angle refined against the frame's template of the
  particle's class (`canonicalize`'s default), and the network's own angle (the encoder's θ̂ of
  the particle, served as `network_angle`).
Scores: psi error after one rotation per view (`rotinv_tf.evaluation.frame_aligned_errors_deg`);
for heterogeneous stacks (`pose_metrics`), k-means ARI of each method's features (PCA to at most
20 dimensions) against the 15 (conformation bin, view) pairs and the cross-validated |Spearman ρ|
of the best linear direction within a view vs the hinge.
Ours' features are the SavedModel's served `features` (`rotinv_tf.pose.frame_features`), its
encoder latent a row of its own; 'truth: view + hinge' scores the true labels, the ceiling of
k-means on a perfect one-dimensional latent.
New particles of the same specimen (a second stack, another seed) are posed without retraining:
ours by the SavedModel, RELION by `--iter 1 --ref` against its class averages, classical against
its templates; particles/s of each, on the same cores.

Writes `benchmarks/results/poses.{md,json}` after every stack (a cut-short run keeps what it did).
`--quick` is a smoke run whose numbers mean nothing (`poses_quick.*`); `--merge` joins the results
of runs made in separate processes (stacks or methods side by side on a loaded machine).
"""
import json
import math
import os
import shutil
import time

import mrcfile
import numpy as np
from absl import flags

from benchmarks import driver, pose_metrics as pm, relion_2d
from benchmarks.report_files import write_results
from data_pipeline.formats import star
from data_pipeline.rotation import rotate
from data_pipeline.simulated_stack import PARTICLES, STAR, write_stack
from data_pipeline.simulator import SimulationConfig
from rotinv_tf import config as configs
from rotinv_tf.config import Config
from rotinv_tf.evaluation import frame_aligned_errors_deg, psi_error_summary
from rotinv_tf.pose.classical import (align_reference_free, align_to_templates, coaligned,
                                      invariant_features, pca)
from rotinv_tf.serving.inference import canonicalize_particles
from rotinv_tf.serving.saved_model import load_serving_model
from rotinv_tf.training import train_lib

STACKS = {"homogeneous_snr1": (False, 1.0), "homogeneous_snr0.1": (False, 0.1),
          "heterogeneous_snr1": (True, 1.0), "heterogeneous_snr0.1": (True, 0.1)}
CONFORMATION_BINS, VIEWS, FEATURE_DIMS = 5, 3, 20
FLAGS = flags.FLAGS


def define_flags() -> None:
    """The driver's flags (`configs/stack.cfg` is read before the command line's)."""
    configs.define_flags()
    flags.DEFINE_string("work_dir", "/tmp/rotinv_poses", "Stacks, RELION runs and SavedModels.")
    flags.DEFINE_list("stacks", list(STACKS), f"Stacks to run, of {', '.join(STACKS)}.")
    flags.DEFINE_integer("num_particles", 3000, "Particles per stack (and per new-particle "
                         "stack).")
    flags.DEFINE_integer("image_size", 40, "Box size of the stacks.")
    flags.DEFINE_integer("relion_iter", 25, "RELION 2D iterations.")
    flags.DEFINE_integer("relion_threads", 2, "RELION --j.")
    flags.DEFINE_integer("svae_epochs", None, "spatial-VAE epochs (default: --epochs).")
    flags.DEFINE_list("skip", [], "Methods to leave out: relion, svae, ours.")
    flags.DEFINE_string("results", "poses", "Results name: benchmarks/results/<results>.{md,json}.")
    flags.DEFINE_list("merge", [], "Only merge these earlier results (.json, rows of later files "
                      "replacing the same stack and method) into --results, running nothing.")
    flags.DEFINE_boolean("quick", False, "Smoke run: 300 particles, 1 epoch, 2 RELION "
                         "iterations.")


def stack_config(heterogeneous: bool, snr: float, seed: int, num: int) -> SimulationConfig:
    bins = CONFORMATION_BINS if heterogeneous else 1
    return SimulationConfig(image_size=FLAGS.image_size, snr=snr, seed=seed, test_conformations=0,
                            num_conformations=bins, images_per_conformation=math.ceil(num / bins),
                            continuous_conformations=heterogeneous,
                            num_views=VIEWS if heterogeneous else 1)


def read_images(path: str) -> np.ndarray:
    with mrcfile.open(path, permissive=True) as f:
        return np.asarray(f.data, np.float32)


# Scoring


def pose_scores(truth: dict, angles: np.ndarray) -> dict:
    return psi_error_summary(frame_aligned_errors_deg(truth["angle"], angles, truth["view"]))


def feature_scores(truth: dict, features: np.ndarray) -> dict:
    """ARI of k-means on the features (PCA to <= 20 dims) and the linear Spearman ρ."""
    features = pca(features, min(FEATURE_DIMS, features.shape[1]))
    labels = truth["conformation"] * VIEWS + truth["view"]
    clusters = pm.kmeans(features, CONFORMATION_BINS * VIEWS)
    return {"ari": pm.adjusted_rand_index(labels, clusters),
            "spearman": pm.linear_spearman(features, truth["hinge"], truth["view"])}


def star_angles(path: str) -> np.ndarray:
    table = star.particles_block(star.read_star(path), path)
    return star.psi_degrees_to_angle(np.array(table.column(star.ANGLE_PSI), np.float64))


# Methods


def relion_row(stack, new, classes: int) -> dict:
    iterations = FLAGS.relion_iter
    angles, labels, seconds, averages, failures = relion_2d.run_relion(
        stack.folder, os.path.join(stack.folder, "relion"), FLAGS.image_size, stack.pixel_size,
        iterations, classes, FLAGS.relion_threads)
    new_angles, _, new_seconds, _, new_failures = relion_2d.run_relion(
        new.folder, os.path.join(new.folder, "relion_ref"), FLAGS.image_size, new.pixel_size, 1,
        classes, FLAGS.relion_threads, averages)
    row = {"method": f"RELION 2D, K={classes}, {iterations} iterations", **pose_scores(
        stack.truth, angles), "wall_s": seconds, "classes_found": int(len(np.unique(labels))),
        "new": pose_scores(new.truth, new_angles),
        "new_particles_per_s": len(new_angles) / new_seconds}
    if failures or new_failures:  # runs RELION stopped before the one scored (`relion_2d`)
        row["relion_failures"] = failures + [f"new particles, {f}" for f in new_failures]
    return row


def classical_rows(stack, new, images: np.ndarray, new_images: np.ndarray, classes: int,
                   heterogeneous: bool) -> list[dict]:
    start = time.perf_counter()
    result = align_reference_free(images, num_classes=classes)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    new_angles, _ = align_to_templates(new_images, result.templates)
    new_seconds = time.perf_counter() - start
    row = {"method": f"classical alignment, K={classes}", **pose_scores(stack.truth, result.angles),
           "wall_s": seconds, "new": pose_scores(new.truth, new_angles),
           "new_particles_per_s": len(new_images) / new_seconds}
    rows = [row]
    if classes > 1:  # the same classes in one frame (`coaligned`), as the learned frame starts
        start = time.perf_counter()
        shared = coaligned(result)
        shared_seconds = seconds + time.perf_counter() - start
        start = time.perf_counter()
        new_angles, _ = align_to_templates(new_images, shared.templates)
        rows.append({"method": f"classical alignment, K={classes}, classes in one frame",
                     **pose_scores(stack.truth, shared.angles), "wall_s": shared_seconds,
                     "new": pose_scores(new.truth, new_angles),
                     "new_particles_per_s": len(new_images) / (time.perf_counter() - start)})
    if heterogeneous:
        aligned = np.asarray(rotate(images[..., None], -result.angles)).reshape(len(images), -1)
        rows.append({"method": "classical alignment + PCA(20)",
                     **feature_scores(stack.truth, aligned)})
        start = time.perf_counter()
        features = invariant_features(images)
        rows.append({"method": "polar Fourier magnitudes, PCA(20)", "wall_s":
                     time.perf_counter() - start, **feature_scores(stack.truth, features)})
    return rows


def train(base: Config, name: str, folder: str) -> train_lib.TrainResult:
    config = base.replace(
        name=name, model_dir=os.path.join(FLAGS.work_dir, "runs", name),
        export_dir=os.path.join(FLAGS.work_dir, "saved_models"), dataset="particle_stack",
        stack=os.path.join(folder, PARTICLES), star=None,
        data_dir=os.path.join(FLAGS.work_dir, "tfds"))
    shutil.rmtree(config.runtime.run_dir, ignore_errors=True)
    return train_lib.train(config)


def served(saved_model: str, images: np.ndarray, output: str) -> np.ndarray:
    """The SavedModel's `output` (latent or features) of every image."""
    model = load_serving_model(saved_model)
    return np.concatenate([model.predict(images[i:i + 256, ..., None])[output]
                           for i in range(0, len(images), 256)])


def canonicalized_angles(saved_model: str, stack, name: str, refine: bool):
    out = os.path.join(FLAGS.work_dir, "out", name)
    os.makedirs(out, exist_ok=True)
    summary = canonicalize_particles(saved_model, stack.path(STAR),  # its optics: a user's input
                                     os.path.join(out, "canonical.mrcs"),
                                     os.path.join(out, "canonical.star"), refine=refine)
    return star_angles(summary.star), summary


def network_rows(base, tag: str, stack, new, images: np.ndarray, heterogeneous: bool,
                 model: str) -> list[dict]:
    """spatial-VAE (one row) or ours (network angle and refined angle)."""
    result = train(base, f"{model}_{tag}", stack.folder)
    rows = []
    for refine in ((False,) if model == "spatial_vae" else (False, True)):
        suffix = "_refined" if refine else ""
        angles, summary = canonicalized_angles(result.export_path, stack,
                                               f"{model}_{tag}{suffix}", refine)
        new_angles, new_summary = canonicalized_angles(result.export_path, new,
                                                       f"{model}_{tag}_new{suffix}", refine)
        name = {("spatial_vae", False): "spatial-VAE", ("ours", False): "ours: EM frame",
                ("ours", True): "ours: EM frame + refinement"}[model, refine]
        row = {"method": name, **pose_scores(stack.truth, angles),
               "train_s": result.seconds, "canonicalize_s": summary.seconds,
               "wall_s": result.seconds + summary.seconds,
               "new": pose_scores(new.truth, new_angles),
               "new_particles_per_s": new_summary.particles_per_second,
               "default": refine}  # canonicalize refines unless told not to
        if heterogeneous and not refine:
            row.update(feature_scores(stack.truth, served(result.export_path, images,
                                                          "features")))
        rows.append(row)
    if model == "ours":
        rows.append({"method": "ours: network's own angle", **pose_scores(
            stack.truth, served(result.export_path, images, "network_angle"))})
    if heterogeneous and model == "ours":
        rows.append({"method": "ours: encoder latent", **feature_scores(
            stack.truth, served(result.export_path, images, "latent"))})
    return rows


def truth_row(truth: dict) -> dict:
    """The scores' ceiling: features that are the true view (one-hot, far apart) and hinge."""
    hinge = truth["hinge"] / truth["hinge"].std()
    return {"method": "truth: view + hinge (ceiling)", **feature_scores(
        truth, np.hstack([10 * np.eye(VIEWS)[truth["view"]], hinge[:, None]]))}


def run_stack(tag: str, base: Config, num: int) -> dict:
    heterogeneous, snr = STACKS[tag]
    folder = os.path.join(FLAGS.work_dir, "stacks", tag)
    stack = write_stack(folder, stack_config(heterogeneous, snr, 0, num), num)
    new = write_stack(folder + "_new", stack_config(heterogeneous, snr, 1000, num), num)
    images, new_images = read_images(stack.path(PARTICLES)), read_images(new.path(PARTICLES))
    views = VIEWS if heterogeneous else 1
    rows = []
    if "relion" not in FLAGS.skip:
        if relion_2d.installed():
            rows.append(relion_row(stack, new, views))
        else:
            print("RELION 2D skipped: relion_refine is not installed", flush=True)
    rows += classical_rows(stack, new, images, new_images, views, heterogeneous)
    if heterogeneous:
        rows.append(truth_row(stack.truth))
    if "svae" not in FLAGS.skip:
        svae = base.replace(model="spatial_vae", frame="auto",
                            epochs=FLAGS.svae_epochs or base.schedule.epochs,
                            svae_hidden_units=128)
        rows += network_rows(svae, tag, stack, new, images, heterogeneous, "spatial_vae")
    if "ours" not in FLAGS.skip:
        ours = base.replace(frame="learned", frame_classes=views)
        rows += network_rows(ours, tag, stack, new, images, heterogeneous, "ours")
    return {"stack": tag, "heterogeneous": heterogeneous, "snr": snr, "views": views,
            "particles": num, "rows": rows}


def merge(paths: list[str]) -> dict:
    """One report of several runs' rows (e.g. stacks or methods run in separate processes); the
    settings are the first file's, each file's (or, for a merged file, its sources) are kept
    under `sources`."""
    reports = []
    for path in paths:
        with open(path) as f:
            reports.append(json.load(f))
    rows = {}
    for report in reports:
        for entry in report["stacks"]:
            kept = rows.setdefault(entry["stack"], dict(entry, rows={}))
            kept["rows"].update({row["method"]: row for row in entry["rows"]})
    stacks = [dict(rows[tag], rows=list(rows[tag]["rows"].values())) for tag in STACKS
              if tag in rows]
    order = ("RELION", "classical alignment,", "classical alignment +", "polar", "truth",
             "spatial", "ours (", "ours +", "ours:")
    for entry in stacks:
        entry["rows"].sort(key=lambda row: next(i for i, p in enumerate(order)
                                                if row["method"].startswith(p)))
    return {"settings": reports[0]["settings"], "stacks": stacks,
            "sources": [source for r in reports for source in r.get("sources", [
                dict(r["settings"], stacks=[e["stack"] for e in r["stacks"]])])]}


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.merge:
        write(merge(FLAGS.merge), "")
        return
    driver.check_choices("stacks", FLAGS.stacks, STACKS, empty=True)
    base = configs.from_flags(FLAGS)
    num = FLAGS.num_particles
    if FLAGS.quick:
        base = base.replace(epochs=1, lr_decay_epoch=0)
        num, FLAGS.relion_iter = 300, 2
    report = {"settings": {"num_particles": num, "image_size": FLAGS.image_size,
                           "epochs": base.schedule.epochs,
                           "svae_epochs": FLAGS.svae_epochs or base.schedule.epochs,
                           "batch_size": base.schedule.batch_size,
                           "architecture": base.model.autoencoder.architecture,
                           "relion_iter": FLAGS.relion_iter,
                           "relion_threads": FLAGS.relion_threads, "skip": FLAGS.skip},
              "stacks": []}
    for tag in FLAGS.stacks:
        report["stacks"].append(run_stack(tag, base, num))
        write(report, "_quick" if FLAGS.quick else "")


def write(report: dict, suffix: str) -> None:
    """`<results><suffix>.{json,md}`."""
    write_results(f"{FLAGS.results}{suffix}", report, markdown(report))


def _cell(row: dict, key: str, fmt: str) -> str:
    return format(row[key], fmt) if key in row else "—"


def markdown(report: dict) -> str:
    s = report["settings"]
    sources = report.get("sources", [s])
    lines = [f"# Poses beside RELION 2D and classical alignment: {s['num_particles']} particles "
             f"per stack, {s['image_size']}x{s['image_size']}", "",
             f"Batch {s['batch_size']}, RELION --j {s['relion_threads']}, on 2 CPU cores shared "
             "with other work. psi error after one rotation per view; 'new': a second stack of "
             "the same specimen posed without retraining.", ""]
    for source in sources:
        lines.append(f"- {', '.join(source.get('stacks', ['all stacks']))}: RELION "
                     f"{source['relion_iter']} iterations, ours {source['epochs']} epochs, "
                     f"spatial-VAE {source['svae_epochs']} epochs"
                     + (f", ours' networks {source['architecture']}" if "architecture" in source
                        else "") + (
                         f", skipped: {', '.join(source['skip'])}" if source["skip"] else ""))
    lines += ["", "| stack | method | psi MAE (°) | median (°) | > 15° (%) | wall (s) "
              "| new: psi MAE (°) | new: particles/s | ARI | Spearman ρ (abs.) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for entry in report["stacks"]:
        for row in entry["rows"]:
            new = row.get("new", {})
            lines.append(" | ".join([
                f"| {entry['stack']}", row["method"], _cell(row, "psi_mae_deg", ".2f"),
                _cell(row, "psi_median_deg", ".2f"), _cell(row, "psi_over_15_percent", ".1f"),
                _cell(row, "wall_s", ".1f"), _cell(new, "psi_mae_deg", ".2f"),
                _cell(row, "new_particles_per_s", ".0f"), _cell(row, "ari", ".3f"),
                _cell(row, "spearman", ".3f")]) + " |")
    failed = [f"- {entry['stack']}, {row['method']}: RELION stopped, retried (wall time: the run "
              f"that finished): {'; '.join(row['relion_failures'])}"
              for entry in report["stacks"] for row in entry["rows"] if "relion_failures" in row]
    return "\n".join(lines + [""] + (failed + [""] if failed else []) + targets(report)) + "\n"


def _find(rows: list[dict], prefix: str) -> dict | None:
    return next((row for row in rows if row["method"].startswith(prefix)), None)


def targets(report: dict) -> list[str]:
    """Issue 15's targets, ratios from this report ('ours' = the row of what `canonicalize`
    writes by default; features: the EM frame row's (older reports: 'ours (network)'); RELION:
    its last row)."""
    lines = ["## Targets (issue 15), ratios from these rows", ""]

    def check(stack: str, text: str, value: float, goal: float, at_least: bool) -> None:
        met = value >= goal if at_least else value <= goal
        lines.append(f"- {stack}: {text} = {value:.2f} ({'≥' if at_least else '≤'} {goal:g}: "
                     f"{'met' if met else 'MISSED'})")

    for entry in report["stacks"]:
        rows, tag = entry["rows"], entry["stack"]
        network = _find(rows, "ours: EM frame") or _find(rows, "ours (")
        ours = next((row for row in rows if row["method"].startswith("ours")
                     and row.get("default", row["method"].startswith("ours +"))), None)
        relions = [row for row in rows if row["method"].startswith("RELION")]
        relion = relions[-1] if relions else None  # the longest run, when merged
        posed = [row for row in rows if "psi_mae_deg" in row]
        if ours and posed:
            best = min(posed, key=lambda row: row["psi_mae_deg"])
            check(tag, f"ours' ({ours['method']}) psi MAE / best row's ({best['method']})",
                  ours["psi_mae_deg"] / best["psi_mae_deg"], 1.1, False)
        if ours and relion and not entry["heterogeneous"]:
            check(tag, "ours' train + canonicalize time / RELION's", ours["wall_s"] /
                  relion["wall_s"], 0.5, False)
        if network and entry["heterogeneous"]:
            classical = [row for row in rows if "ari" in row and (
                row["method"].startswith("classical") or row["method"].startswith("polar"))]
            if classical:
                check(tag, "ours' ARI / best classical ARI", network["ari"] /
                      max(row["ari"] for row in classical), 1.2, True)
                check(tag, "ours' Spearman ρ / best classical", network["spearman"] /
                      max(row["spearman"] for row in classical), 1.0, True)
        if ours and relion:
            check(tag, "new particles: ours' particles/s / RELION's single iteration",
                  ours["new_particles_per_s"] / relion["new_particles_per_s"], 5, True)
            check(tag, "new particles: ours' psi MAE / RELION's", ours["new"]["psi_mae_deg"]
                  / relion["new"]["psi_mae_deg"], 1.2, False)
    return lines


if __name__ == "__main__":
    driver.start(main, define_flags, driver.STACK_CONFIG)

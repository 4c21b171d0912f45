"""Classes out as RELION 2D writes them, on stacks RELION projected: `python -m benchmarks.classes`.

Acceptance check of `canonicalize`'s class outputs (`rotinv_tf.serving.classes`) on particles our
code did not write. Per `--seed`, two density maps (48^3 voxels of 2 Å, written here):
- `asymmetric`: the simulator's built-in hinged pseudo-atomic model (`data_pipeline.
  simulator.builtin_model`, middle conformation), each pseudo-atom a 3D Gaussian of the model's
  width: a rigid, asymmetric molecule (the simulator reads maps but writes none);
- `near_symmetric`: two lobes on the x axis (±14 Å, σ 5 Å, amplitudes 1, `--lobe_ratio`) and a
  third on the z axis (+16 Å, σ 4 Å, amplitude 1.5): down z (tilt 0) the third lobe projects onto
  the centre, so that view is the two lobes, close to its own 180° turn; tilted views are not.
Each map is projected by `relion_project` at three views (rot 90°, tilt 0/40/80°, each with a
`--spread`° normal jitter of its tilt; rot is not jittered: down z it is an in-plane turn, which
would blur the true psi), psi uniform, 48 px boxes, 2 Å pixels, with RELION's
white noise at the σ giving `--snr` (signal variance: the mean over particles of each clean
projection's pixel variance over the whole box, from a noise-free `relion_project` run of the same
angles; σ = sqrt(variance / snr)). The training STAR is RELION's STAR without rlnAngleRot/Tilt/Psi;
the truth stays in `truth.npz`.
Then, as a user does (subprocesses, timed, from the stack folder as a RELION project root):
`python -m rotinv_tf.train --flagfile=configs/stack.cfg --star=... --frame_classes=3`, then
`python -m rotinv_tf.canonicalize ... --star=Class2D/run_data.star`, then `relion_star_handler
--select rlnClassNumber --minval 2 --maxval 2` and `relion_image_handler --stats` on the outputs.
Scores:
- class purity: per class, the share of its particles from its majority true view; per view, its
  share in its majority class; what the star_handler selection kept;
- flips: psi error after the best global rotation per class (the one minimising the class's mean
  absolute error, `evaluation.least_absolute_frame_rotation`: the circular mean fails near half
  flipped; its count of errors > 90° is reported beside); a particle is flipped
  when its error is > 90°; detected when its rlnMaxValueProbDistribution (its class's
  probability times 1 - its flip probability: ambiguous particles lowest) is among the stack's
  lowest tenth (by rank: ties at 1.000000 broken by particle order) or its
  rlnRotinvFlipProbability > 0.3 (`FLIP_FLAG`); also the sum of the flip probabilities (what a
  calibrated one expects of the number flipped).

Writes `benchmarks/results/<--results>.{md,json}` (default `classes`); `--rescore` scores an
earlier run's outputs again.
"""
import glob
import json
import os
import sys

import mrcfile
import numpy as np
from absl import flags

from benchmarks import driver
from benchmarks.relion_stacks import (ANGLES, PIXEL, ROT, SIZE, TILTS, define_stack_flags,
                                      gaussians, read_stack, relion, shown, timed, views_text,
                                      write_map)
from benchmarks.report_files import RESULTS, write_results
from data_pipeline.formats import star
from data_pipeline.formats.mrc import open_stack
from data_pipeline.simulator import builtin_model
from rotinv_tf.evaluation import (frame_aligned_errors_deg, least_absolute_frame_rotation,
                                  psi_error_summary)
from rotinv_tf.serving.classes import FLIP_COLUMN, FLIP_FLAG, turn_correlation

CLASSES = 3
MAPS = ("asymmetric", "near_symmetric")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The driver's flags."""
    define_stack_flags("/tmp/rotinv_classes", num_particles=1500, snr=1.0, spread=3.0)
    flags.DEFINE_integer("epochs", 8, "Training epochs.")
    flags.DEFINE_float("lobe_ratio", 0.9, "near_symmetric: the second lobe's amplitude.")
    flags.DEFINE_list("maps", list(MAPS), f"Stacks to run, of {', '.join(MAPS)}.")
    flags.DEFINE_boolean("recentre", False, "Diagnosis: move the noisy particles by -0.5 px in x "
                         "and y (Fourier shift) before training, from RELION's rotation centre "
                         "(N/2) to the project's ((N-1)/2).")
    flags.DEFINE_boolean("rescore", False, "Score again the stacks of benchmarks/results/"
                         "<results>.json (in --work_dir) without making or training anything.")
    flags.DEFINE_string("results", "classes", "benchmarks/results/<results>.{md,json}.")


# Maps


def density(name: str) -> np.ndarray:
    if name == "asymmetric":
        model = builtin_model()
        return gaussians(model.conformation(0.5), model.sigma, model.weights, SIZE, PIXEL)
    return gaussians([(14.0, 0.0, 0.0), (-14.0, 0.0, 0.0), (0.0, 0.0, 16.0)], [5.0, 5.0, 4.0],
                     [1.0, FLAGS.lobe_ratio, 1.5], SIZE, PIXEL)


# Stacks


def angles_star(path: str, angles: np.ndarray) -> None:
    """RELION 3.1 STAR of (rot, tilt, psi) rows in degrees, with the optics table RELION needs
    (its CTF values unused: no --ctf)."""
    star.write_star(path, {
        "optics": star.optics_block(PIXEL, SIZE, voltage=300.0, spherical_aberration=2.7,
                                    amplitude_contrast=0.1),
        "particles": star.StarBlock([*ANGLES, star.OPTICS_GROUP],
                                    [[f"{a:.4f}" for a in row] + ["1"] for row in angles])})


def half_pixel_back(images: np.ndarray) -> np.ndarray:
    """Images [B, N, N] moved by -0.5 px along rows and columns (Fourier shift): content centred
    on RELION's pixel (N/2, N/2) lands on the project's ((N-1)/2, (N-1)/2)."""
    k = np.fft.fftfreq(SIZE)
    phase = np.exp(2j * np.pi * 0.5 * (k[:, None] + k[None, :]))
    return np.real(np.fft.ifft2(np.fft.fft2(images) * phase)).astype(np.float32)


def centroid(images: np.ndarray) -> list[float]:
    """(row, column) of the mean image's centre of mass, pixels."""
    mean = images.mean(axis=0)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    return [float((mean * rows).sum() / mean.sum()), float((mean * cols).sum() / mean.sum())]


def make_stack(folder: str, name: str, seed: int) -> dict:
    """Map, angles, clean and noisy projections, the training STAR; what was made."""
    os.makedirs(folder, exist_ok=True)
    write_map(os.path.join(folder, "map.mrc"), density(name), PIXEL)
    rng = np.random.default_rng(seed)
    num = FLAGS.num_particles
    views = np.arange(num) % CLASSES
    rng.shuffle(views)
    angles = np.stack([np.full(num, ROT),
                       np.asarray(TILTS)[views] + rng.normal(0.0, FLAGS.spread, num),
                       rng.uniform(-180.0, 180.0, num)], axis=1)
    angles_star(os.path.join(folder, "angles.star"), angles)
    angles_star(os.path.join(folder, "views.star"), [(ROT, t, 0.0) for t in TILTS])
    project = ["relion_project", "--i", "map.mrc", "--ang", "angles.star", "--angpix", f"{PIXEL:g}"]
    relion(folder, "relion_project", "--i", "map.mrc", "--ang", "views.star", "--o", "views",
           "--angpix", f"{PIXEL:g}")
    relion(folder, *project, "--o", "clean")
    clean = read_stack(os.path.join(folder, "clean.mrcs"))
    signal_variance = float(clean.reshape(num, -1).var(axis=1).mean())
    sigma = float(np.sqrt(signal_variance / FLAGS.snr))
    command = [*project, "--o", "particles", "--add_noise", "--white_noise", f"{sigma:.6g}"]
    _, seconds = relion(folder, *command)
    noisy = read_stack(os.path.join(folder, "particles.mrcs"))
    measured_snr = signal_variance / float((noisy - clean).reshape(num, -1).var(axis=1).mean())
    centres = {"clean_centroid": centroid(clean)}
    if FLAGS.recentre:
        with mrcfile.open(os.path.join(folder, "particles.mrcs"), "r+") as f:
            f.set_data(half_pixel_back(noisy))
        centres["recentred_clean_centroid"] = centroid(half_pixel_back(clean))
    blocks = star.read_star(os.path.join(folder, "particles.star"))
    table = blocks["particles"]
    order = star.image_positions(table, "particles.star")[1]
    written = np.array([table.column(c) for c in ANGLES], np.float64).T
    assert np.array_equal(order, np.arange(num)) and np.allclose(written, angles, atol=1e-3)
    np.savez(os.path.join(folder, "truth.npz"), view=views, rot=written[:, 0],
             tilt=written[:, 1], psi=written[:, 2])
    kept = [i for i, c in enumerate(table.columns) if c not in ANGLES]
    blocks["particles"] = star.StarBlock([table.columns[i] for i in kept],
                                         [[row[i] for i in kept] for row in table.rows])
    star.write_star(os.path.join(folder, "particles_noangles.star"), blocks)
    # About each view's own centre (RELION's), which `turn_correlation` takes as (N-1)/2.
    view_images = half_pixel_back(read_stack(os.path.join(folder, "views.mrcs")))
    return {"map": name, "relion_project": " ".join(command), "relion_project_s": seconds,
            "signal_variance": signal_variance, "white_noise": sigma,
            "measured_snr": measured_snr, "recentred": FLAGS.recentre, **centres,
            "view_turn_correlation": [turn_correlation(v) for v in view_images],
            "view_counts": np.bincount(views, minlength=CLASSES).tolist()}


# Ours, as a user runs it


def run_ours(folder: str, tag: str, seed: int) -> dict:
    runs = os.path.join(folder, "runs")
    train = [sys.executable, "-m", "rotinv_tf.train",
             f"--flagfile={driver.STACK_CONFIG}",
             "--star=particles_noangles.star", f"--frame_classes={CLASSES}",
             f"--epochs={FLAGS.epochs}", f"--seed={seed}", f"--name={tag}",
             f"--model_dir={runs}/{tag}", f"--export_dir={runs}/saved_models",
             f"--data_dir={runs}/tfds"]
    train_s = timed(folder, train, "train.log")
    saved_model = sorted(glob.glob(os.path.join(runs, "saved_models", tag, "*")))[-1]
    canonicalize = [sys.executable, "-m", "rotinv_tf.canonicalize", f"--saved_model={saved_model}",
                    "--input=particles_noangles.star", "--output=Class2D/canonical.mrcs",
                    "--star=Class2D/run_data.star"]
    canonicalize_s = timed(folder, canonicalize, "canonicalize.log")
    select = ["relion_star_handler", "--i", "Class2D/run_data.star", "--o", "Class2D/class2.star",
              "--select", "rlnClassNumber", "--minval", "2", "--maxval", "2"]
    select_out, _ = relion(folder, *select)
    stats = ["relion_image_handler", "--i", "Class2D/run_classes.mrcs", "--stats"]
    stats_out, _ = relion(folder, *stats)
    return {"train": shown(train, folder), "train_s": train_s,
            "canonicalize": shown(canonicalize, folder),
            "canonicalize_s": canonicalize_s, "star_handler": " ".join(select),
            "star_handler_stdout": select_out.strip().splitlines(),
            "image_handler": " ".join(stats), "image_handler_stdout":
            stats_out.strip().splitlines(), "saved_model": saved_model}


# Scores


def column(table: star.StarBlock, name: str) -> np.ndarray:
    return np.array(table.column(name), np.float64)


def score(folder: str) -> dict:
    truth = np.load(os.path.join(folder, "truth.npz"))
    view = truth["view"]
    table = star.read_star(os.path.join(folder, "Class2D", "run_data.star"))["particles"]
    names = table.column(star.IMAGE_NAME)
    assert [int(n.split("@")[0]) for n in names] == list(range(1, len(view) + 1)), names[:3]
    classes = column(table, star.CLASS_NUMBER).astype(int)
    confidence, flip = column(table, star.MAX_PROBABILITY), column(table, FLIP_COLUMN)
    true, predicted = np.radians(truth["psi"]), np.radians(column(table, star.ANGLE_PSI))
    error = frame_aligned_errors_deg(true, predicted, classes, least_absolute_frame_rotation)
    flipped = error > 90
    circular_mean_error = frame_aligned_errors_deg(true, predicted, classes)
    low = np.zeros(len(confidence), bool)
    low[np.argsort(confidence, kind="stable")[:len(confidence) // 10]] = True
    flagged = flip > FLIP_FLAG
    detected = low | flagged
    comments = [line[2:] for line in open(os.path.join(folder, "Class2D", "run_data.star"))
                .read().splitlines() if line.startswith("# rotinv_tf: class")]
    per_class = []
    for k in range(1, CLASSES + 1):
        members = classes == k
        counts = np.bincount(view[members], minlength=CLASSES)
        per_class.append({
            "class": k, "particles": int(members.sum()),
            "majority_view": int(counts.argmax()),
            "purity": float(counts.max() / max(members.sum(), 1)),
            "view_counts": counts.tolist(),
            "psi_mae_unflipped_deg": float(error[members & ~flipped].mean())
            if (members & ~flipped).any() else None,
            "flipped": int((members & flipped).sum()),
            "flagged": int((members & flagged).sum()),
            "lowest_decile": int((members & low).sum()),
            "flipped_detected": int((members & flipped & detected).sum())})
    per_view = []
    for v in range(CLASSES):
        counts = np.bincount(classes[view == v] - 1, minlength=CLASSES)
        per_view.append({"view": v, "tilt": TILTS[v], "particles": int((view == v).sum()),
                         "majority_class": int(counts.argmax()) + 1,
                         "share_in_majority_class": float(counts.max() / (view == v).sum())})
    selected = star.read_star(os.path.join(folder, "Class2D", "class2.star"))["particles"]
    picked = star.image_positions(selected, "class2.star")[1]
    picked_views = np.bincount(view[picked], minlength=CLASSES) if len(picked) else \
        np.zeros(CLASSES, int)
    with open_stack(os.path.join(folder, "Class2D", "run_classes.mrcs")) as averages:
        averages_shape = list(averages.shape)
    count = lambda mask: int(mask.sum())  # noqa: E731
    return {
        "classes": per_class, "views": per_view,
        "selection_class2": {"particles": int(len(picked)), "view_counts": picked_views.tolist(),
                             "majority_view_share": float(picked_views.max() / max(len(picked), 1)),
                             "flip_column_kept": FLIP_COLUMN in selected.columns},
        "class_averages_shape": averages_shape, "star_comments": comments,
        "psi": psi_error_summary(error[~flipped]) if (~flipped).any() else None,
        "flips": {"particles": len(view), "flipped": count(flipped),
                  "over_90_after_circular_mean_rotation": count(circular_mean_error > 90),
                  "flipped_lowest_decile": count(flipped & low),
                  "flipped_flagged": count(flipped & flagged),
                  "flipped_detected": count(flipped & detected),
                  "detected_share": float(count(flipped & detected) / count(flipped))
                  if flipped.any() else None,
                  "unflipped_flagged": count(~flipped & flagged),
                  "unflipped_detected": count(~flipped & detected),
                  "flip_probability_sum": float(flip.sum()),
                  "confidence_decile_threshold": float(confidence[low].max()),
                  "confidence_median_flipped": float(np.median(confidence[flipped]))
                  if flipped.any() else None,
                  "confidence_median_unflipped": float(np.median(confidence[~flipped])),
                  "flip_probability_max_flipped": float(flip[flipped].max())
                  if flipped.any() else None}}


# Report


def markdown(report: dict) -> str:
    r = report
    lines = [f"# Classes as RELION 2D writes them: relion_project stacks, seed {r['seed']}", "",
             f"{r['num_particles']} particles per stack, {SIZE}x{SIZE}, {PIXEL:g} Å, "
             f"{views_text(len(TILTS), r['spread'])}, psi uniform, SNR {r['snr']:g}; "
             f"`--frame_classes={CLASSES}`, {r['epochs']} epochs.", ""]
    for s in r["stacks"]:
        lines += [f"## {s['map']}", "",
                  f"- `{s['relion_project']}` (signal variance {s['signal_variance']:.4g}, "
                  f"measured SNR {s['measured_snr']:.3f}); clean views' correlation with their "
                  f"180° turn: " + ", ".join(f"tilt {t:g}°: {c:.3f}" for t, c in
                                             zip(TILTS, s["view_turn_correlation"]))
                  + ("; particles recentred by -0.5 px (`--recentre`), clean centroid "
                     f"{s['clean_centroid']} -> {s['recentred_clean_centroid']}"
                     if s.get("recentred") else ""),
                  f"- `{s['train']}`: {s['train_s']:.0f} s",
                  f"- `{s['canonicalize']}`: {s['canonicalize_s']:.1f} s",
                  f"- `{s['star_handler']}` printed: " + " / ".join(s["star_handler_stdout"]),
                  f"- `{s['image_handler']}` printed {len(s['image_handler_stdout'])} lines: "
                  + " / ".join(s["image_handler_stdout"]), ""]
        sc = s["scores"]
        sel = sc["selection_class2"]
        lines += [f"class 2 selection: {sel['particles']} particles, views "
                  f"{sel['view_counts']}, {100 * sel['majority_view_share']:.1f}% from one view; "
                  f"{FLIP_COLUMN} kept: {sel['flip_column_kept']}", "",
                  "| class | particles | particles per true view (tilt 0/40/80) | purity (%) "
                  "| psi MAE unflipped (°) | flipped | flagged | lowest tenth "
                  "| flipped detected |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in sc["classes"]:
            mae = "-" if c["psi_mae_unflipped_deg"] is None else f"{c['psi_mae_unflipped_deg']:.2f}"
            lines.append(f"| {c['class']} | {c['particles']} | {c['view_counts']} | "
                         f"{100 * c['purity']:.1f} | {mae} | {c['flipped']} | {c['flagged']} | "
                         f"{c['lowest_decile']} | {c['flipped_detected']} |")
        lines += ["", "| true view | particles | majority class | share in it (%) |",
                  "| --- | --- | --- | --- |"]
        for v in sc["views"]:
            lines.append(f"| tilt {v['tilt']:g}° | {v['particles']} | {v['majority_class']} | "
                         f"{100 * v['share_in_majority_class']:.1f} |")
        f = sc["flips"]
        share = "-" if f["detected_share"] is None else f"{100 * f['detected_share']:.1f}%"
        lines += ["", f"Flips (psi error > 90° after each class's best rotation): "
                  f"{f['flipped']} of {f['particles']} ("
                  f"{f['over_90_after_circular_mean_rotation']} > 90° after the circular-mean "
                  f"rotation); in the lowest tenth by rlnMaxValueProbDistribution "
                  f"{f['flipped_lowest_decile']}, flagged (flip probability > {FLIP_FLAG:g}) "
                  f"{f['flipped_flagged']}, either: {f['flipped_detected']} ({share}). "
                  f"Unflipped particles flagged: {f['unflipped_flagged']}, flagged or in the "
                  f"lowest tenth: {f['unflipped_detected']}. Sum of the flip probabilities: "
                  f"{f['flip_probability_sum']:.1f}."
                  + (f" Median rlnMaxValueProbDistribution of the flipped particles / of all "
                     f"others: {f['confidence_median_flipped']:.4f} / "
                     f"{f['confidence_median_unflipped']:.4f} (lowest tenth up to "
                     f"{f['confidence_decile_threshold']:.6f}); largest flip "
                     f"probability of a flipped particle: {f['flip_probability_max_flipped']:.3g}."
                     if f["flipped"] else ""), "",
                  "STAR comments: " + " / ".join(f"`{c}`" for c in sc["star_comments"]), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.rescore:
        with open(os.path.join(RESULTS, f"{FLAGS.results}.json")) as f:
            report = json.load(f)
        for made in report["stacks"]:
            made["scores"] = score(os.path.join(FLAGS.work_dir, f"seed{report['seed']}",
                                                made["map"]))
        write_results(FLAGS.results, report, markdown(report))
        return
    stacks = []
    for name in FLAGS.maps:
        folder = os.path.join(FLAGS.work_dir, f"seed{FLAGS.seed}", name)
        made = make_stack(folder, name, FLAGS.seed)
        print(json.dumps(made), flush=True)
        ours = run_ours(folder, f"classes_{name}_seed{FLAGS.seed}", FLAGS.seed)
        stacks.append({**made, **ours, "scores": score(folder)})
        print(json.dumps(stacks[-1]["scores"], indent=1), flush=True)
    report = {"seed": FLAGS.seed, "num_particles": FLAGS.num_particles, "epochs": FLAGS.epochs,
              "snr": FLAGS.snr, "spread": FLAGS.spread, "lobe_ratio": FLAGS.lobe_ratio,
              "flip_flag": FLIP_FLAG, "stacks": stacks}
    write_results(FLAGS.results, report, markdown(report))


if __name__ == "__main__":
    driver.start(main, define_flags)

"""Stacks as a picker leaves them, projected by RELION, with RELION 2D beside us on the same stack:
`python -m benchmarks.picked --seed=0 --snr=0.1`.

Per `--seed`, `relion_project` (Debian's RELION 3.1.3) projects the simulator's hinged molecule
(`data_pipeline.simulator.builtin_model`, its pseudo-atoms as 3D Gaussians) at `--conformations`
hinge positions spread evenly over its range, each particle one of them at random, in three
preferred views (rot 90°, tilt 0/40/80°, tilt jittered by a normal of `--spread`°; rot is not
jittered: down z it is an in-plane turn, which would blur the true psi), psi uniform, picker
offsets (`rlnOriginXAngst/YAngst`, normal σ `--offset_sigma` px per axis, at most `--max_offset`
px from the centre), a CTF per particle (defocus U uniform 1-3 µm, V up to 0.1 µm below it, angle
uniform; 300 kV, Cs 2.7 mm, amplitude contrast 0.1; `--ctf`), and RELION's white noise at the σ
giving `--snr` (signal: the clean projections' mean per-image variance over the box, CTF applied).
Both sides read the same `relion.star` (image names, optics and CTF, no angles, no origins); the
truth stays in `truth.npz`. Then, timed as whole processes, from the stack's folder:

- RELION 2D: `relion_refine` K=3, `--ctf`, offset search `--relion_offset_range` px in
  `--relion_offset_step` steps, otherwise issue 15's command
  (`benchmarks/relion_2d.py`), `--j 2`;
- ours as the README gives it: `python -m rotinv_tf.train --flagfile=configs/stack.cfg
  --star=relion.star --frame_classes=3`, then `python -m rotinv_tf.canonicalize` with its defaults.

Scores per side: psi error after one rotation per true view
(`rotinv_tf.evaluation.frame_aligned_errors_deg`), and the origin error in pixels, raw and after
one translation per true view in the view's own frame
(a 2D classifier's class average may sit off the molecule's centre: each particle's origin then
carries that offset turned by its psi), beside the trivial row that leaves every origin at 0.
Ours' served latent is probed too (`latent_probes`: held-out linear and 10-NN R² of each
particle's defocus, which it should not carry, and of its hinge position).

`--views=1 --conformations=1 --offset_sigma=0` makes the one-view stack; `--classes` sets K on
both sides (default: the views; K = 1 and 6 for 3 views, as users do not know the count);
`--junk` adds junk particles (half noise-only boxes, half another molecule), scored by the share
of them in the lowest decile of rlnLogLikeliContribution or in a class that is mostly junk.

Writes `benchmarks/results/<--results>.{md,json}` (default
`picked_views<views>_snr<snr>_k<classes>_junk<junk>_seed<seed>`); each K's runs keep their own
folders in the stack's (`Class2D_relion_k<K>`, `runs/picked_seed<seed>_k<K>`, `Ours_k<K>`).
"""
import glob
import json
import os
import sys

import numpy as np
from absl import flags

from benchmarks import driver, relion_2d
from benchmarks.relion_stacks import (ANGLES, PIXEL, ROT, SIZE, TILTS, define_stack_flags,
                                      gaussians, noise_sigma, read_stack, relion, shown, timed,
                                      views_text, write_map)
from benchmarks.report_files import write_results
from data_pipeline import cli
from data_pipeline.atomic import write_text
from data_pipeline.datasets.particle_stack import ParticleStack
from data_pipeline.formats import star
from data_pipeline.formats.mrc import write_stack
from data_pipeline.simulator import builtin_model
from rotinv_tf.evaluation import (frame_aligned_errors_deg, knn_r2, probe_r2,
                                  psi_error_summary)
from rotinv_tf.serving.saved_model import load_serving_model

VOLTAGE, CS, AMPLITUDE_CONTRAST = 300.0, 2.7, 0.1
DEFOCUS_RANGE = (10000.0, 30000.0)  # Å, defocus U
ASTIGMATISM = 1000.0  # Å: V is U minus up to this
# Junk particles' maps: an empty box (noise only) and another molecule, three blobs in a bent
# row unlike the hinged model.
JUNK_MAPS = ("junk_empty", "junk_other")
STACK_FILE = "stack.json"  # what `make_stack` made, written last

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The driver's flags."""
    define_stack_flags("/tmp/rotinv_picked", num_particles=3000, snr=0.1, spread=8.0)
    flags.DEFINE_integer("conformations", 5, "Hinge positions (maps) projected.")
    flags.DEFINE_integer("views", len(TILTS), "Preferred views, the first of TILTS (1: the "
                         "one-view stack).")
    flags.DEFINE_integer("classes", None, "K, the classes both sides are asked for (default: "
                         "--views; users do not know the count).")
    flags.DEFINE_float("junk", 0.0, "Share of junk particles: half noise-only boxes, half another "
                       "molecule (`JUNK_MAPS`).")
    flags.DEFINE_float("offset_sigma", 2.0, "Std (pixels) of the picker offsets, per axis.")
    flags.DEFINE_float("max_offset", 5.0, "Largest picker offset (pixels from the centre).")
    flags.DEFINE_boolean("ctf", True, "A CTF per particle (else none, and no --ctf for RELION).")
    flags.DEFINE_integer("relion_iterations", 25, "RELION 2D iterations.")
    flags.DEFINE_float("relion_offset_range", 5.0, "RELION's offset search range (pixels).")
    flags.DEFINE_float("relion_offset_step", 2.0, "RELION's offset search step (pixels).")
    flags.DEFINE_boolean("reuse_stack", False, "Run the sides on the stack an earlier run of the "
                         "same settings made (RELION's noise is drawn anew otherwise).")
    flags.DEFINE_list("sides", ["relion", "ours"], "Which of relion, ours to run.")
    flags.DEFINE_list("ours_flags", [], "Extra flags for our train command (a diagnosis, not the "
                      "README's configuration; the table says so).")
    flags.DEFINE_string("results", None, "benchmarks/results/<results>.{md,json}.")


# The stack


def particle_table(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    """Each particle's view, map (conformations 0..C-1, then `JUNK_MAPS`: junk), angles
    (degrees), origin (pixels) and CTF."""
    views = np.arange(count) % FLAGS.views
    rng.shuffle(views)
    maps = rng.integers(FLAGS.conformations, size=count)
    junk = rng.random(count) < FLAGS.junk
    maps[junk] = FLAGS.conformations + rng.integers(len(JUNK_MAPS), size=int(junk.sum()))
    radius = rng.normal(0.0, FLAGS.offset_sigma, (count, 2))
    length = np.maximum(np.hypot(*radius.T), 1e-12)
    origins = radius * np.minimum(1.0, FLAGS.max_offset / length)[:, None]
    defocus_u = rng.uniform(*DEFOCUS_RANGE, count)
    return {"view": views, "map": maps, "junk": junk,
            "rot": np.full(count, ROT),
            "tilt": np.asarray(TILTS)[views] + rng.normal(0.0, FLAGS.spread, count),
            "psi": rng.uniform(-180.0, 180.0, count), "origin": origins,
            "defocus_u": defocus_u, "defocus_v": defocus_u - rng.uniform(0, ASTIGMATISM, count),
            "defocus_angle": rng.uniform(0.0, 180.0, count)}


def ctf_columns(truth: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, list[str]]:
    """RELION's per-particle CTF columns of `rows`, as text."""
    values = (truth["defocus_u"], truth["defocus_v"], truth["defocus_angle"])
    return {name: [f"{v:.2f}" for v in column[rows]]
            for name, column in zip(star.DEFOCUS_COLUMNS, values)}


def projection_star(path: str, truth: dict[str, np.ndarray], rows: np.ndarray) -> None:
    """What `relion_project --ang` reads for `rows`: angles, origins in Å, CTF, optics."""
    columns = {name: [f"{v:.4f}" for v in truth[key][rows]]
               for name, key in zip(ANGLES, ("rot", "tilt", "psi"))}
    for axis, name in enumerate(star.ORIGIN_COLUMNS):
        columns[name] = [f"{v * PIXEL:.4f}" for v in truth["origin"][rows, axis]]
    columns.update(ctf_columns(truth, rows))
    columns[star.OPTICS_GROUP] = ["1"] * len(rows)
    star.write_star(path, {
        "optics": star.optics_block(PIXEL, SIZE, VOLTAGE, CS, AMPLITUDE_CONTRAST),
        "particles": star.StarBlock(list(columns), [list(r) for r in zip(*columns.values())])})


def project(folder: str, truth: dict[str, np.ndarray], noise: float | None) -> np.ndarray:
    """Every particle projected by `relion_project`, one run per map, with white noise of σ
    `noise` (None: clean) -> images [B, N, N] in particle order."""
    count = len(truth["view"])
    images = np.zeros((count, SIZE, SIZE), np.float32)
    for index, name in enumerate(map_names()):
        rows = np.flatnonzero(truth["map"] == index)
        if not len(rows):
            continue
        projection_star(os.path.join(folder, f"{name}.star"), truth, rows)
        command = ["relion_project", "--i", f"{name}.mrc", "--ang", f"{name}.star",
                   "--angpix", f"{PIXEL:g}", "--o", f"{name}_projected",
                   *(["--ctf"] if FLAGS.ctf else []),
                   *(["--add_noise", "--white_noise", f"{noise:.6g}"] if noise else [])]
        relion(folder, *command)
        images[rows] = read_stack(os.path.join(folder, f"{name}_projected.mrcs"))
    return images


def map_names() -> list[str]:
    return [f"conformation{c}" for c in range(FLAGS.conformations)] + list(JUNK_MAPS)


def hinges() -> np.ndarray:
    """The conformations' hinge parameters, evenly over the model's range."""
    return (np.arange(FLAGS.conformations) + 0.5) / FLAGS.conformations


def stack_settings() -> dict:
    """The flags a stack is made from (beside the seed and SNR its folder is named by)."""
    return {name: FLAGS[name].value for name in (
        "num_particles", "views", "conformations", "spread", "offset_sigma", "max_offset",
        "ctf")}


def classes() -> int:
    """K for both sides: `--classes`, else the number of views."""
    return FLAGS.classes or FLAGS.views


def make_stack(folder: str, seed: int) -> dict:
    """Maps, the noisy stack `particles.mrcs`, `relion.star`, `truth.npz`; what was made."""
    os.makedirs(folder, exist_ok=True)
    model = builtin_model()
    volumes = [gaussians(model.conformation(h), model.sigma, model.weights, SIZE, PIXEL)
               for h in hinges()]
    other = gaussians([(-18.0, -6.0, 0.0), (0.0, 6.0, 0.0), (18.0, -6.0, 0.0)], 6.0, 1.0,
                      SIZE, PIXEL)
    other *= volumes[0].sum() / other.sum()
    for name, volume in zip(map_names(), volumes + [np.zeros_like(other), other]):
        write_map(os.path.join(folder, f"{name}.mrc"), volume, PIXEL)
    truth = particle_table(np.random.default_rng(seed), FLAGS.num_particles)
    clean = project(folder, truth, None)
    sigma = noise_sigma(clean[~truth["junk"]], FLAGS.snr)
    noisy = project(folder, truth, sigma)
    write_stack(os.path.join(folder, relion_2d.PARTICLES), noisy, PIXEL)
    every = np.arange(FLAGS.num_particles)
    relion_2d.relion_star(folder, SIZE, PIXEL, ctf_columns(truth, every) if FLAGS.ctf else None)
    hinge = np.where(truth["junk"], np.nan,
                     hinges()[np.minimum(truth["map"], FLAGS.conformations - 1)])
    np.savez(os.path.join(folder, "truth.npz"), hinge=hinge, **truth)
    good = ~truth["junk"]
    measured = float(clean[good].reshape(good.sum(), -1).var(axis=1).mean()
                     / (noisy - clean)[good].reshape(good.sum(), -1).var(axis=1).mean())
    made = {**stack_settings(), "white_noise": sigma, "measured_snr": measured,
            "view_counts": np.bincount(truth["view"], minlength=FLAGS.views).tolist(),
            "junk_particles": int(truth["junk"].sum())}
    write_text(os.path.join(folder, STACK_FILE), json.dumps(made))
    return made


# The two sides


def run_relion_side(folder: str) -> dict:
    out = os.path.join(folder, f"Class2D_relion_k{classes()}")  # a stack is run with several K
    truth = np.load(os.path.join(folder, "truth.npz"))
    ctf = ctf_columns(truth, np.arange(len(truth["view"]))) if FLAGS.ctf else None
    _, _, seconds, averages, failures = relion_2d.run_relion(
        folder, out, SIZE, PIXEL, FLAGS.relion_iterations, classes(), threads=2, ctf=ctf,
        offset_range=FLAGS.relion_offset_range, offset_step=FLAGS.relion_offset_step)
    return {"seconds": seconds, "failures": failures,
            "star": averages.replace("_classes.mrcs", "_data.star"),
            "command": " ".join(relion_2d.command(
                folder, out, SIZE, PIXEL, FLAGS.relion_iterations, classes(), 2, None, ctf,
                FLAGS.relion_offset_range, FLAGS.relion_offset_step)).replace(
                    folder + "/", "")}


def run_ours(folder: str, seed: int) -> dict:
    k = classes()  # each K's runs, logs and outputs apart: a stack is run with several
    runs, tag, ours = os.path.join(folder, "runs"), f"picked_seed{seed}_k{k}", f"Ours_k{k}"
    train = [sys.executable, "-m", "rotinv_tf.train",
             f"--flagfile={driver.STACK_CONFIG}",
             "--star=relion.star", f"--frame_classes={k}", f"--seed={seed}",
             f"--name={tag}", f"--model_dir={runs}/{tag}", f"--export_dir={runs}/saved_models",
             f"--data_dir={runs}/tfds", *FLAGS.ours_flags]
    train_s = timed(folder, train, f"train_k{k}.log")
    saved_model = sorted(glob.glob(os.path.join(runs, "saved_models", tag, "*")))[-1]
    canonicalize = [sys.executable, "-m", "rotinv_tf.canonicalize",
                    f"--saved_model={saved_model}", "--input=relion.star",
                    f"--output={ours}/canonical.mrcs", f"--star={ours}/run_data.star"]
    canonicalize_s = timed(folder, canonicalize, f"canonicalize_k{k}.log")
    return {"seconds": train_s + canonicalize_s, "train_s": train_s,
            "canonicalize_s": canonicalize_s, "star": os.path.join(folder, ours, "run_data.star"),
            "saved_model": saved_model,
            "command": f"{shown(train, folder)} && {shown(canonicalize, folder)}"}


# Scores


def read_poses(path: str, count: int) -> dict[str, np.ndarray | None]:
    """A STAR's particles in stack order: psi [B] radians, origins [B, 2] pixels (None when the
    STAR has none), classes [B] and log-likelihood contributions [B] (None when absent)."""
    table = star.particles_block(star.read_star(path), path)
    order = star.image_positions(table, path)[1]

    def column(*names: str) -> np.ndarray | None:
        if not all(n in table.columns for n in names):
            return None
        values = np.zeros((count, len(names)))
        values[order] = np.array([table.column(n) for n in names], np.float64).T
        return values[:, 0] if len(names) == 1 else values

    origins = column(*star.ORIGIN_COLUMNS)
    return {"psi": np.radians(column(star.ANGLE_PSI)),
            "origins": None if origins is None else origins / PIXEL,
            "classes": column(star.CLASS_NUMBER), "log_likelihood": column(star.LOG_LIKELIHOOD)}


def origin_errors(truth: dict, origins: np.ndarray) -> dict:
    """RMS origin error (pixels) of the good particles, raw and after one translation per true
    view in its own frame (module docstring; either sense of turning, whichever fits better)."""
    good = ~truth["junk"]
    error = (origins - truth["origin"])[good]
    fitted = error.copy()
    psi, views = np.radians(truth["psi"][good]), truth["view"][good]
    for view in np.unique(truth["view"]):
        members = views == view
        best = None
        for sense in (1.0, -1.0):
            c, s = np.cos(sense * psi[members]), np.sin(sense * psi[members])
            # error ≈ R(±psi) d: d = mean of R(∓psi) error.
            local = np.stack([c * error[members, 0] + s * error[members, 1],
                              -s * error[members, 0] + c * error[members, 1]], axis=1)
            d = local.mean(axis=0)
            residual = error[members] - np.stack([c * d[0] - s * d[1], s * d[0] + c * d[1]], 1)
            if best is None or (residual ** 2).sum() < (best ** 2).sum():
                best = residual
        fitted[members] = best
    rms = lambda e: float(np.sqrt((e ** 2).sum(axis=1).mean()))  # noqa: E731
    return {"origin_rms_px": rms(error), "origin_rms_per_view_px": rms(fitted)}


def junk_found(truth: dict, poses: dict) -> dict:
    """Shares of the junk particles in the lowest decile of log-likelihood contribution, in a
    class whose majority is junk, and in either."""
    junk = truth["junk"]
    if not junk.any() or poses["log_likelihood"] is None:
        return {}
    loglik, classes = poses["log_likelihood"], poses["classes"]
    low = loglik <= np.percentile(loglik, 10)
    junk_classes = [k for k in np.unique(classes) if junk[classes == k].mean() > 0.5]
    in_junk_class = np.isin(classes, junk_classes)
    share = lambda mask: float(mask[junk].mean())  # noqa: E731
    return {"junk_lowest_decile": share(low), "junk_in_junk_class": share(in_junk_class),
            "junk_found": share(low | in_junk_class)}


def score(folder: str, path: str) -> dict:
    truth = dict(np.load(os.path.join(folder, "truth.npz")))
    poses = read_poses(path, len(truth["view"]))
    good = ~truth["junk"]
    errors = frame_aligned_errors_deg(np.radians(truth["psi"][good]), poses["psi"][good],
                                      truth["view"][good])
    origins = poses["origins"]
    return {**psi_error_summary(errors), "origins_written": origins is not None,
            **origin_errors(truth, np.zeros_like(truth["origin"]) if origins is None
                            else origins), **junk_found(truth, poses)}


def latent_probes(folder: str, saved_model: str) -> dict:
    """What the served latent (`encode`'s, each particle with its CTF from relion.star) carries
    of the defocus and of the hinge, by held-out linear and 10-NN probes (R²; junk left out), and
    the psi error of the network's own angle (`network_angle`: the encoder's θ̂ of the particle
    re-centred, what training teaches it to predict) beside the frame's."""
    truth = dict(np.load(os.path.join(folder, "truth.npz")))
    stack = ParticleStack(os.path.join(folder, "particles.mrcs"),
                          os.path.join(folder, "relion.star"))
    model = load_serving_model(saved_model)
    images = read_stack(os.path.join(folder, "particles.mrcs"))
    served = [model.predict(images[i:i + 256], None if stack.ctf is None else
                            {name: value[i:i + 256] for name, value in stack.ctf.items()})
              for i in range(0, len(images), 256)]
    latent = np.concatenate([out["latent"] for out in served])
    good = ~truth["junk"]
    found = {}
    if "network_angle" in served[0]:
        network = np.concatenate([out["network_angle"] for out in served])
        found["network_psi"] = psi_error_summary(frame_aligned_errors_deg(
            np.radians(truth["psi"][good]), network[good], truth["view"][good]))
    targets = {"defocus": 0.5 * (truth["defocus_u"] + truth["defocus_v"]),
               "hinge": truth["map"].astype(np.float64)}
    for name, target in targets.items():
        if np.ptp(target[good]) > 0 and (name != "defocus" or stack.ctf is not None):
            found[f"{name}_r2_linear"] = probe_r2(latent[good], target[good])
            found[f"{name}_r2_knn"] = knn_r2(latent[good], target[good])
    return found


# Report


def markdown(report: dict) -> str:
    r = report
    lines = [f"# Stacks as picked, projected by RELION: seed {r['seed']}, SNR {r['snr']:g}", "",
             f"{r['num_particles']} particles, {SIZE}x{SIZE}, {PIXEL:g} Å, {r['conformations']} "
             f"hinge conformations x {views_text(r['views'], r['spread'])}, psi uniform, "
             f"picker offsets σ "
             f"{r['offset_sigma']:g} px "
             f"(≤ {r['max_offset']:g} px), "
             + (f"CTF per particle (defocus {DEFOCUS_RANGE[0] / 1e4:g}-"
                f"{DEFOCUS_RANGE[1] / 1e4:g} µm, astigmatic)" if r["ctf"] else "no CTF")
             + f"; white noise σ {r['white_noise']:.4g} (measured SNR {r['measured_snr']:.3f})"
             + (f"; {r['junk_particles']} junk particles ({100 * r['junk']:g}%: noise-only "
                "boxes and another molecule)" if r["junk"] else "")
             + f"; K = {r['classes']} on both sides. Psi error (of the particles that are not "
             "junk) after one rotation per true view; origin error raw and after one "
             "translation per view in its frame. Whole processes, timed on this machine (a ratio "
             "only between the sides of one run).", "",
             "| side (what produced it) | psi MAE (°) | psi median (°) | > 15° (%) "
             "| origin RMS (px) | origin RMS, one offset per view (px) | wall (s) "
             + ("| junk in lowest log-likelihood decile / a junk class / either (%) " if r["junk"]
                else "") + "|",
             "| --- " * (8 if r["junk"] else 7) + "|"]
    for name, side in r["sides"].items():
        s = side["scores"]
        origins = (f"{s['origin_rms_px']:.2f} | {s['origin_rms_per_view_px']:.2f}"
                   if s["origins_written"] else "not written | -")
        junk = (f" {100 * s['junk_lowest_decile']:.1f} / {100 * s['junk_in_junk_class']:.1f} / "
                f"{100 * s['junk_found']:.1f} |" if "junk_found" in s else
                " - |" if r["junk"] else "")
        lines.append(f"| {side['label']} | {s['psi_mae_deg']:.2f} | {s['psi_median_deg']:.2f} | "
                     f"{s['psi_over_15_percent']:.1f} | {origins} | {side['seconds']:.0f} |"
                     + junk)
    if "zero_origins" in r:
        z = r["zero_origins"]
        lines.append(f"| origins left at 0 (trivial) | - | - | - | {z['origin_rms_px']:.2f} | "
                     f"{z['origin_rms_per_view_px']:.2f} | - |" + (" - |" if r["junk"] else ""))
    probes = r["sides"].get("ours", {}).get("latent_probes")
    if probes:
        lines += ["", "Ours' served latent (`encode`: the encoder's, of each particle turned into "
                  "its frame), held-out R² (5 folds) of a linear / 10-NN read-out: "
                  + "; ".join(f"{name} {probes[f'{name}_r2_linear']:.3f} / "
                              f"{probes[f'{name}_r2_knn']:.3f}"
                              for name in ("defocus", "hinge") if f"{name}_r2_linear" in probes)
                  + " (defocus should be near 0)."]
        if "network_psi" in probes:
            n = probes["network_psi"]
            lines += ["", f"The network's own angle (the encoder's θ̂, served as `network_angle`; "
                      f"ours' row is the EM frame's, refined): psi MAE {n['psi_mae_deg']:.2f}°, "
                      f"median {n['psi_median_deg']:.2f}°, > 15° {n['psi_over_15_percent']:.1f}%."]
    lines += ["", "Commands:", ""]
    lines += [f"- {side['label']}: `{side['command']}`" for side in r["sides"].values()]
    for name, side in r["sides"].items():
        if side.get("failures"):
            lines.append(f"- {name} failed first: " + "; ".join(side["failures"]))
    return "\n".join(lines) + "\n"


LABELS = {"relion": "RELION 2D (--ctf, offset search)",
          "ours": "ours: EM frame + refinement, README configuration"}


def main(argv: list[str]) -> None:
    del argv
    driver.check_choices("sides", FLAGS.sides, LABELS)
    folder = os.path.join(FLAGS.work_dir, f"views{FLAGS.views}_snr{FLAGS.snr:g}_junk{FLAGS.junk:g}"
                                          f"_seed{FLAGS.seed}")
    made = None
    if FLAGS.reuse_stack and os.path.exists(os.path.join(folder, STACK_FILE)):
        with open(os.path.join(folder, STACK_FILE)) as f:
            made = json.load(f)
        if any(made[name] != value for name, value in stack_settings().items()):
            cli.fail(f"{folder}: its stack was made with other settings: {made}")
    made = made or make_stack(folder, FLAGS.seed)
    print(json.dumps(made), flush=True)
    sides = {}
    for name in FLAGS.sides:
        side = run_relion_side(folder) if name == "relion" else run_ours(folder, FLAGS.seed)
        label = LABELS[name] + (f" + {' '.join(FLAGS.ours_flags)}"
                                if name == "ours" and FLAGS.ours_flags else "")
        sides[name] = {**side, "label": label, "scores": score(folder, side["star"])}
        if name == "ours":
            sides[name]["latent_probes"] = latent_probes(folder, side["saved_model"])
        print(json.dumps(sides[name]), flush=True)
    truth = dict(np.load(os.path.join(folder, "truth.npz")))
    report = {"seed": FLAGS.seed, "snr": FLAGS.snr, "classes": classes(), "junk": FLAGS.junk,
              **made, "sides": sides,
              "zero_origins": origin_errors(truth, np.zeros_like(truth["origin"]))}
    name = (f"picked_views{FLAGS.views}_snr{FLAGS.snr:g}_k{classes()}_junk{FLAGS.junk:g}"
            f"_seed{FLAGS.seed}")
    write_results(FLAGS.results or name, report, markdown(report))


if __name__ == "__main__":
    driver.start(main, define_flags)

"""Memory at scale: `python -m benchmarks.memory` (details in benchmarks/README.md).

Generates particle stacks by streaming (an asymmetric two-blob particle at a uniform random angle
plus Gaussian noise, float32, `--image_size` square), trains `configs/stack.cfg` for one epoch on
each of `--train_sizes` (`--dataset=particle_stack`, no STAR file: the learned frame), and
canonicalizes each of `--canonicalize_sizes` with the SavedModel of the first training run (the
CLI's defaults: refined angles). Every command runs as a child process whose peak anonymous memory
(`RssAnon` in /proc/<pid>/status, sampled every `--sample_seconds`) is reported: memory-mapped
stacks count as file pages, not `RssAnon`, so a command that streams keeps it flat as the stack
grows. Particles/s are the commands' own: canonicalize's streaming rate (after loading the model)
and training's `train_images_per_second`; wall times include start-up. With `--inputs=star` the
runs go through the stack's STAR file (true angles, ten RELION-like columns): training with
`--star`, canonicalize with `--input=<.star>`; both parse the STAR file whole before streaming.

Writes `benchmarks/results/memory.{md,json}` (`memory_quick.*` for `--quick`, whose sizes are a
smoke test; `--code=/other/checkout --results_name=...` measures another version of the code).
"""
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
from absl import flags

from benchmarks import driver
from benchmarks.driver import REPO
from benchmarks.report_files import write_results
from data_pipeline.formats.mrc import StackWriter
from data_pipeline.formats.star import StarBlock, StarWriter, angle_to_psi_degrees

FLAGS = flags.FLAGS
CHUNK = 10_000


def define_flags() -> None:
    """The driver's flags."""
    flags.DEFINE_string("work_dir", "/tmp/rotinv_memory", "Stacks, runs, SavedModel and outputs.")
    flags.DEFINE_list("canonicalize_sizes", ["20000", "1000000"], "Particles per canonicalize "
                      "run.")
    flags.DEFINE_list("train_sizes", ["20000", "200000"], "Particles per training run.")
    flags.DEFINE_integer("image_size", 16, "Box size of the generated stacks.")
    flags.DEFINE_integer("filters", 8, "Network width of the trained model (--filters, "
                         "--critic_filters).")
    flags.DEFINE_integer("batch_size", 256, "Training and canonicalize batch size.")
    flags.DEFINE_float("sample_seconds", 0.05, "RssAnon sampling interval.")
    flags.DEFINE_string("code", REPO, "Checkout whose code the commands run (PYTHONPATH): "
                        "another one measures code before a change.")
    flags.DEFINE_list("inputs", ["stack"], "What each command is given: `stack` (the .mrcs "
                      "alone), `star` (the stack's STAR file too: train --star, canonicalize "
                      "--input=<.star>; both read it whole).")
    flags.DEFINE_string("results_name", "memory", "Writes benchmarks/results/"
                        "<results_name>.{md,json}.")
    flags.DEFINE_boolean("quick", False, "Smoke run: 2,000 and 8,000 particles (results name "
                         "memory_quick).")


def particles(rng: np.random.Generator, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` noisy images [count, size, size] of a two-blob particle, and their random angles
    (`observed = rotate(canonical, angle)`)."""
    angles = rng.uniform(-np.pi, np.pi, (count, 1, 1))
    yy, xx = np.mgrid[:size, :size].astype(np.float32) - (size - 1) / 2
    image = np.zeros((count, size, size), np.float32)
    blobs = [((-size / 5, 1.0), 1.0, size / 4), ((1.0, size / 5), 0.5, size / 6)]
    for (y, x), weight, width in blobs:  # centre (row, column) at angle 0, height, width
        cy = y * np.cos(angles) - x * np.sin(angles)
        cx = y * np.sin(angles) + x * np.cos(angles)
        image += weight * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / width)
    return image + rng.normal(0.0, 0.3, image.shape).astype(np.float32), angles[:, 0, 0]


def star_rows(start: int, angles: np.ndarray, stack_name: str) -> list[list[str]]:
    """STAR rows of particles start, start+1, ...: the columns of `STAR_COLUMNS`."""
    psi = angle_to_psi_degrees(angles.astype(np.float64))
    return [[f"{start + i + 1:06d}@{stack_name}", f"{p:.6f}", f"mic{(start + i) // 200:05d}.mrc",
             "15000.0", "14800.0", "30.0", f"{(start + i) % 200 * 10:.1f}", "512.0", "1", "1"]
            for i, p in enumerate(psi)]


STAR_COLUMNS = ["rlnImageName", "rlnAnglePsi", "rlnMicrographName", "rlnDefocusU",
                "rlnDefocusV", "rlnDefocusAngle", "rlnCoordinateX", "rlnCoordinateY",
                "rlnClassNumber", "rlnOpticsGroup"]


def stack(count: int) -> tuple[str, str]:
    """The stack of `count` particles and its STAR file (true angles, RELION-like columns),
    written once, `CHUNK` at a time."""
    path = os.path.join(FLAGS.work_dir, f"stack_{count}_{FLAGS.image_size}")
    mrcs, star = path + ".mrcs", path + ".star"
    if not (os.path.exists(mrcs) and os.path.exists(star)):
        rng = np.random.default_rng(count)
        optics = StarBlock(["rlnOpticsGroup", "rlnImagePixelSize", "rlnImageSize"],
                           [["1", "1.000000", str(FLAGS.image_size)]])
        with StackWriter(mrcs, count, FLAGS.image_size, FLAGS.image_size, 1.0) as writer, \
                StarWriter(star) as table:
            table.write_block("optics", optics)
            table.begin_loop("particles", STAR_COLUMNS)
            for start in range(0, count, CHUNK):
                images, angles = particles(rng, min(CHUNK, count - start), FLAGS.image_size)
                writer.write(start, images)
                table.write_rows(star_rows(start, angles, os.path.basename(mrcs)))
    return mrcs, star


def measure(args: list[str], log: str) -> dict:
    """Runs `python -m args...`; its wall time, peak RssAnon (MB) and output (in `log`)."""
    env = {**os.environ, "PYTHONPATH": FLAGS.code, "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    peak_kb = 0
    start = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-m", *args], cwd=FLAGS.code, env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
        while child.poll() is None:
            try:
                with open(f"/proc/{child.pid}/status") as status:
                    match = re.search(r"^RssAnon:\s+(\d+) kB", status.read(), re.MULTILINE)
                peak_kb = max(peak_kb, int(match.group(1))) if match else peak_kb
            except OSError:  # exited between poll and open
                pass
            time.sleep(FLAGS.sample_seconds)
    seconds = time.perf_counter() - start
    with open(log) as f:
        text = f.read()
    if child.returncode:
        raise RuntimeError(f"{' '.join(args)} exited {child.returncode}:\n{text[-3000:]}")
    return {"seconds": seconds, "peak_rss_anon_mb": peak_kb / 1024, "output": text}


def train(count: int, star: bool) -> dict:
    """One epoch on the stack alone (the learned frame) or, with `star`, with its STAR angles."""
    mrcs, star_path = stack(count)
    name = f"memory_{count}" + ("_star" if star else "")
    run = measure(["rotinv_tf.train", "--flagfile=configs/stack.cfg", f"--stack={mrcs}",
                   *([f"--star={star_path}"] if star else []),
                   "--epochs=1", f"--batch_size={FLAGS.batch_size}", f"--filters={FLAGS.filters}",
                   f"--critic_filters={FLAGS.filters}", f"--name={name}",
                   f"--model_dir={FLAGS.work_dir}/runs/{name}",
                   f"--export_dir={FLAGS.work_dir}/saved_models"],
                  os.path.join(FLAGS.work_dir, f"train_{name}.log"))
    versions = os.listdir(os.path.join(FLAGS.work_dir, "saved_models", name))
    run["saved_model"] = os.path.join(FLAGS.work_dir, "saved_models", name,
                                      max(versions, key=int))
    rate = re.search(r"^\s*train_images_per_second\s+([\d.]+)", run["output"], re.MULTILINE)
    run["particles_per_second"] = float(rate.group(1))
    return run


def canonicalize(count: int, saved_model: str, star: bool) -> dict:
    """Canonicalizes the stack, given as the .mrcs or, with `star`, as its STAR file."""
    mrcs, star_path = stack(count)
    out = os.path.join(FLAGS.work_dir, f"canonical_{count}" + ("_star" if star else ""))
    run = measure(["rotinv_tf.canonicalize", f"--saved_model={saved_model}",
                   f"--input={star_path if star else mrcs}", f"--output={out}.mrcs",
                   f"--star={out}.star", f"--batch_size={FLAGS.batch_size}",
                   "--voltage=300", "--spherical_aberration=2.7", "--amplitude_contrast=0.1"],
                  f"{out}.log")
    summary = re.search(r"canonicalized (\d+) particles in ([\d.]+) s \((\d+) particles/s\)",
                        run["output"])
    run["particles_per_second"] = float(summary.group(3))
    os.remove(f"{out}.mrcs")  # GBs at a million particles
    os.remove(f"{out}.star")
    return run


def main(argv: list[str]) -> None:
    del argv
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    quick = ["2000", "8000"]
    sizes = {"train": [int(n) for n in (quick if FLAGS.quick else FLAGS.train_sizes)],
             "canonicalize": [int(n) for n in (quick if FLAGS.quick else
                                               FLAGS.canonicalize_sizes)]}
    rows, saved_model = [], None
    for command in ("train", "canonicalize"):
        for star in [name == "star" for name in FLAGS.inputs]:
            for count in sizes[command]:
                label = command + (" (STAR input)" if star else "")
                print(f"{label}: {count} particles ...", flush=True)
                run = (train(count, star) if command == "train" else
                       canonicalize(count, saved_model, star))
                if not rows:
                    saved_model = run["saved_model"]  # the first training run's
                rows.append({"command": label, "particles": count,
                             **{k: v for k, v in run.items()
                                if k not in ("output", "saved_model")}})
                print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    report = {"image_size": FLAGS.image_size, "filters": FLAGS.filters,
              "batch_size": FLAGS.batch_size, "code": FLAGS.code, "load_average_end": load,
              "rows": rows}
    name = "memory_quick" if FLAGS.quick else FLAGS.results_name
    write_results(name, report, markdown(report))


def markdown(report: dict) -> str:
    lines = [f"Memory at scale (`python -m benchmarks.memory`): {report['image_size']}x"
             f"{report['image_size']} float32 particles, network width {report['filters']}, "
             f"batch {report['batch_size']}; 1-minute load average at the end "
             f"{report['load_average_end'][0]:.1f}.", "",
             "| command | particles | wall (s) | particles/s | peak RssAnon (MB) | vs smallest |",
             "| --- | --- | --- | --- | --- | --- |"]
    first = {}
    for row in report["rows"]:
        base = first.setdefault(row["command"], row["peak_rss_anon_mb"])
        lines.append(f"| {row['command']} | {row['particles']:,} | {row['seconds']:.0f} | "
                     f"{row['particles_per_second']:,.0f} | {row['peak_rss_anon_mb']:.0f} | "
                     f"{100 * (row['peak_rss_anon_mb'] / base - 1):+.1f}% |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    driver.start(main, define_flags)

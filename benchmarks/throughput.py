"""Throughput of the input pipeline, the training step and SavedModel inference, in images/s.

    python benchmarks/throughput.py [--image_size=40] [--batch_size=256] [--steps=8] [--quick]
        [--widths=32:16,16:16] [--data_dir=...] [--output=benchmarks/results/throughput.md]

Every number is the median images/s over `--windows` timed windows, after warm-up:
1. the input pipeline alone: the simulated set's TFRecords read, normalised and batched as
   `input_fn` does before its cache is filled, so every window reads and parses TFRecords (TFDS
   builds a small simulated set once in --data_dir, a temporary folder by default);
2. the full training step of `RotationInvariantAutoencoder` (on-device rotation, encoder, decoder,
   the three generator losses, the critic update every 4th step), built and compiled by
   `rotinv_tf.training.build_model` as a real run is, at 28x28 and 40x40 on one in-memory batch,
   eager vs `tf.function` vs XLA (`jit_compile`), and on a GPU in float32 vs mixed precision;
3. inference through an exported SavedModel's `serving_default` signature.
Training steps and inference are timed for each of `--widths`: the configs' default (32:16) and a
narrow one (16:16) whose cost in quality is measured in benchmarks/README.md.
Windows hold a multiple of the decoder:critic ratio of steps, so each has the same share of critic
updates. Writes a Markdown table (atomically) and prints it.
"""
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from data_pipeline import cli, datasets  # noqa: E402
from data_pipeline.atomic import write_text  # noqa: E402
from data_pipeline.preprocessing import Normalization  # noqa: E402
from rotinv_tf import training  # noqa: E402
from rotinv_tf.config import Config  # noqa: E402
from rotinv_tf.export import export_saved_model  # noqa: E402

# The authors' PyTorch implementation on this 2-core machine (torch 2.13 CPU, 2 threads), images/s.
PYTORCH_CPU = {("train", 40): 540.0, ("train", 28): 1010.0, ("inference", 40): 2500.0}
TARGET_FACTOR = 2.0
TRAIN_SIZES = (28, 40)
MODES = ("eager", "function", "xla")

FLAGS = flags.FLAGS
flags.DEFINE_integer("image_size", 40, "Image size of the input-pipeline and inference rows.")
flags.DEFINE_integer("batch_size", 256, "Training batch size.")
flags.DEFINE_integer("inference_batch_size", 1024, "SavedModel inference batch size.")
flags.DEFINE_integer("latent_dim", 32, "Latent size (the paper's).")
flags.DEFINE_list("widths", ["32:16", "16:16"],
                  "Network widths to time, each FILTERS:CRITIC_FILTERS (--filters and "
                  "--critic_filters); the first gets every mode, the others tf.function only.")
flags.DEFINE_integer("steps", 8, "Training steps per timed window (tf.function and XLA).")
flags.DEFINE_integer("eager_steps", 4, "Training steps per timed window when eager.")
flags.DEFINE_integer("windows", 5, "Timed windows per row; the median is reported.")
flags.DEFINE_list("modes", list(MODES), "Training-step settings to time.")
flags.DEFINE_list("precisions", None,
                  "Dtype policies to time (default: float32, plus mixed_float16 and mixed_bfloat16 "
                  "on a GPU); mixed policies with tf.function only.")
flags.DEFINE_string("data_dir", None, "TFDS folder for the simulated set (default: a temp folder).")
flags.DEFINE_string("output", None, "Markdown report (default benchmarks/results/throughput.md, "
                    "throughput_quick.md with --quick).")
flags.DEFINE_boolean("quick", False, "Smoke run: 2 short windows, no XLA, 28x28 training only.")

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def timed_rate(run: Callable[[], object], images_per_call: int, calls_per_window: int,
               windows: int, warmup_calls: int) -> list[float]:
    """images/s of each timed window of `calls_per_window` calls to `run`, after warm-up.

    `run` returns something whose `.numpy()` (or numpy conversion) waits for the work to finish;
    it is fetched at the end of each window.
    """
    for _ in range(warmup_calls):
        np.asarray(run())
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(calls_per_window):
            out = run()
        np.asarray(out)
        rates.append(calls_per_window * images_per_call / (time.perf_counter() - start))
    return rates


def _row(what: str, setting: str, size: int, batch: int, rates: list[float], steps: int,
         reference: tuple[str, int] | None = None) -> dict:
    return {"what": what, "setting": setting, "size": size, "batch": batch,
            "median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "windows": f"{len(rates)} x {steps}", "reference": PYTORCH_CPU.get(reference)}


def bench_input_pipeline(data_dir: str, size: int, batch: int, windows: int, quick: bool) -> dict:
    """Batches/s of reading and batching the TFRecords of a small simulated set (built once), as
    the training pipeline's first epoch does before its in-memory cache is filled."""
    per_conformation = 100 if quick else 500
    simulation = {"image_size": size, "num_conformations": 10,
                  "images_per_conformation": per_conformation, "test_conformations": 2}
    dataset, normalization = datasets.load("simulated_particles", "train", data_dir,
                                           simulation=simulation)
    dataset = dataset.map(lambda e: normalization.normalize(e["image"]),
                          num_parallel_calls=tf.data.AUTOTUNE)
    iterator = iter(dataset.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE).repeat())
    calls = max(1, 8 * per_conformation // batch)  # about one pass over the 8 training classes
    rates = timed_rate(lambda: next(iterator), batch, calls, windows, warmup_calls=calls)
    return _row("input pipeline (TFRecords, uncached)", "tf.data AUTOTUNE", size, batch, rates,
                calls)


def parse_widths(values: list[str]) -> list[tuple[int, int]]:
    """["32:16", ...] -> [(filters, critic_filters), ...]."""
    widths = []
    for value in values:
        parts = value.split(":")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            cli.fail(f"--widths: {value!r} is not FILTERS:CRITIC_FILTERS (two positive integers)")
        widths.append((int(parts[0]), int(parts[1])))
    return widths


def _width_text(width: tuple[int, int]) -> str:
    return f"widths {width[0]}/{width[1]}"


def _train_model(size: int, mode: str, precision: str, width: tuple[int, int]) -> keras.Model:
    keras.mixed_precision.set_global_policy(precision)
    config = Config().replace(latent_dim=FLAGS.latent_dim, filters=width[0],
                              critic_filters=width[1], jit_compile=mode == "xla",
                              mixed_precision=precision)
    model = training.build_model(config, size)
    model.run_eagerly = mode == "eager"
    return model


def bench_train_step(size: int, mode: str, precision: str, width: tuple[int, int], windows: int,
                     steps: int) -> dict:
    """images/s of Keras' own train function on one in-memory batch of canonical images."""
    keras.utils.set_random_seed(0)
    model = _train_model(size, mode, precision, width)
    images = np.random.default_rng(0).random((FLAGS.batch_size, size, size, 1), np.float32)
    iterator = iter(tf.data.Dataset.from_tensors({"image": images}).repeat())
    model.make_train_function()
    train_function = model.train_function
    ratio = model.settings.generator_steps_per_critic_step
    steps = max(ratio, steps - steps % ratio)

    def step():
        logs = train_function(iterator)  # an Optional when compiled, the dict itself when eager
        return (logs.get_value() if isinstance(logs, tf.experimental.Optional) else logs)["loss"]

    # One full cycle of the schedule in warm-up: both branches of the critic cond have run.
    rates = timed_rate(step, FLAGS.batch_size, steps, windows, warmup_calls=ratio + 1)
    keras.mixed_precision.set_global_policy("float32")
    setting = {"eager": "eager (run_eagerly)", "function": "tf.function",
               "xla": "tf.function + XLA (jit_compile)"}[mode]
    return _row(f"training step ({ratio}:1)", f"{setting}, {precision}, {_width_text(width)}",
                size, FLAGS.batch_size, rates, steps, ("train", size))


def bench_inference(size: int, width: tuple[int, int], windows: int, quick: bool) -> dict:
    """images/s of the exported `serving_default` signature, loaded with tf.saved_model.load."""
    keras.utils.set_random_seed(0)
    model = _train_model(size, "function", "float32", width)
    normalization = Normalization(mean=0.0, std=1.0, min=0.0, max=1.0)
    batch = FLAGS.inference_batch_size
    with tempfile.TemporaryDirectory() as export_base:
        path = export_saved_model(model, normalization, size, export_base, "throughput")
        serve = tf.saved_model.load(path).signatures["serving_default"]
        images = tf.constant(np.random.default_rng(1).random((batch, size, size, 1), np.float32))
        calls = 2 if quick else 8
        rates = timed_rate(lambda: serve(images=images)["canonical_image"], batch, calls, windows,
                           warmup_calls=2)
    return _row("inference (SavedModel serving_default)", f"float32, {_width_text(width)}", size,
                batch, rates, calls, ("inference", size))


def _device() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} x GPU {details.get('device_name', gpus[0].name)}"
    return f"CPU ({platform.processor() or platform.machine()}), no GPU"


def report(rows: list[dict], header: dict[str, str]) -> str:
    """The Markdown report: machine and settings, then one table row per measurement."""
    lines = ["# Throughput", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += ["", "images/s: median over the timed windows (min-max in brackets). PyTorch: the "
              "authors' implementation on this 2-core machine (torch 2.13 CPU, 2 threads); "
              f"target = {TARGET_FACTOR:g}x PyTorch.", "",
              "| what | setting | size | batch | images/s | windows x steps | PyTorch | target | "
              "vs target |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ref = r["reference"]
        target = ref * TARGET_FACTOR if ref else None
        versus = f"{r['median'] / target:.2f}x" if target else "-"
        lines.append(
            f"| {r['what']} | {r['setting']} | {r['size']}x{r['size']} | {r['batch']} | "
            f"{r['median']:,.0f} ({r['min']:,.0f}-{r['max']:,.0f}) | {r['windows']} | "
            f"{f'{ref:,.0f}' if ref else '-'} | {f'{target:,.0f}' if target else '-'} | "
            f"{versus} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    started = time.perf_counter()
    quick = FLAGS.quick
    windows = 2 if quick else FLAGS.windows
    steps = 4 if quick else FLAGS.steps
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    precisions = FLAGS.precisions or (
        ["float32", "mixed_float16", "mixed_bfloat16"] if has_gpu else ["float32"])
    modes = [m for m in FLAGS.modes if not (quick and m == "xla" and not FLAGS["modes"].present)]
    unknown = set(modes) - set(MODES)
    if unknown:
        cli.fail(f"unknown --modes {', '.join(sorted(unknown))}; expected {', '.join(MODES)}")
    widths = parse_widths(FLAGS.widths)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = FLAGS.data_dir or os.path.join(scratch, "tfds")
        rows.append(bench_input_pipeline(data_dir, FLAGS.image_size, FLAGS.batch_size, windows,
                                         quick))
        print(rows[-1], flush=True)
    for size in (TRAIN_SIZES[:1] if quick else TRAIN_SIZES):
        for width in widths:
            for precision in precisions:
                for mode in modes:
                    if mode != "function" and (precision != "float32" or width != widths[0]):
                        continue  # eager and XLA once: slow to run, slow to compile
                    mode_steps = min(steps, FLAGS.eager_steps) if mode == "eager" else steps
                    rows.append(bench_train_step(size, mode, precision, width, windows,
                                                 mode_steps))
                    print(rows[-1], flush=True)
    for width in widths:
        rows.append(bench_inference(FLAGS.image_size, width, windows, quick))
    load_after = os.getloadavg()
    header = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": _device(),
        "CPU cores": str(os.cpu_count()),
        "TensorFlow / Keras": f"{tf.__version__} / {keras.__version__}",
        "threads (TF intra-op / inter-op, 0 = TF default)":
            f"{tf.config.threading.get_intra_op_parallelism_threads()} / "
            f"{tf.config.threading.get_inter_op_parallelism_threads()}",
        "load average (1 min) before / after": f"{load_before[0]:.2f} / {load_after[0]:.2f}",
        "settings": (f"latent {FLAGS.latent_dim}, widths = encoder-decoder filters / critic "
                     f"filters, Adam (weight decay 1e-5), generator:critic 4:1, windows {windows}"
                     + (", --quick (smoke run)" if quick else "")),
        "wall time": f"{time.perf_counter() - started:.0f} s",
    }
    text = report(rows, header)
    output = FLAGS.output or os.path.join(
        RESULTS, "throughput_quick.md" if quick else "throughput.md")
    write_text(output, text)
    print(text)
    print(f"Wrote {output}")


if __name__ == "__main__":
    cli.run(main)

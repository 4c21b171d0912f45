"""Throughput of the input pipeline, the training step and SavedModel inference, in images/s, ours
beside the authors' PyTorch step timed in the same run.

    python -m benchmarks.throughput [--architectures=paper,conv] [--modes=function,xla]
        [--precisions=float32,...] [--reference_threads=1,2] [--batch_size=256] [--steps=8]
        [--windows=5] [--widths=32:16] [--intra_op_threads=0] [--inter_op_threads=0]
        [--data_dir=...] [--output=...] [--quick]

Rows, each the median images/s over `--windows` timed windows after warm-up (min and max beside):
1. the input pipeline alone: the simulated set's TFRecords read, parsed, normalised and batched as
   `input_fn` does before its cache is filled (a small simulated set built once in --data_dir);
2. the training step of `RotationInvariantAutoencoder` built by
   `rotinv_tf.training.train_lib.build_model` as a real run is (on-device rotation, encoder, decoder, generator losses, the WGAN-GP critic
   update every 4th step), on one in-memory batch, at 28x28 and 40x40, for each of
   `--architectures`, `--modes` (tf.function, XLA `jit_compile`) and `--precisions`;
3. inference through an exported SavedModel's `serving_default` at `--image_size`, batch 1,024,
   as exported and with its serving function compiled by XLA (`export_saved_model(jit_compile)`).
With torch importable (`pip install .[bench]`), `benchmarks.reference_pytorch` (the authors'
networks and Lightning-0.7 step) is timed for rows 2 and 3 at each of `--reference_threads`, and
the fastest thread count is the reference every ratio is taken against.

All settings of one (what, size) group are built and warmed up first, then timed window by window
in turn (ours, reference, ours, ...), so a change of machine load falls on all of them alike.
Windows hold a multiple of 4 steps, so each has the same share of critic updates.
Writes `results/throughput.{md,json}` (`throughput_quick.*` for --quick) atomically.
"""
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from benchmarks import driver
from benchmarks.report_files import RESULTS
from data_pipeline import cli, datasets
from data_pipeline.atomic import write_text
from data_pipeline.preprocessing import Normalization
from data_pipeline.rotation import rotate
from rotinv_tf.config import Config
from rotinv_tf.models.networks import ARCHITECTURES, build_networks, multiply_adds
from rotinv_tf.serving.export import export_saved_model
from rotinv_tf.training import train_lib

try:
    import torch

    from benchmarks import reference_pytorch
except ImportError:  # the `bench` extra is not installed: our rows only
    torch = None

TRAIN_SIZES = (28, 40)
MODES = ("function", "xla")
TRAIN, INFERENCE = "training step (4:1)", "inference (SavedModel serving_default)"
# Targets of issue 12, as multiples of the reference measured in the same run (conv: the default).
TARGETS = {(TRAIN, "paper"): 1.5, (INFERENCE, "paper"): 2.0, (INFERENCE, "conv"): 1.0}

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The driver's flags."""
    flags.DEFINE_integer("image_size", 40, "Image size of the input-pipeline and inference "
                         "rows.")
    flags.DEFINE_integer("batch_size", 256, "Training batch size.")
    flags.DEFINE_integer("inference_batch_size", 1024, "SavedModel inference batch size.")
    flags.DEFINE_integer("latent_dim", 32, "Latent size (the paper's).")
    flags.DEFINE_list("architectures", ["paper", "conv"], "Our architectures to time.")
    flags.DEFINE_list("widths", ["32:16"], "conv architecture widths to time, each "
                      "FILTERS:CRITIC_FILTERS (--filters and --critic_filters).")
    flags.DEFINE_integer("steps", 8, "Training steps (inference calls) per timed window.")
    flags.DEFINE_integer("windows", 5, "Timed windows per row; the median is reported.")
    flags.DEFINE_list("modes", ["function"], f"Training-step settings to time, of {MODES}.")
    flags.DEFINE_list("precisions", ["float32"], "Dtype policies of the training step.")
    flags.DEFINE_list("reference_threads", ["1", "2"], "torch thread counts of the reference.")
    flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow intra-op threads (0: TF's default, "
                         "one per core); inter-op likewise with --inter_op_threads.")
    flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads (0: TF's default).")
    flags.DEFINE_string("data_dir", None, "TFDS folder for the simulated set (default: a temp "
                        "folder).")
    flags.DEFINE_string("output", None, "Markdown report (default benchmarks/results/"
                        "throughput.md, throughput_quick.md with --quick); the JSON goes beside "
                        "it.")
    flags.DEFINE_boolean("quick", False, "Smoke run: 2 short windows, 28x28 training only, a "
                         "small inference batch.")


@dataclass
class Candidate:
    """One row's setting: `run()` does one call of `images` images and returns something whose
    numpy conversion waits for the work; `threads` is set (torch) before each of its windows."""

    row: dict
    run: Callable[[], object]
    images: int
    threads: int | None = None


def _window(candidate: Candidate, calls: int) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process) of one window."""
    if candidate.threads:
        torch.set_num_threads(candidate.threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(calls):
        out = candidate.run()
    np.asarray(out)
    images = calls * candidate.images
    return (images / (time.perf_counter() - start),
            images / max(time.process_time() - cpu_start, 1e-9))


def time_interleaved(candidates: list[Candidate], calls: int, windows: int,
                     warmup_calls: int) -> list[dict]:
    """Warms up every candidate, then times `windows` rounds of one window each, in turn."""
    for candidate in candidates:
        _window(candidate, warmup_calls)
    rates = [[] for _ in candidates]
    for _ in range(windows):
        for candidate, own in zip(candidates, rates):
            own.append(_window(candidate, calls))
    return [{**candidate.row, "images_per_second": _spread([wall for wall, _ in own]),
             "images_per_cpu_second": _spread([cpu for _, cpu in own]),
             "windows": f"{windows} x {calls}"} for candidate, own in zip(candidates, rates)]


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _row(what: str, size: int, framework: str, architecture: str, precision: str,
         setting: str) -> dict:
    return {"what": what, "size": size, "framework": framework, "architecture": architecture,
            "precision": precision, "setting": setting}


def parse_widths(values: list[str]) -> list[tuple[int, int]]:
    """["32:16", ...] -> [(filters, critic_filters), ...]."""
    widths = []
    for value in values:
        parts = value.split(":")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            cli.fail(f"--widths: {value!r} is not FILTERS:CRITIC_FILTERS (two positive integers)")
        widths.append((int(parts[0]), int(parts[1])))
    return widths


def _architectures(widths: list[tuple[int, int]]) -> list[tuple[str, tuple[int, int]]]:
    """(architecture, widths) pairs to time; the paper's has fixed widths."""
    pairs = []
    for architecture in FLAGS.architectures:
        pairs += [(architecture, w) for w in (widths if architecture == "conv" else [(0, 0)])]
    return pairs


def _label(architecture: str, width: tuple[int, int]) -> str:
    return f"conv {width[0]}/{width[1]}" if architecture == "conv" else architecture


def _model(size: int, architecture: str, width: tuple[int, int], jit: bool,
           precision: str = "float32") -> keras.Model:
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(precision)
    config = Config().replace(latent_dim=FLAGS.latent_dim, architecture=architecture,
                              filters=width[0] or 32, critic_filters=width[1] or 16,
                              jit_compile=jit, mixed_precision=precision)
    model = train_lib.build_model(config, size)
    keras.mixed_precision.set_global_policy("float32")
    return model


def _ours_train(size: int, architecture: str, width, mode: str, precision: str) -> Candidate:
    model = _model(size, architecture, width, mode == "xla", precision)
    images = np.random.default_rng(0).random((FLAGS.batch_size, size, size, 1), np.float32)
    iterator = iter(tf.data.Dataset.from_tensors({"image": images}).repeat())
    model.make_train_function()
    train_function = model.train_function

    def step():
        logs = train_function(iterator)  # an Optional when compiled
        return (logs.get_value() if isinstance(logs, tf.experimental.Optional) else logs)["loss"]

    setting = {"function": "tf.function", "xla": "tf.function + XLA (jit_compile)"}[mode]
    return Candidate(_row(TRAIN, size, "tensorflow", _label(architecture, width), precision,
                          setting), step, FLAGS.batch_size)


def _reference_train(size: int, threads: int) -> Candidate:
    model = reference_pytorch.ReferenceModel(size, FLAGS.latent_dim)
    rng = np.random.default_rng(0)
    canonical = torch.from_numpy(rng.random((FLAGS.batch_size, 1, size, size), np.float32))
    angles = torch.from_numpy(rng.uniform(-np.pi, np.pi, FLAGS.batch_size).astype(np.float32))
    observed = torch.from_numpy(rotate(canonical.numpy().transpose(0, 2, 3, 1),
                                       angles.numpy()).numpy().transpose(0, 3, 1, 2).copy())
    counter = iter(range(10**9))
    return Candidate(_row(TRAIN, size, "pytorch", "paper (reference)", "float32",
                          f"Lightning-0.7 step, {threads} thread(s)"),
                     lambda: model.train_step(next(counter), observed, angles, canonical),
                     FLAGS.batch_size, threads)


def _ours_inference(size: int, architecture: str, width, jit: bool, export_base: str,
                    images: np.ndarray) -> Candidate:
    model = _model(size, architecture, width, False)
    normalization = Normalization(mean=0.0, std=1.0, min=0.0, max=1.0)
    path = export_saved_model(model, normalization, size, export_base,
                              f"{architecture}_{width[0]}_{int(jit)}", jit_compile=jit)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    batch = tf.constant(images)
    return Candidate(_row(INFERENCE, size, "tensorflow", _label(architecture, width), "float32",
                          "SavedModel, XLA serving function" if jit else "SavedModel"),
                     lambda: serve(images=batch)["canonical_image"], len(images))


def _reference_inference(size: int, threads: int, images: np.ndarray) -> Candidate:
    model = reference_pytorch.ReferenceModel(size, FLAGS.latent_dim)
    batch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    return Candidate(_row(INFERENCE, size, "pytorch", "paper (reference)", "float32",
                          f"eval mode, inference_mode, {threads} thread(s)"),
                     lambda: model.canonicalize(batch)[0], len(images), threads)


def _with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's median over the group's fastest reference median (same run), and its target."""
    references = [r for r in rows if r["framework"] == "pytorch"]
    for key, ratio in (("images_per_second", "vs_reference"),
                       ("images_per_cpu_second", "vs_reference_per_cpu_second")):
        best = max((r[key]["median"] for r in references), default=None)
        for r in rows:
            r[ratio] = r[key]["median"] / best if best else None
    for r in rows:
        r["target"] = (TARGETS.get((r["what"], r["architecture"].split()[0]))
                       if r["framework"] == "tensorflow" else None)
    return rows


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
    candidate = Candidate(_row("input pipeline (TFRecords, uncached)", size, "tensorflow", "-",
                               "float32", "tf.data AUTOTUNE"), lambda: next(iterator), batch)
    return _with_ratios(time_interleaved([candidate], calls, windows, calls))[0]


def multiply_add_table(sizes: tuple[int, ...], widths) -> list[str]:
    """Markdown rows: forward multiply-adds per image of each network, ours and the reference."""
    lines = ["| architecture | size | encoder | decoder | critic | angle classifier | total |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for size in sizes:
        for architecture, width in _architectures(widths):
            counts = [multiply_adds(m) for m in build_networks(
                architecture, size, FLAGS.latent_dim, width[0] or 32, width[1] or 16)]
            lines.append(f"| ours, {_label(architecture, width)} | {size}x{size} | "
                         + " | ".join(f"{c / 1e6:.2f} M" for c in counts)
                         + f" | - | {sum(counts) / 1e6:.2f} M |")
        if torch is not None:
            model = reference_pytorch.ReferenceModel(size, FLAGS.latent_dim)
            counts = [reference_pytorch.multiply_adds(m, size, FLAGS.latent_dim)
                      for m in model.networks]
            lines.append(f"| PyTorch reference (paper) | {size}x{size} | "
                         + " | ".join(f"{c / 1e6:.2f} M" for c in counts)
                         + f" | {sum(counts) / 1e6:.2f} M |")
    return lines


def _device() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} x GPU {details.get('device_name', gpus[0].name)}"
    return f"CPU ({platform.processor() or platform.machine()}), no GPU"


def _rate(r: dict, key: str = "images_per_second") -> str:
    ips = r[key]
    return f"{ips['median']:,.0f} ({ips['min']:,.0f}-{ips['max']:,.0f})"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value else "-"


def report(rows: list[dict], header: dict[str, str], macs: list[str]) -> str:
    """The Markdown report: machine and settings, then one table row per measurement."""
    lines = ["# Throughput", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += ["", "images/s: median over the timed windows (min-max in brackets); per CPU-s: "
              "images per CPU second of this process (all its threads), which a busy machine "
              "disturbs less than wall time, since a process of more threads gets a larger share "
              "of a contended CPU. vs reference: the row's median over the fastest PyTorch "
              "reference median of the same group, timed in this run, window by window in turn "
              "with it. The targets are checked on wall time.", "",
              "| what | size | framework | architecture | setting | precision | images/s | "
              "images per CPU-s | windows x calls | vs reference | vs reference, per CPU-s | "
              "target | met |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ratio, target = r["vs_reference"], r["target"]
        met = "-" if ratio is None or target is None else ("yes" if ratio >= target else "no")
        lines.append(
            f"| {r['what']} | {r['size']}x{r['size']} | {r['framework']} | {r['architecture']} | "
            f"{r['setting']} | {r['precision']} | {_rate(r)} | "
            f"{_rate(r, 'images_per_cpu_second')} | {r['windows']} | {_ratio(ratio)} | "
            f"{_ratio(r['vs_reference_per_cpu_second'])} | "
            f"{f'≥ {target:g}x' if target else '-'} | {met} |")
    lines += ["", "Forward multiply-adds per image (dense and convolution layers):", ""] + macs
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    started = time.perf_counter()
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    quick = FLAGS.quick
    windows = 2 if quick else FLAGS.windows
    steps = 4 if quick else max(4, FLAGS.steps - FLAGS.steps % 4)
    unknown = (set(FLAGS.modes) - set(MODES)) | (set(FLAGS.architectures) - set(ARCHITECTURES))
    if unknown:
        cli.fail(f"unknown --modes or --architectures: {', '.join(sorted(unknown))}")
    widths = parse_widths(FLAGS.widths)
    threads = [int(t) for t in FLAGS.reference_threads] if torch is not None else []
    sizes = TRAIN_SIZES[:1] if quick else TRAIN_SIZES
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        rows = [bench_input_pipeline(FLAGS.data_dir or os.path.join(scratch, "tfds"),
                                     FLAGS.image_size, FLAGS.batch_size, windows, quick)]
        print(rows[-1], flush=True)
        for size in sizes:
            candidates = [_ours_train(size, a, w, m, p) for a, w in _architectures(widths)
                          for m in FLAGS.modes for p in FLAGS.precisions]
            candidates += [_reference_train(size, t) for t in threads]
            rows += _with_ratios(time_interleaved(candidates, steps, windows, warmup_calls=5))
            print(*rows[-len(candidates):], sep="\n", flush=True)
        size = FLAGS.image_size
        images = np.random.default_rng(1).random(
            (64 if quick else FLAGS.inference_batch_size, size, size, 1), np.float32)
        candidates = [_ours_inference(size, a, w, jit, scratch, images)
                      for a, w in _architectures(widths) for jit in (False, True)]
        candidates += [_reference_inference(size, t, images) for t in threads]
        rows += _with_ratios(time_interleaved(candidates, 2 if quick else steps, windows, 2))
        print(*rows[-len(candidates):], sep="\n", flush=True)
    load_after = os.getloadavg()
    header = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": _device(),
        "CPU cores": str(os.cpu_count()),
        "TensorFlow / Keras": f"{tf.__version__} / {keras.__version__}",
        "PyTorch": torch.__version__ if torch is not None else "not installed (no reference rows)",
        "TF threads (intra-op / inter-op, 0 = TF default)":
            f"{tf.config.threading.get_intra_op_parallelism_threads()} / "
            f"{tf.config.threading.get_inter_op_parallelism_threads()}",
        "load average (1 min) before / after": f"{load_before[0]:.2f} / {load_after[0]:.2f}",
        "settings": (f"batch {FLAGS.batch_size} (training), {len(images)} (inference), latent "
                     f"{FLAGS.latent_dim}, Adam (β₁ 0.5, weight decay 1e-5 as PyTorch), "
                     f"generator:critic 4:1, windows {windows}" + (", --quick (smoke run)" if quick else "")),
        "wall time": f"{time.perf_counter() - started:.0f} s",
    }
    text = report(rows, header, multiply_add_table(sizes, widths))
    output = FLAGS.output or os.path.join(
        RESULTS, "throughput_quick.md" if quick else "throughput.md")
    write_text(output, text)
    write_text(os.path.splitext(output)[0] + ".json",
               json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    print(text)
    print(f"Wrote {output} and its .json")


if __name__ == "__main__":
    driver.start(main, define_flags)

"""The paper's Table 1, reproduced side by side: ours (the authors' networks), ours without the
critic (ablation) and spatial-VAE on rotated MNIST and on simulated particles with per-image
ground truth, each trained with several seeds, all scored on identical seeded test inputs.

    python -m benchmarks.table1 [--quick | --paper_schedule] [--seeds=0,1,2]
        [--datasets=rotated_mnist,simulated_5hdb] [--methods=ours,ours_no_adversarial,spatial_vae]
        [--output_dir=benchmarks/results]
        [--work_dir=runs/table1] [--data_dir=...] [--mnist_dir=../shared/datasets/mnist]

The work is cut into units: one per (data set, method, seed), and one per data set for the
trivial baselines (mean training image, nearest-canonical oracle) and the split statistics. A unit
trains its run from scratch (`train_lib.train`), scores its SavedModel on each test part of its
data set, raw and with the model's canonical frame turned onto the ground truth's (ψ fitted on
the validation split, `evaluation.estimate_frame_rotation`), and saves its scores atomically as
<work_dir>/<schedule>/units/<data set>/<method>_seed<seed>.json. A rerun skips the units already
saved with the same run settings and builds the table from every unit present, so the benchmark
runs one data set at a time (`--datasets`) and resumes where it was stopped.

Simulated particles have continuous conformations (`SimulationConfig.continuous_conformations`):
each particle's hinge position is drawn uniformly, so every particle has its own canonical image.
Training (and validation) particles cover the first 80% of the hinge range. Two test parts,
reported apart: `in_range`, new particles of the training range (another simulation seed), and
`held_out`, the last 20% of the range, never seen in training. The simulator's only hinged
molecule is the built-in one (a user's PDB or map is rigid), so there is one molecule.

Writes `table1.md` and `table1.json` (`table1_quick.*` for the smoke run) and, per data set and
test part, report folders with the first seed's figures (ours beside spatial-VAE) into
--output_dir. Schedules are in `plan.SCHEDULES`.
"""
import os

from absl import flags

from benchmarks import driver
from benchmarks.table1.plan import DATA, METHODS, SCHEDULES
from benchmarks.table1.run import run_benchmark
from data_pipeline import cli
from data_pipeline.errors import DataError


def define_flags() -> None:
    """The driver's flags."""
    flags.DEFINE_boolean("quick", False, "Smoke run: minutes, writes table1_quick.*.")
    flags.DEFINE_boolean("paper_schedule", False, "The paper's 300-epoch schedule (for a GPU).")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds; each row is mean ± std over them.")
    flags.DEFINE_list("datasets", list(DATA), f"Data sets to run now, of {', '.join(DATA)}; the "
                      "table holds every unit saved under --work_dir.")
    flags.DEFINE_list("methods", list(METHODS), f"Methods to train now, of {', '.join(METHODS)}; "
                      "the table holds every unit saved under --work_dir.")
    flags.DEFINE_string("output_dir", "benchmarks/results", "Folder for table1*.md/json and figures.")
    flags.DEFINE_string("work_dir", "runs/table1", "Units' scores, checkpoints and SavedModels.")
    flags.DEFINE_string("data_dir", None, "TensorFlow Datasets folder (default ~/tensorflow_datasets).")
    flags.DEFINE_string("mnist_dir", "../shared/datasets/mnist",
                        "MNIST IDX files (60k/10k, or only the 10k test files: 8,000/2,000); "
                        "empty: TFDS downloads MNIST.")
    flags.DEFINE_integer("eval_angle_seed", 1234, "Seed of the fixed test-set angles.")


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.quick and FLAGS.paper_schedule:
        cli.fail("--quick and --paper_schedule exclude each other")
    driver.check_choices("datasets", FLAGS.datasets, DATA)
    driver.check_choices("methods", FLAGS.methods, METHODS)
    try:
        seeds = sorted({int(seed) for seed in FLAGS.seeds})
    except ValueError:
        cli.fail(f"--seeds: expected integers, got {','.join(FLAGS.seeds)}")
    if not seeds:
        cli.fail("--seeds: give at least one seed")
    mnist_dir = FLAGS.mnist_dir or None
    if mnist_dir and not os.path.isdir(mnist_dir):
        raise DataError(mnist_dir, "no such folder (--mnist_dir; empty to download with TFDS)")
    schedule = SCHEDULES["quick" if FLAGS.quick else "paper" if FLAGS.paper_schedule else "cpu"]
    record = run_benchmark(schedule, seeds, list(dict.fromkeys(FLAGS.datasets)),
                           FLAGS.output_dir, FLAGS.work_dir, FLAGS.data_dir, mnist_dir,
                           FLAGS.eval_angle_seed, driver.command(),
                           list(dict.fromkeys(FLAGS.methods)))
    for text, met in record["targets"]:
        print(f"target {text}: {'not measured' if met is None else 'met' if met else 'NOT met'}")


if __name__ == "__main__":
    driver.start(main, define_flags)

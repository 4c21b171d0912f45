"""Psi error and wall time of the classical reference-free alignment on a simulated stack.

    python -m data_pipeline.simulate --output_dir=DIR --num_images=3000 --image_size=40 --snr=1
    python -m benchmarks.classical_alignment --input=DIR [--num_classes=1] [--seed=0]

Reads DIR/particles.mrcs and the true angles in DIR/particles.star, aligns the particles with
`rotinv_tf.pose.classical.align_reference_free` and prints one line: the absolute psi error after
the one global rotation relating the template's frame to the truth (the circular mean of the
differences, one per class: `evaluation.frame_aligned_errors_deg`), its mean, median and share above
15°, and the alignment's wall time (particles already in memory).
"""
import os
import time

import numpy as np
from absl import flags

from benchmarks import driver
from data_pipeline.formats.mrc import open_stack
from data_pipeline.formats.star import psi_degrees_to_angle, read_star
from rotinv_tf.evaluation import frame_aligned_errors_deg, psi_error_summary
from rotinv_tf.pose.classical import align_reference_free

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("input", None, "Folder written by data_pipeline.simulate.")
    flags.DEFINE_integer("num_classes", 1, "Templates (K).", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the random initial angles.")
    flags.mark_flag_as_required("input")


def main(argv: list[str]) -> None:
    del argv
    with open_stack(os.path.join(FLAGS.input, "particles.mrcs")) as stack:
        particles = stack.read(0, stack.shape[0])
    table = read_star(os.path.join(FLAGS.input, "particles.star"))["particles"]
    true = psi_degrees_to_angle(np.array([float(v) for v in table.column("rlnAnglePsi")]))
    start = time.perf_counter()
    result = align_reference_free(particles, num_classes=FLAGS.num_classes, seed=FLAGS.seed)
    seconds = time.perf_counter() - start
    errors = psi_error_summary(frame_aligned_errors_deg(true, result.angles, result.classes))
    print(f"{FLAGS.input}: {len(true)} particles {particles.shape[1]}x{particles.shape[2]}, "
          f"K={FLAGS.num_classes}: psi error mean {errors['psi_mae_deg']:.2f} deg, median "
          f"{errors['psi_median_deg']:.2f} deg, {errors['psi_over_15_percent']:.1f}% > 15 deg; "
          f"{seconds:.2f} s")


if __name__ == "__main__":
    driver.start(main, define_flags)

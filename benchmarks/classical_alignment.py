"""Psi error and wall time of the classical reference-free alignment on a simulated stack.

    python -m data_pipeline.simulate --output_dir=DIR --num_images=3000 --image_size=40 --snr=1
    python benchmarks/classical_alignment.py --input=DIR [--num_classes=1] [--seed=0]

Reads DIR/particles.mrcs and the true angles in DIR/particles.star, aligns the particles with
`rotinv_tf.pose.classical.align_reference_free` and prints one line: the absolute psi error after
the one global rotation relating the template's frame to the truth (the circular mean of the
differences, `evaluation.estimate_frame_rotation`; one per class), its mean, median and share above
15°, and the alignment's wall time (particles already in memory).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from data_pipeline import cli  # noqa: E402
from data_pipeline.formats.mrc import open_stack  # noqa: E402
from data_pipeline.formats.star import psi_degrees_to_angle, read_star  # noqa: E402
from rotinv_tf.evaluation import angle_error_deg, estimate_frame_rotation  # noqa: E402
from rotinv_tf.pose.classical import align_reference_free  # noqa: E402

FLAGS = flags.FLAGS
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
    errors = np.zeros(len(true))
    for k in np.unique(result.classes):
        members = result.classes == k
        offset = estimate_frame_rotation(true[members], result.angles[members])
        errors[members] = np.abs(angle_error_deg(true[members], result.angles[members] + offset))
    print(f"{FLAGS.input}: {len(true)} particles {particles.shape[1]}x{particles.shape[2]}, "
          f"K={FLAGS.num_classes}: psi error mean {errors.mean():.2f} deg, median "
          f"{np.median(errors):.2f} deg, {100 * (errors > 15).mean():.1f}% > 15 deg; "
          f"{seconds:.2f} s")


if __name__ == "__main__":
    cli.run(main)

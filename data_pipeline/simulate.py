"""Simulates a 5HDB-style particle stack: `python -m data_pipeline.simulate --output_dir=DIR ...`.

Writes particles.mrcs, canonical.mrcs and particles.star (see `data_pipeline.simulated_stack`).
Image i has conformation i % num_conformations.
"""
import math

from absl import flags

from data_pipeline import cli, simulator as sim
from data_pipeline.simulated_stack import write_stack

_DEFAULTS = sim.SimulationConfig()

flags.DEFINE_string("output_dir", None, "Folder for particles.mrcs, canonical.mrcs and "
                    "particles.star.")
flags.DEFINE_integer("num_images", None, "Number of particles.", lower_bound=1)
flags.DEFINE_float("snr", _DEFAULTS.snr, "Signal variance / noise variance of each image.")
flags.DEFINE_integer("image_size", _DEFAULTS.image_size, "Box size N (images are N x N).")
flags.DEFINE_float("pixel_size", None, "Pixel size in Å (default: the molecule spans 65% of "
                   "the box).")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Random seed; same seed, same files.", lower_bound=0)
flags.DEFINE_enum("angle_distribution", _DEFAULTS.angle_distribution, sim.ANGLE_DISTRIBUTIONS,
                  "In-plane angles: uniform over (-π, π], or normal N(0, angle_std²).")
flags.DEFINE_float("angle_std", _DEFAULTS.angle_std, "Std of normal angles, radians.")
flags.DEFINE_float("max_shift", _DEFAULTS.max_shift, "Random shift per axis, up to this many "
                   "pixels.")
flags.DEFINE_bool("ctf", _DEFAULTS.ctf, "Apply a CTF (300 kV, Cs 2.7 mm, 10% amplitude contrast "
                  "by default).")
flags.DEFINE_float("defocus_min", _DEFAULTS.defocus_min, "Smallest defocus, µm.")
flags.DEFINE_float("defocus_max", _DEFAULTS.defocus_max, "Largest defocus, µm.")
flags.DEFINE_float("voltage", _DEFAULTS.voltage, "Accelerating voltage, kV.")
flags.DEFINE_float("spherical_aberration", _DEFAULTS.spherical_aberration, "Cs, mm.")
flags.DEFINE_float("amplitude_contrast", _DEFAULTS.amplitude_contrast, "Amplitude contrast.")
flags.DEFINE_string("atomic_model", None, "PDB/mmCIF file to project instead of the built-in "
                    "molecule (needs gemmi).")
flags.DEFINE_string("density_map", None, "MRC density map to project instead of the built-in "
                    "molecule.")
flags.DEFINE_integer("num_conformations", _DEFAULTS.num_conformations,
                     "Conformations along the hinge (the built-in molecule only).", lower_bound=1)
flags.DEFINE_bool("continuous_conformations", _DEFAULTS.continuous_conformations,
                  "Draw each image's hinge position uniformly within its conformation's bin.")
flags.DEFINE_integer("num_views", _DEFAULTS.num_views, "Projection directions.", lower_bound=1)
flags.DEFINE_float("view_tilt_deg", math.degrees(_DEFAULTS.view_tilt),
                   "Tilt of views 1, 2, ... from view 0, degrees.")
flags.mark_flags_as_required(["output_dir", "num_images"])
FLAGS = flags.FLAGS


def config_from_flags() -> sim.SimulationConfig:
    """The SimulationConfig the flags describe (no train/test split: one stack of all images)."""
    settings = {name: FLAGS[name].value for name in (
        "snr", "image_size", "pixel_size", "seed", "angle_distribution", "angle_std", "max_shift",
        "ctf", "defocus_min", "defocus_max", "voltage", "spherical_aberration",
        "amplitude_contrast", "atomic_model", "density_map", "num_conformations",
        "continuous_conformations", "num_views")}
    per_conformation = math.ceil(FLAGS.num_images / FLAGS.num_conformations)
    try:
        return sim.SimulationConfig(**settings, test_conformations=0,
                                    view_tilt=math.radians(FLAGS.view_tilt_deg),
                                    images_per_conformation=per_conformation)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from e


def main(argv: list[str]) -> None:
    del argv
    config = config_from_flags()
    pixel = write_stack(FLAGS.output_dir, config, FLAGS.num_images).pixel_size
    print(f"wrote {FLAGS.num_images} particles of {config.image_size}x{config.image_size} "
          f"(pixel size {pixel:.3f} Å, SNR {config.snr:g}) to {FLAGS.output_dir}")


if __name__ == "__main__":
    cli.run(main)

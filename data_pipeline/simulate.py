"""Simulates a 5HDB-style particle stack: `python -m data_pipeline.simulate --output_dir=DIR ...`.

Writes particles.mrcs, canonical.mrcs and particles.star (see `data_pipeline.simulated_stack`).
Image i has conformation i % num_conformations.
"""
import math

from absl import flags

from data_pipeline import cli, settings
from data_pipeline.settings import SimulationConfig, define_flags, from_flat, leaves
from data_pipeline.simulated_stack import write_stack

# One stack of all images: the train/test split settings do not apply.
_SPLIT_SETTINGS = ("images_per_conformation", "test_conformations")

flags.DEFINE_string("output_dir", None, "Folder for particles.mrcs, canonical.mrcs and "
                    "particles.star.")
flags.DEFINE_integer("num_images", None, "Number of particles.", lower_bound=1)
define_flags(SimulationConfig, exclude=_SPLIT_SETTINGS)
flags.adopt_module_key_flags(settings)  # --helpshort lists them
flags.mark_flags_as_required(["output_dir", "num_images"])
FLAGS = flags.FLAGS


def config_from_flags() -> SimulationConfig:
    """The SimulationConfig the flags describe (no train/test split: one stack of all images)."""
    values = {name: FLAGS[name].value for name, _, _ in leaves(SimulationConfig)
              if name not in _SPLIT_SETTINGS}
    per_conformation = math.ceil(FLAGS.num_images / max(FLAGS.num_conformations, 1))
    try:
        return from_flat(SimulationConfig, {**values, "test_conformations": 0,
                                            "images_per_conformation": per_conformation})
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

"""Simulates a 5HDB-style particle stack: `python -m data_pipeline.simulate --output_dir=DIR ...`.

Writes, each atomically (all three renamed into place only when everything succeeded):
  particles.mrcs  the observed images (rotated, shifted, CTF, noise), pixel size in the header
  canonical.mrcs  the clean canonical image of each particle, same order
  particles.star  RELION 3.1 STAR: optics block and a particles table with rlnImageName
                  (`000001@particles.mrcs`, 1-based), rlnAnglePsi (the true in-plane angle θ in
                  degrees, `star.angle_to_psi_degrees`), rlnOriginXAngst/YAngst (RELION: the
                  particle sits at the box centre minus the origin), rlnDefocusU/V/Angle (with
                  --ctf) and rlnClassNumber (conformation + 1).
Image i has conformation i % num_conformations.
"""
import contextlib
import math
import os

import numpy as np
from absl import flags

from data_pipeline import cli, settings, simulator as sim
from data_pipeline.formats import star
from data_pipeline.formats.mrc import StackWriter
from data_pipeline.settings import SimulationConfig, define_flags, from_flat, leaves

PARTICLES, CANONICAL, STAR = "particles.mrcs", "canonical.mrcs", "particles.star"
CHUNK = 1000
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


def particle_columns(config: SimulationConfig) -> list[str]:
    """The columns of the STAR file's particle table."""
    columns = [star.IMAGE_NAME, star.ANGLE_PSI, *star.ORIGIN_COLUMNS,
               "rlnClassNumber", star.OPTICS_GROUP]
    return columns + (["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"] if config.ctf else [])


def particle_rows(config: SimulationConfig, pixel_size: float, chunk: dict) -> list[list[str]]:
    """The particle table's rows for one simulated chunk."""
    psi = star.angle_to_psi_degrees(chunk["angle"].astype(np.float64))
    origin = -chunk["shift"].astype(np.float64) * pixel_size
    rows = []
    for i, image_id in enumerate(chunk["id"]):
        row = [star.image_name(image_id + 1, PARTICLES), f"{psi[i]:.6f}", f"{origin[i, 0]:.6f}",
               f"{origin[i, 1]:.6f}", str(chunk["conformation"][i] + 1), "1"]
        if config.ctf:
            defocus = f"{chunk['defocus'][i] * 1e4:.2f}"
            row += [defocus, defocus, "0.0"]
        rows.append(row)
    return rows


def simulate_to(output_dir: str, config: SimulationConfig, num_images: int) -> float:
    """Simulates `num_images` particles into `output_dir`; returns the pixel size (Å). Images and
    STAR rows are written a chunk at a time, so memory does not grow with `num_images`."""
    simulator = sim.Simulator(config)
    size, pixel = config.image_size, simulator.pixel_size
    with contextlib.ExitStack() as outputs:
        observed = outputs.enter_context(StackWriter(
            os.path.join(output_dir, PARTICLES), num_images, size, size, pixel))
        canonical = outputs.enter_context(StackWriter(
            os.path.join(output_dir, CANONICAL), num_images, size, size, pixel))
        table = outputs.enter_context(star.StarWriter(os.path.join(output_dir, STAR)))
        table.write_block("optics", star.optics_block(
            pixel, size, config.voltage, config.spherical_aberration, config.amplitude_contrast))
        table.begin_loop("particles", particle_columns(config))
        for start in range(0, num_images, CHUNK):
            chunk = simulator.simulate(np.arange(start, min(start + CHUNK, num_images)))
            observed.write(start, chunk["observed"])
            canonical.write(start, chunk["image"])
            table.write_rows(particle_rows(config, pixel, chunk))
    return pixel


def main(argv: list[str]) -> None:
    del argv
    config = config_from_flags()
    pixel = simulate_to(FLAGS.output_dir, config, FLAGS.num_images)
    print(f"wrote {FLAGS.num_images} particles of {config.image_size}x{config.image_size} "
          f"(pixel size {pixel:.3f} Å, SNR {config.snr:g}) to {FLAGS.output_dir}")


if __name__ == "__main__":
    cli.run(main)

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

from data_pipeline import cli, simulator as sim
from data_pipeline.formats.mrc import StackWriter
from data_pipeline.formats.star import StarBlock, StarWriter, angle_to_psi_degrees

PARTICLES, CANONICAL, STAR = "particles.mrcs", "canonical.mrcs", "particles.star"
CHUNK = 1000
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
flags.mark_flags_as_required(["output_dir", "num_images"])
FLAGS = flags.FLAGS


def config_from_flags() -> sim.SimulationConfig:
    """The SimulationConfig the flags describe (no train/test split: one stack of all images)."""
    settings = {name: FLAGS[name].value for name in (
        "snr", "image_size", "pixel_size", "seed", "angle_distribution", "angle_std", "max_shift",
        "ctf", "defocus_min", "defocus_max", "voltage", "spherical_aberration",
        "amplitude_contrast", "atomic_model", "density_map", "num_conformations")}
    per_conformation = math.ceil(FLAGS.num_images / FLAGS.num_conformations)
    try:
        return sim.SimulationConfig(**settings, test_conformations=0,
                                    images_per_conformation=per_conformation)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from e


def optics_block(config: sim.SimulationConfig, pixel_size: float) -> StarBlock:
    """The STAR file's optics block."""
    return StarBlock(
        columns=["rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage", "rlnSphericalAberration",
                 "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
                 "rlnImageDimensionality"],
        rows=[["1", "opticsGroup1", f"{config.voltage:g}", f"{config.spherical_aberration:g}",
               f"{config.amplitude_contrast:g}", f"{pixel_size:.6f}", str(config.image_size), "2"]])


def particle_columns(config: sim.SimulationConfig) -> list[str]:
    """The columns of the STAR file's particle table."""
    columns = ["rlnImageName", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
               "rlnClassNumber", "rlnOpticsGroup"]
    return columns + (["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"] if config.ctf else [])


def particle_rows(config: sim.SimulationConfig, pixel_size: float, chunk: dict) -> list[list[str]]:
    """The particle table's rows for one simulated chunk."""
    psi = angle_to_psi_degrees(chunk["angle"].astype(np.float64))
    origin = -chunk["shift"].astype(np.float64) * pixel_size
    rows = []
    for i, image_id in enumerate(chunk["id"]):
        row = [f"{image_id + 1:06d}@{PARTICLES}", f"{psi[i]:.6f}", f"{origin[i, 0]:.6f}",
               f"{origin[i, 1]:.6f}", str(chunk["conformation"][i] + 1), "1"]
        if config.ctf:
            defocus = f"{chunk['defocus'][i] * 1e4:.2f}"
            row += [defocus, defocus, "0.0"]
        rows.append(row)
    return rows


def simulate_to(output_dir: str, config: sim.SimulationConfig, num_images: int) -> float:
    """Simulates `num_images` particles into `output_dir`; returns the pixel size (Å). Images and
    STAR rows are written a chunk at a time, so memory does not grow with `num_images`."""
    simulator = sim.Simulator(config)
    size, pixel = config.image_size, simulator.pixel_size
    with contextlib.ExitStack() as outputs:
        observed = outputs.enter_context(StackWriter(
            os.path.join(output_dir, PARTICLES), num_images, size, size, pixel))
        canonical = outputs.enter_context(StackWriter(
            os.path.join(output_dir, CANONICAL), num_images, size, size, pixel))
        star = outputs.enter_context(StarWriter(os.path.join(output_dir, STAR)))
        star.write_block("optics", optics_block(config, pixel))
        star.begin_loop("particles", particle_columns(config))
        for start in range(0, num_images, CHUNK):
            chunk = simulator.simulate(np.arange(start, min(start + CHUNK, num_images)))
            observed.write(start, chunk["observed"])
            canonical.write(start, chunk["image"])
            star.write_rows(particle_rows(config, pixel, chunk))
    return pixel


def main(argv: list[str]) -> None:
    del argv
    config = config_from_flags()
    pixel = simulate_to(FLAGS.output_dir, config, FLAGS.num_images)
    print(f"wrote {FLAGS.num_images} particles of {config.image_size}x{config.image_size} "
          f"(pixel size {pixel:.3f} Å, SNR {config.snr:g}) to {FLAGS.output_dir}")


if __name__ == "__main__":
    cli.run(main)

"""A simulated particle stack on disk, as RELION reads it: `write_stack(folder, config, count)`.

Writes, each atomically (all three renamed into place only when everything succeeded):
  particles.mrcs  the observed images (rotated, shifted, CTF, noise), pixel size in the header
  canonical.mrcs  the clean canonical image of each particle, same order
  particles.star  RELION 3.1 STAR: optics block and a particles table with rlnImageName
                  (`000001@particles.mrcs`, 1-based), rlnAnglePsi (the true in-plane angle θ in
                  degrees, `star.angle_to_psi_degrees`), rlnOriginXAngst/YAngst (RELION: the
                  particle sits at the box centre minus the origin), rlnDefocusU/V/Angle (with
                  a CTF) and rlnClassNumber (conformation + 1); its rows are written a chunk at a
                  time.
Image i is the simulator's image with global id i. The per-image truth the STAR file has no column
for (view, hinge angle) is returned instead (a few numbers per image).
"""
import contextlib
import dataclasses
import os

import numpy as np

from data_pipeline import simulator as sim
from data_pipeline.formats import star
from data_pipeline.formats.mrc import StackWriter
from data_pipeline.settings import SimulationConfig

PARTICLES, CANONICAL, STAR = "particles.mrcs", "canonical.mrcs", "particles.star"
CHUNK = 1000
TRUTH_KEYS = ("id", "angle", "shift", "defocus", "conformation", "view", "hinge")


@dataclasses.dataclass(frozen=True)
class SimulatedStack:
    """A written stack: its folder, pixel size (Å) and per-image truth (`Simulator.simulate`'s
    arrays named in TRUTH_KEYS)."""

    folder: str
    pixel_size: float
    truth: dict[str, np.ndarray]

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)


def particle_columns(config: SimulationConfig) -> list[str]:
    """The columns of the STAR file's particle table."""
    columns = [star.IMAGE_NAME, star.ANGLE_PSI, *star.ORIGIN_COLUMNS, star.CLASS_NUMBER,
               star.OPTICS_GROUP]
    return columns + (list(star.DEFOCUS_COLUMNS) if config.ctf else [])


def particle_rows(config: SimulationConfig, pixel_size: float, truth: dict[str, np.ndarray]
                  ) -> list[list[str]]:
    """The particle table's rows for simulated images (`Simulator.simulate`'s arrays)."""
    psi = star.angle_to_psi_degrees(truth["angle"].astype(np.float64))
    origin = star.relion_origins(truth["shift"], config.image_size, pixel_size)
    rows = []
    for i, image_id in enumerate(truth["id"]):
        row = [star.image_name(image_id + 1, PARTICLES), f"{psi[i]:.6f}", f"{origin[i, 0]:.6f}",
               f"{origin[i, 1]:.6f}", str(truth["conformation"][i] + 1), "1"]
        if config.ctf:
            defocus = f"{truth['defocus'][i] * 1e4:.2f}"
            row += [defocus, defocus, "0.0"]
        rows.append(row)
    return rows


def write_stack(output_dir: str, config: SimulationConfig, num_images: int
                ) -> SimulatedStack:
    """Simulates images 0 .. num_images - 1 into `output_dir` (module docstring)."""
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
        chunks = []
        for start in range(0, num_images, CHUNK):
            chunk = simulator.simulate(np.arange(start, min(start + CHUNK, num_images)))
            observed.write(start, chunk["observed"])
            canonical.write(start, chunk["image"])
            table.write_rows(particle_rows(config, pixel, chunk))
            chunks.append({k: chunk[k] for k in TRUTH_KEYS})
    truth = {k: np.concatenate([c[k] for c in chunks]) for k in TRUTH_KEYS}
    return SimulatedStack(output_dir, pixel, truth)

"""Writes `particles.star`, the particles `relion_project` projects for the origins fixture
(README.md): one view (down z) of `../relion/map.mrc` at random psi, each particle off centre by a
known origin within 4 px; and `clean_particles.star`, the first `CLEAN` of them (projected without noise).
Run from the repository's root or with it on the path."""
import os

import numpy as np

from data_pipeline.formats.star import StarBlock, write_star

COUNT = 120
SIZE, PIXEL = 32, 2.0  # px, Å: the map's
MAX_ORIGIN = 4.0  # px: origins uniform in a disc of this radius
SEED = 0
CLEAN = 8


def particles() -> tuple[np.ndarray, np.ndarray]:
    """(psi [COUNT] degrees, origins [COUNT, 2] Å), drawn with `SEED`."""
    rng = np.random.default_rng(SEED)
    psi = rng.uniform(-180.0, 180.0, COUNT)
    radius = MAX_ORIGIN * np.sqrt(rng.uniform(0.0, 1.0, COUNT))
    direction = rng.uniform(0.0, 2 * np.pi, COUNT)
    origins = np.stack([radius * np.cos(direction), radius * np.sin(direction)], 1) * PIXEL
    return psi, origins


if __name__ == "__main__":
    optics = StarBlock(["rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage",
                        "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize",
                        "rlnImageSize", "rlnImageDimensionality"],
                       [["1", "opticsGroup1", "300", "2.7", "0.1", str(PIXEL), str(SIZE), "2"]])
    psi, origins = particles()
    rows = [["0", "0", f"{p:.4f}", f"{x:.4f}", f"{y:.4f}", "1"]
            for p, (x, y) in zip(psi, origins)]
    columns = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
               "rlnOriginYAngst", "rlnOpticsGroup"]
    here = os.path.dirname(os.path.abspath(__file__))
    for name, kept in (("particles.star", rows), ("clean_particles.star", rows[:CLEAN])):
        write_star(os.path.join(here, name),
                   {"optics": optics, "particles": StarBlock(columns, kept)})

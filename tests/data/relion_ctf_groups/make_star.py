"""Writes `particles.star`, the particles `relion_project` projects for the per-particle CTF fixture
(README.md): two optics groups that differ in voltage, Cs and amplitude contrast, and particles with
and without a phase shift. The psi are those of `../relion_ctf/make_star.py`, so the projections
without CTF are `../relion_ctf/plain.mrcs`. Run from the repository's root or with it on the path."""
import os

from data_pipeline.formats.star import StarBlock, write_star

# (psi, defocus U, defocus V, astigmatism angle, phase shift, optics group): degrees, Å, Å,
# degrees, degrees, 1 or 2.
PARTICLES = [(0, 5000, 5000, 0, 0, 1), (0, 10000, 10000, 0, 90, 1), (30, 15000, 15000, 0, 45, 2),
             (0, 12000, 8000, 0, 0, 2), (0, 12000, 8000, 35, 90, 2), (90, 9000, 14000, -60, 0, 1),
             (-45, 20000, 17000, 120, 45, 1), (135, 7000, 6000, 75, 0, 2)]
# (group, name, kV, Cs mm, amplitude contrast); both 2 Å pixels, 32 px.
GROUPS = [(1, "opticsGroup1", 300, 2.7, 0.1), (2, "opticsGroup2", 200, 0.01, 0.07)]

if __name__ == "__main__":
    optics = StarBlock(["rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage",
                        "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize",
                        "rlnImageSize", "rlnImageDimensionality"],
                       [[*map(str, group), "2.0", "32", "2"] for group in GROUPS])
    particles = StarBlock(["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusU",
                           "rlnDefocusV", "rlnDefocusAngle", "rlnPhaseShift", "rlnOpticsGroup"],
                          [["0", "0", *map(str, row)] for row in PARTICLES])
    here = os.path.dirname(os.path.abspath(__file__))
    write_star(os.path.join(here, "particles.star"), {"optics": optics, "particles": particles})

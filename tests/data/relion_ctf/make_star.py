"""Writes `defoci.star`, the particles `relion_project` projects for the CTF fixture (README.md):
the view down z of `../relion/map.mrc` at a few psi, each with its own defocus and astigmatism."""
import os

# (psi, defocus U, defocus V, astigmatism angle): degrees, Å, Å, degrees.
PARTICLES = [(0, 5000, 5000, 0), (0, 10000, 10000, 0), (30, 15000, 15000, 0),
             (0, 12000, 8000, 0), (0, 12000, 8000, 35), (90, 9000, 14000, -60),
             (-45, 20000, 17000, 120), (135, 7000, 6000, 75)]
HEADER = """
data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnVoltage #3
_rlnSphericalAberration #4
_rlnAmplitudeContrast #5
_rlnImagePixelSize #6
_rlnImageSize #7
_rlnImageDimensionality #8
1 opticsGroup1 300 2.7 0.1 2.0 32 2

data_particles

loop_
_rlnAngleRot #1
_rlnAngleTilt #2
_rlnAnglePsi #3
_rlnDefocusU #4
_rlnDefocusV #5
_rlnDefocusAngle #6
_rlnOpticsGroup #7
"""

if __name__ == "__main__":
    rows = "".join(f"0 0 {p} {u} {v} {a} 1\n" for p, u, v, a in PARTICLES)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "defoci.star"), "w", encoding="utf-8") as f:
        f.write(HEADER + rows)

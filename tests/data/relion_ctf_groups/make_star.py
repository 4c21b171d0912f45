"""Writes `particles.star`, the particles `relion_project` projects for the per-particle CTF fixture
(README.md): two optics groups that differ in voltage, Cs and amplitude contrast, and particles with
and without a phase shift. The psi are those of `../relion_ctf/make_star.py`, so the projections
without CTF are `../relion_ctf/plain.mrcs`."""
import os

# (psi, defocus U, defocus V, astigmatism angle, phase shift, optics group): degrees, Å, Å,
# degrees, degrees, 1 or 2.
PARTICLES = [(0, 5000, 5000, 0, 0, 1), (0, 10000, 10000, 0, 90, 1), (30, 15000, 15000, 0, 45, 2),
             (0, 12000, 8000, 0, 0, 2), (0, 12000, 8000, 35, 90, 2), (90, 9000, 14000, -60, 0, 1),
             (-45, 20000, 17000, 120, 45, 1), (135, 7000, 6000, 75, 0, 2)]
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
2 opticsGroup2 200 0.01 0.07 2.0 32 2

data_particles

loop_
_rlnAngleRot #1
_rlnAngleTilt #2
_rlnAnglePsi #3
_rlnDefocusU #4
_rlnDefocusV #5
_rlnDefocusAngle #6
_rlnPhaseShift #7
_rlnOpticsGroup #8
"""

if __name__ == "__main__":
    rows = "".join(f"0 0 {p} {u} {v} {a} {s} {g}\n" for p, u, v, a, s, g in PARTICLES)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "particles.star"), "w", encoding="utf-8") as f:
        f.write(HEADER + rows)

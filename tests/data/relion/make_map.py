"""Writes the RELION fixture's inputs: `map.mrc` (an asymmetric density map of four Gaussian
blobs) and `angles.star` (the orientations `relion_project --ang` projects it at).

Run from this folder: `python make_map.py` (see README.md). The blobs' centre of mass sits on
RELION's rotation centre, voxel (N/2, N/2, N/2), so projections need no recentring.
"""
import os

import mrcfile
import numpy as np

SIZE = 32  # voxels a side
PIXEL = 2.0  # Å
# (x, y, z, sigma, amplitude) in Å from the centre: a body, an arm, a knob and a tail.
BLOBS = np.array([[-4.0, -6.0, 0.0, 5.0, 1.0],
                  [14.0, 6.0, 2.0, 4.0, 0.8],
                  [-12.0, 10.0, -4.0, 3.5, 1.4],
                  [4.0, -16.0, 4.0, 3.0, 0.9]])
# (rot, tilt, psi) in degrees: a dozen in-plane angles of the view down z, then another view.
PSI = [0, 15, 30, 60, 90, 110, 135, 180, -150, -120, -90, -45]
ANGLES = [(0, 0, psi) for psi in PSI] + [(40, 70, psi) for psi in (0, 90, -135)]
# RELION 3.1 needs an optics group (the CTF values are unused: no --ctf).
OPTICS = f"""
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
1 opticsGroup1 300 2.7 0.1 {PIXEL} {SIZE} 2
"""


def density() -> np.ndarray:
    """The map [z, y, x] (mrcfile's axis order: x runs along the fastest axis)."""
    centres, sigma, amplitude = BLOBS[:, :3], BLOBS[:, 3], BLOBS[:, 4]
    mass = amplitude * sigma**3
    centres = centres - np.average(centres, axis=0, weights=mass)
    z, y, x = (np.mgrid[:SIZE, :SIZE, :SIZE] - SIZE // 2) * PIXEL
    volume = np.zeros((SIZE, SIZE, SIZE))
    for (cx, cy, cz), s, a in zip(centres, sigma, amplitude):
        volume += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * s**2))
    return volume.astype(np.float32)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    with mrcfile.new(os.path.join(here, "map.mrc"), overwrite=True) as mrc:
        mrc.set_data(density())
        mrc.voxel_size = PIXEL
    rows = "\n".join(f"{rot} {tilt} {psi} 1" for rot, tilt, psi in ANGLES)
    with open(os.path.join(here, "angles.star"), "w", encoding="utf-8") as f:
        f.write(OPTICS + "\ndata_particles\n\nloop_\n_rlnAngleRot #1\n_rlnAngleTilt #2\n"
                f"_rlnAnglePsi #3\n_rlnOpticsGroup #4\n{rows}\n")

if __name__ == "__main__":
    main()

"""Stacks our code did not write, and the programs run on them as a user runs them: density maps of
Gaussian blobs, RELION programs (`relion_project`, `relion_star_handler`, ...) and our own CLIs
as timed subprocesses. Shared by the benchmarks that project with RELION (`classes`, `picked`)."""
import os
import subprocess
import sys
import time

import mrcfile
import numpy as np
from absl import flags

from benchmarks.driver import REPO
from data_pipeline.formats import star
from data_pipeline.formats.mrc import open_stack

# The stacks' boxes (pixels, Å per pixel) and views: every view's rot and each one's tilt
# (degrees), and the Euler angle columns `relion_project --ang` reads.
SIZE, PIXEL = 48, 2.0
ROT, TILTS = 90.0, (0.0, 40.0, 80.0)
ANGLES = ("rlnAngleRot", "rlnAngleTilt", star.ANGLE_PSI)


def define_stack_flags(work_dir: str, num_particles: int, snr: float, spread: float) -> None:
    """The flags every RELION-projected stack has, with this driver's defaults."""
    flags.DEFINE_string("work_dir", work_dir, "Maps, stacks, runs and SavedModels.")
    flags.DEFINE_integer("seed", 0, "Seed of the particles' parameters and of training "
                         "(RELION's noise has its own).")
    flags.DEFINE_integer("num_particles", num_particles, "Particles per stack.")
    flags.DEFINE_float("snr", snr, "Signal variance / noise variance of the stacks.")
    flags.DEFINE_float("spread", spread, "Std (degrees) of the jitter of each view's tilt.")


def views_text(views: int, spread: float) -> str:
    """How a report names the stack's views."""
    return (f"{views} views (rot {ROT:g}°, tilt {'/'.join(f'{t:g}' for t in TILTS[:views])}°, "
            f"tilt jitter σ {spread:g}°)")


def gaussians(centres, sigmas, amplitudes, size: int, pixel: float) -> np.ndarray:
    """A map [z, y, x] of `size`³ voxels of `pixel` Å holding 3D Gaussians (centres [A, 3] x, y, z
    in Å from RELION's centre voxel (N/2, N/2, N/2)), summed separably."""
    axis = (np.arange(size) - size // 2) * pixel
    volume = np.zeros((size, size, size))
    for (x, y, z), s, a in zip(np.asarray(centres), np.broadcast_to(sigmas, len(centres)),
                               np.broadcast_to(amplitudes, len(centres))):
        gx, gy, gz = (np.exp(-(axis - c) ** 2 / (2 * s * s)) for c in (x, y, z))
        volume += a * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    return volume.astype(np.float32)


def write_map(path: str, volume: np.ndarray, pixel: float) -> None:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = pixel


def relion(folder: str, *args: str) -> tuple[str, float]:
    """Runs a RELION program in `folder`: (stdout, wall seconds); raises on failure."""
    start = time.perf_counter()
    done = subprocess.run(list(args), cwd=folder, check=True, capture_output=True, text=True)
    return done.stdout, time.perf_counter() - start


def read_stack(path: str) -> np.ndarray:
    with open_stack(path) as stack:
        return stack.read(0, len(stack))


def noise_sigma(clean: np.ndarray, snr: float) -> float:
    """The white-noise σ that gives `snr`: the mean over particles of each clean image's pixel
    variance over the whole box, over the noise variance."""
    return float(np.sqrt(clean.reshape(len(clean), -1).var(axis=1).mean() / snr))


def timed(folder: str, command: list[str], log: str) -> float:
    """Runs `command` in `folder` with this checkout first on the path; wall seconds. Its output
    goes to `log`; a failure prints the log's tail and raises."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    with open(os.path.join(folder, log), "w") as out:
        done = subprocess.run(command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        tail = open(os.path.join(folder, log)).read()[-3000:]
        print(tail, file=sys.stderr)
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode} (log {log})")
    return seconds


def shown(command: list[str], folder: str) -> str:
    """`command` as a user types it: `python` for this interpreter, paths relative to the
    checkout or the stack's folder."""
    words = ["python" if command[0] == sys.executable else command[0], *command[1:]]
    return " ".join(words).replace(REPO + "/", "").replace(folder + "/", "")

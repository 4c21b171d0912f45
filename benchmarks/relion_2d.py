"""RELION 2D classification (`relion_refine`, issue 15's command) of a stack, for the benchmarks
that set it beside ours: the particles' angles and classes from its last iteration.

RELION 3.1.3 can stop mid-run with "zero sum of weights" (seen at iteration 13 of 25 on poses.py's
3,000-particle one-view SNR 1 stack); its random seed then comes from the clock. A failed run is
retried with `--random_seed` 1, 2, ... (`retries` times), and the failures are returned, so a
table can say so."""
import glob
import os
import shutil
import subprocess
import time

import mrcfile
import numpy as np

from data_pipeline.formats import star

PARTICLES = "particles.mrcs"


def relion_star(folder: str, image_size: int, pixel_size: float,
                ctf: dict[str, list[str]] | None = None) -> str:
    """`relion.star` for `folder`'s `particles.mrcs`: image names and optics group, and with `ctf`
    (column name -> one value per particle, e.g. rlnDefocusU) each particle's CTF values; no
    angles."""
    path = os.path.join(folder, "relion.star")
    with mrcfile.mmap(os.path.join(folder, PARTICLES), permissive=True) as f:
        count = f.data.shape[0]
    optics = star.optics_block(pixel_size, image_size, voltage=300.0, spherical_aberration=2.7,
                               amplitude_contrast=0.1)
    ctf = ctf or {}
    particles = star.StarBlock(
        columns=[star.IMAGE_NAME, star.OPTICS_GROUP, *ctf],
        rows=[[star.image_name(i + 1, PARTICLES), "1", *(values[i] for values in ctf.values())]
              for i in range(count)])
    star.write_star(path, {"optics": optics, "particles": particles})
    return path


def run_relion(folder: str, out: str, image_size: int, pixel_size: float, iterations: int,
               classes: int, threads: int, reference: str | None = None,
               ctf: dict[str, list[str]] | None = None, retries: int = 2,
               offset_range: float = 3.0, offset_step: float = 2.0
               ) -> tuple[np.ndarray, np.ndarray, float, str, list[str]]:
    """RELION 2D classification of `folder`'s stack into `out` (against `reference`'s class
    averages when given, else K = `classes`; with `ctf` as in `relion_star`, `--ctf`; offsets
    searched within `offset_range` pixels in `offset_step` steps) ->
    (angles [B] radians, classes [B], wall seconds of the run that finished, the last
    iteration's class averages, one line per failed run before it)."""
    failures = []
    base = command(folder, out, image_size, pixel_size, iterations, classes, threads, reference,
                   ctf, offset_range, offset_step)
    for attempt in range(retries + 1):
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        line = base + (["--random_seed", str(attempt)] if attempt else [])
        start = time.perf_counter()
        try:
            subprocess.run(line, cwd=folder, check=True, stdout=subprocess.DEVNULL)
        except subprocess.CalledProcessError as e:
            done = len(glob.glob(os.path.join(out, "run_it*_data.star"))) - 1
            failures.append(f"{'clock' if not attempt else attempt} seed: exit {e.returncode} "
                            f"after {done} of {iterations} iterations, "
                            f"{time.perf_counter() - start:.0f} s")
            print(f"RELION failed ({failures[-1]}) in {out}", flush=True)
            if attempt == retries:
                raise
            continue
        seconds = time.perf_counter() - start
        break
    data = sorted(glob.glob(os.path.join(out, "run_it*_data.star")))[-1]
    table = star.particles_block(star.read_star(data), data)
    order = star.image_positions(table, data)[1]
    angles, labels = np.empty(len(order)), np.empty(len(order), np.int64)
    angles[order] = star.psi_degrees_to_angle(np.array(table.column(star.ANGLE_PSI), np.float64))
    labels[order] = np.array(table.column(star.CLASS_NUMBER), np.int64)
    return angles, labels, seconds, data.replace("_data.star", "_classes.mrcs"), failures


def command(folder: str, out: str, image_size: int, pixel_size: float, iterations: int,
            classes: int, threads: int, reference: str | None,
            ctf: dict[str, list[str]] | None, offset_range: float, offset_step: float
            ) -> list[str]:
    """The `relion_refine` command line of `run_relion`: issue 15's (offsets 3 px / step 2
    there)."""
    diameter = 0.9 * image_size * pixel_size
    line = ["relion_refine", "--o", os.path.join(out, "run"),
            "--i", relion_star(folder, image_size, pixel_size, ctf),
            "--iter", str(iterations),
            "--tau2_fudge", "2", "--particle_diameter", f"{diameter:.1f}",
            "--flatten_solvent", "--zero_mask", "--oversampling", "1", "--psi_step", "6",
            "--offset_range", f"{offset_range:g}", "--offset_step", f"{offset_step:g}",
            "--norm", "--scale", "--j", str(threads), "--pool", "30", "--pad", "2",
            "--dont_combine_weights_via_disc"]
    line += ["--ref", reference] if reference else ["--K", str(classes)]
    return line + (["--ctf"] if ctf else [])


def installed() -> bool:
    """Whether `relion_refine` is on the PATH (the benchmarks skip RELION's rows otherwise)."""
    return shutil.which("relion_refine") is not None

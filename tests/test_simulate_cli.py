"""`python -m data_pipeline.simulate`: the files it writes, and its one-line failures."""
import os
import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from data_pipeline import simulated_stack
from data_pipeline.formats.star import read_star
from data_pipeline.simulator import SimulationConfig, Simulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--num_images=30", "--image_size=24", "--num_conformations=4", "--max_shift=1.5",
         "--ctf", "--defocus_min=0.8", "--defocus_max=1.2", "--seed=7"]
# The same settings as FLAGS, for the library.
CONFIG = SimulationConfig(image_size=24, num_conformations=4, images_per_conformation=8,
                          test_conformations=0, max_shift=1.5, ctf=True, defocus_min=0.8,
                          defocus_max=1.2, seed=7)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "data_pipeline.simulate", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr lines that are not TF/absl start-up chatter."""
    return [line for line in result.stderr.splitlines()
            if line.strip()
            and not line.startswith(("WARNING: All log", "I0000", "W0000", "E0000"))]


def test_writes_stacks_and_star_matching_the_library(tmp_path):
    out = tmp_path / "sim"
    result = run_cli(f"--output_dir={out}", *FLAGS)
    assert result.returncode == 0, result.stderr
    assert "wrote 30 particles" in result.stdout
    assert sorted(os.listdir(out)) == ["canonical.mrcs", "particles.mrcs", "particles.star"]

    simulator = Simulator(CONFIG)
    expected = simulator.simulate(np.arange(30))
    for name, key in (("particles.mrcs", "observed"), ("canonical.mrcs", "image")):
        with mrcfile.open(out / name) as mrc:
            assert mrc.data.shape == (30, 24, 24)
            assert float(mrc.voxel_size.x) == pytest.approx(simulator.pixel_size, rel=1e-5)
            np.testing.assert_array_equal(mrc.data, expected[key])

    blocks = read_star(out / "particles.star")
    particles = blocks["particles"]
    assert particles.column("rlnImageName") == [f"{i:06d}@particles.mrcs" for i in range(1, 31)]
    np.testing.assert_allclose(np.array(particles.column("rlnAnglePsi"), float),
                               np.degrees(expected["angle"].astype(float)), atol=1e-5)
    origin = np.array([particles.column("rlnOriginXAngst"), particles.column("rlnOriginYAngst")],
                      float).T
    # RELION's centre of the even box is half a pixel past ours, the origin points back to it.
    np.testing.assert_allclose(origin, (0.5 - expected["shift"]) * simulator.pixel_size,
                               atol=1e-4)
    np.testing.assert_allclose(np.array(particles.column("rlnDefocusU"), float),
                               expected["defocus"] * 1e4, atol=0.01)
    assert [int(c) for c in particles.column("rlnClassNumber")] == [i % 4 + 1 for i in range(30)]
    assert float(blocks["optics"].column("rlnImagePixelSize")[0]) == pytest.approx(
        simulator.pixel_size, rel=1e-5)


@pytest.mark.parametrize("bad, named", [("--snr=-1", "snr"), ("--no_such_flag=1", "no_such_flag"),
                                        ("--angle_distribution=cauchy", "angle_distribution")])
def test_bad_flags_exit_2_with_one_line_and_no_output(tmp_path, bad, named):
    out = tmp_path / "sim"
    result = run_cli(f"--output_dir={out}", *FLAGS, bad)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], lines
    assert not out.exists() or os.listdir(out) == []


def test_bad_atomic_model_exits_2_naming_the_file(tmp_path):
    out, model = tmp_path / "sim", tmp_path / "broken.pdb"
    model.write_text("HETATM garbage\n")
    for path in (model, tmp_path / "missing.pdb"):
        result = run_cli(f"--output_dir={out}", *FLAGS, f"--atomic_model={path}")
        assert result.returncode == 2
        lines = error_lines(result)
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), lines
        assert not out.exists() or os.listdir(out) == []


def test_a_failure_midway_leaves_no_files(tmp_path, monkeypatch):
    out = tmp_path / "sim"
    monkeypatch.setattr(simulated_stack, "CHUNK", 10)
    original = Simulator.simulate

    def fail_on_third_chunk(self, ids):
        if ids[0] >= 20:
            raise RuntimeError("disk on fire")
        return original(self, ids)

    monkeypatch.setattr(Simulator, "simulate", fail_on_third_chunk)
    with pytest.raises(RuntimeError, match="disk on fire"):
        simulated_stack.write_stack(str(out), CONFIG, 30)
    assert os.listdir(out) == []

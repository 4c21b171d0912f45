"""CTF values as data: read from RELION STAR and cryoSPARC .cs files and carried by
`particle_stack` as per-particle features; bad CTF columns get one line naming file, column, row."""
import math
import os

import numpy as np
import pytest

from data_pipeline import simulated_stack
from data_pipeline.ctf import CTF_FEATURES
from data_pipeline.datasets.particle_stack import ParticleStack
from data_pipeline.errors import DataError
from data_pipeline.formats.mrc import write_stack
from data_pipeline.formats.star import StarBlock, read_star, write_star
from data_pipeline.simulator import SimulationConfig
from tests.cs_files import write_cs

COUNT = 6


@pytest.fixture(scope="module")
def ctf_stack(tmp_path_factory) -> tuple[str, str, np.ndarray]:
    """A simulated CTF stack and its STAR file (no noise), and each particle's defocus (Å)."""
    folder = str(tmp_path_factory.mktemp("ctf_stack"))
    config = SimulationConfig(image_size=16, ctf=True, snr=math.inf, num_conformations=1,
                              test_conformations=0, images_per_conformation=COUNT, seed=3)
    simulated_stack.write_stack(folder, config, COUNT)
    star = os.path.join(folder, simulated_stack.STAR)
    table = read_star(star)["particles"]
    return os.path.join(folder, simulated_stack.PARTICLES), star, \
        np.array(table.column("rlnDefocusU"), np.float64)


def _rewrite(star: str, path: str, edit) -> str:
    """A copy of `star` at `path` with `edit(blocks)` applied."""
    blocks = read_star(star)
    edit(blocks)
    write_star(path, blocks)
    return path


def test_particle_stack_carries_the_ctf(ctf_stack):
    stack, star, defocus = ctf_stack
    particles = ParticleStack(stack, star)
    assert set(particles.ctf) == set(CTF_FEATURES)
    assert all(v.dtype == np.float32 and v.shape == (COUNT,) for v in particles.ctf.values())
    np.testing.assert_allclose(particles.ctf["defocus_u"], defocus, rtol=1e-6)
    for name, value in (("voltage", 300), ("spherical_aberration", 2.7),
                        ("amplitude_contrast", 0.1), ("phase_shift", 0)):
        np.testing.assert_allclose(particles.ctf[name], value, rtol=1e-6)
    assert "CTF per particle" in particles.describe()
    element = next(iter(particles.dataset("all")))
    assert set(CTF_FEATURES) <= set(element)
    assert float(element["defocus_v"]) == pytest.approx(defocus[0], rel=1e-6)
    assert float(element["voltage"]) == pytest.approx(300)


def test_particle_stack_reads_the_phase_shift(ctf_stack, tmp_path):
    stack, star, _ = ctf_stack
    shifts = np.linspace(0, 100, COUNT)

    def add_phase_shift(blocks):
        blocks["particles"].set_column("rlnPhaseShift", [f"{s:g}" for s in shifts])

    particles = ParticleStack(stack, _rewrite(star, str(tmp_path / "phase.star"),
                                              add_phase_shift))
    np.testing.assert_allclose(particles.ctf["phase_shift"], shifts, rtol=1e-6)
    element = next(iter(particles.dataset("all")))
    assert float(element["phase_shift"]) == pytest.approx(shifts[int(element["index"])])


def test_star_without_defocus_has_no_ctf_and_says_so(ctf_stack, tmp_path):
    stack, star, _ = ctf_stack

    def drop_ctf(blocks):
        table = blocks["particles"]
        keep = [i for i, c in enumerate(table.columns) if not c.startswith("rlnDefocus")]
        blocks["particles"] = StarBlock([table.columns[i] for i in keep],
                                        [[row[i] for i in keep] for row in table.rows])

    particles = ParticleStack(stack, _rewrite(star, str(tmp_path / "plain.star"), drop_ctf))
    assert particles.ctf is None and particles.angles is not None
    assert "no CTF" in particles.describe()
    assert not set(CTF_FEATURES) & set(next(iter(particles.dataset("all"))))


def _dropping(block: str, column: str):
    """A `_rewrite` edit that removes `column` from STAR block `block`."""

    def drop(blocks):
        table = blocks[block]
        i = table.columns.index(column)
        blocks[block] = StarBlock(table.columns[:i] + table.columns[i + 1:],
                                  [row[:i] + row[i + 1:] for row in table.rows])

    return drop


def test_star_with_ctf_but_no_angles_gives_ctf_only(ctf_stack, tmp_path):
    stack, star, _ = ctf_stack

    drop_psi = _dropping("particles", "rlnAnglePsi")
    particles = ParticleStack(stack, _rewrite(star, str(tmp_path / "noangles.star"), drop_psi))
    assert particles.angles is None and particles.ctf is not None


@pytest.mark.parametrize("column, value, problem", [
    ("rlnDefocusV", "-100", "column rlnDefocusV, row 3: '-100' is negative"),
    ("rlnDefocusU", "abc", "column rlnDefocusU, row 3: 'abc' is not a number"),
    ("rlnDefocusAngle", "nan", "column rlnDefocusAngle, row 3: 'nan' is not finite"),
])
def test_bad_ctf_values_name_file_column_and_row(ctf_stack, tmp_path, column, value, problem):
    stack, star, _ = ctf_stack

    def spoil(blocks):
        table = blocks["particles"]
        table.rows[2][table.columns.index(column)] = value

    bad = _rewrite(star, str(tmp_path / "bad.star"), spoil)
    with pytest.raises(DataError, match=f"^{bad}: {problem}$"):
        ParticleStack(stack, bad)


def test_partly_missing_ctf_columns_are_refused(ctf_stack, tmp_path):
    stack, star, _ = ctf_stack

    bad = _rewrite(star, str(tmp_path / "novoltage.star"), _dropping("optics", "rlnVoltage"))
    with pytest.raises(DataError, match=f"{bad}: optics group 1 .* has no voltage \\(kV, "
                       "rlnVoltage\\)"):
        ParticleStack(stack, bad)


def _cs_ctf(n: int, **changes) -> dict:
    fields = {"ctf/df1_A": np.full(n, 12000.0, np.float32),
              "ctf/df2_A": np.full(n, 11000.0, np.float32),
              "ctf/df_angle_rad": np.full(n, 0.5, np.float32),
              "ctf/accel_kv": np.full(n, 300.0, np.float32),
              "ctf/cs_mm": np.full(n, 2.7, np.float32),
              "ctf/amp_contrast": np.full(n, 0.07, np.float32),
              "blob/psize_A": np.full(n, 1.5, np.float32)}
    fields.update(changes)
    return fields


def test_cryosparc_ctf_fields(tmp_path):
    stack = str(tmp_path / "particles.mrcs")
    write_stack(stack, np.zeros((4, 8, 8), np.float32), pixel_size=2.0)
    cs = str(tmp_path / "particles.cs")
    write_cs(cs, ["J1/particles.mrcs"] * 4, np.arange(4), extra=_cs_ctf(4))
    particles = ParticleStack(stack, cs)
    assert particles.angles is None
    np.testing.assert_allclose(particles.ctf["defocus_angle"], np.degrees(0.5), rtol=1e-6)
    np.testing.assert_allclose(particles.ctf["defocus_v"], 11000.0)
    np.testing.assert_allclose(particles.ctf["pixel_size"], 1.5)
    np.testing.assert_allclose(particles.ctf["amplitude_contrast"], 0.07, rtol=1e-6)
    np.testing.assert_allclose(particles.ctf["phase_shift"], 0.0)
    shifted = _cs_ctf(4, **{"ctf/phase_shift_rad": np.full(4, np.pi / 2, np.float32)})
    write_cs(cs, ["J1/particles.mrcs"] * 4, np.arange(4), extra=shifted)
    np.testing.assert_allclose(ParticleStack(stack, cs).ctf["phase_shift"], 90.0, rtol=1e-6)
    bad = _cs_ctf(4, **{"ctf/df1_A": np.array([1e4, 1e4, -5.0, 1e4], np.float32)})
    write_cs(cs, ["J1/particles.mrcs"] * 4, np.arange(4), extra=bad)
    with pytest.raises(DataError, match=f"{cs}: particle 3: ctf/df1_A is -5 "):
        ParticleStack(stack, cs)
    partial = _cs_ctf(4)
    del partial["ctf/cs_mm"]
    write_cs(cs, ["J1/particles.mrcs"] * 4, np.arange(4), extra=partial)
    with pytest.raises(DataError, match=f"{cs}: optics group 1 .* has no spherical aberration"):
        ParticleStack(stack, cs)

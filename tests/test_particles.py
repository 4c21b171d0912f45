"""The one particle source (`data_pipeline.particles`) on files real RELION and cryoSPARC wrote
(`../shared/datasets/real_particles/`, skipped where absent) and on RELION's project layouts."""
import os

import mrcfile
import numpy as np
import pytest

from data_pipeline.datasets.particle_stack import ParticleStack
from data_pipeline.errors import DataError
from data_pipeline.formats.mrc import open_stack, write_stack
from data_pipeline.formats.star import StarBlock, read_star, write_star
from data_pipeline.particles import read_particles
from tests.cs_files import write_cs

REAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                    "datasets", "real_particles")
needs_real = pytest.mark.skipif(not os.path.isdir(REAL), reason=f"no {REAL}")


def real(name: str) -> str:
    return os.path.join(REAL, name)


@needs_real
@pytest.mark.parametrize("name", ["empiar_10076_7.star", "empiar_10076_7.cs"])
def test_relion_30_star_and_cryosparc_give_the_pixel_size_the_mrc_header_lacks(name):
    with open_stack(real("empiar_10076_7.mrc")) as stack:
        assert stack.pixel_size is None  # the header says 0
    particles = read_particles(real(name))
    assert (len(particles), particles.height) == (7, 320)
    group, = particles.groups
    assert group.pixel_size == pytest.approx(5 * 1e4 / 38168, rel=1e-6)  # 1.31 Å
    assert (group.voltage, group.spherical_aberration) == pytest.approx((300, 2.7))
    assert group.amplitude_contrast == pytest.approx(0.07)
    ctf = particles.ctf_values()
    np.testing.assert_allclose(ctf["defocus_u"][:2], [15301.1, 15303.0], rtol=1e-6)
    np.testing.assert_allclose(ctf["defocus_angle"][0], 5.28, rtol=1e-6)
    with particles.open() as reader:
        np.testing.assert_array_equal(reader.read(5, 7),
                                      mrcfile.read(real("empiar_10076_7.mrc"))[5:7])


@needs_real
def test_a_relion_31_stack_without_the_map_id_string_is_read(tmp_path):
    particles = read_particles(real("relion31.star"))
    assert (len(particles), particles.height) == (5, 256)
    assert particles.groups[0].pixel_size == pytest.approx(2.806)
    np.testing.assert_allclose(particles.origins[0], [0.019324, -0.64686])  # Å, as written
    assert particles.psi[0] == pytest.approx(124.706463)
    assert particles.ctf_values()["phase_shift"].tolist() == [0.0] * 5
    with particles.open() as reader:
        images = reader.read(0, 5)
    assert images.shape == (5, 256, 256) and np.isfinite(images).all() and images.std() > 0


@needs_real
def test_six_optics_groups_in_a_relion_project_tree(tmp_path, monkeypatch):
    """The STAR names `Polish/job520/...` stacks relative to the project root, the working
    directory; each particle takes its own group's pixel size and Cs."""
    table = read_star(real("relion31.6opticsgroups.star"))["particles"]
    names = table.column("rlnImageName")
    sizes = {}
    for name in names:
        number, _, stack = name.partition("@")
        sizes[stack] = max(sizes.get(stack, 0), int(number))
    for stack, count in sizes.items():
        os.makedirs(tmp_path / os.path.dirname(stack), exist_ok=True)
        write_stack(str(tmp_path / stack), np.zeros((count, 8, 8), np.float32), 1.0)
    monkeypatch.chdir(tmp_path)
    particles = read_particles(real("relion31.6opticsgroups.star"))
    assert len(particles.groups) == 6 and particles.notes == ()
    optics = read_star(real("relion31.6opticsgroups.star"))["optics"]
    by_number = dict(zip(optics.column("rlnOpticsGroup"), zip(
        map(float, optics.column("rlnImagePixelSize")),
        map(float, optics.column("rlnSphericalAberration")))))
    ctf = particles.ctf_values()
    for row, group in enumerate(table.column("rlnOpticsGroup")):
        assert (ctf["pixel_size"][row], ctf["spherical_aberration"][row]) == \
            pytest.approx(by_number[group], rel=1e-6)
    assert len({g.spherical_aberration for g in particles.groups}) > 1


def _project(root, stack_name: str = "Extract/job001/particles.mrcs") -> str:
    """A RELION project: Select/job002/particles.star naming Extract/job001's stack."""
    os.makedirs(root / os.path.dirname(stack_name), exist_ok=True)
    write_stack(str(root / stack_name), np.arange(3 * 64, dtype=np.float32).reshape(3, 8, 8), 2.0)
    os.makedirs(root / "Select" / "job002")
    star = str(root / "Select" / "job002" / "particles.star")
    write_star(star, {"optics": StarBlock(["rlnOpticsGroup", "rlnImagePixelSize"], [["1", "2"]]),
                      "particles": StarBlock(["rlnImageName", "rlnOpticsGroup"], [
                          [f"00000{k}@{stack_name}", "1"] for k in (3, 1)])})
    return star


def test_a_relion_project_is_read_from_its_root_as_relion_does(tmp_path, monkeypatch):
    star = _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    particles = read_particles("Select/job002/particles.star")
    assert particles.stacks == [str(tmp_path / "Extract" / "job001" / "particles.mrcs")]
    assert particles.indices.tolist() == [2, 0] and particles.notes == ()
    monkeypatch.chdir(tmp_path / "Select")  # not the project root: named nowhere
    with pytest.raises(DataError, match="stack Extract/job001/particles.mrcs \\(rlnImageName\\) "
                       "not found from the working directory .* nor from the STAR file's folder"):
        read_particles(star)


def test_stacks_beside_the_star_file_are_found_and_the_user_is_told(tmp_path, monkeypatch):
    star = _project(tmp_path, "particles.mrcs")
    os.rename(tmp_path / "particles.mrcs", tmp_path / "Select" / "job002" / "particles.mrcs")
    monkeypatch.chdir(tmp_path)
    particles = read_particles(star)
    assert particles.stacks == [str(tmp_path / "Select" / "job002" / "particles.mrcs")]
    note, = particles.notes
    assert "relative to the STAR file's folder, not the working directory" in note


def test_relion_30_pixel_origins_become_angstroms(tmp_path):
    write_stack(str(tmp_path / "s.mrcs"), np.zeros((2, 8, 8), np.float32), 0.0)
    write_star(str(tmp_path / "p.star"), {"": StarBlock(
        ["rlnImageName", "rlnOriginX", "rlnOriginY", "rlnMagnification", "rlnDetectorPixelSize"],
        [["1@s.mrcs", "1.5", "-2", "10000", "3"], ["2@s.mrcs", "0", "4", "10000", "3"]])})
    particles = read_particles(str(tmp_path / "p.star"))
    np.testing.assert_allclose(particles.origins, [[4.5, -6.0], [0.0, 12.0]])  # 3 Å pixels


def test_phase_shifts_are_read_per_particle(tmp_path):
    write_stack(str(tmp_path / "s.mrcs"), np.zeros((2, 8, 8), np.float32), 1.0)
    write_star(str(tmp_path / "p.star"), {
        "optics": StarBlock(["rlnOpticsGroup", "rlnVoltage", "rlnSphericalAberration",
                             "rlnAmplitudeContrast", "rlnImagePixelSize"],
                            [["1", "300", "2.7", "0.1", "1.0"]]),
        "particles": StarBlock(["rlnImageName", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
                                "rlnPhaseShift"],
                               [["1@s.mrcs", "1e4", "1e4", "0", "90"],
                                ["2@s.mrcs", "1e4", "1e4", "0", "12.5"]])})
    assert read_particles(str(tmp_path / "p.star")).ctf_values()["phase_shift"].tolist() == \
        [90.0, 12.5]


@pytest.mark.parametrize("mode, dtype", [(0, np.int8), (1, np.int16), (2, np.float32),
                                         (6, np.uint16), (12, np.float16)])
def test_mrc_modes_relion_writes_are_read_as_float32(tmp_path, mode, dtype):
    data = np.arange(2 * 4 * 4).reshape(2, 4, 4).astype(dtype)
    with mrcfile.new(str(tmp_path / "s.mrcs")) as mrc:
        mrc.set_data(data)
        assert int(mrc.header.mode) == mode
    with open_stack(str(tmp_path / "s.mrcs")) as stack:
        read = stack.read(0, 2)
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, data.astype(np.float32))


def test_a_header_without_the_map_id_string_is_read(tmp_path):
    path = str(tmp_path / "s.mrcs")
    write_stack(path, np.ones((2, 4, 4), np.float32), 1.5)
    with open(path, "r+b") as f:
        f.seek(208)  # the "MAP " ID string and the machine stamp, as older writers leave them
        f.write(b"\0" * 8)
    with open_stack(path) as stack:
        assert stack.shape == (2, 4, 4) and stack.pixel_size == pytest.approx(1.5)


def test_optics_a_bare_stack_lacks_are_named_by_their_flag(tmp_path):
    write_stack(str(tmp_path / "s.mrcs"), np.zeros((2, 8, 8), np.float32), 0.0)
    particles = read_particles(str(tmp_path / "s.mrcs"))
    with pytest.raises(DataError, match="optics group 1 .* has no pixel size .* --pixel_size"):
        particles.check_optics()
    given = particles.with_optics(pixel_size=1.2, voltage=300, spherical_aberration=2.7,
                                  amplitude_contrast=0.1)
    given.check_optics()
    assert given.pixel_sizes().tolist() == [1.2, 1.2]
    with pytest.raises(DataError, match="s.mrcs: optics group 1: invalid optics .*voltage=-3"):
        given.with_optics(voltage=-3).check_optics()


def test_several_stacks_and_nonfinite_particles_numbered_from_one(tmp_path):
    a, b = np.zeros((3, 8, 8), np.float32), np.ones((2, 8, 8), np.float32)
    b[1, 2, 2] = np.nan
    write_stack(str(tmp_path / "a.mrcs"), a, 1.0)
    write_stack(str(tmp_path / "b.mrcs"), b, 1.0)
    write_cs(str(tmp_path / "p.cs"), ["J1/a.mrcs", "J1/b.mrcs", "J1/a.mrcs", "J1/b.mrcs"],
             [2, 0, 0, 1])
    particles = read_particles(str(tmp_path / "p.cs"))
    with particles.open() as reader:
        assert reader.take(np.array([1, 2])).mean(axis=(1, 2)).tolist() == [1.0, 0.0]
    assert particles.nonfinite() == [4]
    with pytest.raises(DataError, match="p.cs: particle 4 \\(1-based\\) has NaN/Inf pixels"):
        particles.check_finite()


def test_a_star_over_several_stacks_streams_every_particle_for_training(tmp_path, monkeypatch):
    """Training takes a STAR file alone (`--star`): every particle it names, from any stack, in
    its row order, with the images of the rows' own stacks."""
    a, b = np.zeros((3, 8, 8), np.float32), np.ones((2, 8, 8), np.float32)
    a[:, 0, 0], b[:, 0, 0] = [10, 11, 12], [20, 21]
    os.makedirs(tmp_path / "Extract")
    write_stack(str(tmp_path / "Extract" / "a.mrcs"), a, 1.0)
    write_stack(str(tmp_path / "Extract" / "b.mrcs"), b, 1.0)
    names = ["2@Extract/b.mrcs", "1@Extract/a.mrcs", "3@Extract/a.mrcs", "1@Extract/b.mrcs",
             "2@Extract/a.mrcs"]
    write_star(str(tmp_path / "p.star"), {"particles": StarBlock(
        ["rlnImageName", "rlnAnglePsi"], [[n, "0"] for n in names])})
    monkeypatch.chdir(tmp_path)
    stack = ParticleStack(star="p.star")
    elements = list(stack.dataset("all", chunk_size=2).as_numpy_iterator())
    assert [int(e["observed"][0, 0, 0]) for e in elements] == [21, 10, 12, 20, 11]
    assert [int(e["index"]) for e in elements] == [0, 1, 2, 3, 4]

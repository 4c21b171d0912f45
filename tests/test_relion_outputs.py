"""What `canonicalize` writes, as RELION's own tools read it: real RELION/cryoSPARC inputs
(`../shared/datasets/real_particles/`) resampled, a RELION project run from its root, several optics
groups with phase shifts trained and canonicalized. RELION's programs (`relion_star_handler`,
`relion_image_handler`, `relion_reconstruct`) are run where installed, skipped with a reason where
not."""
import math
import os
import shutil
import subprocess

import mrcfile
import numpy as np
import pytest

from data_pipeline import ctf
from data_pipeline.formats.mrc import open_stack, write_stack
from data_pipeline.formats.star import StarBlock, particles_block, read_star, write_star
from data_pipeline.particles import read_particles
from rotinv_tf.config import Config
from rotinv_tf.serving.export import export_saved_model
from rotinv_tf.serving.inference import canonicalize_particles
from rotinv_tf.training import train_lib
from tests.contract_models import TemplateMatcher, built
from tests.test_canonicalize import (NORMALIZATION, OPTICS_FLAGS, assert_one_line_error, run_cli,
                                     two_blobs)
from tests.test_particles import needs_real, real

SIZE = 24
GROUPS = os.path.join(os.path.dirname(__file__), "data", "relion_ctf_groups")
PLAIN = os.path.join(os.path.dirname(__file__), "data", "relion_ctf", "plain.mrcs")


def relion(program: str, *args: str, cwd) -> str:
    """Runs a RELION program (skipping the test where it is not installed); its stdout."""
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed (Debian package relion)")
    done = subprocess.run([program, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-1000:]
    return done.stdout


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("relion_out")
    model = built(TemplateMatcher(two_blobs(SIZE)), SIZE)
    return export_saved_model(model, NORMALIZATION, SIZE, str(root / "saved_models"), "tm")


@needs_real
@pytest.mark.parametrize("name, box", [("empiar_10076_7.star", 320), ("empiar_10076_7.cs", 320),
                                       ("relion31.star", 256)])
def test_real_inputs_resampled_keep_one_pixel_size_that_relion_reads(saved_model, tmp_path,
                                                                     monkeypatch, name, box):
    monkeypatch.chdir(tmp_path)
    pixel = read_particles(real(name)).groups[0].pixel_size
    summary = canonicalize_particles(saved_model, real(name), "Canonical/c.mrcs",
                                     "Canonical/c.star", resample=True)
    expected = pixel * box / SIZE
    with open_stack(summary.output) as stack:
        assert stack.pixel_size == pytest.approx(expected, rel=1e-5)
    written = read_star(summary.star)
    optics = written["optics"]
    assert float(optics.column("rlnImagePixelSize")[0]) == pytest.approx(expected, rel=1e-5)
    assert optics.column("rlnImageSize") == [str(SIZE)]
    assert optics.column("rlnImageDimensionality") == ["2"]
    assert all(c in optics for c in ("rlnVoltage", "rlnSphericalAberration",
                                     "rlnAmplitudeContrast"))
    table = written["particles"]
    assert "rlnMagnification" not in table and "rlnVoltage" not in table  # now in the optics
    assert table.column("rlnOpticsGroup") == ["1"] * len(table)
    assert table.column("rlnImageName")[0] == "000001@Canonical/c.mrcs"  # from the project root
    text = open(summary.star).read()
    assert text.count("# version 30001") == 2
    if name == "relion31.star":  # origins stay in Å, which resampling does not change
        np.testing.assert_allclose(
            np.float64(table.column("rlnOriginXAngst")),
            np.float64(particles_block(read_star(real(name))).column("rlnOriginXAngst")))

    selected = relion("relion_star_handler", "--i", "Canonical/c.star", "--o", "selected.star",
                      "--select", "rlnOpticsGroup", "--minval", "1", "--maxval", "1",
                      cwd=tmp_path)
    assert f"with {len(table)} item(s)" in selected
    stats = relion("relion_image_handler", "--i", "Canonical/c.star", "--stats", cwd=tmp_path)
    assert stats.count(f"angpix = {expected:.4f}"[:14]) == len(table)
    if name == "relion31.star":  # it carries rlnAngleRot/Tilt: a map RELION reconstructs
        relion("relion_reconstruct", "--i", "Canonical/c.star", "--o", "map.mrc", cwd=tmp_path)
        with mrcfile.open(str(tmp_path / "map.mrc")) as volume:
            assert volume.data.shape == (SIZE,) * 3
            assert float(volume.voxel_size.x) == pytest.approx(expected, rel=1e-4)


def _project(root) -> None:
    """A RELION project: Select/job002/particles.star names Extract/job001/particles.mrcs."""
    os.makedirs(root / "Extract" / "job001")
    os.makedirs(root / "Select" / "job002")
    images = np.stack([np.rot90(two_blobs(SIZE), k % 4) for k in range(6)]) * 100.0
    write_stack(str(root / "Extract" / "job001" / "particles.mrcs"), images, 1.7)
    write_star(str(root / "Select" / "job002" / "particles.star"), {
        "optics": StarBlock(["rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage",
                             "rlnSphericalAberration", "rlnAmplitudeContrast",
                             "rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality"],
                            [["1", "opticsGroup1", "300", "2.7", "0.1", "1.7", str(SIZE), "2"]]),
        "particles": StarBlock(["rlnImageName", "rlnOpticsGroup", "rlnOriginX", "rlnOriginY"],
                               [[f"{k:06d}@Extract/job001/particles.mrcs", "1", "1", "-2"]
                                for k in range(1, 7)])})


def test_a_relion_project_from_its_root_into_a_job_folder(saved_model, tmp_path):
    _project(tmp_path)
    done = run_cli(f"--saved_model={saved_model}", "--input=Select/job002/particles.star",
                   "--output=Canonical/job003/canonical.mrcs",
                   "--star=Canonical/job003/particles.star", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "note:" not in done.stdout  # names resolved as RELION does: nothing to say
    table = read_star(str(tmp_path / "Canonical" / "job003" / "particles.star"))["particles"]
    assert table.column("rlnImageName")[0] == "000001@Canonical/job003/canonical.mrcs"
    assert "rlnOriginX" not in table  # RELION 3.0's pixels become Å
    assert table.column("rlnOriginXAngst") == ["1.700000"] * 6
    assert table.column("rlnOriginYAngst") == ["-3.400000"] * 6
    out = relion("relion_star_handler", "--i", "Canonical/job003/particles.star", "--o",
                 "selected.star", "--select", "rlnOpticsGroup", "--minval", "1",
                 "--maxval", "1", cwd=tmp_path)
    assert "with 6 item(s)" in out
    relion("relion_image_handler", "--i", "selected.star", "--stats",
           cwd=tmp_path)


def test_a_bare_stack_needs_the_optics_the_output_names(saved_model, tmp_path):
    write_stack(str(tmp_path / "p.mrcs"), np.stack([two_blobs(SIZE)] * 3) * 100.0, 0.0)
    done = run_cli(f"--saved_model={saved_model}", "--input=p.mrcs", "--output=out/c.mrcs",
                   "--star=out/c.star", *OPTICS_FLAGS, cwd=tmp_path)
    assert_one_line_error(done, "p.mrcs", "has no pixel size", "--pixel_size")
    assert not (tmp_path / "out").exists()
    done = run_cli(f"--saved_model={saved_model}", "--input=p.mrcs", "--output=out/c.mrcs",
                   "--star=out/c.star", *OPTICS_FLAGS, "--pixel_size=2.5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    optics = read_star(str(tmp_path / "out" / "c.star"))["optics"]
    assert [optics.column(c)[0] for c in ("rlnImagePixelSize", "rlnVoltage",
                                          "rlnSphericalAberration", "rlnAmplitudeContrast")] == \
        ["2.500000", "300", "2.7", "0.1"]
    with open_stack(str(tmp_path / "out" / "c.mrcs")) as stack:
        assert stack.pixel_size == pytest.approx(2.5)


def test_relion_projects_two_optics_groups_with_phase_shifts_as_the_source_reads_them():
    """`relion_project --ctf` images of two optics groups with phase shifts: each particle's CTF,
    as the particle source reads it from RELION's STAR, turns the plain projections into
    RELION's."""
    particles = read_particles(os.path.join(GROUPS, "ctf.star"))
    assert len(particles.groups) == 2 and set(particles.phase_shift) > {0.0}
    with particles.open() as reader:
        theirs = reader.read(0, len(particles)).astype(np.float64)
    plain = mrcfile.read(PLAIN).astype(np.float64)
    ours = ctf.apply_ctf(plain, particles.ctf_values()).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5 * np.abs(theirs).max())
    ignored = ctf.apply_ctf(plain, {**particles.ctf_values(),
                                    "phase_shift": np.zeros(len(particles), np.float32)}).numpy()
    assert np.abs(ignored - theirs).max() > 0.1 * np.abs(theirs).max()  # the test can fail


def test_several_optics_groups_train_and_canonicalize(tmp_path, monkeypatch):
    """RELION's two-group stack (no angles: the learned frame) trains with each particle's CTF
    and canonicalizes into a STAR with both groups."""
    monkeypatch.chdir(GROUPS)  # ctf.star names ctf.mrcs from here, as RELION wrote it
    config = Config().replace(
        name="groups", dataset="particle_stack", star="ctf.star", data_dir=str(tmp_path / "tfds"),
        epochs=1, batch_size=4, latent_dim=4, filters=4, critic_filters=2, frame="learned",
        frame_angles=32, model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "saved"))
    result = train_lib.train(config, verbose=0)
    assert all(math.isfinite(v[-1]) for v in result.history.values())
    summary = canonicalize_particles(result.export_path, "ctf.star", str(tmp_path / "c.mrcs"),
                                     str(tmp_path / "c.star"))
    written = read_star(summary.star)
    assert written["optics"].column("rlnVoltage") == ["300", "200"]
    assert written["particles"].column("rlnOpticsGroup") == \
        read_star("ctf.star")["particles"].column("rlnOpticsGroup")
    assert "CTF correction model" in open(summary.star).read()

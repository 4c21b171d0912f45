"""Canonicalizing particle stacks through a SavedModel: the CLI end to end, STAR files, resampling,
and bad input (exit status 2, one `error:` line, no output left behind).

The model is `TemplateMatcher`, which knows the canonical image, so predicted angles can be checked
against the true ones: that pins down the `rlnAnglePsi` sign convention.
"""
import os
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import tensorflow as tf

from tests.contract_models import TemplateMatcher, built
from tests.cs_files import write_cs
from data_pipeline import ctf
from data_pipeline.errors import DataError
from data_pipeline.formats.mrc import open_stack, write_stack
from data_pipeline.formats.star import StarBlock, read_star, write_star
from data_pipeline.preprocessing import Normalization
from data_pipeline.rotation import rotate
from data_pipeline import particles as particles_module
from rotinv_tf.models.ctf_corrections import CORRECTIONS
from rotinv_tf.models.frames import LearnedFrame
from rotinv_tf.serving.export import export_saved_model
from rotinv_tf.serving.inference import canonicalize_particles, fourier_resample
from rotinv_tf.serving.saved_model import load_serving_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
SIZE, N, PIXEL_SIZE = 24, 20, 1.7
NORMALIZATION = Normalization(mean=10.0, std=20.0, min=0.0, max=100.0)
# A bare stack has no optics; the output STAR needs them (RELION reads no optics table without).
OPTICS = {"voltage": 300.0, "spherical_aberration": 2.7, "amplitude_contrast": 0.1}
OPTICS_FLAGS = [f"--{name}={value}" for name, value in OPTICS.items()]


def two_blobs(size: int) -> np.ndarray:
    """An asymmetric image in [0, 1]: a bright blob and a fainter one."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32) - (size - 1) / 2
    image = np.exp(-((yy + size / 5) ** 2 + (xx - 1) ** 2) / 6) \
        + 0.5 * np.exp(-((yy - 1) ** 2 + (xx - size / 5) ** 2) / 4)
    return (image / image.max()).astype(np.float32)


def psi_error(psi_degrees, angles) -> float:
    """Largest wrapped difference, in degrees, between rlnAnglePsi values and angles (radians)."""
    diff = np.asarray(psi_degrees, np.float64) - np.rad2deg(angles)
    return float(np.abs((diff + 180.0) % 360.0 - 180.0).max())


def psi_column(star_path: str) -> np.ndarray:
    return np.array([float(v) for v in read_star(star_path)["particles"].column("rlnAnglePsi")])


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rotinv_tf.canonicalize", *args], cwd=cwd,
                          env=ENV, capture_output=True, text=True)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A SavedModel of a TemplateMatcher, and N rotated copies of its template (raw units)."""
    root = tmp_path_factory.mktemp("canon")
    template = two_blobs(SIZE)
    model = built(TemplateMatcher(template), SIZE)
    saved_model = export_saved_model(model, NORMALIZATION, SIZE, str(root / "saved_models"), "tm")
    angles = np.random.default_rng(0).uniform(-np.pi, np.pi, N).astype(np.float32)
    raw = np.repeat(template[np.newaxis, ..., np.newaxis] * 100.0, N, axis=0)
    particles = rotate(raw, angles).numpy()[..., 0]
    write_stack(str(root / "particles.mrcs"), particles, PIXEL_SIZE)
    return {"root": root, "saved_model": saved_model, "angles": angles, "particles": particles}


def test_cli_end_to_end_on_an_mrc_stack(data, tmp_path):
    result = run_cli(f"--saved_model={data['saved_model']}",
                     f"--input={data['root'] / 'particles.mrcs'}", "--output=out/canonical.mrcs",
                     "--star=out/angles.star", "--batch_size=7", *OPTICS_FLAGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    training, summary = result.stdout.strip().splitlines()
    assert training == "the model's training config was not recorded"  # exported without one
    assert f"{N} particles" in summary and "particles/s" in summary
    assert "out/canonical.mrcs" in summary and "out/angles.star" in summary
    assert f"{N}/{N} particles" in result.stderr  # the progress bar
    assert sorted(os.listdir(tmp_path / "out")) == ["angles.star", "angles_overview.png",
                                                    "canonical.mrcs"]

    with open_stack(str(tmp_path / "out" / "canonical.mrcs")) as stack:
        assert stack.shape == (N, SIZE, SIZE)
        assert stack.pixel_size == pytest.approx(PIXEL_SIZE, rel=1e-5)
        canonical = stack.read(0, N)
    expected = load_serving_model(data["saved_model"]).predict(data["particles"])
    np.testing.assert_allclose(canonical, expected["canonical_image"][..., 0], atol=1e-4)

    blocks = read_star(str(tmp_path / "out" / "angles.star"))
    assert float(blocks["optics"].column("rlnImagePixelSize")[0]) == pytest.approx(PIXEL_SIZE)
    names = blocks["particles"].column("rlnImageName")
    assert names == [f"{i:06d}@out/canonical.mrcs" for i in range(1, N + 1)]  # from cwd
    # The sign convention: rlnAnglePsi is the true θ (observed = rotate(canonical, θ)) in degrees.
    assert psi_error(psi_column(str(tmp_path / "out" / "angles.star")), data["angles"]) < 1.0


def simulate_stack(tmp_path, count: int, max_shift: int) -> np.ndarray:
    """A near-noiseless stack of one conformation in tmp_path/sim by the simulate CLI; returns
    its canonical image (every particle's, with one conformation)."""
    sim = subprocess.run([sys.executable, "-m", "data_pipeline.simulate", "--output_dir=sim",
                          f"--num_images={count}", f"--image_size={SIZE}", "--snr=1000",
                          f"--max_shift={max_shift}", "--noctf", "--num_conformations=1"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert sim.returncode == 0, sim.stderr[-2000:]
    with open_stack(str(tmp_path / "sim" / "canonical.mrcs")) as stack:
        return stack.read(0, 1)[0]


def test_cli_on_the_simulators_star_file_recovers_its_true_angles(tmp_path):
    template = simulate_stack(tmp_path, 12, max_shift=0)
    normalization = Normalization(mean=0.0, std=1.0, min=float(template.min()),
                                  max=float(template.max()))
    model = built(TemplateMatcher(normalization.normalize(template).numpy()), SIZE)
    saved_model = export_saved_model(model, normalization, SIZE, str(tmp_path / "sm"), "sim")

    result = run_cli(f"--saved_model={saved_model}", "--input=sim/particles.star",
                     "--output=out/canonical.mrcs", "--star=out/canonical.star", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    source = read_star(str(tmp_path / "sim" / "particles.star"))
    written = read_star(str(tmp_path / "out" / "canonical.star"))
    true_angles = np.deg2rad([float(v) for v in source["particles"].column("rlnAnglePsi")])
    assert psi_error(psi_column(str(tmp_path / "out" / "canonical.star")), true_angles) < 2.0
    assert written["optics"] == source["optics"]
    for column in source["particles"].columns:
        if column not in ("rlnImageName", "rlnAnglePsi"):
            assert written["particles"].column(column) == source["particles"].column(column)
    assert written["particles"].column("rlnImageName")[:2] == [
        "000001@out/canonical.mrcs", "000002@out/canonical.mrcs"]


def test_star_input_over_several_stacks_carries_rows_and_columns(data, tmp_path, monkeypatch):
    monkeypatch.setattr(particles_module, "MAX_OPEN_STACKS", 1)  # rows alternate stacks
    (tmp_path / "in" / "stacks").mkdir(parents=True)
    write_stack(str(tmp_path / "in" / "stacks" / "a.mrcs"), data["particles"][:12], PIXEL_SIZE)
    write_stack(str(tmp_path / "in" / "b.mrcs"), data["particles"][12:], PIXEL_SIZE)
    order = np.random.default_rng(1).permutation(N)  # rows out of stack order
    names = [f"{i + 1:06d}@stacks/a.mrcs" if i < 12 else f"{i - 11:06d}@b.mrcs" for i in order]
    rows = [[name, "999.0", f"mic{i % 3}.mrc", str(10000 + i)] for name, i in zip(names, order)]
    blocks = {
        "optics": StarBlock(["rlnOpticsGroup", "rlnImagePixelSize", "rlnImageSize"],
                            [["1", str(PIXEL_SIZE), str(SIZE)]]),
        "particles": StarBlock(["rlnImageName", "rlnAnglePsi", "rlnMicrographName",
                                "rlnCtfFigureOfMerit"], rows)}
    write_star(str(tmp_path / "in" / "particles.star"), blocks)

    summary = canonicalize_particles(data["saved_model"], str(tmp_path / "in" / "particles.star"),
                                     str(tmp_path / "out" / "c.mrcs"),
                                     str(tmp_path / "out" / "c.star"), batch_size=6,
                                     optics=OPTICS)
    assert summary.particles == N and summary.pixel_size == pytest.approx(PIXEL_SIZE)
    written = read_star(str(tmp_path / "out" / "c.star"))
    optics = written["optics"]  # the input's, completed with what the flags gave
    assert optics.columns[:3] == blocks["optics"].columns
    assert [optics.column(c) for c in ("rlnVoltage", "rlnSphericalAberration",
                                       "rlnAmplitudeContrast")] == [["300"], ["2.7"], ["0.1"]]
    table = written["particles"]
    assert table.columns == ["rlnImageName", "rlnAnglePsi", "rlnMicrographName",
                             "rlnCtfFigureOfMerit", "rlnOpticsGroup"]
    assert table.column("rlnCtfFigureOfMerit") == [str(10000 + i) for i in order]
    assert table.column("rlnMicrographName") == [f"mic{i % 3}.mrc" for i in order]
    assert table.column("rlnImageName") == [f"{k:06d}@{tmp_path}/out/c.mrcs"
                                            for k in range(1, N + 1)]  # outside cwd: absolute
    assert psi_error(psi_column(str(tmp_path / "out" / "c.star")), data["angles"][order]) < 1.0
    with open_stack(str(tmp_path / "out" / "c.mrcs")) as stack:
        expected = load_serving_model(data["saved_model"]).predict(data["particles"][order])
        np.testing.assert_allclose(stack.read(0, N), expected["canonical_image"][..., 0],
                                   atol=1e-4)


def test_star_rows_reach_disk_batch_by_batch(data, tmp_path):
    """The STAR file's rows are streamed to its temporary file as each batch is done, not held
    until the end (the memory of a million-particle run stays flat)."""
    out = tmp_path / "out"
    on_disk = []

    def rows_on_disk(done: int, total: int) -> None:
        temporary, = [f for f in os.listdir(out) if f.startswith(".c.star.")]
        lines = (out / temporary).read_text().splitlines()
        on_disk.append((done, sum("/c.mrcs" in line for line in lines)))

    canonicalize_particles(data["saved_model"], str(data["root"] / "particles.mrcs"),
                           str(out / "c.mrcs"), str(out / "c.star"), batch_size=6,
                           progress=rows_on_disk, optics=OPTICS)
    assert on_disk == [(6, 6), (12, 12), (18, 18), (20, 20)]
    assert len(read_star(str(out / "c.star"))["particles"]) == N


def test_cryosparc_input_gives_a_relion_star_in_its_row_order(data, tmp_path):
    (tmp_path / "in" / "stacks").mkdir(parents=True)
    write_stack(str(tmp_path / "in" / "stacks" / "a.mrcs"), data["particles"][:12], PIXEL_SIZE)
    write_stack(str(tmp_path / "in" / "b.mrcs"), data["particles"][12:], PIXEL_SIZE)
    order = np.random.default_rng(2).permutation(N)
    # cryoSPARC paths start with the job folder; the .cs file sits beside the stacks' folders.
    paths = ["J12/stacks/a.mrcs" if i < 12 else ">J3/b.mrcs" for i in order]
    write_cs(str(tmp_path / "in" / "particles.cs"), paths, [i if i < 12 else i - 12 for i in order])

    summary = canonicalize_particles(data["saved_model"], str(tmp_path / "in" / "particles.cs"),
                                     str(tmp_path / "out" / "c.mrcs"),
                                     str(tmp_path / "out" / "c.star"), batch_size=7,
                                     optics=OPTICS)
    assert summary.particles == N and summary.pixel_size == pytest.approx(PIXEL_SIZE)
    written = read_star(summary.star)
    assert list(written) == ["optics", "particles"]  # RELION 3.1
    assert float(written["optics"].column("rlnImagePixelSize")[0]) == pytest.approx(PIXEL_SIZE)
    assert written["particles"].column("rlnImageName") == [f"{k:06d}@{summary.output}"
                                                           for k in range(1, N + 1)]
    assert psi_error(psi_column(summary.star), data["angles"][order]) < 1.0


def refine_comment(star_path: str) -> str:
    """The STAR file's comment line on refinement."""
    lines = [line for line in open(star_path).read().splitlines()
             if line.startswith("# rotinv_tf: rlnAnglePsi")]
    assert len(lines) == 1
    return lines[0]


def test_refinement_corrects_a_coarse_angle_and_refine_false_keeps_it(data, tmp_path):
    # A "network" on a 15° grid that returns the true canonical image, as a decoder would.
    model = built(TemplateMatcher(two_blobs(SIZE), steps=24, returns_template=True), SIZE)
    saved_model = export_saved_model(model, NORMALIZATION, SIZE, str(tmp_path / "sm"), "coarse")
    network = load_serving_model(saved_model).predict(data["particles"])
    assert psi_error(np.rad2deg(network["angle"]), data["angles"]) > 3.0

    refined = canonicalize_particles(saved_model, str(data["root"] / "particles.mrcs"),
                                     str(tmp_path / "on.mrcs"), str(tmp_path / "on.star"),
                                     batch_size=7, optics=OPTICS)
    assert psi_error(psi_column(refined.star), data["angles"]) < 1.0
    assert "refined within +-10 deg in 0.5 deg steps" in refine_comment(refined.star)
    assert "rlnOriginXAngst" not in read_star(refined.star)["particles"]

    result = run_cli(f"--saved_model={saved_model}",
                     f"--input={data['root'] / 'particles.mrcs'}", "--output=off.mrcs",
                     "--star=off.star", "--refine=false", *OPTICS_FLAGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert psi_error(psi_column(str(tmp_path / "off.star")), network["angle"]) < 1e-4
    assert "not refined (--refine=false)" in refine_comment(str(tmp_path / "off.star"))
    for stack_path in (refined.output, tmp_path / "off.mrcs"):  # the decoder output either way
        with open_stack(str(stack_path)) as stack:
            np.testing.assert_allclose(stack.read(0, N), network["canonical_image"][..., 0],
                                       atol=1e-4)


def test_the_refinement_window_and_step_are_settings(data, tmp_path):
    """A window narrower than the network's error leaves most of it; the STAR comment says the
    window and step used; a step the search cannot take is one error line."""
    model = built(TemplateMatcher(two_blobs(SIZE), steps=24, returns_template=True), SIZE)
    saved_model = export_saved_model(model, NORMALIZATION, SIZE, str(tmp_path / "sm"), "coarse")
    narrow = canonicalize_particles(saved_model, str(data["root"] / "particles.mrcs"),
                                    str(tmp_path / "n.mrcs"), str(tmp_path / "n.star"),
                                    optics=OPTICS, refine_window_degrees=1.0,
                                    refine_step_degrees=0.25)
    assert psi_error(psi_column(narrow.star), data["angles"]) > 1.5
    assert "refined within +-1 deg in 0.25 deg steps" in refine_comment(narrow.star)
    with pytest.raises(ValueError, match="refine_step_degrees <= 90"):
        canonicalize_particles(saved_model, str(data["root"] / "particles.mrcs"),
                               str(tmp_path / "z.mrcs"), str(tmp_path / "z.star"),
                               refine_step_degrees=0.0)
    result = run_cli(f"--saved_model={saved_model}",
                     f"--input={data['root'] / 'particles.mrcs'}", "--output=z.mrcs",
                     "--star=z.star", "--refine_step_degrees=0", *OPTICS_FLAGS, cwd=tmp_path)
    assert_one_line_error(result, "refine_step_degrees <= 90")
    assert not any(name.startswith("z.") for name in os.listdir(tmp_path))


class LearnedFrameMatcher(TemplateMatcher):
    """A learned-frame model whose angles are right (0.5° grid) but whose "decoder" returns its
    canonical image 4° off the frame, as an imperfect decoder does (issue 15); it serves its
    template as the refinement `reference`, as a learned frame does, unless `serves_reference` is
    False (an export from before that output)."""

    frame = LearnedFrame  # its kind of frame, which exports record by name

    def __init__(self, *args, serves_reference: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.serves_reference = serves_reference

    def canonicalize(self, images: tf.Tensor) -> dict:
        encoded = self.encode(images)
        count = tf.shape(images)[0]
        turned = rotate(self.template[tf.newaxis], tf.constant([np.radians(4.0)], tf.float32))
        out = {"canonical_image": tf.repeat(turned, count, axis=0), **encoded}
        if self.serves_reference:
            out["reference"] = tf.repeat(self.template[tf.newaxis], count, axis=0)
        return out


def test_a_learned_frame_is_refined_against_its_template_not_its_decoded_image(data, tmp_path):
    stack = str(data["root"] / "particles.mrcs")
    model = built(LearnedFrameMatcher(two_blobs(SIZE), steps=720), SIZE)
    saved_model = export_saved_model(model, NORMALIZATION, SIZE, str(tmp_path / "sm"), "learned")
    summary = canonicalize_particles(saved_model, stack, str(tmp_path / "default.mrcs"),
                                     str(tmp_path / "default.star"), optics=OPTICS)
    assert psi_error(psi_column(summary.star), data["angles"]) < 1.0
    assert "against its class template" in refine_comment(summary.star)
    kept = canonicalize_particles(saved_model, stack, str(tmp_path / "kept.mrcs"),
                                  str(tmp_path / "kept.star"), refine=False, optics=OPTICS)
    network = load_serving_model(saved_model).predict(data["particles"])
    assert psi_error(psi_column(kept.star), network["angle"]) < 1e-4
    # The test can fail: against the decoded image (an older export) the angles go 4° off.
    old = built(LearnedFrameMatcher(two_blobs(SIZE), steps=720, serves_reference=False), SIZE)
    old_model = export_saved_model(old, NORMALIZATION, SIZE, str(tmp_path / "sm"), "old")
    decoded = canonicalize_particles(old_model, stack, str(tmp_path / "old.mrcs"),
                                     str(tmp_path / "old.star"), optics=OPTICS)
    assert psi_error(psi_column(decoded.star), data["angles"]) > 3.0
    assert "against each particle's canonical image" in refine_comment(decoded.star)


@pytest.mark.parametrize("correction", ["phase_flip", "model"])
def test_a_template_reference_is_compared_with_phase_flipped_particles(correction):
    """A learned frame's template averages particles as the frame sees them, phase-flipped under
    either correction; so refinement flips the particles and leaves the template as it is."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((3, SIZE, SIZE)).astype(np.float32)
    reference = rng.standard_normal((3, SIZE, SIZE, 1)).astype(np.float32)
    batch_ctf = ctf.particle_ctf(np.full(3, 15000.0), np.full(3, 14000.0), np.full(3, 30.0),
                                 ctf.Optics(pixel_size=2.0))
    result = {"canonical_image": np.zeros_like(reference), "reference": reference,
              "angle": np.zeros(3, np.float32)}
    particles, references = CORRECTIONS[correction].refinement_pair(batch_ctf, images, result)
    flipped = ctf.apply_ctf(images, batch_ctf, "phase_flip", pad_factor=1)  # on the box
    np.testing.assert_allclose(particles, flipped.numpy(), atol=1e-5)
    assert not np.allclose(particles, images, atol=1e-2)
    np.testing.assert_array_equal(references, reference)


def test_refine_max_shift_writes_the_shifts_as_relion_origins(tmp_path):
    template = simulate_stack(tmp_path, 16, max_shift=2)
    model = built(TemplateMatcher(template, returns_template=True), SIZE)
    saved_model = export_saved_model(model, Normalization(0.0, 1.0, 0.0, 1.0), SIZE,
                                     str(tmp_path / "sm"), "sim")
    summary = canonicalize_particles(saved_model, str(tmp_path / "sim" / "particles.star"),
                                     str(tmp_path / "c.mrcs"), str(tmp_path / "c.star"),
                                     refine_max_shift=3)
    source = read_star(str(tmp_path / "sim" / "particles.star"))["particles"]
    written = read_star(summary.star)["particles"]
    for column in ("rlnOriginXAngst", "rlnOriginYAngst"):
        found = np.array([float(v) for v in written.column(column)])
        true = np.array([float(v) for v in source.column(column)])
        assert np.abs(found - true).max() < summary.pixel_size
    # Angles: the template matcher misses a few shifted particles by more than the window.
    errors = psi_column(summary.star) - np.array([float(v) for v in source.column("rlnAnglePsi")])
    assert np.median(np.abs((errors + 180.0) % 360.0 - 180.0)) < 2.0
    assert "shifts of up to 3 px" in refine_comment(summary.star)

    with pytest.raises(DataError, match=f"refine_max_shift {SIZE // 2} must be in"):
        canonicalize_particles(saved_model, str(tmp_path / "sim" / "particles.star"),
                               str(tmp_path / "out" / "c.mrcs"), str(tmp_path / "out" / "c.star"),
                               refine_max_shift=SIZE // 2)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_fourier_resample_keeps_band_limited_content():
    image = two_blobs(SIZE)[np.newaxis]
    up = fourier_resample(image, 2 * SIZE)
    assert up.shape == (1, 2 * SIZE, 2 * SIZE)
    assert up.mean() == pytest.approx(image.mean(), abs=1e-5)
    np.testing.assert_allclose(fourier_resample(up, SIZE), image, atol=1e-4)
    np.testing.assert_allclose(fourier_resample(np.full((2, 9, 9), 3.0), 5), 3.0, atol=1e-6)


def test_size_mismatch_is_an_error_unless_resampling(data, tmp_path):
    large = fourier_resample(data["particles"], 2 * SIZE)
    write_stack(str(tmp_path / "large.mrcs"), large, PIXEL_SIZE / 2)
    result = run_cli(f"--saved_model={data['saved_model']}", "--input=large.mrcs",
                     "--output=out/c.mrcs", "--star=out/c.star", cwd=tmp_path)
    assert_one_line_error(result, "large.mrcs", f"{2 * SIZE}x{2 * SIZE}", f"{SIZE}x{SIZE}",
                          "--resample")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []

    summary = canonicalize_particles(data["saved_model"], str(tmp_path / "large.mrcs"),
                                     str(tmp_path / "out" / "c.mrcs"),
                                     str(tmp_path / "out" / "c.star"), resample=True,
                                     optics=OPTICS)
    with open_stack(summary.output) as stack:
        assert stack.shape == (N, SIZE, SIZE)
        assert stack.pixel_size == pytest.approx(PIXEL_SIZE, rel=1e-5)  # (1.7/2) * 48/24
    optics = read_star(summary.star)["optics"]
    assert float(optics.column("rlnImagePixelSize")[0]) == pytest.approx(PIXEL_SIZE)
    assert optics.column("rlnImageSize") == [str(SIZE)]
    assert psi_error(psi_column(summary.star), data["angles"]) < 1.5


def test_nonfinite_pixels_are_reported_by_particle_number(data, tmp_path):
    particles = data["particles"].copy()
    particles[2, 5, 5] = np.nan
    particles[16, 0, 0] = np.inf
    write_stack(str(tmp_path / "bad.mrcs"), particles, PIXEL_SIZE)
    result = run_cli(f"--saved_model={data['saved_model']}", "--input=bad.mrcs",
                     "--output=out/c.mrcs", "--star=out/c.star", "--batch_size=8", *OPTICS_FLAGS,
                     cwd=tmp_path)
    assert_one_line_error(result, "bad.mrcs", "particles 3, 17 (1-based) have NaN/Inf")
    assert not (tmp_path / "out").exists()  # found before anything was written


def _missing(path, data):
    return str(path / "nothing.mrcs"), "no such file"


def _not_mrc(path, data):
    (path / "notes.mrcs").write_text("these are not particles\n" * 100)
    return str(path / "notes.mrcs"), "not an MRC file"


def _truncated(path, data):
    write_stack(str(path / "cut.mrcs"), data["particles"], PIXEL_SIZE)
    with open(path / "cut.mrcs", "r+b") as f:
        f.truncate(os.path.getsize(path / "cut.mrcs") - 1000)
    return str(path / "cut.mrcs"), "truncated MRC file"


def _empty(path, data):
    with mrcfile.new(str(path / "empty.mrcs")) as mrc:
        mrc.set_data(np.zeros((0, SIZE, SIZE), np.float32))
    return str(path / "empty.mrcs"), "empty stack"


def _star_to_missing_stack(path, data):
    write_star(str(path / "p.star"), {"particles": StarBlock(
        ["rlnImageName"], [["000001@gone.mrcs"]])})
    return str(path / "p.star"), "stack gone.mrcs \\(rlnImageName\\) not found"


def _star_index_beyond_stack(path, data):
    write_stack(str(path / "s.mrcs"), data["particles"][:3], PIXEL_SIZE)
    write_star(str(path / "p.star"), {"particles": StarBlock(
        ["rlnImageName"], [["000001@s.mrcs"], ["000004@s.mrcs"]])})
    return str(path / "p.star"), "particle 2: rlnImageName '000004@s.mrcs' is beyond the 3 images"


def _cs_index_beyond_stack(path, data):
    write_stack(str(path / "s.mrcs"), data["particles"][:3], PIXEL_SIZE)
    write_cs(str(path / "p.cs"), ["J1/s.mrcs"] * 2, [2, 3])
    return str(path / "p.cs"), "particle 2: blob/idx 3 is beyond the 3 images of"


def _cs_to_missing_stack(path, data):
    write_cs(str(path / "p.cs"), ["J1/imported/gone.mrcs"], [0])
    return str(path / "p.cs"), "stack 'J1/imported/gone.mrcs' \\(blob/path\\) not found"


def _cs_without_paths(path, data):
    with open(path / "p.cs", "wb") as f:
        np.save(f, np.zeros(3, [("uid", "<u8"), ("blob/idx", "<u4")]))
    return str(path / "p.cs"), "missing field blob/path"


@pytest.mark.parametrize("make_input", [_missing, _not_mrc, _truncated, _empty,
                                        _star_to_missing_stack, _star_index_beyond_stack,
                                        _cs_index_beyond_stack, _cs_to_missing_stack,
                                        _cs_without_paths])
def test_bad_input_is_a_data_error_and_leaves_nothing(make_input, data, tmp_path):
    input_path, problem = make_input(tmp_path, data)
    with pytest.raises(DataError, match=problem) as raised:
        canonicalize_particles(data["saved_model"], input_path, str(tmp_path / "out" / "c.mrcs"),
                               str(tmp_path / "out" / "c.star"), optics=OPTICS)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_saved_model_without_the_signature_is_a_one_line_error(data, tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "other"),
                        signatures={"serving_default": module.f.get_concrete_function()})
    result = run_cli(f"--saved_model={tmp_path / 'other'}",
                     f"--input={data['root'] / 'particles.mrcs'}", "--output=out/c.mrcs",
                     "--star=out/c.star", cwd=tmp_path)
    assert_one_line_error(result, "other", "no serving_default signature with input 'images'")
    assert not (tmp_path / "out").exists()

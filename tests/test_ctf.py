"""`data_pipeline.ctf` against RELION's own CTF (fixtures tests/data/relion_ctf/, one optics
group, and tests/data/relion_ctf_groups/, two groups and phase shifts, made with `relion_project
--ctf`) and its own properties (phase flipping, rotated astigmatism)."""
import math
import os

import mrcfile
import numpy as np
import pytest

from data_pipeline.ctf import (CTF_FEATURES, Optics, apply_ctf, ctf_grid, particle_ctf,
                               rotated_defocus_angle)
from data_pipeline.formats.star import particles_block, read_star
from data_pipeline.rotation import rotate
from data_pipeline.simulator import SimulationConfig, Simulator
from tests.data_fixtures import correlations

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "relion_ctf")
GROUPS_FIXTURE = os.path.join(os.path.dirname(__file__), "data", "relion_ctf_groups")
MAP = os.path.join(os.path.dirname(__file__), "data", "relion", "map.mrc")
OPTICS = Optics(voltage=300, spherical_aberration=2.7, amplitude_contrast=0.1, pixel_size=2.0)


@pytest.fixture(scope="module")
def relion() -> dict[str, np.ndarray]:
    """RELION's projections without and with its CTF, and each particle's CTF values."""
    table = particles_block(read_star(os.path.join(FIXTURE, "ctf.star")))
    values = {name: np.array(table.column(f"rln{name}"), np.float64)
              for name in ("DefocusU", "DefocusV", "DefocusAngle", "AnglePsi")}
    return dict(plain=mrcfile.read(os.path.join(FIXTURE, "plain.mrcs")).astype(np.float64),
                ctf=mrcfile.read(os.path.join(FIXTURE, "ctf.mrcs")).astype(np.float64),
                u=values["DefocusU"], v=values["DefocusV"], angle=values["DefocusAngle"],
                psi=values["AnglePsi"])


@pytest.fixture(scope="module")
def relion_groups() -> dict:
    """RELION's projections through the CTF of two optics groups with phase shifts, and each
    particle's CTF (`CTF_FEATURES`, its group's optics looked up by rlnOpticsGroup)."""
    blocks = read_star(os.path.join(GROUPS_FIXTURE, "ctf.star"))

    def column(block, name):
        return np.array(blocks[block].column(name), np.float64)

    group = column("particles", "rlnOpticsGroup").astype(int) - 1
    values = {name: column("particles", f"rln{rln}") for name, rln in zip(
        CTF_FEATURES[:4], ("DefocusU", "DefocusV", "DefocusAngle", "PhaseShift"))}
    values.update({name: column("optics", f"rln{rln}")[group] for name, rln in zip(
        CTF_FEATURES[4:], ("Voltage", "SphericalAberration", "AmplitudeContrast",
                           "ImagePixelSize"))})
    return dict(plain=mrcfile.read(os.path.join(FIXTURE, "plain.mrcs")).astype(np.float64),
                ctf=mrcfile.read(os.path.join(GROUPS_FIXTURE, "ctf.mrcs")).astype(np.float64),
                values=values, group=group)


def _ctf(u, v, angle, optics: Optics = OPTICS, phase_shift=0.0) -> dict[str, np.ndarray]:
    return particle_ctf(np.asarray(u), np.asarray(v), np.asarray(angle), optics, phase_shift)


def test_fixture_has_astigmatism_at_several_angles(relion):
    astigmatic = relion["u"] != relion["v"]
    assert astigmatic.sum() >= 4 and len(np.unique(relion["angle"][astigmatic])) >= 4


def test_ctf_matches_relion_project(relion):
    ours = apply_ctf(relion["plain"], _ctf(relion["u"], relion["v"], relion["angle"])).numpy()
    assert correlations(ours, relion["ctf"]).min() >= 0.9999
    np.testing.assert_allclose(ours, relion["ctf"], atol=1e-5 * np.abs(relion["ctf"]).max())


def test_groups_fixture_has_two_optics_groups_and_phase_shifts(relion_groups):
    values, group = relion_groups["values"], relion_groups["group"]
    assert set(group) == {0, 1}
    for name in ("voltage", "spherical_aberration", "amplitude_contrast"):
        assert len(np.unique(values[name])) == 2
    for members in (group == 0, group == 1):
        assert (values["phase_shift"][members] == 0).any()
        assert (values["phase_shift"][members] != 0).any()


def test_per_particle_ctf_matches_relion_project(relion_groups):
    """Each particle's own optics group and phase shift, as `relion_project --ctf` applies them."""
    ours = apply_ctf(relion_groups["plain"], relion_groups["values"]).numpy()
    expected = relion_groups["ctf"]
    assert correlations(ours, expected).min() >= 0.9999
    np.testing.assert_allclose(ours, expected, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("wrong", ["phase shift flipped", "phase shift ignored",
                                   "group 1's optics for all", "group 1's Cs for all",
                                   "group 1's amplitude contrast for all"])
def test_wrong_phase_shift_or_shared_optics_would_fail(relion_groups, wrong):
    """The groups fixture tells the phase shift's sign and each group's optics apart: the test
    above can fail."""
    values, group = relion_groups["values"], relion_groups["group"]
    first = {name: np.full_like(values[name], values[name][group == 0][0])
             for name in ("voltage", "spherical_aberration", "amplitude_contrast")}
    changed = {"phase shift flipped": {"phase_shift": -values["phase_shift"]},
               "phase shift ignored": {"phase_shift": np.zeros_like(values["phase_shift"])},
               "group 1's optics for all": first,
               "group 1's Cs for all": {"spherical_aberration": first["spherical_aberration"]},
               "group 1's amplitude contrast for all": {
                   "amplitude_contrast": first["amplitude_contrast"]}}[wrong]
    ours = apply_ctf(relion_groups["plain"], {**values, **changed}).numpy()
    expected = relion_groups["ctf"]
    assert np.abs(ours - expected).max() > 1e-3 * np.abs(expected).max()
    if "phase" in wrong or wrong == "group 1's optics for all":
        assert correlations(ours, expected).min() < 0.95


def test_wrong_astigmatism_convention_would_fail(relion):
    """The fixture tells the angle's sign and U from V apart: the test above can fail."""
    for u, v, angle in ((relion["u"], relion["v"], -relion["angle"]),
                        (relion["v"], relion["u"], relion["angle"])):
        wrong = apply_ctf(relion["plain"], _ctf(u, v, angle)).numpy()
        assert correlations(wrong, relion["ctf"]).min() < 0.95


def test_simulated_ctf_particles_match_relion(relion):
    """The simulator's noiseless projections of the same map, through our CTF, at RELION's
    angles: RELION turns an even box about pixel N/2, the simulator about (N-1)/2, so ours are
    shifted by half a pixel along both axes to line up."""
    simulator = Simulator(SimulationConfig(image_size=32, pixel_size=2.0, density_map=MAP,
                                           num_conformations=1, test_conformations=0,
                                           snr=math.inf))
    count = len(relion["psi"])
    clean = simulator.project(np.zeros(count, np.int64), np.deg2rad(relion["psi"]),
                              np.full((count, 2), 0.5))
    assert simulator.optics == OPTICS  # the simulator's default microscope is the fixture's
    ours = apply_ctf(clean, _ctf(relion["u"], relion["v"], relion["angle"],
                                 simulator.optics)).numpy()
    assert correlations(ours, relion["ctf"]).min() >= 0.98


def test_ctf_is_positive_at_low_frequency_and_has_zeros():
    grid = ctf_grid(_ctf([15000.0], [15000.0], [0.0]), 64).numpy()[0]
    assert grid[0, 0] == pytest.approx(0.1)  # amplitude contrast at k = 0
    assert grid[0, 1:6].min() > 0 and grid[0].min() < -0.9  # first zero, then reversed contrast


def test_a_phase_plate_shifts_the_ctf_and_pixel_size_scales_its_frequencies():
    """A 90° phase shift turns sin into cos at k = 0 (a Volta phase plate's in-focus contrast);
    halving the pixel size doubles every frequency, so the CTF on a 64 px grid at 2 Å is that on
    the inner half of a 128 px grid at 1 Å (same frequencies)."""
    shifted = ctf_grid(_ctf([15000.0], [15000.0], [0.0], phase_shift=90.0), 64).numpy()[0]
    assert shifted[0, 0] == pytest.approx(math.cos(math.asin(0.1)), abs=1e-6)
    coarse = ctf_grid(_ctf([15000.0], [12000.0], [30.0], Optics(pixel_size=2.0)), 64).numpy()[0]
    fine = ctf_grid(_ctf([15000.0], [12000.0], [30.0], Optics(pixel_size=1.0)), 128).numpy()[0]
    np.testing.assert_allclose(coarse[:32, :33], fine[:32, :33], atol=1e-4)


def test_phase_flip_makes_the_transfer_non_negative():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((3, 25, 25))  # odd: no Nyquist row, whose filter is not
    # Hermitian under astigmatism (as in RELION), so an even box loses a little there
    u, v, angle = np.array([8e3, 12e3, 2e4]), np.array([8e3, 10e3, 1.5e4]), np.array([0, 30, -70.])
    particles = _ctf(u, v, angle)
    modulated = apply_ctf(images, particles).numpy()
    flipped = apply_ctf(modulated, particles, mode="phase_flip").numpy()
    transfer = np.fft.rfft2(flipped) / np.fft.rfft2(images)
    assert np.abs(transfer.imag).max() < 1e-6 and transfer.real.min() > -1e-6
    twice = apply_ctf(apply_ctf(images, particles, mode="phase_flip"), particles,
                      mode="phase_flip").numpy()
    np.testing.assert_allclose(twice, images, atol=1e-9)


def test_rotated_image_has_the_rotated_astigmatism_angle(relion):
    """CTF then rotation equals rotation then the CTF at `rotated_defocus_angle` (strong
    astigmatism, a smooth image: the comparison is not dominated by interpolation)."""
    image = np.repeat(relion["plain"][:1], 3, axis=0)[..., None].astype(np.float32)
    u, v, angle = np.full(3, 9000.0), np.full(3, 3000.0), np.array([20.0, 20.0, 20.0])
    turn = np.array([math.pi / 2, 0.6, -1.2], np.float32)
    first_ctf = rotate(apply_ctf(image, _ctf(u, v, angle)), turn).numpy()[..., 0]
    right = apply_ctf(rotate(image, turn),
                      _ctf(u, v, rotated_defocus_angle(angle, turn))).numpy()[..., 0]
    wrong = apply_ctf(rotate(image, turn),
                      _ctf(u, v, rotated_defocus_angle(angle, -turn))).numpy()[..., 0]
    inside = np.hypot(*np.mgrid[-15.5:16, -15.5:16]) < 12  # away from the corners rotation empties
    assert correlations(right * inside, first_ctf * inside).min() > 0.97
    assert correlations(wrong * inside, first_ctf * inside)[1:].max() < \
        correlations(right * inside, first_ctf * inside)[1:].min()


def test_unknown_mode_and_bad_optics_are_refused():
    with pytest.raises(ValueError, match="mode"):
        apply_ctf(np.zeros((1, 8, 8)), _ctf([1e4], [1e4], [0.0]), mode="wiener")
    with pytest.raises(ValueError, match="optics"):
        Optics(voltage=0.0)

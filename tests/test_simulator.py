"""The 5HDB-style simulator: reproducibility, SNR, rotation sense, conformations, CTF, inputs."""
import dataclasses
import math

import mrcfile
import numpy as np
import pytest

from data_pipeline.errors import DataError
from data_pipeline.rotation import inscribed_disc, rotate
from data_pipeline.simulator import (ATOM_SIGMA_ANGSTROM, SimulationConfig, Simulator,
                                      simulate_split)

SMALL = dict(image_size=32, num_conformations=5, images_per_conformation=8, test_conformations=2)


def small(**settings) -> SimulationConfig:
    return SimulationConfig(**{**SMALL, **settings})


def disc(size: int) -> np.ndarray:
    """Pixels well inside the inscribed disc, where rotation loses nothing."""
    return inscribed_disc(size, size / 2 - 1)


def relative_error(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2 * mask).sum((1, 2)) / (b**2 * mask).sum((1, 2)))


def centre_of_mass(image: np.ndarray) -> np.ndarray:
    """(row, column) of an image's centre of mass."""
    rows, cols = np.indices(image.shape)
    return np.array([(rows * image).sum(), (cols * image).sum()]) / image.sum()


def test_same_seed_is_bit_identical_and_chunking_does_not_matter():
    first = simulate_split(small(max_shift=2.0, ctf=True), "train")
    second = simulate_split(small(max_shift=2.0, ctf=True), "train")
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    simulator = Simulator(small(max_shift=2.0, ctf=True))
    ids = simulator.split_ids("train")
    halves = [simulator.simulate(ids[:7]), simulator.simulate(ids[7:])]
    np.testing.assert_array_equal(
        np.concatenate([h["observed"] for h in halves]), first["observed"])


def test_different_seeds_differ_but_share_the_molecule():
    a, b = simulate_split(small(seed=0), "train"), simulate_split(small(seed=1), "train")
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.allclose(a["angle"], b["angle"])
    assert np.abs(a["observed"] - b["observed"]).mean() > 0.1 * np.abs(a["observed"]).mean()


def test_splits_hold_out_the_last_conformations():
    config = SimulationConfig(image_size=16, num_conformations=20, images_per_conformation=10)
    simulator = Simulator(config)
    train, test = simulator.split_ids("train"), simulator.split_ids("test")
    assert len(train) == 160 and len(test) == 40
    assert set(train % 20) == set(range(16)) and set(test % 20) == {16, 17, 18, 19}
    chunks = list(simulator.iter_split("test", chunk_size=15))
    assert [len(c["index"]) for c in chunks] == [15, 15, 10]
    np.testing.assert_array_equal(np.concatenate([c["index"] for c in chunks]), np.arange(40))
    assert set(np.concatenate([c["conformation"] for c in chunks])) == {16, 17, 18, 19}


def test_observed_snr_matches_the_target():
    config = small(images_per_conformation=40)
    noisy = simulate_split(config, "train")
    clean = simulate_split(small(images_per_conformation=40, snr=math.inf), "train")
    noise = noisy["observed"] - clean["observed"]
    measured = clean["observed"].var(axis=(1, 2)) / noise.var(axis=(1, 2))
    assert measured.mean() == pytest.approx(0.1, rel=0.05)
    assert np.abs(noise).max() > 0


def test_observed_clean_part_is_the_canonical_image_rotated_by_angle():
    data = simulate_split(small(snr=math.inf), "train")
    mask = disc(32)
    forward = rotate(data["image"][..., None], data["angle"]).numpy()[..., 0]
    assert relative_error(forward, data["observed"], mask).max() < 0.1
    back = rotate(data["observed"][..., None], -data["angle"]).numpy()[..., 0]
    assert relative_error(back, data["image"], mask).max() < 0.1
    # The opposite sense of rotation is clearly wrong wherever the angle is not small.
    turned = np.abs(np.sin(data["angle"])) > 0.3
    assert turned.sum() >= 5
    wrong = rotate(data["image"][..., None], -data["angle"]).numpy()[..., 0]
    assert relative_error(wrong, data["observed"], mask)[turned].min() > 0.3


def test_conformations_vary_continuously():
    images = Simulator(small(num_conformations=10)).canonical.reshape(10, -1)
    distance_from_first = np.linalg.norm(images - images[0], axis=1)
    assert np.all(np.diff(distance_from_first) > 0)
    steps = np.linalg.norm(np.diff(images, axis=0), axis=1)
    assert steps.max() < distance_from_first[-1] / 3


def test_continuous_conformations_fill_each_bin_and_keep_the_other_draws():
    discrete, continuous = (Simulator(small(continuous_conformations=c)).simulate(np.arange(40))
                            for c in (False, True))
    np.testing.assert_array_equal(continuous["angle"], discrete["angle"])
    np.testing.assert_array_equal(continuous["conformation"], discrete["conformation"])
    # Bin k of 5 spans [k/5, (k+1)/5] of the ±40° hinge range; positions differ within a bin.
    edges = math.radians(-40) + np.radians(80) * continuous["conformation"] / 5
    assert np.all(continuous["hinge"] >= edges - 1e-6)
    assert np.all(continuous["hinge"] <= edges + math.radians(16) + 1e-6)
    assert len(np.unique(np.round(continuous["hinge"], 5))) == 40
    clean = Simulator(small(continuous_conformations=True, snr=math.inf)).simulate(np.arange(40))
    mask = disc(32)[None]
    turned = np.asarray(rotate(clean["image"][..., None], clean["angle"]))[..., 0]
    assert relative_error(clean["observed"], turned, mask).max() < 0.1


def test_views_are_distinct_directions_cycling_with_the_id():
    single = Simulator(small(snr=math.inf)).simulate(np.arange(15))
    views = Simulator(small(num_views=3, snr=math.inf)).simulate(np.arange(15))
    np.testing.assert_array_equal(views["view"], (np.arange(15) // 5) % 3)
    first = views["view"] == 0
    np.testing.assert_allclose(views["image"][first], single["image"][first], atol=1e-6)
    for v in (1, 2):
        other = views["view"] == v
        assert relative_error(views["image"][other], single["image"][other], disc(32)).min() > 0.2
    assert not np.allclose(views["image"][5], views["image"][10])


def test_molecule_is_asymmetric_and_fills_the_box():
    simulator = Simulator(SimulationConfig())
    for image in simulator.canonical[[0, 10, 19]]:
        norm = np.linalg.norm(image)
        assert np.linalg.norm(image - np.rot90(image, 2)) > 0.5 * norm
        assert np.linalg.norm(image - image[:, ::-1]) > 0.5 * norm
    rows, cols = np.nonzero(simulator.canonical.max(axis=0) > 0.02 * simulator.canonical.max())
    diameter = 2 * np.hypot(rows - 19.5, cols - 19.5).max() / 40
    assert 0.55 < diameter < 0.75
    assert simulator.pixel_size == pytest.approx(3.25, abs=0.01)


def test_normal_angles_have_the_requested_spread():
    config = SimulationConfig(image_size=8, num_conformations=2, images_per_conformation=1000,
                              test_conformations=1, angle_distribution="normal", angle_std=0.3)
    angles = simulate_split(config, "train")["angle"]
    assert abs(angles.mean()) < 0.03
    assert angles.std() == pytest.approx(0.3, rel=0.08)
    uniform = simulate_split(dataclasses.replace(config, angle_distribution="uniform"), "train")
    assert uniform["angle"].min() < -3 and uniform["angle"].max() > 3
    assert np.all(np.abs(uniform["angle"]) <= math.pi)


def test_ctf_changes_observed_but_not_canonical():
    plain = simulate_split(small(snr=math.inf), "train")
    with_ctf = simulate_split(small(snr=math.inf, ctf=True, defocus_min=1.0, defocus_max=2.0),
                              "train")
    np.testing.assert_array_equal(plain["image"], with_ctf["image"])
    assert np.all((with_ctf["defocus"] >= 1.0) & (with_ctf["defocus"] <= 2.0))
    assert np.all(plain["defocus"] == 0)
    assert relative_error(with_ctf["observed"], plain["observed"], np.ones((32, 32))).min() > 0.3


def test_shifts_move_the_particle_by_the_recorded_pixels():
    shifted = simulate_split(small(snr=math.inf, max_shift=3.0), "train")
    centred = simulate_split(small(snr=math.inf), "train")
    assert np.abs(shifted["shift"]).max() <= 3.0 and np.abs(shifted["shift"]).max() > 1.0
    for s, c, (dx, dy) in zip(shifted["observed"], centred["observed"], shifted["shift"]):
        np.testing.assert_allclose(centre_of_mass(s) - centre_of_mass(c), [dy, dx], atol=0.05)


def write_pdb(path, atoms) -> None:
    """A one-residue PDB with (element, x, y, z) atoms, written with gemmi."""
    gemmi = pytest.importorskip("gemmi")
    residue = gemmi.Residue()
    residue.name, residue.seqid = "LIG", gemmi.SeqId(1, " ")
    for serial, (element, x, y, z) in enumerate(atoms):
        atom = gemmi.Atom()
        atom.name, atom.element, atom.pos = f"{element}{serial}", gemmi.Element(element), \
            gemmi.Position(x, y, z)
        residue.add_atom(atom)
    chain = gemmi.Chain("A")
    chain.add_residue(residue)
    model = gemmi.Model("1")
    model.add_chain(chain)
    structure = gemmi.Structure()
    structure.add_model(model)
    structure.setup_entities()
    if str(path).endswith(".cif"):
        structure.make_mmcif_document().write_file(str(path))
    else:
        structure.write_pdb(str(path))


@pytest.mark.parametrize("suffix", [".pdb", ".cif"])
def test_atomic_model_is_projected_with_x_along_columns_and_y_along_rows(tmp_path, suffix):
    path = tmp_path / f"tiny{suffix}"
    # An iron atom right of two carbons, one of them at +y: x runs along columns, y along rows.
    write_pdb(path, [("Fe", 20.0, 0.0, 0.0), ("C", 0.0, 0.0, 5.0), ("C", 0.0, 20.0, 0.0)])
    simulator = Simulator(small(atomic_model=str(path)))
    image, pixel = simulator.canonical[0], simulator.pixel_size
    centre = (32 - 1) / 2
    np.testing.assert_allclose(centre_of_mass(image), [centre, centre], atol=0.05)
    com_x, com_y = 20.0 * 26 / 38, 20.0 * 6 / 38   # weights: atomic numbers
    # x runs along columns; y runs down the rows (RELION's hand), i.e. away from row 0.
    iron = np.unravel_index(image.argmax(), image.shape)
    np.testing.assert_allclose(iron, [centre - com_y / pixel, centre + (20 - com_x) / pixel],
                               atol=1.0)
    carbon = round(centre + (20 - com_y) / pixel), round(centre - com_x / pixel)
    mirror = round(centre - (20 + com_y) / pixel), carbon[1]
    assert image[carbon] > 0.1 * image.max() and image[mirror] < 0.01 * image.max()


def test_density_map_is_summed_along_z_and_centred(tmp_path):
    z, y, x = np.mgrid[:24, :24, :24].astype(np.float32)
    volume = 2 * np.exp(-((x - 16) ** 2 + (y - 8) ** 2 + (z - 12) ** 2) / 4.0)   # big, +x
    volume += np.exp(-((x - 6) ** 2 + (y - 18) ** 2 + (z - 6) ** 2) / 4.0)       # small, +y
    path = tmp_path / "blobs.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = 2.0
    image = Simulator(small(density_map=str(path))).canonical[0]
    centre = (32 - 1) / 2
    np.testing.assert_allclose(centre_of_mass(image), [centre, centre], atol=0.05)
    row, col = np.unravel_index(image.argmax(), image.shape)
    assert col > centre and row < centre   # the big blob: +x (right), lower y (nearer row 0)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images."""
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_a_map_made_from_an_atomic_model_projects_like_the_model(tmp_path):
    atoms = [("Fe", 14.0, 6.0, 2.0), ("S", -10.0, 9.0, -4.0), ("C", -3.0, -7.0, 0.0),
             ("C", 1.0, -5.0, 3.0), ("O", 4.0, -15.0, 4.0), ("N", 9.0, 12.0, -2.0)]
    model = tmp_path / "model.pdb"
    write_pdb(model, atoms)
    # The map a model gives in MRC's layout: 1 Å voxels, x the fastest axis ([z, y, x] arrays),
    # each atom a Gaussian of std ATOM_SIGMA_ANGSTROM weighted by its atomic number.
    gemmi = pytest.importorskip("gemmi")
    z, y, x = np.mgrid[:48, :48, :48] - 24.0
    volume = np.zeros((48, 48, 48), np.float32)
    for element, ax, ay, az in atoms:
        volume += gemmi.Element(element).atomic_number * np.exp(
            -((x - ax) ** 2 + (y - ay) ** 2 + (z - az) ** 2) / (2 * ATOM_SIGMA_ANGSTROM**2))
    density = tmp_path / "model.mrc"
    with mrcfile.new(density) as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = 1.0
    from_model = Simulator(small(atomic_model=str(model), pixel_size=2.0)).canonical[0]
    from_map = Simulator(small(density_map=str(density), pixel_size=2.0)).canonical[0]
    assert correlation(from_model, from_map) > 0.95
    assert correlation(from_model, from_map[::-1]) < 0.5   # the other hand is far off


def assert_one_line_data_error(error: pytest.ExceptionInfo, path) -> None:
    assert error.value.path == str(path)
    assert "\n" not in str(error.value) and str(error.value).startswith(f"{path}: ")


def test_bad_model_files_raise_data_error(tmp_path):
    missing = tmp_path / "missing.pdb"
    with pytest.raises(DataError) as error:
        Simulator(small(atomic_model=str(missing)))
    assert_one_line_data_error(error, missing)
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("this is not\nan mmCIF file\n")
    with pytest.raises(DataError) as error:
        Simulator(small(atomic_model=str(garbage)))
    assert_one_line_data_error(error, garbage)
    not_mrc = tmp_path / "not.mrc"
    not_mrc.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError) as error:
        Simulator(small(density_map=str(not_mrc)))
    assert_one_line_data_error(error, not_mrc)
    flat = tmp_path / "flat.mrc"
    with mrcfile.new(flat) as mrc:
        mrc.set_data(np.ones((8, 8), np.float32))
        mrc.voxel_size = 1.0
    with pytest.raises(DataError, match="3D") as error:
        Simulator(small(density_map=str(flat)))
    assert_one_line_data_error(error, flat)


@pytest.mark.parametrize("settings", [dict(snr=0), dict(angle_distribution="cauchy"),
                                      dict(test_conformations=5), dict(defocus_min=3.0),
                                      dict(atomic_model="a.pdb", density_map="b.mrc"),
                                      dict(num_views=0), dict(view_tilt=-0.1)])
def test_bad_settings_are_rejected(settings):
    with pytest.raises(ValueError):
        small(**settings)

"""The data sets behind `datasets.load`: TFDS builders, splits, statistics and the stack stream."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipeline import datasets, rotation
from data_pipeline.errors import DataError
from data_pipeline.formats import idx
from data_pipeline.formats.mrc import write_stack
from data_pipeline.formats.star import StarBlock, angle_to_psi_degrees, write_star
from data_pipeline.datasets import simulated_particles
from data_pipeline.datasets.particle_stack import (ParticleStack, particle_stack_dataset,
                                                   split_positions)
from tests.cs_files import write_cs
from data_fixtures import HDB_SIZE, inscribed_disc, write_hdb_archive, write_idx_set


def _all(dataset: tf.data.Dataset) -> dict[str, np.ndarray]:
    """Every element of a small dataset, stacked per key."""
    return next(dataset.batch(100_000).as_numpy_iterator())


def test_mnist_test_files_split_7200_800_2000(shared_mnist_dir, tmp_path):
    train, stats = datasets.load("mnist", "train", str(tmp_path), mnist_dir=shared_mnist_dir)
    validation, _ = datasets.load("mnist", "validation", str(tmp_path),
                                  mnist_dir=shared_mnist_dir)
    test, _ = datasets.load("mnist", "test", str(tmp_path), mnist_dir=shared_mnist_dir)
    assert int(train.cardinality()) == 7200 and int(validation.cardinality()) == 800
    assert int(test.cardinality()) == 2000
    assert train.element_spec["image"].shape == (28, 28, 1)
    assert train.element_spec["image"].dtype == tf.float32
    images, labels = idx.read_split(shared_mnist_dir, "t10k")
    first = next(iter(test))
    np.testing.assert_array_equal(first["image"].numpy()[..., 0], images[8000])
    assert int(first["label"]) == labels[8000] and int(first["index"]) == 0
    assert (stats.min, stats.max) == (0.0, 255.0)
    assert os.path.isdir(tmp_path / "mnist_idx" / "mnist_10k" / "1.0.0")


def test_builders_are_registered_with_tfds(shared_mnist_dir, tmp_path):
    assert {"mnist_idx", "five_hdb", "simulated_particles"} <= set(tfds.list_builders())
    config = tfds.download.DownloadConfig(manual_dir=shared_mnist_dir, try_download_gcs=False)
    with pytest.raises(DataError, match="use config mnist_10k"):
        tfds.builder("mnist_idx", config="mnist", data_dir=str(tmp_path)).download_and_prepare(
            download_config=config)


def test_full_fashion_layout_and_statistics(tmp_path):
    folder = str(tmp_path / "fashion")
    arrays = write_idx_set(folder, train=30, test=12)
    data_dir = str(tmp_path / "tfds")
    train, stats = datasets.load("fashion_mnist", "train", data_dir, mnist_dir=folder)
    elements = _all(train)
    kept = np.arange(30) % 10 != 9  # every 10th image is validation
    np.testing.assert_array_equal(elements["image"][..., 0], arrays["train_images"][kept])
    np.testing.assert_array_equal(elements["label"], arrays["train_labels"][kept])
    np.testing.assert_array_equal(elements["index"], np.arange(30)[kept])
    validation = _all(datasets.load("fashion_mnist", "validation", data_dir, mnist_dir=folder)[0])
    np.testing.assert_array_equal(validation["index"], [9, 19, 29])
    np.testing.assert_array_equal(validation["image"][..., 0], arrays["train_images"][~kept])
    with pytest.raises(ValueError, match="unknown split 'eval'; expected train, validation or test"):
        datasets.load("fashion_mnist", "eval", data_dir, mnist_dir=folder)
    assert int(datasets.load("fashion_mnist", "test", data_dir, mnist_dir=folder)[0]
               .cardinality()) == 12
    assert stats.mean == pytest.approx(arrays["train_images"].mean(), rel=1e-6)
    assert stats.min == arrays["train_images"].min()


def test_statistics_are_written_once_and_reused(tmp_path):
    folder = str(tmp_path / "fashion")
    write_idx_set(folder, train=10, test=4)
    data_dir = str(tmp_path / "tfds")
    _, first = datasets.load("fashion_mnist", "train", data_dir, mnist_dir=folder)
    path = tmp_path / "tfds" / "mnist_idx" / "fashion_mnist" / "1.0.0" / "statistics.json"
    assert json.loads(path.read_text())["max"] == first.max
    path.write_text(json.dumps({"mean": 1.0, "std": 2.0, "min": 3.0, "max": 4.0}))
    _, again = datasets.load("fashion_mnist", "test", data_dir, mnist_dir=folder)
    assert (again.mean, again.max) == (1.0, 4.0)  # read back, not recomputed


@pytest.fixture(scope="module")
def five_hdb(tmp_path_factory):
    parent = str(tmp_path_factory.mktemp("hdb"))
    truth = write_hdb_archive(parent, per_folder=3)
    return parent, str(tmp_path_factory.mktemp("tfds")), truth


def test_five_hdb_splits_and_canonical_images(five_hdb):
    parent, data_dir, truth = five_hdb
    train, stats = datasets.load("five_hdb", "train", data_dir, manual_dir=parent)
    test = _all(tfds.load("five_hdb", split="test", data_dir=data_dir))
    validation, _ = datasets.load("five_hdb", "validation", data_dir, manual_dir=parent)
    assert int(train.cardinality()) == 44 and len(test["index"]) == 12
    assert int(validation.cardinality()) == 4
    np.testing.assert_array_equal(test["index"], np.arange(12))
    np.testing.assert_array_equal(test["conformation"], np.repeat([16, 17, 18, 19], 3))
    canonical = np.concatenate([truth[k][0] for k in range(16, 20)])
    angles = np.concatenate([truth[k][1] for k in range(16, 20)])
    np.testing.assert_allclose(test["angle"], angles, rtol=1e-6)
    disc = inscribed_disc(HDB_SIZE, 0.7)
    assert np.abs(test["image"][..., 0] - canonical)[:, disc].max() < 0.05 * canonical.max()
    observed = rotation.rotate(canonical[..., None], angles).numpy()
    np.testing.assert_allclose(test["observed"], observed, atol=1e-5)
    everything = _all(train.concatenate(validation))["image"]
    assert stats.max == pytest.approx(everything.max())


def test_five_hdb_bad_archive_names_the_file(tmp_path):
    write_hdb_archive(str(tmp_path), per_folder=2)
    bad = tmp_path / "5HDB" / "17_" / "imgdata.mrc"
    bad.write_bytes(bad.read_bytes()[:-8])
    with pytest.raises(DataError, match=f"{bad}: truncated MRC file"):
        datasets.load("five_hdb", "train", str(tmp_path / "tfds"), manual_dir=str(tmp_path))


def _write_stack_and_star(tmp_path, n=10):
    rng = np.random.default_rng(3)
    canonical = rng.normal(size=(n, 16, 16)).astype(np.float32)
    angles = rng.uniform(-3, 3, size=n).astype(np.float32)
    stack = str(tmp_path / "particles.mrcs")
    write_stack(stack, canonical, pixel_size=2.0)
    # Rows out of order, plus one for another stack, as a real RELION file may have.
    order = rng.permutation(n)
    rows = [[f"{i + 1:06d}@particles.mrcs", f"{angle_to_psi_degrees(angles[i]):.6f}"] for i in order]
    rows.insert(2, ["000001@other.mrcs", "12.0"])
    star = str(tmp_path / "particles.star")
    write_star(star, {"optics": StarBlock(["rlnOpticsGroup"], [["1"]]),
                      "particles": StarBlock(["rlnImageName", "rlnAnglePsi"], rows)})
    return stack, star, canonical, angles


def test_particle_stack_streams_with_star_angles(tmp_path):
    stack, star, observed, angles = _write_stack_and_star(tmp_path)
    elements = _all(particle_stack_dataset(stack, star, chunk_size=3))
    np.testing.assert_array_equal(elements["index"], np.arange(10))
    np.testing.assert_array_equal(elements["observed"][..., 0], observed)
    np.testing.assert_allclose(elements["angle"], angles, atol=1e-6)
    back = rotation.rotate(observed[..., None], -angles).numpy()
    np.testing.assert_allclose(elements["image"], back, atol=1e-4)


def test_particle_stack_without_star_and_its_statistics(tmp_path):
    stack, _, observed, _ = _write_stack_and_star(tmp_path)
    dataset, stats = datasets.load("particle_stack", "all", str(tmp_path / "tfds"), stack=stack)
    elements = _all(dataset)
    assert "angle" not in elements and int(dataset.cardinality()) == 10
    np.testing.assert_array_equal(elements["index"], np.arange(10))
    np.testing.assert_array_equal(elements["image"], elements["observed"])
    train = split_positions(10, "train")
    assert len(train) == 8  # the statistics are the training split's, not the whole stack's
    assert (stats.min, stats.max) == (observed[train].min(), observed[train].max())
    assert len(list((tmp_path / "tfds" / "particle_stack").glob("particles-*/statistics.json"))) == 1


def test_stack_splits_are_disjoint_cover_the_stack_and_do_not_move():
    for count, fraction, held in ((1000, 0.2, 100), (101, 0.5, 25), (3, 0.2, 1), (10, 0.01, 1)):
        splits = {name: split_positions(count, name, fraction)
                  for name in ("train", "validation", "test")}
        assert (len(splits["validation"]), len(splits["test"])) == (held, held)
        together = np.concatenate(list(splits.values()))
        np.testing.assert_array_equal(np.sort(together), np.arange(count))  # disjoint and whole
        for positions in splits.values():
            assert (np.diff(positions) > 0).all()  # in stack order
        np.testing.assert_array_equal(split_positions(count, "all", fraction), np.arange(count))
    # Neither global seeds nor the order of calls move the split.
    before = split_positions(1000, "test")
    np.random.seed(1)
    tf.random.set_seed(2)
    np.testing.assert_array_equal(split_positions(1000, "test"), before)
    # Held-out particles are spread over the stack, not its tail.
    assert before.min() < 200 and before.max() > 800


def test_stack_split_streams_its_particles_with_their_angles(tmp_path):
    stack, star, observed, angles = _write_stack_and_star(tmp_path)
    for split in ("train", "validation", "test"):
        dataset, _ = datasets.load("particle_stack", split, str(tmp_path / "tfds"), stack=stack,
                                   star=star)
        elements = _all(dataset)
        positions = split_positions(10, split)
        assert int(dataset.cardinality()) == len(positions)
        np.testing.assert_array_equal(elements["index"], positions)
        np.testing.assert_array_equal(elements["observed"][..., 0], observed[positions])
        np.testing.assert_allclose(elements["angle"], angles[positions], atol=1e-6)
        assert dataset.element_spec["image"].shape == (16, 16, 1)  # static, for the model size


def test_stack_split_bad_settings(tmp_path):
    stack, _, observed, _ = _write_stack_and_star(tmp_path)
    with pytest.raises(ValueError, match="unknown split 'eval'.*train, validation, test, all"):
        datasets.load("particle_stack", "eval", str(tmp_path), stack=stack)
    with pytest.raises(ValueError, match="holdout_fraction must be between 0 and 1"):
        datasets.load("particle_stack", "train", str(tmp_path), stack=stack, holdout_fraction=1.0)
    write_stack(stack, observed[:2], pixel_size=1.0)
    with pytest.raises(DataError, match=f"{stack}: 2 particles are too few"):
        ParticleStack(stack).dataset("validation")
    assert int(ParticleStack(stack).dataset("all").cardinality()) == 2


def test_particle_stack_bad_input(tmp_path):
    stack, star, observed, _ = _write_stack_and_star(tmp_path)
    write_star(star, {"particles": StarBlock(["rlnAnglePsi"], [["1.0"]] * 4)})
    with pytest.raises(DataError, match=f"{star}: 4 distinct rows name particles.mrcs, "
                       "expected one for each of its 10 images"):
        particle_stack_dataset(stack, star)
    write_star(star, {"particles": StarBlock(["rlnClassNumber"], [["1"]] * 10)})
    assert ParticleStack(stack, star).angles is None  # particles without angles: learned frame
    observed[7, 0, 0] = np.inf
    observed[9, 1, 1] = np.nan
    write_stack(stack, observed, pixel_size=1.0)
    with pytest.raises(DataError, match=f"{stack}: particles 8, 10 \\(1-based\\) have NaN/Inf"):
        ParticleStack(stack)  # before any element is read


def test_particle_stack_bad_angle_rows(tmp_path):
    stack, star, _, _ = _write_stack_and_star(tmp_path)
    rows = [[f"{i + 1:06d}@particles.mrcs", "1.0"] for i in range(10)]
    rows[4][0] = "000011@particles.mrcs"
    write_star(star, {"particles": StarBlock(["rlnImageName", "rlnAnglePsi"], rows)})
    with pytest.raises(DataError, match=f"{star}: particle 5: rlnImageName "
                       "'000011@particles.mrcs' is beyond the 10 images of .*particles.mrcs"):
        particle_stack_dataset(stack, star)
    rows[4] = ["000005@particles.mrcs", "nan"]
    write_star(star, {"particles": StarBlock(["rlnImageName", "rlnAnglePsi"], rows)})
    with pytest.raises(DataError, match="column rlnAnglePsi, row 5: 'nan' is not finite"):
        particle_stack_dataset(stack, star)
    cs = str(tmp_path / "particles.cs")
    write_cs(cs, ["J2/particles.mrcs"] * 10, np.arange(10))
    assert ParticleStack(stack, cs).angles is None
    write_cs(cs, ["J2/particles.mrcs"] * 10, np.arange(1, 11), np.zeros(10))
    with pytest.raises(DataError, match="particle 10: blob/idx 10 is beyond the 10 images"):
        particle_stack_dataset(stack, cs)
    write_cs(cs, ["J2/particles.mrcs"] * 9, np.arange(9), np.zeros(9))
    with pytest.raises(DataError, match="9 distinct rows name particles.mrcs, expected one for "
                       "each of its 10 images"):
        particle_stack_dataset(stack, cs)


def test_unknown_name_and_missing_options():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; expected one of mnist, "
                       "fashion_mnist, five_hdb, simulated_particles, particle_stack"):
        datasets.load("cifar", "train")
    with pytest.raises(ValueError, match="needs manual_dir"):
        datasets.load("five_hdb", "train")
    with pytest.raises(ValueError, match="needs stack="):
        datasets.load("particle_stack", "train")


def test_simulated_particles_route(tmp_path):
    settings = {"image_size": 16, "num_conformations": 3, "images_per_conformation": 4,
                "test_conformations": 1, "snr": 1.0}
    train, stats = datasets.load("simulated_particles", "train", str(tmp_path), simulation=settings)
    test, _ = datasets.load("simulated_particles", "test", str(tmp_path), simulation=settings)
    assert int(train.cardinality()) == 8 and int(test.cardinality()) == 4
    elements = _all(train)
    assert {"image", "observed", "angle", "index"} <= set(elements)
    assert elements["observed"].shape == (8, 16, 16, 1)
    assert stats.max == pytest.approx(elements["image"].max())
    version = simulated_particles.VERSION
    assert len(list(tmp_path.glob(f"simulated_particles/*/{version}/statistics.json"))) == 1

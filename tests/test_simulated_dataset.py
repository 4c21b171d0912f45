"""TFDS builder `simulated_particles`: splits by conformation, features, config names."""
import mrcfile
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipeline.datasets import simulated_particles
from data_pipeline.simulator import SimulationConfig, simulate_split

TINY = dict(image_size=16, num_conformations=5, images_per_conformation=6, test_conformations=2,
            snr=0.5, seed=3)


@pytest.fixture(scope="module")
def builder(tmp_path_factory) -> tfds.core.DatasetBuilder:
    config = simulated_particles.make_config(**TINY)
    builder = tfds.builder("simulated_particles", config=config,
                           data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def test_splits_hold_out_the_last_conformations(builder):
    assert builder.info.splits["train"].num_examples == 3 * 6
    assert builder.info.splits["test"].num_examples == 2 * 6
    for split, conformations in (("train", {0, 1, 2}), ("test", {3, 4})):
        elements = list(builder.as_dataset(split).as_numpy_iterator())
        assert {int(e["conformation"]) for e in elements} == conformations
        assert [int(e["index"]) for e in elements] == list(range(len(elements)))


def test_features_and_values_match_the_simulator(builder):
    spec = builder.as_dataset("train").element_spec
    assert spec["image"].shape == (16, 16, 1) and spec["image"].dtype == tf.float32
    assert spec["observed"].shape == (16, 16, 1) and spec["observed"].dtype == tf.float32
    assert spec["angle"].shape == () and spec["angle"].dtype == tf.float32
    assert spec["index"].dtype == tf.int64 and spec["conformation"].dtype == tf.int64
    expected = simulate_split(SimulationConfig(**TINY), "test")
    elements = list(builder.as_dataset("test").as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([e["observed"][..., 0] for e in elements]),
                                  expected["observed"])
    np.testing.assert_array_equal(np.stack([e["image"][..., 0] for e in elements]),
                                  expected["image"])
    np.testing.assert_array_equal([e["angle"] for e in elements], expected["angle"])


def test_pixel_size_is_recorded(builder):
    pixel_size = builder.info.metadata["pixel_size"]
    assert pixel_size > 0
    assert f"pixel size {pixel_size:.4f} Å" in builder.builder_config.description


def test_config_names_follow_the_settings():
    default = simulated_particles.make_config()
    assert default.name == "n40_snr0.1_c20x1000_seed0"
    assert default is simulated_particles.SimulatedParticles.BUILDER_CONFIGS[0]
    names = {simulated_particles.make_config(**settings).name for settings in (
        {}, dict(snr=0.05), dict(seed=1), dict(image_size=32), dict(max_shift=2.0),
        dict(ctf=True), dict(ctf=True, defocus_max=3.0), dict(angle_distribution="normal"),
        dict(test_conformations=2), dict(pixel_size=2.5))}
    assert len(names) == 10
    assert simulated_particles.make_config(snr=0.05).name == "n40_snr0.05_c20x1000_seed0"


def test_a_user_map_names_its_file_and_contents(tmp_path):
    path = tmp_path / "My Blob.mrc"
    volume = np.zeros((8, 8, 8), np.float32)
    volume[2:5, 3:6, 1:4] = 1.0
    names = []
    for value in (1.0, 2.0):
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(volume * np.linspace(1, value, 8, dtype=np.float32))
            mrc.voxel_size = 3.0
        names.append(simulated_particles.make_config(density_map=str(path)).name)
    assert names[0].startswith("n40_snr0.1_c20x1000_seed0_map-myblob-")
    assert names[0] != names[1]

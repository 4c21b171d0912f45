"""Training and evaluation pipelines: keys, shapes, normalisation, shuffling and fixed eval angles."""
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import input_fn, rotation
from data_fixtures import write_hdb_archive, write_idx_set


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("fashion"))
    write_idx_set(folder, train=40, test=13)
    return {"data_dir": str(tmp_path_factory.mktemp("tfds")), "mnist_dir": folder}


def _batches(dataset: tf.data.Dataset) -> list[dict]:
    return list(dataset.as_numpy_iterator())


def test_train_batches_are_normalised_shuffled_and_full(fashion):
    dataset, stats = input_fn.train_input("fashion_mnist", 16, seed=7, **fashion)
    first, second = _batches(dataset), _batches(dataset)
    assert len(first) == 2  # 40 // 16, remainder dropped
    assert set(first[0]) == {"image", "index"}
    assert first[0]["image"].shape == (16, 28, 28, 1)
    images = np.concatenate([b["image"] for b in first])
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.9
    assert stats.max > 200  # raw units kept in the statistics
    order = [np.concatenate([b["index"] for b in run]) for run in (first, second)]
    assert len(set(order[0])) == 32 and not np.array_equal(order[0], order[1])
    again, _ = input_fn.train_input("fashion_mnist", 16, seed=7, **fashion)
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in _batches(again)]), order[0])


def test_eval_angles_are_fixed_and_independent_of_batch_size(fashion):
    small, stats = input_fn.eval_input("fashion_mnist", 5, angle_seed=3, **fashion)
    large, _ = input_fn.eval_input("fashion_mnist", 8, angle_seed=3, **fashion)
    runs = [_batches(small), _batches(small), _batches(large)]
    assert [len(b["index"]) for b in runs[0]] == [5, 5, 3]  # last batch kept
    assert set(runs[0][0]) == {"image", "observed", "angle", "index"}
    merged = [{k: np.concatenate([b[k] for b in run]) for k in run[0]} for run in runs]
    np.testing.assert_array_equal(merged[0]["index"], np.arange(13))
    for other in merged[1:]:
        np.testing.assert_array_equal(merged[0]["angle"], other["angle"])
        np.testing.assert_array_equal(merged[0]["image"], other["image"])
        np.testing.assert_allclose(merged[0]["observed"], other["observed"], atol=1e-5)
    angles = merged[0]["angle"]
    assert np.all(np.abs(angles) <= np.pi) and np.std(angles) > 0.5
    expected = rotation.rotate(merged[0]["image"], angles).numpy()
    np.testing.assert_allclose(merged[0]["observed"], expected, atol=1e-5)
    other_seed, _ = input_fn.eval_input("fashion_mnist", 13, angle_seed=4, **fashion)
    assert not np.allclose(_batches(other_seed)[0]["angle"], angles)
    assert 0.0 <= merged[0]["image"].min() and merged[0]["image"].max() <= 1.0


def test_data_with_angles_keeps_its_own(tmp_path):
    write_hdb_archive(str(tmp_path), per_folder=2)
    options = {"data_dir": str(tmp_path / "tfds"), "manual_dir": str(tmp_path)}
    train, stats = input_fn.train_input("five_hdb", 4, **options)
    batch = next(iter(train))
    assert set(batch) == {"image", "observed", "angle", "index"}  # no `conformation`
    assert batch["observed"].shape == (4, 40, 40, 1) and batch["angle"].shape == (4,)
    test, _ = input_fn.eval_input("five_hdb", 8, **options)
    elements = _batches(test)[0]
    raw, _ = input_fn.eval_input("five_hdb", 8, angle_seed=99, **options)
    np.testing.assert_array_equal(_batches(raw)[0]["angle"], elements["angle"])
    validation, _ = input_fn.eval_input("five_hdb", 8, split="validation", **options)
    # The statistics cover the builder's whole train split: train and validation together.
    images = np.concatenate([b["image"] for b in _batches(train) + _batches(validation)])
    assert images.min() == pytest.approx(0.0, abs=1e-6) and images.max() == pytest.approx(1.0)
    assert stats.min < stats.max


def test_eval_input_applies_a_given_normalisation(fashion):
    """A test set simulated apart from the training set is scored on the training set's scale."""
    from data_pipeline.preprocessing import Normalization
    own, stats = input_fn.eval_input("fashion_mnist", 13, **fashion)
    given = Normalization(mean=0.0, std=1.0, min=0.0, max=stats.max * 2)
    other, returned = input_fn.eval_input("fashion_mnist", 13, normalization=given, **fashion)
    assert returned == given
    np.testing.assert_allclose(_batches(other)[0]["image"] * 2 * stats.max,
                               _batches(own)[0]["image"] * (stats.max - stats.min) + stats.min,
                               rtol=1e-5, atol=1e-3)

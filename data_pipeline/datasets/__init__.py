"""The data sets, behind one entry point: `load(name, split, ...)`.

Importing this package registers the TFDS builders (`mnist_idx`, `five_hdb`,
`simulated_particles`), so `tfds.load('five_hdb', ...)` works too. Every data set yields the element
format of docs/architecture.md, and `load` also returns the training split's `Normalization`,
computed once per data set version and stored as `statistics.json` beside its TFRecords.

A prepared version is not rebuilt when the files in a manual folder change; use a fresh `data_dir`
(or delete the version folder) after replacing them.
"""
import os
from typing import Any

import tensorflow as tf
import tensorflow_datasets as tfds

# Importing the builder modules registers them with TFDS.
from data_pipeline.datasets import five_hdb, mnist_idx, particle_stack, simulated_particles  # noqa: F401
from data_pipeline.formats import idx
from data_pipeline.preprocessing import Normalization, load_or_compute_statistics
from data_pipeline.settings import DATASETS, DEFAULT_HOLDOUT_FRACTION

# Every 10th example of a builder's train split is the validation split (`_carve_validation`).
VALIDATION_EVERY = 10


def _prepared(builder: tfds.core.DatasetBuilder, manual_dir: str | None = None) -> None:
    """Builds the TFRecords if this version is not there yet (never downloads for local data)."""
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    builder.download_and_prepare(download_config=config)


def _carve_validation(train: tf.data.Dataset, split: str) -> tf.data.Dataset:
    """`train` or `validation` of a data set whose builder has only train and test: every
    `VALIDATION_EVERY`-th example of the builder's train split (by `index`) is held out for
    validation, so validation draws from the training distribution (all conformations, all
    digits) and test stays untouched until the end."""
    count = int(train.cardinality())
    held_out = count // VALIDATION_EVERY
    keep = split == "validation"
    carved = train.filter(
        lambda e: tf.equal(e["index"] % VALIDATION_EVERY == VALIDATION_EVERY - 1, keep))
    return carved.apply(tf.data.experimental.assert_cardinality(
        held_out if keep else count - held_out))


def _split(train: tf.data.Dataset, test: tf.data.Dataset, split: str) -> tf.data.Dataset:
    """The `split` (train, validation or test) of a builder's train and test splits."""
    if split in ("train", "validation"):
        return _carve_validation(train, split)
    if split == "test" and test is not None:
        return test
    raise ValueError(f"unknown split {split!r}; expected train, validation or test")


def _with_statistics(builder: tfds.core.DatasetBuilder, split: str
                     ) -> tuple[tf.data.Dataset, Normalization]:
    """The split and the normalisation, whose statistics cover the builder's whole train split
    (validation included: they are only its extremes, stored once per data set version)."""
    train = builder.as_dataset("train")
    stats = load_or_compute_statistics(os.fspath(builder.data_dir), train.map(lambda e: e["image"]))
    test = builder.as_dataset("test") if "test" in builder.info.splits else None
    return _split(train, test, split), stats


def _tfds_digits(name: str, split: str, data_dir: str | None
                 ) -> tuple[tf.data.Dataset, Normalization]:
    """The TFDS catalogue's `mnist`/`fashion_mnist` (downloads once), in our element format."""
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare()

    def convert(index: tf.Tensor, element: dict) -> dict:
        return {"image": tf.cast(element["image"], tf.float32), "label": element["label"],
                "index": index}

    def ours(which: str) -> tf.data.Dataset:
        return builder.as_dataset(which).enumerate().map(convert)

    stats = load_or_compute_statistics(os.fspath(builder.data_dir),
                                       ours("train").map(lambda e: e["image"]))
    return _split(ours("train"), ours("test"), split), stats


def _digits(name: str, split: str, data_dir: str | None, mnist_dir: str | None
            ) -> tuple[tf.data.Dataset, Normalization]:
    if mnist_dir is None:
        return _tfds_digits(name, split, data_dir)
    test_only = not idx.has_split(mnist_dir, "train")
    config = mnist_idx.config_name(fashion=name == "fashion_mnist", test_only=test_only)
    builder = tfds.builder("mnist_idx", config=config, data_dir=data_dir)
    _prepared(builder, mnist_dir)
    return _with_statistics(builder, split)


def _simulated(split: str, data_dir: str | None, simulation: dict[str, Any] | None
               ) -> tuple[tf.data.Dataset, Normalization]:
    config = simulated_particles.make_config(**(simulation or {}))
    builder = tfds.builder("simulated_particles", config=config, data_dir=data_dir)
    _prepared(builder)
    return _with_statistics(builder, split)


def _stack(split: str, data_dir: str | None, stack: str | None, star: str | None,
           holdout_fraction: float) -> tuple[tf.data.Dataset, Normalization]:
    particles = particle_stack.ParticleStack(stack, star, holdout_fraction)
    dataset = particles.dataset(split)
    folder = os.path.join(data_dir or tfds.core.constants.DATA_DIR, particle_stack.NAME,
                          particles.statistics_key())
    stats = load_or_compute_statistics(folder, particles.dataset("train").map(lambda e: e["image"]))
    return dataset, stats


def load(name: str, split: str, data_dir: str | None = None, *, mnist_dir: str | None = None,
         manual_dir: str | None = None, stack: str | None = None, star: str | None = None,
         holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
         simulation: dict[str, Any] | None = None) -> tuple[tf.data.Dataset, Normalization]:
    """The unbatched `split` of data set `name`, and the normalisation of its training split.

    - `mnist`, `fashion_mnist`: from IDX files in `mnist_dir` (builder `mnist_idx`; only the 10k
      test files -> first 8,000 train, last 2,000 test), else from the TFDS catalogue (download).
    - `five_hdb`: the 5HDB archive unpacked in `manual_dir`.
    - `simulated_particles`: simulated by the builder of that name with settings `simulation`.
    These have splits `train`, `validation` (every 10th example of the builder's train split,
    taken out of `train`) and `test`.
    - `particle_stack`: the particles of `stack` and/or `star` (a RELION STAR or cryoSPARC .cs
      file: `particle_stack.ParticleStack`), streamed; splits `train`/`validation`/`test` (the last two each half of
      `holdout_fraction`, by a fixed hash of the particle's position) and `all`.
    TFDS versions and statistics live under `data_dir` (TFDS's default folder when None).
    """
    if name in ("mnist", "fashion_mnist"):
        return _digits(name, split, data_dir, mnist_dir)
    if name == "five_hdb":
        if manual_dir is None:
            raise ValueError("dataset 'five_hdb' needs manual_dir=<folder holding 5HDB/>")
        builder = tfds.builder("five_hdb", data_dir=data_dir)
        _prepared(builder, manual_dir)
        return _with_statistics(builder, split)
    if name == "simulated_particles":
        return _simulated(split, data_dir, simulation)
    if name == "particle_stack":
        return _stack(split, data_dir, stack, star, holdout_fraction)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def num_examples(name: str, split: str, data_dir: str | None = None, **options: Any) -> int:
    """The number of elements in a split (for steps per epoch)."""
    dataset, _ = load(name, split, data_dir, **options)
    count = int(dataset.cardinality())
    if count < 0:
        raise ValueError(f"the size of {name!r} split {split!r} is not known")
    return count

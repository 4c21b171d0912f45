"""TFDS builder `mnist_idx`: MNIST or Fashion-MNIST read from IDX files in a local folder.

The folder is the builder's `manual_dir` (the user's `--mnist_dir`). Configs keep the variants
apart on disk, since the files themselves do not say which data set they hold:
- `mnist`, `fashion_mnist`: the usual 60k/10k split, from `train-*` and `t10k-*` files;
- `mnist_10k`, `fashion_mnist_10k`: only the 10k `t10k-*` files; the documented split is the first
  8,000 images for train and the last 2,000 for test.
Pixels are stored as float32 in raw units (0..255).
"""
import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipeline.errors import DataError
from data_pipeline.formats import idx

SIZE = 28
TEST_ONLY_TRAIN_EXAMPLES = 8_000


@dataclasses.dataclass
class IdxConfig(tfds.core.BuilderConfig):
    """`test_only`: build both splits from the 10k t10k files (first 8,000 / last 2,000)."""

    test_only: bool = False


def config_name(fashion: bool, test_only: bool) -> str:
    """The config for a data set and a file layout, e.g. `fashion_mnist_10k`."""
    return ("fashion_mnist" if fashion else "mnist") + ("_10k" if test_only else "")


class MnistIdx(tfds.core.GeneratorBasedBuilder):
    """MNIST-style digits (or clothes) from local IDX files; no download."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        IdxConfig(name=config_name(fashion, test_only), test_only=test_only,
                  description=("Fashion-MNIST" if fashion else "MNIST")
                  + (", 8,000/2,000 split of the 10k test files" if test_only else ""))
        for fashion in (False, True) for test_only in (False, True)
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz]"
        " and t10k-labels-idx1-ubyte[.gz] in the manual folder (only the t10k files for the *_10k "
        "configs).")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(SIZE, SIZE, 1), dtype=np.float32,
                                              encoding=tfds.features.Encoding.ZLIB),
                "label": tfds.features.ClassLabel(num_classes=10),
                "index": np.int64,
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        folder = os.fspath(dl_manager.manual_dir)
        if self.builder_config.test_only:
            images, labels = _read(folder, "t10k")
            cut = TEST_ONLY_TRAIN_EXAMPLES
            return {"train": self._generate_examples(images[:cut], labels[:cut]),
                    "test": self._generate_examples(images[cut:], labels[cut:])}
        if not idx.has_split(folder, "train"):
            raise DataError(folder, f"no {idx.IMAGES.format(prefix='train')}[.gz] and labels; "
                            f"with only the t10k files use config "
                            f"{config_name('fashion' in self.builder_config.name, True)}")
        return {"train": self._generate_examples(*_read(folder, "train")),
                "test": self._generate_examples(*_read(folder, "t10k"))}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image.astype(np.float32)[..., np.newaxis],
                      "label": int(label), "index": i}


def _read(folder: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = idx.read_split(folder, prefix)
    if images.shape[1:] != (SIZE, SIZE):
        raise DataError(idx.find_file(folder, idx.IMAGES.format(prefix=prefix)),
                        f"expected {SIZE}x{SIZE} images, got {images.shape[1]}x{images.shape[2]}")
    return images, labels

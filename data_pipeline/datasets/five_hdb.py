"""TFDS builder `five_hdb`: the spatial-VAE 5HDB particle images, from the archive in `manual_dir`.

Train is conformations (folders) 0-15, test 16-19 (see `formats.hdb_archive`). Each element holds the
`observed` image, its in-plane `angle`, the canonical `image` (observed rotated back by the angle),
its `index` in the split and its `conformation` (folder number).
"""
import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipeline.errors import DataError
from data_pipeline.datasets.features import particle_features
from data_pipeline.formats import hdb_archive

SIZE = 40


class FiveHdb(tfds.core.GeneratorBasedBuilder):
    """5HDB particle images with their in-plane angles; no download."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unpack the spatial-VAE 5HDB tarball so the manual folder holds 5HDB/<k>_/imgdata.mrc and "
        "5HDB/<k>_/pardata.pkl for k = 0..19.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=particle_features(SIZE),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        root = hdb_archive.find_root(os.fspath(dl_manager.manual_dir))
        return {split: self._generate_examples(root, folders)
                for split, folders in hdb_archive.SPLITS.items()}

    def _generate_examples(self, root: str, folders: range):
        index = 0
        for folder in hdb_archive.iter_folders(root, folders):
            if folder.observed.shape[1:] != (SIZE, SIZE):
                raise DataError(os.path.join(root, f"{folder.conformation}_", hdb_archive.IMAGES),
                                f"expected {SIZE}x{SIZE} images, got "
                                f"{folder.observed.shape[1]}x{folder.observed.shape[2]}")
            images = hdb_archive.canonical_images(folder.observed, folder.angles)
            for observed, image, angle in zip(folder.observed, images, folder.angles):
                yield index, {"observed": observed[..., np.newaxis],
                              "image": image[..., np.newaxis],
                              "angle": angle, "index": index,
                              "conformation": folder.conformation}
                index += 1

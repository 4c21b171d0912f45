"""The 5HDB archive reader: canonical images rotated back, splits, and every bad input."""
import os
import pickle

import mrcfile
import numpy as np
import pytest

from data_pipeline.errors import DataError
from data_pipeline.formats import hdb_archive
from data_fixtures import HDB_SIZE, inscribed_disc, write_hdb_archive


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    parent = str(tmp_path_factory.mktemp("archive"))
    return parent, write_hdb_archive(parent, per_folder=3)


def test_reads_folders_and_rotates_back(archive):
    parent, truth = archive
    folders = list(hdb_archive.iter_folders(parent, range(16, 20)))
    assert [f.conformation for f in folders] == [16, 17, 18, 19]
    disc = inscribed_disc(HDB_SIZE, 0.7)
    for folder in folders:
        canonical, angles = truth[folder.conformation]
        np.testing.assert_allclose(folder.angles, angles, rtol=1e-6)
        assert folder.observed.shape == (3, HDB_SIZE, HDB_SIZE)
        image = hdb_archive.canonical_images(folder.observed, folder.angles)
        error = np.abs(image - canonical)[:, disc].max()
        assert error < 0.05 * canonical.max()
        # The opposite sign would not bring it back: the convention matters.
        wrong = hdb_archive.canonical_images(folder.observed, -folder.angles)
        assert np.abs(wrong - canonical)[:, disc].max() > 5 * error


def test_root_is_5hdb_or_its_parent(archive):
    parent, _ = archive
    assert hdb_archive.find_root(parent) == os.path.join(parent, "5HDB")
    assert hdb_archive.find_root(os.path.join(parent, "5HDB")) == os.path.join(parent, "5HDB")
    assert list(hdb_archive.SPLITS["train"]) == list(range(16))
    assert list(hdb_archive.SPLITS["test"]) == [16, 17, 18, 19]


@pytest.fixture
def folder(tmp_path):
    write_hdb_archive(str(tmp_path), per_folder=2)
    return tmp_path / "5HDB" / "0_"


def _read_error(folder) -> str:
    with pytest.raises(DataError) as info:
        hdb_archive.read_folder(str(folder.parent), 0)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_archive(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: no 5HDB/ folder"):
        hdb_archive.find_root(str(tmp_path))


def test_missing_folder(folder):
    with pytest.raises(DataError, match="5HDB/20_: no such folder"):
        hdb_archive.read_folder(str(folder.parent), 20)


def test_missing_images(folder):
    os.remove(folder / "imgdata.mrc")
    assert _read_error(folder) == f"{folder / 'imgdata.mrc'}: no such file"


def test_truncated_images(folder):
    data = (folder / "imgdata.mrc").read_bytes()
    (folder / "imgdata.mrc").write_bytes(data[:-40])
    assert _read_error(folder).startswith(f"{folder / 'imgdata.mrc'}: truncated MRC file")


def test_non_mrc_images(folder):
    (folder / "imgdata.mrc").write_bytes(b"\x00" * 5000)
    assert _read_error(folder).startswith(f"{folder / 'imgdata.mrc'}: not an MRC file")


def test_nan_pixels(folder):
    with mrcfile.open(folder / "imgdata.mrc", mode="r+") as mrc:
        mrc.data[1, 3, 3] = np.nan
    assert _read_error(folder) == (f"{folder / 'imgdata.mrc'}: 1 images with NaN/Inf pixels, "
                                   "first 1")


def test_pickle_without_angles(folder):
    with open(folder / "pardata.pkl", "wb") as f:
        pickle.dump({"j": [0.0, 1.0]}, f)
    assert _read_error(folder) == (f"{folder / 'pardata.pkl'}: expected a dict with key 'i' "
                                   "(in-plane angles)")


def test_corrupt_pickle(folder):
    (folder / "pardata.pkl").write_bytes(b"garbage")
    assert _read_error(folder).startswith(f"{folder / 'pardata.pkl'}: cannot unpickle")


def test_count_mismatch(folder):
    with open(folder / "pardata.pkl", "wb") as f:
        pickle.dump({"i": [0.1, 0.2, 0.3]}, f)
    assert _read_error(folder) == f"{folder / 'pardata.pkl'}: 3 angles for 2 images in imgdata.mrc"


def test_nonfinite_angle(folder):
    with open(folder / "pardata.pkl", "wb") as f:
        pickle.dump({"i": [0.1, float("inf")]}, f)
    assert _read_error(folder) == f"{folder / 'pardata.pkl'}: angle 1 is not finite"

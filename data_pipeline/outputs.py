"""Checks that an output path can be written, made before the long work that would write it.

A run that trains or streams for an hour and only then finds its output folder is a file, or
read-only, loses that hour and ends in a traceback. These checks raise `DataError(path, problem)`
(one `error:` line from `data_pipeline.cli`) instead, and create nothing: the folders are made by
the writer later, and the probe that tests a folder for writing is removed at once.
"""
import os
import tempfile

from data_pipeline.errors import DataError


def check_output_file(path: str) -> None:
    """DataError unless a file can be written at `path`: not a folder, its missing folders can
    be made (none of its parents is a file) and the nearest existing one is writable."""
    if os.path.isdir(path):
        raise DataError(path, "is a folder, not a file")
    _check_writable_folder(path, os.path.dirname(os.path.abspath(path)))


def check_output_dir(path: str) -> None:
    """DataError unless files can be written into the folder `path`: not a file, and it (or,
    while missing, its nearest existing parent) is a writable folder."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise DataError(path, "is a file, not a folder")
    _check_writable_folder(path, os.path.abspath(path))


def _check_writable_folder(path: str, folder: str) -> None:
    """DataError for `path` unless `folder`, or its nearest existing parent, is a folder in which
    a file can be created (tried, since permission bits do not bind root)."""
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise DataError(path, f"its folder {folder} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write_check.", dir=folder)
    except OSError:
        raise DataError(path, f"folder {folder} is not writable") from None
    os.close(fd)
    os.remove(probe)

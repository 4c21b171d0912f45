"""cryoSPARC `.cs` particle files: fields, the psi convention, where stacks are found, bad input."""
import os

import numpy as np
import pytest

from tests.cs_files import write_cs
from data_pipeline.errors import DataError
from data_pipeline.formats import cryosparc


def test_reads_paths_indices_and_psi_in_degrees(tmp_path):
    poses = np.array([0.5, -3.0, 1.25], np.float32)
    write_cs(str(tmp_path / "p.cs"), ["J3/extract/a.mrc", ">J1/imported/b.mrcs", "J3/extract/a.mrc"],
             [4, 0, 2], poses)
    particles = cryosparc.read_cs(str(tmp_path / "p.cs"))
    assert len(particles) == 3
    assert particles.stacks == ["J3/extract/a.mrc", "J1/imported/b.mrcs"]  # `>` dropped
    np.testing.assert_array_equal(particles.stack_ids, [0, 1, 0])
    np.testing.assert_array_equal(particles.indices, [4, 0, 2])
    # pyem's conversion: rlnAnglePsi = degrees(alignments2D/pose), same sign.
    np.testing.assert_allclose(particles.psi_degrees, np.rad2deg(poses.astype(np.float64)))
    write_cs(str(tmp_path / "q.cs"), ["a.mrcs"], [0])
    assert cryosparc.read_cs(str(tmp_path / "q.cs")).psi_degrees is None
    assert cryosparc.is_cs_file("x/P1_J5_particles.CS") and not cryosparc.is_cs_file("x.star")


def test_stacks_are_found_beside_the_file_or_with_leading_folders_stripped(tmp_path):
    cs = str(tmp_path / "P1" / "particles.cs")
    for stack in ("P1/J12/imported/a.mrcs", "P1/b.mrcs", "P1/extract/c.mrc"):
        os.makedirs(os.path.dirname(tmp_path / stack), exist_ok=True)
        (tmp_path / stack).write_bytes(b"")
    # From the project folder, as cryoSPARC writes it:
    assert cryosparc.resolve_stack(cs, "J12/imported/a.mrcs") == str(
        tmp_path / "P1" / "J12" / "imported" / "a.mrcs")
    # Copied next to its stacks: leading folders stripped one at a time.
    assert cryosparc.resolve_stack(cs, "J7/b.mrcs") == str(tmp_path / "P1" / "b.mrcs")
    assert cryosparc.resolve_stack(cs, "J9/extract/c.mrc") == str(
        tmp_path / "P1" / "extract" / "c.mrc")
    absolute = str(tmp_path / "P1" / "b.mrcs")
    assert cryosparc.resolve_stack(cs, absolute) == absolute
    with pytest.raises(DataError, match=f"{cs}: stack 'J1/gone.mrcs' .* not found in "):
        cryosparc.resolve_stack(cs, "J1/gone.mrcs")


def _structured(n=2, **drop):
    dtype = [(name, kind) for name, kind in (("blob/path", "S8"), ("blob/idx", "<u4"),
                                             ("alignments2D/pose", "<f4")) if name not in drop]
    return np.zeros(n, dtype)


@pytest.mark.parametrize("make,problem", [
    (lambda: None, "no such file"),
    (lambda: b"not numpy at all\n" * 10, "not a cryoSPARC .cs file (no NumPy .npy header)"),
    (lambda: np.lib.format.magic(1, 0) + b"\x10\x00{'descr'", "cannot read its .npy array"),
    (lambda: np.arange(6.0), "not a NumPy structured array"),
    (lambda: np.zeros(2, [("blob/path", "O"), ("blob/idx", "<u4")]),
     "cannot read its .npy array (Object arrays cannot be loaded when allow_pickle=False)"),
    (lambda: _structured(**{"blob/idx": 1}), "missing field blob/idx (fields: blob/path, "),
    (lambda: _structured(0), "no particles"),
    (lambda: _structured().reshape(1, 2), "expected one row per particle, found a 2-D array"),
    (lambda: np.zeros(2, [("blob/path", "S8"), ("blob/idx", "<f4")]),
     "blob/idx is not one integer index per particle"),
    (lambda: np.array([(b"a", -1)], [("blob/path", "S8"), ("blob/idx", "<i8")]),
     "particle 1: blob/idx -1 is negative"),
    (lambda: np.array([(b"a", 0, 0.0), (b"a", 1, np.nan)], _structured().dtype),
     "particle 2: alignments2D/pose is NaN/Inf"),
])
def test_bad_files_are_one_line_data_errors(make, problem, tmp_path):
    path = tmp_path / "bad.cs"
    content = make()
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        with open(path, "wb") as f:
            np.save(f, content)
    with pytest.raises(DataError) as raised:
        cryosparc.read_cs(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message

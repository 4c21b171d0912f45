"""RELION STAR files: reading both layouts, writing, columns, the angle convention, bad input."""
import math

import numpy as np
import pytest

from data_pipeline.errors import DataError
from data_pipeline.formats.star import (StarBlock, StarWriter, angle_to_psi_degrees,
                                        particles_block, psi_degrees_to_angle, read_star,
                                        write_star)

RELION_31 = """
# version 30001

data_optics

loop_
_rlnOpticsGroup #1
_rlnImagePixelSize #2
1 1.500000

# version 30001
data_particles

loop_
_rlnImageName #1
_rlnAnglePsi #2   # in-plane
_rlnMicrographName #3
000001@stack.mrcs  -12.5  'my micrograph.mrc'
000002@stack.mrcs   90.0  "other one.mrc"

"""

RELION_30 = """data_
loop_
_rlnImageName
_rlnAnglePsi
1@a.mrcs 10
2@a.mrcs 20
"""

KEY_VALUE = """data_general
_rlnImageSize 40
_rlnComment "two words"
"""


def _write(tmp_path, text, name="in.star"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_reads_relion_31_optics_and_particles(tmp_path):
    blocks = read_star(_write(tmp_path, RELION_31))
    assert list(blocks) == ["optics", "particles"]
    assert blocks["optics"].column("rlnImagePixelSize") == ["1.500000"]
    particles = particles_block(blocks)
    assert particles.columns == ["rlnImageName", "rlnAnglePsi", "rlnMicrographName"]
    assert particles.column("_rlnAnglePsi") == ["-12.5", "90.0"]
    assert particles.column("rlnMicrographName") == ["my micrograph.mrc", "other one.mrc"]


def test_pre_31_single_loop_is_the_particles_table(tmp_path):
    blocks = read_star(_write(tmp_path, RELION_30))
    assert list(blocks) == [""]
    assert particles_block(blocks).column("rlnAnglePsi") == ["10", "20"]


def test_key_value_block(tmp_path):
    block = read_star(_write(tmp_path, KEY_VALUE))["general"]
    assert not block.loop
    assert block.column("rlnImageSize") == ["40"] and block.column("rlnComment") == ["two words"]


def test_round_trip_with_set_column(tmp_path):
    blocks = read_star(_write(tmp_path, RELION_31 + KEY_VALUE))
    particles = particles_block(blocks)
    particles.set_column("rlnAnglePsi", [1.0, 2.0])
    particles.set_column("rlnClassNumber", [3, 4])
    out = str(tmp_path / "out.star")
    write_star(out, blocks)
    again = read_star(out)
    assert again == blocks
    assert particles_block(again).column("rlnClassNumber") == ["3", "4"]
    assert again["particles"].column("rlnMicrographName")[0] == "my micrograph.mrc"


def test_comments_are_written_at_the_top_and_skipped_when_read(tmp_path):
    blocks = read_star(_write(tmp_path, RELION_31))
    out = str(tmp_path / "out.star")
    write_star(out, blocks, comments=["made by a test", "data_ and _rln in a comment"])
    lines = open(out).read().splitlines()
    assert lines[1:3] == ["# made by a test", "# data_ and _rln in a comment"]
    assert read_star(out) == blocks


def test_the_version_tag_stands_before_each_block_only_with_an_optics_table(tmp_path):
    """RELION 3.1 reads a tagged file as needing data_optics (0-byte outputs without it)."""
    blocks = read_star(_write(tmp_path, RELION_31))
    out = str(tmp_path / "out.star")
    write_star(out, blocks)
    lines = open(out).read().splitlines()
    tags = [i for i, line in enumerate(lines) if line == "# version 30001"]
    assert [lines[i + 2] for i in tags] == ["data_optics", "data_particles"]
    write_star(out, {"particles": blocks["particles"]})
    assert "# version 30001" not in open(out).read()
    with pytest.raises(ValueError, match="single lines"):
        write_star(out, blocks, comments=["two\nlines"])


def test_streamed_rows_read_back_as_the_blocks_written_whole(tmp_path):
    blocks = read_star(_write(tmp_path, RELION_31 + KEY_VALUE))
    whole, streamed = str(tmp_path / "whole.star"), str(tmp_path / "streamed.star")
    write_star(whole, blocks, comments=["c"])
    with StarWriter(streamed, comments=["c"]) as writer:
        writer.write_block("optics", blocks["optics"])
        writer.begin_loop("particles", blocks["particles"].columns)
        for row in blocks["particles"].rows:  # one batch at a time
            writer.write_rows([row])
        writer.write_block("general", blocks["general"])
    assert open(streamed).read() == open(whole).read()
    assert read_star(streamed) == blocks


def test_a_failed_stream_leaves_no_file_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "out.star"
    with pytest.raises(ValueError, match="outside a loop"):
        with StarWriter(str(out)) as writer:
            writer.write_rows([["1"]])
    with pytest.raises(ValueError, match="a row of 1 values for a loop of 2 columns"):
        with StarWriter(str(out)) as writer:
            writer.begin_loop("particles", ["a", "b"])
            writer.write_rows([["1", "2"]] * 3000)  # past the write buffer: on disk already
            writer.write_rows([["1"]])
    assert list(tmp_path.iterdir()) == []
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with StarWriter(str(out)) as writer:
            writer.begin_loop("particles", ["a"])
            writer.write_rows([["1"]])
            raise RuntimeError("the run failed")
    assert [p.name for p in tmp_path.iterdir()] == ["out.star"] and out.read_text() == "old"


def test_set_column_needs_one_value_per_row():
    block = StarBlock(columns=["a"], rows=[["1"], ["2"]])
    with pytest.raises(ValueError, match="needs 2 values"):
        block.set_column("b", [1])


def test_particles_block_missing(tmp_path):
    blocks = read_star(_write(tmp_path, KEY_VALUE))
    with pytest.raises(DataError, match="no particles table"):
        particles_block(blocks, "in.star")


def test_psi_conversion_is_degrees_same_sign():
    assert psi_degrees_to_angle(-90.0) == pytest.approx(-math.pi / 2)
    angles = np.array([-3.0, 0.5, 2.0])
    np.testing.assert_allclose(psi_degrees_to_angle(angle_to_psi_degrees(angles)), angles)


@pytest.mark.parametrize("text, line, problem", [
    ("data_a\nloop_\n_rlnA\n_rlnB\n1 2\n3\n", 6, "row has 1 values, the loop has 2 columns"),
    ("loop_\n_rlnA\n", 1, "loop_ before any data_ block"),
    ("data_a\n_rlnA\n", 2, "needs exactly one value"),
    ("data_a\n_rlnA 1\nloop_\n", 3, "not both"),
    ("data_a\nloop_\n_rlnA\n1\n_rlnB 2\n", 5, "not both"),
    ("data_a\nstray\n", 2, "unexpected 'stray'"),
    ("data_a\ndata_a\n", 2, "duplicate block"),
])
def test_malformed_input_names_file_and_line(tmp_path, text, line, problem):
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_star(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line {line}: ") and problem in message
    assert "\n" not in message


def test_not_a_star_file(tmp_path):
    with pytest.raises(DataError, match="no data_ block"):
        read_star(_write(tmp_path, "# just a comment\n"))
    with pytest.raises(DataError, match="no such file"):
        read_star(str(tmp_path / "absent.star"))

"""RELION STAR files: `data_` blocks holding either a `loop_` table or key/value pairs.

Column names are kept without their leading underscore (`rlnAnglePsi`); values stay strings, since
STAR has no types. RELION 3.1+ files hold a `data_optics` and a `data_particles` block; older files a
single loop block, which `particles_block` also finds.

RELION's names (`IMAGE_NAME`, `ANGLE_PSI`, ..., `image_name`, `optics_block`) live here only.
`rlnAnglePsi` is the project's angle (`data_pipeline/angles.py`) in degrees with the same sign;
`psi_degrees_to_angle` / `angle_to_psi_degrees` are the one place that conversion lives.
"""
import contextlib
import dataclasses
import os
import re
import shutil
from typing import Sequence

import numpy as np

from data_pipeline.atomic import atomic_path
from data_pipeline.errors import DataError
from data_pipeline.angles import to_degrees

# RELION's names, used by every reader and writer of STAR files in the project.
IMAGE_NAME = "rlnImageName"
ANGLE_PSI = "rlnAnglePsi"
OPTICS_GROUP = "rlnOpticsGroup"
IMAGE_PIXEL_SIZE = "rlnImagePixelSize"
IMAGE_SIZE = "rlnImageSize"
IMAGE_DIMENSIONALITY = "rlnImageDimensionality"
OPTICS_GROUP_NAME = "rlnOpticsGroupName"
ORIGIN_COLUMNS = ("rlnOriginXAngst", "rlnOriginYAngst")
CLASS_NUMBER = "rlnClassNumber"
# RELION 2D classification's grades of a particle, and its model STAR's per-class columns.
MAX_PROBABILITY = "rlnMaxValueProbDistribution"
LOG_LIKELIHOOD = "rlnLogLikeliContribution"
REFERENCE_IMAGE = "rlnReferenceImage"
CLASS_DISTRIBUTION = "rlnClassDistribution"
PARTICLE_COUNT = "rlnParticleNumber"
DEFOCUS_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")
PHASE_SHIFT = "rlnPhaseShift"
OPTICS_COLUMNS = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
# RELION 3.0 (no optics table): origins in pixels, the pixel size as detector pixel / magnification
ORIGIN_PIXEL_COLUMNS = ("rlnOriginX", "rlnOriginY")
MAGNIFICATION, DETECTOR_PIXEL_SIZE = "rlnMagnification", "rlnDetectorPixelSize"
# RELION 3.1+ writes this tag before each block of a file that has an optics table; on a file
# without one it makes RELION read nothing (it then expects the optics table).
VERSION_TAG = "# version 30001"

# A token is a quoted string (closed by the same quote) or a run of non-blank characters.
_TOKEN = re.compile(r"""'([^']*)'|"([^"]*)"|(\S+)""")
_NEEDS_QUOTES = re.compile(r"""^$|\s|^[_#'";]|^(data_|loop_|save_|global_|stop_)""", re.IGNORECASE)


def psi_degrees_to_angle(psi: np.ndarray | float) -> np.ndarray | float:
    """RELION `rlnAnglePsi` (degrees) -> the project's `angle` (radians, same sign)."""
    return np.deg2rad(psi)


def angle_to_psi_degrees(angle: np.ndarray | float) -> np.ndarray | float:
    """The project's `angle` (radians) -> RELION `rlnAnglePsi` (degrees, same sign, wrapped to
    (-180, 180])."""
    return to_degrees(angle)


def relion_origins(offsets: np.ndarray, image_size: int, pixel_sizes: np.ndarray | float
                   ) -> np.ndarray:
    """rlnOriginXAngst/YAngst [B, 2] of particles whose centres sit `offsets` [B, 2] pixels from
    the box centre in `data_pipeline.rotation`'s convention (from ((N-1)/2, (N-1)/2); x along the
    columns, y down the rows). RELION puts a particle's centre at its box centre, pixel N // 2 on
    both axes (half a pixel further than ours in an even box), minus the origin, in Å: checked
    against `relion_project` in tests/data/relion_origins/."""
    gap = image_size // 2 - (image_size - 1) / 2
    pixel_sizes = np.reshape(np.asarray(pixel_sizes, np.float64), (-1, 1))
    return (gap - np.asarray(offsets, np.float64)) * pixel_sizes


def offsets_from_origins(origins: np.ndarray, image_size: int, pixel_sizes: np.ndarray | float
                         ) -> np.ndarray:
    """The offsets [B, 2] pixels (`relion_origins`' convention) of RELION origins [B, 2] Å."""
    gap = image_size // 2 - (image_size - 1) / 2
    pixel_sizes = np.reshape(np.asarray(pixel_sizes, np.float64), (-1, 1))
    return gap - np.asarray(origins, np.float64) / pixel_sizes


def image_name(index: int, stack_path: str) -> str:
    """RELION's `rlnImageName` for the 1-based `index` in `stack_path`: `000001@stack.mrcs`."""
    return f"{index:06d}@{stack_path}"


def image_positions(table: "StarBlock", path: str) -> tuple[list[str], np.ndarray]:
    """Each row's stack name and 0-based index, from `image_name`'s `<k>@<stack>`; `DataError`
    naming the first row that is not."""
    names, indices = [], np.empty(len(table), np.int64)
    for row, name in enumerate(table.column(IMAGE_NAME)):
        number, _, stack_name = name.partition("@")
        if not stack_name or not number.isdigit() or int(number) < 1:
            raise DataError(path, f"particle {row + 1}: {IMAGE_NAME} {name!r} is not "
                            f"<number>@<stack>")
        names.append(stack_name)
        indices[row] = int(number) - 1
    return names, indices


@dataclasses.dataclass
class StarBlock:
    """One `data_` block. A key/value block (`loop=False`) has one row holding its values."""

    columns: list[str]
    rows: list[list[str]]
    loop: bool = True

    def __contains__(self, name: str) -> bool:
        return name.lstrip("_") in self.columns

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[str]:
        """The values of column `name` (with or without its leading underscore)."""
        name = name.lstrip("_")
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns are {', '.join(self.columns)}")
        i = self.columns.index(name)
        return [row[i] for row in self.rows]

    def set_column(self, name: str, values: Sequence[object]) -> None:
        """Replaces column `name`, or appends it; one value per row (written with `str`)."""
        name = name.lstrip("_")
        if len(values) != len(self.rows):
            raise ValueError(f"column {name!r} needs {len(self.rows)} values, got {len(values)}")
        values = [str(v) for v in values]
        if name in self.columns:
            i = self.columns.index(name)
            for row, value in zip(self.rows, values):
                row[i] = value
        else:
            self.columns.append(name)
            for row, value in zip(self.rows, values):
                row.append(value)


def _tokens(line: str) -> list[str]:
    """The values on a line, unquoted, up to a comment."""
    tokens = []
    for match in _TOKEN.finditer(line):
        single, double, bare = match.groups()
        if bare is not None and bare.startswith("#"):
            break
        tokens.append(bare if bare is not None else single if single is not None else double)
    return tokens


class _Parser:
    """Line-by-line STAR reader; keeps the line number for error messages."""

    def __init__(self, path: str):
        self.path = path
        self.blocks: dict[str, StarBlock] = {}
        self.block: StarBlock | None = None
        self.state = "outside"  # outside | keys | loop_header | loop_rows

    def fail(self, number: int, problem: str) -> None:
        raise DataError(self.path, f"line {number}: {problem}")

    def feed(self, number: int, line: str) -> None:
        tokens = _tokens(line)
        if not tokens:
            if self.state == "loop_rows":
                self.state = "outside"
            return
        head = line.lstrip()  # keywords are recognised unquoted only
        if head.startswith("data_"):
            self._start_block(number, tokens[0][len("data_"):], len(tokens))
        elif tokens[0] == "loop_" and head.startswith("loop_"):
            self._start_loop(number)
        elif head.startswith("_"):
            self._key(number, tokens)
        elif head.startswith(";"):
            self.fail(number, "multi-line ';' text fields are not supported")
        elif self.state in ("loop_header", "loop_rows"):
            self._row(number, tokens)
        else:
            self.fail(number, f"unexpected {tokens[0]!r} outside a loop or key/value pair")

    def _start_block(self, number: int, name: str, count: int) -> None:
        if count != 1:
            self.fail(number, "unexpected text after the block name")
        if name in self.blocks:
            self.fail(number, f"duplicate block data_{name}")
        self.block = StarBlock(columns=[], rows=[], loop=False)
        self.blocks[name] = self.block
        self.state = "outside"

    def _start_loop(self, number: int) -> None:
        if self.block is None:
            self.fail(number, "loop_ before any data_ block")
        if self.block.columns:
            self.fail(number, "a block holds either one loop_ or key/value pairs, not both")
        self.block.loop = True
        self.state = "loop_header"

    def _key(self, number: int, tokens: list[str]) -> None:
        if self.block is None:
            self.fail(number, f"{tokens[0]} before any data_ block")
        name = tokens[0][1:]
        if name in self.block.columns:
            self.fail(number, f"duplicate column {name!r}")
        if self.state == "loop_header":
            if len(tokens) != 1:
                self.fail(number, f"unexpected text after loop column {tokens[0]}")
            self.block.columns.append(name)
            return
        if self.block.loop:
            self.fail(number, "a block holds either one loop_ or key/value pairs, not both")
        if len(tokens) != 2:
            self.fail(number, f"key {tokens[0]} needs exactly one value, got {len(tokens) - 1}")
        self.block.columns.append(name)
        if not self.block.rows:
            self.block.rows.append([])
        self.block.rows[0].append(tokens[1])
        self.state = "keys"

    def _row(self, number: int, tokens: list[str]) -> None:
        if not self.block.columns:
            self.fail(number, "loop_ without columns")
        if len(tokens) != len(self.block.columns):
            self.fail(number, f"row has {len(tokens)} values, the loop has "
                      f"{len(self.block.columns)} columns")
        self.block.rows.append(tokens)
        self.state = "loop_rows"


def read_star(path: str) -> dict[str, StarBlock]:
    """Reads a STAR file -> {block name (without `data_`): StarBlock}, in file order."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(path, "no such file")
    parser = _Parser(path)
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                parser.feed(number, line)
    except UnicodeDecodeError:
        raise DataError(path, "not a text file") from None
    if not parser.blocks:
        raise DataError(path, "no data_ block (not a STAR file?)")
    for name, block in parser.blocks.items():
        if block.loop and not block.columns:
            raise DataError(path, f"block data_{name}: loop_ without columns")
    return parser.blocks


def _quote(value: str) -> str:
    if not _NEEDS_QUOTES.search(value):
        return value
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    raise ValueError(f"cannot write a STAR value holding both kinds of quote: {value!r}")


def _check_comments(comments: Sequence[str]) -> None:
    if any("\n" in line or "\r" in line for line in comments):
        raise ValueError(f"STAR comments must be single lines: {list(comments)!r}")


class StarWriter:
    """Writes a STAR file block by block, a loop's rows as they come (RELION layout: numbered loop
    columns), with `comments` as `# ...` lines at the top (readers, RELION's included, skip them).

    A use is a `with` block: the file is written under a temporary name beside `path` and renamed
    when the block ends cleanly (removed on an exception), so a table of millions of rows never has
    to be held in memory and a failed run leaves no half-written file. `write_rows` flushes, so the
    rows are on disk batch by batch.
    """

    def __init__(self, path: str, comments: Sequence[str] = ()):
        _check_comments(comments)
        self.path = os.fspath(path)
        self.comments = list(comments)
        self._late: list[str] = []  # `add_comments`'s lines
        self._body = 0  # where the file's blocks begin, after the comments
        self._exit = contextlib.ExitStack()
        self._file = None
        self._columns = 0  # columns of the loop being written, 0 = none
        self._blocks = 0  # blocks begun
        self._tagged = False  # whether blocks get RELION's version tag

    def __enter__(self) -> "StarWriter":
        with contextlib.ExitStack() as opening:
            tmp = opening.enter_context(atomic_path(self.path))
            opening.push(lambda exc_type, *_: exc_type is None and self._insert_late(tmp))
            self._file = opening.enter_context(open(tmp, "w", encoding="utf-8"))
            opening.callback(self._end_loop)  # the last loop's blank line, before closing
            self._exit = opening.pop_all()
        self._lines(["", *(f"# {line}" for line in self.comments)])
        self._body = self._file.tell()
        self._lines([""])
        return self

    def add_comments(self, comments: Sequence[str]) -> None:
        """Comment lines that join the top ones when the file is complete: what is known only
        once every row is written (a summary of them), while the rows still stream to disk."""
        _check_comments(comments)
        self._late.extend(comments)

    def _insert_late(self, tmp: str) -> None:
        """Rewrites the closed temporary file with `add_comments`'s lines after the first ones
        (a streamed copy: the rows are never all in memory)."""
        if not self._late:
            return
        with atomic_path(tmp) as rewritten, open(tmp, encoding="utf-8") as source, \
                open(rewritten, "w", encoding="utf-8") as target:
            target.write(source.read(self._body))
            target.write("".join(f"# {line}\n" for line in self._late))
            shutil.copyfileobj(source, target)

    def __exit__(self, *exc_info: object) -> bool | None:
        return self._exit.__exit__(*exc_info)

    def _lines(self, lines: Sequence[str]) -> None:
        self._file.write("".join(line + "\n" for line in lines))

    def _end_loop(self) -> None:
        if self._columns:
            self._lines([""])
            self._columns = 0

    def _begin_block(self, name: str) -> None:
        """Ends the previous loop; RELION's version tag before every block once the first one is
        the optics table (`VERSION_TAG`)."""
        self._end_loop()
        if not self._blocks:
            self._tagged = name == "optics"
        self._blocks += 1
        if self._tagged:
            self._lines([VERSION_TAG, ""])

    def write_block(self, name: str, block: StarBlock) -> None:
        """Writes a whole block (a loop or key/value pairs)."""
        if block.loop:
            self.begin_loop(name, block.columns)
            self.write_rows(block.rows)
            return
        self._begin_block(name)
        values = block.rows[0] if block.rows else []
        self._lines([f"data_{name}", "",
                     *(f"_{column} {_quote(str(v))}" for column, v in zip(block.columns, values)),
                     ""])

    def begin_loop(self, name: str, columns: Sequence[str]) -> None:
        """Starts block `name` holding a loop of `columns`; `write_rows` adds its rows."""
        if not columns:
            raise ValueError(f"loop data_{name} needs at least one column")
        self._begin_block(name)
        self._lines([f"data_{name}", "", "loop_",
                     *(f"_{column} #{i}" for i, column in enumerate(columns, start=1))])
        self._columns = len(columns)

    def write_rows(self, rows: Sequence[Sequence[object]]) -> None:
        """Appends rows (values written with `str`) to the loop begun last, and flushes."""
        if not self._columns:
            raise ValueError(f"{self.path}: rows written outside a loop (call begin_loop first)")
        for row in rows:
            if len(row) != self._columns:
                raise ValueError(f"{self.path}: a row of {len(row)} values for a loop of "
                                 f"{self._columns} columns")
        self._lines([" ".join(_quote(str(v)) for v in row) for row in rows])
        self._file.flush()


def write_star(path: str, blocks: dict[str, StarBlock], comments: Sequence[str] = ()) -> None:
    """Writes `blocks` as a STAR file (see `StarWriter`), atomically."""
    with StarWriter(path, comments) as writer:
        for name, block in blocks.items():
            writer.write_block(name, block)


def particles_block(blocks: dict[str, StarBlock], path: str = "STAR file") -> StarBlock:
    """The particle table: block `particles` (RELION 3.1+), or the only loop block of older files."""
    if "particles" in blocks:
        return blocks["particles"]
    loops = [block for block in blocks.values() if block.loop]
    if len(loops) == 1:
        return loops[0]
    raise DataError(path, f"no particles table: expected a data_particles block or a single loop, "
                    f"found blocks {', '.join('data_' + n for n in blocks)}")


def optics_block(pixel_size: float, image_size: int, voltage: float | None = None,
                 spherical_aberration: float | None = None,
                 amplitude_contrast: float | None = None) -> StarBlock:
    """A RELION 3.1 `data_optics` block of one group (`rlnOpticsGroup` 1), with the microscope's
    optics when given (kV, mm, fraction)."""
    columns = [OPTICS_GROUP, OPTICS_GROUP_NAME]
    row = ["1", "opticsGroup1"]
    if voltage is not None:
        columns += list(OPTICS_COLUMNS)
        row += [f"{voltage:g}", f"{spherical_aberration:g}", f"{amplitude_contrast:g}"]
    columns += [IMAGE_PIXEL_SIZE, IMAGE_SIZE, IMAGE_DIMENSIONALITY]
    row += [f"{pixel_size:.6f}", str(image_size), "2"]
    return StarBlock(columns=columns, rows=[row])


def numeric_column(block: StarBlock, name: str, path: str, non_negative: bool = False
                   ) -> np.ndarray:
    """Column `name` as float64; `DataError` naming the column and the first row (1-based) that
    is not a finite number (or is negative, with `non_negative`)."""
    values = np.empty(len(block))
    for row, text in enumerate(block.column(name)):
        try:
            value = float(text)
        except ValueError:
            raise DataError(path, f"column {name}, row {row + 1}: {text!r} is not a number") \
                from None
        if not np.isfinite(value) or (non_negative and value < 0):
            raise DataError(path, f"column {name}, row {row + 1}: {text!r} is "
                            f"{'negative' if np.isfinite(value) else 'not finite'}")
        values[row] = value
    return values

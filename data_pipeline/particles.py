"""Particles as RELION and cryoSPARC name them: the one source that training and serving read.

`read_particles(path)` takes what users have:
- a RELION STAR file: 3.1 and later (a `data_optics` table and a `data_particles` table whose
  `rlnOpticsGroup` names each particle's group), or 3.0 (one table whose optics columns are per
  particle; the pixel size is rlnDetectorPixelSize (µm) x 1e4 / rlnMagnification, or
  rlnImagePixelSize; rows with the same optics form one group, as `relion_convert_star` does);
- a cryoSPARC `.cs` particle file (`formats.cryosparc`; its `blob/psize_A` and `ctf/*` fields);
- a bare MRC stack (`.mrcs`/`.mrc`): one group whose pixel size is the header's (unknown when 0).

Where an image is: `rlnImageName` is `<k>@<stack>` (k 1-based). A relative stack path is resolved as
RELION does, from the working directory (a RELION project's root); where it is not found there,
from the STAR file's folder, and `notes` says so. A `.cs` file's `blob/path` by
`cryosparc.resolve_stack`.

Per particle (each an array in the input's row order): its stack and 0-based index, its optics
group (pixel size Å, voltage kV, Cs mm, amplitude contrast; None where the input does not say:
`with_optics` fills them in, `check_optics` checks them), and where the input has them the
in-plane angle (rlnAnglePsi, degrees), the CTF (defocus U, V in Å, astigmatism angle and phase
shift in degrees: rlnPhaseShift, `ctf/phase_shift_rad`) and the origin (Å; RELION 3.0's
rlnOriginX/Y pixels converted). `ctf_values` gives each particle's whole CTF as
`data_pipeline.ctf` takes it.
"""
import dataclasses
import os
import numpy as np

from data_pipeline import ctf as ctf_lib
from data_pipeline.errors import DataError
from data_pipeline.formats import cryosparc
from data_pipeline.formats import star
from data_pipeline.formats.mrc import MrcStack, open_stack

MAX_OPEN_STACKS = 16  # stacks memory-mapped at the same time by one reader
OPTICS_NAMES = ("pixel_size", "voltage", "spherical_aberration", "amplitude_contrast")
_STAR_OPTICS = dict(zip(OPTICS_NAMES, (star.IMAGE_PIXEL_SIZE, *star.OPTICS_COLUMNS)))
_CS_OPTICS = dict(zip(OPTICS_NAMES, cryosparc.OPTICS_FIELDS))
# How a user gives a value the input lacks (`canonicalize`'s flags; training reads the STAR).
OPTICS_FLAGS = {name: f"--{name}" for name in OPTICS_NAMES}
_UNITS = {"pixel_size": "Å", "voltage": "kV", "spherical_aberration": "mm",
          "amplitude_contrast": "fraction"}


@dataclasses.dataclass(frozen=True)
class OpticsGroup:
    """One optics group: RELION's number and name, and its values (None: not in the input)."""

    number: int
    name: str
    pixel_size: float | None = None
    voltage: float | None = None
    spherical_aberration: float | None = None
    amplitude_contrast: float | None = None


@dataclasses.dataclass(frozen=True)
class Particles:
    """The particles of one input, in its row order (module docstring)."""

    path: str  # the input file
    stacks: list[str]  # resolved stack paths, in order of first use
    stack_ids: np.ndarray  # int64 [n]: each particle's entry in `stacks`
    indices: np.ndarray  # int64 [n]: each particle's 0-based image in its stack
    height: int
    width: int
    groups: list[OpticsGroup]
    group_ids: np.ndarray  # int64 [n]: each particle's entry in `groups`
    psi: np.ndarray | None = None  # float64 [n] degrees (rlnAnglePsi)
    defocus: np.ndarray | None = None  # float64 [n, 3]: U, V (Å), astigmatism angle (degrees)
    phase_shift: np.ndarray | None = None  # float64 [n] degrees
    origins: np.ndarray | None = None  # float64 [n, 2] Å, x then y (RELION's convention)
    blocks: dict[str, star.StarBlock] | None = None  # a STAR input's blocks, as read
    notes: tuple[str, ...] = ()  # what a user should know about how the input was read

    def __len__(self) -> int:
        return len(self.indices)

    def select(self, rows: np.ndarray) -> "Particles":
        """The particles at `rows` (0-based, in that order), without the STAR input's blocks
        (whose rows they no longer follow)."""
        rows = np.asarray(rows, np.int64)

        def pick(values):
            return None if values is None else values[rows]

        return dataclasses.replace(
            self, stack_ids=self.stack_ids[rows], indices=self.indices[rows],
            group_ids=self.group_ids[rows], psi=pick(self.psi), defocus=pick(self.defocus),
            phase_shift=pick(self.phase_shift), origins=pick(self.origins), blocks=None)

    def with_optics(self, **values: float | None) -> "Particles":
        """Every group with the given optics values (`OPTICS_NAMES`; None leaves one as read):
        for values the input lacks, or gets wrong (`check_optics` checks them)."""
        unknown = set(values) - set(OPTICS_NAMES)
        if unknown:
            raise ValueError(f"unknown optics {sorted(unknown)}; expected {OPTICS_NAMES}")
        given = {name: value for name, value in values.items() if value is not None}
        return dataclasses.replace(
            self, groups=[dataclasses.replace(group, **given) for group in self.groups])

    def check_optics(self, names: tuple[str, ...] = OPTICS_NAMES) -> None:
        """`DataError` naming the first group that lacks one of `names` (and the flag giving
        it), or whose values `ctf.Optics` refuses."""
        for group in self.groups:
            for name in names:
                if getattr(group, name) is None:
                    raise DataError(self.path, f"optics group {group.number} ({group.name}) "
                                    f"has no {name.replace('_', ' ')} ({_UNITS[name]}, "
                                    f"{_STAR_OPTICS[name]}): give it with {OPTICS_FLAGS[name]}")
            known = {name: getattr(group, name) for name in OPTICS_NAMES
                     if getattr(group, name) is not None}
            try:
                ctf_lib.Optics(**known)  # the one check of optics values
            except ValueError as e:
                raise DataError(self.path, f"optics group {group.number}: {e}") from None

    def pixel_sizes(self) -> np.ndarray:
        """Each particle's pixel size (Å); `DataError` naming `--pixel_size` where unknown."""
        self.check_optics(("pixel_size",))
        return np.array([g.pixel_size for g in self.groups])[self.group_ids]

    def ctf_values(self, pixel_scale: float = 1.0) -> dict[str, np.ndarray] | None:
        """Each particle's CTF as `data_pipeline.ctf` takes it (float32 per name of
        `ctf.CTF_FEATURES`), pixels `pixel_scale` times the input's (after resampling); None
        without defocus values; `DataError` where a group's optics are unknown."""
        if self.defocus is None:
            return None
        self.check_optics()
        group = {name: np.array([getattr(g, name) for g in self.groups])[self.group_ids]
                 for name in OPTICS_NAMES}
        group["pixel_size"] = group["pixel_size"] * pixel_scale
        phase = self.phase_shift if self.phase_shift is not None else np.zeros(len(self))
        values = {"defocus_u": self.defocus[:, 0], "defocus_v": self.defocus[:, 1],
                  "defocus_angle": self.defocus[:, 2], "phase_shift": phase, **group}
        return {name: np.asarray(values[name], np.float32) for name in ctf_lib.CTF_FEATURES}

    def open(self) -> "ParticleReader":
        """A reader of the particles' images: `with particles.open() as r: r.read(0, 64)`."""
        return ParticleReader(self)

    def nonfinite(self, batch_size: int = 1024) -> list[int]:
        """The particles (1-based, in row order) whose images hold NaN or Inf pixels."""
        bad = []
        with self.open() as reader:
            for start in range(0, len(self), batch_size):
                images = reader.read(start, min(start + batch_size, len(self)))
                finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
                bad += [start + 1 + int(i) for i in np.flatnonzero(~finite)]
        return bad

    def check_finite(self, max_listed: int = 20) -> None:
        """`DataError` listing the particles (1-based) whose images are not finite."""
        bad = self.nonfinite()
        if bad:
            listed = ", ".join(map(str, bad[:max_listed]))
            more = f" and {len(bad) - max_listed} more" if len(bad) > max_listed else ""
            raise DataError(self.path, f"particle{'s' if len(bad) > 1 else ''} {listed}{more} "
                            f"(1-based) {'have' if len(bad) > 1 else 'has'} NaN/Inf pixels")


class ParticleReader:
    """Reads particles' images from their stacks, keeping at most `MAX_OPEN_STACKS` mapped."""

    def __init__(self, particles: Particles):
        self.particles = particles
        self._open: dict[int, MrcStack] = {}

    def _stack(self, stack_id: int) -> MrcStack:
        if stack_id not in self._open:
            if len(self._open) >= MAX_OPEN_STACKS:
                self._open.pop(next(iter(self._open))).close()
            self._open[stack_id] = open_stack(self.particles.stacks[stack_id])
        return self._open[stack_id]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The images of particles `rows` (0-based) as float32 [k, h, w], reading each run of
        consecutive images of one stack in one go."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return np.zeros((0, self.particles.height, self.particles.width), np.float32)
        ids, idx = self.particles.stack_ids[rows], self.particles.indices[rows]
        breaks = np.flatnonzero((np.diff(ids) != 0) | (np.diff(idx) != 1)) + 1
        bounds = zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(idx)]]))
        return np.concatenate([self._stack(ids[a]).read(idx[a], idx[a] + (b - a))
                               for a, b in bounds])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Particles start..stop-1 as float32 [k, h, w]."""
        return self.take(np.arange(start, stop))

    def close(self) -> None:
        for stack in self._open.values():
            stack.close()
        self._open.clear()

    def __enter__(self) -> "ParticleReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_particles(path: str, stack: str | None = None) -> Particles:
    """The particles of a STAR, `.cs` or MRC file (module docstring); `DataError` for anything
    unusable. With `stack`, a STAR or `.cs` file's particles of that stack only (matched by file
    name, found at `stack`), in stack order; a STAR table without rlnImageName then describes
    the stack's images in order."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(path, "no such file")
    if path.lower().endswith(".star"):
        return _from_star(path, stack)
    if cryosparc.is_cs_file(path):
        return _from_cs(path, stack)
    if stack is not None:
        raise DataError(path, "expected a STAR or .cs file describing the stack")
    with open_stack(path) as opened:
        n, h, w = opened.shape
        pixel_size = opened.pixel_size
    return Particles(path=path, stacks=[os.path.abspath(path)], stack_ids=np.zeros(n, np.int64),
                     indices=np.arange(n, dtype=np.int64), height=h, width=w,
                     groups=[OpticsGroup(1, "opticsGroup1", pixel_size)],
                     group_ids=np.zeros(n, np.int64))


def _check_stacks(path: str, stacks: list[str], stack_ids: np.ndarray, indices: np.ndarray,
                  describe) -> tuple[int, int, list[float | None]]:
    """Opens every stack once: their image size (one for all), each stack's header pixel size,
    and `DataError` naming the first particle (1-based, `describe(row)`) beyond its stack."""
    shapes, pixel_sizes = set(), []
    for stack_id, stack_path in enumerate(stacks):
        with open_stack(stack_path) as opened:
            n, h, w = opened.shape
            pixel_sizes.append(opened.pixel_size)
        shapes.add((h, w))
        mine = stack_ids == stack_id
        beyond = np.flatnonzero(mine & (indices >= n))
        if len(beyond):
            raise DataError(path, f"particle {beyond[0] + 1}: {describe(beyond[0])} is beyond "
                            f"the {n} images of {stack_path}")
    if len(shapes) > 1:
        raise DataError(path, "the stacks hold images of different sizes: "
                        f"{', '.join(f'{h}x{w}' for h, w in sorted(shapes))}")
    (height, width), = shapes
    return height, width, pixel_sizes


def _resolve(name: str, star_path: str, notes: list[str]) -> str:
    """The stack `name` (from rlnImageName) as RELION finds it (module docstring)."""
    if os.path.isabs(name):
        if os.path.isfile(name):
            return name
        raise DataError(star_path, f"stack {name} ({star.IMAGE_NAME}): no such file")
    if os.path.isfile(name):
        return os.path.abspath(name)
    folder = os.path.dirname(os.path.abspath(star_path))
    beside = os.path.join(folder, name)
    if os.path.isfile(beside):
        note = (f"{star_path}: stacks named relative to the STAR file's folder, not the working "
                f"directory as RELION reads them")
        if note not in notes:
            notes.append(note)
        return os.path.normpath(beside)
    raise DataError(star_path, f"stack {name} ({star.IMAGE_NAME}) not found from the working "
                    f"directory ({os.getcwd()}) nor from the STAR file's folder ({folder})")


def _optional(table: star.StarBlock, name: str, path: str, non_negative: bool = False
              ) -> np.ndarray | None:
    return (star.numeric_column(table, name, path, non_negative=non_negative)
            if name in table else None)


def _groups_from_optics_table(blocks: dict, table: star.StarBlock, path: str
                              ) -> tuple[list[OpticsGroup], np.ndarray]:
    """RELION 3.1+: the optics table's groups and each particle's (by rlnOpticsGroup)."""
    optics = blocks["optics"]
    if not optics.loop or len(optics) == 0:
        raise DataError(path, "data_optics has no groups")
    numbers = (star.numeric_column(optics, star.OPTICS_GROUP, path).astype(np.int64)
               if star.OPTICS_GROUP in optics else np.arange(1, len(optics) + 1))
    names = (optics.column(star.OPTICS_GROUP_NAME) if star.OPTICS_GROUP_NAME in optics
             else [f"opticsGroup{k}" for k in numbers])
    values = {name: _optional(optics, column, path, non_negative=True)
              for name, column in _STAR_OPTICS.items()}
    groups = [OpticsGroup(int(number), group_name, **{
        name: None if column is None or (name == "pixel_size" and column[i] <= 0)
        else float(column[i]) for name, column in values.items()})
        for i, (number, group_name) in enumerate(zip(numbers, names))]
    if star.OPTICS_GROUP not in table:
        if len(groups) > 1:
            raise DataError(path, f"{len(groups)} optics groups but no {star.OPTICS_GROUP} "
                            f"column in the particle table")
        return groups, np.zeros(len(table), np.int64)
    position = {int(number): i for i, number in enumerate(numbers)}
    ids = np.empty(len(table), np.int64)
    for row, number in enumerate(star.numeric_column(table, star.OPTICS_GROUP, path)):
        if int(number) not in position:
            raise DataError(path, f"particle {row + 1}: {star.OPTICS_GROUP} {int(number)} is "
                            f"not in data_optics")
        ids[row] = position[int(number)]
    return groups, ids


def _groups_from_rows(values: dict[str, np.ndarray | None], count: int
                      ) -> tuple[list[OpticsGroup], np.ndarray]:
    """Groups of the rows with the same optics values (RELION 3.0, cryoSPARC), numbered in order
    of first appearance."""
    known = [name for name in OPTICS_NAMES if values.get(name) is not None]
    if not known:
        return [OpticsGroup(1, "opticsGroup1")], np.zeros(count, np.int64)
    table = np.stack([values[name] for name in known], axis=1)
    unique, first, inverse = np.unique(table, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    groups = [OpticsGroup(k, f"opticsGroup{k}", **dict(zip(known, map(float, unique[i]))))
              for k, i in enumerate(order, start=1)]
    return groups, rank[inverse.reshape(-1)].astype(np.int64)


def _star_images(table: star.StarBlock, path: str, only_stack: str | None, notes: list[str]
                 ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(rows read, stacks, each read row's stack and 0-based index) of a particle table."""
    if star.IMAGE_NAME not in table:
        if only_stack is None:
            raise DataError(path, f"the particle table has no {star.IMAGE_NAME} column")
        rows = np.arange(len(table))  # the stack's images in order
        return rows, [os.path.abspath(only_stack)], np.zeros(len(rows), np.int64), rows
    names, indices = star.image_positions(table, path)
    if only_stack is not None:  # the rows naming that stack, wherever it is
        rows = np.flatnonzero([os.path.basename(n) == os.path.basename(only_stack)
                               for n in names])
        return (rows, [os.path.abspath(only_stack)], np.zeros(len(rows), np.int64),
                indices[rows])
    distinct = list(dict.fromkeys(names))
    position = {name: i for i, name in enumerate(distinct)}
    return (np.arange(len(table)), [_resolve(name, path, notes) for name in distinct],
            np.array([position[n] for n in names], np.int64), indices)


def _star_groups(blocks: dict, table: star.StarBlock, path: str
                 ) -> tuple[list[OpticsGroup], np.ndarray]:
    """The optics groups and each row's: from the optics table (RELION 3.1+) or from the
    rows' own optics columns (RELION 3.0)."""
    if "optics" in blocks:
        return _groups_from_optics_table(blocks, table, path)
    values = {name: _optional(table, column, path, non_negative=True)
              for name, column in _STAR_OPTICS.items()}
    magnification = _optional(table, star.MAGNIFICATION, path, non_negative=True)
    detector = _optional(table, star.DETECTOR_PIXEL_SIZE, path, non_negative=True)
    if values["pixel_size"] is None and magnification is not None and detector is not None:
        if (magnification <= 0).any():
            raise DataError(path, f"{star.MAGNIFICATION} must be positive")
        values["pixel_size"] = detector * 1e4 / magnification
    return _groups_from_rows(values, len(table))


def _with_header_pixel_size(groups: list[OpticsGroup], pixel_size: float | None
                            ) -> list[OpticsGroup]:
    """Groups whose metadata has no pixel size take the (first) stack header's."""
    return [g if g.pixel_size is not None else dataclasses.replace(g, pixel_size=pixel_size)
            for g in groups]


def _star_defocus(table: star.StarBlock, path: str) -> np.ndarray | None:
    present = [name for name in star.DEFOCUS_COLUMNS if name in table]
    if not present:
        return None
    missing = [name for name in star.DEFOCUS_COLUMNS if name not in table]
    if missing:
        raise DataError(path, f"has {present[0]} but no {missing[0]} column: the CTF needs "
                        f"{', '.join(star.DEFOCUS_COLUMNS)}")
    return np.stack([star.numeric_column(table, name, path,
                                         non_negative=name != "rlnDefocusAngle")
                     for name in star.DEFOCUS_COLUMNS], axis=1)


def _from_star(path: str, only_stack: str | None) -> Particles:
    blocks = star.read_star(path)
    table = star.particles_block(blocks, path)
    if len(table) == 0:
        raise DataError(path, "the particle table has no rows")
    notes: list[str] = []
    rows, stacks, stack_ids, indices = _star_images(table, path, only_stack, notes)
    image_names = table.column(star.IMAGE_NAME) if star.IMAGE_NAME in table else None
    height, width, header_pixels = _check_stacks(
        path, stacks, stack_ids, indices,
        lambda i: (f"{star.IMAGE_NAME} {image_names[rows[i]]!r}" if image_names
                   else f"row {rows[i] + 1}"))
    groups, group_ids = _star_groups(blocks, table, path)
    groups = _with_header_pixel_size(groups, header_pixels[0])
    psi, defocus = _optional(table, star.ANGLE_PSI, path), _star_defocus(table, path)
    phase, origins = (_optional(table, star.PHASE_SHIFT, path),
                      _origins(table, groups, group_ids, path))
    particles = Particles(
        path=path, stacks=stacks, stack_ids=stack_ids, indices=indices, height=height,
        width=width, groups=groups, group_ids=group_ids[rows],
        **{name: None if values is None else values[rows] for name, values in (
            ("psi", psi), ("defocus", defocus), ("phase_shift", phase), ("origins", origins))},
        blocks=blocks, notes=tuple(notes))
    return particles if only_stack is None else _stack_order(particles, path)


def _origins(table: star.StarBlock, groups: list[OpticsGroup], group_ids: np.ndarray,
             path: str) -> np.ndarray | None:
    """Origins in Å: RELION 3.1's columns, or RELION 3.0's pixels times the pixel size."""
    if all(name in table for name in star.ORIGIN_COLUMNS):
        return np.stack([star.numeric_column(table, n, path) for n in star.ORIGIN_COLUMNS], 1)
    if not all(name in table for name in star.ORIGIN_PIXEL_COLUMNS):
        return None
    pixels = np.array([np.nan if g.pixel_size is None else g.pixel_size for g in groups])
    if np.isnan(pixels).any():
        raise DataError(path, f"{star.ORIGIN_PIXEL_COLUMNS[0]} is in pixels but the pixel size "
                        f"is unknown")
    origins = np.stack([star.numeric_column(table, n, path) for n in star.ORIGIN_PIXEL_COLUMNS], 1)
    return origins * pixels[group_ids][:, None]


def _stack_order(particles: Particles, path: str) -> Particles:
    """One stack's particles in its image order; `DataError` unless each image has one row."""
    with open_stack(particles.stacks[0]) as opened:
        count = len(opened)
    name = os.path.basename(particles.stacks[0])
    distinct = len(np.unique(particles.indices))
    if len(particles) != count or distinct != count:
        raise DataError(path, f"{distinct} distinct rows name {name}, expected one for each of "
                        f"its {count} images")
    return particles.select(np.argsort(particles.indices, kind="stable"))


def _from_cs(path: str, only_stack: str | None) -> Particles:
    found = cryosparc.read_cs(path)
    rows = np.arange(len(found))
    if only_stack is not None:
        ours = np.array([os.path.basename(s) == os.path.basename(only_stack)
                         for s in found.stacks], bool)
        rows = np.flatnonzero(ours[found.stack_ids])
        stacks, stack_ids = [os.path.abspath(only_stack)], np.zeros(len(rows), np.int64)
    else:
        stacks = [cryosparc.resolve_stack(path, s) for s in found.stacks]
        stack_ids = found.stack_ids
    indices = found.indices[rows]
    height, width, header_pixels = _check_stacks(
        path, stacks, stack_ids, indices,
        lambda row: f"{cryosparc.INDEX} {indices[row]}")
    array = found.array[rows]
    values = {name: cryosparc.numbers(array, field, path, non_negative=True)
              for name, field in _CS_OPTICS.items()}
    groups, group_ids = _groups_from_rows(values, len(rows))
    groups = _with_header_pixel_size(groups, header_pixels[0])
    present = [f for f in cryosparc.DEFOCUS_FIELDS if f in array.dtype.names]
    defocus = None
    if present:
        missing = [f for f in cryosparc.DEFOCUS_FIELDS if f not in array.dtype.names]
        if missing:
            raise DataError(path, f"has {present[0]} but no {missing[0]} field: the CTF needs "
                            f"{', '.join(cryosparc.DEFOCUS_FIELDS)}")
        u, v, angle = (cryosparc.numbers(array, f, path, non_negative=f != "ctf/df_angle_rad")
                       for f in cryosparc.DEFOCUS_FIELDS)
        defocus = np.stack([u, v, np.rad2deg(angle)], axis=1)
    phase = cryosparc.numbers(array, cryosparc.PHASE_SHIFT, path)
    particles = Particles(
        path=path, stacks=stacks, stack_ids=stack_ids, indices=indices, height=height,
        width=width, groups=groups, group_ids=group_ids,
        psi=None if found.psi_degrees is None else found.psi_degrees[rows], defocus=defocus,
        phase_shift=None if phase is None else np.rad2deg(phase))
    return particles if only_stack is None else _stack_order(particles, path)

"""cryoSPARC particle files (`.cs`): a NumPy structured array saved with `np.save`, one row per
particle. Read without unpickling (`allow_pickle=False`), so a `.cs` file cannot run code.

Fields used:
- `blob/path` (bytes): the particle's stack, relative to the cryoSPARC project folder, e.g.
  `J12/imported/particles.mrcs`. A leading `>` (cryoSPARC's mark on some imported paths) is dropped,
  as cryoDRGN does (ml-struct-bio/cryodrgn, `cryodrgn/source.py`, `CsSource`).
- `blob/idx` (integer): the particle's 0-based index in that stack.
- `alignments2D/pose` (float, optional): the in-plane angle from 2D classification, radians.
- `ctf/df1_A`, `ctf/df2_A`, `ctf/df_angle_rad`, `ctf/accel_kv`, `ctf/cs_mm`, `ctf/amp_contrast`
  (optional, all or none) and `blob/psize_A`: the CTF, as pyem converts them to RELION's
  rlnDefocusU, rlnDefocusV, rlnDefocusAngle (degrees), rlnVoltage, rlnSphericalAberration,
  rlnAmplitudeContrast and rlnImagePixelSize; `ctf/phase_shift_rad` (optional) as rlnPhaseShift.

Angle convention: RELION's `rlnAnglePsi` is `alignments2D/pose` in degrees, same sign. That is
pyem's cryoSPARC -> STAR conversion (asarnow/pyem, `pyem/metadata/cryosparc2.py`:
`cryosparc_2_cs_model_parameters` maps `alignments2D/pose` to `rlnAnglePsi`, and
`parse_cryosparc_2_cs` applies `np.rad2deg` with no sign change). From `rlnAnglePsi` on, the one
conversion to the project's angle is `star.psi_degrees_to_angle`.

Where a stack is (`resolve_stack`): an absolute `blob/path` is used as it is. A relative one is
looked up from the `.cs` file's folder: first the whole path, then with its leading folders
stripped one at a time (`J12/imported/particles.mrcs`, `imported/particles.mrcs`,
`particles.mrcs`). So a `.cs` file works from the cryoSPARC project folder and copied next to its
stacks.
"""
import dataclasses
import os

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.formats.star import CtfColumns

SUFFIX = ".cs"
PATH, INDEX, POSE = "blob/path", "blob/idx", "alignments2D/pose"
CTF_FIELDS = ("ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad", "ctf/accel_kv", "ctf/cs_mm",
              "ctf/amp_contrast")
PIXEL_SIZE = "blob/psize_A"
PHASE_SHIFT = "ctf/phase_shift_rad"
_NPY_MAGIC = b"\x93NUMPY"


def is_cs_file(path: str) -> bool:
    """Whether `path` names a cryoSPARC particle file (by its `.cs` suffix)."""
    return os.fspath(path).lower().endswith(SUFFIX)


@dataclasses.dataclass(frozen=True)
class CsParticles:
    """The particles of a `.cs` file, in its row order."""

    path: str
    stacks: list[str]  # distinct `blob/path` values (`>` dropped), in order of first use
    stack_ids: np.ndarray  # int64 [n]: each particle's entry in `stacks`
    indices: np.ndarray  # int64 [n]: each particle's 0-based index in its stack
    psi_degrees: np.ndarray | None  # float64 [n] rlnAnglePsi; None without alignments2D/pose
    ctf: CtfColumns | None = None  # None without ctf/* fields

    def __len__(self) -> int:
        return len(self.indices)


def _load(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(path, "no such file")
    with open(path, "rb") as f:
        if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise DataError(path, "not a cryoSPARC .cs file (no NumPy .npy header)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # Python objects (pickles), truncated data
        problem = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(path, f"cannot read its .npy array ({problem})") from None
    if array.dtype.names is None:
        raise DataError(path, "not a cryoSPARC .cs file: not a NumPy structured array")
    if array.ndim != 1:
        raise DataError(path, f"expected one row per particle, found a {array.ndim}-D array")
    if len(array) == 0:
        raise DataError(path, "no particles")
    missing = [name for name in (PATH, INDEX) if name not in array.dtype.names]
    if missing:
        raise DataError(path, f"missing field {', '.join(missing)} (fields: "
                        f"{', '.join(array.dtype.names)})")
    return array


def _column(array: np.ndarray, name: str, kinds: str, what: str, path: str) -> np.ndarray:
    column = array[name]
    if column.ndim != 1 or column.dtype.kind not in kinds:
        raise DataError(path, f"{name} is not {what} per particle (dtype {column.dtype}, "
                        f"shape {column.shape})")
    return column


def _stack_names(array: np.ndarray, path: str) -> tuple[list[str], np.ndarray]:
    """Distinct stack paths in order of first use, and each row's position among them."""
    raw = _column(array, PATH, "SU", "one path", path)
    names, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    stacks = []
    for name in names[order]:
        try:
            text = name.decode("utf-8") if isinstance(name, bytes) else str(name)
        except UnicodeDecodeError:
            raise DataError(path, f"{PATH} {name!r} is not UTF-8 text") from None
        stacks.append(text[1:] if text.startswith(">") else text)
    return stacks, rank[inverse.reshape(-1)].astype(np.int64)


def read_cs(path: str) -> CsParticles:
    """Reads and checks a `.cs` particle file; `DataError` (one line) for anything unusable."""
    path = os.fspath(path)
    array = _load(path)
    stacks, stack_ids = _stack_names(array, path)
    indices = _column(array, INDEX, "iu", "one integer index", path).astype(np.int64)
    if (indices < 0).any():
        row = int(np.flatnonzero(indices < 0)[0])
        raise DataError(path, f"particle {row + 1}: {INDEX} {indices[row]} is negative")
    psi = None
    if POSE in array.dtype.names:
        pose = _column(array, POSE, "fiu", "one angle", path).astype(np.float64)
        if not np.isfinite(pose).all():
            row = int(np.flatnonzero(~np.isfinite(pose))[0])
            raise DataError(path, f"particle {row + 1}: {POSE} is NaN/Inf")
        psi = np.rad2deg(pose)
    return CsParticles(path=path, stacks=stacks, stack_ids=stack_ids, indices=indices,
                       psi_degrees=psi, ctf=_read_ctf(array, path))


def _finite_field(array: np.ndarray, name: str, path: str, non_negative: bool) -> np.ndarray:
    values = _column(array, name, "fiu", "one number", path).astype(np.float64)
    bad = ~np.isfinite(values) | ((values < 0) if non_negative else False)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(path, f"particle {row + 1}: {name} is {values[row]:g} (expected a "
                        f"{'non-negative ' if non_negative else ''}finite number)")
    return values


def _shared_value(array: np.ndarray, name: str, path: str) -> float:
    values = np.unique(_finite_field(array, name, path, non_negative=True))
    if len(values) > 1:
        raise DataError(path, f"{name}: different values across particles "
                        f"({', '.join(f'{v:g}' for v in values[:4])}) are not supported")
    return float(values[0])


def _read_ctf(array: np.ndarray, path: str) -> CtfColumns | None:
    """The `ctf/*` fields in RELION's units, or None when the file has none."""
    present = [name for name in CTF_FIELDS if name in array.dtype.names]
    if not present:
        return None
    missing = [name for name in CTF_FIELDS if name not in array.dtype.names]
    if missing:
        raise DataError(path, f"has {present[0]} but no {missing[0]} field: the CTF needs "
                        f"{', '.join(CTF_FIELDS)}")
    u, v, angle = (_finite_field(array, name, path, non_negative=name != "ctf/df_angle_rad")
                   for name in CTF_FIELDS[:3])
    return CtfColumns(
        defocus_u=u, defocus_v=v, defocus_angle=np.rad2deg(angle),
        voltage=_shared_value(array, "ctf/accel_kv", path),
        spherical_aberration=_shared_value(array, "ctf/cs_mm", path),
        amplitude_contrast=_shared_value(array, "ctf/amp_contrast", path),
        pixel_size=(_shared_value(array, PIXEL_SIZE, path)
                    if PIXEL_SIZE in array.dtype.names else None),
        phase_shift=(np.rad2deg(_finite_field(array, PHASE_SHIFT, path, non_negative=False))
                     if PHASE_SHIFT in array.dtype.names else 0.0))


def resolve_stack(cs_path: str, blob_path: str) -> str:
    """The file a `blob/path` names, by the rule in the module docstring; `DataError` if none."""
    if os.path.isabs(blob_path):
        if os.path.isfile(blob_path):
            return blob_path
        raise DataError(cs_path, f"stack {blob_path!r} ({PATH}) not found")
    folder = os.path.dirname(os.path.abspath(cs_path))
    parts = [part for part in blob_path.replace("\\", "/").split("/") if part not in ("", ".")]
    for start in range(len(parts)):
        candidate = os.path.join(folder, *parts[start:])
        if os.path.isfile(candidate):
            return candidate
    raise DataError(cs_path, f"stack {blob_path!r} ({PATH}) not found in {folder}, nor with "
                    f"its leading folders stripped")

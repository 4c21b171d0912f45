"""cryoSPARC `.cs` particle files written the way cryoSPARC does: `np.save` of a structured array."""
import numpy as np


def write_cs(path: str, blob_paths: list[str], indices, poses=None, extra: dict | None = None
             ) -> np.ndarray:
    """Writes a `.cs` file (uid, blob/path as bytes, blob/idx, optional alignments2D/pose in
    radians, and any `extra` fields); returns the array."""
    n = len(blob_paths)
    width = max(len(p.encode()) for p in blob_paths)
    fields = [("uid", "<u8"), ("blob/path", f"S{width}"), ("blob/idx", "<u4")]
    if poses is not None:
        fields.append(("alignments2D/pose", "<f4"))
    extra = extra or {}
    fields += [(name, np.asarray(values).dtype) for name, values in extra.items()]
    array = np.zeros(n, dtype=fields)
    array["uid"] = np.arange(n) + 10**15
    array["blob/path"] = [p.encode() for p in blob_paths]
    array["blob/idx"] = indices
    if poses is not None:
        array["alignments2D/pose"] = poses
    for name, values in extra.items():
        array[name] = values
    with open(path, "wb") as f:  # np.save(path) would append .npy to a .cs name
        np.save(f, array)
    return array

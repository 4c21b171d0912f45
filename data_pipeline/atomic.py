"""Write-to-temp-then-rename, so a failed run never leaves a half-written output."""
import contextlib
import os
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str, directory: bool = False) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it to `path` if the block succeeds.

    On an exception the temporary file (or folder, with `directory=True`) is removed and the
    exception propagates; an existing file at `path` is replaced only on success.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    base = "." + os.path.basename(path) + "."
    if directory:
        tmp = tempfile.mkdtemp(prefix=base, suffix=".tmp", dir=parent)
        os.rmdir(tmp)
    else:
        fd, tmp = tempfile.mkstemp(prefix=base, suffix=".tmp", dir=parent)
        os.close(fd)
    try:
        yield tmp
        if not directory:  # mkstemp makes owner-only files; give the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)

"""The one way files are written: under a hidden temporary name beside the target, then renamed
into place, so a reader (a loader, a browser, the next run) sees the old file or the whole new
one, never part of one, also after a crash or a power cut."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

__all__ = ["DEFAULT_MODE", "write_atomic"]

T = TypeVar("T")

# mkstemp makes 0600; dataset files and images are meant to be shared.
DEFAULT_MODE = 0o644


def write_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], T], *, durable: bool = True) -> T:
    """Call ``write(file)`` on a temporary file beside ``path`` and rename it to ``path``; return
    what ``write`` returns. The folder is made if missing. The file keeps the mode of the file it
    replaces (else 0644). ``durable``: fsync the file before the rename and the folder after it,
    so the new file survives a power cut once this returns; without it, whoever asked syncs later
    (download: one sync for all images). An exception from ``write`` leaves ``path`` as it was
    and no temporary file behind."""
    target = Path(path)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with open(fd, "wb") as f:
            result = write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        _fsync_folder(folder)  # the rename itself, else a power cut can undo it
    return result


def _fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Make the names in ``folder`` (a rename, a new file) durable."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows cannot open a folder to fsync it
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o777
    except OSError:  # nothing there yet (or nothing we may look at): the shared default
        return DEFAULT_MODE

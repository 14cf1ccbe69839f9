"""Writing a file so that a crash never leaves half of it: the one atomic write every saved
artefact uses.

A plain open(path, "w") truncates the old file first; a crash (or kill -9) in the middle leaves
neither the old contents nor the new. Instead: write a temporary file in the same directory, flush
and fsync it, then os.replace() it onto the final name. The rename is atomic on POSIX and Windows
when both names are on one file system, so `path` always holds either the complete old file or the
complete new one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _file_mode() -> int:
    """The permissions open() would give a new file under this process's umask (0644 under
    umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def atomic_write(path, write: Callable, binary: bool = True, check: Callable | None = None):
    """Create `path` through `write(f)`, a function that writes the contents to the open file
    object `f`.

    check(temporary_path), when given, runs on the complete temporary file before it takes the final
    name (a download is parsed there); its return value is returned. On any exception the temporary
    file is removed and `path` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # subtle: mkstemp makes 0600; a saved model is an ordinary, readable file
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "wb" if binary else "w",
                       **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())   # the bytes are on disk before the name points at them
        checked = check(tmp) if check is not None else None
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return checked


def atomic_write_text(path, text: str) -> None:
    """atomic_write for a str, encoded as UTF-8."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def remove_temporaries(directory) -> list[str]:
    """Delete the temporary files atomic_write leaves when the process is killed mid-write
    (".name.XXXX.tmp"); returns their names. Call it only where no other process is writing
    (a locked run directory)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir()
             if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return sorted(p.name for p in stale)

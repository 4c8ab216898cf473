"""Atomic file creation: a temporary file in the target folder, then ``os.replace`` over the target.

A crash, a full disk or an exception never leaves a partial file at the target path; on any error the temporary
file is removed and the target is left as it was.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The process's umask, read once at import (reading it means setting it, which is not thread-safe later).
UMASK = _read_umask()


def give_usual_permissions(path) -> None:
    """Give a file the permissions ``open()`` would have (``0o666`` less the umask): for files that a library
    creates private (``0o600``) but that others, a service account say, must be able to read."""
    os.chmod(path, 0o666 & ~UMASK)


def temp_path(path: Path) -> Path:
    """A hidden, unique temporary name beside ``path`` (``os.replace`` must not cross file systems)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def leftover_temp_files(folder, pattern: str = "*") -> list[Path]:
    """The temporary files (:func:`temp_path`) in ``folder`` whose target name matches ``pattern``: what a process
    killed in the middle of an atomic write leaves behind; never a complete file."""
    return sorted(Path(folder).glob(f".{pattern}.*.tmp"))


def atomic_create(path, create: Callable[[Path], object]) -> Path:
    """Create ``path`` atomically: ``create(tmp)`` makes the file at the temporary path ``tmp`` (any way it likes:
    a library's ``save(tmp)``, a copy, a link), which then replaces ``path``. Returns ``path``."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        create(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write(path, write: Callable) -> Path:
    """Create ``path`` atomically: ``write(file_object)`` fills the temporary file (opened ``wb``, with the usual
    permissions: the umask applies, as for a plain ``open()``)."""
    def create(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)

    return atomic_create(path, create)


def write_bytes_atomic(data: bytes, path) -> Path:
    """Write bytes atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))

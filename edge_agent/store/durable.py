"""Durable, private file writes: the one place the store touches the disk's guarantees.

* :func:`atomic_write` replaces a file so that a crash or power cut leaves the old or the
  new contents, never a mix: write a temporary file, fsync it, ``os.replace``, fsync the
  directory (a rename is durable only once its directory is).
* :func:`append_all` appends a whole record or nothing: a failed or short write (a full
  disk) is cut back off, so a later append never lands behind a torn line.
* Everything under the state directory is for the agent's user and its group only
  (the audit group): directories ``0750``, files ``0640`` or tighter.
  :func:`private_dir` makes directories so; :func:`tighten_tree` fixes what an older
  version or a careless copy left readable by other users.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o750
FILE_MODE = 0o640
# Bits no file or directory under the state directory may have: group write, other rwx.
FORBIDDEN = stat.S_IWGRP | stat.S_IRWXO


def fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - os.write raises rather than return 0 on files
            raise OSError("short write")
        view = view[n:]


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # a temp file left by a crash keeps its old mode otherwise
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def append_all(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Append ``data`` and fsync; on any failure cut the file back to where it was.
    A file this creates is made durable by an fsync of its directory."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    try:
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)
                os.fsync(fd)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) for the agent's user and group only."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & FORBIDDEN:
        os.chmod(path, mode & ~FORBIDDEN)


def tighten_tree(root: Path) -> list[str]:
    """Take group-write and every 'other' bit off everything under ``root``; returns
    what was changed (relative paths). Sockets and links are left alone."""
    changed: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath) / name if name != "." else Path(dirpath)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                continue
            mode = stat.S_IMODE(st.st_mode)
            if mode & FORBIDDEN:
                os.chmod(p, mode & ~FORBIDDEN)
                changed.append(str(p.relative_to(root)))
    return sorted(set(changed))

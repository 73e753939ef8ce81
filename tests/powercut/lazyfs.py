"""A lazy file system for power-cut tests, in the style of LazyFS (the FUSE file system
Jepsen uses): file data written through it stays in this process's memory until the
application fsyncs (or fdatasyncs) that file; metadata operations (create, rename,
unlink, mkdir, chmod) pass straight through to the backing directory.

    python lazyfs.py BACKING MOUNTPOINT

Control: write a command to ``MOUNTPOINT/.lazyfs``:

* ``crash`` — a power cut: every unsynced write (and truncation) is dropped;
* ``torn SEED`` — a power cut mid-flush: of each file's unsynced changes, a random
  subset of 512-byte sectors reaches the disk, in any order, the rest is lost; the
  file keeps its new size with even odds (zeros where nothing arrived), as real disks
  do (field notes: "zeros, then a tail, then a newline");
* ``sync`` — persist everything (a clean shutdown).

The kernel's page cache is bypassed (``direct_io``, no attribute caching), so after a
cut a restarted program reads exactly what the "disk" kept. Single-threaded: every
operation runs in order, on this process's main thread.
"""

from __future__ import annotations

import errno
import os
import random
import sys
from typing import Any

import mfusepy
from mfusepy import FUSE, FuseOSError, Operations

CONTROL = "/.lazyfs"
SECTOR = 512

Op = tuple[str, int, bytes]  # ("w", offset, data) or ("t", length, b"")


def apply_ops(base: bytes, ops: list[Op]) -> bytes:
    buf = bytearray(base)
    for kind, pos, data in ops:
        if kind == "t":
            del buf[pos:]
            buf.extend(b"\0" * (pos - len(buf)))
        else:
            if pos > len(buf):
                buf.extend(b"\0" * (pos - len(buf)))
            buf[pos:pos + len(data)] = data
    return bytes(buf)


class LazyFS(Operations):
    use_ns = True

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.pending: dict[str, list[Op]] = {}
        self._views: dict[str, bytes] = {}
        self.rng = random.Random(0)

    # ------------------------------------------------------------------ helpers

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _disk(self, path: str) -> bytes:
        try:
            with open(self._full(path), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def _view(self, path: str) -> bytes | None:
        """The file as the application sees it, if it has unsynced changes."""
        ops = self.pending.get(path)
        if not ops:
            return None
        view = self._views.get(path)
        if view is None:
            view = self._views[path] = apply_ops(self._disk(path), ops)
        return view

    def _queue(self, path: str, op: Op) -> None:
        self.pending.setdefault(path, []).append(op)
        self._views.pop(path, None)

    def _persist(self, path: str, data: bytes) -> None:
        fd = os.open(self._full(path), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, len(data))
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sync(self, path: str) -> None:
        view = self._view(path)
        if view is not None and os.path.exists(self._full(path)):
            self._persist(path, view)
        self.pending.pop(path, None)
        self._views.pop(path, None)

    def _cut(self, torn: bool) -> dict[str, int]:
        stats = {"files": 0, "sectors_kept": 0, "sectors_lost": 0}
        for path in list(self.pending):
            if torn and os.path.exists(self._full(path)):
                old = self._disk(path)
                new = self._view(path) or old
                size = len(new) if self.rng.random() < 0.5 else len(old)
                out = bytearray(old[:size].ljust(size, b"\0"))
                for start in range(0, size, SECTOR):
                    if new[start:start + SECTOR] == bytes(out[start:start + SECTOR]):
                        continue
                    if self.rng.random() < 0.5:
                        out[start:start + SECTOR] = new[start:start + SECTOR][:size - start]
                        stats["sectors_kept"] += 1
                    else:
                        stats["sectors_lost"] += 1
                self._persist(path, bytes(out))
            stats["files"] += 1
            self.pending.pop(path, None)
            self._views.pop(path, None)
        return stats

    def _control(self, command: str) -> None:
        words = command.split()
        if not words:
            return
        if words[0] == "crash":
            self._cut(torn=False)
        elif words[0] == "torn":
            self.rng = random.Random(int(words[1]) if len(words) > 1 else 0)
            self._cut(torn=True)
        elif words[0] == "sync":
            for path in list(self.pending):
                self._sync(path)

    # ------------------------------------------------------------------ metadata

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path == CONTROL:
            return {"st_mode": 0o100600, "st_nlink": 1, "st_size": 0}
        try:
            st = os.lstat(self._full(path))
        except OSError as exc:
            raise FuseOSError(exc.errno or errno.EIO) from exc
        attrs = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid",
                                             "st_size", "st_ino")}
        for k in ("st_atime", "st_mtime", "st_ctime"):
            attrs[k] = getattr(st, k + "_ns")
        view = self._view(path)
        if view is not None:
            attrs["st_size"] = len(view)
        return attrs

    def access(self, path: str, amode: int) -> int:
        if path != CONTROL and not os.access(self._full(path), amode):
            raise FuseOSError(errno.EACCES)
        return 0

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._full(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._full(path))
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._full(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._full(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        os.utime(self._full(path), ns=times)
        return 0

    def unlink(self, path: str) -> int:
        try:
            os.unlink(self._full(path))
        except OSError as exc:
            raise FuseOSError(exc.errno or errno.EIO) from exc
        self.pending.pop(path, None)
        self._views.pop(path, None)
        return 0

    def rename(self, old: str, new: str) -> int:
        os.rename(self._full(old), self._full(new))
        self.pending.pop(new, None)
        self._views.pop(new, None)
        if old in self.pending:
            self.pending[new] = self.pending.pop(old)
        self._views.pop(old, None)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self._full(path))
        return {k: getattr(sv, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize",
                                            "f_favail", "f_ffree", "f_files", "f_flag",
                                            "f_frsize", "f_namemax")}

    # ------------------------------------------------------------------ data

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        fd = os.open(self._full(path), os.O_WRONLY | os.O_CREAT, mode)
        os.close(fd)
        return 0

    def open(self, path: str, flags: int) -> int:
        if path == CONTROL:
            return 0
        if not os.path.exists(self._full(path)):
            raise FuseOSError(errno.ENOENT)
        if flags & os.O_TRUNC:
            self._queue(path, ("t", 0, b""))
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        view = self._view(path)
        if view is not None:
            return view[offset:offset + size]
        with open(self._full(path), "rb") as f:
            f.seek(offset)
            return f.read(size)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if path == CONTROL:
            self._control(data.decode(errors="replace"))
            return len(data)
        self._queue(path, ("w", offset, bytes(data)))
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if path != CONTROL:
            self._queue(path, ("t", length, b""))
        return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        raise FuseOSError(errno.EOPNOTSUPP)  # glibc's posix_fallocate writes instead

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        if path != CONTROL:
            self._sync(path)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        return 0  # metadata is never held back

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        return 0


def main() -> None:
    backing, mountpoint = sys.argv[1], sys.argv[2]
    FUSE(LazyFS(backing), mountpoint, foreground=True, nothreads=True, direct_io=True,
         attr_timeout=0, entry_timeout=0, negative_timeout=0)


if __name__ == "__main__":
    assert mfusepy
    main()

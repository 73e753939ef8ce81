"""Append-only, hash-chained audit log in JSON-lines segments.

Each record carries a sequence number, UTC and monotonic timestamps, the boot id, the
actor, the action, the device and compartment, the reason, the outcome and the SHA-256
of the previous record; its own ``hash`` is the SHA-256 of its canonical JSON without
the ``hash`` key. Records are written by one writer thread that groups whatever is
queued into one ``write`` + ``fsync`` (group commit); :meth:`AuditLog.append` resolves
only after the record is on disk, so an acknowledged event survives ``kill -9``.

On open, a torn last line (a crash mid-write) is cut off and reported, never treated as
tampering, and the chain continues from the last whole record.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

GENESIS = "0" * 64
AuditRecord = dict[str, Any]


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: AuditRecord) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


@dataclass
class TailRecovery:
    segment: str
    bytes_dropped: int
    last_seq: int


@dataclass
class _Pending:
    event: dict[str, Any]
    future: asyncio.Future[AuditRecord] | None
    loop: asyncio.AbstractEventLoop


class AuditLog:
    """The audit trail of one agent's state directory."""

    SEGMENT_GLOB = "audit-*.jsonl"

    def __init__(
        self,
        directory: Path,
        *,
        boot_id: str,
        segment_max_bytes: int = 64 * 1024 * 1024,
        recent: int = 2000,
        max_batch: int = 512,
    ) -> None:
        self.dir = directory
        self.boot_id = boot_id
        self.segment_max_bytes = segment_max_bytes
        self.max_batch = max_batch
        self.last_seq = 0
        self.last_hash = GENESIS
        self.recovered: TailRecovery | None = None
        self.recent: collections.deque[AuditRecord] = collections.deque(maxlen=recent)
        self._fd: int | None = None
        self._segment: Path | None = None
        self._size = 0
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.subscribers: list[Callable[[AuditRecord], None]] = []
        self.error: str | None = None
        self.commits = 0
        self.damaged_lines = 0

    # --------------------------------------------------------------- open/close

    @property
    def is_open(self) -> bool:
        return self._thread is not None

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob(self.SEGMENT_GLOB))

    def open(self) -> None:
        """Find the chain head, cutting a torn tail off the newest segment. Blocking."""
        self.dir.mkdir(parents=True, exist_ok=True)
        segs = self.segments()
        if segs:
            last = segs[-1]
            good_len, records, damaged = _scan_tail(last)
            if damaged:
                self.damaged_lines += damaged
                log.error("audit log: %d damaged line(s) inside %s; run 'edge-agent audit "
                          "verify'", damaged, last.name)
            size = last.stat().st_size
            if good_len < size:
                last_seq = records[-1]["seq"] if records else 0
                with open(last, "r+b") as f:
                    f.truncate(good_len)
                    f.flush()
                    os.fsync(f.fileno())
                self.recovered = TailRecovery(last.name, size - good_len, last_seq)
                log.warning("audit log: cut a torn tail of %d bytes off %s (crash recovery)",
                            size - good_len, last.name)
            if not records and len(segs) > 1:
                _, records, _ = _scan_tail(segs[-2])
            if records:
                self.last_seq = int(records[-1]["seq"])
                self.last_hash = str(records[-1]["hash"])
                self.recent.extend(records[-self.recent.maxlen :] if self.recent.maxlen else [])
            self._segment = last
        self._open_segment()
        self._thread = threading.Thread(target=self._writer, name="audit-writer", daemon=True)
        self._thread.start()

    def _open_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        if self._segment is None or (
            self._segment.exists() and self._segment.stat().st_size >= self.segment_max_bytes
        ):
            self._segment = self.dir / f"audit-{self.last_seq + 1:012d}.jsonl"
        self._fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = os.fstat(self._fd).st_size
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --------------------------------------------------------------- appending

    def append_nowait(self, event: dict[str, Any]) -> asyncio.Future[AuditRecord]:
        """Queue an event; the returned future resolves once it is on disk."""
        if self._thread is None:
            raise StoreUnavailable("the audit log is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[AuditRecord] = loop.create_future()
        self._queue.put(_Pending(event, fut, loop))
        return fut

    async def append(self, event: dict[str, Any]) -> AuditRecord:
        """Append one event and wait until it is durable. Raises StoreUnavailable."""
        return await self.append_nowait(event)

    def _build(self, event: dict[str, Any], seq: int, prev: str) -> AuditRecord:
        now = time.time()
        rec: AuditRecord = {
            "seq": seq,
            "ts": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds"),
            "mono": round(time.monotonic(), 6),
            "boot": self.boot_id,
            "actor": event.get("actor", "agent"),
            "action": event["action"],
            "device": event.get("device"),
            "compartment": event.get("compartment"),
            "item": event.get("item"),
            "reason": event.get("reason"),
            "outcome": event.get("outcome", "ok"),
            "details": event.get("details") or {},
            "prev": prev,
        }
        rec["hash"] = record_hash(rec)
        return rec

    def _writer(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        seq, prev = self.last_seq, self.last_hash
        records: list[AuditRecord] = []
        lines: list[bytes] = []
        for p in batch:
            try:
                rec = self._build(p.event, seq + 1, prev)
                line = canonical_json(rec) + b"\n"
            except (KeyError, TypeError, ValueError) as exc:
                _resolve(p, exc=StoreError(f"event not recordable: {exc}"))
                records.append({})
                lines.append(b"")
                continue
            seq, prev = rec["seq"], rec["hash"]
            records.append(rec)
            lines.append(line)
        data = b"".join(lines)
        try:
            if self._size >= self.segment_max_bytes:
                self._open_segment()
            assert self._fd is not None
            start = self._size
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                os.fsync(self._fd)
            except OSError:
                # Leave no half-written record behind: the chain must stay parseable.
                try:
                    os.ftruncate(self._fd, start)
                    os.fsync(self._fd)
                except OSError:
                    pass
                raise
        except OSError as exc:
            msg = f"audit log write failed: {exc.strerror or exc}"
            if self.error is None:
                log.error("%s; commands that move equipment are refused until it recovers", msg)
            self.error = msg
            for p, rec in zip(batch, records, strict=True):
                if rec:
                    _resolve(p, exc=StoreUnavailable(msg))
            return
        if self.error is not None:
            log.warning("audit log writable again")
            self.error = None
        self._size += len(data)
        self.last_seq, self.last_hash = seq, prev
        self.commits += 1
        for p, rec in zip(batch, records, strict=True):
            if rec:
                self.recent.append(rec)
                _resolve(p, rec=rec)
                for sub in list(self.subscribers):
                    p.loop.call_soon_threadsafe(sub, rec)

    # --------------------------------------------------------------- reading

    def iter_records(self) -> Iterator[AuditRecord]:
        """Every whole record, oldest first (blocking; run off the event loop)."""
        for seg in self.segments():
            with open(seg, "rb") as f:
                for raw in f:
                    rec = _parse_line(raw)
                    if rec is not None:
                        yield rec


def _resolve(p: _Pending, *, rec: AuditRecord | None = None, exc: Exception | None = None) -> None:
    fut = p.future
    if fut is None:
        return

    def set_result() -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(rec or {})

    p.loop.call_soon_threadsafe(set_result)


def _scan_tail(path: Path) -> tuple[int, list[AuditRecord], int]:
    """Scan a segment.

    Returns the byte length to keep (everything but a torn last line), the newest whole
    records, and how many damaged lines stand *before* the last one. Only the last line
    can be torn by a crash; damage elsewhere is kept for ``audit verify`` to report and is
    never cut away.
    """
    records: collections.deque[AuditRecord] = collections.deque(maxlen=2000)
    damaged = 0
    size = 0
    last_ok = True
    last_len = 0
    with open(path, "rb") as f:
        for raw in f:
            if not last_ok:
                damaged += 1
            size += len(raw)
            last_len = len(raw)
            rec = _parse_line(raw)
            last_ok = rec is not None
            if rec is not None:
                records.append(rec)
    keep = size if last_ok else size - last_len
    return keep, list(records), damaged


def _parse_line(raw: bytes) -> AuditRecord | None:
    if not raw.endswith(b"\n"):
        return None
    try:
        rec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict) or "seq" not in rec or "hash" not in rec:
        return None
    return rec

"""Append-only, hash-chained, sealed audit log in JSON-lines segments.

Each record carries a sequence number, UTC and monotonic timestamps, the boot id, the
actor, the action, the device, compartment and item, the reason, the outcome and the
SHA-256 of the previous record; its own ``hash`` is the SHA-256 of its canonical JSON
without the ``hash`` key.

* **Durable.** One writer thread groups whatever is queued into one ``write`` + ``fsync``
  (group commit). :meth:`AuditLog.append` resolves only once the record is on disk.
* **Crash-safe.** On open, a torn last line (a crash mid-write) is cut off and reported
  as a crash, never as tampering; the chain continues from the last whole record.
* **Fail closed on a full disk.** A failed write leaves no partial record. Commands
  (``fail_fast``) are refused at once; device observations are kept in memory (bounded)
  and written when the disk takes writes again, which the writer retries by itself.
* **Sealed.** Every ``checkpoint_every`` records or ``checkpoint_interval`` seconds the
  head is sealed with a forward-secure key (:mod:`edge_agent.store.seal`).
* **Indexed.** Each segment has an index of record offsets by device, actor, action and
  item, and its seq and time range (a ``.idx`` sidecar once the segment is full), so a
  query reads only the records it returns.
* **Bounded.** Segments rotate at ``segment_max_bytes``; whole segments older than the
  retention window are removed, after a horizon record says where the chain resumes.
"""

from __future__ import annotations

import array
import asyncio
import collections
import concurrent.futures
import contextlib
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from edge_agent.actions import Action
from edge_agent.errors import StoreError, StoreUnavailable
from edge_agent.store.durable import atomic_write, fsync_dir, private_dir
from edge_agent.store.seal import Sealer

log = logging.getLogger(__name__)

GENESIS = "0" * 64
AuditRecord = dict[str, Any]
INDEXED = ("device", "actor", "action", "item")
MAX_RETRY_BUFFER = 100_000
# The shortest retention window a site may set, and the one ``audit verify`` accepts
# by default: with the on-box sealing key an attacker can seal a fake retention run, but
# not one that removes records younger than this (an exported checkpoint shows them).
MIN_RETENTION_DAYS = 30.0


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON: UTF-8, keys sorted, no whitespace, shortest round-trip floats.

    Identical to ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` for the values records hold, at a tenth of the cost.
    """
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def record_hash(record: AuditRecord) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def utc_iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def parse_time(text: str) -> str:
    """Normalise a user-given time (ISO 8601, naive = UTC) to the log's format."""
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise StoreError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-22T03:00)") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def read_dir(directory: Path, query: Query) -> Iterator[AuditRecord]:
    """Records matching ``query`` in an audit directory, oldest first, read without the
    agent (blocking, read-only: no index is built, nothing is written). For a stopped
    agent's state or headquarters' copy (``edge-agent events --state-dir``)."""
    for seg in sorted(directory.glob(AuditLog.SEGMENT_GLOB)):
        with open(seg, "rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue  # a torn last line: the agent cuts it off at its next start
                if isinstance(rec, dict) and query.match(rec):
                    yield rec


@dataclass
class TailRecovery:
    segment: str
    bytes_dropped: int
    last_seq: int
    offset: int = 0


def segment_first_seq(seg: Path) -> int:
    """The first sequence number a segment was opened for (from its name)."""
    try:
        return int(seg.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return 1


def find_torn_tail(seg: Path, sealed_seq: int) -> TailRecovery | None:
    """Where a crash tore the last write of the newest segment, if it did.

    One rule, used by start-up (which cuts it off) and by ``audit verify`` (which calls
    it a crash): the tear starts at the first line that is not a whole record (no
    newline, unparseable, zeros: a power cut persists pages and sectors of an unsynced
    write in any order) and runs to the end, *provided every record a checkpoint sealed
    lies before it*. Only the last, unacknowledged write can be torn; damage to a sealed
    record is never a tear (an attacker cannot pass a cut as a crash).
    """
    offset, last_seq = 0, segment_first_seq(seg) - 1
    with open(seg, "rb") as f:
        for raw in f:
            rec = _parse_line(raw)
            if rec is None:
                size = seg.stat().st_size
                if last_seq < sealed_seq:
                    return None
                return TailRecovery(seg.name, size - offset, last_seq, offset)
            last_seq = int(rec["seq"])
            offset += len(raw)
    return None


@dataclass
class Query:
    """Filters for :meth:`AuditLog.query`; ``None`` means any."""

    after_seq: int = 0
    since: str | None = None  # ISO UTC, inclusive
    until: str | None = None  # ISO UTC, exclusive
    device: str | None = None
    compartment: int | None = None
    item: str | None = None
    actor: str | None = None
    action: str | None = None
    limit: int | None = 100

    def match(self, rec: AuditRecord) -> bool:
        if rec.get("seq", 0) <= self.after_seq:
            return False
        ts = rec.get("ts", "")
        if (self.since and ts < self.since) or (self.until and ts >= self.until):
            return False
        if self.compartment is not None and rec.get("compartment") != self.compartment:
            return False
        return all(getattr(self, k) is None or rec.get(k) == getattr(self, k) for k in INDEXED)


@dataclass
class SegmentIndex:
    """Where each record of one segment is, by the fields queries filter on."""

    first_seq: int | None = None
    last_seq: int | None = None
    first_ts: str | None = None
    last_ts: str | None = None
    count: int = 0
    # array('q') holds offsets as machine integers: a year of records costs megabytes,
    # not the hundreds a list of Python ints would.
    offsets: array.array[int] = field(default_factory=lambda: array.array("q"))
    keys: dict[str, dict[str, array.array[int]]] = field(
        default_factory=lambda: {k: {} for k in INDEXED})

    def add(self, rec: AuditRecord, offset: int) -> None:
        seq, ts = rec["seq"], rec["ts"]
        if self.first_seq is None:
            self.first_seq, self.first_ts = seq, ts
        self.last_seq, self.last_ts = seq, ts
        self.count += 1
        self.offsets.append(offset)
        keys = self.keys
        get = rec.get
        for k in INDEXED:  # the writer and verify run this for every record: kept lean
            v = get(k)
            if v is not None:
                values = keys[k]
                sv = v if v.__class__ is str else str(v)
                bucket = values.get(sv)
                if bucket is None:
                    bucket = values[sv] = array.array("q")
                bucket.append(offset)

    def add_batch(self, recs: Sequence[AuditRecord], offsets: Sequence[int]) -> None:
        """``add`` for a committed batch (the writer's hot path): the same result, the
        lookups made once per batch instead of once per record."""
        if not recs:
            return
        if self.first_seq is None:
            self.first_seq, self.first_ts = recs[0]["seq"], recs[0]["ts"]
        self.last_seq, self.last_ts = recs[-1]["seq"], recs[-1]["ts"]
        self.count += len(recs)
        self.offsets.extend(offsets)
        for k in INDEXED:
            values = self.keys[k]
            column = [rec.get(k) for rec in recs]
            first = column[0]
            if first.__class__ is str and column.count(first) == len(column):
                # One value for the whole batch (the actor, the action, often the
                # device): one bucket, extended once.
                bucket = values.get(first)
                if bucket is None:
                    bucket = values[first] = array.array("q")
                bucket.extend(offsets)
                continue
            get = values.get
            for v, offset in zip(column, offsets, strict=True):
                if v is None:
                    continue
                sv = v if v.__class__ is str else str(v)
                bucket = get(sv)
                if bucket is None:
                    bucket = values[sv] = array.array("q")
                bucket.append(offset)

    def candidates(self, q: Query) -> Sequence[int]:
        """Offsets that can match ``q`` by its indexed fields (all offsets if none)."""
        sets: list[Sequence[int]] = [self.keys[k].get(str(getattr(q, k)), array.array("q"))
                                     for k in INDEXED if getattr(q, k) is not None]
        if not sets:
            return self.offsets
        sets.sort(key=len)
        result = sets[0]
        for other in sets[1:]:
            keep = set(other)
            result = [o for o in result if o in keep]
        return result

    def overlaps(self, q: Query) -> bool:
        if self.count == 0:
            return False
        assert self.last_seq is not None and self.last_ts is not None
        assert self.first_ts is not None
        if self.last_seq <= q.after_seq:
            return False
        if q.since and self.last_ts < q.since:
            return False
        return not (q.until and self.first_ts >= q.until)

    def to_json(self) -> dict[str, Any]:
        return {"first_seq": self.first_seq, "last_seq": self.last_seq,
                "first_ts": self.first_ts, "last_ts": self.last_ts, "count": self.count,
                "offsets": self.offsets.tolist(),
                "keys": {k: {v: a.tolist() for v, a in d.items()}
                         for k, d in self.keys.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SegmentIndex:
        return cls(d["first_seq"], d["last_seq"], d["first_ts"], d["last_ts"], d["count"],
                   array.array("q", d["offsets"]),
                   {k: {v: array.array("q", a) for v, a in vals.items()}
                    for k, vals in d["keys"].items()})


def index_bytes(idx: SegmentIndex) -> bytes:
    """The index file's bytes: canonical, so a rebuild from the segment gives the same."""
    return canonical_json(idx.to_json())


def index_diff(claimed: SegmentIndex, actual: SegmentIndex, most: int = 3) -> str:
    """What an index file says that its segment does not (for alarms and verify)."""
    out: list[str] = []
    if claimed.count != actual.count:
        out.append(f"{claimed.count} records indexed, {actual.count} in the segment")
    for label, a, b in (("first time", claimed.first_ts, actual.first_ts),
                        ("last time", claimed.last_ts, actual.last_ts),
                        ("first seq", claimed.first_seq, actual.first_seq),
                        ("last seq", claimed.last_seq, actual.last_seq)):
        if a != b:
            out.append(f"{label} {a} instead of {b}")
    for k in INDEXED:
        for v in sorted(set(claimed.keys[k]) | set(actual.keys[k])):
            n_claimed = len(claimed.keys[k].get(v, ()))
            n_actual = len(actual.keys[k].get(v, ()))
            if n_claimed != n_actual:
                out.append(f"{k} {v}: {n_claimed} of {n_actual} records indexed")
    if not out and claimed.to_json() != actual.to_json():
        out.append("record offsets differ")
    more = f" (+{len(out) - most} more)" if len(out) > most else ""
    return "; ".join(out[:most]) + more


@dataclass
class _Job:
    """Work that must run on the writer thread (it alone commits; it and the seal thread
    take turns with the sealer under ``_seal_lock``)."""

    fn: Callable[[], Any]
    done: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


@dataclass(slots=True)
class _Pending:
    event: dict[str, Any]
    future: asyncio.Future[AuditRecord] | None
    loop: asyncio.AbstractEventLoop | None
    fail_fast: bool = True
    # The outcome of a command that reached hardware: may use the reserved disk space,
    # is never dropped, and its caller is answered even while it waits in memory.
    outcome: bool = False


def _parse_line(raw: bytes) -> AuditRecord | None:
    if not raw.endswith(b"\n"):
        return None
    try:
        rec = orjson.loads(raw)  # records are orjson's own output: a fifth of json's cost
    except ValueError:
        return None
    if not isinstance(rec, dict) or "seq" not in rec or "hash" not in rec:
        return None
    return rec


class AuditLog:
    """The audit trail of one agent's state directory."""

    SEGMENT_GLOB = "audit-*.jsonl"

    def __init__(
        self,
        directory: Path,
        *,
        boot_id: str,
        segment_max_bytes: int = 16 * 1024 * 1024,
        recent: int = 2000,
        max_batch: int = 1024,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        retention_days: float | None = None,
        retry_interval: float = 1.0,
        reserve_bytes: int = 64 * 1024,
    ) -> None:
        self.dir = directory
        self.boot_id = boot_id
        self.segment_max_bytes = segment_max_bytes
        self.max_batch = max_batch
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self.retention_days = retention_days
        self.retry_interval = retry_interval
        self.last_seq = 0
        self.last_hash = GENESIS
        self.recovered: TailRecovery | None = None
        self.recent: collections.deque[AuditRecord] = collections.deque(maxlen=recent)
        self.sealer = Sealer(directory)
        self.subscribers: list[Callable[[AuditRecord], None]] = []
        # The highest seq retention may remove (the uplink's acknowledged cursor): a
        # record not yet forwarded off the box is never deleted by retention.
        self.retention_floor: Callable[[], int] | None = None
        self.error: str | None = None
        self.commits = 0
        self.damaged_lines = 0
        self.dropped = 0
        self._fd: int | None = None
        self._segment: Path | None = None
        self._size = 0
        self._queue: queue.SimpleQueue[_Pending | _Job | None] = queue.SimpleQueue()
        self._retry: collections.deque[_Pending] = collections.deque()
        self._thread: threading.Thread | None = None
        self._index_lock = threading.Lock()
        self._indexes: dict[Path, SegmentIndex] = {}
        self._sealed_seq = 0
        self._sealed_at = time.monotonic()
        self._outage_started: float | None = None
        self._last_retention = 0.0
        self._head_ts: str | None = None
        # Disk space held back for the outcome records of commands already sent to
        # hardware: a full disk can refuse a command, never hide what one did.
        self.reserve_bytes = reserve_bytes
        self.reserve_path = directory / "space.reserve"
        self.reserve_short: str | None = None  # why commands are refused, if it is
        self._seal_error: str | None = None
        # Closed segments whose index digest is not in a checkpoint yet (sealed next).
        self._unsealed_segments: list[dict[str, Any]] = []
        self._seal_lock = threading.Lock()  # the sealer, _sealed_seq, _unsealed_segments
        self._seal_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="audit-seal")
        self._seal_futures: collections.deque[concurrent.futures.Future[None]] = \
            collections.deque()
        self._seal_asked = (0, time.monotonic())  # the last head a seal was asked for
        # Index files that did not match their segment at open (rebuilt; an alarm).
        self.index_problems: list[str] = []

    # --------------------------------------------------------------- open/close

    @property
    def is_open(self) -> bool:
        return self._thread is not None

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob(self.SEGMENT_GLOB))

    @staticmethod
    def index_path(segment: Path) -> Path:
        return segment.with_suffix(".idx")

    def _cut_torn_tail(self, seg: Path, sealed_seq: int) -> None:
        tear = find_torn_tail(seg, sealed_seq)
        if tear is None:
            return
        with open(seg, "r+b") as f:
            f.truncate(tear.offset)
            os.fsync(f.fileno())
        self.recovered = tear
        log.warning("audit log: cut a write torn by a crash off %s: %d bytes from byte %d "
                    "(after seq %d)", seg.name, tear.bytes_dropped, tear.offset, tear.last_seq)

    def _scan(self, seg: Path) -> tuple[SegmentIndex, list[AuditRecord]]:
        """Index a segment (whole records only), counting damaged lines."""
        idx = SegmentIndex()
        tail: collections.deque[AuditRecord] = collections.deque(maxlen=self.recent.maxlen)
        offset = damaged = 0
        with open(seg, "rb") as f:
            for raw in f:
                rec = _parse_line(raw)
                if rec is None:
                    damaged += 1
                else:
                    idx.add(rec, offset)
                    tail.append(rec)
                offset += len(raw)
        if damaged:
            # A write torn by a crash was cut off before this: what is left is damage to
            # records a checkpoint sealed, which is tampering (alarm; verify names it).
            self.damaged_lines += damaged
            log.error("audit log: %d damaged line(s) in %s; run 'edge-agent audit verify'",
                      damaged, seg.name)
        return idx, list(tail)

    def _load_index(self, seg: Path, sealed_digest: str | None) -> SegmentIndex:
        """A closed segment's index, trusted only if it is the one a checkpoint sealed.

        Otherwise it is rebuilt from the segment: an index that was never sealed (the
        agent stopped before the next checkpoint) silently, one that differs from what
        was sealed with an entry in :attr:`index_problems` (an alarm: it lied).
        """
        p = self.index_path(seg)
        try:
            raw: bytes | None = p.read_bytes()
        except OSError:
            raw = None
        if raw is not None and sealed_digest is not None \
                and hashlib.sha256(raw).hexdigest() == sealed_digest:
            try:
                return SegmentIndex.from_json(json.loads(raw))
            except (ValueError, KeyError, TypeError):
                pass  # cannot happen for sealed bytes; rebuild all the same
        idx, _ = self._scan(seg)
        if raw is not None and sealed_digest is not None:
            try:
                detail = index_diff(SegmentIndex.from_json(json.loads(raw)), idx)
            except (ValueError, KeyError, TypeError) as exc:
                detail = f"unreadable ({exc})"
            problem = f"{p.name} did not match its segment ({detail}); rebuilt"
            log.error("audit log: %s", problem)
            self.index_problems.append(problem)
        entry = self._write_index(seg, idx)
        if sealed_digest is None:
            self._unsealed_segments.append(entry)
        return idx

    def _write_index(self, seg: Path, idx: SegmentIndex) -> dict[str, Any]:
        """Write a closed segment's index; returns the entry its checkpoint will seal."""
        data = index_bytes(idx)
        atomic_write(self.index_path(seg), data)
        return {"segment": seg.name, "idx_sha256": hashlib.sha256(data).hexdigest(),
                "first_seq": idx.first_seq, "last_seq": idx.last_seq, "records": idx.count}

    def open(self) -> None:
        """Find the chain head (cutting a torn tail), load indexes, start the writer."""
        private_dir(self.dir)
        segs = self.segments()
        self.sealer.open(fresh_log=not segs)
        if self.sealer.problem:
            log.error("audit log: %s", self.sealer.problem)
        for seg in segs[:-1]:
            self._indexes[seg] = self._load_index(seg, self.sealer.sealed_indexes.get(seg.name))
        tail: list[AuditRecord] = []
        if segs:
            last = segs[-1]
            self._cut_torn_tail(last, int(self.sealer.last["seq"]) if self.sealer.last else 0)
            idx, tail = self._scan(last)
            self._indexes[last] = idx
            self._segment = last
        head = tail[-1] if tail else None
        if head is None:
            for seg in reversed(segs[:-1]):
                head = self._last_record(seg)
                if head:
                    break
        if head is None:
            horizon = self._horizon()
            if horizon:
                self.last_seq, self.last_hash = horizon["first_seq"] - 1, horizon["prev_hash"]
        else:
            self.last_seq, self.last_hash = int(head["seq"]), str(head["hash"])
            self._head_ts = str(head["ts"])
        self.recent.extend(tail)
        if self.sealer.last is not None:
            self._sealed_seq = int(self.sealer.last["seq"])
        self._seal_asked = (self._sealed_seq, self._sealed_at)
        self._open_segment()
        self._restore_reserve()
        self._seal_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="audit-seal")
        self._thread = threading.Thread(target=self._writer, name="audit-writer", daemon=True)
        self._thread.start()

    def _last_record(self, seg: Path) -> AuditRecord | None:
        idx = self._indexes.get(seg)
        if idx is None or not idx.offsets:
            return None
        with open(seg, "rb") as f:
            f.seek(idx.offsets[-1])
            return _parse_line(f.readline())

    def _horizon(self) -> dict[str, Any] | None:
        p = self.dir / "horizon.json"
        try:
            data: dict[str, Any] = json.loads(p.read_text())
            return data
        except (OSError, ValueError):
            return None

    def _open_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        if self._segment is None or (
            self._segment.exists() and self._segment.stat().st_size >= self.segment_max_bytes
        ):
            if self._segment is not None and self._segment in self._indexes:
                entry = self._write_index(self._segment, self._indexes[self._segment])
                with self._seal_lock:
                    self._unsealed_segments.append(entry)
            self._segment = self.dir / f"audit-{self.last_seq + 1:012d}.jsonl"
            with self._index_lock:
                self._indexes[self._segment] = SegmentIndex()
        self._fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = os.fstat(self._fd).st_size
        fsync_dir(self.dir)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        self._seal_pool.shutdown(wait=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --------------------------------------------------------------- appending

    def append_nowait(self, event: dict[str, Any], *, fail_fast: bool = True,
                      outcome: bool = False) -> asyncio.Future[AuditRecord]:
        """Queue an event; the returned future resolves once it is on disk.

        ``fail_fast`` (commands): if the log cannot be written the future fails at once.
        Otherwise (observations) the event is kept and retried until the disk recovers.
        """
        if self._thread is None:
            raise StoreUnavailable("the audit log is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[AuditRecord] = loop.create_future()
        self._queue.put(_Pending(event, fut, loop, fail_fast and not outcome, outcome))
        return fut

    async def append_outcome(self, event: dict[str, Any]) -> AuditRecord:
        """Record what a command that reached hardware did. Never refused: it may use the
        reserved space, and if even that is gone it is kept in memory (and written once
        the disk takes writes) and the record returned says ``"pending": true``."""
        return await self.append_nowait(event, outcome=True)

    def command_refusal(self) -> str | None:
        """Why a command that would move equipment must be refused now, or None: the
        log cannot be written, or the space for its outcome is not held in reserve."""
        if self.error is not None:
            return f"{self.error}: commands that move equipment are refused until the " \
                   "audit log can be written"
        if self.reserve_short is not None:
            return f"{self.reserve_short}: commands that move equipment are refused " \
                   "until the disk has room again"
        return None

    # --------------------------------------------------------------- reserve

    def _reserve_size(self) -> int:
        try:
            return self.reserve_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _restore_reserve(self) -> bool:
        """Hold ``reserve_bytes`` of real disk blocks in the reserve file. Blocking."""
        if self.reserve_bytes <= 0:
            return True
        try:
            fd = os.open(self.reserve_path, os.O_RDWR | os.O_CREAT, 0o640)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            why = (f"the audit log's reserved space ({self.reserve_bytes // 1024} KiB for "
                   f"command outcomes) cannot be held: {exc.strerror or exc}")
            if self.reserve_short is None:
                log.error("audit log: %s", why)
            self.reserve_short = why
            return False
        if self.reserve_short is not None:
            log.warning("audit log: reserved space for command outcomes held again")
            self.reserve_short = None
        return True

    def _release_reserve(self, need: int) -> bool:
        """Give back enough reserved space for ``need`` bytes of outcomes. Blocking."""
        size = self._reserve_size()
        if size == 0:
            return False
        keep = max(0, size - need - 16 * 1024)
        try:
            os.truncate(self.reserve_path, keep)
            fsync_dir(self.dir)
        except OSError:
            return False
        self.reserve_short = (f"the disk is full: {(size - keep) // 1024} KiB of the space "
                              "reserved for command outcomes were used")
        log.error("audit log: %s", self.reserve_short)
        return True

    def append(self, event: dict[str, Any]) -> asyncio.Future[AuditRecord]:
        """Append one event; await the result to wait until it is durable (raises
        StoreUnavailable). A future, not a coroutine: 64 writers gathered cost 64
        futures, not 64 more tasks (bench/audit_append.py)."""
        return self.append_nowait(event)

    def _writer(self) -> None:
        while True:
            timeout = self.retry_interval if (self._retry or self.error) else 1.0
            try:
                first: _Pending | _Job | None = self._queue.get(timeout=timeout)
            except queue.Empty:
                first = None
                if not (self._retry or self.error):
                    if self.reserve_short is not None:
                        self._restore_reserve()
                    self._maybe_checkpoint()
                    self._maybe_retain()
                    continue
            else:
                if first is None:
                    self._flush_retry_on_close()
                    self._maybe_checkpoint(force=True)
                    return
                if isinstance(first, _Job):
                    _run_job(first)
                    continue
            batch: list[_Pending] = list(self._retry)
            self._retry.clear()
            if self.error is not None:
                batch.insert(0, _Pending({"action": Action.AUDIT_LOG_RECOVERED, "details": {
                    "outage_seconds": round(time.monotonic() - (self._outage_started or 0), 3),
                    "kept_observations": len(batch), "dropped_observations": self.dropped,
                    "error": self.error}}, None, None, fail_fast=False))
            if first is not None:
                batch.append(first)
            stop = False
            job: _Job | None = None
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if isinstance(nxt, _Job):
                    job = nxt  # after this batch is on disk
                    break
                batch.append(nxt)
            self._commit(batch)
            self._maybe_checkpoint()
            if job is not None:
                _run_job(job)
            if stop:
                self._flush_retry_on_close()
                self._maybe_checkpoint(force=True)
                return

    def _flush_retry_on_close(self) -> None:
        if self._retry:
            batch = list(self._retry)
            self._retry.clear()
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        seq, prev = self.last_seq, self.last_hash
        built: list[tuple[_Pending, AuditRecord, bytes]] = []
        boot, dumps, sort_keys, sha256 = (self.boot_id, orjson.dumps, orjson.OPT_SORT_KEYS,
                                          hashlib.sha256)
        for p in batch:
            event = p.event
            get = event.get
            try:
                # The record (the fields of _build, inlined: this runs for every record).
                rec: AuditRecord = {
                    "seq": seq + 1, "ts": get("ts") or utc_iso(time.time()),
                    "mono": round(time.monotonic(), 6), "boot": boot,
                    "actor": get("actor", "agent"), "action": event["action"],
                    "device": get("device"), "compartment": get("compartment"),
                    "item": get("item"), "reason": get("reason"),
                    "outcome": get("outcome", "ok"), "details": get("details") or {},
                    "prev": prev}
                # Serialise once: the hash covers the canonical body (canonical_json), and
                # the line is that body with the hash appended (readers parse JSON, key
                # order is irrelevant).
                body = dumps(rec, option=sort_keys)
                digest = sha256(body).hexdigest()
            except (KeyError, TypeError, ValueError) as exc:
                _resolve(p, exc=StoreError(f"event not recordable: {exc}"))
                continue
            rec["hash"] = digest
            seq, prev = seq + 1, digest
            built.append((p, rec, body[:-1] + b',"hash":"' + digest.encode() + b'"}\n'))
        if not built:
            return
        data = b"".join(line for _, _, line in built)
        try:
            try:
                self._write(data)
            except OSError as exc:
                # Out of space with a command's outcome in the batch: spend the reserve.
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not any(
                        p.outcome for p, _, _ in built) or not self._release_reserve(len(data)):
                    raise
                self._write(data)
        except OSError as exc:
            self._write_failed(exc, built)
            return
        if self.error is not None:
            log.warning("audit log writable again after %.1fs",
                        time.monotonic() - (self._outage_started or time.monotonic()))
            self.error = None
            self._outage_started = None
            self.dropped = 0
        offset = self._size
        self._size += len(data)
        self.last_seq, self.last_hash = seq, prev
        self._head_ts = built[-1][1]["ts"]
        self.commits += 1
        idx = self._indexes[self._segment] if self._segment else None
        recs = [rec for _, rec, _ in built]
        if idx is not None:
            offsets = []
            for _, _, line in built:
                offsets.append(offset)
                offset += len(line)
            with self._index_lock:
                idx.add_batch(recs, offsets)
        self.recent.extend(recs)
        # One wake-up of each waiting event loop per batch, not one per record.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, AuditRecord]]] = {}
        for p, rec, _ in built:
            if p.loop is not None:
                items = by_loop.get(p.loop)
                if items is None:
                    items = by_loop[p.loop] = []
                items.append((p, rec))
        subscribers = list(self.subscribers)
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_deliver, items, subscribers)

    def _write(self, data: bytes) -> None:
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

    def _write_failed(self, exc: OSError, built: list[tuple[_Pending, AuditRecord, bytes]]
                      ) -> None:
        msg = f"audit log write failed: {exc.strerror or exc}"
        if self.error is None:
            self._outage_started = time.monotonic()
            log.error("%s; commands that move equipment are refused until it recovers", msg)
        self.error = msg
        for p, _rec, _ in built:
            if p.fail_fast:
                _resolve(p, exc=StoreUnavailable(msg))
            elif p.event.get("action") == Action.AUDIT_LOG_RECOVERED:
                continue  # made again, with fresh figures, on the next attempt
            elif p.outcome:
                # Never dropped. The caller learns now that it waits in memory; the
                # record is written with the next batch that reaches the disk.
                self._retry.append(p)
                _resolve(p, rec={"seq": None, "pending": True, "error": msg})
            elif len(self._retry) < MAX_RETRY_BUFFER:
                self._retry.append(p)
            else:
                self.dropped += 1
                _resolve(p, exc=StoreUnavailable(msg))

    # --------------------------------------------------------------- sealing

    def _maybe_checkpoint(self, *, force: bool = False) -> None:
        """Seal the head when ``checkpoint_every`` records or ``checkpoint_interval``
        seconds have passed since the last seal asked for (writer thread), exactly where
        the writer alone would seal. A checkpoint costs three fsyncs (its line, the
        evolved key, its directory): the seal thread writes it, in order, while the
        writer goes on committing; the head it seals is already durable. At most two
        seals wait: beyond that the writer waits too, so the records between
        checkpoints stay bounded. ``force`` (closing) waits for them and seals the last
        head here."""
        if not self.sealer.enabled or self.error:
            return
        if force:
            self._wait_seal()
            if self.last_seq > self._sealed_seq:
                self._seal_head((self.last_seq, self.last_hash, self._head_ts))
            return
        if self.last_seq <= self._seal_asked[0]:
            return
        if not (self.last_seq - self._seal_asked[0] >= self.checkpoint_every
                or time.monotonic() - self._seal_asked[1] >= self.checkpoint_interval):
            return
        while self._seal_futures and self._seal_futures[0].done():
            self._seal_futures.popleft()
        while len(self._seal_futures) >= 2:
            with contextlib.suppress(Exception):
                self._seal_futures.popleft().result(timeout=60)
        self._seal_asked = (self.last_seq, time.monotonic())
        self._seal_futures.append(self._seal_pool.submit(
            self._seal_head, (self.last_seq, self.last_hash, self._head_ts)))

    def _wait_seal(self) -> None:
        while self._seal_futures:
            with contextlib.suppress(Exception):
                self._seal_futures.popleft().result(timeout=60)

    def _seal_head(self, head: tuple[int, str, str | None]) -> None:
        seq, head_hash, head_ts = head
        try:
            with self._seal_lock:
                if seq <= self._sealed_seq:
                    return
                self._seal_at(seq, head_hash, head_ts)
        except (OSError, StoreError) as exc:
            # Asked again by the next commit: the head stays unsealed until it works.
            self._seal_asked = (self._sealed_seq, self._sealed_at)
            if self._seal_error is None:  # once per outage, not once per commit
                log.error("audit log: checkpoint failed: %s; retrying", exc)
            self._seal_error = str(exc)
            return
        if self._seal_error is not None:
            log.warning("audit log: checkpoints written again")
            self._seal_error = None

    def _seal_at(self, seq: int, head_hash: str, head_ts: str | None,
                 **extra: Any) -> dict[str, Any]:
        """Seal the record ``seq`` (durable already) with the digests of indexes not yet
        sealed. Under ``_seal_lock``: the writer's and the seal thread's seals never
        overlap, and a sealed segment digest is taken off the list exactly once."""
        segments = list(self._unsealed_segments)
        if segments:
            extra["segments"] = segments
        cp = self.sealer.seal(seq, head_hash, self.boot_id, rec_ts=head_ts, extra=extra)
        self._unsealed_segments = [e for e in self._unsealed_segments
                                   if not any(e is x for x in segments)]
        self._sealed_seq = seq
        self._sealed_at = time.monotonic()
        return cp

    def _seal(self, **extra: Any) -> dict[str, Any]:
        """Seal the head now (writer thread), after any seal in flight."""
        self._wait_seal()
        with self._seal_lock:
            cp = self._seal_at(self.last_seq, self.last_hash, self._head_ts, **extra)
        self._seal_asked = (self._sealed_seq, self._sealed_at)
        return cp

    # --------------------------------------------------------------- retention

    def _maybe_retain(self) -> None:
        if self.retention_days is None or time.monotonic() - self._last_retention < 3600:
            return
        self._last_retention = time.monotonic()
        try:
            self._retain(time.time())
        except (OSError, StoreError) as exc:
            log.error("audit log: retention failed: %s", exc)

    def apply_retention(self, now: float) -> list[str]:
        """Remove whole full segments whose newest record is older than the window.

        Runs on the writer thread (waits for it). Never removes the active segment or any
        record inside the window; see :meth:`_retain` for the evidence it leaves.
        """
        if self._thread is None:
            raise StoreUnavailable("the audit log is not open")
        job = _Job(lambda: self._retain(now))
        self._queue.put(job)
        result: list[str] = job.done.result(timeout=60)
        return result

    def _retain(self, now: float) -> list[str]:
        """Retention that leaves evidence only the sealing key could make.

        First a *retention checkpoint* is sealed: the head as usual, plus the horizon
        (first kept seq, the hash it chains to, cutoff, newest removed time, window).
        Then ``horizon.json`` says where the chain resumes, then the segments go, then an
        ``audit_retention`` record is appended. ``audit verify`` accepts a gap at the
        start of the log only with a retention checkpoint that names that exact horizon
        and whose window and times are consistent; a crash between the steps leaves a
        state it still accepts (records below the horizon are pending removal).
        """
        if self.retention_days is None:
            return []
        if not self.sealer.enabled:
            log.error("audit log: retention skipped: %s", self.sealer.problem)
            return []
        cutoff = utc_iso(now - self.retention_days * 86400)
        victims: list[tuple[Path, SegmentIndex]] = []
        for seg in self.segments()[:-1]:
            idx = self._indexes.get(seg)
            if idx is None or idx.last_ts is None or idx.last_ts >= cutoff:
                break  # segments are in time order: the rest are newer
            if self.retention_floor is not None and (idx.last_seq or 0) > self.retention_floor():
                log.warning("audit log: retention holds back %s: not all of it has been "
                            "forwarded off the box yet", seg.name)
                break
            victims.append((seg, idx))
        if not victims:
            return []
        last_seg, last_idx = victims[-1]
        after = self._last_record(last_seg)
        if after is None or last_idx.last_seq is None:
            return []
        removed = [seg.name for seg, _ in victims]
        horizon = {"first_seq": last_idx.last_seq + 1, "prev_hash": after["hash"],
                   "cutoff": cutoff, "last_removed_ts": max(i.last_ts or "" for _, i in victims),
                   "retention_days": self.retention_days, "removed": removed}
        self._wait_seal()
        with self._seal_lock:
            self._unsealed_segments = [e for e in self._unsealed_segments
                                       if e["segment"] not in removed]
        cp = self._seal(kind="retention", horizon=horizon)
        atomic_write(self.dir / "horizon.json",
                     canonical_json({**horizon, "epoch": cp["epoch"]}))
        for seg, _ in victims:
            with self._index_lock:
                self._indexes.pop(seg, None)
            self.index_path(seg).unlink(missing_ok=True)
            seg.unlink()
        fsync_dir(self.dir)
        self._queue.put(_Pending({"action": Action.AUDIT_RETENTION, "details": {
            "removed": removed, "cutoff": cutoff, "first_seq": horizon["first_seq"],
            "epoch": cp["epoch"], "retention_days": self.retention_days}},
            None, None, fail_fast=False))
        return removed

    # --------------------------------------------------------------- reading

    def _snapshot(self) -> list[tuple[Path, SegmentIndex]]:
        with self._index_lock:
            return sorted(self._indexes.items())

    def query(self, q: Query) -> list[AuditRecord]:
        """Records matching ``q``, oldest first; the newest ``q.limit`` if limited.

        Reads only the index and the records it points at (blocking: run off the loop).
        """
        out: list[AuditRecord] = []
        for seg, idx in reversed(self._snapshot()):
            if not idx.overlaps(q):
                continue
            # Offsets are added to an index only after their records are on disk, so
            # every offset seen here points at a whole record.
            offsets = idx.candidates(q)
            found: list[AuditRecord] = []
            with open(seg, "rb") as f:
                for off in reversed(offsets):
                    f.seek(off)
                    rec = _parse_line(f.readline())
                    if rec is not None and q.match(rec):
                        found.append(rec)
                        if q.limit is not None and len(out) + len(found) >= q.limit:
                            break
            out.extend(found)
            if q.limit is not None and len(out) >= q.limit:
                break
        out.reverse()
        return out

    def iter_query(self, q: Query) -> Iterator[AuditRecord]:
        """Every record matching ``q``, oldest first, unbounded (for export)."""
        for seg, idx in self._snapshot():
            if not idx.overlaps(q):
                continue
            with open(seg, "rb") as f:
                offsets = idx.candidates(q)
                start = _first_after(f, offsets, q.after_seq) \
                    if idx.first_seq is not None and q.after_seq >= idx.first_seq else 0
                for off in list(offsets[start:]):
                    f.seek(off)
                    rec = _parse_line(f.readline())
                    if rec is not None and q.match(rec):
                        yield rec

    def iter_records(self) -> Iterator[AuditRecord]:
        """Every whole record, oldest first (blocking; run off the event loop)."""
        for seg in self.segments():
            with open(seg, "rb") as f:
                for raw in f:
                    rec = _parse_line(raw)
                    if rec is not None:
                        yield rec


def _first_after(f: BinaryIO, offsets: Sequence[int], after_seq: int) -> int:
    """The position in ``offsets`` (lines of one segment, in sequence order) of the first
    record past ``after_seq``, by binary search: a reader resuming from a cursor (the
    uplink, ``events --after``) parses a few lines instead of the segment up to it. A line
    that does not parse counts as "after", so nothing is skipped because of it."""
    lo, hi = 0, len(offsets)
    while lo < hi:
        mid = (lo + hi) // 2
        f.seek(offsets[mid])
        rec = _parse_line(f.readline())
        if rec is not None and int(rec.get("seq", 0)) <= after_seq:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _run_job(job: _Job) -> None:
    try:
        job.done.set_result(job.fn())
    except BaseException as exc:  # handed to the caller, which re-raises it
        job.done.set_exception(exc)


def _deliver(items: list[tuple[_Pending, AuditRecord]],
             subscribers: list[Callable[[AuditRecord], None]]) -> None:
    """Runs on the event loop: resolve a committed batch's futures, then tell subscribers."""
    for p, rec in items:
        if p.future is not None and not p.future.done():
            p.future.set_result(rec)
    if not subscribers:
        return
    for _, rec in items:
        for sub in subscribers:
            try:
                sub(rec)
            except Exception:
                log.exception("audit subscriber failed")


def _resolve(p: _Pending, *, rec: AuditRecord | None = None, exc: Exception | None = None) -> None:
    fut, loop = p.future, p.loop
    if fut is None or loop is None:
        return

    def set_result() -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(rec or {})

    loop.call_soon_threadsafe(set_result)

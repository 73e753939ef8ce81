"""Audit log append cost, measured in one run.

1. Durable append throughput of the audit log (group commit, many concurrent writers,
   each append acknowledged only after fsync) against a bare ``write`` + ``fsync`` loop
   appending the same records to a plain file. Target: ratio >= 0.8.
2. Append cost at 1,000,000 events divided by append cost at 1,000. Target: <= 1.2.
3. The peer a newcomer would reach for: default TinyDB ``insert`` one event at a time,
   into a table already holding 20,000 events; our speed-up over it.

Bounded: fixed counts, everything in a temporary directory on the same disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from tinydb import TinyDB

from edge_agent.store.audit import AuditLog, Query, canonical_json

CONCURRENCY = 64


def event(i: int) -> dict[str, object]:
    return {"action": "item_removed", "device": f"kerong:bank-a:{i % 16}",
            "compartment": i % 16 + 1, "actor": "agent", "item": f"tag-{i % 500:04d}",
            "reason": None, "details": {"n": i}}


async def append_many(log: AuditLog, start: int, n: int) -> float:
    """Append n events from CONCURRENCY writers; seconds per acknowledged append."""
    t0 = time.perf_counter()
    i = start
    end = start + n
    while i < end:
        batch = range(i, min(end, i + CONCURRENCY))
        await asyncio.gather(*(log.append(event(k)) for k in batch))
        i += len(batch)
    return (time.perf_counter() - t0) / n


def bare_loop(path: Path, records: list[bytes], batch: int) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    t0 = time.perf_counter()
    try:
        for i in range(0, len(records), batch):
            os.write(fd, b"".join(records[i:i + batch]))
            os.fsync(fd)
    finally:
        os.close(fd)
    return (time.perf_counter() - t0) / len(records)


async def timed_query(log: AuditLog, q: Query) -> tuple[float, int]:
    t0 = time.perf_counter()
    hits = await asyncio.to_thread(log.query, q)
    return time.perf_counter() - t0, len(hits)


async def fill_fast(log: AuditLog, upto: int, start: int) -> None:
    """Grow the log to ``upto`` records with large batches (setup, not measured)."""
    i = start
    while i < upto:
        n = min(5000, upto - i)
        await asyncio.gather(*(log.append(event(k)) for k in range(i, i + n)))
        i += n


async def main(big: int, sample: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ea-bench-", dir=os.environ.get("TMPDIR")) as d:
        root = Path(d)
        log = AuditLog(root / "audit", boot_id="bench", checkpoint_every=1000)
        await asyncio.to_thread(log.open)
        await fill_fast(log, 1000, 0)
        q = Query(device="kerong:bank-a:3", limit=100)
        q_early = await timed_query(log, q)
        commits_before = log.commits
        early = await append_many(log, 1000, sample)
        avg_batch = sample / max(1, log.commits - commits_before)
        # Same records through a bare loop: per-record fsync, and the batch sizes the
        # log's group commit actually used.
        recs = [canonical_json({**event(i), "seq": i, "hash": "0" * 64}) + b"\n"
                for i in range(sample)]
        bare_each = bare_loop(root / "bare1.jsonl", recs, 1)
        bare_grouped = bare_loop(root / "bare2.jsonl", recs, CONCURRENCY)
        t_fill = time.perf_counter()
        await fill_fast(log, big, 1000 + sample)
        t_fill = time.perf_counter() - t_fill
        # Let the kernel write back the fill's dirty pages, so the late sample's fsyncs
        # wait for its own data only, as the early sample's did.
        await asyncio.to_thread(os.sync)
        await asyncio.sleep(1.0)
        late = await append_many(log, big + sample, sample)
        late_bare = bare_loop(root / "bare3.jsonl", recs, 1)
        q_late = await timed_query(log, q)
        q_range = await timed_query(log, Query(device="kerong:bank-a:3", limit=None,
                                               after_seq=big // 2, until=None))
        await asyncio.to_thread(log.close)
        size = sum(p.stat().st_size for p in (root / "audit").glob("audit-*.jsonl"))

        db = TinyDB(root / "tiny.json")
        db.insert_multiple(event(i) for i in range(20_000))
        t0 = time.perf_counter()
        tiny_n = 10
        for i in range(tiny_n):
            db.insert(event(20_000 + i))
        tiny = (time.perf_counter() - t0) / tiny_n
        db.close()

    print(f"audit log, durable append at 1k events     {early * 1e6:9.1f} us/event "
          f"({1 / early:8.0f}/s, {CONCURRENCY} writers, group commit {avg_batch:.0f}/fsync)")
    print(f"bare write+fsync per record                {bare_each * 1e6:9.1f} us/event "
          f"({1 / bare_each:8.0f}/s)")
    print(f"bare write+fsync per {CONCURRENCY} records             {bare_grouped * 1e6:9.1f} "
          f"us/event ({1 / bare_grouped:8.0f}/s)")
    print(f"throughput ratio vs bare per-record fsync  {bare_each / early:9.2f}  "
          f"(target >= 0.8)")
    print(f"throughput ratio vs bare, same batching    {bare_grouped / early:9.2f}")
    print(f"filled to {big:,} events in {t_fill:.1f} s ({size / 1e6:.0f} MB on disk)")
    print(f"durable append at {big:,} events       {late * 1e6:9.1f} us/event")
    print(f"bare write+fsync per record, then      {late_bare * 1e6:9.1f} us/event (the disk "
          f"itself, same moment)")
    print(f"cost ratio {big:,} / 1,000             {late / early:9.2f}  (target <= 1.2)")
    print(f"query one device, newest 100, at 1k    {q_early[0] * 1e3:9.2f} ms")
    print(f"query one device, newest 100, at {big:,} {q_late[0] * 1e3:9.2f} ms")
    print(f"query one device, second half ({q_range[1]:,} hits) {q_range[0] * 1e3:9.1f} ms")
    print(f"TinyDB default insert at 20,000 events     {tiny * 1e3:9.1f} ms/insert")
    print(f"speed-up over TinyDB                       {tiny / early:9.0f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="size for the late sample")
    ap.add_argument("--sample", type=int, default=5000, help="appends per measurement")
    a = ap.parse_args()
    asyncio.run(main(min(max(a.events, 10_000), 5_000_000), min(max(a.sample, 500), 50_000)))

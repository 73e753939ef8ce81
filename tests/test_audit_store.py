"""Audit log behaviour: torn-tail recovery recorded, indexed queries and export,
retention that never drops an event inside the window."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path

from helpers import site_toml

from edge_agent.store.audit import AuditLog, Query, utc_iso
from edge_agent.store.verify import load_key, verify
from edge_agent.testing import running_agent, wait_device


async def test_torn_tail_is_cut_and_recorded_as_recovery(kerong_bus, tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0})
    state = tmp_path / "state"
    async with running_agent(site_toml({"bank": pty.port}), state) as (_agent, client):
        await wait_device(client, "kerong:bank:0", lambda d: True)
    seg = sorted((state / "audit").glob("audit-*.jsonl"))[-1]
    whole = seg.read_bytes()
    with open(seg, "ab") as f:
        f.write(b'{"seq":999,"ts":"2026-11-22T0')  # killed mid-write
    assert verify(state / "audit").findings[0].kind == "crash"
    async with running_agent(site_toml({"bank": pty.port}), state) as (_agent, client):
        evs = await client.get("/v1/events", action="audit_recovered")
        assert len(evs) == 1
        assert evs[0]["details"]["bytes_dropped"] == len(b'{"seq":999,"ts":"2026-11-22T0')
    assert seg.read_bytes().startswith(whole)
    report = verify(state / "audit")
    assert not report.tampered and not [f for f in report.findings if f.kind == "crash"]


async def _fill(log: AuditLog, n: int, *, t0: float, step: float) -> None:
    for start in range(0, n, 500):
        await asyncio.gather(*(log.append({
            "action": ("unlock", "door_opened", "item_removed")[i % 3],
            "device": f"dev-{i % 50}", "compartment": i % 16 + 1,
            "actor": "alice" if i % 10 == 0 else "agent", "item": f"tag-{i % 100}",
            "ts": utc_iso(t0 + i * step)}) for i in range(start, min(n, start + 500))))


async def test_indexed_queries_match_a_full_scan(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", boot_id="t", segment_max_bytes=200_000)
    await asyncio.to_thread(log.open)
    t0 = time.time() - 86400
    await _fill(log, 6000, t0=t0, step=10)
    everything = list(log.iter_records())
    assert len(list((tmp_path / "audit").glob("audit-*.jsonl"))) > 3
    queries = [
        Query(device="dev-7", limit=None),
        Query(device="dev-7", compartment=8, limit=None),
        Query(actor="alice", action="unlock", limit=None),
        Query(item="tag-42", limit=None),
        Query(since=utc_iso(t0 + 20_000), until=utc_iso(t0 + 30_000), limit=None),
        Query(device="dev-3", since=utc_iso(t0 + 40_000), limit=None),
    ]
    for q in queries:
        want = [r for r in everything if q.match(r)]
        got = await asyncio.to_thread(log.query, q)
        assert got == want, q
        assert list(log.iter_query(q)) == want
        assert want
    # Resuming from a cursor (the uplink reads the log 500 at a time after its cursor):
    # the same records as a scan, and found by a binary search, not by parsing the
    # segment up to the cursor (which made a 100,000-record backlog drain quadratic).
    firsts = sorted({int(json.loads(seg.open("rb").readline())["seq"])
                     for seg in (tmp_path / "audit").glob("audit-*.jsonl")})
    for after in {0, 1, 2999, 5990, 6000, *(f - 1 for f in firsts), *firsts}:
        for q in (Query(after_seq=after, limit=None),
                  Query(after_seq=after, device="dev-7", limit=None)):
            assert list(log.iter_query(q)) == [r for r in everything if q.match(r)], q
    import edge_agent.store.audit as audit_mod

    parsed = 0
    real_parse = audit_mod._parse_line

    def counting(raw: bytes) -> object:
        nonlocal parsed
        parsed += 1
        return real_parse(raw)

    audit_mod._parse_line = counting  # type: ignore[assignment]
    try:
        tail = list(log.iter_query(Query(after_seq=5990, limit=None)))
    finally:
        audit_mod._parse_line = real_parse
    assert [r["seq"] for r in tail] == list(range(5991, 6001))
    assert parsed < 60, parsed
    newest = await asyncio.to_thread(log.query, Query(device="dev-7", limit=5))
    assert newest == [r for r in everything if r["device"] == "dev-7"][-5:]
    await asyncio.to_thread(log.close)
    # Reopened: sealed segments answer from their .idx sidecars.
    log2 = AuditLog(tmp_path / "audit", boot_id="t2", segment_max_bytes=200_000)
    await asyncio.to_thread(log2.open)
    assert await asyncio.to_thread(log2.query, queries[0]) == [
        r for r in everything if queries[0].match(r)]
    await asyncio.to_thread(log2.close)


async def test_retention_drops_only_whole_segments_outside_the_window(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", boot_id="t", segment_max_bytes=100_000,
                   retention_days=30)
    await asyncio.to_thread(log.open)
    now = time.time()
    await _fill(log, 4000, t0=now - 60 * 86400, step=60 * 86400 / 4000)  # 60 days
    before = list(log.iter_records())
    # A checkpoint exported off the box early on, of records retention will remove.
    early = json.loads((tmp_path / "audit" / "checkpoints.jsonl").read_text()
                       .splitlines()[0])
    removed = await asyncio.to_thread(log.apply_retention, now)
    assert removed
    await asyncio.to_thread(log.close)
    after = [r for r in AuditLog(tmp_path / "audit", boot_id="x").iter_records()]
    cutoff = utc_iso(now - 30 * 86400)
    kept_window = [r for r in before if r["ts"] >= cutoff]
    assert all(r in after for r in kept_window), "an event inside the window was dropped"
    assert len(after) < len(before)
    assert after[-1]["action"] == "audit_retention"
    assert early["seq"] < after[0]["seq"]
    key = load_key(tmp_path / "audit" / "verify.key")
    report = verify(tmp_path / "audit", key=key, exported=early)
    assert report.verdict == "intact", [f.message for f in report.findings]
    # The retention run is sealed: a window shorter than the verifier accepts is not.
    report = verify(tmp_path / "audit", key=key, min_retention_days=45)
    assert report.tampered and "under the minimum" in report.findings[0].message


async def test_export_csv_and_jsonl_through_the_api(kerong_bus, tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0})
    async with running_agent(site_toml({"bank": pty.port}), tmp_path / "s") as (_agent, client):
        await wait_device(client, "kerong:bank:0")
        for n in (1, 2, 3):
            await client.post("/v1/devices/kerong:bank:0/unlock",
                              {"compartment": n, "reason": f"r,{n}"})
        buf = io.BytesIO()
        await client.download("/v1/events/export", buf, format="csv", action="unlock")
        rows = list(csv.DictReader(io.StringIO(buf.getvalue().decode())))
        assert [r["reason"] for r in rows] == ["r,1", "r,2", "r,3"]
        assert all(r["compartment"] in ("1", "2", "3") for r in rows)
        buf = io.BytesIO()
        await client.download("/v1/events/export", buf, format="jsonl",
                              device="kerong:bank:0", compartment=2)
        recs = [json.loads(line) for line in buf.getvalue().splitlines()]
        assert {r["action"] for r in recs} >= {"unlock_requested", "unlock"}
        assert all(r["compartment"] == 2 for r in recs)


async def test_csv_export_neutralises_formulas_and_control_characters(kerong_bus,
                                                                     tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0})
    hostile = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)",
               "bell\x07 esc\x1b[31m cr\r nul\x00 del\x7f c1\x9b end"]
    async with running_agent(site_toml({"bank": pty.port}), tmp_path / "s") as (_agent, client):
        await wait_device(client, "kerong:bank:0")
        for n, reason in enumerate(hostile, 1):
            await client.post("/v1/devices/kerong:bank:0/unlock",
                              {"compartment": n, "reason": reason})
        buf = io.BytesIO()
        await client.download("/v1/events/export", buf, format="csv", action="unlock")
        raw = buf.getvalue().decode()
        # The only control character left is the row separator.
        assert not [c for c in raw if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F]
        rows = list(csv.DictReader(io.StringIO(raw)))
        reasons = [r["reason"] for r in rows]
        assert reasons[:4] == ["'" + h for h in hostile[:4]]
        assert reasons[4] == ("bell\\x07 esc\\x1b[31m cr\\x0d nul\\x00 del\\x7f c1\\x9b end")
        # JSON lines stay exact: the audit record itself is unchanged.
        buf = io.BytesIO()
        await client.download("/v1/events/export", buf, format="jsonl", action="unlock")
        recs = [json.loads(line) for line in buf.getvalue().splitlines()]
        assert [r["reason"] for r in recs] == hostile


async def test_retention_holds_back_what_was_not_forwarded(tmp_path: Path) -> None:
    """With an uplink, a segment holding records the broker has not acknowledged stays,
    however old (its floor is the uplink's cursor); once forwarded it goes."""
    log = AuditLog(tmp_path / "audit", boot_id="t", segment_max_bytes=100_000,
                   retention_days=30)
    await asyncio.to_thread(log.open)
    now = time.time()
    await _fill(log, 4000, t0=now - 60 * 86400, step=60 * 86400 / 4000)
    forwarded = 10  # the uplink has sent only the first ten records
    log.retention_floor = lambda: forwarded
    assert await asyncio.to_thread(log.apply_retention, now) == []
    assert next(log.iter_records())["seq"] == 1
    forwarded = 4000  # the backlog drained: retention may go ahead
    log._last_retention = 0.0  # (retention runs at most hourly; this test is not an hour)
    assert await asyncio.to_thread(log.apply_retention, now)
    await asyncio.to_thread(log.close)

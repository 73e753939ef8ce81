"""Tamper cases on a sealed log of 10,000 events: each detected at the right sequence
number by ``edge-agent audit verify``; a crash's torn tail is not tampering."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.store.audit import AuditLog, record_hash

N = 10_000


@pytest.fixture(scope="module")
def sealed_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("sealed") / "state"

    async def build() -> None:
        log = AuditLog(state / "audit", boot_id="test", checkpoint_every=1000,
                       segment_max_bytes=1024 * 1024)
        await asyncio.to_thread(log.open)
        for start in range(0, N, 1000):
            await asyncio.gather(*(log.append({
                "action": "item_removed", "device": f"kerong:bank:{i % 7}",
                "compartment": i % 16 + 1, "actor": "agent", "reason": f"event {i + 1}"})
                for i in range(start, start + 1000)))
        await asyncio.to_thread(log.close)

    asyncio.run(build())
    return state


def run_verify(state: Path, *extra: str) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["audit", "verify", "--state-dir", str(state), "--json", *extra])
    return code, json.loads(out.getvalue())


def copy(sealed: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "state"
    shutil.copytree(sealed, dst)
    return dst


def lines_of(state: Path) -> list[tuple[Path, list[bytes]]]:
    return [(seg, seg.read_bytes().splitlines(keepends=True))
            for seg in sorted((state / "audit").glob("audit-*.jsonl"))]


def edit_record(state: Path, seq: int, fn) -> None:  # type: ignore[no-untyped-def]
    for seg, lines in lines_of(state):
        for i, raw in enumerate(lines):
            if json.loads(raw)["seq"] == seq:
                lines[i] = fn(raw)
                seg.write_bytes(b"".join(lines))
                return
    raise AssertionError(f"no record {seq}")


def test_clean_log_verifies(sealed_log: Path) -> None:
    code, rep = run_verify(sealed_log)
    assert code == 0, rep
    assert rep["records"] == N and rep["last_seq"] == N
    assert rep["checkpoints"] >= 10 and rep["macs_checked"]
    assert len(list((sealed_log / "audit").glob("audit-*.jsonl"))) > 1  # rotated


def test_flipped_byte(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    edit_record(state, 5000, lambda raw: raw.replace(b"event 5000", b"event 5001"))
    code, rep = run_verify(state)
    assert code == 1 and rep["first_bad_seq"] == 5000
    assert "altered" in rep["findings"][0]["message"]


def test_flipped_byte_that_breaks_json(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    edit_record(state, 777, lambda raw: raw.replace(b'"seq":777', b'"seq"\x00777'))
    code, rep = run_verify(state)
    assert code == 1 and rep["first_bad_seq"] == 777


def test_deleted_record(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    edit_record(state, 4321, lambda raw: b"")
    code, rep = run_verify(state)
    assert code == 1 and rep["first_bad_seq"] == 4321
    assert "4321-4321 deleted" in rep["findings"][0]["message"]


def test_reordered_records(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    for seg, lines in lines_of(state):
        seqs = [json.loads(raw)["seq"] for raw in lines]
        if 7000 in seqs and 7001 in seqs:
            i = seqs.index(7000)
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
            seg.write_bytes(b"".join(lines))
            break
    else:
        pytest.skip("7000 and 7001 in different segments")
    code, rep = run_verify(state)
    assert code == 1 and rep["first_bad_seq"] == 7000


def test_truncated_tail(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    segs = lines_of(state)
    seg, lines = segs[-1]
    seg.write_bytes(b"".join(lines[:-50]))  # a clean cut at a line boundary
    last_kept = json.loads(lines[-51])["seq"]
    code, rep = run_verify(state)
    assert code == 1 and rep["first_bad_seq"] == last_kept + 1
    assert any("truncated" in f["message"] for f in rep["findings"])


def test_rewritten_chain_against_checkpoint(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    # The attacker edits record 3500 and recomputes every hash after it: the chain is
    # internally consistent, but no longer what the checkpoints sealed.
    prev = None
    for seg, lines in lines_of(state):
        out = []
        for raw in lines:
            rec = json.loads(raw)
            if rec["seq"] == 3500:
                rec["reason"] = "nothing to see"
            if rec["seq"] >= 3500:
                rec["prev"] = prev if prev is not None else rec["prev"]
                rec["hash"] = record_hash(rec)
            prev = rec["hash"]
            out.append(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        seg.write_bytes(b"".join(out))
    code, rep = run_verify(state)
    assert code == 1
    assert rep["first_bad_seq"] == 3001  # after the last checkpoint that still matches
    assert any("rewritten" in f["message"] for f in rep["findings"])


def test_truncation_with_deleted_checkpoints_caught_by_key_epoch(sealed_log: Path,
                                                                tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    cps = (state / "audit" / "checkpoints.jsonl").read_bytes().splitlines(keepends=True)
    keep = cps[:-3]
    last_sealed = json.loads(keep[-1])["seq"]
    (state / "audit" / "checkpoints.jsonl").write_bytes(b"".join(keep))
    for seg, lines in lines_of(state):
        kept = [raw for raw in lines if json.loads(raw)["seq"] <= last_sealed]
        if kept:
            seg.write_bytes(b"".join(kept))
        else:
            seg.unlink()
    code, rep = run_verify(state)
    assert code == 1, rep
    assert any("checkpoints" in f["message"] and "deleted" in f["message"]
               for f in rep["findings"])


def test_forged_checkpoint_mac(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    p = state / "audit" / "checkpoints.jsonl"
    cps = [json.loads(line) for line in p.read_text().splitlines()]
    cps[2]["hash"] = "f" * 64
    p.write_text("".join(json.dumps(c) + "\n" for c in cps))
    code, rep = run_verify(state)
    assert code == 1 and any("bad MAC" in f["message"] for f in rep["findings"])


def test_exported_checkpoint_catches_on_box_rewrite(sealed_log: Path, tmp_path: Path) -> None:
    exported = tmp_path / "cp.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["audit", "checkpoint", "--state-dir", str(sealed_log)]) == 0
    exported.write_text(out.getvalue())
    key = tmp_path / "verify.key"
    shutil.copy(sealed_log / "audit" / "verify.key", key)
    state = copy(sealed_log, tmp_path)
    (state / "audit" / "verify.key").unlink()  # as in production: exported, then deleted
    code, rep = run_verify(state, "--key", str(key), "--checkpoint", str(exported))
    assert code == 0 and rep["macs_checked"]
    assert not any(f["kind"] == "warning" for f in rep["findings"])
    seg, lines = lines_of(state)[-1]
    seg.write_bytes(b"".join(lines[:-1]))
    (state / "audit" / "checkpoints.jsonl").write_bytes(b"")
    (state / "audit" / "seal.key").unlink()
    code, rep = run_verify(state, "--key", str(key), "--checkpoint", str(exported))
    assert code == 1 and rep["first_bad_seq"] == N


def test_torn_tail_is_a_crash_not_tampering(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    seg, _ = lines_of(state)[-1]
    with open(seg, "ab") as f:
        f.write(b'{"seq":10001,"ts":"2026-')
    code, rep = run_verify(state)
    assert code == 0
    assert rep["findings"][0]["kind"] == "crash"


def test_usage_errors() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["audit", "verify"]) == 2
        assert main(["audit", "verify", "--state-dir", "/nonexistent"]) == 2
    assert "--state-dir" in err.getvalue()

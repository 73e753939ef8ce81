"""Tamper cases on a sealed log of 10,000 events: each detected at the right sequence
number by ``edge-agent audit verify``; a crash's torn tail is not tampering."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import site_toml

from edge_agent.cli import main
from edge_agent.store.audit import GENESIS, AuditLog, record_hash, utc_iso
from edge_agent.store.seal import evolve, mac
from edge_agent.testing import running_agent

N = 10_000


@pytest.fixture(scope="module")
def sealed_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory as a site keeps it: verify.key exported (beside it, in
    ``exported/``) and deleted on the box. Only on-box files are the attacker's."""
    base = tmp_path_factory.mktemp("sealed")
    state = base / "state"

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
    (base / "exported").mkdir()
    shutil.move(state / "audit" / "verify.key", base / "exported" / "verify.key")
    return state


def exported_key(state: Path) -> Path:
    """The verify.key exported at installation (kept beside, never inside, the state)."""
    return state.parent / "exported" / "verify.key"


def run_verify(state: Path, *extra: str, keyed: bool = True, text: bool = False
               ) -> tuple[int, Any]:
    """``audit verify`` as a site runs it: with the key exported at installation."""
    args = ["audit", "verify", "--state-dir", str(state), *extra]
    if keyed and "--key" not in extra:
        args += ["--key", str(exported_key(state))]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(args if text else [*args, "--json"])
    return code, out.getvalue() if text else json.loads(out.getvalue())


def copy(sealed: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "state"
    shutil.copytree(sealed, dst)
    shutil.copytree(sealed.parent / "exported", tmp_path / "exported")
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
    assert code == 1 and rep["first_bad_seq"] == 777, rep["findings"]


def test_deleted_record(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    edit_record(state, 4321, lambda raw: b"")
    code, rep = run_verify(state)
    assert code == 1 and rep["first_bad_seq"] == 4321, rep["findings"]
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


def export_checkpoint(state: Path, to: Path) -> Path:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["audit", "checkpoint", "--state-dir", str(state)]) == 0
    to.write_text(out.getvalue())
    return to


def test_exported_checkpoint_catches_on_box_rewrite(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    exported = export_checkpoint(state, tmp_path / "cp.json")
    code, rep = run_verify(state, "--checkpoint", str(exported))
    assert code == 0 and rep["macs_checked"] and rep["verdict"] == "intact"
    assert not any(f["kind"] == "warning" for f in rep["findings"])
    seg, lines = lines_of(state)[-1]
    seg.write_bytes(b"".join(lines[:-1]))
    (state / "audit" / "checkpoints.jsonl").write_bytes(b"")
    (state / "audit" / "seal.key").unlink()
    code, rep = run_verify(state, "--checkpoint", str(exported))
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


# ------------------------------------------------------------------------------------
# Attacks by root on the box. Each uses only the on-box files (the current sealing key
# included) and is judged by `audit verify` with the key exported at installation.

def checkpoints(state: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in
            (state / "audit" / "checkpoints.jsonl").read_text().splitlines()]


def write_checkpoints(state: Path, cps: list[dict[str, Any]]) -> None:
    (state / "audit" / "checkpoints.jsonl").write_text(
        "".join(json.dumps(c, sort_keys=True, separators=(",", ":")) + "\n" for c in cps))


def seal_key(state: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((state / "audit" / "seal.key").read_text())
    return doc


def write_seal_key(state: Path, epoch: int, key: bytes) -> None:
    (state / "audit" / "seal.key").write_text(json.dumps({"epoch": epoch, "key": key.hex()}))


def keep_records(state: Path, keep) -> None:  # type: ignore[no-untyped-def]
    for seg, lines in lines_of(state):
        seg.write_bytes(b"".join(raw for raw in lines if keep(json.loads(raw))))


def rewrite_records(state: Path, edit) -> None:  # type: ignore[no-untyped-def]
    """Apply ``edit`` (record -> record or None) and re-hash the chain after it. The
    indexes go too (the agent rebuilds them), as a careful attacker would do."""
    prev = GENESIS
    for seg, lines in lines_of(state):
        seg.with_suffix(".idx").unlink(missing_ok=True)
        out = []
        for raw in lines:
            rec = edit(json.loads(raw))
            if rec is None:
                continue
            rec["prev"] = prev
            rec["hash"] = record_hash(rec)
            prev = rec["hash"]
            out.append(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        seg.write_bytes(b"".join(out))


def remove_first_segments(state: Path, n: int) -> dict[str, Any]:
    """Delete the first ``n`` segments and their indexes; write the horizon an attacker
    would (the next record's seq and prev hash). Returns that horizon."""
    segs = lines_of(state)
    for seg, _ in segs[:n]:
        seg.unlink()
        seg.with_suffix(".idx").unlink(missing_ok=True)
    nxt = json.loads(segs[n][1][0])
    horizon = {"first_seq": nxt["seq"], "prev_hash": nxt["prev"]}
    (state / "audit" / "horizon.json").write_text(json.dumps(horizon))
    return horizon


def test_history_removed_under_a_forged_horizon(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    early = checkpoints(state)[1]  # exported off the box back then
    exported = tmp_path / "early-cp.json"
    exported.write_text(json.dumps(early))
    horizon = remove_first_segments(state, 2)
    assert early["seq"] < horizon["first_seq"]
    code, rep = run_verify(state, "--checkpoint", str(exported))
    assert code == 1, rep
    assert any("no sealed retention checkpoint" in f["message"] for f in rep["findings"])
    assert any(f["seq"] == early["seq"] and "exported checkpoint" in f["message"]
               for f in rep["findings"])


def test_history_removed_under_a_retention_record_sealed_with_the_box_key(
        sealed_log: Path, tmp_path: Path) -> None:
    # The attacker also seals a "retention run" with the sealing key found on the box.
    state = copy(sealed_log, tmp_path)
    horizon = remove_first_segments(state, 2)
    sk = seal_key(state)
    key, epoch = bytes.fromhex(sk["key"]), int(sk["epoch"])
    last = checkpoints(state)[-1]
    now = time.time()
    forged = {"epoch": epoch, "seq": last["seq"], "hash": last["hash"], "ts": now,
              "boot": "test", "rec_ts": last["rec_ts"], "kind": "retention",
              "horizon": {**horizon, "cutoff": utc_iso(now - 400 * 86400),
                          "last_removed_ts": "2020-01-01T00:00:00.000+00:00",
                          "retention_days": 400, "removed": ["(first segments)"]}}
    forged["mac"] = mac(key, forged)
    write_checkpoints(state, [*checkpoints(state), forged])
    write_seal_key(state, epoch + 1, evolve(key))
    (state / "audit" / "horizon.json").write_text(json.dumps({**horizon, "epoch": epoch}))
    code, rep = run_verify(state)
    assert code == 1, rep
    # The genuine checkpoints of the removed records say when those were written.
    assert any("no sealed retention run could have removed it" in f["message"]
               for f in rep["findings"])


def test_truncation_hidden_by_lowering_the_key_epoch(sealed_log: Path, tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    keep = checkpoints(state)[:-3]
    cut = keep[-1]["seq"]
    keep_records(state, lambda r: r["seq"] <= cut)
    write_checkpoints(state, keep)
    sk = seal_key(state)
    write_seal_key(state, keep[-1]["epoch"] + 1, bytes.fromhex(sk["key"]))
    code, rep = run_verify(state)
    assert code == 1, rep
    assert rep["first_bad_seq"] == cut + 1
    assert any("not that epoch's key" in f["message"] and
               f"epoch {sk['epoch']}" in f["message"] for f in rep["findings"])


def test_records_deleted_in_the_middle_renumbered_and_rehashed(sealed_log: Path,
                                                              tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)

    def drop_and_renumber(rec: dict[str, Any]) -> dict[str, Any] | None:
        if 5001 <= rec["seq"] <= 5100:
            return None
        if rec["seq"] > 5100:
            rec["seq"] -= 100
        return rec

    rewrite_records(state, drop_and_renumber)
    keep = [c for c in checkpoints(state) if c["seq"] <= 5000]
    write_checkpoints(state, keep)
    write_seal_key(state, keep[-1]["epoch"] + 1, bytes.fromhex(seal_key(state)["key"]))
    code, rep = run_verify(state)
    assert code == 1, rep
    assert rep["first_bad_seq"] == 5001


def test_without_the_exported_key_verify_never_says_ok(sealed_log: Path,
                                                       tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    code, out = run_verify(state, keyed=False, text=True)
    assert code == 3 and "NOT PROVEN" in out and "OK" not in out
    code, rep = run_verify(state, keyed=False)
    assert rep["verdict"] == "not proven" and not rep["authenticated"]
    assert any(f["kind"] == "unproven" for f in rep["findings"])


def test_a_replaced_verify_key_on_the_box_authenticates_nothing(sealed_log: Path,
                                                                tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    genuine = export_checkpoint(state, tmp_path / "cp.json")
    # The attacker edits record 10, re-hashes the chain, makes a key series of their
    # own, re-seals every checkpoint with it and leaves its epoch-0 key as verify.key.
    rewrite_records(state, lambda r: {**r, "reason": "nothing happened"}
                    if r["seq"] == 10 else r)
    hashes = {json.loads(raw)["seq"]: json.loads(raw)["hash"]
              for _, lines in lines_of(state) for raw in lines}
    k0 = os.urandom(32)
    key, resealed = k0, []
    for cp in checkpoints(state):
        cp = {**cp, "hash": hashes[cp["seq"]]}
        cp["mac"] = mac(key, cp)
        resealed.append(cp)
        key = evolve(key)
    write_checkpoints(state, resealed)
    write_seal_key(state, len(resealed), key)
    fake = state / "audit" / "verify.key"
    fake.write_text(json.dumps({"epoch": 0, "key": k0.hex()}))
    for extra in ((), ("--key", str(fake))):
        code, out = run_verify(state, *extra, keyed=False, text=True)
        assert code == 3 and "OK" not in out, out
    code, rep = run_verify(state, "--key", str(fake), "--checkpoint", str(genuine),
                           keyed=False)
    assert code == 1 and rep["first_bad_seq"] is not None and rep["first_bad_seq"] <= 10
    code, rep = run_verify(state)  # the genuine exported key
    assert code == 1 and any("bad MAC" in f["message"] for f in rep["findings"])


def test_torn_checkpoint_line_after_a_power_cut_is_a_crash(sealed_log: Path,
                                                           tmp_path: Path) -> None:
    # A power cut persisted the tail of an append but not its start (zeros, then the
    # tail, then a newline); the agent sealed the same epoch again afterwards.
    state = copy(sealed_log, tmp_path)
    lines = (state / "audit" / "checkpoints.jsonl").read_bytes().splitlines(keepends=True)
    torn = b"\0" * 40 + lines[5][40:]
    (state / "audit" / "checkpoints.jsonl").write_bytes(b"".join(
        [*lines[:5], torn, *lines[5:]]))
    code, rep = run_verify(state)
    assert code == 0, rep
    assert any(f["kind"] == "crash" and "checkpoint" in f["message"]
               for f in rep["findings"])
    # A checkpoint really removed (its line garbled) is still tampering: a gap in epochs.
    (state / "audit" / "checkpoints.jsonl").write_bytes(b"".join(
        [*lines[:5], torn, *lines[6:]]))
    code, rep = run_verify(state)
    assert code == 1 and any("missing" in f["message"] for f in rep["findings"])


async def test_a_lying_index_is_rebuilt_and_raises_an_alarm(sealed_log: Path,
                                                           tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    records = [json.loads(raw) for _, lines in lines_of(state) for raw in lines]
    segs = [seg for seg, _ in lines_of(state)]
    assert len(segs) >= 3
    # One device taken out of the first segment's index; the second's time range moved.
    i0 = json.loads(segs[0].with_suffix(".idx").read_text())
    i0["keys"]["device"].pop("kerong:bank:3")
    segs[0].with_suffix(".idx").write_text(json.dumps(i0))
    i1 = json.loads(segs[1].with_suffix(".idx").read_text())
    i1["first_ts"] = i1["last_ts"] = "2020-01-01T00:00:00.000+00:00"
    segs[1].with_suffix(".idx").write_text(json.dumps(i1))
    code, rep = run_verify(state)
    assert code == 1 and sum("index" in f["message"] for f in rep["findings"]) == 2
    want_dev = sum(r["device"] == "kerong:bank:3" for r in records)
    since = records[0]["ts"]
    async with running_agent(site_toml({}), state) as (_agent, client):
        got = await client.get("/v1/events", device="kerong:bank:3", limit=100_000)
        assert len(got) == want_dev
        got = await client.get("/v1/events", since=since, action="item_removed",
                               limit=100_000)
        assert len(got) == N
        buf = io.BytesIO()
        await client.download("/v1/events/export", buf, format="csv",
                              device="kerong:bank:3")
        assert len(buf.getvalue().splitlines()) == want_dev + 1
        status = await client.get("/v1/status")
        assert status["health"] == "degraded"
        assert any(a["id"] == "audit:index" for a in status["alarms"])
        rebuilt = await client.get("/v1/events", action="audit_index_rebuilt")
        assert len(rebuilt) == 2
    code, rep = run_verify(state)
    assert code == 0, rep


def test_sealed_indexes_are_matched_to_their_seal_not_rebuilt(sealed_log: Path,
                                                              tmp_path: Path) -> None:
    """With the exported key, an index file whose digest is the one sealed when its
    segment closed is checked against its seal and the walked positions; without the key
    every index is rebuilt."""
    state = copy(sealed_log, tmp_path)
    code, rep = run_verify(state)
    assert code == 0 and rep["indexes_checked"] >= 3
    assert rep["indexes_by_seal"] == rep["indexes_checked"], rep
    code, rep = run_verify(state, keyed=False)
    assert rep["indexes_checked"] >= 3 and rep["indexes_by_seal"] == 0, rep


def test_an_old_index_resealed_with_the_box_key_is_still_a_lie(sealed_log: Path,
                                                                tmp_path: Path) -> None:
    """Root holds the current sealing key: it edits segment 1's index and seals a new
    checkpoint naming the edited file's digest. The first sealing of a segment is the one
    that counts, so the index is rebuilt and the lie found."""
    import hashlib

    state = copy(sealed_log, tmp_path)
    seg0 = lines_of(state)[0][0]
    idx = json.loads(seg0.with_suffix(".idx").read_text())
    idx["keys"]["device"].pop("kerong:bank:3")
    lie = json.dumps(idx).encode()
    seg0.with_suffix(".idx").write_bytes(lie)
    sk = seal_key(state)
    key, epoch = bytes.fromhex(sk["key"]), int(sk["epoch"])
    last = checkpoints(state)[-1]
    forged = {**{k: v for k, v in last.items() if k != "mac"}, "epoch": epoch,
              "ts": time.time(), "segments": [
                  {"segment": seg0.name, "idx_sha256": hashlib.sha256(lie).hexdigest()}]}
    forged["mac"] = mac(key, forged)
    write_checkpoints(state, [*checkpoints(state), forged])
    write_seal_key(state, epoch + 1, evolve(key))
    code, rep = run_verify(state)
    assert code == 1, rep
    assert [f["message"] for f in rep["findings"] if f["kind"] == "tamper"] == [
        f"index {seg0.with_suffix('.idx').name} does not match its segment (device "
        "kerong:bank:3: 0 of "
        f"{sum(1 for ln in lines_of(state)[0][1] if b'kerong:bank:3' in ln)} records "
        "indexed): queries and exports would miss records"], rep


def test_a_segment_rewritten_with_the_same_records_shows_in_its_sealed_index(
        sealed_log: Path, tmp_path: Path) -> None:
    """The same records written with other spacing keep every hash and the chain, but
    not the offsets their sealed index holds: queries would read the wrong bytes."""
    state = copy(sealed_log, tmp_path)
    seg, lines = lines_of(state)[1]
    seg.write_bytes(b"".join(json.dumps(json.loads(ln)).encode() + b"\n" for ln in lines))
    code, rep = run_verify(state)
    assert code == 1, rep
    tampers = [f["message"] for f in rep["findings"] if f["kind"] == "tamper"]
    assert len(tampers) == 1 and tampers[0].startswith(
        f"index {seg.with_suffix('.idx').name} does not match its segment"), rep
    assert rep["indexes_by_seal"] == rep["indexes_checked"] - 1


# ------------------------------------------------------------------------------------
# Writes torn by a power cut: the pages and sectors of the last (unsynced) write reach
# the disk in any order. verify and start-up must agree it is a crash, wherever the
# surviving pieces fall, and only past the last checkpoint.

def unsynced_write(state: Path, n: int) -> bytes:
    """The bytes of a group commit of ``n`` records after the log's head."""
    _seg, lines = lines_of(state)[-1]
    head = json.loads(lines[-1])
    out, prev = [], head["hash"]
    for i in range(1, n + 1):
        rec = {**head, "seq": head["seq"] + i, "reason": f"unsynced {i}", "prev": prev}
        rec.pop("hash")
        rec["hash"] = record_hash(rec)
        prev = rec["hash"]
        out.append(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    return b"".join(out)


@pytest.mark.parametrize("shape", ["zeros-then-tail", "first-record-lost", "no-newline",
                                   "middle-sector-lost"])
async def test_a_torn_last_write_is_a_crash_for_verify_and_start_up(
        sealed_log: Path, tmp_path: Path, shape: str) -> None:
    state = copy(sealed_log, tmp_path)
    seg, lines = lines_of(state)[-1]
    write = unsynced_write(state, 3)
    first_len = write.index(b"\n") + 1
    torn = {
        "zeros-then-tail": b"\0" * 512 + write[512:],
        "first-record-lost": b"\0" * (first_len - 1) + write[first_len - 1:],
        "no-newline": write[:-40],
        "middle-sector-lost": write[:300] + b"\0" * 512 + write[812:],
    }[shape]
    seg.write_bytes(b"".join(lines) + torn)
    # Whole records in front of the first damaged line chain on and are kept.
    kept = 0
    for line in torn.splitlines(keepends=True):
        if not line.endswith(b"\n") or line.startswith(b"\0") or b"\0" in line:
            break
        kept += len(line)
    code, rep = run_verify(state)
    assert code == 0, rep
    crash = [f for f in rep["findings"] if f["kind"] == "crash"]
    at = sum(map(len, lines)) + kept
    assert crash and f"torn by a crash at byte {at} " in crash[0]["message"], crash
    async with running_agent(site_toml({}), state) as (_agent, client):
        recovered = await client.get("/v1/events", action="audit_recovered")
        assert recovered[-1]["details"]["bytes_dropped"] == len(torn) - kept
        status = await client.get("/v1/status")
        assert status["health"] == "ok" and status["audit"]["damaged_lines"] == 0
    code, rep = run_verify(state)
    assert code == 0 and not [f for f in rep["findings"] if f["kind"] == "crash"], rep


def test_damage_to_sealed_records_is_never_a_crash(sealed_log: Path, tmp_path: Path) -> None:
    # The same zeros over the last *sealed* records: tampering, however torn it looks.
    state = copy(sealed_log, tmp_path)
    seg, lines = lines_of(state)[-1]
    body = b"".join(lines)
    seg.write_bytes(body[:-700] + b"\0" * 512 + body[-188:])
    code, rep = run_verify(state)
    assert code == 1, rep


async def test_a_torn_checkpoint_line_is_set_aside_at_start_up(sealed_log: Path,
                                                              tmp_path: Path) -> None:
    state = copy(sealed_log, tmp_path)
    cpf = state / "audit" / "checkpoints.jsonl"
    lines = cpf.read_bytes().splitlines(keepends=True)
    cpf.write_bytes(b"".join([*lines[:-1], b"\0" * 60 + lines[-1][60:], lines[-1]]))
    async with running_agent(site_toml({}), state) as (_agent, client):
        repaired = await client.get("/v1/events", action="audit_checkpoints_repaired")
        assert repaired and repaired[0]["details"]["damaged_lines"] == 1
        assert (await client.get("/v1/status"))["health"] == "ok"
    assert (state / "audit" / "checkpoints.damaged").exists()
    code, rep = run_verify(state)
    assert code == 0 and not [f for f in rep["findings"] if f["kind"] == "crash"], rep


def test_verify_shows_progress_on_a_terminal_and_nothing_when_piped(sealed_log: Path) -> None:
    """Issue 17: a progress bar while a large log is walked, on a terminal only; piped
    or with --json, the output is exactly the report."""
    import os
    import pty
    import select
    import subprocess
    import sys

    args = [sys.executable, "-m", "edge_agent.cli", "audit", "verify", "--state-dir",
            str(sealed_log), "--key", str(exported_key(sealed_log))]
    piped = subprocess.run(args, capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    assert piped.stdout.splitlines()[-1].startswith("OK: chain intact")
    as_json = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
    assert as_json.stderr == "" and json.loads(as_json.stdout)["verdict"] == "intact"
    # On a terminal: stderr is a pty; the bar is drawn there (and cleared at the end).
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, env={**os.environ, "COLUMNS": "80",
                                               "TERM": "xterm"})
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0 and b"OK: chain intact" in out
    assert b"verifying" in seen, seen[:200]


async def test_verify_of_a_live_log_that_seals_while_it_reads_is_not_tampering(
        kerong_bus, tmp_path: Path) -> None:
    """A technician runs `audit verify` on the box while the agent works. The agent seals
    a checkpoint for every record here, so each verify reads checkpoints.jsonl and
    seal.key while seals land between the two reads: that is not "checkpoints deleted"
    (found by bench/power_cut.py, which verifies the restarted agent while it runs)."""
    import sys

    from edge_agent.testing import wait_device

    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    toml = site_toml({"Bank-1": pty.port}, extra="[audit]\ncheckpoint_every = 1\n")
    state = tmp_path / "state"
    async with running_agent(toml, state) as (_agent, client):
        dev = "kerong:Bank-1:0"
        await wait_device(client, dev)
        key = tmp_path / "verify.key"  # exported at installation, then gone from the box
        shutil.copy(state / "audit" / "verify.key", key)
        (state / "audit" / "verify.key").unlink()
        stop = asyncio.Event()

        async def unlock_all_the_time() -> None:
            n = 0
            while not stop.is_set() and n < 2000:  # bounded
                n += 1
                await client.call("unlock", id=dev, body={"compartment": n % 16 + 1,
                                                          "reason": f"live {n}"})

        sealed = state / "audit" / "checkpoints.jsonl"
        before = len(sealed.read_bytes().splitlines())
        busy = asyncio.get_running_loop().create_task(unlock_all_the_time())
        verdicts = []
        try:
            for _ in range(12):  # on the old verify, one in five or six said "deleted"
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "edge_agent.cli", "audit", "verify", "--state-dir",
                    str(state), "--key", str(key), "--json",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, _ = await asyncio.wait_for(proc.communicate(), 120)
                rep = json.loads(out)
                verdicts.append((rep["verdict"], [f["message"] for f in rep["findings"]
                                                  if f["kind"] == "tamper"]))
        finally:
            stop.set()
            await busy
        # The agent sealed all along (else the test proves nothing).
        assert len(sealed.read_bytes().splitlines()) > before + 20
    assert all(v == "intact" for v, _ in verdicts), verdicts

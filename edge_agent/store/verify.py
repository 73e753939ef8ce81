"""``edge-agent audit verify``: check the whole chain, its sealed checkpoints and indexes.

Adversarial by design: the attacker it assumes is root on the box, holding every file
there, the current sealing key included, but not the epoch-0 key exported at
installation nor checkpoints exported earlier. So every conclusion rests on something
that attacker could not have recomputed:

* single edits, deletions and reordering: the hash chain;
* a rewritten chain or a cut tail: forward-secure checkpoint MACs (keys of past epochs
  are gone from the box), a checkpoint for every epoch, and the sealing key itself,
  which must be the key of the epoch it claims (a key cannot be stepped back);
* history removed at the start: a sealed retention checkpoint naming the exact horizon,
  with a window and times that a real retention run could have had; an exported
  checkpoint older than the horizon must be covered by one;
* lying indexes: every closed segment's index is rebuilt from its records and compared
  with its file. With the exported key, an index file whose SHA-256 is the one the
  *first* MAC-valid checkpoint naming its segment sealed is the agent's own, written
  when the segment closed: it is not rebuilt, only its positions (record count, first
  and last seq and time, every record's offset) are compared with the walked segment,
  which catches a segment rewritten line by line with the same records. Whoever holds
  the current sealing key cannot re-seal an old segment's index (the first sealing
  counts), and an index that does not match its seal is rebuilt and compared in full.

Without the exported key nothing can be *authenticated*: the report then says what was
checked (hashes, structure) and what was not, and its verdict is "not proven", never the
"intact" of a keyed run. A key file found on the box proves nothing (root can replace it).
A torn last record or checkpoint after a crash is reported as a crash, not tampering.
"""

from __future__ import annotations

import array
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from edge_agent.store.audit import (
    GENESIS,
    MIN_RETENTION_DAYS,
    AuditLog,
    SegmentIndex,
    find_torn_tail,
    index_bytes,
    index_diff,
)
from edge_agent.store.seal import derive, evolve, mac, read_checkpoints

MAX_FINDINGS = 50
# How far past the epoch it claims a replaced sealing key is looked for (~1 s of work).
KEY_SEARCH = 1_000_000


@dataclass
class Finding:
    kind: str  # "tamper", "crash", "warning", "unproven"
    seq: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "message": self.message}


@dataclass
class VerifyReport:
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints: int = 0
    macs_checked: bool = False
    horizon_first: int = 1
    indexes_checked: int = 0
    indexes_by_seal: int = 0  # of those, matched to their sealed digest (not rebuilt)
    copy: bool = False  # headquarters' copy (fleet ingest): the sealing key stays on the box
    findings: list[Finding] = field(default_factory=list)

    @property
    def tampered(self) -> bool:
        return any(f.kind == "tamper" for f in self.findings)

    @property
    def authenticated(self) -> bool:
        return self.macs_checked

    @property
    def verdict(self) -> str:
        """``tampered``, ``intact`` (authenticated with the exported key) or ``not proven``."""
        if self.tampered:
            return "tampered"
        return "intact" if self.authenticated else "not proven"

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [f.seq for f in self.findings if f.kind == "tamper" and f.seq is not None]
        return min(seqs) if seqs else None

    def add(self, kind: str, seq: int | None, message: str) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(kind, seq, message))

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.verdict == "intact", "verdict": self.verdict,
                "authenticated": self.authenticated, "records": self.records,
                "first_seq": self.first_seq, "last_seq": self.last_seq,
                "horizon_first_seq": self.horizon_first, "checkpoints": self.checkpoints,
                "macs_checked": self.macs_checked, "indexes_checked": self.indexes_checked,
                "indexes_by_seal": self.indexes_by_seal,
                "first_bad_seq": self.first_bad_seq, "copy": self.copy,
                "findings": [f.to_json() for f in self.findings]}


def load_key(path: Path) -> bytes:
    doc = json.loads(path.read_text())
    if int(doc.get("epoch", 0)) != 0:
        raise ValueError(f"{path} holds an epoch-{doc['epoch']} key; verification needs "
                         "the epoch-0 key (verify.key)")
    return bytes.fromhex(doc["key"])


def _iso_minus_days(ts: float, days: float) -> str:
    t = dt.datetime.fromtimestamp(ts - days * 86400, dt.UTC)
    return t.isoformat(timespec="milliseconds")


@dataclass
class _Walk:
    """What the chain walk leaves for the checkpoint checks."""

    hash_at: dict[int, str] = field(default_factory=dict)


def verify(audit_dir: Path, *, key: bytes | None = None,
           exported: dict[str, Any] | None = None,
           min_retention_days: float = MIN_RETENTION_DAYS,
           progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Verify the audit log in ``audit_dir``. ``key``: the exported epoch-0 key (never one
    read from the box); ``exported``: a checkpoint exported earlier; ``progress``: told
    (bytes read, bytes in all segments) as the chain is walked."""
    report = VerifyReport(macs_checked=key is not None,
                          copy=(audit_dir / "COPY.json").exists())
    checkpoints, cp_torn, seal_key = _sealed_state(audit_dir)
    if cp_torn:
        report.add("crash", None, "torn last checkpoint line (crash while sealing)")
    pinned = {int(c["seq"]) for c in checkpoints if "seq" in c}
    if exported and "seq" in exported:
        pinned.add(int(exported["seq"]))

    horizon: dict[str, Any] | None = None
    horizon_path = audit_dir / "horizon.json"
    if horizon_path.exists():
        try:
            horizon = json.loads(horizon_path.read_text())
            assert horizon is not None
            report.horizon_first = int(horizon["first_seq"])
            str(horizon["prev_hash"])
        except (ValueError, KeyError, TypeError, AssertionError):
            report.add("tamper", None, "horizon.json (retention marker) is unreadable")
            horizon = None
    sealed_seq = max((int(c["seq"]) for c in checkpoints if "seq" in c), default=0)
    sealed = _sealed_indexes(checkpoints, key) if key is not None else {}
    walk = _walk_chain(report, audit_dir, horizon, pinned, sealed_seq, sealed, progress)
    last = report.last_seq or (report.horizon_first - 1)
    retention = _check_checkpoints(report, audit_dir, checkpoints, key, walk.hash_at, last,
                                   seal_key)
    _check_horizon(report, horizon, retention, key, min_retention_days)
    if exported:
        _check_exported(report, exported, key, walk.hash_at, last, retention)
    if (audit_dir / "verify.key").exists():
        report.add("warning", None, "verify.key is still on the box: whoever holds it can "
                   "forge checkpoints; export it and delete it (see README)")
    if key is None:
        report.add("unproven", None, "no exported verify key: the hash chain and structure "
                   "were checked, but no checkpoint MAC was; a log rewritten by whoever "
                   "controls this box cannot be ruled out (pass --key with the exported "
                   "verify.key)")
    return report


def _sealed_indexes(cps: list[dict[str, Any]], k0: bytes) -> dict[str, str]:
    """Segment name -> index SHA-256 as the *first* MAC-valid checkpoint naming the
    segment sealed it. (Every checkpoint is checked again, with its findings, after the
    walk; this only decides which indexes need not be rebuilt.)"""
    out: dict[str, str] = {}
    key, want = k0, 0
    for cp in cps:
        try:
            epoch = int(cp["epoch"])
        except (KeyError, TypeError, ValueError):
            continue
        if epoch < want:
            continue  # repeated or out of order: reported by the checkpoint checks
        while want < epoch:
            key, want = evolve(key), want + 1
        if hmac.compare_digest(mac(key, cp), str(cp.get("mac"))):
            try:
                for entry in cp.get("segments") or ():
                    out.setdefault(str(entry["segment"]), str(entry["idx_sha256"]))
            except (KeyError, TypeError):
                pass
        key, want = evolve(key), epoch + 1
    return out


def _walk_chain(report: VerifyReport, audit_dir: Path, horizon: dict[str, Any] | None,
                pinned: set[int], sealed_seq: int, sealed: dict[str, str],
                progress: Callable[[int, int], None] | None = None) -> _Walk:
    walk = _Walk()
    expected = report.horizon_first
    prev = str(horizon["prev_hash"]) if horizon else GENESIS
    segments = sorted(audit_dir.glob(AuditLog.SEGMENT_GLOB))
    total = sum(seg.stat().st_size for seg in segments)
    done = 0
    for si, seg in enumerate(segments):
        closed = si < len(segments) - 1
        # A closed segment's index: rebuilt (idx), or its positions only when its file
        # is the sealed one (by_seal); the open segment has no index file to check.
        idx_file = _read_index(seg) if closed else None
        by_seal = idx_file is not None and sealed.get(seg.name) == \
            hashlib.sha256(idx_file).hexdigest()
        idx = SegmentIndex() if closed and not by_seal else None
        idx_add = idx.add if idx is not None else None
        positions = array.array("q")
        pos_add = positions.append if by_seal else None
        first_rec: dict[str, Any] | None = None
        last_rec: dict[str, Any] | None = None
        tear = None if closed else find_torn_tail(seg, sealed_seq)
        if tear is not None:
            # The same rule start-up uses: it cuts these bytes off and records it.
            report.add("crash", tear.last_seq + 1,
                       f"{seg.name} was torn by a crash at byte {tear.offset} ({tear.bytes_dropped}"
                       f" bytes after seq {tear.last_seq}, past the last checkpoint): the "
                       "last write never completed; not tampering")
        limit = tear.offset if tear is not None else None
        loads, dumps, sha256, SORT_KEYS = (orjson.loads, orjson.dumps, hashlib.sha256,
                                           orjson.OPT_SORT_KEYS)
        li = -1
        line_offset = 0
        # Only a file's last line can lack its newline (or be cut at a torn tail), so
        # "the open segment's last line, unterminated" needs no look-ahead.
        with open(seg, "rb", buffering=1 << 20) as f:
            for raw in f:
                size = len(raw)
                if limit is not None and line_offset + size > limit:
                    raw = raw[:limit - line_offset]
                    size = len(raw)
                    if not size:
                        break
                li += 1
                if progress is not None and not li & 8191:
                    progress(done + line_offset, total)
                unended_last = raw[-1] != 10 and not closed  # 10: b"\n"
                try:
                    rec = loads(raw)
                    if rec.__class__ is not dict or "seq" not in rec:
                        raise ValueError("not a record")
                except ValueError:
                    if unended_last:
                        report.add("crash", expected,
                                   f"torn last record in {seg.name} ({size} bytes after "
                                   f"seq {expected - 1}): a crash mid-write, not tampering")
                    else:
                        report.add("tamper", expected,
                                   f"record {expected} in {seg.name} line {li + 1} is "
                                   "unreadable (bytes altered)")
                        expected += 1
                    line_offset += size
                    continue
                if unended_last:
                    report.add("crash", rec.get("seq"), f"last record in {seg.name} has no "
                               "newline: a crash mid-write")
                elif idx_add is not None:
                    idx_add(rec, line_offset)
                elif pos_add is not None:
                    pos_add(line_offset)
                    if first_rec is None:
                        first_rec = rec
                    last_rec = rec
                line_offset += size
                seq = rec["seq"]
                if seq.__class__ is not int:
                    seq = int(seq)
                if seq < report.horizon_first:
                    continue  # below the horizon: retention was cut short by a crash
                if report.first_seq is None:
                    report.first_seq = seq
                report.records += 1
                this_hash = rec.get("hash")
                if seq != expected:
                    if seq > expected:
                        report.add("tamper", expected,
                                   f"expected record {expected}, found {seq}: record(s) "
                                   f"{expected}-{seq - 1} deleted or records reordered")
                    else:
                        report.add("tamper", seq, f"record {seq} appears after record "
                                   f"{expected - 1}: records reordered or duplicated")
                elif sha256(dumps({k: v for k, v in rec.items() if k != "hash"},
                                  option=SORT_KEYS)).hexdigest() != this_hash:
                    # record_hash(rec), inlined: this line runs a million times
                    report.add("tamper", seq, f"record {seq} was altered after it was "
                               "written (its hash does not match its contents)")
                elif rec.get("prev") != prev:
                    report.add("tamper", seq, f"record {seq} does not chain to the record "
                               "before it (a record was removed, inserted or replaced)")
                prev = this_hash if this_hash.__class__ is str else str(this_hash)
                if seq in pinned:
                    walk.hash_at[seq] = prev
                expected = (seq if seq > expected else expected) + 1
                if report.last_seq is None or seq > report.last_seq:
                    report.last_seq = seq
                if limit is not None and line_offset >= limit:
                    break
        done += seg.stat().st_size
        if progress is not None:
            progress(done, total)
        if idx_file is None:
            continue
        report.indexes_checked += 1
        if by_seal and _positions_match(idx_file, positions, first_rec, last_rec):
            report.indexes_by_seal += 1
            continue
        if idx is None:  # sealed, but its positions are not this segment's: rebuild
            idx = _rebuild_index(seg)
        _check_index(report, seg, idx, idx_file)
    return walk


def _read_index(seg: Path) -> bytes | None:
    try:
        return AuditLog.index_path(seg).read_bytes()
    except FileNotFoundError:
        return None  # the agent rebuilds a missing index; nothing lies


def _positions_match(raw: bytes, positions: array.array[int], first: dict[str, Any] | None,
                     last: dict[str, Any] | None) -> bool:
    try:
        doc = orjson.loads(raw)
        return bool(
            doc["count"] == len(positions) and doc["offsets"] == positions.tolist()
            and (first is None or (doc["first_seq"], doc["first_ts"])
                 == (first["seq"], first["ts"]))
            and (last is None or (doc["last_seq"], doc["last_ts"])
                 == (last["seq"], last["ts"])))
    except (ValueError, KeyError, TypeError):
        return False


def _rebuild_index(seg: Path) -> SegmentIndex:
    idx = SegmentIndex()
    offset = 0
    with open(seg, "rb", buffering=1 << 20) as f:
        for raw in f:  # the records the walk would have indexed
            try:
                rec = orjson.loads(raw)
                if isinstance(rec, dict) and "seq" in rec:
                    idx.add(rec, offset)
            except ValueError:
                pass
            offset += len(raw)
    return idx


def _check_index(report: VerifyReport, seg: Path, actual: SegmentIndex, raw: bytes) -> None:
    """A closed segment's index must be exactly the one its records give."""
    p = AuditLog.index_path(seg)
    if raw == index_bytes(actual):
        return
    try:
        detail = index_diff(SegmentIndex.from_json(json.loads(raw)), actual)
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"unreadable: {exc}"
    # No sequence number: the records may be fine; it is the index that lies (or the
    # segment was edited, which the chain walk reports with its own seq).
    report.add("tamper", None, f"index {p.name} does not match its segment "
               f"({detail}): queries and exports would miss records")


def _key_epoch(k0: bytes, start: int, stored: bytes) -> int | None:
    """The epoch whose key is ``stored``, searching forward from ``start`` (bounded)."""
    key = derive(k0, start)
    for epoch in range(start, start + KEY_SEARCH):
        if hmac.compare_digest(key, stored):
            return epoch
        key = evolve(key)
    return None


def _check_checkpoints(report: VerifyReport, audit_dir: Path, cps: list[dict[str, Any]],
                       k0: bytes | None, hash_at: dict[int, str], last: int,
                       seal_key: bytes | None) -> list[dict[str, Any]]:
    """Check every checkpoint and the sealing key; return the retention checkpoints
    (authenticated ones only when there is a key)."""
    key = k0
    want_epoch = 0
    good_seq = report.horizon_first - 1
    sealed_seq = 0  # the newest record a valid checkpoint vouches for
    retention: list[dict[str, Any]] = []
    below: list[dict[str, Any]] = []  # checkpoints of records retention removed
    for cp in cps:
        if "epoch" not in cp:
            # A power cut can leave a torn append whose retry sealed the same epoch; a
            # checkpoint really removed shows as a gap in the epochs below.
            report.add("crash", None, "unreadable checkpoint line (a torn write after a "
                       f"crash or a full disk): {cp.get('unreadable')}")
            continue
        report.checkpoints += 1
        epoch = int(cp["epoch"])
        if epoch != want_epoch:
            report.add("tamper", good_seq + 1 if epoch > want_epoch else None,
                       f"checkpoint epochs {want_epoch}-{epoch - 1} missing (checkpoints "
                       "deleted)" if epoch > want_epoch else
                       f"checkpoint epoch {epoch} repeated or out of order")
        if key is not None:
            while want_epoch < epoch:
                key = evolve(key)
                want_epoch += 1
        want_epoch = epoch + 1
        ok = _check_one(report, cp, key, hash_at, last, f"checkpoint {epoch}", good_seq)
        if ok and int(cp["seq"]) < report.horizon_first and cp.get("rec_ts"):
            below.append(cp)
        if ok:
            good_seq = max(good_seq, int(cp["seq"]))
            sealed_seq = max(sealed_seq, int(cp["seq"]))
            if cp.get("kind") == "retention" and isinstance(cp.get("horizon"), dict):
                retention.append(cp)
        if key is not None:
            key = evolve(key)
    if not report.copy:  # a copy never holds the box's sealing key
        _check_seal_key(report, seal_key, k0, want_epoch, sealed_seq, bool(cps))
    # Every checkpoint left below the horizon sealed a record that retention removed: a
    # real retention run only removes records older than its cutoff. (An attacker with
    # the current key can seal a fake retention run, but not back-date these.)
    for cp in [] if report.copy else below:  # a copy starts where it starts
        _check_covered(report, cp, retention, f"checkpoint {cp['epoch']}")
    return retention


def _check_covered(report: VerifyReport, cp: dict[str, Any], retention: list[dict[str, Any]],
                   label: str) -> None:
    seq = int(cp["seq"])
    written = str(cp.get("rec_ts") or _iso(float(cp.get("ts", 0))))
    covering = [r for r in retention if int(r["horizon"].get("first_seq", 0)) > seq
                and written < str(r["horizon"].get("cutoff", ""))]
    if not covering:
        report.add("tamper", seq, f"{label} seals record {seq} (written {written}), which "
                   "is gone, and no sealed retention run could have removed it: history "
                   "was removed")


def _sealed_state(audit_dir: Path) -> tuple[list[dict[str, Any]], bool, bytes | None]:
    """The checkpoints, whether the last is torn, and seal.key's bytes (None: no file),
    as one consistent snapshot of a log that may be live.

    A running agent seals by appending checkpoint ``e`` and then replacing seal.key with
    epoch ``e + 1``. Read one after the other while it seals, the two disagree (the key
    a checkpoint ahead of the file read before it: "checkpoints deleted"; or behind one
    read after it: "stepped back"). So the checkpoints are read again after the key, until
    they are the same twice (bounded: a log that seals faster than this reads is told
    apart by the epochs it then shows)."""
    cp_file, key_file = audit_dir / "checkpoints.jsonl", audit_dir / "seal.key"
    checkpoints, torn = read_checkpoints(cp_file)
    for _ in range(20):
        try:
            key: bytes | None = key_file.read_bytes()
        except FileNotFoundError:
            key = None
        again, torn_again = read_checkpoints(cp_file)
        if again == checkpoints and torn_again == torn:
            return checkpoints, torn, key
        checkpoints, torn = again, torn_again
    return checkpoints, torn, key


def _check_seal_key(report: VerifyReport, seal_key: bytes | None, k0: bytes | None,
                    want_epoch: int, sealed_seq: int, have_cps: bool) -> None:
    """The on-box sealing key is evidence: it must be the key of the epoch it claims, and
    every epoch below that must have its checkpoint."""
    if seal_key is None:
        if have_cps or report.records:
            report.add("tamper", None, "seal.key is missing: the sealing key was removed, "
                       "so its epoch cannot vouch that no checkpoint was deleted")
        return
    try:
        doc = json.loads(seal_key)
        cur, stored = int(doc["epoch"]), bytes.fromhex(doc["key"])
    except (ValueError, KeyError, TypeError):
        report.add("tamper", None, "seal.key is unreadable")
        return
    first_unsealed = sealed_seq + 1 if report.last_seq and report.last_seq > sealed_seq \
        else (report.last_seq or 0) + 1
    if cur > want_epoch:
        report.add("tamper", first_unsealed,
                   f"the sealing key is at epoch {cur} but the last checkpoint is epoch "
                   f"{want_epoch - 1}: checkpoints {want_epoch}-{cur - 1} were deleted "
                   "(with the records they sealed)")
    elif cur < want_epoch - 1:
        report.add("tamper", first_unsealed,
                   f"the sealing key claims epoch {cur}, behind the checkpoints (epoch "
                   f"{want_epoch - 1}): it was stepped back")
    if k0 is None:
        return
    if hmac.compare_digest(derive(k0, cur), stored):
        return
    real = _key_epoch(k0, cur, stored)
    where = (f"it is the key of epoch {real}: checkpoints {want_epoch}-{real - 1} and the "
             "records they sealed were removed, and the epoch number lowered to hide it"
             if real is not None and real >= want_epoch else
             "it is no key of this log's series (replaced)")
    report.add("tamper", first_unsealed,
               f"seal.key claims epoch {cur} but is not that epoch's key; {where}")


def _check_one(report: VerifyReport, cp: dict[str, Any], key: bytes | None,
               hash_at: dict[int, str], last: int, label: str, good_seq: int = 0) -> bool:
    seq = int(cp["seq"])
    if key is not None and not hmac.compare_digest(mac(key, cp), str(cp.get("mac"))):
        report.add("tamper", None, f"{label} (seq {seq}) has a bad MAC: forged or altered")
        return False
    if seq < report.horizon_first:
        return True  # its records were removed by retention (checked with the horizon)
    if seq > last:
        report.add("tamper", last + 1, f"log truncated: {label} seals record {seq} but the "
                   f"log ends at record {last}")
        return False
    got = hash_at.get(seq)
    if got is None:
        return False  # the record itself is missing: reported by the chain walk
    if got != cp.get("hash"):
        report.add("tamper", good_seq + 1, f"chain rewritten between records {good_seq + 1} "
                   f"and {seq}: record {seq} differs from what {label} sealed")
        return False
    return True


def _retention_problem(cp: dict[str, Any], min_days: float) -> str | None:
    """Why a retention checkpoint could not be a real retention run, or None."""
    h = cp["horizon"]
    try:
        days = float(h["retention_days"])
        cutoff, newest = str(h["cutoff"]), str(h["last_removed_ts"])
    except (KeyError, TypeError, ValueError):
        return "its horizon is incomplete"
    if days < min_days:
        return f"its window of {days:g} days is under the minimum of {min_days:g}"
    if newest >= cutoff:
        return f"it removed a record of {newest}, inside its own window (cutoff {cutoff})"
    # The cutoff is the sealing time less the window (a second of slack for rounding).
    if cutoff > _iso_minus_days(float(cp["ts"]) + 1, days):
        return f"its cutoff {cutoff} is later than {days:g} days before it ran"
    return None


def _check_horizon(report: VerifyReport, horizon: dict[str, Any] | None,
                   retention: list[dict[str, Any]], key: bytes | None,
                   min_days: float) -> None:
    """A gap at the start of the log needs a sealed retention checkpoint naming it."""
    if horizon is None:
        return  # a log that starts after 1 without a horizon fails the chain walk
    first, prev = int(horizon["first_seq"]), str(horizon["prev_hash"])
    if report.copy and horizon.get("copy"):
        # Headquarters' copy starts where ingest first heard of the site: what came before
        # is the site's to prove (its own log and checkpoints), not the copy's.
        report.add("warning", first, f"headquarters' copy starts at record {first}; "
                   f"records 1-{first - 1} were never forwarded to it")
        return
    match = [cp for cp in retention if int(cp["horizon"].get("first_seq", -1)) == first
             and cp["horizon"].get("prev_hash") == prev]
    if not match:
        report.add("tamper", 1, f"records 1-{first - 1} are gone and no sealed retention "
                   f"checkpoint names the horizon at {first}: history was removed without "
                   "the evidence a retention run leaves")
        return
    if key is None:
        return  # its MAC cannot be checked: the report is 'not proven' anyway
    problems = [p for cp in match if (p := _retention_problem(cp, min_days)) is not None]
    if len(problems) == len(match):
        report.add("tamper", 1, f"the retention checkpoint for records 1-{first - 1} "
                   f"cannot be a real retention run: {problems[0]}")


def _check_exported(report: VerifyReport, exported: dict[str, Any], key: bytes | None,
                    hash_at: dict[int, str], last: int,
                    retention: list[dict[str, Any]]) -> None:
    try:
        epoch, seq = int(exported["epoch"]), int(exported["seq"])
    except (KeyError, TypeError, ValueError):
        report.add("tamper", None, "the exported checkpoint is not a checkpoint")
        return
    ekey = derive(key, epoch) if key is not None else None
    if not _check_one(report, exported, ekey, hash_at, last, "exported checkpoint"):
        return
    if seq < report.horizon_first:
        # It seals a record retention removed: only a real retention run may have done
        # that, one whose cutoff is later than the record's own time.
        _check_covered(report, exported, retention, "the exported checkpoint")


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")

"""``edge-agent audit verify``: check the whole chain and its sealed checkpoints.

Reports the first bad sequence number for an altered record (flipped byte), a deleted
record, records out of order, and, against the checkpoints (or one exported off the
box), a truncated tail or a rewritten chain. A torn last record after a crash is
reported as a crash, not as tampering. Adversarial by design: every check is against
data the writer could not have recomputed (the hash chain for single edits, forward-
secure MACs for rewrites and truncation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.store.audit import GENESIS, AuditLog, record_hash
from edge_agent.store.seal import derive, evolve, mac, read_checkpoints

MAX_FINDINGS = 50


@dataclass
class Finding:
    kind: str  # "tamper", "crash", "warning"
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
    findings: list[Finding] = field(default_factory=list)

    @property
    def tampered(self) -> bool:
        return any(f.kind == "tamper" for f in self.findings)

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [f.seq for f in self.findings if f.kind == "tamper" and f.seq is not None]
        return min(seqs) if seqs else None

    def add(self, kind: str, seq: int | None, message: str) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(kind, seq, message))

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.tampered, "records": self.records, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "checkpoints": self.checkpoints,
                "macs_checked": self.macs_checked, "first_bad_seq": self.first_bad_seq,
                "findings": [f.to_json() for f in self.findings]}


def load_key(path: Path) -> bytes:
    doc = json.loads(path.read_text())
    if int(doc.get("epoch", 0)) != 0:
        raise ValueError(f"{path} holds an epoch-{doc['epoch']} key; verification needs "
                         "the epoch-0 key (verify.key)")
    return bytes.fromhex(doc["key"])


def verify(audit_dir: Path, *, key: bytes | None = None,
           exported: dict[str, Any] | None = None) -> VerifyReport:
    report = VerifyReport()
    checkpoints, cp_torn = read_checkpoints(audit_dir / "checkpoints.jsonl")
    if cp_torn:
        report.add("crash", None, "torn last checkpoint line (crash while sealing)")
    pinned = {int(c["seq"]) for c in checkpoints if "seq" in c}
    if exported and "seq" in exported:
        pinned.add(int(exported["seq"]))
    hash_at: dict[int, str] = {}

    expected, prev = 1, GENESIS
    horizon_path = audit_dir / "horizon.json"
    horizon_first = 1
    if horizon_path.exists():
        try:
            h = json.loads(horizon_path.read_text())
            expected, prev = int(h["first_seq"]), str(h["prev_hash"])
            horizon_first = expected
        except (ValueError, KeyError, TypeError):
            report.add("tamper", None, "horizon.json (retention marker) is unreadable")

    segments = sorted(audit_dir.glob(AuditLog.SEGMENT_GLOB))
    for si, seg in enumerate(segments):
        lines = seg.read_bytes().split(b"\n")
        trailing_partial = lines[-1] != b""
        body = lines if trailing_partial else lines[:-1]
        for li, raw in enumerate(body):
            is_last_line = si == len(segments) - 1 and li == len(body) - 1
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict) or "seq" not in rec:
                    raise ValueError("not a record")
            except (ValueError, UnicodeDecodeError):
                if is_last_line and trailing_partial:
                    report.add("crash", expected,
                               f"torn last record in {seg.name} ({len(raw)} bytes after "
                               f"seq {expected - 1}): a crash mid-write, not tampering")
                else:
                    report.add("tamper", expected,
                               f"record {expected} in {seg.name} line {li + 1} is unreadable "
                               "(bytes altered)")
                    expected += 1
                continue
            if is_last_line and trailing_partial:
                report.add("crash", rec.get("seq"), f"last record in {seg.name} has no "
                           "newline: a crash mid-write")
            seq = int(rec["seq"])
            if report.first_seq is None:
                report.first_seq = seq
            report.records += 1
            if seq != expected:
                if seq > expected:
                    report.add("tamper", expected,
                               f"expected record {expected}, found {seq}: record(s) "
                               f"{expected}-{seq - 1} deleted or records reordered")
                else:
                    report.add("tamper", seq, f"record {seq} appears after record "
                               f"{expected - 1}: records reordered or duplicated")
            elif record_hash(rec) != rec.get("hash"):
                report.add("tamper", seq, f"record {seq} was altered after it was written "
                           "(its hash does not match its contents)")
            elif rec.get("prev") != prev:
                report.add("tamper", seq, f"record {seq} does not chain to the record "
                           "before it (a record was removed, inserted or replaced)")
            if seq in pinned:
                hash_at[seq] = str(rec.get("hash"))
            expected, prev = max(expected, seq) + 1, str(rec.get("hash"))
            report.last_seq = max(report.last_seq or 0, seq)

    last = report.last_seq or (horizon_first - 1)
    _check_checkpoints(report, audit_dir, checkpoints, key, hash_at, last, horizon_first)
    if exported:
        _check_one(report, exported, key_for(key, int(exported.get("epoch", 0))), hash_at,
                   last, horizon_first, "exported checkpoint")
    if (audit_dir / "verify.key").exists():
        report.add("warning", None, "verify.key is still on the box: whoever holds it can "
                   "forge checkpoints; export it and delete it (see README)")
    return report


def key_for(k0: bytes | None, epoch: int) -> bytes | None:
    return derive(k0, epoch) if k0 is not None else None


def _check_checkpoints(report: VerifyReport, audit_dir: Path, cps: list[dict[str, Any]],
                       k0: bytes | None, hash_at: dict[int, str], last: int,
                       horizon_first: int) -> None:
    report.macs_checked = k0 is not None
    if k0 is None and cps:
        report.add("warning", None, "checkpoint MACs not checked: no verify key (pass --key "
                   "with the exported verify.key)")
    key = k0
    want_epoch = 0
    good_seq = horizon_first - 1
    for cp in cps:
        if "epoch" not in cp:
            report.add("tamper", None, f"unreadable checkpoint line: {cp.get('unreadable')}")
            continue
        report.checkpoints += 1
        epoch = int(cp["epoch"])
        if epoch != want_epoch:
            report.add("tamper", None, f"checkpoint epochs {want_epoch}-{epoch - 1} missing "
                       "(checkpoints deleted)" if epoch > want_epoch else
                       f"checkpoint epoch {epoch} repeated or out of order")
        if key is not None:
            while want_epoch < epoch:
                key = evolve(key)
                want_epoch += 1
        want_epoch = epoch + 1
        if _check_one(report, cp, key, hash_at, last, horizon_first, f"checkpoint {epoch}",
                      good_seq):
            good_seq = int(cp["seq"])
        if key is not None:
            key = evolve(key)
    seal = audit_dir / "seal.key"
    if seal.exists():
        try:
            cur = int(json.loads(seal.read_text())["epoch"])
        except (ValueError, KeyError, TypeError):
            report.add("tamper", None, "seal.key is unreadable")
            return
        if cur > want_epoch:
            report.add("tamper", last + 1 if cps else None,
                       f"the sealing key is at epoch {cur} but the last checkpoint is epoch "
                       f"{want_epoch - 1}: checkpoints {want_epoch}-{cur - 1} were deleted "
                       "(with the records they sealed)")
    elif cps:
        report.add("tamper", None, "seal.key is missing although checkpoints exist")


def _check_one(report: VerifyReport, cp: dict[str, Any], key: bytes | None,
               hash_at: dict[int, str], last: int, horizon_first: int, label: str,
               good_seq: int = 0) -> bool:
    seq = int(cp["seq"])
    if key is not None and mac(key, cp) != cp.get("mac"):
        report.add("tamper", None, f"{label} (seq {seq}) has a bad MAC: forged or altered")
        return False
    if seq < horizon_first:
        return True  # sealed records removed by retention
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

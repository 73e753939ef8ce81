"""Decisions people make through the agent, and the one rule that keeps them.

**The rule.** A decision (out of service, back in service, adopt, ignore) is answered
only once its audit record is durable; the audit trail is its source of truth. The
registry is a cache of the trail: it records, with each write, the sequence number of
the newest decision it holds (its *watermark*). On start-up every decision record
after the watermark is read back from the trail (through the audit indexes, so only
those records are read) and applied before any device is offered. A crash between the
answer and the registry's next flush, an empty or unreadable registry, a registry from
an older backup: all end with the decisions the trail says were made.

Decisions older than the audit retention window survive in the registry (the watermark
is past them); a registry lost together with a retention run loses only decisions
older than the window, which the retention record says were removed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edge_agent.store.audit import AuditLog, AuditRecord, Query

OUT_OF_SERVICE = "out_of_service"
BACK_IN_SERVICE = "back_in_service"
ADOPTED = "device_adopted"
IGNORED = "discovery_ignored"
UNIGNORED = "discovery_unignored"
PINNED = "device_pinned"
ACTIONS = (OUT_OF_SERVICE, BACK_IN_SERVICE, ADOPTED, IGNORED, UNIGNORED, PINNED)
WATERMARK = "decisions"  # id of the registry's meta document holding the watermark


def since(audit: AuditLog, after_seq: int) -> list[AuditRecord]:
    """Decision records after ``after_seq``, oldest first (blocking: run off the loop)."""
    found: list[AuditRecord] = []
    for action in ACTIONS:
        found.extend(audit.iter_query(Query(after_seq=after_seq, action=action, limit=None)))
    found.sort(key=lambda r: int(r["seq"]))
    return found


def _epoch(ts: str) -> float:
    try:
        return dt.datetime.fromisoformat(ts).timestamp()
    except (TypeError, ValueError):
        return 0.0


@dataclass
class Replayed:
    count: int = 0
    last_seq: int = 0
    devices: set[str] | None = None
    after_seq: int = 0  # the registry's watermark the replay started from


def apply(records: Iterable[AuditRecord], saved: dict[str, dict[str, Any]],
          ignored: dict[str, dict[str, Any]]) -> Replayed:
    """Fold decision records into the saved registry (device id -> registry document,
    possibly partial) and the ignore list, in order."""
    out = Replayed(devices=set())
    assert out.devices is not None
    for rec in records:
        dev_id = rec.get("device")
        if not dev_id:
            continue
        action = rec["action"]
        doc = saved.setdefault(dev_id, {"id": dev_id})
        if action in (OUT_OF_SERVICE, BACK_IN_SERVICE):
            oos = doc.setdefault("out_of_service", {})
            key = str(rec.get("compartment"))
            if action == OUT_OF_SERVICE:
                oos[key] = {"reason": rec.get("reason"), "actor": rec.get("actor"),
                            "since": _epoch(rec.get("ts", "")), "seq": rec["seq"]}
            else:
                oos.pop(key, None)
        elif action == ADOPTED:
            doc["adopted"], doc["ignored"] = True, None
            ignored.pop(dev_id, None)
            pins = (rec.get("details") or {}).get("pins")
            if pins:
                doc["pins"] = pins
        elif action == UNIGNORED:
            ignored.pop(dev_id, None)
            doc["ignored"], doc["adopted"] = None, False
        elif action == PINNED:
            doc["pins"] = (rec.get("details") or {}).get("pins")
        elif action == IGNORED:
            ignored[dev_id] = {"id": dev_id, "reason": rec.get("reason"),
                               "actor": rec.get("actor"), "since": _epoch(rec.get("ts", ""))}
            doc["ignored"], doc["adopted"] = rec.get("reason") or "ignored", False
        out.count += 1
        out.last_seq = max(out.last_seq, int(rec["seq"]))
        out.devices.add(dev_id)
    return out

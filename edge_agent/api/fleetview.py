"""Headquarters' view of the fleet, read from what ``edge-agent fleet ingest`` keeps in
``OUT/<site id>/`` (``status.json``: the newest retained status the site published;
``ingest.json``: the chain as ingest verified it). Every site at a glance, worst first:
a site whose chain shows tampering, then dead sites, sites with critical alarms, sites
whose status went quiet, then by backlog. Read-only and blocking (run it off an event
loop); used by ``edge-agent fleet status`` and the dashboard's fleet screen."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

QUIET_AFTER_S = 120.0  # a live site publishes its status every status_interval (30 s)


class SiteRow(TypedDict):
    site: str
    state: str
    """TAMPERED (its chain), DEAD (its will: gone without a word), STOPPED (a clean stop),
    QUIET (no status for QUIET_AFTER_S), degraded, ok, unknown"""
    health: str | None
    online: bool | None
    alarms: list[str]
    backlog: int | None
    oldest_unsent_s: float | None
    entitlements: str | None
    status_age_s: float | None
    last_seq: int
    gaps_waiting: int
    problems: list[str]


RANK = {"TAMPERED": 0, "DEAD": 1, "STOPPED": 2, "QUIET": 3, "degraded": 4, "unknown": 5,
        "ok": 6}


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def site_row(root: Path, now: float) -> SiteRow:
    status = _read(root / "status.json")
    ingest = _read(root / "ingest.json")
    problems = [str(p) for p in ingest.get("problems") or []]
    ts = status.get("ts")
    age = max(0.0, now - float(ts)) if isinstance(ts, (int, float)) else None
    online = status.get("online") if status else None
    health = status.get("health") if online else None
    if problems:
        state = "TAMPERED"
    elif online is False:
        state = "STOPPED" if status.get("stopped") else "DEAD"
    elif not status:
        state = "unknown"
    elif age is not None and age > QUIET_AFTER_S:
        state = "QUIET"
    else:
        state = "ok" if health == "ok" else "degraded"
    backlog = status.get("backlog") if online else None
    oldest = status.get("oldest_unsent_s") if online else None
    return SiteRow(site=root.name, state=state, health=health, online=online,
                   alarms=[str(a) for a in status.get("alarms") or []][:20],
                   backlog=int(backlog) if isinstance(backlog, int) else None,
                   oldest_unsent_s=float(oldest) if isinstance(oldest, (int, float)) else None,
                   entitlements=status.get("entitlements"), status_age_s=age,
                   last_seq=int(ingest.get("last_seq") or 0),
                   gaps_waiting=len(ingest.get("waiting_for") or []), problems=problems)


def fleet(out: Path, now: float | None = None) -> list[SiteRow]:
    """Every site under ``out``, worst first."""
    now = time.time() if now is None else now
    try:
        roots = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    rows = [site_row(r, now) for r in roots]
    rows.sort(key=lambda r: (RANK.get(r["state"], 9), -len(r["alarms"]),
                             -(r["backlog"] or 0), r["site"]))
    return rows

"""The dashboard's copy of the agent's state, fed by one link worker.

Screens never talk to the agent for reads: they render from this model at a bounded
rate, using ``changed`` to touch only the rows that moved.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Model:
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=2000))
    status: dict[str, Any] = field(default_factory=dict)
    plugins: list[dict[str, Any]] = field(default_factory=list)
    inbox: list[dict[str, Any]] = field(default_factory=list)
    connected: bool = False
    link_text: str = "connecting to the agent…"
    changed: set[str] = field(default_factory=set)  # device ids changed since last drain
    changed_at: dict[tuple[str, str], float] = field(default_factory=dict)
    events_version: int = 0
    wire: dict[str, dict[str, Any]] = field(default_factory=dict)  # fixed data only

    def put_device(self, d: dict[str, Any]) -> None:
        old = self.devices.get(d["id"])
        now = time.monotonic()
        if old is not None:
            for key in ("link", "address", "compartments", "reason"):
                if old.get(key) != d.get(key):
                    self.changed_at[(d["id"], key)] = now
        self.devices[d["id"]] = d
        self.changed.add(d["id"])

    def put_event(self, e: dict[str, Any]) -> None:
        self.events.append(e)
        self.events_version += 1

    def drain_changed(self) -> set[str]:
        out, self.changed = self.changed, set()
        return out

    def recently_changed(self, dev_id: str, key: str, within: float = 3.0) -> bool:
        t = self.changed_at.get((dev_id, key))
        return t is not None and time.monotonic() - t < within


def counts(model: Model) -> dict[str, int]:
    out: dict[str, int] = collections.Counter(d["link"] for d in model.devices.values())
    return dict(out)


def faults(d: dict[str, Any]) -> int:
    c = d.get("counters") or {}
    return int(c.get("poll_failures", 0)) + int(c.get("plugin_faults", 0))


ATTENTION = {"offline": 0, "error": 0, "degraded": 1, "connecting": 2, "discovered": 2}


def attention_order(devs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(devs, key=lambda d: (ATTENTION.get(d["link"], 3 if not d.get("alarms")
                                                     else 1), d["id"]))


def site_alarms(model: Model) -> list[dict[str, Any]]:
    """Agent alarms from the last status poll plus each device's alarms as they stream in
    (a device alarm shows the moment its device update arrives, not at the next poll)."""
    out = [a for a in (model.status or {}).get("alarms", [])
           if not str(a.get("id", "")).startswith("device:")]
    for d in model.devices.values():
        out.extend(d.get("alarms") or [])
    out.sort(key=lambda a: (a.get("severity") != "critical", a.get("since") or 0))
    return out

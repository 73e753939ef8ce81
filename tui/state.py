"""The dashboard's copy of the agent's state, fed by one link worker.

Screens never talk to the agent for reads: they render from this model at a bounded
rate, using ``changed`` to touch only the rows that moved.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from edge_agent.api.fleetview import SiteRow
from edge_agent.api.schema import (
    Alarm,
    AuditRecord,
    Custody,
    Deployable,
    Device,
    InboxItem,
    Person,
    Plugin,
    Status,
    Wire,
)


@dataclass
class Model:
    devices: dict[str, Device] = field(default_factory=dict)
    events: collections.deque[AuditRecord] = field(
        default_factory=lambda: collections.deque(maxlen=2000))
    status: Status | None = None
    plugins: list[Plugin] = field(default_factory=list)
    inbox: list[InboxItem] = field(default_factory=list)
    custody: Custody | None = None
    connected: bool = False
    link_text: str = "connecting to the agent…"
    changed: set[str] = field(default_factory=set)  # device ids changed since last drain
    changed_at: dict[tuple[str, str], float] = field(default_factory=dict)
    events_version: int = 0
    wire: dict[str, Wire] = field(default_factory=dict)  # fixed data only
    deployable: dict[str, Deployable] = field(default_factory=dict)  # per class
    people: dict[str, Person] = field(default_factory=dict)  # officers looked at
    usage: list[AuditRecord] | None = None  # custody_opened of the last days
    fleet: list[SiteRow] | None = None  # headquarters: every site, worst first

    def put_device(self, d: Device) -> None:
        old = self.devices.get(d["id"])
        now = time.monotonic()
        if old is not None:
            for key in ("link", "address", "compartments", "reason"):
                if old.get(key) != d.get(key):
                    self.changed_at[(d["id"], key)] = now
        self.devices[d["id"]] = d
        self.changed.add(d["id"])

    def put_event(self, e: AuditRecord) -> None:
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


def faults(d: Device) -> int:
    c = d.get("counters")
    return c["poll_failures"] + c["plugin_faults"] if c else 0


ATTENTION = {"blocked": 0, "offline": 0, "error": 0, "degraded": 1, "connecting": 2,
             "discovered": 2}


def attention_order(devs: list[Device]) -> list[Device]:
    return sorted(devs, key=lambda d: (ATTENTION.get(d["link"], 3 if not d.get("alarms")
                                                     else 1), d["id"]))


def site_alarms(model: Model) -> list[Alarm]:
    """Agent alarms from the last status poll plus each device's alarms as they stream in
    (a device alarm shows the moment its device update arrives, not at the next poll)."""
    out = [a for a in (model.status["alarms"] if model.status else [])
           if not a["id"].startswith("device:")]
    for d in model.devices.values():
        out.extend(d["alarms"])
    # Not yet acknowledged first, then critical first, then oldest first (as the agent).
    out.sort(key=lambda a: (a.get("acked") is not None, a["severity"] != "critical",
                            a["since"]))
    return out

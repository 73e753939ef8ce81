"""Alarms: typed records the agent raises and clears, shown by status and the dashboard.

Agent alarms (store, audit log, mDNS, identity conflicts) live in one :class:`AlarmBook`;
each device keeps its own, raised and cleared from what its driver reports.

A technician may **acknowledge** an alarm (who, when, why; audited as
``alarm_acknowledged``): it stays raised, and counts for health, until its cause clears;
it is shown as seen and sorted after the alarms nobody has looked at yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Alarm:
    id: str
    severity: str  # "critical" or "warning"
    message: str
    since: float = field(default_factory=time.time)
    device: str | None = None
    code: str | None = None
    compartment: int | None = None
    acked: dict[str, Any] | None = None  # {"by", "at", "reason", "seq"} once acknowledged

    @property
    def critical(self) -> bool:
        return self.severity == "critical"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "message": self.message,
                "since": self.since, "device": self.device, "code": self.code,
                "compartment": self.compartment, "acked": self.acked}


class AlarmBook:
    """The agent's own alarms, by id."""

    def __init__(self) -> None:
        self._alarms: dict[str, Alarm] = {}

    def raise_(self, alarm: Alarm) -> None:
        old = self._alarms.get(alarm.id)
        if old is not None and old.severity == alarm.severity:
            # Raised again while it holds (a retry failing the same way): the same
            # alarm, still acknowledged, still as old.
            alarm.acked, alarm.since = old.acked, old.since
        self._alarms[alarm.id] = alarm

    def get(self, alarm_id: str) -> Alarm | None:
        return self._alarms.get(alarm_id)

    def clear(self, alarm_id: str) -> Alarm | None:
        return self._alarms.pop(alarm_id, None)

    def __contains__(self, alarm_id: object) -> bool:
        return alarm_id in self._alarms

    def values(self) -> list[Alarm]:
        return list(self._alarms.values())


def ordered(alarms: list[Alarm]) -> list[dict[str, Any]]:
    """Not yet acknowledged first, then critical first, then oldest first, as JSON."""
    return [a.to_json() for a in sorted(alarms, key=lambda a: (a.acked is not None,
                                                                not a.critical, a.since))]

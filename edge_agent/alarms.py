"""Alarms: typed records the agent raises and clears, shown by status and the dashboard.

Agent alarms (store, audit log, mDNS, identity conflicts) live in one :class:`AlarmBook`;
each device keeps its own, raised and cleared from what its driver reports.
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

    @property
    def critical(self) -> bool:
        return self.severity == "critical"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "message": self.message,
                "since": self.since, "device": self.device, "code": self.code,
                "compartment": self.compartment}


class AlarmBook:
    """The agent's own alarms, by id."""

    def __init__(self) -> None:
        self._alarms: dict[str, Alarm] = {}

    def raise_(self, alarm: Alarm) -> None:
        self._alarms[alarm.id] = alarm

    def clear(self, alarm_id: str) -> Alarm | None:
        return self._alarms.pop(alarm_id, None)

    def __contains__(self, alarm_id: object) -> bool:
        return alarm_id in self._alarms

    def values(self) -> list[Alarm]:
        return list(self._alarms.values())


def ordered(alarms: list[Alarm]) -> list[dict[str, Any]]:
    """Critical first, then oldest first, as JSON."""
    return [a.to_json() for a in sorted(alarms, key=lambda a: (not a.critical, a.since))]

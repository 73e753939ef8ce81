"""From raw Modbus values to a cabinet reading, and from readings to alarms.

Pure code (no I/O), so recorded frames and unit tests exercise exactly what the driver runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.contract import DeviceAlarm, Severity
from edge_agent_armoury.profile import Point, Profile, Read


@dataclass(frozen=True)
class SlotReading:
    index: int
    door_open: bool | None
    present: bool
    tag: str | None  # None: no tag readable


@dataclass(frozen=True)
class CabinetReading:
    slots: tuple[SlotReading, ...]
    cabinet: Mapping[str, Any] = field(default_factory=dict)


class RegisterImage:
    """The values returned by a set of reads, addressable per table and address."""

    def __init__(self, blocks: Mapping[Read, Sequence[int | bool]]) -> None:
        self._tables: dict[str, dict[int, int | bool]] = {}
        for read, values in blocks.items():
            t = self._tables.setdefault(read.table, {})
            for i, v in enumerate(values[: read.count]):
                t[read.address + i] = v

    def get(self, point: Point, slot: int = 0) -> bool | int | float | str:
        start = point.at(slot)
        table = self._tables.get(point.table, {})
        try:
            values = [table[a] for a in range(start, start + point.width)]
        except KeyError as exc:
            raise LookupError(f"{point.table} {exc.args[0]} was not read") from exc
        return point.decode(values)


def decode(profile: Profile, blocks: Mapping[Read, Sequence[int | bool]]) -> CabinetReading:
    img = RegisterImage(blocks)
    cab: dict[str, Any] = {}
    for key, p in profile.cabinet_points():
        cab[key] = img.get(p)
    slots = []
    s = profile.slot
    for n in range(1, profile.profile.slots + 1):
        tag: str | None = None
        if s.tag is not None:
            raw = str(img.get(s.tag, n))
            tag = raw if raw.strip("0") else None
        slots.append(SlotReading(
            index=n,
            door_open=bool(img.get(s.door, n)) if s.door is not None else None,
            present=bool(img.get(s.present, n)),
            tag=tag))
    return CabinetReading(tuple(slots), cab)


class AlarmWatch:
    """Turns successive readings of one cabinet into the alarms that hold now.

    Where each weapon belongs comes from the site's ``assignments`` (slot -> tag id) when
    given; otherwise the first slot a tag is seen in is taken as its home for this run.
    """

    def __init__(self, profile: Profile, *, door_open_limit_s: float | None = None,
                 assignments: Mapping[int, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.profile = profile
        self.limit = door_open_limit_s or profile.profile.door_open_limit_s
        self.clock = clock
        self.configured = bool(assignments)
        self.home: dict[str, int] = {tag.upper(): slot for slot, tag in (assignments or {}).items()}
        self._slot_home: dict[int, str] = {slot: tag for tag, slot in self.home.items()}
        self._open_since: dict[int, float] = {}  # slot (0 = main door) -> monotonic time

    def _held_open(self, slot: int, is_open: bool | None, now: float) -> float | None:
        if not is_open:
            self._open_since.pop(slot, None)
            return None
        since = self._open_since.setdefault(slot, now)
        held = now - since
        return held if held >= self.limit else None

    def evaluate(self, r: CabinetReading) -> tuple[DeviceAlarm, ...]:
        now = self.clock()
        out: list[DeviceAlarm] = []
        cab = r.cabinet
        if cab.get("tamper"):
            out.append(DeviceAlarm("tamper", "tamper switch active: enclosure opened or forced",
                                   Severity.CRITICAL))
        held = self._held_open(0, bool(cab.get("main_door")), now)
        if held is not None:
            out.append(DeviceAlarm("door_held_open", f"main door open for {held:.0f} s "
                                   f"(limit {self.limit:g} s)", Severity.WARNING))
        if cab.get("mains_ok") is False:
            out.append(DeviceAlarm("mains_lost", "running on battery: mains power lost"
                                   + (f" ({cab['battery']}% left)" if "battery" in cab else ""),
                                   Severity.WARNING))
        for s in r.slots:
            held = self._held_open(s.index, s.door_open, now)
            if held is not None:
                out.append(DeviceAlarm("door_held_open", f"slot {s.index} door open for "
                                       f"{held:.0f} s (limit {self.limit:g} s)",
                                       Severity.WARNING, s.index))
            if not s.present:
                continue
            if s.tag is None:
                if self.profile.slot.tag is not None:
                    out.append(DeviceAlarm("tag_unreadable", f"slot {s.index} reports an item "
                                           "but no readable tag", Severity.WARNING, s.index))
                continue
            home = self.home.get(s.tag)
            if home is None and self.configured:
                out.append(DeviceAlarm("unknown_tag", f"slot {s.index}: tag {s.tag} is not "
                                       "assigned to this cabinet", Severity.CRITICAL, s.index))
            elif home is None:
                if s.index not in self._slot_home:  # learn: first seen here, slot free
                    self.home[s.tag] = s.index
                    self._slot_home[s.index] = s.tag
            elif home != s.index:
                out.append(DeviceAlarm("wrong_slot", f"slot {s.index}: tag {s.tag} belongs in "
                                       f"slot {home}", Severity.CRITICAL, s.index))
        return tuple(out)

"""Custody: who holds which item, decided on the box from a card at a station's reader.

A *station* (site config) binds a card reader to compartments and the equipment class
each holds. A card read there is decided here, from the signed entitlements on the box
and the class's policy; nothing waits on a network:

* **issue**: the officer is identified (keyed hash of the card), qualified for the
  class (not expired), under the per-person limit, with current entitlements (or a
  ``when_stale = "allow"`` class); a compartment holding an available item is opened
  for them. When the item leaves it, custody opens with a due time. The door closing
  (or ``take_s`` passing) with the item still there ends the session, audited.
* **two-person rule** (weapons, and any class that asks): the first card puts the
  reader on amber; a different officer with the armourer role must badge at the same
  station within ``second_person_s``.
* **return**: an officer who holds an item of a class this station serves gets its
  home compartment (or an empty one of that class) opened; the item placed closes the
  custody, late or not.
* **unauthorised removal**: an item leaving a station's compartment with no issue open
  for it is a critical alarm. **Overdue**: a warning at the due time, critical after
  the class's grace.

Every step is an audit record (actor ``officer:ID``), and the trail is the source of
truth: on start-up holdings and open sessions are rebuilt from it, so a custody survives
a restart or a kill between the door opening and the item leaving (an item that left
while the agent was down is booked to the officer the compartment was opened for).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.actions import Action
from edge_agent.alarms import Alarm
from edge_agent.config import WEAPON_CLASSES, SiteConfig, Station, compartment_list
from edge_agent.contract import CredentialRead, Signal, driver_capabilities
from edge_agent.entitlements import (
    EntitlementError,
    EntitlementStore,
    badge_hash,
    load_badge_key,
    verify_command,
)
from edge_agent.errors import AccessDenied, ConfigError, EdgeAgentError
from edge_agent.store.audit import AuditRecord, Query

if TYPE_CHECKING:
    from edge_agent.commands import Commands
    from edge_agent.devices import DeviceRegistry
    from edge_agent.runtime import Runtime

log = logging.getLogger(__name__)

ARMOURER = "armourer"
Slot = tuple[str, int]  # (device id, compartment)


@dataclass
class Holding:
    """An item out with an officer."""

    officer: str
    name: str
    equipment: str
    station: str
    device: str
    compartment: int
    item: str | None
    since: float
    due: float
    seq: int  # the custody_opened record
    overdue: str = ""  # "", "warning" or "critical" (alarm raised)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Session:
    """A compartment opened for an officer, waiting for the item to leave or come back."""

    kind: str  # "issue" or "return"
    officer: str
    name: str
    equipment: str
    station: str
    device: str
    compartment: int
    seq: int  # the issue_granted / return_granted record
    deadline: float
    due: float | None = None
    second: str | None = None
    restored: bool = False  # rebuilt from the trail at start-up

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Waiting:
    """A two-person issue waiting for its second person."""

    officer: str
    name: str
    equipment: str
    station: str
    deadline: float
    seq: int


class Refused(EdgeAgentError):
    """A card at a station refused, with the reason the audit log and the reader give."""

    def __init__(self, message: str, officer: dict[str, Any] | None = None,
                 equipment: str | None = None) -> None:
        super().__init__(message)
        self.officer, self.equipment = officer, equipment


def _epoch(ts: str) -> float:
    try:
        return dt.datetime.fromisoformat(ts).timestamp()
    except (TypeError, ValueError):
        return time.time()


class CustodyService:
    def __init__(self, rt: Runtime, registry: DeviceRegistry, commands: Commands,
                 entitlements: Callable[[], EntitlementStore | None],
                 config_dir: Path) -> None:
        self.rt = rt
        self.registry = registry
        self.commands = commands
        self._entitlements = entitlements
        cfg: SiteConfig = rt.config
        self.cfg = cfg
        self.stations: dict[str, Station] = {st.reader: st for st in cfg.stations}
        self.slots: dict[Slot, tuple[str, str]] = {}  # slot -> (station id, class)
        self.keypad: dict[str, dict[str, str]] = {}  # station -> digit -> class
        for st in cfg.stations:
            for group in st.slots:
                for n in compartment_list(group.compartments):
                    self.slots[(group.device, n)] = (st.id, group.equipment)
                if group.keypad:
                    self.keypad.setdefault(st.id, {})[group.keypad] = group.equipment
        self.config_dir = config_dir
        self.badge_key: bytes | None = None
        self.holdings: dict[Slot, Holding] = {}
        self.sessions: dict[Slot, Session] = {}
        self.waiting: dict[str, Waiting] = {}  # station id -> waiting two-person issue
        self._busy: set[str] = set()  # stations deciding a card right now
        self._links: dict[str, str | None] = {}  # device id -> link as last seen
        # Weapon compartments opened from the socket: slot -> first armourer's request.
        self._api_waiting: dict[Slot, tuple[str, float, int]] = {}
        self._break_glass: tuple[float, str, str] | None = None  # (until, second, first)
        self.lockdown: dict[str, Any] | None = None  # headquarters' armoury lockdown
        self.last_command = ""  # ``issued`` of the last headquarters command applied
        self.last_command_id = ""  # and its id: its retained copy is not a replay
        self._break_glass_waiting: tuple[str, float, int] | None = None

    # ------------------------------------------------------------------ start-up

    async def start(self, config_path: str = "") -> None:
        records = await asyncio.to_thread(self._trail)
        self._replay(records)  # holdings, open sessions, headquarters' lockdown
        if not self.stations:
            return
        if self.cfg.entitlements.badge_key:
            path = self.config_dir / self.cfg.entitlements.badge_key
            try:
                self.badge_key = await asyncio.to_thread(load_badge_key, path)
            except EntitlementError as exc:
                raise ConfigError(config_path or "<site config>",
                                  [f"{config_path or '<site config>'}: entitlements.badge_key"
                                   f": {exc}"]) from exc
        self.registry.on_credential(self._on_credential)
        self.rt.spawn(self._follow(self.rt.hub.subscribe()), "custody:events")
        self.rt.spawn(self._timers(), "custody:timers")
        log.info("custody: %d station(s), %d item(s) out, %d session(s) open",
                 len(self.stations), len(self.holdings), len(self.sessions))

    def _trail(self) -> list[AuditRecord]:
        found: list[AuditRecord] = []
        for action in (Action.CUSTODY_OPENED, Action.CUSTODY_CLOSED, Action.ISSUE_GRANTED,
                       Action.RETURN_GRANTED, Action.ISSUE_ABANDONED, Action.HQ_COMMAND):
            found.extend(self.rt.audit.iter_query(Query(action=action.value, limit=None)))
        found.sort(key=lambda r: int(r["seq"]))
        return found

    def _replay(self, records: list[AuditRecord]) -> None:
        """Holdings and open sessions as the trail says they are."""
        now = time.monotonic()
        for r in records:
            slot = (str(r.get("device")), int(r.get("compartment") or 0))
            d = r.get("details") or {}
            if r["action"] == Action.CUSTODY_OPENED:
                self.sessions.pop(slot, None)
                self.holdings[slot] = Holding(
                    officer=str(d.get("officer")), name=str(d.get("name", "")),
                    equipment=str(d.get("equipment")), station=str(d.get("station")),
                    device=slot[0], compartment=slot[1], item=r.get("item"),
                    since=_epoch(r["ts"]), due=float(d.get("due", 0)), seq=int(r["seq"]))
            elif r["action"] == Action.CUSTODY_CLOSED:
                self.sessions.pop(slot, None)
                held = self.holdings.get(slot)
                if held is not None and held.seq == int(d.get("opened_seq", held.seq)):
                    del self.holdings[slot]
            elif r["action"] in (Action.ISSUE_GRANTED, Action.RETURN_GRANTED):
                # Still open unless a later record closed it: the agent may have stopped
                # between the door opening and the item moving.
                self.sessions[slot] = Session(
                    kind="issue" if r["action"] == Action.ISSUE_GRANTED else "return",
                    officer=str(d.get("officer")), name=str(d.get("name", "")),
                    equipment=str(d.get("equipment")), station=str(d.get("station")),
                    device=slot[0], compartment=slot[1], seq=int(r["seq"]),
                    deadline=now + self.cfg.custody.take_s,
                    due=float(d["due"]) if d.get("due") else None, restored=True)
            elif r["action"] == Action.ISSUE_ABANDONED:
                self.sessions.pop(slot, None)
            elif r["action"] == Action.HQ_COMMAND and r.get("outcome") == "applied":
                self._apply_command(d)

    # ------------------------------------------------------------------ reads

    def view(self) -> dict[str, Any]:
        now = time.time()
        out = sorted((h.to_json() for h in self.holdings.values()),
                     key=lambda h: (h["due"] > now, h["due"]))
        return {"holdings": out,
                "sessions": [s.to_json() for s in self.sessions.values()],
                "waiting": [{"station": w.station, "officer": w.officer,
                             "equipment": w.equipment} for w in self.waiting.values()],
                "classes": sorted({sl.equipment for st in self.cfg.stations
                                   for sl in st.slots})}

    def person(self, officer_id: str) -> dict[str, Any] | None:
        """One officer as the snapshot in force knows them (never their badges) and
        what they hold now; None if neither knows them."""
        store = self._entitlements()
        snap, stale = store.in_force() if store is not None else (None, True)
        officer = snap.officers.get(officer_id) if snap is not None else None
        holdings = sorted((h.to_json() for h in self.holdings.values()
                           if h.officer == officer_id), key=lambda h: h["due"])
        if officer is None and not holdings:
            return None
        today = dt.date.today().isoformat()
        quals = {str(k): {"until": str(v), "valid": str(v) >= today}
                 for k, v in sorted((officer or {}).get("qualifications", {}).items())}
        return {"officer": officer_id,
                "name": str((officer or {}).get("name") or
                            (holdings[0]["name"] if holdings else "")),
                "in_snapshot": officer is not None,
                "roles": list((officer or {}).get("roles", [])),
                "qualifications": quals, "snapshot": snap.id if snap else None,
                "stale_entitlements": stale, "holdings": holdings}

    def deployable(self, equipment: str) -> dict[str, Any]:
        """Officers who could be issued ``equipment`` now (a valid qualification, under
        their limit, current entitlements where the class needs them) and how many items
        of it are available at which station."""
        pol = self.cfg.equipment_policy(equipment)
        available: dict[str, int] = {}
        for st in self.cfg.stations:
            n = sum(1 for slot in self._slots_of(st, equipment)
                    if (c := self._compartment(slot)) is not None and c["item"] == "present"
                    and slot not in self.sessions)
            if n:
                available[st.id] = n
        store = self._entitlements()
        snap, stale = store.in_force() if store is not None else (None, True)
        officers = []
        if snap is not None and not (stale and pol.when_stale == "refuse"):
            today = dt.date.today().isoformat()
            for o in sorted(snap.officers.values(), key=lambda o: str(o["id"])):
                until = o.get("qualifications", {}).get(pol.qualification) \
                    if pol.qualification else None
                if pol.qualification and (until is None or until < today):
                    continue
                held = sum(1 for h in self.holdings.values()
                           if h.officer == o["id"] and h.equipment == equipment)
                if held >= pol.limit:
                    continue
                officers.append({"officer": o["id"], "name": o.get("name", ""),
                                 "qualified_until": until, "holds": held})
        return {"equipment": equipment, "available": available,
                "stale_entitlements": stale, "officers": officers if available else [],
                "qualified_but_nothing_available": len(officers) if not available else 0}

    # ------------------------------------------------------------------ headquarters

    def _apply_command(self, cmd: dict[str, Any]) -> None:
        self.last_command = str(cmd.get("issued", ""))
        self.last_command_id = str(cmd.get("id", ""))
        if cmd.get("kind") == "lockdown":
            self.lockdown = {"reason": cmd.get("reason"), "id": cmd.get("id"),
                             "issued": cmd.get("issued")}
            self.rt.alarms.raise_(Alarm("custody:lockdown", "critical",
                                        f"armoury issue locked down by headquarters "
                                        f"({cmd.get('reason')})"))
        else:
            self.lockdown = None
            self.rt.alarms.clear("custody:lockdown")

    async def command(self, doc: Any, trusted: dict[str, Any], *, source: str) -> None:
        """A signed headquarters command: verified (key, site, age, not a replay), applied
        and audited; anything else is refused and audited. It can only stop issue: no
        command from anywhere opens a compartment."""
        inner = doc.get("command") if isinstance(doc, dict) else None
        if self.last_command_id and isinstance(inner, dict) \
                and inner.get("id") == self.last_command_id:
            return  # the command in force, again (headquarters publishes it retained)
        try:
            cmd = verify_command(doc, trusted, self.cfg.site.id, after=self.last_command)
        except EntitlementError as exc:
            await self.rt.record(Action.HQ_COMMAND, actor=source, outcome="refused",
                                 reason=str(exc))
            raise
        # Durable first: the trail is what a restart rebuilds the lockdown from.
        await self.rt.record(Action.HQ_COMMAND, actor=source, outcome="applied",
                             reason=str(cmd.get("reason")), details=cmd)
        self._apply_command(cmd)

    def _locked(self, equipment: str) -> str | None:
        if self.lockdown is not None and equipment in WEAPON_CLASSES:
            return (f"armoury issue is locked down by headquarters "
                    f"({self.lockdown['reason']})")
        return None

    # ------------------------------------------------------------------ break-glass

    def break_glass_active(self) -> bool:
        return self._break_glass is not None and time.monotonic() < self._break_glass[0]

    async def break_glass(self, *, actor: str, roles: frozenset[str], reason: str,
                          minutes: float) -> dict[str, Any]:
        """Two armourers and a reason: for ``minutes`` (at most 60), entitlements that
        are stale or missing no longer refuse issues the snapshot can still identify the
        officer for (qualifications are still checked against it). Audited both ways."""
        if ARMOURER not in roles:
            raise AccessDenied(f"break-glass needs the {ARMOURER} role", ARMOURER)
        if not 0 < minutes <= 60:
            raise AccessDenied("break-glass lasts between 1 and 60 minutes", ARMOURER)
        now = time.monotonic()
        first = self._break_glass_waiting
        if first is None or now >= first[1] or first[0] == actor:
            if first is not None and now < first[1] and first[0] == actor:
                raise AccessDenied("waiting for a second armourer: the second person must be "
                                   "someone else", ARMOURER)
            rec = await self.rt.record(Action.ISSUE_WAITING, actor=actor, reason=reason,
                                       details={"via": "socket", "break_glass": minutes})
            self._break_glass_waiting = (actor, now + self.cfg.custody.second_person_s,
                                         int(rec["seq"]))
            return {"audit_seq": rec["seq"], "waiting": "break-glass: a second armourer must "
                    f"make the same call within {self.cfg.custody.second_person_s:g} s"}
        self._break_glass_waiting = None
        # Audited before it takes effect: no permissive state without its record.
        rec = await self.rt.record(Action.BREAK_GLASS, actor=actor, reason=reason,
                                   outcome="on", details={"first": first[0],
                                                          "minutes": minutes})
        until = time.monotonic() + minutes * 60
        self._break_glass = (until, actor, first[0])
        self.rt.alarms.raise_(Alarm("custody:break-glass", "critical",
                                    f"break-glass on for {minutes:g} min ({first[0]} and "
                                    f"{actor}: {reason}): stale entitlements do not refuse"))
        self.rt.spawn(self._break_glass_ends(until), "custody:break-glass")
        return {"audit_seq": rec["seq"], "until_s": minutes * 60}

    async def _break_glass_ends(self, until: float) -> None:
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        if self._break_glass is not None and self._break_glass[0] == until:
            self._break_glass = None
            self.rt.alarms.clear("custody:break-glass")
            await self.rt.record(Action.BREAK_GLASS, actor="agent", outcome="off",
                                 reason="break-glass time is up")

    # ------------------------------------------------------------------ the socket

    async def gate(self, device: str, compartment: int, *, actor: str, roles: frozenset[str],
                   reason: str) -> dict[str, Any] | None:
        """A technician open of a weapon compartment (API, CLI, dashboard): it needs the
        armourer role, and a second, different armourer making the same call within
        ``second_person_s``. Returns the waiting answer for the first call, None to go on."""
        slot = (device, compartment)
        served = self.slots.get(slot)
        if served is None or served[1] not in WEAPON_CLASSES:
            if "technician" not in roles:
                raise AccessDenied(f"opening {device} compartment {compartment} needs the "
                                   "technician role", "technician")
            return None
        equipment = served[1]
        if (locked := self._locked(equipment)) is not None:
            raise AccessDenied(locked, ARMOURER)
        if ARMOURER not in roles:
            raise AccessDenied(f"{device} compartment {compartment} holds a {equipment}: "
                               f"opening it needs the {ARMOURER} role (and a second one)",
                               ARMOURER)
        now = time.monotonic()
        first = self._api_waiting.get(slot)
        if first is not None and now < first[1]:
            if first[0] == actor:
                raise AccessDenied("waiting for a second armourer: the second person must be "
                                   "someone else", ARMOURER)
            del self._api_waiting[slot]
            await self.rt.record(Action.SECOND_PERSON, actor=actor, device=device,
                                 compartment=compartment, reason=reason,
                                 details={"first": first[0], "waiting_seq": first[2],
                                          "via": "socket", "equipment": equipment})
            return None
        window = self.cfg.custody.second_person_s
        rec = await self.rt.record(Action.ISSUE_WAITING, actor=actor, device=device,
                                   compartment=compartment, reason=reason,
                                   details={"via": "socket", "equipment": equipment})
        self._api_waiting[slot] = (actor, now + window, int(rec["seq"]))
        return {"device": device, "compartment": compartment, "audit_seq": rec["seq"],
                "waiting": f"{equipment}: nothing opened yet; a second armourer must make "
                           f"the same call within {window:g} s"}

    # ------------------------------------------------------------------ cards

    def _on_credential(self, reader: str, read: CredentialRead) -> None:
        station = self.stations.get(reader)
        if station is None:
            log.warning("card at reader %s, which no station uses", reader)
            return
        self.rt.spawn(self._decide(station, read), f"custody:card:{station.id}")

    async def _signal(self, station: Station, signal: Signal) -> None:
        try:
            dev = self.registry.device(station.reader)
        except EdgeAgentError:
            return
        sup = dev.supervisor
        if sup is None or "indicate" not in driver_capabilities(sup.driver):
            return
        try:
            await asyncio.wait_for(sup.driver.indicate(signal),  # type: ignore[attr-defined]
                                   self.rt.timing.call_timeout)
        except (EdgeAgentError, TimeoutError) as exc:
            log.warning("reader %s: could not show %s: %s", station.reader, signal, exc)

    async def _refuse(self, station: Station, why: str, officer: dict[str, Any] | None,
                      equipment: str | None = None) -> None:
        await self.rt.record(Action.ISSUE_REFUSED, actor=_actor(officer), reason=why,
                             details={"station": station.id, "equipment": equipment,
                                      "officer": officer["id"] if officer else None})
        await self._signal(station, Signal.REFUSED)

    async def _decide(self, station: Station, read: CredentialRead) -> None:
        if station.id in self._busy:
            return  # a second swipe while the first is being decided: ignore it
        self._busy.add(station.id)
        try:
            await self._decide_card(station, read)
        except Refused as exc:
            await self._refuse(station, str(exc), exc.officer, exc.equipment)
        finally:
            self._busy.discard(station.id)

    def _identify(self, read: CredentialRead) -> tuple[dict[str, Any], bool, dt.datetime]:
        store = self._entitlements()
        if self.badge_key is None:
            raise Refused("no badge key on this box ([entitlements] badge_key)")
        snap, stale = store.in_force() if store is not None else (None, True)
        if snap is None:
            why = store.problem if store is not None else "no entitlements configured"
            raise Refused(f"cannot identify anyone: {why}")
        oid = snap.by_badge.get(badge_hash(self.badge_key, read.card))
        if oid is None:
            raise Refused("unknown card")
        return snap.officers[oid], stale, snap.expires

    async def _decide_card(self, station: Station, read: CredentialRead) -> None:
        officer, stale, expires = self._identify(read)
        waiting = self.waiting.get(station.id)
        if waiting is not None and time.monotonic() < waiting.deadline:
            await self._second_person(station, waiting, officer, stale)
            return
        # What the officer holds here is coming back, unless the keypad chose another
        # class (a radio out, a phone wanted).
        chosen = self._keyed(station, read.keys)
        held = [h for h in self.holdings.values() if h.officer == officer["id"]
                and self.slots.get((h.device, h.compartment), ("", ""))[0] == station.id
                and (chosen is None or h.equipment == chosen)]
        if held:
            await self._return(station, officer, held[0])
            return
        equipment = chosen or self._choose(station, read.keys, officer)

        def refused(why: str) -> Refused:
            return Refused(why, officer, equipment)

        pol = self.cfg.equipment_policy(equipment)
        if (locked := self._locked(equipment)) is not None:
            raise refused(locked)
        if stale and pol.when_stale == "refuse" and not self.break_glass_active():
            raise refused(f"entitlements are not current (expired "
                             f"{expires.date().isoformat()}): {equipment} is not issued")
        if pol.qualification:
            until = officer.get("qualifications", {}).get(pol.qualification)
            if until is None:
                raise refused(f"no {pol.qualification} qualification")
            if dt.date.fromisoformat(until) < dt.date.today():
                raise refused(f"{pol.qualification} qualification expired on {until}")
        holding = sum(1 for h in self.holdings.values()
                      if h.officer == officer["id"] and h.equipment == equipment)
        if holding >= pol.limit:
            raise refused(f"limit reached: already holds {holding} {equipment}")
        slot = self._available(station, equipment)
        if slot is None:
            raise refused(f"no {equipment} available at {station.id}")
        if pol.two_person:
            rec = await self.rt.record(
                Action.ISSUE_WAITING, actor=_actor(officer), device=slot[0],
                compartment=slot[1], details={"station": station.id, "equipment": equipment,
                                              "officer": officer["id"]})
            self.waiting[station.id] = Waiting(
                officer["id"], str(officer.get("name", "")), equipment, station.id,
                time.monotonic() + self.cfg.custody.second_person_s, int(rec["seq"]))
            await self._signal(station, Signal.WAITING)
            return
        await self._grant(station, officer, equipment, slot, second=None)

    async def _second_person(self, station: Station, waiting: Waiting,
                             second: dict[str, Any], stale: bool) -> None:
        first = waiting.officer

        def refused(why: str) -> Refused:
            return Refused(why, second, waiting.equipment)

        if second["id"] == first:
            raise refused("the second person must be someone else")
        if ARMOURER not in second.get("roles", []):
            raise refused(f"the second person needs the {ARMOURER} role")
        if stale and not self.break_glass_active():
            raise refused("entitlements are not current: no two-person issue")
        del self.waiting[station.id]
        await self.rt.record(Action.SECOND_PERSON, actor=_actor(second),
                             details={"station": station.id, "first": first,
                                      "waiting_seq": waiting.seq,
                                      "equipment": waiting.equipment})
        store = self._entitlements()
        snap, _ = store.in_force() if store is not None else (None, True)
        officer = snap.officers.get(first) if snap is not None else None
        slot = self._available(station, waiting.equipment)
        if officer is None or slot is None:
            raise refused(f"no {waiting.equipment} available at {station.id}")
        await self._grant(station, officer, waiting.equipment, slot, second=second["id"])

    def _keyed(self, station: Station, keys: str) -> str | None:
        by_digit = self.keypad.get(station.id, {})
        return next((by_digit[d] for d in reversed(keys) if d in by_digit), None)

    def _choose(self, station: Station, keys: str, officer: dict[str, Any]) -> str:
        classes = sorted({g.equipment for g in station.slots})
        if len(classes) == 1:
            return classes[0]
        by_digit = self.keypad.get(station.id, {})
        for digit in reversed(keys):
            if digit in by_digit:
                return by_digit[digit]
        menu = ", ".join(f"{d} {c}" for d, c in sorted(by_digit.items()))
        raise Refused(f"choose the equipment on the keypad first ({menu})", officer)

    def _slots_of(self, station: Station, equipment: str) -> list[Slot]:
        return [s for s, (sid, cls) in self.slots.items()
                if sid == station.id and cls == equipment]

    def _compartment(self, slot: Slot) -> dict[str, Any] | None:
        try:
            dev = self.registry.device(slot[0])
        except EdgeAgentError:
            return None
        if dev.link not in ("online", "degraded") or str(slot[1]) in dev.out_of_service:
            return None
        return next((c for c in dev.compartments if c["index"] == slot[1]), None)

    def _available(self, station: Station, equipment: str) -> Slot | None:
        for slot in self._slots_of(station, equipment):
            c = self._compartment(slot)
            if c is not None and c["item"] == "present" and c["door"] == "closed" \
                    and not c.get("fault") and slot not in self.sessions:
                return slot
        return None

    def _empty(self, station: Station, holding: Holding) -> Slot | None:
        home = (holding.device, holding.compartment)
        for slot in [home, *self._slots_of(station, holding.equipment)]:
            c = self._compartment(slot)
            if c is None or c["item"] != "absent" or slot in self.sessions:
                continue
            if slot == home or (c["door"] == "closed" and slot not in self.holdings):
                return slot  # its own compartment, even if its door was left open
        return None

    async def _grant(self, station: Station, officer: dict[str, Any], equipment: str,
                     slot: Slot, *, second: str | None) -> None:
        pol = self.cfg.equipment_policy(equipment)
        due = time.time() + pol.due_hours * 3600
        rec = await self.rt.record(
            Action.ISSUE_GRANTED, actor=_actor(officer), device=slot[0], compartment=slot[1],
            details={"station": station.id, "equipment": equipment, "officer": officer["id"],
                     "name": officer.get("name", ""), "due": due, "second_person": second})
        self.sessions[slot] = Session(
            "issue", officer["id"], str(officer.get("name", "")), equipment, station.id,
            slot[0], slot[1], int(rec["seq"]), time.monotonic() + self.cfg.custody.take_s,
            due=due, second=second)
        await self._open(station, officer, slot, f"issue {equipment} at {station.id}")

    async def _return(self, station: Station, officer: dict[str, Any], held: Holding) -> None:
        slot = self._empty(station, held)
        if slot is None:
            raise Refused(f"no empty {held.equipment} compartment at {station.id} to return "
                          "to", officer, held.equipment)
        rec = await self.rt.record(
            Action.RETURN_GRANTED, actor=_actor(officer), device=slot[0], compartment=slot[1],
            details={"station": station.id, "equipment": held.equipment,
                     "officer": officer["id"], "name": officer.get("name", ""),
                     "opened_seq": held.seq})
        self.sessions[slot] = Session(
            "return", officer["id"], str(officer.get("name", "")), held.equipment, station.id,
            slot[0], slot[1], int(rec["seq"]), time.monotonic() + self.cfg.custody.take_s)
        await self._open(station, officer, slot, f"return {held.equipment} at {station.id}")

    async def _open(self, station: Station, officer: dict[str, Any], slot: Slot,
                    reason: str) -> None:
        try:
            await self.commands.unlock(slot[0], slot[1], actor=_actor(officer), reason=reason)
        except EdgeAgentError as exc:
            self.sessions.pop(slot, None)
            await self.rt.record(Action.ISSUE_ABANDONED, actor=_actor(officer),
                                 device=slot[0], compartment=slot[1],
                                 reason=f"the compartment did not open: {exc}",
                                 details={"station": station.id, "officer": officer["id"]})
            await self._signal(station, Signal.REFUSED)
            return
        await self._signal(station, Signal.GRANTED)

    # ------------------------------------------------------------------ what devices do

    async def _follow(self, sub: Any) -> None:
        while True:
            kind, data = await sub.queue.get()
            if kind == "audit" and data.get("device") is not None:
                try:
                    await self._observe(data)
                except EdgeAgentError as exc:
                    log.error("custody: %s", exc)
            elif kind == "device":
                was = self._links.get(data["id"])
                self._links[data["id"]] = data.get("link")
                if data.get("link") == "online" and was != "online":
                    await self._catch_up(data)  # back (or first seen) since we last looked

    async def _observe(self, rec: dict[str, Any]) -> None:
        slot = (str(rec["device"]), int(rec.get("compartment") or 0))
        if slot not in self.slots:
            return
        action = rec["action"]
        session = self.sessions.get(slot)
        if session is not None and int(rec.get("seq") or 0) < session.seq:
            session = None  # what happened before this compartment was opened for them
        if action == Action.ITEM_REMOVED:
            if session is not None and session.kind == "issue":
                await self._opened(session, rec.get("item"), "taken (opened for them before "
                                   "the agent restarted)" if session.restored else "taken")
            elif slot not in self.holdings:  # (booked already when the device came back)
                await self._unauthorised(slot, rec)
        elif action == Action.ITEM_RETURNED:
            if session is not None and session.kind == "return":
                await self._closed(session, slot, rec.get("item"))
            elif slot in self.holdings:
                await self._closed(None, slot, rec.get("item"))
            self.rt.alarms.clear(f"custody:removal:{slot[0]}/{slot[1]}")
        elif action == Action.DOOR_CLOSED and session is not None:
            await self._abandon(session, "the door closed with nothing "
                                + ("taken" if session.kind == "issue" else "returned"))

    async def _catch_up(self, device: dict[str, Any]) -> None:
        """After the agent (or the device) was away: an item that left a compartment opened
        for someone while nobody watched is theirs."""
        for c in device.get("compartments") or []:
            slot = (str(device["id"]), int(c["index"]))
            session = self.sessions.get(slot)
            if session is None:
                continue
            if session.kind == "issue" and c["item"] == "absent":
                await self._opened(session, c.get("tag"), "taken while the agent was away")
            elif session.kind == "return" and c["item"] == "present":
                await self._closed(session, slot, c.get("tag"))

    async def _opened(self, s: Session, item: str | None, how: str) -> None:
        slot = (s.device, s.compartment)
        self.sessions.pop(slot, None)
        due = s.due or time.time() + self.cfg.equipment_policy(s.equipment).due_hours * 3600
        rec = await self.rt.record(
            Action.CUSTODY_OPENED, actor=f"officer:{s.officer}", device=s.device,
            compartment=s.compartment, item=item, reason=how,
            details={"officer": s.officer, "name": s.name, "equipment": s.equipment,
                     "station": s.station, "due": due, "granted_seq": s.seq,
                     "second_person": s.second})
        self.holdings[slot] = Holding(s.officer, s.name, s.equipment, s.station, s.device,
                                      s.compartment, item, time.time(), due, int(rec["seq"]))

    async def _closed(self, s: Session | None, slot: Slot, item: str | None) -> None:
        held = self.holdings.pop(slot, None)
        if s is not None:
            self.sessions.pop(slot, None)
            if held is None:  # returned to another compartment than its home
                held = next((h for k, h in list(self.holdings.items())
                             if h.officer == s.officer and h.equipment == s.equipment), None)
                if held is not None:
                    self.holdings.pop((held.device, held.compartment), None)
        if held is None:
            return
        by = s.officer if s is not None else None
        late = time.time() > held.due
        await self.rt.record(
            Action.CUSTODY_CLOSED, actor=f"officer:{by}" if by else "agent",
            device=slot[0], compartment=slot[1], item=item,
            reason=("returned by the holder" if by == held.officer else
                    f"returned by {by}, not the holder {held.officer}" if by else
                    "placed back without a card at the reader"),
            outcome="late" if late else "ok",
            details={"holder": held.officer, "returned_by": by, "equipment": held.equipment,
                     "opened_seq": held.seq, "home": [held.device, held.compartment],
                     "due": held.due})
        for level in ("warning", "critical"):
            self.rt.alarms.clear(f"custody:overdue:{held.seq}:{level}")

    async def _unauthorised(self, slot: Slot, rec: dict[str, Any]) -> None:
        station, equipment = self.slots[slot]
        msg = (f"{equipment} left {slot[0]} compartment {slot[1]} at {station} with no issue "
               "open for it")
        await self.rt.record(Action.UNAUTHORISED_REMOVAL, device=slot[0], compartment=slot[1],
                             item=rec.get("item"), reason=msg,
                             details={"station": station, "equipment": equipment,
                                      "removal_seq": rec.get("seq")})
        self.rt.alarms.raise_(Alarm(f"custody:removal:{slot[0]}/{slot[1]}", "critical", msg,
                                    device=slot[0], code="unauthorised_removal",
                                    compartment=slot[1]))

    async def _abandon(self, s: Session, why: str) -> None:
        self.sessions.pop((s.device, s.compartment), None)
        await self.rt.record(Action.ISSUE_ABANDONED, actor=f"officer:{s.officer}",
                             device=s.device, compartment=s.compartment, reason=why,
                             details={"station": s.station, "kind": s.kind,
                                      "officer": s.officer, "granted_seq": s.seq})

    # ------------------------------------------------------------------ timers

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now_m, now = time.monotonic(), time.time()
            for station_id, w in list(self.waiting.items()):
                if now_m >= w.deadline:
                    del self.waiting[station_id]
                    station = next(s for s in self.stations.values() if s.id == station_id)
                    await self._refuse(station, "no second person within "
                                       f"{self.cfg.custody.second_person_s:g} s",
                                       {"id": w.officer}, w.equipment)
            for s in list(self.sessions.values()):
                if now_m >= s.deadline:
                    c = self._compartment((s.device, s.compartment))
                    if c is None or c["door"] != "open":
                        await self._abandon(s, f"nothing moved within "
                                               f"{self.cfg.custody.take_s:g} s")
            for h in list(self.holdings.values()):
                await self._overdue(h, now)

    async def _overdue(self, h: Holding, now: float) -> None:
        grace = self.cfg.equipment_policy(h.equipment).overdue_grace_hours * 3600
        level = "critical" if now >= h.due + grace else "warning" if now >= h.due else ""
        if not level or level == h.overdue:
            return
        h.overdue = level
        msg = (f"{h.equipment} held by {h.officer} ({h.name}) was due back "
               f"{dt.datetime.fromtimestamp(h.due, dt.UTC).isoformat(timespec='minutes')}")
        await self.rt.record(Action.CUSTODY_OVERDUE, actor="agent", device=h.device,
                             compartment=h.compartment, item=h.item, reason=msg,
                             outcome=level, details={"holder": h.officer,
                                                     "opened_seq": h.seq, "due": h.due})
        self.rt.alarms.raise_(Alarm(f"custody:overdue:{h.seq}:{level}", level, msg,
                                    device=h.device, code="custody_overdue",
                                    compartment=h.compartment))


def _actor(officer: dict[str, Any] | None) -> str:
    return f"officer:{officer['id']}" if officer else "card:unknown"


__all__ = ["CustodyService", "EntitlementError", "Holding", "Session"]

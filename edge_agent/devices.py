"""The device registry: what was found, what is trusted, and each device's supervision.

Discovery offers candidates here (:meth:`DeviceRegistry.offer`); a technician adopts or
ignores them (decisions, see :mod:`edge_agent.decisions`); an adopted device gets a
driver from its plugin and a :class:`~edge_agent.supervisor.DeviceSupervisor`, whose
link changes and readings come back here as audit records, alarms and store writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from edge_agent import decisions
from edge_agent.actions import Action
from edge_agent.alarms import Alarm
from edge_agent.bus import SerialBus
from edge_agent.config import WEAPON_CLASSES
from edge_agent.contract import (
    DEVICE_CLASSES,
    Candidate,
    CompartmentState,
    CredentialRead,
    DeviceDriver,
    DeviceInfo,
    DeviceState,
    DriverContext,
    PushChannel,
    diagnostic_rows,
    driver_capabilities,
)
from edge_agent.errors import (
    AccessDenied,
    DeviceTimeout,
    DeviceUnavailable,
    DriverError,
    IdentityMismatch,
    PluginError,
)
from edge_agent.inbox import InboxItem
from edge_agent.pinning import Pins, mismatch, presented, short
from edge_agent.runtime import Runtime
from edge_agent.supervisor import DeviceSupervisor, Link

if TYPE_CHECKING:
    from edge_agent.discovery.claims import AddressClaims

log = logging.getLogger(__name__)


def comp_json(c: CompartmentState) -> dict[str, Any]:
    return {"index": c.index, "door": c.door.value, "item": c.item.value, "fault": c.fault,
            "tag": c.tag}


class Device:
    """Registry entry plus live supervision of one device."""

    def __init__(self, candidate: Candidate, now: float) -> None:
        self.id = candidate.identity
        self.candidate = candidate
        self.first_seen = now
        self.last_seen = now
        self.adopted = False
        self.ignored: str | None = None
        self.supervisor: DeviceSupervisor | None = None
        self.task: asyncio.Task[None] | None = None
        self.error: str = ""
        self.compartments: list[dict[str, Any]] = []
        self.bus: SerialBus | None = None
        self.out_of_service: dict[str, dict[str, Any]] = {}  # compartment -> why/who
        self.alarms: dict[str, Alarm] = {}  # DeviceAlarm.key -> alarm as shown
        # Addresses this device really had / claimed while it was gone / in conflict.
        self.known: dict[str, tuple[Candidate, SerialBus | None]] = {}
        self.unproven: dict[str, tuple[Candidate, SerialBus | None]] = {}
        self.conflicts: set[str] = set()
        self.pins: Pins | None = None  # what was adopted (edge_agent.pinning)
        self.presented: dict[str, Any] | None = None  # what it presented when identified
        self._identifying = False

    @property
    def link(self) -> str:
        if self.supervisor is not None:
            return self.supervisor.status.link.value
        if self.ignored:
            return "ignored"
        return "error" if self.error else "discovered"

    def registry_doc(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "id": self.id, "plugin": c.plugin, "vendor": c.vendor, "model": c.model,
            "source": c.source, "address": c.address, "bus_id": c.bus_id,
            "properties": dict(c.properties), "first_seen": self.first_seen,
            "last_seen": self.last_seen, "adopted": self.adopted, "ignored": self.ignored,
            "out_of_service": self.out_of_service, "device_class": c.device_class,
            "pins": self.pins.to_json() if self.pins is not None else None,
        }

    def to_json(self) -> dict[str, Any]:
        doc = self.registry_doc()
        answered = self.supervisor.status.last_answer if self.supervisor else None
        if answered is not None and answered > doc["last_seen"]:
            doc["last_seen"] = answered  # "seen" is the last answer, not the discovery
        doc["link"] = self.link
        doc["error"] = self.error
        doc["presented"] = self.presented
        doc["compartments"] = self.compartments
        doc["alarms"] = [a.to_json() for a in self.alarms.values()]
        doc["capabilities"] = sorted(driver_capabilities(self.supervisor.driver)) \
            if self.supervisor is not None else []
        if self.supervisor is not None:
            sup = self.supervisor.to_json()
            doc["since"] = sup["since"]
            doc["reason"] = sup["reason"]
            doc["counters"] = sup["counters"]
            info = self.supervisor.status.info
            doc["info"] = asdict(info) if info else None
            state = self.supervisor.status.state
            doc["diagnostics"] = [
                {"label": label, "value": value, "source": source}
                for source, details in (("device", info.details if info else {}),
                                        ("reading", state.details if state else {}))
                for label, value in diagnostic_rows(details)]
        return doc


class DeviceRegistry:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.devices: dict[str, Device] = {}
        self.inbox: dict[str, InboxItem] = {}
        self.ignored: dict[str, dict[str, Any]] = {}
        self.claims: AddressClaims | None = None
        self._saved: dict[str, dict[str, Any]] = {}
        self._saved_comps: dict[str, list[dict[str, Any]]] = {}
        self._credential_listeners: list[Callable[[str, CredentialRead], None]] = []
        # Re-adoptions of armoury devices waiting for a second person: id -> first's call.
        self._adopt_waiting: dict[str, tuple[str, float, int]] = {}

    # ------------------------------------------------------------------ start-up

    async def load(self) -> decisions.Replayed:
        """Read the registry and replay the decisions it had not taken from the trail."""
        rt = self.rt
        devices, comps = await rt.store.load()
        self.ignored = {d["id"]: d for d in await rt.store.load_ignored()}
        self._saved = {d["id"]: d for d in devices}
        self._saved_comps = comps
        meta = await rt.store.load_meta(decisions.WATERMARK)
        watermark = int(meta["seq"]) if meta else 0
        records = await asyncio.to_thread(decisions.since, rt.audit, watermark)
        replayed = decisions.apply(records, self._saved, self.ignored)
        replayed.after_seq = watermark
        return replayed

    async def write_back(self, replayed: decisions.Replayed) -> None:
        """Audit a replay and write what it changed back before the watermark moves."""
        if not replayed.count:
            return
        log.warning("registry: %d decision(s) after #%d replayed from the audit trail",
                    replayed.count, replayed.after_seq)
        await self.rt.record(Action.DECISIONS_REPLAYED, details={
            "after_seq": replayed.after_seq, "through_seq": replayed.last_seq,
            "decisions": replayed.count, "devices": sorted(replayed.devices or ())})
        for dev_id in sorted(replayed.devices or ()):
            self.rt.store.save_device(self._saved[dev_id])
        for ig in self.ignored.values():
            self.rt.store.save_ignored(ig)
        self.save_watermark(replayed.last_seq)

    def restore_ignored(self) -> None:
        """Devices a technician ignored stay known (and ignored) before they reappear."""
        for saved in self._saved.values():
            if saved.get("ignored") and "plugin" in saved:
                cand = Candidate(
                    identity=saved["id"], plugin=saved["plugin"], source=saved["source"],
                    vendor=saved["vendor"], model=saved["model"], address=saved["address"],
                    bus_id=saved.get("bus_id"), properties=saved.get("properties", {}))
                dev = Device(cand, saved.get("first_seen", time.time()))
                dev.ignored = saved["ignored"]
                self.devices[dev.id] = dev

    def save_watermark(self, seq: int) -> None:
        """With the registry changes queued before it: they land in one atomic write."""
        self.rt.store.save_meta({"id": decisions.WATERMARK, "seq": seq})

    # ------------------------------------------------------------------ offers

    def changed(self, dev: Device) -> None:
        self.rt.hub.publish("device", dev.to_json())

    async def offer(self, cand: Candidate, *, bus: SerialBus | None = None) -> Device:
        """Take a discovered candidate: register it, and supervise it if adopted."""
        now = time.time()
        dev = self.devices.get(cand.identity)
        if dev is not None:
            if dev.candidate.address != cand.address:
                # Anyone on the LAN can claim any identity: never a move on its word.
                if self.claims is not None:
                    self.claims.claim(dev, cand, bus)
                return dev
            dev.last_seen = now
            if dev.supervisor is not None or dev.ignored:
                return dev
        else:
            dev = Device(cand, now)
            saved = self._saved.get(cand.identity)
            if saved:
                dev.first_seen = saved.get("first_seen", now)
                dev.adopted = bool(saved.get("adopted"))
                dev.ignored = saved.get("ignored")
                dev.out_of_service = dict(saved.get("out_of_service") or {})
                dev.compartments = self._saved_comps.get(cand.identity, [])
                dev.pins = Pins.from_json(saved.get("pins"))
            self.devices[dev.id] = dev
            self.rt.record_soon(Action.DEVICE_DISCOVERED, device=dev.id, details={
                "plugin": cand.plugin, "source": cand.source, "address": cand.address,
                "model": cand.model})
        if bus is not None:
            dev.bus = bus
        if not dev.adopted and not dev.ignored and self.auto_adopts(dev):
            dev.adopted = True
        self.rt.store.save_device(dev.registry_doc())
        if not dev.adopted and not dev.ignored and dev.presented is None \
                and not dev._identifying:
            # What identifies it, for the technician to compare with its label.
            dev._identifying = True
            self.rt.spawn(self._identify_for_inbox(dev), f"identify:{dev.id}")
        # Clients see the device the moment it is registered; its link state follows.
        self.changed(dev)
        if dev.adopted:
            await self.supervise(dev, bus)
        return dev

    # ------------------------------------------------------------------ supervision

    def armoury(self, dev: Device) -> bool:
        """Does this device hold weapons (its plugin says so, or a station of the site
        config keeps a firearm or Taser in it)?"""
        if dev.candidate.device_class == "armoury":
            return True
        record = self.rt.plugins.records.get(dev.candidate.plugin)
        if record is not None and record.info is not None \
                and record.info.device_class == "armoury":
            return True
        return any(sl.device == dev.id and sl.equipment in WEAPON_CLASSES
                   for st in self.rt.config.stations for sl in st.slots)

    def auto_adopts(self, dev: Device) -> bool:
        if self.armoury(dev) or dev.candidate.device_class not in DEVICE_CLASSES:
            return False
        return self.rt.config.agent.auto_adopts(dev.candidate.device_class,
                                                dev.candidate.plugin)

    async def create_driver(self, cand: Candidate, bus: SerialBus | None,
                            events: PushChannel | None = None,
                            pins: Pins | None = None) -> DeviceDriver:
        """A driver from the candidate's plugin; raises PluginError with the reason."""
        ctx = DriverContext(settings=self.rt.settings(cand.plugin), bus=bus,
                            timeout=self.rt.timing.call_timeout, events=events,
                            pins=pins.for_driver() if pins is not None else {})
        driver = await self.rt.plugins.call_one(cand.plugin, "edge_agent_create_driver",
                                                candidate=cand, context=ctx)
        if driver is None or not isinstance(driver, DeviceDriver):
            raise PluginError(f"plugin {cand.plugin} returned no usable driver "
                              f"({type(driver).__name__})")
        return driver

    async def identify_device(self, cand: Candidate, bus: SerialBus | None,
                              pins: Pins | None = None) -> DeviceInfo:
        """Connect a fresh driver, read what the device presents, close. Raises
        DriverError (DeviceTimeout when it does not answer) or PluginError."""
        driver = await self.create_driver(cand, bus, None, pins)
        try:
            async with asyncio.timeout(self.rt.timing.call_timeout * 2):
                info = await driver.connect()
        except TimeoutError as exc:
            raise DeviceTimeout(f"{cand.address}: no answer") from exc
        except DriverError:
            raise
        except Exception as exc:  # a driver's own failure, whatever it raises
            raise DriverError(f"{cand.plugin} driver: {exc or type(exc).__name__}") from exc
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(driver.close(), 1)
        if not isinstance(info, DeviceInfo):
            raise PluginError(f"plugin {cand.plugin}: connect returned "
                              f"{type(info).__name__}, not DeviceInfo")
        self._key_installed(cand.identity, info)
        return info

    def _key_installed(self, device_id: str, info: DeviceInfo) -> None:
        if info.key_installed:
            log.warning("device %s: %s", device_id, info.key_installed)
            self.rt.record_soon(Action.DEVICE_KEY_INSTALLED, device=device_id, actor="agent",
                                details={"what": info.key_installed})

    async def _identify_for_inbox(self, dev: Device) -> None:
        try:
            info = await self.identify_device(dev.candidate, dev.bus)
            dev.presented = presented(info)
        except (DriverError, PluginError) as exc:
            dev.presented = {"error": str(exc)}
        finally:
            dev._identifying = False
        self.changed(dev)

    async def supervise(self, dev: Device, bus: SerialBus | None) -> None:
        events = PushChannel()
        try:
            driver = await self.create_driver(dev.candidate, bus, events, dev.pins)
        except PluginError as exc:
            dev.error = str(exc)
            log.error("device %s: %s", dev.id, dev.error)
            return
        dev.error = ""
        sup = DeviceSupervisor(dev.id, dev.candidate.plugin, driver, self.rt.timing,
                               on_link=self._on_link, on_state=self._on_state,
                               on_plugin_fault=self.rt.plugins.isolate,
                               check=self._check_identity)
        dev.supervisor = sup
        # What the device reports on its own, between polls; card reads (contract 1.3)
        # go to whoever listens to readers (the custody service).
        events.connect(sup.pushed, functools.partial(self._credential, dev.id))
        dev.task = self.rt.spawn(sup.run(), f"device:{dev.id}")

    def on_credential(self, listener: Callable[[str, CredentialRead], None]) -> None:
        """Have ``listener(device_id, read)`` called for every card presented at a reader."""
        self._credential_listeners.append(listener)

    def _credential(self, device_id: str, read: CredentialRead) -> None:
        if not self._credential_listeners:
            log.warning("card presented at %s but no station uses that reader", device_id)
        for listener in self._credential_listeners:
            listener(device_id, read)

    def _check_identity(self, sup: DeviceSupervisor, info: DeviceInfo) -> str | None:
        """After each connect, before anything is sent: is this the adopted device?"""
        dev = self.devices[sup.device_id]
        dev.presented = presented(info)
        self._key_installed(dev.id, info)
        if dev.pins is None:
            # Adopted without pins: auto-adopted (the site's auto_adopt allows its class)
            # or adopted before pinning existed. Pinned now, on first contact, and audited.
            dev.pins = self._pins(dev, info)
            self.rt.record_soon(Action.DEVICE_PINNED, device=dev.id, actor="agent",
                                details={"pins": dev.pins.to_json()})
            self.rt.store.save_device(dev.registry_doc())
            if dev.pins.for_driver():
                # A driver that checks pins itself (a TLS fingerprint on every new
                # connection) gets them: this driver was made without.
                self.rt.spawn(self._restart(dev, sup), f"repin:{dev.id}")
            return None
        if dev.pins.identity != dev.id:
            return f"pinned as {dev.pins.identity}"
        return mismatch(dev.pins, info)

    async def _restart(self, dev: Device, sup: DeviceSupervisor) -> None:
        if dev.supervisor is sup:
            sup.stop()
            dev.supervisor = None
            await self.supervise(dev, dev.bus)

    async def _audit_mismatch(self, dev: Device, reason: str) -> None:
        """Audit a block with what the device presents now (a driver that refused the
        connection itself, a TLS pin, returned nothing to show: identified again)."""
        if dev.pins is not None and dev.presented is not None \
                and mismatch(dev.pins, _info(dev.presented)) is None:
            try:
                dev.presented = presented(await self.identify_device(dev.candidate, dev.bus))
            except (DriverError, PluginError) as exc:
                dev.presented = {"error": str(exc)}
        self.rt.record_soon(Action.DEVICE_IDENTITY_MISMATCH, device=dev.id,
                            outcome="blocked", details={
                                "why": reason, "address": dev.candidate.address,
                                "pinned": dev.pins.to_json() if dev.pins else None,
                                "presented": dev.presented})
        self.changed(dev)

    def _pins(self, dev: Device, info: DeviceInfo) -> Pins:
        c = dev.candidate
        return Pins(identity=dev.id, plugin=c.plugin, address=c.address, bus_id=c.bus_id,
                    serial=info.serial, fingerprint=info.fingerprint)

    def _on_link(self, sup: DeviceSupervisor, old: Link, new: Link, reason: str) -> None:
        dev = self.devices[sup.device_id]
        alarm_id = f"identity:{dev.id}"
        if new is Link.BLOCKED:
            self.rt.spawn(self._audit_mismatch(dev, reason), f"mismatch:{dev.id}")
            self.rt.alarms.raise_(Alarm(alarm_id, "critical", f"{dev.id} blocked: {reason}; "
                                        "compare the device with its label, then adopt it "
                                        "again if it is genuine", device=dev.id,
                                        code="identity_mismatch"))
            self.changed(dev)
            return
        if old is Link.BLOCKED:
            self.rt.alarms.clear(alarm_id)
        if new is not Link.CONNECTING:
            self.rt.record_soon(Action(f"device_{new.value}"), device=dev.id,
                                details={"from": old.value, "reason": reason})
        self.changed(dev)

    def _on_state(self, sup: DeviceSupervisor, state: DeviceState) -> None:
        dev = self.devices[sup.device_id]
        new = [comp_json(c) for c in state.compartments]
        old = {c["index"]: c for c in dev.compartments}
        for c in new:
            before = old.get(c["index"])
            if before is None:
                continue
            if before["door"] != c["door"] and c["door"] != "unknown":
                self.rt.record_soon(
                    Action.DOOR_OPENED if c["door"] == "open" else Action.DOOR_CLOSED,
                    device=dev.id, compartment=c["index"], actor=dev.id)
            if before["item"] != c["item"] and c["item"] != "unknown":
                returned = c["item"] == "present"
                # The tag of what was taken is in the reading before; of what came back, now.
                self.rt.record_soon(
                    Action.ITEM_RETURNED if returned else Action.ITEM_REMOVED,
                    device=dev.id, compartment=c["index"],
                    item=c.get("tag") if returned else before.get("tag"), actor=dev.id)
        dev.compartments = new
        dev.last_seen = time.time()
        self.rt.store.save_compartments(dev.id, new)
        self._device_alarms(dev, state)
        self.changed(dev)

    def _device_alarms(self, dev: Device, state: DeviceState) -> None:
        """Raise alarms that appeared in this reading and clear those that went away.
        Each transition is audited once; an unchanged alarm costs nothing."""
        now = time.time()
        seen: set[str] = set()
        for a in state.alarms:
            seen.add(a.key)
            shown = dev.alarms.get(a.key)
            if shown is not None:
                shown.message = f"{dev.id}: {a.message}"  # e.g. a growing "open for N s"
                continue
            dev.alarms[a.key] = Alarm(id=f"device:{dev.id}:{a.key}", device=dev.id,
                                      code=a.code, compartment=a.compartment,
                                      severity=a.severity.value,
                                      message=f"{dev.id}: {a.message}", since=now)
            log.warning("alarm raised on %s: %s", dev.id, a.message)
            self.rt.record_soon(Action.ALARM_RAISED, device=dev.id, compartment=a.compartment,
                                details={"code": a.code, "severity": a.severity.value,
                                         "message": a.message})
        for key in [k for k in dev.alarms if k not in seen]:
            gone = dev.alarms.pop(key)
            log.info("alarm cleared on %s: %s", dev.id, gone.message)
            self.rt.record_soon(Action.ALARM_CLEARED, device=dev.id,
                                compartment=gone.compartment,
                                details={"code": gone.code, "raised": gone.since,
                                         "seconds": round(now - gone.since, 1)})

    # ------------------------------------------------------------------ lookups

    def device(self, device_id: str) -> Device:
        dev = self.devices.get(device_id)
        if dev is None:
            by_lower = {d.lower(): d for d in self.devices}
            close = difflib.get_close_matches(device_id.lower(), list(by_lower), n=1)
            raise DeviceUnavailable(f"no device {device_id!r}" + (
                f"; did you mean {by_lower[close[0]]!r}?" if close else ""))
        return dev

    def inbox_items(self) -> list[InboxItem]:
        """What was found and not adopted, with why; ignored entries are left out."""
        items = [v for k, v in self.inbox.items() if k not in self.ignored]
        for dev in self.devices.values():
            if dev.ignored:
                continue
            what = (f"{dev.candidate.vendor} {dev.candidate.model}".strip() or dev.id) \
                + f" at {dev.candidate.address}" + _identifies(dev.presented)
            if not dev.adopted:
                why = ("an armoury device: a technician compares it with its label and "
                       "adopts it" if self.armoury(dev) else
                       f"not adopted: auto_adopt does not cover {dev.candidate.device_class}"
                       f" devices of plugin {dev.candidate.plugin}")
                items.append(InboxItem(dev.id, what, why, dev.first_seen, dev.id))
            elif dev.link == Link.BLOCKED.value and dev.supervisor is not None:
                items.append(InboxItem(dev.id, what, "blocked: "
                                       + dev.supervisor.status.reason
                                       + ("; re-adopting it takes two people"
                                          if self.armoury(dev) else ""),
                                       dev.supervisor.status.since, dev.id))
            elif dev.error:
                items.append(InboxItem(dev.id, dev.candidate.address, dev.error,
                                       dev.first_seen, dev.id))
        return sorted(items, key=lambda e: e.id)

    # ------------------------------------------------------------------ decisions

    async def adopt(self, item_id: str, *, actor: str, reason: str,
                    expect: dict[str, str] | None = None) -> dict[str, Any]:
        """Adopt a device: read what it presents now and pin it. Re-adopting an armoury
        device that was pinned (another board, a new certificate) takes a second person
        within the custody window. ``expect`` (serial and/or fingerprint, as the label
        says) refuses the adoption if the device presents something else."""
        dev = self.devices.get(item_id)
        if dev is None:
            raise DeviceUnavailable(f"{item_id!r} is not a device that can be adopted")
        try:
            info = await self.identify_device(dev.candidate, dev.bus)
        except (DriverError, PluginError) as exc:
            raise DeviceUnavailable(f"{item_id} cannot be identified now ({exc}); adopt it "
                                    "when it answers, so what it presents can be pinned"
                                    ) from exc
        dev.presented = presented(info)
        for key, want in (expect or {}).items():
            got = dev.presented.get(key)
            if want and (got or "").replace(":", "").lower() != want.replace(":", "").lower():
                raise IdentityMismatch(f"{item_id} presents {key} {got!r}, not {want!r}: "
                                       "not adopted (compare the device with its label)")
        pins = self._pins(dev, info)
        first: str | None = None
        if dev.pins is not None and dev.pins != pins and self.armoury(dev):
            now = time.monotonic()
            waiting = self._adopt_waiting.get(item_id)
            if waiting is None or now >= waiting[1] or waiting[0] == actor:
                if waiting is not None and now < waiting[1]:
                    raise AccessDenied("waiting for a second person: re-adopting an armoury "
                                       "device takes someone else too")
                window = self.rt.config.custody.second_person_s
                rec = await self.rt.record(Action.DEVICE_ADOPT_WAITING, device=item_id,
                                           actor=actor, reason=reason,
                                           details={"pins": pins.to_json(),
                                                    "replaces": dev.pins.to_json()})
                self._adopt_waiting[item_id] = (actor, now + window, int(rec["seq"]))
                return {"id": item_id, "audit_seq": rec["seq"], "presented": dev.presented,
                        "waiting": f"{item_id} is an armoury device pinned as "
                                   f"{dev.pins.describe()}; a second person must adopt it "
                                   f"within {window:g} s to pin {pins.describe()}"}
            first = waiting[0]
            del self._adopt_waiting[item_id]
        details: dict[str, Any] = {"pins": pins.to_json()}
        if dev.pins is not None and dev.pins != pins:
            details["replaces"] = dev.pins.to_json()
        if first is not None:
            details["first"] = first
        rec = await self.rt.record(Action.DEVICE_ADOPTED, device=item_id, actor=actor,
                                   reason=reason, details=details)
        dev.adopted, dev.ignored, dev.pins = True, None, pins
        self.ignored.pop(item_id, None)
        self.rt.alarms.clear(f"identity:{item_id}")
        self.rt.store.save_device(dev.registry_doc())
        self.save_watermark(rec["seq"])
        if dev.supervisor is not None:  # a blocked device: a driver with the new pins
            dev.supervisor.stop()
            dev.supervisor = None
        await self.supervise(dev, dev.bus)
        self.changed(dev)
        return {"id": item_id, "adopted": True, "audit_seq": rec["seq"],
                "pins": pins.to_json()}

    async def unignore(self, item_id: str, *, actor: str, reason: str) -> dict[str, Any]:
        """Take an ignore back: the device (or inbox entry) is shown in the inbox again,
        not adopted; persists across restarts like the ignore did."""
        dev = self.devices.get(item_id)
        if item_id not in self.ignored and (dev is None or not dev.ignored):
            raise DeviceUnavailable(f"{item_id!r} is not ignored (see 'edge-agent inbox')")
        rec = await self.rt.record(Action.DISCOVERY_UNIGNORED, device=item_id, actor=actor,
                                   reason=reason)
        self.ignored.pop(item_id, None)
        self.rt.store.forget_ignored(item_id)
        self.save_watermark(rec["seq"])
        if dev is not None:
            dev.ignored, dev.adopted, dev.presented = None, False, None
            self.rt.store.save_device(dev.registry_doc())
            if not dev._identifying:
                dev._identifying = True
                self.rt.spawn(self._identify_for_inbox(dev), f"identify:{dev.id}")
            self.changed(dev)
        return {"id": item_id, "ignored": False, "audit_seq": rec["seq"]}

    async def ignore(self, item_id: str, *, actor: str, reason: str) -> dict[str, Any]:
        """Ignore a discovered device or inbox entry; persists across restarts."""
        if item_id not in self.devices and item_id not in self.inbox:
            raise DeviceUnavailable(f"nothing called {item_id!r} in the discovery inbox")
        rec = await self.rt.record(Action.DISCOVERY_IGNORED, device=item_id, actor=actor,
                                   reason=reason)
        self.ignored[item_id] = {"id": item_id, "reason": reason, "actor": actor,
                                 "since": time.time()}
        self.rt.alarms.clear(item_id)  # e.g. an identity conflict a technician judged
        self.rt.store.save_ignored(self.ignored[item_id])
        self.save_watermark(rec["seq"])
        dev = self.devices.get(item_id)
        if dev is not None:
            dev.ignored = reason
            dev.adopted = False
            if dev.supervisor is not None:
                dev.supervisor.stop()
                dev.supervisor = None
            self.rt.store.save_device(dev.registry_doc())
            self.changed(dev)
        return {"id": item_id, "ignored": True, "audit_seq": rec["seq"]}


def _identifies(p: dict[str, Any] | None) -> str:
    """What a device presented, for the inbox line a technician compares with a label."""
    if not p:
        return ""
    if p.get("error"):
        return f" (not identified: {p['error']})"
    parts = []
    if p.get("serial"):
        parts.append(f"serial {p['serial']}")
    if p.get("fingerprint"):
        parts.append(f"key {short(str(p['fingerprint']))}")
    if p.get("firmware"):
        parts.append(f"firmware {p['firmware']}")
    return f" ({', '.join(parts)})" if parts else ""


def _info(p: dict[str, Any]) -> DeviceInfo:
    """What a device presented, back as the DeviceInfo fields pins are compared with."""
    return DeviceInfo(vendor=str(p.get("vendor", "")), model=str(p.get("model", "")),
                      compartments=0, serial=p.get("serial"), fingerprint=p.get("fingerprint"))

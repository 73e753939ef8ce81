"""The device registry: what was found, what is trusted, and each device's supervision.

Discovery offers candidates here (:meth:`DeviceRegistry.offer`); a technician adopts or
ignores them (decisions, see :mod:`edge_agent.decisions`); an adopted device gets a
driver from its plugin and a :class:`~edge_agent.supervisor.DeviceSupervisor`, whose
link changes and readings come back here as audit records, alarms and store writes.
"""

from __future__ import annotations

import asyncio
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
from edge_agent.contract import (
    Candidate,
    CompartmentState,
    CredentialRead,
    DeviceDriver,
    DeviceState,
    DriverContext,
    PushChannel,
    diagnostic_rows,
    driver_capabilities,
)
from edge_agent.errors import DeviceUnavailable, PluginError
from edge_agent.inbox import InboxItem
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
            "out_of_service": self.out_of_service,
        }

    def to_json(self) -> dict[str, Any]:
        doc = self.registry_doc()
        answered = self.supervisor.status.last_answer if self.supervisor else None
        if answered is not None and answered > doc["last_seen"]:
            doc["last_seen"] = answered  # "seen" is the last answer, not the discovery
        doc["link"] = self.link
        doc["error"] = self.error
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
            self.devices[dev.id] = dev
            self.rt.record_soon(Action.DEVICE_DISCOVERED, device=dev.id, details={
                "plugin": cand.plugin, "source": cand.source, "address": cand.address,
                "model": cand.model})
        if bus is not None:
            dev.bus = bus
        if not dev.adopted and not dev.ignored and self.rt.config.agent.auto_adopt:
            dev.adopted = True
        self.rt.store.save_device(dev.registry_doc())
        # Clients see the device the moment it is registered; its link state follows.
        self.changed(dev)
        if dev.adopted:
            await self.supervise(dev, bus)
        return dev

    # ------------------------------------------------------------------ supervision

    async def create_driver(self, cand: Candidate, bus: SerialBus | None,
                            events: PushChannel | None = None) -> DeviceDriver:
        """A driver from the candidate's plugin; raises PluginError with the reason."""
        ctx = DriverContext(settings=self.rt.settings(cand.plugin), bus=bus,
                            timeout=self.rt.timing.call_timeout, events=events)
        driver = await self.rt.plugins.call_one(cand.plugin, "edge_agent_create_driver",
                                                candidate=cand, context=ctx)
        if driver is None or not isinstance(driver, DeviceDriver):
            raise PluginError(f"plugin {cand.plugin} returned no usable driver "
                              f"({type(driver).__name__})")
        return driver

    async def supervise(self, dev: Device, bus: SerialBus | None) -> None:
        events = PushChannel()
        try:
            driver = await self.create_driver(dev.candidate, bus, events)
        except PluginError as exc:
            dev.error = str(exc)
            log.error("device %s: %s", dev.id, dev.error)
            return
        dev.error = ""
        sup = DeviceSupervisor(dev.id, dev.candidate.plugin, driver, self.rt.timing,
                               on_link=self._on_link, on_state=self._on_state,
                               on_plugin_fault=self.rt.plugins.isolate)
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

    def _on_link(self, sup: DeviceSupervisor, old: Link, new: Link, reason: str) -> None:
        dev = self.devices[sup.device_id]
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
            raise DeviceUnavailable(f"no device {device_id!r}; see 'edge-agent devices'")
        return dev

    def inbox_items(self) -> list[InboxItem]:
        """What was found and not adopted, with why; ignored entries are left out."""
        items = [v for k, v in self.inbox.items() if k not in self.ignored]
        for dev in self.devices.values():
            if dev.ignored:
                continue
            if not dev.adopted:
                items.append(InboxItem(dev.id, f"{dev.candidate.vendor} {dev.candidate.model}"
                                       f" at {dev.candidate.address}",
                                       "not adopted (auto_adopt is off)", dev.first_seen,
                                       dev.id))
            elif dev.error:
                items.append(InboxItem(dev.id, dev.candidate.address, dev.error,
                                       dev.first_seen, dev.id))
        return sorted(items, key=lambda e: e.id)

    # ------------------------------------------------------------------ decisions

    async def adopt(self, item_id: str, *, actor: str, reason: str) -> dict[str, Any]:
        dev = self.devices.get(item_id)
        if dev is None:
            raise DeviceUnavailable(f"{item_id!r} is not a device that can be adopted")
        rec = await self.rt.record(Action.DEVICE_ADOPTED, device=item_id, actor=actor,
                                   reason=reason)
        dev.adopted, dev.ignored = True, None
        self.ignored.pop(item_id, None)
        self.rt.store.save_device(dev.registry_doc())
        self.save_watermark(rec["seq"])
        if dev.supervisor is None:
            await self.supervise(dev, dev.bus)
        self.changed(dev)
        return {"id": item_id, "adopted": True, "audit_seq": rec["seq"]}

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

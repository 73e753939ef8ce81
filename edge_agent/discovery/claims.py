"""Address claims: a known device claimed at another address is never moved on the
claim's word (anyone on the LAN can advertise any name and any serial).

A move is accepted only when the device no longer answers at its address *and* proves
its identity at the new one (its driver's ``connect`` confirms it). If the old address
still answers, the claim is an identity conflict: an inbox entry, a critical alarm, an
audit record; the device is not touched, and that address is never taken later without
a technician. Addresses the device really had stay known, so it is re-acquired there as
soon as it answers again.
"""

from __future__ import annotations

import logging
import time

from edge_agent.actions import Action
from edge_agent.alarms import Alarm
from edge_agent.bus import SerialBus
from edge_agent.contract import Candidate
from edge_agent.devices import Device, DeviceRegistry
from edge_agent.errors import DriverError, PluginError
from edge_agent.inbox import InboxItem
from edge_agent.pinning import mismatch
from edge_agent.runtime import Runtime

log = logging.getLogger(__name__)


class AddressClaims:
    def __init__(self, rt: Runtime, registry: DeviceRegistry) -> None:
        self.rt = rt
        self.registry = registry
        self._checking: set[str] = set()

    def claim(self, dev: Device, cand: Candidate, bus: SerialBus | None) -> None:
        """Check a claim off the discovery path (it may take a connect or two)."""
        key = f"{dev.id}@{cand.address}"
        if key in self._checking or cand.address in dev.conflicts:
            return
        self._checking.add(key)

        async def check() -> None:
            try:
                await self._check(dev, cand, bus)
            finally:
                self._checking.discard(key)

        self.rt.spawn(check(), f"claim:{key}")

    async def proves(self, cand: Candidate, bus: SerialBus | None,
                     dev: Device | None = None) -> str | None:
        """None if a driver at ``cand``'s address connects and confirms the identity
        (and, for a pinned device, presents what was pinned); otherwise why not."""
        pins = dev.pins if dev is not None else None
        try:
            info = await self.registry.identify_device(cand, bus, pins)
        except (DriverError, PluginError) as exc:
            return str(exc) or type(exc).__name__
        if pins is not None:
            return mismatch(pins, info)
        return None

    async def _check(self, dev: Device, cand: Candidate, bus: SerialBus | None) -> None:
        old = dev.candidate
        old_fails = await self.proves(old, dev.bus, dev)
        if old_fails is None:
            self._conflict(dev, cand, f"{dev.id} still answers at {old.address}")
            return
        new_fails = await self.proves(cand, bus, dev)
        if new_fails is not None:
            # Not a conflict (the device is gone from its address): retried while offline.
            dev.unproven[cand.address] = (cand, bus)
            log.warning("device %s: %s claims it but does not prove it (%s); not moved",
                        dev.id, cand.address, new_fails)
            return
        await self._move(dev, cand, bus, why=f"gone from {old.address} ({old_fails})")

    async def _move(self, dev: Device, cand: Candidate, bus: SerialBus | None, *,
                    why: str) -> None:
        old = dev.candidate
        log.warning("device %s moved: %s -> %s (%s; identity confirmed there)", dev.id,
                    old.address, cand.address, why)
        self.rt.record_soon(Action.DEVICE_ADDRESS_CHANGED, device=dev.id, details={
            "old": old.address, "new": cand.address, "verified": True, "why": why})
        dev.known[old.address] = (old, dev.bus)
        dev.unproven.pop(cand.address, None)
        dev.candidate, dev.last_seen = cand, time.time()
        if bus is not None:
            dev.bus = bus
        self.rt.store.save_device(dev.registry_doc())
        if dev.supervisor is not None:
            # Same hardware at a new address: a fresh driver for the new address.
            dev.supervisor.stop()
            dev.supervisor = None
            await self.registry.supervise(dev, dev.bus)
        self.registry.changed(dev)

    def _conflict(self, dev: Device, cand: Candidate, why: str) -> None:
        dev.conflicts.add(cand.address)
        item = f"conflict:{dev.id}@{cand.address}"
        text = (f"{cand.address} ({cand.source}) claims to be {dev.id}, but {why}: not "
                "trusted; the device stays where it is (possible spoofing)")
        log.error("identity conflict: %s", text)
        self.registry.inbox[item] = InboxItem(item, f"{cand.source} {cand.address}", text,
                                              device=dev.id)
        self.rt.alarms.raise_(Alarm(item, "critical", f"{dev.id}: identity claimed by "
                                    f"{cand.address}", device=dev.id,
                                    code="identity_conflict"))
        self.rt.record_soon(Action.DEVICE_IDENTITY_CONFLICT, device=dev.id, outcome="refused",
                            details={"claimed_at": cand.address,
                                     "pinned": dev.candidate.address,
                                     "source": cand.source, "why": why})

    async def reacquire_loop(self) -> None:
        """Offline devices with an address they really had (or an unproven claim made
        while they were gone) are tried there until one answers as the same device."""
        while not self.rt.stopping.is_set():
            await self.rt.wait_stop(max(1.0, self.rt.timing.backoff_max))
            for dev in list(self.registry.devices.values()):
                if dev.supervisor is None or dev.link != "offline":
                    continue
                for address, (cand, bus) in [*dev.known.items(), *dev.unproven.items()]:
                    if address != dev.candidate.address \
                            and await self.proves(cand, bus, dev) is None:
                        await self._move(dev, cand, bus, why="answers there again")
                        break

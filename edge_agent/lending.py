"""Lending a live bus to a scan (``edge-agent scan --borrow``).

A scan must never share a wire with the agent: two masters on RS-485 talk over each
other. So the agent *lends* the bus: it closes the port (its boards on that bus go
offline, as with the cable out), audits who took it and why, and takes it back when the
scan returns it, or by itself when the loan runs out, whichever comes first. The boards
come back online on their own once the port is the agent's again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from edge_agent.actions import Action
from edge_agent.alarms import Alarm
from edge_agent.discovery.coordinator import Discovery
from edge_agent.errors import DeviceUnavailable
from edge_agent.runtime import Runtime

log = logging.getLogger(__name__)
MAX_LOAN_S = 900.0


class BusLending:
    def __init__(self, rt: Runtime, discovery: Discovery) -> None:
        self.rt = rt
        self.discovery = discovery
        self.loans: dict[str, tuple[str, float, asyncio.Task[None]]] = {}  # bus -> who, until

    def _bus(self, bus_id: str) -> Any:
        bus = self.discovery.buses.get(bus_id)
        if bus is None:
            known = ", ".join(sorted(self.discovery.buses)) or "none"
            raise DeviceUnavailable(f"no bus {bus_id!r} (this agent's buses: {known})")
        return bus

    async def lend(self, bus_id: str, *, actor: str, reason: str,
                   seconds: float) -> dict[str, Any]:
        bus = self._bus(bus_id)
        if bus_id in self.loans:
            raise DeviceUnavailable(f"bus {bus_id} is already lent to {self.loans[bus_id][0]}")
        seconds = min(max(seconds, 5.0), MAX_LOAN_S)
        rec = await self.rt.record(Action.BUS_LENT, actor=actor, reason=reason,
                                   details={"bus": bus_id, "port": bus.address,
                                            "seconds": seconds})
        await bus.lend(actor)
        until = time.time() + seconds
        task = self.rt.spawn(self._expire(bus_id, seconds), f"loan:{bus_id}")
        self.loans[bus_id] = (actor, until, task)
        self.rt.alarms.raise_(Alarm(f"bus:{bus_id}:lent", "warning",
                                    f"bus {bus_id} is lent to {actor} ({reason}): its "
                                    "boards are offline until it is given back"))
        log.warning("bus %s lent to %s for at most %.0f s: %s", bus_id, actor, seconds,
                    reason)
        return {"bus": bus_id, "port": bus.address, "settings": bus.settings.describe(),
                "until": until, "audit_seq": rec["seq"]}

    async def give_back(self, bus_id: str, *, actor: str, why: str) -> dict[str, Any]:
        bus = self._bus(bus_id)
        loan = self.loans.pop(bus_id, None)
        if loan is None:
            raise DeviceUnavailable(f"bus {bus_id} is not lent")
        if loan[2] is not asyncio.current_task():
            loan[2].cancel()
        rec = await self.rt.record(Action.BUS_RETURNED, actor=actor, reason=why,
                                   details={"bus": bus_id, "lent_to": loan[0]})
        bus.give_back()
        self.rt.alarms.clear(f"bus:{bus_id}:lent")
        log.warning("bus %s is the agent's again (%s)", bus_id, why)
        return {"bus": bus_id, "audit_seq": rec["seq"]}

    async def _expire(self, bus_id: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if bus_id in self.loans:
            await self.give_back(bus_id, actor="agent", why="the loan ran out")

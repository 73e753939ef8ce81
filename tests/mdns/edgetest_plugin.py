"""A test-only network vendor: found by mDNS, driven over a one-line TCP protocol.

The network vendors proper are another issue; this plugin exists so the core's mDNS
discovery path runs through real zeroconf sockets in the tests.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from edge_agent.contract import (
    Candidate,
    CompartmentState,
    DeviceInfo,
    DeviceState,
    Door,
    DriverContext,
    Item,
    MdnsMatcher,
    MdnsService,
    PluginInfo,
)
from edge_agent.errors import DeviceTimeout, ProtocolError, TransportError
from edge_agent.hookspecs import hookimpl

SERVICE = "_edgetest-locker._tcp.local."


class EdgetestDriver:
    def __init__(self, host: str, port: int, serial: str) -> None:
        self.host, self.port, self.serial = host, port, serial

    async def _ask(self, line: str) -> dict[str, Any]:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise TransportError(f"{self.host}:{self.port}: {exc}") from exc
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            raw = await asyncio.wait_for(reader.readline(), 1.0)
        except TimeoutError as exc:
            raise DeviceTimeout("no answer") from exc
        finally:
            writer.close()
        try:
            data: dict[str, Any] = json.loads(raw)
        except ValueError as exc:
            raise ProtocolError(f"bad answer {raw!r}") from exc
        return data

    async def connect(self) -> DeviceInfo:
        data = await self._ask("INFO")
        if data.get("serial") != self.serial:
            raise ProtocolError(f"device says serial {data.get('serial')}, mDNS said {self.serial}")
        return DeviceInfo("Edgetest", "ET-4", 4, serial=self.serial)

    async def read_state(self) -> DeviceState:
        data = await self._ask("STATE")
        return DeviceState(tuple(
            CompartmentState(i + 1, Door(c["door"]), Item(c["item"]))
            for i, c in enumerate(data["compartments"])))

    async def unlock(self, compartment: int) -> DeviceState:
        await self._ask(f"UNLOCK {compartment}")
        return await self.read_state()

    async def identify(self) -> None:
        await self._ask("IDENTIFY")

    async def close(self) -> None:
        return None


@hookimpl
def edge_agent_plugin_info() -> PluginInfo:
    return PluginInfo(name="edgetest", vendor="Edgetest", version="0.1", contract="1.0")


@hookimpl
def edge_agent_mdns_matchers() -> list[MdnsMatcher]:
    return [MdnsMatcher(SERVICE, txt={"vendor": "edgetest", "serial": "*"})]


@hookimpl
def edge_agent_mdns_candidate(service: MdnsService) -> Candidate | None:
    serial = service.properties["serial"]
    return Candidate(identity=f"edgetest:{serial}", plugin="edgetest", source="mdns",
                     vendor="Edgetest", model=service.properties.get("model", "ET-4"),
                     address=f"{service.addresses[0]}:{service.port}",
                     properties={"host": service.addresses[0], "port": service.port,
                                 "serial": serial, "interface": service.interface})


@hookimpl
def edge_agent_create_driver(candidate: Candidate, context: DriverContext) -> EdgetestDriver:
    p = candidate.properties
    return EdgetestDriver(str(p["host"]), int(p["port"]), str(p["serial"]))

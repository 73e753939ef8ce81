"""Read views of the running agent: status, alarms in order, health, decoded wire."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.alarms import Alarm, ordered
from edge_agent.devices import Device, DeviceRegistry
from edge_agent.discovery.coordinator import Discovery
from edge_agent.errors import PluginError
from edge_agent.runtime import Runtime


@dataclass
class AgentIdentity:
    boot_id: str
    started: float
    state_dir: Path
    socket_path: Path
    config_path: str


class Views:
    def __init__(self, rt: Runtime, registry: DeviceRegistry, discovery: Discovery,
                 identity: AgentIdentity) -> None:
        self.rt = rt
        self.registry = registry
        self.discovery = discovery
        self.identity = identity

    def alarms(self) -> list[Alarm]:
        out = self.rt.alarms.values()
        for dev in self.registry.devices.values():
            out.extend(dev.alarms.values())
        return out

    def alarm(self, alarm_id: str) -> Alarm | None:
        return next((a for a in self.alarms() if a.id == alarm_id), None)

    def all_alarms(self) -> list[dict[str, Any]]:
        """Agent alarms (store, audit, mDNS, conflicts) then every device's, critical
        first, oldest first."""
        return ordered(self.alarms())

    def health(self) -> str:
        return "degraded" if self.health_reason() else "ok"

    def health_reason(self) -> str:
        """Why health is degraded ('' when ok): the audit log refusing commands, or the
        critical alarms (the first named)."""
        refusal = self.rt.audit.command_refusal()
        if refusal:
            return f"commands refused: {refusal}"
        critical = sorted((a for a in self.alarms() if a.critical), key=lambda a: a.since)
        if not critical:
            return ""
        more = f" (+{len(critical) - 1} more)" if len(critical) > 1 else ""
        return (f"{len(critical)} critical alarm{'s' if len(critical) > 1 else ''}: "
                f"{critical[0].message}{more}")

    def status(self) -> dict[str, Any]:
        rt, ident = self.rt, self.identity
        counts: dict[str, int] = {}
        for dev in self.registry.devices.values():
            counts[dev.link] = counts.get(dev.link, 0) + 1
        audit = rt.audit
        return {
            "site": {"id": rt.config.site.id, "name": rt.config.site.name},
            "agent": {"version": __version__, "pid": os.getpid(), "boot_id": ident.boot_id,
                      "started": ident.started, "uptime": time.time() - ident.started,
                      "state_dir": str(ident.state_dir), "socket": str(ident.socket_path),
                      "config": ident.config_path},
            "devices": {"total": len(self.registry.devices), **counts},
            "audit": {"last_seq": audit.last_seq, "error": audit.error,
                      "reserve": audit.reserve_short or "held",
                      "sealed_seq": audit.sealer.last["seq"] if audit.sealer.last else None,
                      "commits": audit.commits, "damaged_lines": audit.damaged_lines,
                      "commands_refused": audit.command_refusal()},
            "store": {"error": rt.store.last_error},
            "alarms": self.all_alarms(),
            "inbox": len(self.registry.inbox_items()),
            "buses": list(self.discovery.bus_info.values()),
            "mdns": self.discovery.mdns.to_json() if self.discovery.mdns else None,
            "plugins": {n: r.status for n, r in rt.plugins.records.items()},
            "health": self.health(),
            "health_reason": self.health_reason(),
        }

    def describe_wire(self, dev: Device, chunks: list[bytes]) -> list[str]:
        """The device's plugin's reading of raw wire chunks (blank where it has none)."""
        try:
            out = self.rt.plugins.call_one_sync(dev.candidate.plugin,
                                                "edge_agent_describe_wire", chunks=chunks)
        except PluginError:
            return [""] * len(chunks)
        if not isinstance(out, list) or len(out) != len(chunks):
            return [""] * len(chunks)
        return [str(x) for x in out]

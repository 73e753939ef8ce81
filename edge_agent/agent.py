"""The long-running agent: the composition root.

It owns the state directory (one agent per directory), builds the shared
:class:`~edge_agent.runtime.Runtime` and wires the services along the data path::

    discovery (buses, USB, static, mDNS) --offer--> device registry --supervise--> drivers
         address claims                                 |  readings, alarms
                                                        v
    API  --> commands (audit around every hardware move) --> audit log, store
         --> views (status, alarms, wire)

Each service is a module of its own; this class only starts, stops and connects them,
and gives the API one object to talk to.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from edge_agent import __version__, logs
from edge_agent.actions import Action
from edge_agent.alarms import Alarm, AlarmBook
from edge_agent.bus import SerialBus
from edge_agent.commands import Commands
from edge_agent.config import (
    SiteConfig,
    check_bus_protocols,
    check_plugins_named,
    check_vendor_settings,
    unsafe_paths,
    vendor_settings,
)
from edge_agent.contract import Candidate
from edge_agent.custody import CustodyService
from edge_agent.devices import Device, DeviceRegistry
from edge_agent.discovery.claims import AddressClaims
from edge_agent.discovery.coordinator import Discovery
from edge_agent.discovery.mdns import MdnsBrowser
from edge_agent.entitlements import EntitlementError, EntitlementStore, trusted_keys
from edge_agent.errors import ConfigError, DeviceUnavailable, EdgeAgentError, StoreError
from edge_agent.events import EventHub
from edge_agent.inbox import InboxItem
from edge_agent.lending import BusLending
from edge_agent.plugins import PluginHost
from edge_agent.runtime import Runtime
from edge_agent.store import AuditLog, StateStore
from edge_agent.store.audit import Query
from edge_agent.store.durable import private_dir, tighten_tree
from edge_agent.supervisor import Timing
from edge_agent.uplink import Uplink
from edge_agent.views import AgentIdentity, Views

log = logging.getLogger(__name__)


class Agent:
    def __init__(
        self,
        config: SiteConfig,
        *,
        state_dir: Path,
        socket_path: Path,
        config_path: str = "",
        extra_plugins: dict[str, object] | None = None,
        load_entry_points: bool = True,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.state_dir = state_dir
        self.socket_path = socket_path
        self.boot_id = uuid.uuid4().hex[:16]
        self.started = time.time()
        a, au = config.agent, config.audit
        self.rt = Runtime(
            config=config,
            timing=Timing(a.poll_interval, a.command_timeout, a.offline_after,
                          a.backoff_initial, a.backoff_max),
            plugins=PluginHost(hook_timeout=config.plugins.hook_timeout,
                               disabled=config.plugins.disabled),
            audit=AuditLog(state_dir / "audit", boot_id=self.boot_id,
                           segment_max_bytes=int(au.segment_max_mb * 1024 * 1024),
                           checkpoint_every=au.checkpoint_every,
                           checkpoint_interval=au.checkpoint_interval,
                           retention_days=au.retention_days),
            store=StateStore(state_dir, on_corrupt=self._store_corrupt),
        )
        self.registry = DeviceRegistry(self.rt)
        self.claims = AddressClaims(self.rt, self.registry)
        self.registry.claims = self.claims
        self.discovery = Discovery(self.rt, self.registry)
        self.commands = Commands(self.rt, self.registry)
        self.lending = BusLending(self.rt, self.discovery)
        self.custody = CustodyService(
            self.rt, self.registry, self.commands, lambda: self.entitlements,
            Path(config_path).parent if config_path else Path.cwd())
        self.views = Views(self.rt, self.registry, self.discovery, AgentIdentity(
            self.boot_id, self.started, state_dir, socket_path, config_path))
        self.entitlements: EntitlementStore | None = None
        self.uplink: Uplink | None = None
        self._stopped = False
        self._extra_plugins = extra_plugins or {}
        self._load_entry_points = load_entry_points
        self._lock_fd: int | None = None
        self._api: Any = None

    # ------------------------------------------------------------------ shared parts

    @property
    def timing(self) -> Timing:
        return self.rt.timing

    @property
    def plugins(self) -> PluginHost:
        return self.rt.plugins

    @property
    def audit(self) -> AuditLog:
        return self.rt.audit

    @property
    def store(self) -> StateStore:
        return self.rt.store

    @property
    def hub(self) -> EventHub:
        return self.rt.hub

    @property
    def alarms(self) -> AlarmBook:
        return self.rt.alarms

    @property
    def devices(self) -> dict[str, Device]:
        return self.registry.devices

    @property
    def inbox(self) -> dict[str, InboxItem]:
        return self.registry.inbox

    @property
    def buses(self) -> dict[str, SerialBus]:
        return self.discovery.buses

    @property
    def bus_info(self) -> dict[str, dict[str, Any]]:
        return self.discovery.bus_info

    @property
    def mdns(self) -> MdnsBrowser | None:
        return self.discovery.mdns

    # ------------------------------------------------------------------ start/stop

    def _take_lock(self) -> None:
        problems = unsafe_paths(self.config, self.config_path, self.state_dir)
        if problems:
            raise ConfigError(self.config_path or "<site config>", problems)
        private_dir(self.state_dir)
        fd = os.open(self.state_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise EdgeAgentError(
                f"another edge-agent already runs on state directory {self.state_dir}"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        # The trail names officers, devices and items: for the agent and its group only.
        loose = tighten_tree(self.state_dir)
        if loose:
            log.warning("state directory: took group-write and other users' access off %d "
                        "path(s) (e.g. %s)", len(loose), ", ".join(loose[:3]))

    def _store_corrupt(self, path: Path, aside: Path, reason: str) -> None:
        self.rt.alarms.raise_(Alarm(
            f"store:{path.name}", "critical",
            f"{path.name} was unusable ({reason}); moved aside to {aside.name}. "
            "Registry rebuilt from discovery and the audit trail's decisions."))

    def _trusted_keys(self) -> dict[str, Any]:
        """The issuing office's public keys named in the site config (relative to it)."""
        base = Path(self.config_path).parent if self.config_path else Path.cwd()
        paths = [base / p for p in self.config.entitlements.trusted_keys]
        try:
            return trusted_keys(paths)
        except EntitlementError as exc:
            raise ConfigError(self.config_path, [
                f"{self.config_path or '<site config>'}: entitlements.trusted_keys: {exc}"]
            ) from exc

    async def load_entitlements(self, raw: bytes, *, actor: str) -> dict[str, Any]:
        """Verify a signed snapshot (a file's bytes) and put it in force (audited either
        way)."""
        assert self.entitlements is not None
        try:
            snap = await asyncio.to_thread(self.entitlements.load, raw)
        except EntitlementError as exc:
            await self.rt.record(Action.ENTITLEMENTS_REFUSED, actor=actor, outcome="refused",
                                 reason=str(exc), details={"id": exc.snapshot_id})
            raise
        rec = await self.rt.record(Action.ENTITLEMENTS_LOADED, actor=actor,
                                   details=snap.summary())
        return {**snap.summary(), "audit_seq": rec["seq"]}

    def entitlements_summary(self) -> dict[str, Any]:
        e = self.entitlements
        if e is None or e.current is None:
            return {"loaded": False, "problem": e.problem if e else "agent not started"}
        return {"loaded": True, **e.current.summary()}

    def _config_source(self) -> str | None:
        try:
            return Path(self.config_path).read_text(encoding="utf-8") if self.config_path \
                else None
        except OSError:
            return None

    async def _load_plugins(self) -> None:
        """Plugins first: a site config their settings reject stops us before anything
        (lock, store, socket) is touched."""
        loop = asyncio.get_running_loop()
        plugins = self.rt.plugins
        if self._load_entry_points:
            await loop.run_in_executor(None, plugins.load_entry_points)
        for name, obj in self._extra_plugins.items():
            plugins.register(obj, name)
        schemas = await plugins.call_each("edge_agent_settings_schema")
        for name in plugins.loaded():
            schemas.setdefault(name, None)
        source = await asyncio.to_thread(self._config_source)
        problems = check_vendor_settings(self.config, self.config_path or "<site config>",
                                         source, schemas)
        problems += check_plugins_named(self.config, self.config_path or "<site config>",
                                        source, set(plugins.loaded()))
        probes = await plugins.call_each("edge_agent_bus_probes")
        problems += check_bus_protocols(self.config, self.config_path or "<site config>",
                                        source, {p.protocol for ps in probes.values()
                                                 for p in ps or []})
        if problems:
            raise ConfigError(self.config_path, problems)
        self.rt.plugin_settings = {name: vendor_settings(self.config, name, schema)
                                   for name, schema in schemas.items()}

    async def start(self) -> None:
        logs.attach()  # `edge-agent logs` reads what this agent says
        from edge_agent.api.server import ApiServer

        rt = self.rt
        await self._load_plugins()
        trusted = await asyncio.to_thread(self._trusted_keys)
        self._take_lock()
        self.entitlements = EntitlementStore(self.state_dir, trusted)
        await asyncio.to_thread(self.entitlements.open)
        await asyncio.get_running_loop().run_in_executor(None, rt.audit.open)
        rt.audit.subscribers.append(lambda rec: rt.hub.publish("audit", rec))
        self._audit_alarms()
        await rt.store.open()
        replayed = await self.registry.load()
        self._api = ApiServer(self)
        await self._api.start(self.socket_path)
        await self._record_recovery()
        await self.registry.write_back(replayed)
        await rt.record(Action.AGENT_STARTED, details={
            "version": __version__, "site": self.config.site.id, "pid": os.getpid(),
            "plugins": rt.plugins.loaded()})
        self.registry.restore_ignored()
        await self.custody.start(self.config_path)  # before readers come online
        if self.config.uplink is not None:
            self.uplink = Uplink(rt, self.config.uplink, self.state_dir, self.config.site.id,
                                 self.status, self.load_entitlements, self.boot_id)
            self.uplink.on_command = self.hq_command
            self.uplink.start()
        await self.discovery.start()
        rt.spawn(self.claims.reacquire_loop(), "reacquire")
        log.info("agent up: site %s, socket %s, state %s", self.config.site.id,
                 self.socket_path, self.state_dir)

    async def _record_recovery(self) -> None:
        """What opening the audit log had to repair, into the trail."""
        audit = self.rt.audit
        if audit.recovered is not None:
            r = audit.recovered
            await self.rt.record(Action.AUDIT_RECOVERED, details={
                "segment": r.segment, "bytes_dropped": r.bytes_dropped, "last_seq": r.last_seq,
                "offset": r.offset, "note": "a write torn by a crash was cut off"})
        if audit.sealer.repaired:
            await self.rt.record(Action.AUDIT_CHECKPOINTS_REPAIRED, details={
                "damaged_lines": audit.sealer.repaired,
                "set_aside": "audit/checkpoints.damaged",
                "note": "torn checkpoint appends after a crash; verify checks epochs"})
        for problem in audit.index_problems:
            await self.rt.record(Action.AUDIT_INDEX_REBUILT, outcome="failed",
                                 details={"problem": problem})

    def _audit_alarms(self) -> None:
        audit, alarms = self.rt.audit, self.rt.alarms
        if audit.damaged_lines:
            alarms.raise_(Alarm("audit:damaged", "critical",
                                f"{audit.damaged_lines} damaged line(s) in the audit log: "
                                "run 'edge-agent audit verify'"))
        if audit.index_problems:
            alarms.raise_(Alarm("audit:index", "critical",
                                f"{len(audit.index_problems)} audit index(es) did not match "
                                f"their segments and were rebuilt: {audit.index_problems[0]}"
                                "; run 'edge-agent audit verify'"))
        if audit.sealer.problem:
            alarms.raise_(Alarm("audit:seal", "critical", audit.sealer.problem))

    async def run_forever(self) -> None:
        await self.rt.stopping.wait()

    def request_stop(self) -> None:
        self.rt.stopping.set()

    async def stop(self) -> None:
        rt = self.rt
        if self._stopped:  # twice (a signal during shutdown, a test's own stop): once
            return
        self._stopped = True
        rt.stopping.set()
        for dev in self.devices.values():
            if dev.supervisor:
                dev.supervisor.stop()
        await self.discovery.close()
        if self._api is not None:
            await self._api.stop()
        await self.commands.drain()
        if self.uplink is not None:
            await self.uplink.close()
        for t in list(rt.tasks):
            t.cancel()
        await asyncio.gather(*rt.tasks, return_exceptions=True)
        for dev in self.devices.values():
            if dev.supervisor:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(dev.supervisor.driver.close(), 1)
        await self.discovery.close_buses()
        if rt.audit.is_open:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(rt.record(Action.AGENT_STOPPED), 5)
            await asyncio.get_running_loop().run_in_executor(None, rt.audit.close)
        await rt.store.close()
        rt.plugins.shutdown()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ what the API uses

    def device(self, device_id: str) -> Device:
        return self.registry.device(device_id)

    async def offer(self, cand: Candidate, *, bus: SerialBus | None = None) -> Device:
        return await self.registry.offer(cand, bus=bus)

    async def unlock(self, device_id: str, compartment: int, *, actor: str, reason: str,
                     roles: frozenset[str] = frozenset({"technician", "armourer"})
                     ) -> dict[str, Any]:
        # A weapon compartment: the armourer role and a second armourer (custody rules).
        waiting = await self.custody.gate(device_id, compartment, actor=actor, roles=roles,
                                          reason=reason)
        if waiting is not None:
            return waiting
        return await self.commands.unlock(device_id, compartment, actor=actor, reason=reason)

    async def access_refused(self, user: str, call: str, missing: str, *,
                             why: str = "") -> None:
        try:
            await self.rt.record(Action.ACCESS_REFUSED, actor=user,
                                 reason=why or f"needs {missing}", outcome="refused",
                                 details={"call": call, "missing_role": missing})
        except StoreError as exc:  # the refusal stands even if it cannot be written
            log.error("access refused to %s for %s (not audited: %s)", user, call, exc)

    async def hq_command(self, doc: Any, *, source: str) -> None:
        """A signed command from headquarters (lockdown or release of armoury issue)."""
        trusted = self.entitlements.trusted if self.entitlements is not None else {}
        await self.custody.command(doc, trusted, source=source)

    def custody_view(self) -> dict[str, Any]:
        return self.custody.view()

    def deployable(self, equipment: str) -> dict[str, Any]:
        return self.custody.deployable(equipment)

    async def ack_alarm(self, alarm_id: str, *, actor: str, reason: str) -> dict[str, Any]:
        """Acknowledge a raised alarm: audited first, then marked (who, when, why)."""
        alarm = self.views.alarm(alarm_id)
        if alarm is None:
            raise DeviceUnavailable(f"no alarm {alarm_id!r} is raised (it may have cleared); "
                                    "see 'edge-agent status'")
        rec = await self.rt.record(Action.ALARM_ACKNOWLEDGED, actor=actor, reason=reason,
                                   device=alarm.device, compartment=alarm.compartment,
                                   details={"alarm": alarm.id, "code": alarm.code,
                                            "severity": alarm.severity,
                                            "message": alarm.message})
        alarm.acked = {"by": actor, "at": time.time(), "reason": reason, "seq": rec["seq"]}
        if alarm.device is not None and alarm.device in self.registry.devices:
            self.registry.changed(self.registry.devices[alarm.device])
        return {"id": alarm.id, "audit_seq": rec["seq"]}

    async def person(self, officer_id: str, *, days: float = 30.0,
                     last: int = 20) -> dict[str, Any] | None:
        """An officer's entitlements, holdings and last ``last`` audit records of the
        last ``days`` (through the actor index, off the loop)."""
        view = self.custody.person(officer_id)
        if view is None:
            return None
        since = dt.datetime.fromtimestamp(time.time() - days * 86400, dt.UTC).isoformat()
        query = Query(actor=f"officer:{officer_id}", since=since, limit=None)
        records = await asyncio.to_thread(lambda: list(self.audit.iter_query(query)))
        view["events"] = records[-last:][::-1]
        return view

    async def break_glass(self, *, actor: str, roles: frozenset[str], reason: str,
                          minutes: float) -> dict[str, Any]:
        return await self.custody.break_glass(actor=actor, roles=roles, reason=reason,
                                              minutes=minutes)

    async def identify(self, device_id: str, *, actor: str) -> dict[str, Any]:
        return await self.commands.identify(device_id, actor=actor)

    async def set_out_of_service(self, device_id: str, compartment: int, *, actor: str,
                                 reason: str, out: bool) -> dict[str, Any]:
        return await self.commands.set_out_of_service(device_id, compartment, actor=actor,
                                                       reason=reason, out=out)

    async def adopt(self, item_id: str, *, actor: str, reason: str,
                    expect: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.registry.adopt(item_id, actor=actor, reason=reason, expect=expect)

    async def unignore(self, item_id: str, *, actor: str, reason: str) -> dict[str, Any]:
        return await self.registry.unignore(item_id, actor=actor, reason=reason)

    async def ignore(self, item_id: str, *, actor: str, reason: str) -> dict[str, Any]:
        return await self.registry.ignore(item_id, actor=actor, reason=reason)

    def inbox_items(self) -> list[dict[str, Any]]:
        return [item.to_json() for item in self.registry.inbox_items()]

    def status(self) -> dict[str, Any]:
        st = self.views.status()
        if self.uplink is not None:
            st["uplink"] = self.uplink.to_json()
        if self.entitlements is not None and self.entitlements.current is not None:
            st["entitlements"] = self.entitlements.current.id
        return st

    def all_alarms(self) -> list[dict[str, Any]]:
        return self.views.all_alarms()

    def describe_wire(self, dev: Device, chunks: list[bytes]) -> list[str]:
        return self.views.describe_wire(dev, chunks)

"""The long-running agent: owns ports, discovery, supervision, the store and the API."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import time
import uuid
from collections.abc import Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_agent import __version__, decisions
from edge_agent.bus import SerialBus
from edge_agent.config import SiteConfig, check_vendor_settings, vendor_settings
from edge_agent.contract import (
    BusProbe,
    Candidate,
    CompartmentState,
    DeviceDriver,
    DeviceState,
    DriverContext,
    MdnsMatcher,
    MdnsService,
    SerialSettings,
    UsbMatcher,
)
from edge_agent.discovery.mdns import MdnsBrowser
from edge_agent.discovery.serialports import matching, usb_ports
from edge_agent.errors import (
    ConfigError,
    DeviceTimeout,
    DeviceUnavailable,
    DriverError,
    EdgeAgentError,
    PluginError,
    StoreUnavailable,
)
from edge_agent.events import EventHub
from edge_agent.plugins import PluginHost
from edge_agent.store import AuditLog, AuditRecord, StateStore
from edge_agent.store.durable import private_dir, tighten_tree
from edge_agent.supervisor import DeviceSupervisor, Link, Timing, full_jitter

log = logging.getLogger(__name__)
_COMMAND = "command:"  # name prefix of a command's task once its request is on disk


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
        self.alarms: dict[str, dict[str, Any]] = {}  # DeviceAlarm.key -> alarm as shown
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
        doc["link"] = self.link
        doc["error"] = self.error
        doc["compartments"] = self.compartments
        doc["alarms"] = list(self.alarms.values())
        if self.supervisor is not None:
            sup = self.supervisor.to_json()
            doc["since"] = sup["since"]
            doc["reason"] = sup["reason"]
            doc["counters"] = sup["counters"]
            info = self.supervisor.status.info
            doc["info"] = asdict(info) if info else None
        return doc


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
        a = config.agent
        self.timing = Timing(a.poll_interval, a.command_timeout, a.offline_after,
                             a.backoff_initial, a.backoff_max)
        self.plugins = PluginHost(hook_timeout=config.plugins.hook_timeout,
                                  disabled=config.plugins.disabled)
        self._extra_plugins = extra_plugins or {}
        self._load_entry_points = load_entry_points
        au = config.audit
        self.audit = AuditLog(state_dir / "audit", boot_id=self.boot_id,
                              segment_max_bytes=int(au.segment_max_mb * 1024 * 1024),
                              checkpoint_every=au.checkpoint_every,
                              checkpoint_interval=au.checkpoint_interval,
                              retention_days=au.retention_days)
        self.alarms: dict[str, dict[str, Any]] = {}
        self.store = StateStore(state_dir, on_corrupt=self._store_corrupt)
        self.hub = EventHub()
        self.devices: dict[str, Device] = {}
        self.buses: dict[str, SerialBus] = {}
        self.bus_info: dict[str, dict[str, Any]] = {}
        self.inbox: dict[str, dict[str, Any]] = {}
        self.mdns: MdnsBrowser | None = None
        self._mdns_matchers: dict[str, list[tuple[str, MdnsMatcher]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock_fd: int | None = None
        self._api: Any = None
        self._stopping = asyncio.Event()
        self._saved_registry: dict[str, dict[str, Any]] = {}
        self._saved_comps: dict[str, list[dict[str, Any]]] = {}
        self._plugin_settings: dict[str, dict[str, Any]] = {}
        self._ignored: dict[str, dict[str, Any]] = {}
        self._mdns_names: dict[str, str] = {}  # mDNS instance name -> device identity
        self._claims_checking: set[str] = set()

    # ------------------------------------------------------------------ tasks

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a task and keep a reference to it until it ends; log if it dies."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("task %s died: %r", name, t.exception(), exc_info=t.exception())

        task.add_done_callback(done)
        return task

    # ------------------------------------------------------------------ start/stop

    def _take_lock(self) -> None:
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
        self.alarms[f"store:{path.name}"] = {
            "id": f"store:{path.name}", "severity": "critical", "since": time.time(),
            "message": f"{path.name} was unusable ({reason}); moved aside to {aside.name}. "
                       "Registry rebuilt from discovery and the audit trail's decisions.",
        }

    async def start(self) -> None:
        from edge_agent.api.server import ApiServer

        loop = asyncio.get_running_loop()
        # Plugins first: a site config their settings reject stops us before anything
        # (lock, store, socket) is touched.
        if self._load_entry_points:
            await loop.run_in_executor(None, self.plugins.load_entry_points)
        for name, obj in self._extra_plugins.items():
            self.plugins.register(obj, name)
        schemas = await self.plugins.call_each("edge_agent_settings_schema")
        for name in self.plugins.loaded():
            schemas.setdefault(name, None)
        source = await asyncio.to_thread(self._config_source)
        problems = check_vendor_settings(self.config, self.config_path or "<site config>",
                                         source, schemas)
        if problems:
            raise ConfigError(self.config_path, problems)
        self._plugin_settings = {name: vendor_settings(self.config, name, schema)
                                 for name, schema in schemas.items()}
        self._take_lock()
        await loop.run_in_executor(None, self.audit.open)
        self.audit.subscribers.append(self._audit_committed)
        self._audit_alarms()
        await self.store.open()
        devices, comps = await self.store.load()
        self._ignored = {d["id"]: d for d in await self.store.load_ignored()}
        self._saved_registry = {d["id"]: d for d in devices}
        self._saved_comps = comps
        # The trail is the source of truth for decisions: apply those the registry had
        # not taken yet (a crash before its flush, or a registry lost or moved aside).
        meta = await self.store.load_meta(decisions.WATERMARK)
        watermark = int(meta["seq"]) if meta else 0
        replayed_records = await asyncio.to_thread(decisions.since, self.audit, watermark)
        replayed = decisions.apply(replayed_records, self._saved_registry, self._ignored)
        self._api = ApiServer(self)
        await self._api.start(self.socket_path)
        if self.audit.recovered is not None:
            r = self.audit.recovered
            await self.record("audit_recovered", details={
                "segment": r.segment, "bytes_dropped": r.bytes_dropped, "last_seq": r.last_seq,
                "offset": r.offset, "note": "a write torn by a crash was cut off"})
        if self.audit.sealer.repaired:
            await self.record("audit_checkpoints_repaired", details={
                "damaged_lines": self.audit.sealer.repaired,
                "set_aside": "audit/checkpoints.damaged",
                "note": "torn checkpoint appends after a crash; verify checks epochs"})
        for problem in self.audit.index_problems:
            await self.record("audit_index_rebuilt", outcome="failed",
                              details={"problem": problem})
        if replayed.count:
            log.warning("registry: %d decision(s) after #%d replayed from the audit trail",
                        replayed.count, watermark)
            await self.record("decisions_replayed", details={
                "after_seq": watermark, "through_seq": replayed.last_seq,
                "decisions": replayed.count, "devices": sorted(replayed.devices or ())})
            # What was replayed is written back before the watermark moves past it.
            for dev_id in sorted(replayed.devices or ()):
                self.store.save_device(self._saved_registry[dev_id])
            for ig in self._ignored.values():
                self.store.save_ignored(ig)
            self._save_watermark(replayed.last_seq)
        await self.record("agent_started", details={
            "version": __version__, "site": self.config.site.id, "pid": os.getpid(),
            "plugins": self.plugins.loaded()})
        for saved in self._saved_registry.values():
            if saved.get("ignored") and "plugin" in saved:
                cand = Candidate(
                    identity=saved["id"], plugin=saved["plugin"], source=saved["source"],
                    vendor=saved["vendor"], model=saved["model"], address=saved["address"],
                    bus_id=saved.get("bus_id"), properties=saved.get("properties", {}))
                dev = Device(cand, saved.get("first_seen", time.time()))
                dev.ignored = saved["ignored"]
                self.devices[dev.id] = dev
        await self._start_discovery()
        log.info("agent up: site %s, socket %s, state %s", self.config.site.id,
                 self.socket_path, self.state_dir)

    async def run_forever(self) -> None:
        await self._stopping.wait()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        for dev in self.devices.values():
            if dev.supervisor:
                dev.supervisor.stop()
        if self.mdns is not None:
            await self.mdns.close()
        if self._api is not None:
            await self._api.stop()
        # Commands already sent to hardware finish and record their outcome first.
        commands = [t for t in self._tasks if t.get_name().startswith(_COMMAND)]
        if commands:
            await asyncio.wait(commands, timeout=self.timing.call_timeout + 5)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for dev in self.devices.values():
            if dev.supervisor:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(dev.supervisor.driver.close(), 1)
        for bus in self.buses.values():
            await bus.close()
        if self.audit.is_open:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.record("agent_stopped"), 5)
            await asyncio.get_running_loop().run_in_executor(None, self.audit.close)
        await self.store.close()
        self.plugins.shutdown()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ events

    async def record(self, action: str, **fields: Any) -> AuditRecord:
        """Append an event to the audit log and wait until it is durable."""
        return await self.audit.append({"action": action, **fields})

    def record_soon(self, action: str, **fields: Any) -> None:
        """Append an event without waiting (device observations on the poll path)."""
        fut = self.audit.append_nowait({"action": action, **fields}, fail_fast=False)

        def done(f: asyncio.Future[AuditRecord]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.debug("audit append of %s failed: %s", action, f.exception())

        fut.add_done_callback(done)

    def _audit_committed(self, rec: AuditRecord) -> None:
        self.hub.publish("audit", rec)

    def _device_changed(self, dev: Device) -> None:
        self.hub.publish("device", dev.to_json())

    # ------------------------------------------------------------------ discovery

    async def _start_discovery(self) -> None:
        probes: dict[str, list[BusProbe]] = await self.plugins.call_each("edge_agent_bus_probes")
        for bus_cfg in self.config.buses:
            chosen = [
                (name, p) for name, plist in probes.items() for p in plist
                if bus_cfg.protocol is None or p.protocol == bus_cfg.protocol
            ]
            if not chosen:
                why = (f"no loaded plugin has a bus probe for protocol {bus_cfg.protocol!r}"
                       if bus_cfg.protocol else "no loaded plugin has a bus probe")
                self.inbox[f"bus:{bus_cfg.id}"] = {"id": f"bus:{bus_cfg.id}", "what":
                                                   f"bus {bus_cfg.id} ({bus_cfg.port})",
                                                   "why": why, "since": time.time()}
                log.error("bus %s: %s", bus_cfg.id, why)
                continue
            self.spawn(self._bus_loop(bus_cfg.id, bus_cfg.port, chosen, bus_cfg.baudrate),
                       f"bus:{bus_cfg.id}")
        for static in self.config.devices:
            cand = Candidate(identity=static.identity, plugin=static.plugin, source="static",
                             vendor="", model=static.model, address=static.address,
                             properties=static.properties)
            await self.offer(cand)
        if self.config.discovery.serial.usb_autodetect:
            usb: dict[str, list[UsbMatcher]] = await self.plugins.call_each(
                "edge_agent_usb_matchers")
            self.spawn(self._usb_loop(usb, probes), "usb-discovery")
        if self.config.discovery.mdns.enabled:
            await self._start_mdns()
        self.spawn(self._reacquire_loop(), "reacquire")

    async def _bus_loop(self, bus_id: str, port: str, probes: list[tuple[str, BusProbe]],
                        baudrate: int | None) -> None:
        first = probes[0][1].settings
        settings = SerialSettings(baudrate or first.baudrate, first.bytesize, first.parity,
                                  first.stopbits)
        bus = SerialBus(bus_id, port, settings)
        self.buses[bus_id] = bus
        info = self.bus_info.setdefault(bus_id, {"id": bus_id, "port": port,
                                                 "settings": settings.describe(),
                                                 "answering": [], "last_probe": None,
                                                 "error": ""})
        attempt = 0
        while not self._stopping.is_set():
            try:
                await bus.open()
            except Exception as exc:  # TransportError, or anything a transport raises
                if not info["error"]:  # once per outage; a traceback only if unexpected
                    log.error("bus %s: %s; retrying with backoff", bus_id, exc,
                              exc_info=not isinstance(exc, DriverError))
                info["error"] = str(exc)
                await asyncio.sleep(full_jitter(attempt, self.timing.backoff_initial,
                                                self.timing.backoff_max, _rng))
                attempt += 1
                continue
            if info["error"]:
                log.warning("bus %s: port open again", bus_id)
            info["error"] = ""
            attempt = 0
            answering: list[str] = []
            for plugin, probe in probes:
                settings_map = self._settings(plugin)
                try:
                    async with asyncio.timeout(max(10.0, self.timing.call_timeout * 8)):
                        async for cand in probe.probe(bus, settings_map):
                            answering.append(cand.address)
                            await self.offer(cand, bus=bus)
                except TimeoutError:
                    info["error"] = f"{plugin} bus probe did not finish in time"
                except DriverError as exc:
                    info["error"] = str(exc)
                except Exception as exc:
                    self.plugins.isolate(plugin, f"bus probe raised {exc!r}")
            info["answering"] = answering
            info["last_probe"] = time.time()
            await self._wait_stop(self.config.agent.probe_interval)

    async def _wait_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _usb_loop(self, usb: dict[str, list[UsbMatcher]],
                        probes: dict[str, list[BusProbe]]) -> None:
        matchers = [(name, m) for name, ms in usb.items() for m in ms]
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            ports = await loop.run_in_executor(None, usb_ports)
            for port, plugins in matching(ports, matchers):
                if port.bus_id in self.bus_info:  # already owned by a bus task
                    continue
                chosen = [(n, p) for n in plugins for p in probes.get(n, [])]
                if chosen:
                    log.info("USB adapter %04x:%04x at %s: probing for %s", port.vid,
                             port.pid, port.stable, ", ".join(plugins))
                    self.bus_info[port.bus_id] = {
                        "id": port.bus_id, "port": port.stable,
                        "settings": chosen[0][1].settings.describe(), "answering": [],
                        "last_probe": None, "error": "", "usb": f"{port.vid:04x}:{port.pid:04x}"}
                    self.spawn(self._bus_loop(port.bus_id, port.stable, chosen, None),
                               f"bus:{port.bus_id}")
            await self._wait_stop(10.0)

    async def _start_mdns(self) -> None:
        matchers: dict[str, list[MdnsMatcher]] = await self.plugins.call_each(
            "edge_agent_mdns_matchers")
        for name, ms in matchers.items():
            for m in ms:
                self._mdns_matchers.setdefault(m.service_type, []).append((name, m))
        if not self._mdns_matchers:
            return
        self.mdns = MdnsBrowser(self.config.discovery.mdns.interfaces,
                                list(self._mdns_matchers), self._on_mdns, self._mdns_problem)
        try:
            await self.mdns.start()
        except OSError as exc:
            log.error("mDNS: cannot browse on %s: %s", self.config.discovery.mdns.interfaces,
                      exc)
            self.alarms["mdns"] = {"id": "mdns", "severity": "warning", "since": time.time(),
                                   "message": f"mDNS discovery unavailable: {exc}"}
            self.mdns = None

    def _mdns_problem(self, name: str, service_type: str, why: str) -> None:
        key = f"mdns:{name}"
        if key not in self.inbox:
            log.warning("mDNS: %s: %s", name, why)
        self.inbox[key] = {"id": key, "what": f"mDNS {name}", "why": why, "since": time.time()}

    async def _on_mdns(self, svc: MdnsService) -> None:
        reasons = []
        for plugin, matcher in self._mdns_matchers.get(svc.service_type, []):
            why = matcher.match(svc.properties)
            if why is not None:
                reasons.append(f"{plugin}: {why}")
                continue
            try:
                cand = await self.plugins.call_one(plugin, "edge_agent_mdns_candidate",
                                                   service=svc,
                                                   settings=self._settings(plugin))
            except PluginError as exc:
                reasons.append(str(exc))
                continue
            if isinstance(cand, Candidate):
                known = self._mdns_names.get(svc.name)
                if known is not None and known != cand.identity:
                    # Anyone on the link can advertise any name: a known name with another
                    # identity is not trusted (the device's own API confirms identity).
                    self._mdns_problem(svc.name, svc.service_type,
                                       f"identity conflict: this name belongs to {known}, "
                                       f"the advertisement claims {cand.identity}; not "
                                       "trusted (adopt it explicitly if it is genuine)")
                    return
                self._mdns_names[svc.name] = cand.identity
                self.inbox.pop(f"mdns:{svc.name}", None)
                await self.offer(cand)
                return
            reasons.append(f"{plugin}: declined the service")
        self._mdns_problem(svc.name, svc.service_type, "; ".join(reasons) or "no plugin matched")

    def _settings(self, plugin: str) -> dict[str, Any]:
        """The plugin's site settings, resolved once at start-up."""
        return dict(self._plugin_settings.get(plugin, {}))

    def _config_source(self) -> str | None:
        try:
            return Path(self.config_path).read_text(encoding="utf-8") if self.config_path \
                else None
        except OSError:
            return None

    # ------------------------------------------------------------------ devices

    async def offer(self, cand: Candidate, *, bus: SerialBus | None = None) -> Device:
        """Take a discovered candidate: register it, and supervise it if adopted."""
        now = time.time()
        dev = self.devices.get(cand.identity)
        if dev is not None:
            if dev.candidate.address != cand.address:
                # Anyone on the LAN can claim any identity: never a move on its word.
                self._address_claim(dev, cand, bus)
                return dev
            dev.last_seen = now
            if dev.supervisor is not None or dev.ignored:
                return dev
        else:
            dev = Device(cand, now)
            saved = self._saved_registry.get(cand.identity)
            if saved:
                dev.first_seen = saved.get("first_seen", now)
                dev.adopted = bool(saved.get("adopted"))
                dev.ignored = saved.get("ignored")
                dev.out_of_service = dict(saved.get("out_of_service") or {})
                dev.compartments = self._saved_comps.get(cand.identity, [])
            self.devices[dev.id] = dev
            self.record_soon("device_discovered", device=dev.id, details={
                "plugin": cand.plugin, "source": cand.source, "address": cand.address,
                "model": cand.model})
        if bus is not None:
            dev.bus = bus
        if not dev.adopted and not dev.ignored and self.config.agent.auto_adopt:
            dev.adopted = True
        self.store.save_device(dev.registry_doc())
        # Clients see the device the moment it is registered; its link state follows.
        self._device_changed(dev)
        if dev.adopted:
            await self._supervise(dev, bus)
        return dev

    # ------------------------------------------------------------------ address claims

    def _address_claim(self, dev: Device, cand: Candidate, bus: SerialBus | None) -> None:
        """A known identity claimed at another address: checked off the discovery path.

        A move is accepted only when the device no longer answers at its address *and*
        proves its identity at the new one. If the old address still answers, the claim
        is a conflict: inbox, critical alarm, audit; the device is not touched, and that
        address is never taken automatically later. Addresses the device really had stay
        known, so it is re-acquired there as soon as it answers again.
        """
        key = f"{dev.id}@{cand.address}"
        if key in self._claims_checking or cand.address in dev.conflicts:
            return
        self._claims_checking.add(key)

        async def check() -> None:
            try:
                await self._check_claim(dev, cand, bus)
            finally:
                self._claims_checking.discard(key)

        self.spawn(check(), f"claim:{key}")

    async def _proves(self, cand: Candidate, bus: SerialBus | None) -> str | None:
        """None if a driver at ``cand``'s address connects and confirms the identity;
        otherwise why not. The driver's connect is where identity is confirmed."""
        ctx = DriverContext(settings=self._settings(cand.plugin), bus=bus,
                            timeout=self.timing.call_timeout)
        try:
            driver = await self.plugins.call_one(cand.plugin, "edge_agent_create_driver",
                                                 candidate=cand, context=ctx)
        except PluginError as exc:
            return str(exc)
        if not isinstance(driver, DeviceDriver):
            return "the plugin gave no driver"
        try:
            async with asyncio.timeout(self.timing.call_timeout * 2):
                await driver.connect()
            return None
        except TimeoutError:
            return "no answer"
        except Exception as exc:  # a driver's own failure, whatever it raises
            return str(exc) or type(exc).__name__
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(driver.close(), 1)

    async def _check_claim(self, dev: Device, cand: Candidate, bus: SerialBus | None) -> None:
        old = dev.candidate
        old_fails = await self._proves(old, dev.bus)
        if old_fails is None:
            self._conflict(dev, cand, f"{dev.id} still answers at {old.address}")
            return
        new_fails = await self._proves(cand, bus)
        if new_fails is not None:
            # Not a conflict (the device is gone from its address): retried by the watch.
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
        self.record_soon("device_address_changed", device=dev.id, details={
            "old": old.address, "new": cand.address, "verified": True, "why": why})
        dev.known[old.address] = (old, dev.bus)
        dev.unproven.pop(cand.address, None)
        dev.candidate, dev.last_seen = cand, time.time()
        if bus is not None:
            dev.bus = bus
        self.store.save_device(dev.registry_doc())
        if dev.supervisor is not None:
            # Same hardware at a new address: a fresh driver for the new address.
            dev.supervisor.stop()
            dev.supervisor = None
            await self._supervise(dev, dev.bus)
        self._device_changed(dev)

    def _conflict(self, dev: Device, cand: Candidate, why: str) -> None:
        dev.conflicts.add(cand.address)
        item = f"conflict:{dev.id}@{cand.address}"
        text = (f"{cand.address} ({cand.source}) claims to be {dev.id}, but {why}: not "
                "trusted; the device stays where it is (possible spoofing)")
        log.error("identity conflict: %s", text)
        self.inbox[item] = {"id": item, "what": f"{cand.source} {cand.address}", "why": text,
                            "since": time.time(), "device": dev.id}
        self.alarms[item] = {"id": item, "severity": "critical", "since": time.time(),
                             "device": dev.id, "code": "identity_conflict",
                             "message": f"{dev.id}: identity claimed by {cand.address}"}
        self.record_soon("device_identity_conflict", device=dev.id, outcome="refused",
                         details={"claimed_at": cand.address, "pinned": dev.candidate.address,
                                  "source": cand.source, "why": why})

    async def _reacquire_loop(self) -> None:
        """Offline devices with an address they really had (or an unproven claim made
        while they were gone) are tried there until one answers as the same device."""
        while not self._stopping.is_set():
            await self._wait_stop(max(1.0, self.timing.backoff_max))
            for dev in list(self.devices.values()):
                if dev.supervisor is None or dev.link != "offline":
                    continue
                for address, (cand, bus) in [*dev.known.items(), *dev.unproven.items()]:
                    if address != dev.candidate.address \
                            and await self._proves(cand, bus) is None:
                        await self._move(dev, cand, bus, why="answers there again")
                        break

    async def _supervise(self, dev: Device, bus: SerialBus | None) -> None:
        ctx = DriverContext(settings=self._settings(dev.candidate.plugin), bus=bus,
                            timeout=self.timing.call_timeout)
        try:
            driver = await self.plugins.call_one(dev.candidate.plugin,
                                                 "edge_agent_create_driver",
                                                 candidate=dev.candidate, context=ctx)
        except PluginError as exc:
            dev.error = str(exc)
            return
        if driver is None or not isinstance(driver, DeviceDriver):
            dev.error = (f"plugin {dev.candidate.plugin} returned no usable driver "
                         f"({type(driver).__name__})")
            log.error("device %s: %s", dev.id, dev.error)
            return
        dev.error = ""
        sup = DeviceSupervisor(dev.id, dev.candidate.plugin, driver, self.timing,
                               on_link=self._on_link, on_state=self._on_state,
                               on_plugin_fault=self._plugin_fault)
        dev.supervisor = sup
        dev.task = self.spawn(sup.run(), f"device:{dev.id}")

    def _plugin_fault(self, plugin: str, detail: str) -> None:
        self.plugins.isolate(plugin, detail)

    def _on_link(self, sup: DeviceSupervisor, old: Link, new: Link, reason: str) -> None:
        dev = self.devices[sup.device_id]
        if new is not Link.CONNECTING:
            self.record_soon(f"device_{new.value}", device=dev.id,
                             details={"from": old.value, "reason": reason})
        self._device_changed(dev)

    def _on_state(self, sup: DeviceSupervisor, state: DeviceState) -> None:
        dev = self.devices[sup.device_id]
        new = [comp_json(c) for c in state.compartments]
        old = {c["index"]: c for c in dev.compartments}
        for c in new:
            before = old.get(c["index"])
            if before is None:
                continue
            if before["door"] != c["door"] and c["door"] != "unknown":
                self.record_soon("door_opened" if c["door"] == "open" else "door_closed",
                                 device=dev.id, compartment=c["index"], actor=dev.id)
            if before["item"] != c["item"] and c["item"] != "unknown":
                returned = c["item"] == "present"
                # The tag of what was taken is in the reading before; of what came back, now.
                self.record_soon("item_returned" if returned else "item_removed",
                                 device=dev.id, compartment=c["index"],
                                 item=c.get("tag") if returned else before.get("tag"),
                                 actor=dev.id)
        dev.compartments = new
        self.store.save_compartments(dev.id, new)
        self._device_alarms(dev, state)
        self._device_changed(dev)

    def _device_alarms(self, dev: Device, state: DeviceState) -> None:
        """Raise alarms that appeared in this reading and clear those that went away.
        Each transition is audited once; an unchanged alarm costs nothing."""
        now = time.time()
        seen: set[str] = set()
        for a in state.alarms:
            seen.add(a.key)
            shown = dev.alarms.get(a.key)
            if shown is not None:
                shown["message"] = a.message  # e.g. a growing "open for N s"
                continue
            shown = {"id": f"device:{dev.id}:{a.key}", "device": dev.id, "code": a.code,
                     "compartment": a.compartment, "severity": a.severity.value,
                     "message": f"{dev.id}: {a.message}", "since": now}
            dev.alarms[a.key] = shown
            log.warning("alarm raised on %s: %s", dev.id, a.message)
            self.record_soon("alarm_raised", device=dev.id, compartment=a.compartment,
                             details={"code": a.code, "severity": a.severity.value,
                                      "message": a.message})
        for key in [k for k in dev.alarms if k not in seen]:
            gone = dev.alarms.pop(key)
            log.info("alarm cleared on %s: %s", dev.id, gone["message"])
            self.record_soon("alarm_cleared", device=dev.id, compartment=gone["compartment"],
                             details={"code": gone["code"], "raised": gone["since"],
                                      "seconds": round(now - gone["since"], 1)})

    # ------------------------------------------------------------------ commands

    def device(self, device_id: str) -> Device:
        dev = self.devices.get(device_id)
        if dev is None:
            raise DeviceUnavailable(f"no device {device_id!r}; see 'edge-agent devices'")
        return dev

    def _refuse_if_unrecordable(self) -> None:
        """Before anything moves: refuse (truthfully, nothing sent) if the outcome could
        not be recorded."""
        why = self.audit.command_refusal()
        if why is not None:
            raise StoreUnavailable(why)

    async def _sent(self, coro: Coroutine[Any, Any, Any], name: str) -> Any:
        """Run the part of a command after its request is on disk: the hardware call
        and the outcome record. It runs to the end even if the caller goes away."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None \
                    and not isinstance(t.exception(), EdgeAgentError):
                log.error("command %s failed: %r", name, t.exception(), exc_info=t.exception())

        task.add_done_callback(done)
        return await asyncio.shield(task)

    async def unlock(self, device_id: str, compartment: int, *, actor: str, reason: str
                     ) -> dict[str, Any]:
        """Unlock one compartment. The request is durable before the board is told; the
        outcome is recorded whatever happens after (in the reserved space if the disk
        fills meanwhile), and the answer always says what the board was told."""
        dev = self.device(device_id)
        if dev.supervisor is None:
            raise DeviceUnavailable(f"device {device_id} is {dev.link}, not supervised")
        self._refuse_if_unrecordable()
        oos = dev.out_of_service.get(str(compartment))
        if oos:
            raise DeviceUnavailable(f"compartment {compartment} of {device_id} is out of "
                                    f"service ({oos['reason']}, by {oos['actor']})")
        fields = {"device": device_id, "compartment": compartment, "actor": actor,
                  "reason": reason}
        request = await self.record("unlock_requested", **fields)
        sup = dev.supervisor
        return dict(await self._sent(self._unlock_sent(sup, request["seq"], fields),
                                     f"{_COMMAND}unlock:{device_id}:{compartment}"))

    async def _unlock_sent(self, sup: DeviceSupervisor, request_seq: int,
                           fields: dict[str, Any]) -> dict[str, Any]:
        compartment = fields["compartment"]
        try:
            state = await sup.unlock(compartment)
        except EdgeAgentError as exc:
            # A timeout means the board may have acted: "unknown", never "refused".
            unknown = isinstance(exc, DeviceTimeout)
            rec = await self.audit.append_outcome({
                "action": "unlock", "outcome": "unknown" if unknown else "failed",
                "details": {"error": str(exc), "request_seq": request_seq}, **fields})
            if unknown:
                raise DeviceTimeout(f"{exc}: the unlock was sent and the board did not "
                                    f"answer; the door may have opened (audit #"
                                    f"{rec.get('seq') or 'pending'}, outcome unknown)") from exc
            raise
        comp = next((comp_json(c) for c in state.compartments if c.index == compartment), None)
        done = await self.audit.append_outcome({
            "action": "unlock", "outcome": "ok",
            "details": {"request_seq": request_seq, "compartment_state": comp}, **fields})
        return {"device": fields["device"], "compartment": compartment, "state": comp,
                "audit_seq": done.get("seq"), **_pending(done)}

    async def identify(self, device_id: str, *, actor: str) -> dict[str, Any]:
        dev = self.device(device_id)
        if dev.supervisor is None:
            raise DeviceUnavailable(f"device {device_id} is {dev.link}, not supervised")
        self._refuse_if_unrecordable()
        return dict(await self._sent(self._identify_sent(dev.supervisor, device_id, actor),
                                     f"{_COMMAND}identify:{device_id}"))

    async def _identify_sent(self, sup: DeviceSupervisor, device_id: str, actor: str
                             ) -> dict[str, Any]:
        try:
            await sup.identify()
        except EdgeAgentError as exc:
            await self.audit.append_outcome({"action": "identify", "device": device_id,
                                             "actor": actor, "outcome": "failed",
                                             "details": {"error": str(exc)}})
            raise
        rec = await self.audit.append_outcome({"action": "identify", "device": device_id,
                                               "actor": actor})
        return {"ok": True, "audit_seq": rec.get("seq"), **_pending(rec)}

    async def set_out_of_service(self, device_id: str, compartment: int, *, actor: str,
                                 reason: str, out: bool) -> dict[str, Any]:
        """Take a compartment out of service (unlocks refused) or put it back. Audited."""
        dev = self.device(device_id)
        if dev.compartments and not any(c["index"] == compartment for c in dev.compartments):
            raise DeviceUnavailable(f"{device_id} has no compartment {compartment}")
        rec = await self.record("out_of_service" if out else "back_in_service",
                                device=device_id, compartment=compartment, actor=actor,
                                reason=reason)
        # The agent refuses unlocks of the compartment whatever happens next; a device
        # that keeps its own out-of-service flag (a REST gateway) is told as well.
        pushed: bool | str = False
        if dev.supervisor is not None:
            try:
                pushed = await dev.supervisor.set_out_of_service(compartment, out, reason)
            except EdgeAgentError as exc:
                pushed = f"not applied on the device: {exc}"
                log.warning("device %s compartment %s: out of service %s", device_id,
                            compartment, pushed)
                self.record_soon("out_of_service_push", device=device_id,
                                 compartment=compartment, outcome="failed",
                                 details={"error": str(exc), "request_seq": rec["seq"]})
        if out:
            dev.out_of_service[str(compartment)] = {"reason": reason, "actor": actor,
                                                    "since": time.time(), "seq": rec["seq"]}
        else:
            dev.out_of_service.pop(str(compartment), None)
        self.store.save_device(dev.registry_doc())
        self._save_watermark(rec["seq"])
        self._device_changed(dev)
        return {"device": device_id, "compartment": compartment, "out_of_service": out,
                "audit_seq": rec["seq"], "device_told": pushed}

    def _save_watermark(self, seq: int) -> None:
        """With the registry changes queued before it: they land in one atomic write."""
        self.store.save_meta({"id": decisions.WATERMARK, "seq": seq})

    def inbox_items(self) -> list[dict[str, Any]]:
        """What was found and not adopted, with why; ignored entries are left out."""
        items = [dict(v) for k, v in self.inbox.items() if k not in self._ignored]
        for dev in self.devices.values():
            if dev.ignored:
                continue
            if not dev.adopted:
                items.append({"id": dev.id, "what": f"{dev.candidate.vendor} "
                              f"{dev.candidate.model} at {dev.candidate.address}",
                              "why": "not adopted (auto_adopt is off)", "since": dev.first_seen,
                              "device": dev.id})
            elif dev.error:
                items.append({"id": dev.id, "what": dev.candidate.address, "why": dev.error,
                              "since": dev.first_seen, "device": dev.id})
        return sorted(items, key=lambda e: e["id"])

    async def adopt(self, item_id: str, *, actor: str, reason: str) -> dict[str, Any]:
        dev = self.devices.get(item_id)
        if dev is None:
            raise DeviceUnavailable(f"{item_id!r} is not a device that can be adopted")
        rec = await self.record("device_adopted", device=item_id, actor=actor, reason=reason)
        dev.adopted, dev.ignored = True, None
        self._ignored.pop(item_id, None)
        self.store.save_device(dev.registry_doc())
        self._save_watermark(rec["seq"])
        if dev.supervisor is None:
            await self._supervise(dev, dev.bus)
        self._device_changed(dev)
        return {"id": item_id, "adopted": True, "audit_seq": rec["seq"]}

    async def ignore(self, item_id: str, *, actor: str, reason: str) -> dict[str, Any]:
        """Ignore a discovered device or inbox entry; persists across restarts."""
        if item_id not in self.devices and item_id not in self.inbox:
            raise DeviceUnavailable(f"nothing called {item_id!r} in the discovery inbox")
        rec = await self.record("discovery_ignored", device=item_id, actor=actor,
                                reason=reason)
        self._ignored[item_id] = {"id": item_id, "reason": reason, "actor": actor,
                                  "since": time.time()}
        self.alarms.pop(item_id, None)  # e.g. an identity conflict a technician judged
        self.store.save_ignored(self._ignored[item_id])
        self._save_watermark(rec["seq"])
        dev = self.devices.get(item_id)
        if dev is not None:
            dev.ignored = reason
            dev.adopted = False
            if dev.supervisor is not None:
                dev.supervisor.stop()
                dev.supervisor = None
            self.store.save_device(dev.registry_doc())
            self._device_changed(dev)
        return {"id": item_id, "ignored": True, "audit_seq": rec["seq"]}

    def describe_wire(self, dev: Device, chunks: list[bytes]) -> list[str]:
        try:
            out = self.plugins.call_one_sync(dev.candidate.plugin, "edge_agent_describe_wire",
                                             chunks=chunks)
        except PluginError:
            return [""] * len(chunks)
        if not isinstance(out, list) or len(out) != len(chunks):
            return [""] * len(chunks)
        return [str(x) for x in out]

    # ------------------------------------------------------------------ views

    def status(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for dev in self.devices.values():
            counts[dev.link] = counts.get(dev.link, 0) + 1
        return {
            "site": {"id": self.config.site.id, "name": self.config.site.name},
            "agent": {"version": __version__, "pid": os.getpid(), "boot_id": self.boot_id,
                      "started": self.started, "uptime": time.time() - self.started,
                      "state_dir": str(self.state_dir), "socket": str(self.socket_path),
                      "config": self.config_path},
            "devices": {"total": len(self.devices), **counts},
            "audit": {"last_seq": self.audit.last_seq, "error": self.audit.error,
                      "reserve": self.audit.reserve_short or "held",
                      "sealed_seq": self.audit.sealer.last["seq"] if self.audit.sealer.last
                      else None,
                      "commits": self.audit.commits,
                      "damaged_lines": self.audit.damaged_lines},
            "store": {"error": self.store.last_error},
            "alarms": self.all_alarms(),
            "inbox": len(self.inbox_items()),
            "buses": list(self.bus_info.values()),
            "mdns": self.mdns.to_json() if self.mdns else None,
            "plugins": {n: r.status for n, r in self.plugins.records.items()},
            "health": self._health(),
        }

    def all_alarms(self) -> list[dict[str, Any]]:
        """Agent alarms (store, audit, mDNS) then every device's, critical first."""
        out = list(self.alarms.values())
        for dev in self.devices.values():
            out.extend(dev.alarms.values())
        out.sort(key=lambda a: (a["severity"] != "critical", a["since"]))
        return out

    def _health(self) -> str:
        if self.audit.command_refusal() or any(a["severity"] == "critical"
                                               for a in self.all_alarms()):
            return "degraded"
        return "ok"

    def _audit_alarms(self) -> None:
        now = time.time()
        if self.audit.damaged_lines:
            self.alarms["audit:damaged"] = {
                "id": "audit:damaged", "severity": "critical", "since": now,
                "message": f"{self.audit.damaged_lines} damaged line(s) in the audit log: "
                           "run 'edge-agent audit verify'"}
        if self.audit.index_problems:
            self.alarms["audit:index"] = {
                "id": "audit:index", "severity": "critical", "since": now,
                "message": f"{len(self.audit.index_problems)} audit index(es) did not match "
                           f"their segments and were rebuilt: {self.audit.index_problems[0]}"
                           "; run 'edge-agent audit verify'"}
        if self.audit.sealer.problem:
            self.alarms["audit:seal"] = {"id": "audit:seal", "severity": "critical",
                                         "since": now, "message": self.audit.sealer.problem}


def _pending(rec: AuditRecord) -> dict[str, Any]:
    """What an answer says when its outcome record waits in memory for the disk."""
    if not rec.get("pending"):
        return {}
    return {"audit_pending": f"the outcome is kept in memory and written when the disk "
                             f"takes writes again ({rec.get('error')})"}


_rng = random.Random()

"""Discovery coordination: every source of candidates, feeding the device registry.

* RS-485 and serial buses from the site config, and USB adapters a plugin claims: one
  :class:`~edge_agent.bus.SerialBus` owner each, probed by the plugins' bus probes;
* ``[[devices]]`` listed in the site config;
* mDNS services the plugins' matchers want (a name is bound to the identity it first
  claimed; another identity under a known name goes to the inbox).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from edge_agent.alarms import Alarm
from edge_agent.bus import SerialBus
from edge_agent.contract import (
    BusProbe,
    Candidate,
    MdnsMatcher,
    MdnsService,
    SerialSettings,
    UsbMatcher,
)
from edge_agent.devices import DeviceRegistry
from edge_agent.discovery.mdns import MdnsBrowser
from edge_agent.discovery.serialports import matching, usb_ports
from edge_agent.errors import DriverError, PluginError
from edge_agent.inbox import InboxItem
from edge_agent.runtime import Runtime
from edge_agent.supervisor import full_jitter

log = logging.getLogger(__name__)
_rng = random.Random()


class Discovery:
    def __init__(self, rt: Runtime, registry: DeviceRegistry) -> None:
        self.rt = rt
        self.registry = registry
        self.buses: dict[str, SerialBus] = {}
        self.bus_info: dict[str, dict[str, Any]] = {}
        self.mdns: MdnsBrowser | None = None
        self._mdns_matchers: dict[str, list[tuple[str, MdnsMatcher]]] = {}
        self._mdns_names: dict[str, str] = {}  # mDNS instance name -> device identity

    async def start(self) -> None:
        rt = self.rt
        probes: dict[str, list[BusProbe]] = await rt.plugins.call_each("edge_agent_bus_probes")
        for bus_cfg in rt.config.buses:
            chosen = [
                (name, p) for name, plist in probes.items() for p in plist
                if bus_cfg.protocol is None or p.protocol == bus_cfg.protocol
            ]
            if not chosen:
                why = (f"no loaded plugin has a bus probe for protocol {bus_cfg.protocol!r}"
                       if bus_cfg.protocol else "no loaded plugin has a bus probe")
                item = f"bus:{bus_cfg.id}"
                self.registry.inbox[item] = InboxItem(item, f"bus {bus_cfg.id} "
                                                      f"({bus_cfg.port})", why)
                log.error("bus %s: %s", bus_cfg.id, why)
                continue
            rt.spawn(self._bus_loop(bus_cfg.id, bus_cfg.port, chosen, bus_cfg.baudrate),
                     f"bus:{bus_cfg.id}")
        for static in rt.config.devices:
            record = rt.plugins.records.get(static.plugin)
            info = record.info if record is not None else None
            cand = Candidate(identity=static.identity, plugin=static.plugin, source="static",
                             vendor="", model=static.model, address=static.address,
                             properties=static.properties,
                             device_class=info.device_class if info else "locker")
            await self.registry.offer(cand)
        if rt.config.discovery.serial.usb_autodetect:
            usb: dict[str, list[UsbMatcher]] = await rt.plugins.call_each(
                "edge_agent_usb_matchers")
            rt.spawn(self._usb_loop(usb, probes), "usb-discovery")
        if rt.config.discovery.mdns.enabled:
            await self._start_mdns()

    async def close(self) -> None:
        if self.mdns is not None:
            await self.mdns.close()

    async def close_buses(self) -> None:
        for bus in self.buses.values():
            await bus.close()

    # ------------------------------------------------------------------ buses

    async def _bus_loop(self, bus_id: str, port: str, probes: list[tuple[str, BusProbe]],
                        baudrate: int | None) -> None:
        rt = self.rt
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
        while not rt.stopping.is_set():
            try:
                await bus.open()
            except Exception as exc:  # TransportError, or anything a transport raises
                if not info["error"]:  # once per outage; a traceback only if unexpected
                    log.error("bus %s: %s; retrying with backoff", bus_id, exc,
                              exc_info=not isinstance(exc, DriverError))
                info["error"] = str(exc)
                await asyncio.sleep(full_jitter(attempt, rt.timing.backoff_initial,
                                                rt.timing.backoff_max, _rng))
                attempt += 1
                continue
            if info["error"]:
                log.warning("bus %s: port open again", bus_id)
            info["error"] = ""
            attempt = 0
            answering: list[str] = []
            for plugin, probe in probes:
                try:
                    async with asyncio.timeout(max(10.0, rt.timing.call_timeout * 8)):
                        async for cand in probe.probe(bus, rt.settings(plugin)):
                            answering.append(cand.address)
                            await self.registry.offer(cand, bus=bus)
                except TimeoutError:
                    info["error"] = f"{plugin} bus probe did not finish in time"
                except DriverError as exc:
                    info["error"] = str(exc)
                except Exception as exc:
                    rt.plugins.isolate(plugin, f"bus probe raised {exc!r}")
            info["answering"] = answering
            info["last_probe"] = time.time()
            await rt.wait_stop(rt.config.agent.probe_interval)

    async def _usb_loop(self, usb: dict[str, list[UsbMatcher]],
                        probes: dict[str, list[BusProbe]]) -> None:
        matchers = [(name, m) for name, ms in usb.items() for m in ms]
        loop = asyncio.get_running_loop()
        while not self.rt.stopping.is_set():
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
                    self.rt.spawn(self._bus_loop(port.bus_id, port.stable, chosen, None),
                                  f"bus:{port.bus_id}")
            await self.rt.wait_stop(10.0)

    # ------------------------------------------------------------------ mDNS

    async def _start_mdns(self) -> None:
        rt = self.rt
        matchers: dict[str, list[MdnsMatcher]] = await rt.plugins.call_each(
            "edge_agent_mdns_matchers")
        for name, ms in matchers.items():
            for m in ms:
                self._mdns_matchers.setdefault(m.service_type, []).append((name, m))
        if not self._mdns_matchers:
            return
        self.mdns = MdnsBrowser(rt.config.discovery.mdns.interfaces,
                                list(self._mdns_matchers), self._on_mdns, self._mdns_problem)
        try:
            await self.mdns.start()
        except OSError as exc:
            log.error("mDNS: cannot browse on %s: %s", rt.config.discovery.mdns.interfaces,
                      exc)
            rt.alarms.raise_(Alarm("mdns", "warning", f"mDNS discovery unavailable: {exc}"))
            self.mdns = None

    def _mdns_problem(self, name: str, service_type: str, why: str) -> None:
        key = f"mdns:{name}"
        if key not in self.registry.inbox:
            log.warning("mDNS: %s: %s", name, why)
        self.registry.inbox[key] = InboxItem(key, f"mDNS {name}", why)

    async def _on_mdns(self, svc: MdnsService) -> None:
        tag = self.rt.config.discovery.mdns.site_tag
        if tag is not None and svc.properties.get("site") != tag:
            theirs = svc.properties.get("site")
            self._mdns_problem(svc.name, svc.service_type,
                               f"advertises site {theirs!r}, this site's tag is {tag!r}"
                               if theirs is not None else
                               f"carries no TXT site tag; this site takes only {tag!r} "
                               "([discovery.mdns] site_tag)")
            return
        reasons = []
        for plugin, matcher in self._mdns_matchers.get(svc.service_type, []):
            why = matcher.match(svc.properties)
            if why is not None:
                reasons.append(f"{plugin}: {why}")
                continue
            try:
                cand = await self.rt.plugins.call_one(plugin, "edge_agent_mdns_candidate",
                                                      service=svc,
                                                      settings=self.rt.settings(plugin))
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
                self.registry.inbox.pop(f"mdns:{svc.name}", None)
                await self.registry.offer(cand)
                return
            reasons.append(f"{plugin}: declined the service")
        self._mdns_problem(svc.name, svc.service_type, "; ".join(reasons) or "no plugin matched")

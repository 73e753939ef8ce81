"""Hook implementations of the armoury cabinet plugin (entry point ``armoury``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from edge_agent.contract import Candidate, DriverContext, MdnsMatcher, MdnsService, PluginInfo
from edge_agent.errors import ConfigError
from edge_agent.hookspecs import hookimpl
from edge_agent_armoury import PLUGIN, SERVICE_TYPE, __version__
from edge_agent_armoury.driver import CabinetDriver, Endpoint
from edge_agent_armoury.profile import ProfileLibrary
from edge_agent_armoury.simulator import CabinetSimulator

log = logging.getLogger(__name__)

_libraries: dict[tuple[str, ...], ProfileLibrary] = {}
_guard = threading.Lock()


def library(settings: Mapping[str, Any]) -> ProfileLibrary:
    """The profile library for these site settings (built once per set of directories)."""
    dirs = tuple(str(d) for d in settings.get("profile_dirs") or ())
    with _guard:
        lib = _libraries.get(dirs)
        if lib is None:
            lib = _libraries[dirs] = ProfileLibrary(dirs)
            for problem in lib.problems:
                log.error("armoury: %s", problem)
        return lib


@hookimpl
def edge_agent_plugin_info() -> PluginInfo:
    return PluginInfo(name=PLUGIN, vendor="edge-agent", version=__version__, contract="1.4",
                      device_class="armoury",
                      description="Modbus armoury cabinets (TCP/RTU) from device profiles: "
                                  + ", ".join(library({}).names()))


@hookimpl
def edge_agent_mdns_matchers() -> list[MdnsMatcher]:
    return [MdnsMatcher(SERVICE_TYPE, txt={"profile": "*", "serial": "*"},
                        description="Modbus TCP cabinet advertising its device profile")]


@hookimpl
def edge_agent_mdns_candidate(service: MdnsService, settings: Mapping[str, Any]
                              ) -> Candidate | None:
    props = service.properties
    name = props["profile"]
    try:
        profile = library(settings).get(name)  # site profile_dirs count here too
    except ConfigError as exc:
        log.warning("armoury: %s advertises %s", service.name, exc)
        return None
    unit = props.get("unit", "")
    host = service.addresses[0]
    return Candidate(
        identity=f"{PLUGIN}:{props['serial']}", plugin=PLUGIN, source="mdns",
        device_class="armoury",
        vendor=profile.profile.vendor, model=profile.profile.model,
        address=f"modbus-tcp://{host}:{service.port}",
        properties={"profile": name, "serial": props["serial"],
                    "unit": int(unit) if unit.isdigit() else profile.profile.unit,
                    "interface": service.interface, "mdns_name": service.name})


@hookimpl
def edge_agent_create_driver(candidate: Candidate, context: DriverContext) -> CabinetDriver:
    p = candidate.properties
    if "profile" not in p:
        raise ConfigError(candidate.identity, [
            f"device {candidate.identity}: properties need profile = \"NAME\" (known: "
            f"{', '.join(library(context.settings).names())})"])
    profile = library(context.settings).get(str(p["profile"]))
    serial = p.get("serial")
    if serial is None and candidate.identity.startswith(f"{PLUGIN}:"):
        serial = candidate.identity.split(":", 1)[1]
    return CabinetDriver(profile, Endpoint.parse(candidate.address),
                         unit=int(p["unit"]) if "unit" in p else None,
                         serial=str(serial) if serial else None, settings=context.settings,
                         timeout=context.timeout)


@hookimpl
def edge_agent_describe_wire(chunks: list[bytes]) -> list[str]:
    return [describe_adu(c) for c in chunks]


@hookimpl
def edge_agent_settings_schema() -> Mapping[str, Any]:
    return {
        "profile_dirs": (list, [], "directories with site device profiles (*.toml)"),
        "door_open_limit_s": (float, 0.0, "door held open alarm after this many seconds "
                                          "(0: the profile's limit)"),
        "request_timeout": (float, 1.0, "seconds to wait for each Modbus answer"),
        "assignments": (dict, {}, "per cabinet serial, slot -> tag id of the weapon "
                                  "that belongs there"),
    }


@hookimpl
def edge_agent_simulator(options: Mapping[str, Any]) -> CabinetSimulator:
    return CabinetSimulator.from_options(options)


FUNCTIONS = {1: "read coils", 2: "read discrete inputs", 3: "read holding registers",
             4: "read input registers", 5: "write coil", 6: "write register",
             15: "write coils", 16: "write registers"}
EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
              4: "server device failure", 6: "server device busy"}


def describe_adu(adu: bytes) -> str:
    """A Modbus ADU as the wire view shows it (TCP with its MBAP header, or RTU)."""
    if len(adu) >= 8 and adu[2:4] == b"\0\0" and int.from_bytes(adu[4:6], "big") == len(adu) - 6:
        where, unit, pdu = f"tid {int.from_bytes(adu[0:2], 'big')} ", adu[6], adu[7:]
    elif len(adu) >= 4:
        where, unit, pdu = "rtu ", adu[0], adu[1:-2]
    else:
        return "too short for Modbus"
    if not pdu:
        return where + f"unit {unit}: no PDU"
    fc = pdu[0]
    if fc & 0x80:
        code = pdu[1] if len(pdu) > 1 else 0
        return where + f"unit {unit} EXCEPTION to {FUNCTIONS.get(fc & 0x7F, fc & 0x7F)}: " \
            f"{EXCEPTIONS.get(code, code)}"
    text = where + f"unit {unit} {FUNCTIONS.get(fc, f'function {fc}')}"
    if fc in (1, 2, 3, 4, 5, 6, 15, 16) and len(pdu) == 5:
        text += f" @{int.from_bytes(pdu[1:3], 'big')} x{int.from_bytes(pdu[3:5], 'big')}"
    elif fc in (1, 2, 3, 4) and len(pdu) >= 2:
        text += f" -> {pdu[1]} byte(s)"
    return text

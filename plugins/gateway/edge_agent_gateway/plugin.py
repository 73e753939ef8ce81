"""Hook implementations of the REST locker gateway plugin (entry point ``gateway``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_agent.contract import Candidate, DriverContext, MdnsMatcher, MdnsService, PluginInfo
from edge_agent.hookspecs import hookimpl
from edge_agent_gateway import SERVICE_TYPE, __version__
from edge_agent_gateway.driver import GatewayDriver
from edge_agent_gateway.simulator import GatewaySimulator

PLUGIN = "gateway"


@hookimpl
def edge_agent_plugin_info() -> PluginInfo:
    return PluginInfo(name=PLUGIN, vendor="EdgeSim", version=__version__, contract="1.4",
                      description="REST locker gateways found by mDNS")


@hookimpl
def edge_agent_mdns_matchers() -> list[MdnsMatcher]:
    return [MdnsMatcher(SERVICE_TYPE, txt={"vendor": "edgesim", "serial": "*", "api": "1"},
                        description="REST locker gateway, API v1")]


@hookimpl
def edge_agent_mdns_candidate(service: MdnsService) -> Candidate | None:
    serial = service.properties["serial"]
    host = service.addresses[0]
    tls = service.properties.get("tls") == "1"
    return Candidate(identity=f"{PLUGIN}:{serial}", plugin=PLUGIN, source="mdns",
                     vendor="EdgeSim", model=service.properties.get("model", "?"),
                     address=f"{'https' if tls else 'http'}://{host}:{service.port}",
                     properties={"host": host, "port": service.port, "serial": serial,
                                 "tls": tls, "interface": service.interface,
                                 "mdns_name": service.name})


@hookimpl
def edge_agent_create_driver(candidate: Candidate, context: DriverContext) -> GatewayDriver:
    p = candidate.properties
    tls = bool(p.get("tls")) or candidate.address.startswith("https://")
    return GatewayDriver(str(p["host"]), int(p["port"]), str(p["serial"]), context.settings,
                         events=context.events, tls=tls, pins=context.pins)


@hookimpl
def edge_agent_describe_wire(chunks: list[bytes]) -> list[str]:
    """HTTP exchanges as the driver keeps them: the request line, or the status and the
    start of the JSON answer."""
    return [c.decode("utf-8", "replace").replace("\n", " ")[:160] for c in chunks]


@hookimpl
def edge_agent_settings_schema() -> Mapping[str, Any]:
    return {"request_timeout": (float, 2.0, "seconds to wait for each REST call")}


@hookimpl
def edge_agent_simulator(options: Mapping[str, Any]) -> GatewaySimulator:
    return GatewaySimulator.from_options(options)

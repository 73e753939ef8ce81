"""Hook implementations of the OSDP reader plugin (entry point ``osdp``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_agent.contract import Candidate, DriverContext, PluginInfo
from edge_agent.errors import DriverError
from edge_agent.hookspecs import hookimpl
from edge_agent_osdp import PLUGIN, __version__
from edge_agent_osdp.driver import SETTINGS_SCHEMA, ReaderDriver
from edge_agent_osdp.simulator import ReaderSimulator


@hookimpl
def edge_agent_plugin_info() -> PluginInfo:
    return PluginInfo(name=PLUGIN, vendor="OSDP", version=__version__, contract="1.4",
                      device_class="reader",
                      description="OSDP card readers (libosdp control panel, secure channel)")


@hookimpl
def edge_agent_create_driver(candidate: Candidate, context: DriverContext) -> ReaderDriver:
    p = candidate.properties
    if "key_file" not in p:
        raise DriverError(f"{candidate.identity}: give properties.key_file, the reader's "
                          "secure channel key (32 hex digits, mode 0600)")
    return ReaderDriver(candidate.address, int(p.get("pd_address", 101)),
                        Path(str(p["key_file"])), expect=candidate.identity,
                        events=context.events, settings=context.settings,
                        install_mode=p.get("install_mode") is True)


@hookimpl
def edge_agent_settings_schema() -> Mapping[str, Any]:
    return SETTINGS_SCHEMA


@hookimpl
def edge_agent_simulator(options: Mapping[str, Any]) -> ReaderSimulator:
    return ReaderSimulator.from_options(options)

"""Hook implementations of the Kerong KR-CU16 plugin (entry point ``kerong``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_agent.contract import (
    BusProbe,
    Candidate,
    DriverContext,
    PluginInfo,
    SerialSettings,
    UsbMatcher,
)
from edge_agent.hookspecs import hookimpl
from edge_agent_kerong import __version__, codec
from edge_agent_kerong.driver import PLUGIN, SETTINGS_SCHEMA, KerongBoardDriver, probe_bus
from edge_agent_kerong.simulator import KerongSimulator


@hookimpl
def edge_agent_plugin_info() -> PluginInfo:
    return PluginInfo(
        name=PLUGIN,
        vendor="Kerong",
        version=__version__,
        contract="1.2",
        description="KR-CU16 16-lock boards on RS-485 (19200 8N1) or a TCP bridge",
    )


@hookimpl
def edge_agent_usb_matchers() -> list[UsbMatcher]:
    # The adapters RS-485 buses are usually on (protocols.md section 6). A match only
    # means "probe this port": the boards are identified by answering a status poll.
    return [
        UsbMatcher(0x0403, 0x6001, "FTDI FT232"),
        UsbMatcher(0x1A86, 0x7523, "WCH CH340"),
        UsbMatcher(0x10C4, 0xEA60, "Silicon Labs CP210x"),
        UsbMatcher(0x067B, 0x2303, "Prolific PL2303"),
    ]


@hookimpl
def edge_agent_bus_probes() -> list[BusProbe]:
    return [
        BusProbe(
            protocol="kerong-cu16",
            settings=SerialSettings(19200, 8, "N", 1),
            probe=probe_bus,
            description="status poll (0x30) of board addresses 0-15",
        )
    ]


@hookimpl
def edge_agent_create_driver(
    candidate: Candidate, context: DriverContext
) -> KerongBoardDriver | None:
    if context.bus is None:
        return None
    return KerongBoardDriver(context.bus, int(candidate.properties["board"]), context.settings,
                             getattr(context, "events", None))


@hookimpl
def edge_agent_settings_schema() -> Mapping[str, Any]:
    return SETTINGS_SCHEMA


@hookimpl
def edge_agent_simulator(options: Mapping[str, Any]) -> KerongSimulator:
    return KerongSimulator.from_options(options)


@hookimpl
def edge_agent_describe_wire(chunks: list[bytes]) -> list[str]:
    """Frames, not reads: one decoder runs over the chunks in order, so a reply that a
    TCP bridge delivers a byte or two at a time is shown once, on the chunk that completes
    it (the others say they are part of a frame), not as garbage."""
    out = []
    decoder = codec.Decoder()
    for chunk in chunks:
        garbage, bad = decoder.garbage_bytes, decoder.checksum_errors
        frames = decoder.feed(chunk)
        parts = [describe(f) for f in frames]
        if decoder.garbage_bytes > garbage:
            parts.append(f"{decoder.garbage_bytes - garbage} garbage byte(s)")
        if decoder.checksum_errors > bad:
            parts.append(f"{decoder.checksum_errors - bad} bad checksum(s)")
        if not parts and chunk:
            parts.append("(part of a frame)")
        out.append("; ".join(parts))
    return out


def describe(frame: codec.Frame) -> str:
    if isinstance(frame, codec.StatusReply):
        return f"status reply board {frame.board}: hooks {frame.hooks:016b} ir {frame.ir:016b}"
    names = {codec.CMD_STATUS: "status?", codec.CMD_UNLOCK: "unlock"}
    name = names.get(frame.cmd, f"cmd 0x{frame.cmd:02x}")
    lock = f" lock {frame.lock + 1}" if frame.cmd == codec.CMD_UNLOCK else ""
    return f"{name} board {frame.board}{lock}"

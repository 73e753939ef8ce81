"""The bus doctor: which boards answer on a serial bus, at which line settings, to which
installed plugin, and how fast (``edge-agent scan``).

Every bus probe the installed plugins declare is run at its own line settings and then
at the other standard baud rates with the same framing (a board set to 9600 on a bus
the site thinks is 19200 is the classic call-out), through the core's own
:class:`~edge_agent.bus.SerialBus`, so it works on a tty, a pty and any pyserial URL
(``socket://`` bridges). It never shares a wire with the agent: on a port the agent owns,
the CLI borrows the bus through the API first (see :mod:`edge_agent.lending`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from edge_agent.bus import SerialBus
from edge_agent.contract import BusProbe, SerialSettings
from edge_agent.errors import EdgeAgentError

STANDARD_BAUDS = (9600, 19200, 38400, 57600, 115200, 4800, 2400)


@dataclasses.dataclass
class Trial:
    """One probe at one line setting."""

    plugin: str
    protocol: str
    settings: str
    found: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    transactions: int = 0
    timeouts: int = 0
    errors: int = 0
    rx_bytes: int = 0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def settings_to_try(probe: BusProbe, bauds: list[int] | None) -> list[SerialSettings]:
    """The probe's own settings first, then the other bauds with the same framing."""
    out = [probe.settings]
    for baud in bauds or STANDARD_BAUDS:
        s = dataclasses.replace(probe.settings, baudrate=baud)
        if s not in out:
            out.append(s)
    return out


async def trial(port: str, plugin: str, probe: BusProbe, settings: SerialSettings,
                plugin_settings: Mapping[str, Any], limit: float) -> Trial:
    t = Trial(plugin, probe.protocol, settings.describe())
    bus = SerialBus(f"scan-{plugin}", port, settings)
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            async for cand in probe.probe(bus, plugin_settings):
                t.found.append({"identity": cand.identity, "address": cand.address,
                                "model": cand.model, "vendor": cand.vendor,
                                "rtt_ms": bus.counters.last_rtt_ms})
    except TimeoutError:
        t.error = f"probe did not finish within {limit:g} s"
    except EdgeAgentError as exc:
        t.error = str(exc)
    except Exception as exc:  # a plugin's probe is not ours to trust
        t.error = f"{plugin} probe raised {type(exc).__name__}: {exc}"
    finally:
        t.seconds = round(time.monotonic() - started, 3)
        t.transactions = bus.counters.transactions
        t.timeouts = bus.counters.timeouts
        t.errors = bus.counters.errors
        t.rx_bytes = sum(len(r.data) for r in bus.wire_snapshot(10_000) if r.direction == "rx")
        await bus.close()
    return t


async def scan(port: str, probes: list[tuple[str, BusProbe]],
               settings_of: Mapping[str, Mapping[str, Any]], *,
               bauds: list[int] | None = None, limit: float = 20.0) -> list[Trial]:
    """Every probe at every setting to try, one at a time (one master on the wire)."""
    out = []
    for plugin, probe in probes:
        for settings in settings_to_try(probe, bauds):
            out.append(await trial(port, plugin, probe, settings,
                                   settings_of.get(plugin, {}), limit))
    return out

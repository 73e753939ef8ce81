"""The vendor plugin contract: every hook a plugin may implement.

A plugin is a module (or object) registered under the ``edge_agent.plugins`` entry-point
group. It marks its functions with :data:`hookimpl`::

    # pyproject.toml of the plugin package
    [project.entry-points."edge_agent.plugins"]
    acme = "edge_agent_acme.plugin"

    # edge_agent_acme/plugin.py
    from edge_agent.hookspecs import hookimpl
    from edge_agent.contract import PluginInfo

    @hookimpl
    def edge_agent_plugin_info() -> PluginInfo:
        return PluginInfo(name="acme", vendor="Acme", version="1.2.0", contract="1.0")

Rules the core enforces:

* ``edge_agent_plugin_info`` is required. The ``contract`` it declares must have the
  core's major version (:data:`edge_agent.contract.CONTRACT_VERSION`) and a minor version
  no newer than the core's; otherwise the plugin is refused with that reason.
* A function named ``edge_agent_*`` that is not a hook below (a misspelling) refuses the
  plugin at start-up instead of being silently ignored.
* Each plugin's hook is called on its own: one that raises or hangs is isolated and
  reported by ``edge-agent plugins``; other plugins and their devices carry on.
* Hooks are plain (synchronous) functions and must return quickly; they run in a worker
  thread under a deadline. The event loop waits up to 2 ms for that thread (a hook that
  returns in microseconds costs no trip through the loop), then awaits it: a slow hook
  costs every device on the site those 2 ms, a hung one isolates its plugin. Device I/O
  belongs in the async :class:`DeviceDriver` they return, which the core awaits under a
  deadline per call.

Each hook below says the contract version it appeared in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pluggy

from edge_agent.contract import (
    BusProbe,
    Candidate,
    DeviceDriver,
    DriverContext,
    MdnsMatcher,
    MdnsService,
    PluginInfo,
    Simulator,
    UsbMatcher,
)

PROJECT = "edge_agent"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def edge_agent_plugin_info() -> PluginInfo:  # type: ignore[empty-body]
    """Say who the plugin is and which contract version it was written for.

    Since contract 1.0. Required.

    :returns: a :class:`~edge_agent.contract.PluginInfo`.

    Example::

        @hookimpl
        def edge_agent_plugin_info():
            return PluginInfo(name="kerong", vendor="Kerong", version="1.0.0",
                              contract="1.0", description="KR-CU16 lock boards")
    """


@hookspec
def edge_agent_mdns_matchers() -> list[MdnsMatcher]:  # type: ignore[empty-body]
    """List the DNS-SD service types (and required TXT records) the plugin drives.

    Since contract 1.0. The core browses these types on the interfaces the site config
    names, and offers each resolved service whose TXT records match to
    :func:`edge_agent_mdns_candidate`.

    :returns: a list of :class:`~edge_agent.contract.MdnsMatcher`, possibly empty.

    Example::

        @hookimpl
        def edge_agent_mdns_matchers():
            return [MdnsMatcher("_acme-locker._tcp.local.", txt={"vendor": "acme"})]
    """


@hookspec
def edge_agent_mdns_candidate(
    service: MdnsService, settings: Mapping[str, Any]
) -> Candidate | None:
    """Turn a matching mDNS service into a candidate device, or decline it.

    Since contract 1.0; ``settings`` since contract 1.1 (take it only if you need it).

    :param service: the resolved service (addresses, port, TXT records, interface).
    :param settings: the site config's ``[vendor.<plugin>]`` table, with defaults.
    :returns: a :class:`~edge_agent.contract.Candidate` whose ``identity`` is built from
        what identifies the hardware (a serial number in TXT, confirmed by the driver on
        connect), or ``None`` to decline.

    Example::

        @hookimpl
        def edge_agent_mdns_candidate(service):
            serial = service.properties.get("serial")
            if not serial:
                return None
            return Candidate(identity=f"acme:{serial}", plugin="acme", source="mdns",
                             vendor="Acme", model=service.properties.get("model", "?"),
                             address=f"{service.addresses[0]}:{service.port}",
                             properties={"host": service.addresses[0], "port": service.port})
    """


@hookspec
def edge_agent_usb_matchers() -> list[UsbMatcher]:  # type: ignore[empty-body]
    """List USB-serial adapters (VID:PID) whose ports the core should probe.

    Since contract 1.0. A match only makes the port a bus to probe with
    :func:`edge_agent_bus_probes`; it never identifies a device by itself.

    :returns: a list of :class:`~edge_agent.contract.UsbMatcher`, possibly empty.

    Example::

        @hookimpl
        def edge_agent_usb_matchers():
            return [UsbMatcher(0x0403, 0x6001, "FTDI FT232 on RS-485 adapters")]
    """


@hookspec
def edge_agent_bus_probes() -> list[BusProbe]:  # type: ignore[empty-body]
    """List the ways the plugin finds its boards on a serial bus.

    Since contract 1.0. The core opens each configured or detected bus with the probe's
    line settings and iterates ``probe(bus, settings)``, an async generator that yields
    one candidate per board as it answers. Probes are repeated periodically to find
    boards added later. The bus serialises the probe's transactions with the polls of
    boards already found.

    :returns: a list of :class:`~edge_agent.contract.BusProbe`, possibly empty.

    Example::

        @hookimpl
        def edge_agent_bus_probes():
            return [BusProbe("acme-rs485", SerialSettings(9600), probe=scan_addresses)]

        async def scan_addresses(bus, settings):
            for address in range(1, 33):
                reply = await bus.transact(status_request(address), Decoder(),
                                           lambda f: f.address == address, timeout=0.08)
                if reply is not None:
                    yield Candidate(identity=f"acme:{bus.bus_id}:{address}", ...)
    """


@hookspec
def edge_agent_create_driver(
    candidate: Candidate, context: DriverContext
) -> DeviceDriver | None:
    """Build the async driver for a candidate this plugin produced.

    Since contract 1.0. Called only for candidates whose ``plugin`` is this plugin.
    Must not do I/O: connecting is the driver's ``connect()``, awaited by the core.

    :param candidate: what discovery found.
    :param context: site settings for the plugin, the bus link for bus devices, and the
        per-call deadline the core will apply.
    :returns: a :class:`~edge_agent.contract.DeviceDriver`, or ``None`` to decline.

    Example::

        @hookimpl
        def edge_agent_create_driver(candidate, context):
            return AcmeDriver(candidate.properties["host"], candidate.properties["port"])
    """


@hookspec
def edge_agent_settings_schema() -> Mapping[str, Any] | None:
    """Describe the keys the plugin accepts in the site config's ``[vendor.<name>]``.

    Since contract 1.0. Maps each key to ``(type, default, help)``; ``edge-agent config
    check`` rejects unknown keys and wrong types with the file and line. Since contract
    1.2 a fourth element may list the allowed values, and ``config check`` (and ``run``)
    rejects any other the same way, before anything starts.

    :returns: a mapping of key to ``(type, default, help)`` or ``(type, default, help,
        allowed)``, or ``None`` for no settings.

    Example::

        @hookimpl
        def edge_agent_settings_schema():
            return {"hook_closed_bit": (int, 1, "HOOK bit value meaning door closed",
                                        (0, 1))}
    """


@hookspec
def edge_agent_simulator(options: Mapping[str, Any]) -> Simulator | None:
    """Build simulated hardware that speaks the plugin's exact wire protocol.

    Since contract 1.0. Used by ``edge-agent simulate`` and ``edge-agent demo`` for each
    ``[[simulators]]`` entry of the site config whose ``plugin`` is this plugin.

    :param options: the ``[[simulators]]`` table, without its ``plugin`` key.
    :returns: a :class:`~edge_agent.contract.Simulator` (not yet started), or ``None``.
    :raises ValueError: with a readable message if ``options`` are invalid.

    Example::

        @hookimpl
        def edge_agent_simulator(options):
            return AcmeSimulator(port=int(options.get("port", 8080)))
    """


@hookspec
def edge_agent_describe_wire(chunks: list[bytes]) -> list[str] | None:
    """Decode raw bytes seen on a device's wire, for the technician's diagnostics view.

    Since contract 1.0. Called with the chunks of the last transactions (requests and
    replies as they were read); must not raise on garbage.

    :param chunks: raw bytes, one element per read or write.
    :returns: one human-readable description per chunk (``""`` if nothing to say).

    Example::

        @hookimpl
        def edge_agent_describe_wire(chunks):
            return [", ".join(str(f) for f in Decoder().feed(c)) or "no frame"
                    for c in chunks]
    """

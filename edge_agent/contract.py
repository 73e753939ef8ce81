"""Types shared between the core and vendor plugins.

These are the values that cross the plugin boundary. Hook signatures live in
:mod:`edge_agent.hookspecs`; this module holds what those hooks take and return.
Everything here is plain data (frozen dataclasses) or a :class:`typing.Protocol`, so a
plugin never imports core internals.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

CONTRACT_VERSION = "1.4"
"""Version of the plugin contract this core implements (``MAJOR.MINOR``).

A plugin declares the version it was written against in :class:`PluginInfo`. The core
accepts a plugin whose major version equals its own and whose minor version is not
newer than its own; anything else is refused with a reason shown by
``edge-agent plugins``.
"""
# Optional commands a driver may declare (contract 1.2, ``DeviceDriver.capabilities``).
CAPABILITIES = frozenset({"identify", "out_of_service", "indicate"})


def diagnostic_rows(details: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The labelled rows a client shows for a driver's ``details`` (contract 1.2).

    ``DeviceInfo.details`` and ``DeviceState.details`` are how a plugin tells a
    technician what only its vendor knows (a checksum error count, what a status bit
    means) without any client knowing the vendor: each key with a scalar value becomes
    one row, the key as its label (underscores read as spaces) and the value as text.
    Nested values stay in the API's raw ``info``/``details`` but are not shown as rows.
    """
    rows = []
    for key, value in details.items():
        if value is None or isinstance(value, (dict, list, tuple, set)):
            continue
        rows.append((str(key).replace("_", " "), str(value)))
    return rows


def driver_capabilities(driver: object) -> frozenset[str]:
    """What a driver declares it can do; for contract 1.0/1.1 drivers, what it has."""
    declared = getattr(driver, "capabilities", None)
    if declared is not None:
        return frozenset(declared) & CAPABILITIES
    return frozenset({"identify"} | ({"out_of_service"} if hasattr(
        driver, "set_out_of_service") else set()))


@dataclass(frozen=True)
class PluginInfo:
    """Who a plugin is. Returned by ``edge_agent_plugin_info``."""

    name: str
    vendor: str
    version: str
    contract: str
    description: str = ""
    device_class: str = "locker"
    """Contract 1.4: the class of the devices this plugin drives (``"locker"``,
    ``"armoury"``, ``"reader"``), for devices the site config lists by address; a
    discovered device's :attr:`Candidate.device_class` says it for that device."""


@dataclass(frozen=True)
class SerialSettings:
    """Line settings of a serial bus (pyserial names)."""

    baudrate: int = 19200
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1

    def describe(self) -> str:
        stop = int(self.stopbits) if float(self.stopbits).is_integer() else self.stopbits
        return f"{self.baudrate} {self.bytesize}{self.parity}{stop}"


@dataclass(frozen=True)
class MdnsMatcher:
    """An mDNS/DNS-SD service a plugin can drive.

    ``service_type`` is a full DNS-SD type such as ``"_kerong-gw._tcp.local."``.
    ``txt`` lists TXT keys that must be present; a value of ``"*"`` accepts any value,
    any other value must match exactly (case-insensitive).
    """

    service_type: str
    txt: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def match(self, properties: Mapping[str, str]) -> str | None:
        """Return ``None`` on a match, else which TXT field failed and why."""
        for key, want in self.txt.items():
            got = properties.get(key)
            if got is None:
                return f"TXT key {key!r} missing"
            if want != "*" and got.lower() != want.lower():
                return f"TXT {key}={got!r}, expected {want!r}"
        return None


@dataclass(frozen=True)
class UsbMatcher:
    """A USB-serial adapter worth probing. VID:PID alone never identifies a device:
    a matching port is only *probed* with the plugin's bus probes."""

    vid: int
    pid: int
    description: str = ""

    def describe(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x} {self.description}".strip()


class FrameDecoder(Protocol):
    """Incremental decoder for one wire protocol.

    ``feed`` takes any bytes (garbage included), keeps what may be the start of a frame,
    and returns every complete, valid frame found. It must never raise on bad input and
    must cap its own buffer.

    Contract 1.2: a decoder may also have ``reset()``, which drops any partial frame it
    holds. The bus calls it before each request, so the bytes of a reply cut short by a
    timeout are never glued to the next reply's (with an 8-bit checksum, one such mix in
    256 passes as a valid frame carrying the old reading). The conformance suite checks
    it when ``Target.codec`` is given.
    """

    def feed(self, data: bytes) -> list[Any]: ...


@dataclass(frozen=True)
class WireRecord:
    """One chunk seen on a wire, kept for diagnostics."""

    t: float  # time.time()
    direction: str  # "tx" or "rx"
    data: bytes
    note: str = ""


class BusLink(Protocol):
    """The core's handle on one physical bus, given to bus probes and bus drivers.

    The core owns the port and serialises every transaction on a bus: a call to
    :meth:`transact` runs alone on the wire from the request to the reply.
    """

    @property
    def bus_id(self) -> str: ...

    @property
    def address(self) -> str: ...

    async def transact(
        self,
        request: bytes,
        decoder: FrameDecoder,
        match: Callable[[Any], bool],
        timeout: float,
        *,
        expect_reply: bool = True,
    ) -> Any | None:
        """Send ``request`` and return the first decoded frame for which ``match`` is
        true, or ``None`` if none came within ``timeout`` seconds (or if
        ``expect_reply`` is false). Raises :class:`edge_agent.errors.TransportError`
        if the port itself fails. Other frames that arrive meanwhile go to the bus's
        listeners (see :meth:`listen`)."""
        ...

    def listen(self, decoder: FrameDecoder, callback: Callable[[Any], None]) -> None:
        """Contract 1.2, optional: have frames nobody asked for delivered to
        ``callback`` (a board that reports a change on its own): those that arrive
        during another transaction and match no request, and those that arrive while
        the bus is idle (decoded with ``decoder``, read every few milliseconds). The
        callback runs on the bus's thread: hand the work to the loop (``PushChannel``
        does). Every listener sees every such frame; keep those of your device."""
        ...


@dataclass(frozen=True)
class Candidate:
    """Something discovery found that a plugin says it can drive.

    ``identity`` is the hardware identity: vendor plus serial number, or vendor plus
    bus plus board address. Never an IP address or a tty name: a renamed port or a new
    IP address must update the same device.
    """

    identity: str
    plugin: str
    source: str  # "bus-probe", "mdns", "static", "usb"
    vendor: str
    model: str
    address: str  # human-readable transport address (URL, tty, host:port)
    bus_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    device_class: str = "locker"
    """Contract 1.4: ``"locker"``, ``"armoury"`` (it holds weapons) or ``"reader"``. The
    site config says which classes may be adopted without a technician (``[agent]
    auto_adopt``); an armoury device never is, and re-adopting one takes two people."""


DEVICE_CLASSES = ("locker", "armoury", "reader")


@dataclass(frozen=True)
class BusProbe:
    """How a plugin finds its boards on a serial bus.

    ``probe`` is called with the bus link and the plugin's site settings and is an
    async iterator: it yields a candidate for each board *as soon as it answers*, so a
    board is supervised without waiting for the rest of the address range to time out.
    It is called again periodically to find boards added later.
    """

    protocol: str
    settings: SerialSettings
    probe: Callable[[BusLink, Mapping[str, Any]], AsyncIterator[Candidate]]
    description: str = ""


@dataclass(frozen=True)
class MdnsService:
    """A resolved DNS-SD service as the core hands it to plugins."""

    service_type: str
    name: str
    addresses: tuple[str, ...]
    port: int
    properties: Mapping[str, str]
    interface: str


class Door(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"


class Item(enum.StrEnum):
    PRESENT = "present"
    ABSENT = "absent"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CompartmentState:
    """State of one compartment (or slot). ``index`` is 1-based, as printed on the door."""

    index: int
    door: Door
    item: Item
    fault: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class DeviceInfo:
    """What a driver learns about its device when it connects."""

    vendor: str
    model: str
    compartments: int
    serial: str | None = None
    firmware: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    """Fixed facts a technician may need (what a status bit means, a reply mode); each
    scalar becomes a labelled row on the dashboard, see :func:`diagnostic_rows`."""
    fingerprint: str | None = None
    """Contract 1.4: ``"sha256:<hex>"`` of the key or TLS certificate the device presented
    on this connection, where it has one. Shown in the inbox for a technician to compare
    with the device's label, and pinned on adoption."""
    key_installed: str | None = None
    """Contract 1.4: set by a driver that installed a new key on the device during this
    connect (an OSDP reader's first pairing in install mode): what was done. The core
    audits it (``device_key_installed``)."""


class Severity(enum.StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class DeviceAlarm:
    """A condition on a device a technician must see (since contract 1.1).

    A driver reports every alarm that holds *now* in each :class:`DeviceState`; the core
    raises an alarm when it first appears (audited as ``alarm_raised``) and clears it when
    a later reading no longer carries it (``alarm_cleared``). ``code`` plus
    ``compartment`` identify an alarm across readings, so keep ``code`` stable and put
    the changing words in ``message``.
    """

    code: str
    """Stable machine name, e.g. ``"tamper"``, ``"door_held_open"``, ``"wrong_slot"``."""
    message: str
    """What a technician reads, e.g. ``"slot 3: tag E200..01 belongs in slot 5"``."""
    severity: Severity = Severity.WARNING
    compartment: int | None = None
    """1-based compartment (slot) the alarm is about, or ``None`` for the whole device."""

    @property
    def key(self) -> str:
        return f"{self.code}:{self.compartment}" if self.compartment else self.code


@dataclass(frozen=True)
class DeviceState:
    """One reading of a device. ``compartments`` is ordered by index.

    ``alarms`` (since contract 1.1) lists the alarm conditions that hold at this reading;
    an empty tuple clears every alarm the device had.
    """

    compartments: tuple[CompartmentState, ...]
    details: Mapping[str, Any] = field(default_factory=dict)
    """Changing diagnostic figures of this reading (checksum errors, garbage bytes); each
    scalar becomes a labelled row on the dashboard, see :func:`diagnostic_rows`."""
    alarms: tuple[DeviceAlarm, ...] = ()


@dataclass(frozen=True)
class DriverContext:
    """What the core gives a plugin when it asks for a driver."""

    settings: Mapping[str, Any]
    """The site config's ``[vendor.<plugin>]`` table, or empty."""
    bus: BusLink | None = None
    """The bus the candidate was found on, for bus devices."""
    timeout: float = 2.0
    """Deadline the core applies to each driver call, in seconds."""
    events: PushChannel | None = None
    """Contract 1.2: where the driver pushes what the device reports on its own."""
    pins: Mapping[str, str] = field(default_factory=dict)
    """Contract 1.4: what was pinned when a technician adopted the device: ``serial``
    and/or ``fingerprint`` (as :class:`DeviceInfo` reported them). Empty while the device
    is being identified for the inbox. A driver that can check them where it talks to
    the device (a TLS handshake) must, and raise :class:`IdentityMismatch`; the core also
    compares what ``connect`` returns and blocks the device on any difference."""


@dataclass(frozen=True)
class CredentialRead:
    """A card presented at a reader, with any keypad digits entered with it (contract 1.3).

    ``card`` is the card number as the reader reports it, in upper-case hex; the core
    never stores it in the clear (it is matched by keyed hash against the signed
    entitlements). ``keys`` are the keypad digits entered just before the card (a station
    that issues several classes of equipment asks for one). ``bits`` is the length the
    reader reported (26 for a Wiegand 26-bit card, 8 x bytes for raw data)."""

    card: str
    keys: str = ""
    bits: int = 0


class Signal(enum.StrEnum):
    """What a reader shows its user (contract 1.3, ``DeviceDriver.indicate``)."""

    GRANTED = "granted"    # green, one short beep
    REFUSED = "refused"    # red, long beep
    WAITING = "waiting"    # amber: a second person must badge (two-person rule)
    IDLE = "idle"          # back to the reader's resting state


class PushChannel:
    """Pushed events (contract 1.2): a driver whose device reports changes on its own
    (a door, a badge read, tamper) calls :meth:`push` with the new reading the moment it
    arrives, instead of waiting for the next poll. The core applies it exactly as a poll
    result. Safe to call from any thread; pushes before the device is supervised, or
    after it stops, are dropped."""

    def __init__(self) -> None:
        self._sink: Callable[[DeviceState], None] | None = None
        self._credential_sink: Callable[[CredentialRead], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def connect(self, sink: Callable[[DeviceState], None],
                credential_sink: Callable[[CredentialRead], None] | None = None) -> None:
        self._sink, self._loop = sink, asyncio.get_running_loop()
        self._credential_sink = credential_sink

    def disconnect(self) -> None:
        self._sink = None
        self._credential_sink = None

    def credential(self, read: CredentialRead) -> None:
        """Contract 1.3: a card (and keypad digits) presented at this device's reader.
        Safe to call from any thread; the core decides (entitlements, policy) and answers
        through ``indicate``. Dropped if nothing on this site listens to the reader."""
        self._deliver(self._credential_sink, read)

    def push(self, state: DeviceState) -> None:
        self._deliver(self._sink, state)

    def _deliver(self, sink: Callable[[Any], None] | None, value: object) -> None:
        """Call ``sink`` on the core's loop: directly from it, thread-safely from others."""
        loop = self._loop
        if sink is None or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            sink(value)
        else:
            loop.call_soon_threadsafe(sink, value)


@runtime_checkable
class DeviceDriver(Protocol):
    """Async driver for one device. Every method is awaited under a deadline by the core.

    Drivers raise :class:`edge_agent.errors.DriverError` subclasses; anything else is
    treated as a plugin fault and isolated to this device.

    Optional (since contract 1.1): ``async def set_out_of_service(self, compartment: int,
    out: bool, reason: str) -> None`` for devices that keep their own out-of-service flag;
    the core calls it after auditing the change (the agent refuses unlocks either way).

    Since contract 1.2:

    * failure kinds: ``unlock`` raises :class:`~edge_agent.errors.LockJammed` when the
      device says the bolt did not move, :class:`~edge_agent.errors.NoSuchCompartment`
      when it says there is no such compartment, :class:`~edge_agent.errors.Unsupported`
      for what it cannot do; the core audits each as its own outcome;
    * ``capabilities: frozenset[str]`` (class attribute): which optional commands the
      device really has, of :data:`CAPABILITIES`. Clients offer only those, and the core
      refuses the others before anything is audited. A driver without it (contract 1.0
      and 1.1) is taken to have ``identify``, and ``out_of_service`` if it has the method;
    * ``door_opens_on_unlock: bool`` (class attribute, default False): set it when the
      device's doors spring open on release (most self-service lockers) and the reading
      reports doors. The core then reads the device again until the door reads open, and
      audits ``door_did_not_open`` (never ``ok``) if it still reads closed after the
      site's ``unlock_settle`` seconds. Leave it False where a released door stays shut
      until someone pulls it (most weapon racks).

    Since contract 1.4, optional: ``def wire(self, limit: int = 100) ->
    list[WireRecord]`` for a driver that owns its transport (HTTP, Modbus TCP, a serial
    line it opens itself): the last chunks it sent and received, oldest first. The wire
    view and the dashboard's diagnostics show them as they show a core-owned bus, decoded
    by the plugin's ``edge_agent_describe_wire``. Keep it a bounded ring and cheap.
    """

    async def connect(self) -> DeviceInfo: ...

    async def read_state(self) -> DeviceState: ...

    async def unlock(self, compartment: int) -> DeviceState: ...

    async def identify(self) -> None: ...

    async def close(self) -> None: ...


class Simulator(Protocol):
    """Simulated hardware a plugin ships: speaks the exact wire protocol."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def describe(self) -> Iterable[str]: ...

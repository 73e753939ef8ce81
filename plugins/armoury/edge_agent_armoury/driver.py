"""Async driver for one Modbus armoury cabinet (pymodbus client, TCP or RTU).

Addresses: ``modbus-tcp://HOST:PORT`` or ``modbus-rtu://PORT?baudrate=9600&parity=N``
(``PORT`` is a device path such as ``/dev/ttyUSB0``, or any pyserial URL). Cabinets on one
RS-485 line share a single client: their requests take turns on the wire.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from edge_agent.contract import (
    CompartmentState,
    DeviceAlarm,
    DeviceInfo,
    DeviceState,
    Door,
    Item,
    WireRecord,
)
from edge_agent.errors import (
    DeviceTimeout,
    DriverError,
    IdentityMismatch,
    ProtocolError,
    TransportError,
    Unsupported,
)
from edge_agent_armoury.profile import Point, Profile, Read, plan_reads, state_reads
from edge_agent_armoury.reading import AlarmWatch, CabinetReading, decode

Client = AsyncModbusTcpClient | AsyncModbusSerialClient

EXCEPTION_CODES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "server device failure", 6: "server device busy"}


@dataclass(frozen=True)
class Endpoint:
    transport: str  # "tcp" or "rtu"
    host: str = ""
    port: int = 502
    device: str = ""
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1

    @property
    def key(self) -> str:
        return f"tcp:{self.host}:{self.port}" if self.transport == "tcp" else f"rtu:{self.device}"

    @classmethod
    def parse(cls, address: str) -> Endpoint:
        u = urlsplit(address)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        try:
            if u.scheme == "modbus-tcp":
                if not u.hostname:
                    raise ValueError("no host")
                return cls("tcp", host=u.hostname, port=u.port or 502)
            if u.scheme == "modbus-rtu":
                device = unquote(u.netloc + u.path) if not q.get("url") else q["url"]
                if not device:
                    raise ValueError("no serial port")
                return cls("rtu", device=device, baudrate=int(q.get("baudrate", 9600)),
                           bytesize=int(q.get("bytesize", 8)),
                           parity=q.get("parity", "N").upper()[:1],
                           stopbits=int(q.get("stopbits", 1)))
        except ValueError as exc:
            raise DriverError(f"bad cabinet address {address!r}: {exc}") from exc
        raise DriverError(f"bad cabinet address {address!r}: use modbus-tcp://HOST:PORT or "
                          "modbus-rtu:///dev/ttyUSB0?baudrate=9600")


class _Shared:
    """One pymodbus client per TCP endpoint or serial line, shared by the drivers of
    every unit behind it; a lock keeps one request on the wire at a time."""

    clients: dict[str, tuple[Client, asyncio.Lock, set[int]]] = {}
    # The frames on each endpoint's wire, both ways (contract 1.4 DeviceDriver.wire).
    wires: dict[str, collections.deque[WireRecord]] = {}

    @classmethod
    def _tracer(cls, key: str) -> Callable[[bool, bytes], bytes]:
        ring = cls.wires.setdefault(key, collections.deque(maxlen=200))

        def trace(sending: bool, data: bytes) -> bytes:
            ring.append(WireRecord(time.time(), "tx" if sending else "rx", bytes(data)))
            return data

        return trace

    @classmethod
    async def acquire(cls, ep: Endpoint, timeout: float, owner: int) -> tuple[Client,
                                                                              asyncio.Lock]:
        got = cls.clients.get(ep.key)
        if got is None or not got[0].connected:
            if got is not None:
                got[0].close()
            client: Client
            if ep.transport == "tcp":
                client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=timeout,
                                              retries=0, reconnect_delay=0,
                                              trace_packet=cls._tracer(ep.key))
            else:
                client = AsyncModbusSerialClient(
                    ep.device, framer=FramerType.RTU, baudrate=ep.baudrate,
                    bytesize=ep.bytesize, parity=ep.parity, stopbits=ep.stopbits,
                    timeout=timeout, retries=0, reconnect_delay=0,
                    trace_packet=cls._tracer(ep.key))
            owners = got[2] if got is not None else set()
            got = (client, got[1] if got is not None else asyncio.Lock(), owners)
            cls.clients[ep.key] = got
            try:
                ok = await asyncio.wait_for(client.connect(), timeout)
            except (TimeoutError, OSError, ModbusException) as exc:
                raise TransportError(f"{ep.key}: cannot connect: {exc}") from exc
            if not ok:
                raise TransportError(f"{ep.key}: cannot connect (refused or no such port)")
        got[2].add(owner)
        return got[0], got[1]

    @classmethod
    def release(cls, ep: Endpoint, owner: int, *, broken: bool = False) -> None:
        got = cls.clients.get(ep.key)
        if got is None:
            return
        got[2].discard(owner)
        if broken or not got[2]:
            got[0].close()
            if not got[2]:
                cls.clients.pop(ep.key, None)


class CabinetDriver:
    # Profiles define no identify output and cabinets keep no out-of-service flag of
    # their own (contract 1.2): the agent's refusal is the quarantine.
    capabilities: frozenset[str] = frozenset()

    def wire(self, limit: int = 100) -> list[WireRecord]:
        """Contract 1.4: the Modbus frames on this cabinet's endpoint (ADUs as sent and
        received: MBAP + PDU over TCP, address + PDU + CRC on RTU)."""
        return list(_Shared.wires.get(self.endpoint.key, ()))[-limit:]

    def __init__(self, profile: Profile, endpoint: Endpoint, *, unit: int | None = None,
                 serial: str | None = None, settings: Mapping[str, Any] | None = None,
                 timeout: float = 2.0) -> None:
        settings = settings or {}
        self.profile = profile
        self.endpoint = endpoint
        self.unit = profile.profile.unit if unit is None else unit
        self.expected_serial = serial
        self.timeout = float(settings.get("request_timeout", min(timeout, 1.0)))
        self.serial: str | None = None
        self._reads = state_reads(profile)
        self._settings = settings
        self._client: Client | None = None
        self._lock: asyncio.Lock | None = None
        self._watch: AlarmWatch | None = None
        self._pulses: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------- Modbus calls

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._client is None or self._lock is None:
            raise TransportError(f"{self.endpoint.key}: not connected")
        async with self._lock:
            try:
                rr = await asyncio.wait_for(fn(*args, device_id=self.unit, **kwargs),
                                            self.timeout * 2)
            except (TimeoutError, ModbusIOException) as exc:
                raise DeviceTimeout(f"unit {self.unit}: no answer to {what}") from exc
            except ConnectionException as exc:
                self._drop()
                raise TransportError(f"{self.endpoint.key}: {exc}") from exc
            except ModbusException as exc:
                raise ProtocolError(f"unit {self.unit}: {what}: {exc}") from exc
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            raise ProtocolError(f"unit {self.unit} refused {what}: exception {code} "
                                f"({EXCEPTION_CODES.get(code, 'unknown')}); does profile "
                                f"{self.profile.name!r} fit this controller?")
        return rr

    async def _read(self, r: Read) -> list[int] | list[bool]:
        assert self._client is not None
        c = self._client
        fn = {"coil": c.read_coils, "discrete": c.read_discrete_inputs,
              "holding": c.read_holding_registers, "input": c.read_input_registers}[r.table]
        rr = await self._call(f"read {r.table} {r.address}+{r.count}", fn, r.address,
                              count=r.count)
        values = rr.bits if r.table in ("coil", "discrete") else rr.registers
        if len(values) < r.count:
            raise ProtocolError(f"unit {self.unit}: {r.table} {r.address}: asked for {r.count}"
                                f" values, got {len(values)}")
        return list(values[: r.count])

    async def _read_point(self, p: Point) -> bool | int | float | str:
        (r,) = plan_reads([(p.table, p.address, p.width)])
        return p.decode(await self._read(r))

    def _drop(self) -> None:
        _Shared.release(self.endpoint, id(self), broken=True)
        self._client = None

    # ------------------------------------------------------------- DeviceDriver

    async def connect(self) -> DeviceInfo:
        self._client, self._lock = await _Shared.acquire(self.endpoint, self.timeout, id(self))
        serial = str(await self._read_point(self.profile.identity.serial))
        if self.expected_serial and serial != self.expected_serial:
            raise IdentityMismatch(f"expected cabinet {self.expected_serial}, "
                                f"unit {self.unit} at {self.endpoint.key} says {serial!r}")
        self.serial = serial
        fw = None
        if self.profile.identity.firmware is not None:
            fw = str(await self._read_point(self.profile.identity.firmware))
        if self._watch is None:
            assignments = self._assignments(serial)
            self._watch = AlarmWatch(self.profile, assignments=assignments,
                                     door_open_limit_s=self._settings.get("door_open_limit_s"))
        p = self.profile.profile
        return DeviceInfo(vendor=p.vendor, model=p.model, compartments=p.slots, serial=serial,
                          firmware=fw, details={
                              "profile": p.name, "kind": p.kind, "unit": self.unit,
                              "transport": self.endpoint.key,
                              "door_open_limit_s": self._watch.limit,
                              "assignments": "site config" if self._watch.configured
                              else "learned (first slot each tag is seen in)"})

    def _assignments(self, serial: str) -> dict[int, str] | None:
        table = (self._settings.get("assignments") or {}).get(serial)
        if not table:
            return None
        try:
            return {int(k): str(v).upper() for k, v in table.items()}
        except (ValueError, AttributeError) as exc:
            raise DriverError(f"vendor.armoury.assignments.{serial}: expected "
                              f'{{ "1" = "TAGID", ... }}: {exc}') from exc

    async def read_state(self) -> DeviceState:
        blocks = {r: await self._read(r) for r in self._reads}
        reading = decode(self.profile, blocks)
        assert self._watch is not None
        alarms = self._watch.evaluate(reading)
        return state_of(reading, alarms)

    async def unlock(self, compartment: int) -> DeviceState:
        if not 1 <= compartment <= self.profile.profile.slots:
            raise DriverError(f"{self.profile.profile.model} has slots 1-"
                              f"{self.profile.profile.slots}, not {compartment}")
        assert self._client is not None
        addr = self.profile.slot.lock.at(compartment)
        await self._call(f"release slot {compartment} (coil {addr})", self._client.write_coil,
                         addr, True)
        if self.profile.profile.pulse_reset == "agent":
            task = asyncio.get_running_loop().create_task(self._end_pulse(addr))
            self._pulses.add(task)
            task.add_done_callback(self._pulses.discard)
        return await self.read_state()

    async def _end_pulse(self, addr: int) -> None:
        await asyncio.sleep(self.profile.profile.pulse_ms / 1000)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._client is not None:
            try:
                await self._call(f"re-lock coil {addr}", self._client.write_coil, addr, False)
                return
            except DriverError:
                await asyncio.sleep(0.2)

    async def identify(self) -> None:
        raise Unsupported(f"{self.profile.profile.model} has no identify output in its profile")

    async def close(self) -> None:
        for t in list(self._pulses):
            await asyncio.gather(t, return_exceptions=True)
        if self._client is not None:
            _Shared.release(self.endpoint, id(self))
            self._client = None


def state_of(reading: CabinetReading, alarms: tuple[DeviceAlarm, ...] = ()) -> DeviceState:
    comps = tuple(
        CompartmentState(
            index=s.index,
            door=Door.UNKNOWN if s.door_open is None else (Door.OPEN if s.door_open
                                                           else Door.CLOSED),
            item=Item.PRESENT if s.present else Item.ABSENT,
            tag=s.tag)
        for s in reading.slots)
    return DeviceState(comps, details=dict(reading.cabinet), alarms=alarms)


def decode_blocks(profile: Profile, values: Sequence[Sequence[int | bool]]) -> DeviceState:
    """Decode values read for ``state_reads(profile)`` (in that order), without alarms:
    what recorded-frame tests check."""
    return state_of(decode(profile, dict(zip(state_reads(profile), values, strict=True))))

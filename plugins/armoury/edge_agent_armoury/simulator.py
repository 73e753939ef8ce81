"""A simulated armoury cabinet: pymodbus's own Modbus server (TCP, or RTU on a
pseudo-terminal) holding the registers a device profile describes, a model of the
cabinet behind them, and a scenario that moves weapons.

The register layout comes from the same profile the driver reads, encoded by the
profile's points, so a profile is proven against a Modbus implementation no one here
wrote. Runs its own event loop in a thread; every public method is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import socket
import threading
import tty
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edge_agent_armoury import SERVICE_TYPE
from edge_agent_armoury.profile import Point, Profile, ProfileLibrary

FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def tag_for(serial: str, slot: int, registers: int) -> str:
    """The tag id of the weapon whose home is ``slot`` (stable per cabinet)."""
    digest = hashlib.sha256(f"{serial}/{slot}".encode()).hexdigest().upper()
    return ("E2" + digest)[: registers * 4]


@dataclass
class SimSlot:
    present: bool = True
    tag: str | None = None  # None: item without a readable tag
    door_open: bool = False
    released: bool = False


@dataclass
class CabinetModel:
    slots: list[SimSlot]
    main_door: bool = False
    tamper: bool = False
    mains_ok: bool = True
    battery: int = 100
    temperature: float = 21.5


@dataclass
class CabinetSimulator:
    profile: Profile
    serial: str
    unit: int | None = None
    transport: str = "tcp"  # "tcp" or "rtu"
    host: str = "127.0.0.1"
    port: int = 0
    link: str | None = None  # rtu: path of the symlink to the agent's end of the line
    mdns: bool = False
    mdns_interfaces: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    auto_open: bool = True  # a released slot's door swings open (someone takes the weapon)
    scenario: bool = False
    scenario_interval: float = 2.0
    seed: int = 0
    firmware: int = 312
    txt: dict[str, str] = field(default_factory=dict)  # extra TXT keys (a site tag, say)

    def __post_init__(self) -> None:
        p = self.profile
        self.unit = p.profile.unit if self.unit is None else self.unit
        width = p.slot.tag.count if p.slot.tag else 4
        self.model = CabinetModel([SimSlot(tag=tag_for(self.serial, n, width))
                                   for n in range(1, p.profile.slots + 1)])
        self.unlocks: list[int] = []
        self.garbage = False  # answers corrupted on the wire
        self.silent = False  # no answers at all
        self.coil_writes: list[tuple[int, bool]] = []
        self._lock_coils = {p.slot.lock.at(n): n for n in range(1, p.profile.slots + 1)}
        self._internal = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"sim-cabinet-{self.serial}")
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._fds: list[int] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rng = random.Random(self.seed)
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ registers

    def _points(self) -> list[tuple[Point, int, Any]]:
        """Every point with the slot it is for and the value the model gives it."""
        p, m = self.profile, self.model
        out: list[tuple[Point, int, Any]] = [(p.identity.serial, 0, self.serial)]
        if p.identity.firmware is not None:
            out.append((p.identity.firmware, 0, self.firmware))
        cab = {"main_door": m.main_door, "tamper": m.tamper, "mains_ok": m.mains_ok,
               "battery": m.battery, "temperature": m.temperature}
        out.extend((pt, 0, cab[key]) for key, pt in p.cabinet_points())
        for n, s in enumerate(m.slots, start=1):
            vals = {"door": s.door_open, "present": s.present,
                    "tag": (s.tag or "") if s.present else ""}
            out.extend((pt, n, vals[key]) for key, pt in p.slot_points())
        return out

    def _image(self) -> dict[str, dict[int, int]]:
        img: dict[str, dict[int, int]] = {t: {} for t in FC}
        for pt, slot, value in self._points():
            addr = pt.at(slot)
            raw = pt.encode(value, img[pt.table].get(addr, 0))
            for i, v in enumerate(raw):
                img[pt.table][addr + i] = v
        return img

    def _device(self) -> SimDevice:
        img = self._image()
        top = {t: (max(a.keys()) + 1 if a else 1) for t, a in img.items()}
        top["coil"] = max(top["coil"], *(a + 1 for a in self._lock_coils))
        blocks: list[list[SimData]] = []
        for t in ("coil", "discrete", "holding", "input"):
            bits = t in ("coil", "discrete")
            blocks.append([SimData(0, count=top[t], values=False if bits else 0,
                                   datatype=DataType.BITS if bits else DataType.REGISTERS)])
        assert self.unit is not None
        return SimDevice(id=self.unit, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
                         action=self._action)

    async def _push(self) -> None:
        """Write the model into the server's registers."""
        if self._server is None:
            return
        assert self.unit is not None
        with self.lock:
            img = self._image()
        self._internal = True
        try:
            for table, cells in img.items():
                for addr, v in sorted(cells.items()):
                    await self._server.async_setValues(self.unit, FC[table], addr,
                                                       [bool(v)] if table in ("coil", "discrete")
                                                       else [v])
        finally:
            self._internal = False

    async def _action(self, fc: int, start: int, address: int, count: int,
                      regs: list[int], set_values: list[int] | list[bool] | None) -> None:
        if self._internal or set_values is None or fc not in (5, 15):
            return None
        for i, v in enumerate(set_values):
            slot = self._lock_coils.get(address + i)
            if slot is None:
                continue
            self.coil_writes.append((slot, bool(v)))
            if bool(v):
                self._released(slot)
        return None

    def _released(self, slot: int) -> None:
        with self.lock:
            s = self.model.slots[slot - 1]
            s.released = True
            self.unlocks.append(slot)
            if self.auto_open:
                s.door_open = True
        self._spawn(self._push())
        if self.profile.profile.pulse_reset == "device":
            self._spawn(self._pulse_end(slot))

    async def _pulse_end(self, slot: int) -> None:
        await asyncio.sleep(self.profile.profile.pulse_ms / 1000)
        assert self._server is not None and self.unit is not None
        self._internal = True
        try:
            await self._server.async_setValues(self.unit, 1,
                                               self.profile.slot.lock.at(slot), [False])
        finally:
            self._internal = False
        with self.lock:
            self.model.slots[slot - 1].released = False

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ scenario API

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def update(self, **changes: Any) -> None:
        """Change the cabinet: ``main_door``, ``tamper``, ``mains_ok``, ``battery``,
        ``temperature``."""
        with self.lock:
            for k, v in changes.items():
                if not hasattr(self.model, k) or k == "slots":
                    raise ValueError(f"no cabinet attribute {k!r}")
                setattr(self.model, k, v)
        self._call(self._push())

    def slot(self, n: int, **changes: Any) -> None:
        """Change slot ``n`` (1-based): ``present``, ``tag``, ``door_open``."""
        with self.lock:
            s = self.model.slots[n - 1]
            for k, v in changes.items():
                if k not in ("present", "tag", "door_open"):
                    raise ValueError(f"no slot attribute {k!r}")
                setattr(s, k, v)
        self._call(self._push())

    def take(self, n: int) -> str | None:
        """Someone takes the weapon out of slot ``n`` (door left as it is)."""
        with self.lock:
            s = self.model.slots[n - 1]
            tag, s.present, s.tag = s.tag, False, None
        self._call(self._push())
        return tag

    def put(self, n: int, tag: str | None) -> None:
        """A weapon with ``tag`` (None: no readable tag) is put into slot ``n``."""
        self.slot(n, present=True, tag=tag)

    def home_tag(self, n: int) -> str:
        width = self.profile.slot.tag.count if self.profile.slot.tag else 4
        return tag_for(self.serial, n, width)

    def coil(self, n: int) -> bool:
        assert self._server is not None and self.unit is not None
        got = self._call(self._server.async_getValues(self.unit, 1,
                                                      self.profile.slot.lock.at(n), 1))
        return bool(got[0])

    async def _scenario(self) -> None:
        """Weapons issued and returned, now and then to the wrong slot or without a
        readable tag; a door held open; a tamper blip."""
        rng = self._rng
        slots = self.model.slots
        while True:
            await asyncio.sleep(self.scenario_interval * (0.5 + rng.random()))
            with self.lock:
                n = rng.randrange(len(slots)) + 1
                s = slots[n - 1]
                roll = rng.random()
                if s.door_open:
                    s.door_open = False
                elif s.present and roll < 0.6:
                    s.door_open, s.present, s.tag = True, False, None
                elif not s.present:
                    s.door_open, s.present = True, True
                    if roll < 0.1:
                        empty = [i for i, x in enumerate(slots, 1) if not x.present and i != n]
                        s.tag = self.home_tag(empty[0]) if empty else self.home_tag(n)
                    elif roll < 0.15:
                        s.tag = None
                    else:
                        s.tag = self.home_tag(n)
                elif roll > 0.97:
                    self.model.tamper = not self.model.tamper
                self.model.temperature = round(21 + rng.random() * 2, 1)
            await self._push()

    def _trace(self, sending: bool, data: bytes) -> bytes:
        """pymodbus calls this with every packet; faults act on the bytes on the wire."""
        if not sending:
            return data
        if self.silent:
            return b""
        if self.garbage:
            junk = bytearray(self._rng.randrange(256) for _ in range(len(data) + 3))
            return bytes(junk)
        return data

    # ------------------------------------------------------------------ lifecycle

    async def _serve(self) -> None:
        device = self._device()
        if self.transport == "tcp":
            server: ModbusTcpServer | ModbusSerialServer = ModbusTcpServer(
                device, address=(self.host, self.port), trace_packet=self._trace)
            await server.serve_forever(background=True)
            sockets = getattr(server.transport, "sockets", None)
            if sockets:
                self.port = sockets[0].getsockname()[1]
        else:
            server_end = self._null_modem()
            server = ModbusSerialServer(device, port=server_end, baudrate=9600,
                                        reconnect_delay=0.2, trace_packet=self._trace)
            await server.serve_forever(background=True)
        self._server = server
        await self._push()
        if self.scenario:
            self._spawn(self._scenario())

    def _null_modem(self) -> str:
        """Two pseudo-terminals joined back to back: pymodbus's serial server opens one,
        the agent opens the other through ``link`` (an RS-485 line on a desk)."""
        if not self.link:
            raise ValueError("an RTU cabinet simulator needs link = '/path/to/ttyX'")
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        for fd in (m1, s1, m2, s2):
            tty.setraw(fd)
        self._fds += [m1, s1, m2, s2]
        link = Path(self.link)
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(s2))

        def relay(src: int, dst: int) -> None:
            try:
                data = os.read(src, 4096)
            except OSError:
                return
            os.write(dst, data)

        self._loop.add_reader(m1, relay, m1, m2)
        self._loop.add_reader(m2, relay, m2, m1)
        return os.ttyname(s1)

    def _service(self) -> AsyncServiceInfo:
        p = self.profile.profile
        return AsyncServiceInfo(
            SERVICE_TYPE, f"{self.serial}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(self.host)], port=self.port,
            properties={**self.txt, "vendor": p.vendor, "profile": p.name,
                        "serial": self.serial, "unit": str(self.unit)},
            server=f"cabinet-{self.serial.lower()}.local.")

    async def _end_announcing(self) -> None:
        task = getattr(self, "_announcing", None)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _advertise(self) -> None:
        if self._zc is None:
            self._zc = AsyncZeroconf(interfaces=self.mdns_interfaces,
                                     ip_version=IPVersion.V4Only)
        self._info = self._service()
        # The announcement goes on in a task of zeroconf's: kept, so stop() can end it.
        self._announcing = await self._zc.async_register_service(
            self._info, allow_name_change=False, cooperating_responders=True)

    def start(self) -> None:
        self._thread.start()
        self._call(self._serve())
        if self.mdns and self.transport == "tcp":
            self._call(self._advertise())

    def stop(self) -> None:
        async def go() -> None:
            for t in list(self._tasks):
                t.cancel()
            if self._zc is not None:
                if self._info is not None:
                    await self._end_announcing()
                    await (await self._zc.async_unregister_service(self._info))  # goodbyes
                await self._zc.async_close()
            if self._server is not None:
                await self._server.shutdown()  # type: ignore[no-untyped-call]
            for fd in self._fds[:1] + self._fds[2:3]:
                self._loop.remove_reader(fd)

        try:
            self._call(go())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            for fd in self._fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.link and self.transport == "rtu":
                Path(self.link).unlink(missing_ok=True)

    @property
    def address(self) -> str:
        if self.transport == "tcp":
            return f"modbus-tcp://{self.host}:{self.port}"
        return f"modbus-rtu://{self.link}?baudrate=9600"

    def describe(self) -> list[str]:
        p = self.profile.profile
        where = self.address + (f", mDNS {SERVICE_TYPE}" if self.mdns else "")
        return [f"{p.vendor} {p.model} {self.serial} (unit {self.unit}, {p.slots} slots) "
                f"at {where}"]

    @classmethod
    def from_options(cls, options: Mapping[str, Any],
                     library: ProfileLibrary | None = None) -> CabinetSimulator:
        known = {"profile", "serial", "unit", "transport", "host", "port", "link", "mdns",
                 "interfaces", "scenario", "scenario_interval", "seed", "auto_open",
                 "profile_dirs", "txt"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown armoury simulator option(s): {', '.join(unknown)}")
        lib = library or ProfileLibrary(list(options.get("profile_dirs", [])))
        profile = lib.get(str(options.get("profile", "sentinel-wc12")))
        return cls(profile=profile, serial=str(options.get("serial", "ARM-0001")),
                   unit=int(options["unit"]) if "unit" in options else None,
                   transport=str(options.get("transport", "tcp")),
                   host=str(options.get("host", "127.0.0.1")),
                   port=int(options.get("port", 0)),
                   link=str(options["link"]) if "link" in options else None,
                   mdns=bool(options.get("mdns", False)),
                   mdns_interfaces=list(options.get("interfaces", ["127.0.0.1"])),
                   auto_open=bool(options.get("auto_open", True)),
                   scenario=bool(options.get("scenario", False)),
                   scenario_interval=float(options.get("scenario_interval", 2.0)),
                   seed=int(options.get("seed", 0)),
                   txt={str(k): str(v) for k, v in dict(options.get("txt", {})).items()})

"""One OSDP reader, driven by libosdp's control panel over a serial port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import osdp
import serial

from edge_agent.contract import CredentialRead, DeviceInfo, DeviceState, PushChannel, Signal
from edge_agent.errors import DeviceTimeout, DriverError, ProtocolError, TransportError

SETTINGS_SCHEMA: Mapping[str, tuple[Any, ...]] = {
    "keypad_window_s": (float, 10.0, "keypad digits entered this long before a card go "
                        "with it (a station issuing several equipment classes)"),
    "online_timeout_s": (float, 1.8, "how long connect() waits for the reader and its "
                         "secure channel"),
}

# (LED colour, LED on time in 100 ms units, buzzer tone count) per signal.
FEEDBACK: Mapping[Signal, tuple[int, int, int]] = {
    Signal.GRANTED: (osdp.CommandLEDColor.Green, 30, 1),
    Signal.REFUSED: (osdp.CommandLEDColor.Red, 30, 3),
    Signal.WAITING: (osdp.CommandLEDColor.Amber, 600, 0),
    Signal.IDLE: (osdp.CommandLEDColor.Black, 0, 0),
}


def serial_identity(serial_number: int) -> str:
    """The identity of a reader from the serial number its PD ID reports."""
    return f"osdp:RDR-{serial_number & 0xFFFFFFFF:08X}"


def load_key(path: Path) -> bytes:
    """A reader's secure channel base key: 32 hex digits in a file only its owner reads."""
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DriverError(f"secure channel key {path}: cannot read ({exc})") from exc
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise DriverError(f"secure channel key {path} is readable by others "
                          f"(mode {stat.S_IMODE(st.st_mode):o}): chmod 600 it")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise DriverError(f"secure channel key {path}: expected 32 hex digits")
    return key


def write_key(path: Path, key: bytes) -> None:
    """Store a key 0600 (created with that mode: never readable by others, not even
    briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")
    os.chmod(path, 0o600)


class SerialChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no types
    """libosdp's byte channel on a pyserial port (non-blocking)."""

    def __init__(self, port: serial.Serial) -> None:
        super().__init__()
        self.port = port

    def read(self, max_bytes: int) -> bytes:
        try:
            data: bytes = self.port.read(min(max_bytes, self.port.in_waiting or 0))
            return data
        except (serial.SerialException, OSError):
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return int(self.port.write(buf) or 0)
        except (serial.SerialException, OSError):
            return 0

    def flush(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self.port.reset_input_buffer()


class ReaderDriver:
    """A card reader with LED, buzzer and keypad. It has no compartments: stations in the
    site config bind it to the lockers or cabinet it serves."""

    capabilities = frozenset({"identify", "indicate"})

    def __init__(self, port: str, pd_address: int, key_file: Path, *, expect: str | None,
                 events: PushChannel | None, settings: Mapping[str, Any],
                 install_mode: bool = False) -> None:
        self.port_url = port
        self.pd = pd_address
        self.key_file = key_file
        self.key: bytes | None = None
        self.install_mode = install_mode
        self.expect = expect
        self.events = events
        self.keypad_window = float(settings.get("keypad_window_s", 10.0))
        self.online_timeout = float(settings.get("online_timeout_s", 1.8))
        self._port: serial.Serial | None = None
        self._cp: osdp.ControlPanel | None = None
        self._digits: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.cards = 0

    # ------------------------------------------------------------ libosdp side (threads)

    def _on_event(self, pd: int, event: Mapping[str, Any]) -> int:
        """Runs on libosdp's refresh thread: hand the read to the core, never block."""
        kind = event.get("event")
        now = time.monotonic()
        if kind == osdp.Event.KeyPress:
            digits = bytes(event.get("data") or b"").decode("ascii", "replace")
            with self._lock:
                self._digits.append((now, digits))
        elif kind == osdp.Event.CardRead:
            data = bytes(event.get("data") or b"")
            with self._lock:
                keys = "".join(d for t, d in self._digits if now - t <= self.keypad_window)
                self._digits.clear()
            self.cards += 1
            if self.events is not None and data:
                self.events.credential(CredentialRead(
                    card=data.hex().upper(), keys=keys,
                    bits=int(event.get("length") or len(data) * 8)))
        return 0

    def _pair(self) -> str:
        """First pairing (OSDP install mode): the reader, fresh from its box or reset,
        accepts a secure channel with the default key SCBK-D; libosdp's control panel,
        given a new key and the install-mode flag, sets it with KEYSET and restarts the
        channel on it. The key is written 0600 beside its final name first, so a key the
        reader took is never lost, and renamed into place once the channel runs on it.
        Only while no key file exists: a control panel left in install mode would hand
        a key to anyone on the wire."""
        pending = self.key_file.with_name(self.key_file.name + ".pairing")
        if pending.exists():
            # A pairing cut short after the reader may have taken this key: try it first.
            key = load_key(pending)
            try:
                self._open(key)
                self._close()
            except DeviceTimeout:
                pass  # the reader did not take it: pair again
            else:
                os.replace(pending, self.key_file)
                self.key = key
                return (f"reader at address {self.pd} on {self.port_url}: an interrupted "
                        f"pairing completed; key stored in {self.key_file} (0600)")
        key = secrets.token_bytes(16)
        try:
            write_key(pending, key)
        except OSError as exc:
            raise DriverError(f"secure channel key {pending}: cannot write ({exc})") from exc
        self._open(key, install=True)
        self._close()
        self._open(key)  # the reader runs the secure channel on the new key: proven
        self._close()
        os.replace(pending, self.key_file)
        self.key = key
        return (f"reader at address {self.pd} on {self.port_url} paired in install mode: a "
                f"new secure channel key set with KEYSET, stored in {self.key_file} (0600)")

    def _open(self, key: bytes, *, install: bool = False) -> osdp.ControlPanel:
        try:
            self._port = serial.serial_for_url(self.port_url, baudrate=9600, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"{self.port_url}: {exc}") from exc
        flags = [osdp.LibFlag.InstallMode] if install else [osdp.LibFlag.EnforceSecure]
        info = osdp.PDInfo(self.pd, SerialChannel(self._port), scbk=key,
                           name=f"rdr-{self.pd}", flags=flags)
        cp = osdp.ControlPanel([info], log_level=osdp.LogLevel.Error,
                               event_handler=self._on_event)
        cp.start()
        self._cp = cp
        deadline = time.monotonic() + self.online_timeout
        while time.monotonic() < deadline:
            if cp.is_online(self.pd) and cp.is_sc_active(self.pd):
                if install:  # on SCBK-D first; libosdp then sends KEYSET and restarts it
                    time.sleep(0.6)
                return cp
            time.sleep(0.02)
        online = cp.is_online(self.pd)
        self._close()
        if install:
            raise DeviceTimeout(
                f"reader {self.pd} on {self.port_url}: "
                + ("answers but would not pair: is it in install mode?" if online
                   else "no answer"))
        raise DeviceTimeout(
            f"reader {self.pd} on {self.port_url}: "
            + ("online but the secure channel did not open (wrong key?)" if online
               else "no answer"))

    def _connect(self) -> tuple[osdp.ControlPanel, str | None]:
        paired = None
        if self.key is None:
            if not self.key_file.exists() and self.install_mode:
                paired = self._pair()
            elif not self.key_file.exists():
                raise DriverError(
                    f"no secure channel key {self.key_file}: put the reader in install mode "
                    "and set properties.install_mode = true for its first pairing, or "
                    "install the key it was given (32 hex digits, mode 0600)")
            else:
                self.key = load_key(self.key_file)
        assert self.key is not None
        return self._open(self.key), paired

    def _close(self) -> None:
        cp, self._cp = self._cp, None
        if cp is not None:
            with contextlib.suppress(RuntimeError):
                cp.stop()
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    # ------------------------------------------------------------ contract

    async def connect(self) -> DeviceInfo:
        cp, paired = await asyncio.to_thread(self._connect)
        pd_id = await asyncio.to_thread(cp.get_pd_id, self.pd)
        ident = serial_identity(pd_id.serial_number)
        if self.expect is not None and ident != self.expect:
            await asyncio.to_thread(self._close)
            raise ProtocolError(f"identity mismatch: the site config says {self.expect}, "
                                f"the reader at address {self.pd} reports {ident}")
        return DeviceInfo(
            vendor=f"OSDP vendor {pd_id.vendor_code & 0xFFFFFF:06X}",
            model=f"OSDP reader model {pd_id.model}", compartments=0,
            serial=ident.removeprefix("osdp:"),
            firmware=f"{pd_id.firmware_version & 0xFFFFFFFF:08X}",
            details={"pd_address": self.pd, "secure_channel": "enforced"},
            key_installed=paired)

    async def read_state(self) -> DeviceState:
        cp = self._cp
        if cp is None:
            raise DeviceTimeout("reader not connected")
        online, sc = await asyncio.to_thread(
            lambda: (cp.is_online(self.pd), cp.is_sc_active(self.pd)))
        if not online:
            raise DeviceTimeout(f"reader {self.pd} stopped answering")
        if not sc:
            raise ProtocolError(f"reader {self.pd}: secure channel lost")
        return DeviceState((), details={"cards_read": self.cards})

    async def unlock(self, compartment: int) -> DeviceState:
        from edge_agent.errors import NoSuchCompartment

        raise NoSuchCompartment("a card reader has no compartments")

    async def indicate(self, signal: Signal) -> None:
        cp = self._cp
        if cp is None:
            raise DeviceTimeout("reader not connected")
        colour, on_time, beeps = FEEDBACK[Signal(signal)]
        led = {"command": osdp.Command.LED, "reader": 0, "led_number": 0,
               "control_code": 1, "on_count": on_time or 1, "off_count": 0,
               "on_color": colour, "off_color": osdp.CommandLEDColor.Black,
               "timer_count": on_time, "temporary": True}
        ok = await asyncio.to_thread(cp.submit_command, self.pd, led)
        if beeps:
            buzz = {"command": osdp.Command.Buzzer, "reader": 0, "control_code": 2,
                    "on_count": 2 if beeps == 1 else 5, "off_count": 2, "rep_count": beeps}
            ok = await asyncio.to_thread(cp.submit_command, self.pd, buzz) and ok
        if not ok:
            raise DeviceTimeout(f"reader {self.pd} did not take the {signal} signal")

    async def identify(self) -> None:
        cp = self._cp
        if cp is None:
            raise DeviceTimeout("reader not connected")
        led = {"command": osdp.Command.LED, "reader": 0, "led_number": 0,
               "control_code": 1, "on_count": 3, "off_count": 3,
               "on_color": osdp.CommandLEDColor.Cyan, "off_color": osdp.CommandLEDColor.Black,
               "timer_count": 50, "temporary": True}
        await asyncio.to_thread(cp.submit_command, self.pd, led)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

"""A simulated OSDP reader: libosdp's own peripheral device on a pseudo-terminal.

The agent's driver (libosdp's control panel) talks to it over the pty exactly as to a
reader on RS-485, secure channel included; the simulator is a third-party implementation
of the other end, not a copy of the driver. ``present(card, keys)`` is a card held to the
reader (with keypad digits before it); ``signals`` records what the reader was told to
show (green, red, amber) so tests and technicians can see the feedback.
"""

from __future__ import annotations

import os
import threading
import time
import tty
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import osdp

from edge_agent_osdp.driver import serial_identity, write_key

COLOURS = {osdp.CommandLEDColor.Green: "green", osdp.CommandLEDColor.Red: "red",
           osdp.CommandLEDColor.Amber: "amber", osdp.CommandLEDColor.Cyan: "cyan",
           osdp.CommandLEDColor.Black: "off"}


class _FdChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no types
    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        os.set_blocking(fd, False)

    def read(self, max_bytes: int) -> bytes:
        try:
            return os.read(self.fd, max_bytes)
        except (BlockingIOError, OSError):
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return os.write(self.fd, buf)
        except (BlockingIOError, OSError):
            return 0

    def flush(self) -> None:
        return None


class ReaderSimulator:
    """One OSDP reader on a pty; ``link`` is a symlink to the agent's end."""

    def __init__(self, link: str, *, pd_address: int = 101, serial_number: int = 1,
                 key: bytes | None, key_file: str | None = None) -> None:
        self.link = Path(link)
        self.pd_address = pd_address
        self.serial_number = serial_number
        self.key = key  # None: a reader in install mode, fresh from its box
        self.keysets = 0  # keys installed by a control panel (KEYSET)
        self.key_file = Path(key_file) if key_file else None
        self.signals: list[str] = []  # LED colours the reader was told to show, in order
        self.beeps = 0
        self._lock = threading.Lock()
        self._pd: osdp.PeripheralDevice | None = None
        self._fds: tuple[int, int] | None = None

    @property
    def identity(self) -> str:
        return serial_identity(self.serial_number)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ReaderSimulator:
        known = {"link", "pd_address", "serial_number", "key", "key_file", "install_mode"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown osdp simulator option(s): {', '.join(unknown)}")
        if "link" not in options:
            raise ValueError("osdp simulator: give link = PATH (the pty the agent opens)")
        key_hex = str(options.get("key", ""))
        key_file = options.get("key_file")
        if not key_hex and key_file and Path(str(key_file)).exists():
            key_hex = Path(str(key_file)).read_text(encoding="ascii").strip()
        key: bytes | None = bytes.fromhex(key_hex) if key_hex else os.urandom(16)
        if options.get("install_mode") is True:
            key, key_file = None, None  # the agent pairs it and keeps the key
        elif key is None or len(key) != 16:
            raise ValueError("osdp simulator: key must be 32 hex digits")
        return cls(str(options["link"]), pd_address=int(options.get("pd_address", 101)),
                   serial_number=int(options.get("serial_number", 1)), key=key,
                   key_file=str(key_file) if key_file else None)

    def _on_command(self, cmd: Mapping[str, Any]) -> tuple[int, Any]:
        with self._lock:
            if cmd.get("command") == osdp.Command.LED:
                self.signals.append(COLOURS.get(cmd.get("on_color", -1), "other"))
            elif cmd.get("command") == osdp.Command.Buzzer:
                self.beeps += int(cmd.get("rep_count") or 1)
            elif cmd.get("command") == osdp.Command.Keyset:
                # libosdp runs the channel on the new key; a restart keeps it, as a
                # reader keeps its key in flash.
                self.key = bytes(cmd["data"])
                self.keysets += 1
        return 0, None

    def start(self) -> None:
        if self.key is not None and self.key_file is not None and not self.key_file.exists():
            # The installer programs the reader and stores the same key for the agent.
            self.key_file.parent.mkdir(parents=True, exist_ok=True)
            write_key(self.key_file, self.key)
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        self._fds = (master, slave)
        self.link.unlink(missing_ok=True)
        self.link.symlink_to(os.ttyname(slave))
        info = osdp.PDInfo(self.pd_address, _FdChannel(master), scbk=self.key, name="sim",
                           id=osdp.PdId(2, 7, 0x0A1B2C, self.serial_number, 0x00030201))
        caps = osdp.PDCapabilities([(osdp.Capability.LEDControl, 1, 1),
                                    (osdp.Capability.AudibleControl, 1, 1),
                                    (osdp.Capability.CommunicationSecurity, 1, 1),
                                    (osdp.Capability.Readers, 1, 1)])
        self._pd = osdp.PeripheralDevice(info, caps, log_level=osdp.LogLevel.Error,
                                         command_handler=self._on_command)
        self._pd.start()

    def present(self, card: str, keys: str = "") -> None:
        """A card held to the reader, after keypad digits ``keys`` (if any)."""
        pd = self._pd
        if pd is None:
            raise RuntimeError("the simulator is not started")
        for digit in keys:
            pd.submit_event({"event": osdp.Event.KeyPress, "reader_no": 0,
                             "data": digit.encode()})
            time.sleep(0.05)
        data = bytes.fromhex(card)
        pd.submit_event({"event": osdp.Event.CardRead, "reader_no": 0, "direction": 0,
                         "format": osdp.CardFormat.Unspecified, "length": len(data) * 8,
                         "data": data})

    def last_signal(self) -> str | None:
        with self._lock:
            return self.signals[-1] if self.signals else None

    def stop(self) -> None:
        pd, self._pd = self._pd, None
        if pd is not None:
            pd.stop()
        if self._fds is not None:
            for fd in self._fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fds = None
        self.link.unlink(missing_ok=True)

    def describe(self) -> list[str]:
        mode = "secure channel" if self.key is not None else "install mode, not paired"
        return [f"OSDP reader {self.identity} (address {self.pd_address}, {mode}) "
                f"on {self.link}"]

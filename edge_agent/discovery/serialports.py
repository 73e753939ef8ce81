"""USB-serial port discovery through pyserial's port listing.

Ports are reported by their stable ``/dev/serial/by-id`` name where one exists, because
Linux renumbers ``/dev/ttyUSB*`` across reboots.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serial.tools import list_ports

from edge_agent.contract import UsbMatcher

BY_ID = Path("/dev/serial/by-id")


@dataclass(frozen=True)
class UsbPort:
    device: str  # /dev/ttyUSB0
    stable: str  # /dev/serial/by-id/... or the device if none
    vid: int
    pid: int
    serial_number: str | None
    description: str

    @property
    def bus_id(self) -> str:
        """A bus id that survives renumbering: adapter serial number or by-id name."""
        basis = self.serial_number or Path(self.stable).name
        return "usb-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{self.vid:04x}-{self.pid:04x}-{basis}")


def by_id_names(directory: Path = BY_ID) -> dict[str, str]:
    """Map real device paths to their by-id symlink."""
    out: dict[str, str] = {}
    if directory.is_dir():
        for link in directory.iterdir():
            try:
                out[os.path.realpath(link)] = str(link)
            except OSError:
                continue
    return out


def usb_ports(ports: Iterable[Any] | None = None, by_id: dict[str, str] | None = None
              ) -> list[UsbPort]:
    """USB-serial ports now present (``ports`` defaults to pyserial's listing)."""
    listing = list_ports.comports() if ports is None else ports
    names = by_id_names() if by_id is None else by_id
    out = []
    for p in listing:
        vid, pid = getattr(p, "vid", None), getattr(p, "pid", None)
        if vid is None or pid is None:
            continue
        device = str(p.device)
        out.append(
            UsbPort(
                device=device,
                stable=names.get(os.path.realpath(device), device),
                vid=int(vid),
                pid=int(pid),
                serial_number=getattr(p, "serial_number", None),
                description=str(getattr(p, "description", "") or ""),
            )
        )
    return out


def matching(ports: Sequence[UsbPort], matchers: Sequence[tuple[str, UsbMatcher]]
             ) -> list[tuple[UsbPort, list[str]]]:
    """Ports with the plugins whose USB matchers accept them."""
    out = []
    for port in ports:
        plugins = sorted({name for name, m in matchers if (m.vid, m.pid) == (port.vid, port.pid)})
        if plugins:
            out.append((port, plugins))
    return out

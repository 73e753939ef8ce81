"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``), standard library only.

``READY=1`` once the agent serves its socket; ``WATCHDOG=1`` every half watchdog period,
sent *from the event loop*, so a loop that stalls (a blocking call, a deadlock) stops the
pings and systemd restarts the agent; ``STOPPING=1`` on the way down. Without
``NOTIFY_SOCKET`` (not started by systemd) every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket


def notify(message: str) -> bool:
    """Send one notification; False if not under systemd or the socket is gone."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), addr)
        return True
    return False


def watchdog_interval() -> float | None:
    """Half of systemd's watchdog period, or None when no watchdog is set for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


async def watchdog(stop: asyncio.Event) -> None:
    """Ping systemd from the loop until ``stop``; a stalled loop sends nothing."""
    interval = watchdog_interval()
    if interval is None:
        return
    while not stop.is_set():
        notify("WATCHDOG=1")
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass

"""Helpers for testing the agent and vendor plugins against real parts.

Used by edge-agent's own tests and meant for plugin authors: an in-process agent on a
real Unix socket and a real state directory, a bounded ``wait_until``, and observers
that see the agent only as its users do, through the socket API (``wait_device``,
``wait_event``), so a test does not break when the agent's insides are rearranged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from edge_agent.agent import Agent
from edge_agent.api import schema
from edge_agent.client import AgentClient
from edge_agent.config import parse_site_config
from edge_agent.errors import ClientError


async def wait_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
                     what: str = "condition") -> Any:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


class BusStandIn:
    """A :class:`~edge_agent.contract.BusLink` without a port, for a plugin's unit tests:
    ``answer(request_bytes)`` returns the bytes the wire would carry back (or ``None``
    for silence). It behaves as the core's bus does: one transaction at a time, the
    decoder's ``reset()`` before each request (contract 1.2), the first frame that
    ``match`` accepts returned, every other frame handed to the listeners, and
    :meth:`push` delivers bytes a device sends on its own. ``sent`` lists the requests.

    Use it to test a driver's framing and error handling in milliseconds; use a real
    pseudo-terminal (your simulator) and the conformance suite for everything else.
    """

    def __init__(self, answer: Callable[[bytes], bytes | None], *, bus_id: str = "bus-1",
                 address: str = "/dev/ttyTEST") -> None:
        self._answer = answer
        self._bus_id, self._address = bus_id, address
        self._lock = asyncio.Lock()
        self._listeners: list[tuple[Any, Callable[[Any], None]]] = []
        self.sent: list[bytes] = []

    @property
    def bus_id(self) -> str:
        return self._bus_id

    @property
    def address(self) -> str:
        return self._address

    async def transact(self, request: bytes, decoder: Any, match: Callable[[Any], bool],
                       timeout: float, *, expect_reply: bool = True) -> Any | None:
        async with self._lock:
            reset = getattr(decoder, "reset", None)
            if callable(reset):
                reset()
            self.sent.append(request)
            reply = self._answer(request)
            if not expect_reply or not reply:
                return None
            found = None
            for frame in decoder.feed(reply):
                if found is None and match(frame):
                    found = frame
                else:
                    self._deliver(frame)
            return found

    def listen(self, decoder: Any, callback: Callable[[Any], None]) -> None:
        self._listeners.append((decoder, callback))

    def push(self, data: bytes) -> None:
        """Bytes a device sends unasked, decoded by each listener's decoder."""
        for decoder, callback in self._listeners:
            for frame in decoder.feed(data):
                callback(frame)

    def _deliver(self, frame: Any) -> None:
        for _decoder, callback in self._listeners:
            callback(frame)


def _online(d: schema.Device) -> bool:
    return d["link"] == "online"


async def wait_device(client: AgentClient, device_id: str,
                      pred: Callable[[schema.Device], Any] = _online, *,
                      timeout: float = 10.0, what: str = "") -> schema.Device:
    """Poll ``GET /v1/devices/{id}`` until the device exists and ``pred`` holds (by
    default: it is online); return what the API last said. Fails after ``timeout`` with
    the last answer in the message."""
    deadline = time.monotonic() + timeout
    last: schema.Device | str = "not listed"
    while True:
        try:
            d: schema.Device = await client.call("device", id=device_id)
            last = d
            if pred(d):
                return d
        except ClientError as exc:
            if exc.status != 404:
                raise
        if time.monotonic() > deadline:
            brief = last if isinstance(last, str) else {
                k: last.get(k) for k in ("link", "reason", "error", "ignored")}
            raise AssertionError(f"timed out after {timeout:g}s waiting for {device_id}"
                                 f" {what or 'to be online'}; last seen: {brief}")
        await asyncio.sleep(0.02)


async def wait_devices(client: AgentClient, device_ids: list[str] | set[str],
                       pred: Callable[[schema.Device], Any] = _online, *,
                       timeout: float = 10.0, what: str = "") -> dict[str, schema.Device]:
    """:func:`wait_device` for several devices at once (one deadline for all)."""
    deadline = time.monotonic() + timeout
    out = {}
    for dev in sorted(device_ids):
        out[dev] = await wait_device(client, dev, pred, what=what,
                                     timeout=max(0.1, deadline - time.monotonic()))
    return out


async def wait_event(client: AgentClient, pred: Callable[[schema.AuditRecord], Any]
                     = lambda e: True, *, timeout: float = 10.0, what: str = "",
                     **filters: Any) -> schema.AuditRecord:
    """Poll ``GET /v1/events`` (with the API's own filters, e.g. ``action="unlock"``,
    ``device=...``) until a record satisfies ``pred``; return the newest such record."""
    deadline = time.monotonic() + timeout
    while True:
        events: list[schema.AuditRecord] = await client.call("events", limit=500, **filters)
        hits = [e for e in events if pred(e)]
        if hits:
            return hits[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for an audit record "
                                 f"{what or filters}; newest: {events[-3:]}")
        await asyncio.sleep(0.02)


async def wait_status(client: AgentClient, pred: Callable[[schema.Status], Any], *,
                      timeout: float = 10.0, what: str = "") -> schema.Status:
    """Poll ``GET /v1/status`` until ``pred`` holds; return that status."""
    deadline = time.monotonic() + timeout
    while True:
        status: schema.Status = await client.call("status")
        if pred(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or pred}; "
                                 f"health {status['health']}, audit {status['audit']}")
        await asyncio.sleep(0.05)


async def adopt(client: AgentClient, device_id: str, *, reason: str = "label checked",
                timeout: float = 15.0) -> schema.DecisionAnswer:
    """Adopt a device as a technician does: wait until it is in the inbox and has been
    identified (what it presents is shown), then adopt it. Armoury devices always need
    this; other classes where the site's ``auto_adopt`` does not cover them."""
    deadline = time.monotonic() + timeout
    while True:
        items: list[schema.InboxItem] = await client.call("inbox")
        if any(i.get("device") == device_id for i in items):
            dev: schema.Device = await client.call("device", id=device_id)
            if dev.get("presented"):
                break
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {device_id} in "
                                 f"the inbox, identified; inbox: {items}")
        await asyncio.sleep(0.05)
    answer: schema.DecisionAnswer = await client.call("adopt", id=device_id,
                                                       body={"reason": reason})
    return answer


def comp(d: schema.Device, index: int) -> schema.Compartment:
    """Compartment ``index`` (1-based, as everywhere in the API) of a device."""
    return d["compartments"][index - 1]


@contextlib.contextmanager
def short_tempdir(prefix: str = "ea-") -> Any:
    """A short directory for Unix sockets (their paths are limited to 107 bytes)."""
    d = tempfile.mkdtemp(prefix=prefix)
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_agent(
    site_toml: str,
    state_dir: Path,
    *,
    extra_plugins: dict[str, object] | None = None,
    load_entry_points: bool = True,
) -> AsyncIterator[tuple[Agent, AgentClient]]:
    """Start an agent in this event loop from a site config held in a string."""
    config = parse_site_config(site_toml, "<test>")
    with short_tempdir() as sockdir:
        agent = Agent(config, state_dir=state_dir, socket_path=sockdir / "agent.sock",
                      extra_plugins=extra_plugins, load_entry_points=load_entry_points)
        await agent.start()
        try:
            async with AgentClient(agent.socket_path) as client:
                yield agent, client
        finally:
            await agent.stop()


def netns_available() -> bool:
    """True if this machine can make a private network namespace (``unshare -rn``)."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"],
                           capture_output=True, timeout=20)
    return probe.returncode == 0


def run_in_netns(script: Path, *, timeout: float = 120, loopback_fallback: bool = False
                 ) -> dict[str, Any]:
    """Run a Python script in a private network namespace with only ``lo`` up, so its
    mDNS traffic never reaches a real interface; return the JSON object it prints last.

    The script exits non-zero on failure; its stderr tail is in the assertion message.
    Without namespaces, ``loopback_fallback`` runs it on the host (the script must bind
    zeroconf to 127.0.0.1 only); otherwise the calling test is skipped.
    """
    if netns_available():
        cmd = ["unshare", "-rn", "sh", "-c",
               f'ip link set lo up && exec "{sys.executable}" "{script}"']
    elif loopback_fallback:
        cmd = [sys.executable, str(script)]
    else:
        import pytest

        pytest.skip("needs unshare and ip for a private network namespace "
                    "(./run installs util-linux and iproute2)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=dict(os.environ))
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stderr[-4000:]}"
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out

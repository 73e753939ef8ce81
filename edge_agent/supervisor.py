"""Per-device supervision: connect, poll, degrade, go offline, reconnect with backoff.

States: ``discovered -> connecting -> online <-> degraded -> offline -> connecting ...``,
and ``blocked`` when the device answers as another device than the one adopted (its
pins, :mod:`edge_agent.pinning`): no commands, and a slow retry that only a device
matching its pins leaves.
A device's outage is logged once when it starts and once when it ends, however long it
lasts. Every driver call runs under a deadline; a driver that raises something other than
:class:`DriverError`, or hangs, is a plugin fault that degrades this device only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from edge_agent.contract import DeviceDriver, DeviceInfo, DeviceState
from edge_agent.errors import DeviceTimeout, DeviceUnavailable, DriverError, IdentityMismatch

log = logging.getLogger(__name__)
T = TypeVar("T")


class Link(enum.StrEnum):
    DISCOVERED = "discovered"
    CONNECTING = "connecting"
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"
    BLOCKED = "blocked"


@dataclass
class Counters:
    polls: int = 0
    poll_failures: int = 0
    timeouts: int = 0
    reconnects: int = 0
    plugin_faults: int = 0
    pushed: int = 0
    last_poll_ms: float | None = None


@dataclass
class Timing:
    poll_interval: float = 1.0
    call_timeout: float = 2.0
    offline_after: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def full_jitter(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """AWS "full jitter": uniform in [0, min(cap, initial * 2**attempt)]."""
    return rng.uniform(0, min(cap, initial * (2 ** min(attempt, 30))))


@dataclass
class Supervised:
    """What the supervisor reports upward; the agent turns it into events and store writes."""

    link: Link = Link.DISCOVERED
    since: float = field(default_factory=time.time)
    reason: str = ""
    info: DeviceInfo | None = None
    state: DeviceState | None = None
    counters: Counters = field(default_factory=Counters)
    last_answer: float | None = None  # wall time the device last answered a poll or push


class DeviceSupervisor:
    def __init__(
        self,
        device_id: str,
        plugin: str,
        driver: DeviceDriver,
        timing: Timing,
        *,
        on_link: Callable[[DeviceSupervisor, Link, Link, str], None],
        on_state: Callable[[DeviceSupervisor, DeviceState], None],
        on_plugin_fault: Callable[[str, str], None],
        check: Callable[[DeviceSupervisor, DeviceInfo], str | None] | None = None,
        seed: int | None = None,
    ) -> None:
        self.device_id = device_id
        self.plugin = plugin
        self.driver = driver
        self.timing = timing
        self.status = Supervised()
        self._on_link = on_link
        self._on_state = on_state
        self._on_plugin_fault = on_plugin_fault
        self._check = check  # None, or why the device that connected is not the pinned one
        self._rng = random.Random(seed)
        self._stopping = False
        self._waiter: asyncio.Future[None] | None = None
        self._outage_started: float | None = None

    # ----------------------------------------------------------------- helpers

    async def _call(self, what: str, coro: Awaitable[T]) -> T:
        try:
            # asyncio.timeout() bounds the call without wrapping it in another task.
            async with asyncio.timeout(self.timing.call_timeout):
                return await coro
        except TimeoutError as exc:
            self.status.counters.timeouts += 1
            raise DeviceTimeout(
                f"{what} took longer than {self.timing.call_timeout:g}s"
            ) from exc
        except DriverError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not a DriverError: a bug in the plugin. Isolate it to this device.
            self.status.counters.plugin_faults += 1
            detail = f"{what} raised {type(exc).__name__}: {exc}"
            self._on_plugin_fault(self.plugin, detail)
            raise DriverError(f"plugin fault: {detail}") from exc

    def _set(self, link: Link, reason: str = "") -> None:
        old = self.status.link
        if old == link:
            self.status.reason = reason or self.status.reason
            return
        self.status.link = link
        self.status.since = time.time()
        self.status.reason = reason
        now = time.monotonic()
        if link in (Link.DEGRADED, Link.OFFLINE) and self._outage_started is None:
            self._outage_started = now
            level = logging.WARNING if link is Link.DEGRADED else logging.ERROR
            log.log(level, "device %s %s: %s", self.device_id, link.value, reason)
        elif link is Link.BLOCKED:
            log.error("device %s blocked: %s", self.device_id, reason)
        elif link is Link.ONLINE and old is Link.BLOCKED:
            log.warning("device %s answers as the adopted device again", self.device_id)
            self._outage_started = None
        elif link is Link.OFFLINE and old is Link.DEGRADED:
            log.error("device %s offline: %s; reconnecting with backoff", self.device_id, reason)
        elif link is Link.ONLINE and self._outage_started is not None:
            log.warning(
                "device %s recovered after %.1fs", self.device_id, now - self._outage_started
            )
            self._outage_started = None
        elif link is Link.ONLINE:
            log.info("device %s online", self.device_id)
        self._on_link(self, old, link, reason)

    # ----------------------------------------------------------------- running

    async def run(self) -> None:
        attempt = 0
        while not self._stopping:
            if self.status.link is Link.DISCOVERED:
                self._set(Link.CONNECTING)
            try:
                info = await self._call("connect", self.driver.connect())
                why = self._check(self, info) if self._check is not None else None
                if why is not None:
                    raise IdentityMismatch(why)
            except IdentityMismatch as exc:
                # Not an outage to retry quickly: the pinned device is not there. Tried
                # again slowly, so the genuine device put back is taken up again.
                self._set(Link.BLOCKED, str(exc))
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.driver.close(), self.timing.call_timeout)
                await self._sleep(self.timing.backoff_max)
                continue
            except DriverError as exc:
                self._set(Link.OFFLINE, str(exc))
                await self._sleep(full_jitter(
                    attempt, self.timing.backoff_initial, self.timing.backoff_max, self._rng
                ))
                attempt += 1
                self.status.counters.reconnects += 1
                continue
            attempt = 0
            self.status.info = info
            self._set(Link.ONLINE)
            await self._poll_loop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.driver.close(), self.timing.call_timeout)
            if not self._stopping:
                await self._sleep(full_jitter(
                    0, self.timing.backoff_initial, self.timing.backoff_max, self._rng
                ))

    async def _poll_loop(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            try:
                state = await self._call("read_state", self.driver.read_state())
            except IdentityMismatch as exc:  # e.g. a new TLS connection, another certificate
                self._set(Link.BLOCKED, str(exc))
                return
            except DriverError as exc:
                failures += 1
                self.status.counters.poll_failures += 1
                if failures >= self.timing.offline_after:
                    self._set(Link.OFFLINE, str(exc))
                    return
                self._set(Link.DEGRADED, str(exc))
            else:
                failures = 0
                self.status.counters.polls += 1
                self.status.counters.last_poll_ms = round((loop.time() - started) * 1000, 2)
                self.status.last_answer = time.time()
                self._set(Link.ONLINE)
                self._apply(state)
            delay = self.timing.poll_interval - (loop.time() - started)
            await self._sleep(max(0.0, delay))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early on stop()."""
        if self._stopping:
            return
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        handle = loop.call_later(seconds, _wake, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._waiter = None

    def _apply(self, state: DeviceState) -> None:
        previous = self.status.state
        self.status.state = state
        if (previous is None or previous.compartments != state.compartments
                or previous.alarms != state.alarms):
            self._on_state(self, state)

    def stop(self) -> None:
        self._stopping = True
        if self._waiter is not None:
            _wake(self._waiter)

    # ----------------------------------------------------------------- commands

    def _require_online(self) -> None:
        if self.status.link not in (Link.ONLINE, Link.DEGRADED):
            raise DeviceUnavailable(
                f"device {self.device_id} is {self.status.link.value}"
                + (f" ({self.status.reason})" if self.status.reason else "")
            )

    async def unlock(self, compartment: int) -> DeviceState:
        self._require_online()
        state = await self._call(f"unlock {compartment}", self.driver.unlock(compartment))
        self._apply(state)
        return state

    def pushed(self, state: DeviceState) -> None:
        """A reading the device reported on its own (contract 1.2 pushed events): applied
        as a poll result would be, the moment it arrives."""
        if self._stopping or self.status.link not in (Link.ONLINE, Link.DEGRADED):
            return
        self.status.counters.pushed += 1
        self.status.last_answer = time.time()
        self._apply(state)

    async def refresh(self) -> DeviceState:
        """Read the device now (between polls), applying what it says."""
        self._require_online()
        state = await self._call("read_state", self.driver.read_state())
        self._apply(state)
        return state

    async def identify(self) -> None:
        self._require_online()
        await self._call("identify", self.driver.identify())

    async def set_out_of_service(self, compartment: int, out: bool, reason: str) -> bool:
        """Tell the device itself, if its driver can (optional ``set_out_of_service``
        method, since contract 1.1). Returns False when the driver has no such method."""
        fn = getattr(self.driver, "set_out_of_service", None)
        if fn is None:
            return False
        self._require_online()
        await self._call(f"out of service {compartment}", fn(compartment, out, reason))
        return True

    def to_json(self) -> dict[str, Any]:
        s = self.status
        return {
            "link": s.link.value,
            "since": s.since,
            "reason": s.reason,
            "counters": asdict(s.counters),
        }

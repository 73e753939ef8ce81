"""One owner per physical serial bus.

A :class:`SerialBus` holds the pyserial port (a tty or a pyserial URL such as
``socket://host:5000`` or ``rfc2217://host:2217``) and runs every transaction, request
to reply, on one dedicated thread, in the order they were asked for. Transactions are
therefore serialised on the wire and blocking serial I/O never runs on the event loop.
The last frames on the wire are kept in a ring buffer for diagnostics.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from edge_agent.contract import FrameDecoder, SerialSettings, WireRecord
from edge_agent.errors import TransportError

log = logging.getLogger(__name__)

_READ_SLICE = 0.02  # seconds a blocking read may wait before the deadline is checked


@dataclass
class BusCounters:
    transactions: int = 0
    timeouts: int = 0
    errors: int = 0
    reopens: int = 0
    last_rtt_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SerialBus:
    """A serial bus (or serial-over-IP bridge) shared by every board on it."""

    def __init__(
        self,
        bus_id: str,
        url: str,
        settings: SerialSettings,
        *,
        wire_log: int = 200,
    ) -> None:
        self._bus_id = bus_id
        self._url = url
        self.settings = settings
        self._port: Any = None
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"bus-{bus_id}"
        )
        self.wire: collections.deque[WireRecord] = collections.deque(maxlen=wire_log)
        self._wire_lock = threading.Lock()
        self.counters = BusCounters()
        self.closed = False

    @property
    def bus_id(self) -> str:
        return self._bus_id

    @property
    def address(self) -> str:
        return self._url

    @property
    def is_open(self) -> bool:
        return self._port is not None

    # -------------------------------------------------------------- thread side

    def _open_sync(self) -> None:
        if self._port is not None:
            return
        kwargs: dict[str, Any] = {
            "baudrate": self.settings.baudrate, "bytesize": self.settings.bytesize,
            "parity": self.settings.parity, "stopbits": self.settings.stopbits,
            "timeout": _READ_SLICE, "write_timeout": 2.0,
        }
        try:
            try:
                port = serial.serial_for_url(self._url, **kwargs)
            except NotImplementedError:
                # Some URL transports (rfc2217://) have no write timeout.
                del kwargs["write_timeout"]
                port = serial.serial_for_url(self._url, **kwargs)
        except (serial.SerialException, OSError, ValueError, NotImplementedError) as exc:
            raise TransportError(f"cannot open {self._url}: {exc}") from exc
        self._port = port

    def _close_sync(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _record(self, direction: str, data: bytes, note: str = "") -> None:
        with self._wire_lock:
            self.wire.append(WireRecord(time.time(), direction, data, note))

    def _transact_sync(
        self,
        request: bytes,
        decoder: FrameDecoder,
        match: Callable[[Any], bool],
        timeout: float,
        expect_reply: bool,
    ) -> Any | None:
        self._open_sync()
        port = self._port
        assert port is not None
        started = time.monotonic()
        deadline = started + timeout
        if port.timeout != _READ_SLICE:
            port.timeout = _READ_SLICE
        try:
            # Late replies to an earlier, timed-out request must not be taken for ours.
            stale = port.read(port.in_waiting) if port.in_waiting else b""
            if stale:
                self._record("rx", stale, "discarded before request")
            port.write(request)
            port.flush()
            self._record("tx", request)
            if not expect_reply:
                return None
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.counters.timeouts += 1
                    self._record("rx", b"", f"timeout after {timeout * 1000:.0f} ms")
                    return None
                if remaining < _READ_SLICE:
                    # pyserial reconfigures the port when its timeout changes (termios
                    # calls), so it is only shortened for the last slice before a deadline.
                    port.timeout = remaining
                waiting = port.in_waiting
                chunk = port.read(waiting if waiting else 1)
                if not chunk:
                    continue
                if port.in_waiting:
                    chunk += port.read(port.in_waiting)
                self._record("rx", chunk)
                for frame in decoder.feed(chunk):
                    if match(frame):
                        self.counters.last_rtt_ms = (time.monotonic() - started) * 1000
                        return frame
        except (serial.SerialException, OSError) as exc:
            self.counters.errors += 1
            self._close_sync()
            raise TransportError(f"{self._url}: {exc}") from exc
        finally:
            self.counters.transactions += 1

    # -------------------------------------------------------------- loop side

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._open_sync)

    async def transact(
        self,
        request: bytes,
        decoder: FrameDecoder,
        match: Callable[[Any], bool],
        timeout: float,
        *,
        expect_reply: bool = True,
    ) -> Any | None:
        """Run one request/reply exchange alone on the bus (see :class:`BusLink`)."""
        if self.closed:
            raise TransportError(f"bus {self._bus_id} is closed")
        if self._port is None:
            self.counters.reopens += 1
        # The single bus thread runs jobs in submission order, one at a time, so the wire
        # is serialised without a lock on the loop, and the next queued transaction starts
        # the moment the previous one ends (no event-loop round trip in between). A caller
        # cancelled while its job is still queued takes the job out of the queue; a job
        # already on the wire runs to its own deadline.
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._transact_sync, request, decoder, match, timeout, expect_reply
        )

    def wire_snapshot(self, limit: int = 100) -> list[WireRecord]:
        with self._wire_lock:
            return list(self.wire)[-limit:]

    async def close(self) -> None:
        self.closed = True
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close_sync)
        self._thread.shutdown(wait=False, cancel_futures=True)

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
import contextlib
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
_IDLE_READ = 0.01  # how often an idle bus with listeners is read for unsolicited frames


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
        # Contract 1.2 listeners: frames nobody asked for (see BusLink.listen).
        self._listeners: list[Callable[[Any], None]] = []
        self._idle_decoder: FrameDecoder | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._busy = 0  # transactions queued or running
        self.lent: str | None = None  # to whom, while a scan has the port (see lend())

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
        if self.lent is not None:
            raise TransportError(f"bus {self._bus_id} is lent to {self.lent}: the port is "
                                 "closed until it is given back")
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
                self._record("rx", stale, "before request: unsolicited or late")
                if self._idle_decoder is not None:  # a board's own report, not a reply
                    for frame in self._idle_decoder.feed(stale):
                        self._unsolicited(frame)
            reset = getattr(decoder, "reset", None)
            if callable(reset):
                reset()  # a reply cut short earlier must not be glued to this one's
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
                found = None
                for frame in decoder.feed(chunk):
                    if found is None and match(frame):
                        found = frame
                    else:
                        self._unsolicited(frame)  # a board speaking on its own
                if found is not None:
                    self.counters.last_rtt_ms = (time.monotonic() - started) * 1000
                    return found
        except (serial.SerialException, OSError) as exc:
            self.counters.errors += 1
            self._close_sync()
            raise TransportError(f"{self._url}: {exc}") from exc
        finally:
            self.counters.transactions += 1

    def _unsolicited(self, frame: Any) -> None:
        for callback in list(self._listeners):
            try:
                callback(frame)
            except Exception:  # a listener's bug must not stop the bus
                log.exception("bus %s: a frame listener failed", self._bus_id)

    def _idle_read_sync(self) -> None:
        """Bytes that arrived while nobody asked: decode and hand to the listeners."""
        port, decoder = self._port, self._idle_decoder
        if port is None or decoder is None or self._busy:
            return
        try:
            waiting = port.in_waiting
            if not waiting:
                return
            data = port.read(waiting)
        except (serial.SerialException, OSError):
            return  # the next transaction reports and reopens
        if data:
            self._record("rx", data, "unsolicited")
            for frame in decoder.feed(data):
                self._unsolicited(frame)

    async def _idle_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(_IDLE_READ)
            if not self._busy and self._port is not None:
                await loop.run_in_executor(self._thread, self._idle_read_sync)

    def listen(self, decoder: FrameDecoder, callback: Callable[[Any], None]) -> None:
        """See :meth:`edge_agent.contract.BusLink.listen`. Call from the event loop."""
        self._listeners.append(callback)
        if self._idle_decoder is None:
            self._idle_decoder = decoder
        if self._idle_task is None:
            self._idle_task = asyncio.get_running_loop().create_task(
                self._idle_loop(), name=f"bus-idle:{self._bus_id}")

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
        self._busy += 1
        # The single bus thread runs jobs in submission order, one at a time, so the wire
        # is serialised without a lock on the loop, and the next queued transaction starts
        # the moment the previous one ends (no event-loop round trip in between). A caller
        # cancelled while its job is still queued takes the job out of the queue; a job
        # already on the wire runs to its own deadline.
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._thread, self._transact_sync, request, decoder, match, timeout,
                expect_reply)
        finally:
            self._busy -= 1

    async def lend(self, to: str) -> None:
        """Close the port and keep it closed for ``to`` (a bus scan): transactions fail
        with a TransportError meanwhile, so the boards on it go offline, as they would
        with the cable out. Queued transactions run (and fail) first."""
        self.lent = to
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close_sync)

    def give_back(self) -> None:
        """The next transaction opens the port again."""
        self.lent = None

    def wire_snapshot(self, limit: int = 100) -> list[WireRecord]:
        with self._wire_lock:
            return list(self.wire)[-limit:]

    async def close(self) -> None:
        self.closed = True
        if self._idle_task is not None:
            self._idle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_task
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close_sync)
        self._thread.shutdown(wait=False, cancel_futures=True)

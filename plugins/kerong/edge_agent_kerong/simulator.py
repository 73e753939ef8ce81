"""A Kerong KR-CU16 bus simulator that speaks the exact wire protocol.

Several boards share one simulated bus, reached through a pseudo-terminal (standing in
for an RS-485 adapter) or a TCP port (standing in for a KR-BU bridge or a serial device
server). The disputed behaviours are options (HOOK bit polarity, whether unlock replies)
and faults can be switched on at any time (garbage bytes, silence, slow replies, a board
dropping off the bus). An optional scenario plays officers collecting and returning kit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import socket
import termios
import threading
import time
import tty
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_agent_kerong import codec

log = logging.getLogger(__name__)


@dataclass
class SimBoard:
    address: int
    doors_closed: int = 0xFFFF  # bit set = door closed
    items: int = 0  # bit set = item present
    present: bool = True  # False = dropped off the bus (powered off, cable cut)


@dataclass
class Faults:
    silent: bool = False  # no board answers at all
    slow_ms: float = 0.0  # extra delay before every reply
    garbage_rate: float = 0.0  # chance of garbage bytes before a reply
    garbage_len: int = 24
    interleave: bool = False  # another board's status frame just before every reply


@dataclass
class BusOptions:
    hook_closed_bit: int = 1  # HOOK bit value that means "door closed" ([!] in protocols.md)
    unlock_replies: bool = True  # whether 0x31 gets a status reply ([!])
    baudrate: int = 19200
    pace: bool = True  # model the wire at ``baudrate`` (see ``SimBus.wire_schedule``)
    turnaround_ms: float = 1.0  # board's think time between request and reply
    gap_chars: float = 3.5  # silent characters that end a frame on RS-485 (t3.5)
    auto_close_s: float = 3.0  # a door popped by unlock is pushed shut after this long
    push_changes: bool = False  # firmware that sends a status frame on every change
    users: bool = False  # someone stands at every unlocked door: takes or returns the item
    check_line: bool = False  # on a pty: a request sent at another baud rate is garbage


class SimBus:
    """The boards on one bus and how they answer. Thread-safe."""

    def __init__(self, boards: Iterable[SimBoard], options: BusOptions | None = None) -> None:
        self.boards = {b.address: b for b in boards}
        self.options = options or BusOptions()
        self.faults = Faults()
        self.lock = threading.RLock()
        self.requests = 0
        self.unlocks: list[tuple[int, int]] = []  # (board, lock index) in order received
        self.jammed: set[tuple[int, int]] = set()  # (board, lock index) whose bolt sticks
        self.first_answer: dict[int, float] = {}  # board -> time.monotonic() of first reply
        self._rng = random.Random(0x4B52)
        self._pending_close: dict[tuple[int, int], float] = {}
        self.push_out: Any = None  # set by the endpoint: writes bytes onto the wire
        self._wire_free = 0.0  # monotonic time the paced wire is silent again

    # ------------------------------------------------------------ state changes

    def board(self, address: int) -> SimBoard:
        return self.boards[address]

    def set_door(self, board: int, lock: int, closed: bool) -> None:
        with self.lock:
            b = self.boards[board]
            before = b.doors_closed
            b.doors_closed = _set_bit(b.doors_closed, lock, closed)
            if b.doors_closed != before:
                self._report(b)

    def set_item(self, board: int, lock: int, present: bool) -> None:
        with self.lock:
            b = self.boards[board]
            before = b.items
            b.items = _set_bit(b.items, lock, present)
            if b.items != before:
                self._report(b)

    def _report(self, b: SimBoard) -> None:
        """With ``push_changes``: the board sends its status on its own."""
        push = self.push_out
        if self.options.push_changes and push is not None and b.present \
                and not self.faults.silent:
            try:
                push(codec.encode_status(b.address, self.hooks_of(b), b.items))
            except OSError:
                pass

    def interleaved(self, asked: int) -> bytes:
        """With ``faults.interleave``: the status frame of another board (round robin),
        sent unasked just before the reply to ``asked`` (a shared bus where a board
        reports on its own)."""
        with self.lock:
            others = [b for b in self.boards.values() if b.present and b.address != asked]
            if not others:
                others = [b for b in self.boards.values() if b.present]
            if not others:
                return b""
            b = others[self.requests % len(others)]
            return codec.encode_status(b.address, self.hooks_of(b), b.items)

    def _user_at(self, board: int, lock: int) -> None:
        """A person at the opened door: after a moment the item goes out (or comes back,
        if the compartment was empty), then the door is pushed shut."""
        delay = 0.6 + self._rng.random() * 0.8

        def act() -> None:
            with self.lock:
                has_item = bool((self.boards[board].items >> lock) & 1)
            self.set_item(board, lock, not has_item)
            time.sleep(0.5 + self._rng.random() * 0.5)
            self.set_door(board, lock, True)

        threading.Timer(delay, act).start()

    def drop_board(self, board: int, present: bool = False) -> None:
        with self.lock:
            self.boards[board].present = present

    # ------------------------------------------------------------ protocol

    def hooks_of(self, b: SimBoard) -> int:
        return b.doors_closed if self.options.hook_closed_bit == 1 else (~b.doors_closed) & 0xFFFF

    def handle(self, req: codec.Request) -> bytes | None:
        """Apply a request; return the reply bytes or ``None`` for no reply."""
        with self.lock:
            self.requests += 1
            b = self.boards.get(req.board)
            if self.faults.silent or b is None or not b.present:
                return None
            if req.cmd == codec.CMD_STATUS:
                self.first_answer.setdefault(b.address, time.monotonic())
                return codec.encode_status(b.address, self.hooks_of(b), b.items)
            if req.cmd == codec.CMD_UNLOCK:
                self.unlocks.append((req.board, req.lock))
                if (req.board, req.lock) in self.jammed:
                    # The board acknowledges, the bolt does not move: the door stays shut.
                    return (codec.encode_status(b.address, self.hooks_of(b), b.items)
                            if self.options.unlock_replies else None)
                b.doors_closed = _set_bit(b.doors_closed, req.lock, False)
                self._pending_close[(req.board, req.lock)] = (
                    time.monotonic() + self.options.auto_close_s
                )
                if self.options.users:
                    self._user_at(req.board, req.lock)
                if self.options.unlock_replies:
                    return codec.encode_status(b.address, self.hooks_of(b), b.items)
                return None
            return None

    def garbage(self) -> bytes:
        """Noise with fake frame starts in it, as a bad cable or a second talker produces."""
        with self.lock:
            n = self.faults.garbage_len
            junk = bytearray(self._rng.randrange(256) for _ in range(n))
            for i in range(0, n, 7):
                junk[i] = codec.STX
            return bytes(junk)

    def wire_schedule(self, now: float, request_len: int, reply_len: int) -> float:
        """The half-duplex wire, when paced: a request goes on the wire when it is free
        (a master that sends too soon waits out the silence), takes its bit time at the
        baud rate (10 bits a character), ends with the 3.5-character silence the boards
        frame on, then the board's turnaround and the reply's own bit time; the wire is
        free again one more gap later. Returns when the reply's last byte arrives
        (``time.monotonic()``), and keeps the wire busy until then plus the gap."""
        o = self.options
        if not o.pace:
            return now + o.turnaround_ms / 1000 + self.faults.slow_ms / 1000
        char = 10 / o.baudrate
        with self.lock:
            start = max(now, self._wire_free)
            end_of_request = start + request_len * char + o.gap_chars * char
            if not reply_len:
                self._wire_free = end_of_request
                return end_of_request
            done = (end_of_request + o.turnaround_ms / 1000 + self.faults.slow_ms / 1000
                    + reply_len * char)
            self._wire_free = done + o.gap_chars * char
            return done

    def tick(self) -> None:
        """Close doors whose auto-close time has come (called by the endpoint threads)."""
        now = time.monotonic()
        with self.lock:
            for key, when in list(self._pending_close.items()):
                if when <= now:
                    del self._pending_close[key]
                    self.set_door(key[0], key[1], True)


def _set_bit(value: int, bit: int, on: bool) -> int:
    return value | (1 << bit) if on else value & ~(1 << bit)


class _Endpoint:
    """Serves one SimBus over a byte stream (pty master or TCP connection)."""

    def __init__(self, bus: SimBus) -> None:
        self.bus = bus
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _line_ok(self) -> bool:
        """Whether the line is set as the boards are (a pty's termios stands for the
        UART: at another baud rate a board hears framing errors and never answers)."""
        return True

    def _serve_stream(self, read_fd: int, write: Any, alive: Any) -> None:
        decoder = codec.Decoder()
        while not self._stop.is_set() and alive():
            self.bus.tick()
            try:
                ready, _, _ = select.select([read_fd], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(read_fd, 4096)
            except OSError:
                return
            if not data:
                return
            if not self._line_ok():
                decoder.reset()
                continue
            for frame in decoder.feed(data):
                if not isinstance(frame, codec.Request):
                    continue
                reply = self.bus.handle(frame)
                due = self.bus.wire_schedule(time.monotonic(), codec.REQUEST_LEN,
                                             len(reply) if reply else 0)
                if reply is None:
                    continue
                if self.bus.faults.garbage_rate and (
                    self.bus._rng.random() < self.bus.faults.garbage_rate
                ):
                    reply = self.bus.garbage() + reply
                if self.bus.faults.interleave:
                    reply = self.bus.interleaved(frame.board) + reply
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    write(reply)
                except OSError:
                    return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


class PtyEndpoint(_Endpoint):
    """The bus on a pseudo-terminal; ``link`` (if given) is a symlink to the slave tty."""

    def __init__(self, bus: SimBus, link: str | None = None) -> None:
        super().__init__(bus)
        self.link = link
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.tty_name = os.ttyname(self.slave)
        if link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(self.tty_name, link)

    @property
    def port(self) -> str:
        return self.link or self.tty_name

    def _line_ok(self) -> bool:
        if not self.bus.options.check_line:
            return True
        try:
            speed = termios.tcgetattr(self.slave)[5]  # ospeed: what the opener set
        except termios.error:
            return True
        return bool(speed == getattr(termios, f"B{self.bus.options.baudrate}", speed))

    def start(self) -> None:
        write_lock = threading.Lock()

        def write(data: bytes) -> None:  # replies and change reports never interleave
            with write_lock:
                os.write(self.master, data)

        self.bus.push_out = write

        def run() -> None:
            self._serve_stream(self.master, write, lambda: True)

        self._thread = threading.Thread(target=run, name=f"sim-pty-{self.tty_name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        super().stop()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)


class TcpEndpoint(_Endpoint):
    """The bus behind a TCP port, like a KR-BU bridge: one client at a time, newest wins."""

    def __init__(self, bus: SimBus, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(bus)
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.host, self.port_number = self.sock.getsockname()[:2]
        self._client: socket.socket | None = None
        self.accepting = True

    @property
    def port(self) -> str:
        return f"socket://{self.host}:{self.port_number}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name="sim-tcp", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            self.bus.tick()
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.accepting:
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            old, self._client = self._client, conn
            self.bus.push_out = conn.sendall
            if old is not None:
                with contextlib.suppress(OSError):
                    old.close()
            threading.Thread(
                target=self._serve_stream,
                args=(conn.fileno(), conn.sendall, lambda c=conn: c is self._client),
                name="sim-tcp-conn",
                daemon=True,
            ).start()

    def disconnect_clients(self) -> None:
        """Drop the current connection (a bridge rebooting)."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def stop(self) -> None:
        super().stop()
        self.disconnect_clients()
        self.sock.close()


class Scenario:
    """Officers collecting and returning kit at random, seeded so runs are repeatable."""

    def __init__(self, bus: SimBus, interval: float = 1.5, seed: int = 7) -> None:
        self.bus = bus
        self.interval = interval
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sim-scenario", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval * (0.5 + self.rng.random())):
            present = [b for b in self.bus.boards.values() if b.present]
            if not present:
                continue
            board = self.rng.choice(present)
            lock = self.rng.randrange(codec.LOCKS)
            with self.bus.lock:
                has_item = bool((board.items >> lock) & 1)
            # Door opens, item goes out (collect) or comes in (return), door shuts.
            self.bus.set_door(board.address, lock, False)
            if self._stop.wait(0.4 + self.rng.random() * 0.6):
                return
            self.bus.set_item(board.address, lock, not has_item)
            if self._stop.wait(0.4 + self.rng.random() * 0.6):
                return
            self.bus.set_door(board.address, lock, True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)


@dataclass
class KerongSimulator:
    """One simulated bus from a ``[[simulators]]`` table (see ``from_options``)."""

    bus: SimBus
    endpoint: PtyEndpoint | TcpEndpoint
    scenario: Scenario | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> KerongSimulator:
        known = {
            "transport", "link", "listen", "boards", "hook_closed_bit", "unlock_replies",
            "pace", "turnaround_ms", "scenario", "scenario_interval", "seed", "auto_close_s",
            "push_changes", "users", "items", "gap_chars", "baudrate",
        }
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown kerong simulator option(s): {', '.join(unknown)}")
        boards = options.get("boards", [0])
        if not isinstance(boards, list) or not all(
            isinstance(b, int) and 0 <= b < codec.BOARDS for b in boards
        ):
            raise ValueError("boards must be a list of board addresses 0-15")
        seed = int(options.get("seed", 7))
        rng = random.Random(seed)
        items = options.get("items")  # every compartment full (0xFFFF) or a given mask
        sim_boards = [SimBoard(a, items=int(items) if items is not None else rng.getrandbits(16))
                      for a in boards]
        opts = BusOptions(
            hook_closed_bit=int(options.get("hook_closed_bit", 1)),
            unlock_replies=bool(options.get("unlock_replies", True)),
            pace=bool(options.get("pace", True)),
            turnaround_ms=float(options.get("turnaround_ms", 1.0)),
            gap_chars=float(options.get("gap_chars", 3.5)),
            baudrate=int(options.get("baudrate", 19200)),
            auto_close_s=float(options.get("auto_close_s", 3.0)),
            push_changes=bool(options.get("push_changes", False)),
            users=bool(options.get("users", False)),
        )
        bus = SimBus(sim_boards, opts)
        transport = options.get("transport", "pty")
        endpoint: PtyEndpoint | TcpEndpoint
        if transport == "pty":
            endpoint = PtyEndpoint(bus, link=options.get("link"))
        elif transport == "tcp":
            listen = str(options.get("listen", "127.0.0.1:0"))
            host, _, port = listen.rpartition(":")
            try:
                endpoint = TcpEndpoint(bus, host or "127.0.0.1", int(port))
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot listen on {listen}: {exc}") from exc
        else:
            raise ValueError(f"transport must be 'pty' or 'tcp', not {transport!r}")
        scenario = None
        if options.get("scenario", False):
            scenario = Scenario(bus, float(options.get("scenario_interval", 1.5)), seed)
        return cls(bus, endpoint, scenario)

    def start(self) -> None:
        self.endpoint.start()
        if self.scenario:
            self.scenario.start()

    def stop(self) -> None:
        if self.scenario:
            self.scenario.stop()
        self.endpoint.stop()

    def take(self, board: int, compartment: int) -> None:
        """Someone forces a compartment and takes its item, without any unlock (the
        unauthorised removal a custody station must catch)."""
        lock = compartment - 1
        self.bus.set_door(board, lock, closed=False)
        time.sleep(0.3)
        self.bus.set_item(board, lock, present=False)
        time.sleep(0.3)
        self.bus.set_door(board, lock, closed=True)

    def describe(self) -> list[str]:
        boards = ",".join(str(a) for a in sorted(self.bus.boards))
        return [f"kerong KR-CU16 boards {boards} on {self.endpoint.port}"]

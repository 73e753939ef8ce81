"""Dashboard responsiveness under load, measured where the technician sees it: from a
key written to the terminal to the frame's bytes read back from it (issue 17).

A real agent (its own process) supervises 1,000 devices from a load plugin whose drivers
change a compartment often enough to give ~100 state changes a second. The dashboard
runs as ``edge-agent-tui`` in its own process on a pseudo-terminal of 200x60, as over
SSH. On the devices table (sorted by id) it presses the cursor keys: the clock stops
when the bytes of the new cursor row (``load:NNNN``) have been read from the pty. Then it
types ``:`` and a device id into the jump box and times the Enter that opens the device
(until its breadcrumb ``> load:NNNN`` is read) and the Esc back (``Devices │`` drawn
again). The same run with no changes flowing is the baseline. Target: cursor keys p95
<= 50 ms under load; screen changes are printed beside it.

Bounded: a fixed number of keys, fixed waits; everything stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import multiprocessing
import os
import random
import select
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEVICES = 1000
COLS, ROWS = 200, 60

def agent_process(sock: str, state: str, change_rate: float, ready: Any) -> None:
    from edge_agent.agent import Agent
    from edge_agent.config import parse_site_config
    from edge_agent.contract import (
        CompartmentState,
        DeviceInfo,
        DeviceState,
        Door,
        Item,
        PluginInfo,
    )
    from edge_agent.hookspecs import hookimpl

    class Driver:
        def __init__(self, seed: int) -> None:
            self.rng = random.Random(seed)
            self.items = [True] * 8

        async def connect(self) -> DeviceInfo:
            return DeviceInfo("Load", "L8", 8)

        async def read_state(self) -> DeviceState:
            # Each device is polled once a second: this rate gives ~change_rate changes/s.
            if self.rng.random() < change_rate / DEVICES:
                i = self.rng.randrange(8)
                self.items[i] = not self.items[i]
            return DeviceState(tuple(
                CompartmentState(i + 1, Door.CLOSED, Item.PRESENT if v else Item.ABSENT)
                for i, v in enumerate(self.items)))

        async def unlock(self, compartment: int) -> DeviceState:
            return await self.read_state()

        async def identify(self) -> None:
            return None

        async def close(self) -> None:
            return None

    class LoadPlugin:
        @hookimpl
        def edge_agent_plugin_info(self) -> PluginInfo:
            return PluginInfo(name="load", vendor="Load", version="0", contract="1.0")

        @hookimpl
        def edge_agent_create_driver(self, candidate: Any, context: Any) -> Driver:
            return Driver(int(candidate.identity.split(":")[1]))

    devices = "".join(f'[[devices]]\nplugin = "load"\nidentity = "load:{i:04d}"\n'
                      f'address = "10.0.{i // 250}.{i % 250}"\n' for i in range(DEVICES))
    toml = ('[site]\nid = "load"\n[agent]\npoll_interval = 1.0\n[audit]\n'
            'checkpoint_interval = 60\n' + devices)

    async def main() -> None:
        agent = Agent(parse_site_config(toml), state_dir=Path(state), socket_path=Path(sock),
                      extra_plugins={"load": LoadPlugin()}, load_entry_points=False)
        await agent.start()
        ready.set()
        await agent.run_forever()

    asyncio.run(main())


class Terminal:
    """The dashboard on a pty: everything it writes is read and kept with its time."""

    def __init__(self, sock: str) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(COLS),
               "LINES": str(ROWS)}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tui.app", "--socket", sock], stdin=slave, stdout=slave,
            stderr=slave, env=env, cwd=ROOT, start_new_session=True)
        os.close(slave)
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.alive = True
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while self.alive:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.buf += chunk

    def mark(self) -> int:
        with self.lock:
            return len(self.buf)

    def wait_for(self, text: bytes, since: int, timeout: float = 5.0) -> float | None:
        """When ``text`` appeared in the output after byte ``since`` (perf_counter)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                found = self.buf.find(text, since) >= 0
            if found:
                return time.perf_counter()
            time.sleep(0.0005)
        return None

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        self.type(b"q")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.alive = False
        os.close(self.master)


def measure(sock: str, keys: int) -> tuple[list[float], list[float]]:
    term = Terminal(sock)
    try:
        if term.wait_for(b"Overview", 0, timeout=30) is None:
            raise SystemExit("the dashboard did not draw")
        time.sleep(3.0)  # the 1,000 devices arrive
        mark = term.mark()
        term.type(b"d")
        if term.wait_for(b"Devices \xe2\x94\x82", mark, timeout=10) is None:
            raise SystemExit("no devices screen")
        time.sleep(1.0)
        moves: list[float] = []
        row = 0
        for i in range(keys):
            # Cursor keys on the devices table (sorted by id: row k is load:k). The clock
            # stops when the new cursor row's bytes are read back.
            down = i % 40 < 20
            row += 1 if down else -1
            mark = term.mark()
            t0 = time.perf_counter()
            term.type(b"\x1b[B" if down else b"\x1b[A")
            seen = term.wait_for(f"load:{row:04d}".encode(), mark)
            moves.append((seen or time.perf_counter()) - t0)
            time.sleep(0.05)
        lat: list[float] = []
        rng = random.Random(5)
        for _ in range(keys // 4):
            dev = f"load:{rng.randrange(DEVICES):04d}"
            term.type(b":")
            time.sleep(0.15)
            term.type(dev.encode())
            time.sleep(0.15)
            mark = term.mark()
            t0 = time.perf_counter()
            term.type(b"\r")
            seen = term.wait_for(f"> {dev} ".encode(), mark)
            lat.append((seen or time.perf_counter()) - t0)
            time.sleep(0.2)
            mark = term.mark()
            t0 = time.perf_counter()
            term.type(b"\x1b")
            seen = term.wait_for(b"Devices \xe2\x94\x82", mark)
            lat.append((seen or time.perf_counter()) - t0)
            time.sleep(0.2)
        return moves, lat
    finally:
        term.close()


def run(change_rate: float, keys: int) -> tuple[list[float], list[float]]:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ea-tui-") as d:
        sock = str(Path(d) / "a.sock")
        ready = ctx.Event()
        proc = ctx.Process(target=agent_process, args=(sock, str(Path(d) / "s"), change_rate,
                                                       ready), daemon=True)
        proc.start()
        try:
            if not ready.wait(60):
                raise SystemExit("agent did not start")
            return measure(sock, keys)
        finally:
            proc.terminate()
            proc.join(10)


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=60)
    keys = min(max(ap.parse_args().keys, 10), 400)
    idle, idle_screens = run(0.0, keys)
    busy, busy_screens = run(100.0, keys)
    print(f"devices {DEVICES}, terminal {COLS}x{ROWS}; clock stops when the frame's bytes "
          "are read from the pty")
    print(f"cursor keys, no updates   p50 {pct(idle, .5):6.1f} ms  p95 {pct(idle, .95):6.1f} ms"
          f"  ({len(idle)} keys)")
    print(f"cursor keys, 100 chg/s    p50 {pct(busy, .5):6.1f} ms  p95 {pct(busy, .95):6.1f} ms"
          f"  (target p95 <= 50 ms)")
    print(f"open a device / back, no updates  p50 {pct(idle_screens, .5):6.1f} ms  p95 "
          f"{pct(idle_screens, .95):6.1f} ms  ({len(idle_screens)} keys: Enter, Esc)")
    print(f"open a device / back, 100 chg/s   p50 {pct(busy_screens, .5):6.1f} ms  p95 "
          f"{pct(busy_screens, .95):6.1f} ms")
    ratio = pct(busy, .95) / pct(idle, .95)
    print(f"p95 ratio load / no updates (cursor keys) {ratio:6.2f}")
    print(json.dumps({"figure": "tui_key_to_frame", "ratio": round(ratio, 3),
                      "target": "p95 <= 50 ms at 1,000 devices and 100 changes/s",
                      "baseline": "the same dashboard and keys with no changes flowing",
                      "p95_ms": round(pct(busy, .95), 1), "p50_ms": round(pct(busy, .5), 1),
                      "idle_p95_ms": round(pct(idle, .95), 1),
                      "screen_change_p95_ms": round(pct(busy_screens, .95), 1)}))


if __name__ == "__main__":
    main()

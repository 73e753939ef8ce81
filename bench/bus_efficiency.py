"""RS-485 bus efficiency: status polls per second across 16 KR-CU16 boards, divided by
the wire-time bound, measured in the same run.

The simulator runs in its own process (``edge-agent simulate``) on a pseudo-terminal and
holds every reply for its wire time at 19200 baud plus the board's turnaround, as a real
bus does. The agent supervises the 16 boards with no pause between polls, so the bus is
the bottleneck. The bound is what a perfect master could do on the same wire:

    polls/s bound = 1 / ((5 + 9 bytes) x 10 bits / 19200 baud + turnaround)

Target: ratio >= 0.85. Bounded: a fixed measuring window, then everything stops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

from edge_agent_kerong import codec

from edge_agent.config import parse_site_config
from edge_agent.testing import running_agent, wait_until

BAUD = 19200
TURNAROUND_MS = 1.0
BOARDS = 16


async def measure(window: float) -> None:
    with tempfile.TemporaryDirectory(prefix="ea-bench-") as d:
        run = Path(d)
        link = run / "tty"
        site = f"""
[site]
id = "bench"
[agent]
poll_interval = 0.0001
command_timeout = 2.0
probe_interval = 3600
[[buses]]
id = "bus"
port = "{link}"
protocol = "kerong-cu16"
[vendor.kerong]
probe_timeout_ms = 50
[[simulators]]
plugin = "kerong"
transport = "pty"
link = "{link}"
boards = {list(range(BOARDS))}
pace = true
turnaround_ms = {TURNAROUND_MS}
"""
        cfg = run / "site.toml"
        cfg.write_text(site)
        parse_site_config(site)
        sim = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "simulate", "--site",
                                str(cfg)], stdout=subprocess.PIPE, text=True)
        try:
            assert sim.stdout is not None
            while sim.stdout.readline().strip() != "ready":
                pass
            async with running_agent(site.split("[[simulators]]")[0], run / "state") as (
                    agent, _client):
                await wait_until(lambda: sum(1 for d in agent.devices.values()
                                             if d.link == "online") == BOARDS, timeout=30,
                                 what="16 boards online")
                await asyncio.sleep(0.5)

                def total() -> int:
                    return sum(d.supervisor.status.counters.polls
                               for d in agent.devices.values() if d.supervisor)

                start_polls, t0 = total(), time.perf_counter()
                await asyncio.sleep(window)
                polls, elapsed = total() - start_polls, time.perf_counter() - t0
            bare_polls, bare_elapsed = bare_loop(link, window)
        finally:
            sim.terminate()
            sim.wait(10)
    per_poll = (5 + 9) * 10 / BAUD + TURNAROUND_MS / 1000
    bound = 1 / per_poll
    rate = polls / elapsed
    print(f"boards on the bus          {BOARDS}")
    print(f"wire-time bound            {bound:8.1f} polls/s "
          f"({per_poll * 1000:.2f} ms per 5+9-byte exchange at {BAUD} baud + "
          f"{TURNAROUND_MS:g} ms turnaround)")
    print(f"agent, measured            {rate:8.1f} polls/s ({polls} polls in {elapsed:.1f} s, "
          f"{rate / BOARDS:.1f} per board)")
    bare = bare_polls / bare_elapsed
    print(f"bare loop, same transport  {bare:8.1f} polls/s (blocking write/read on the pty, "
          f"no agent)")
    print(f"efficiency ratio           {rate / bound:8.3f}  (agent / wire-time bound; "
          f"target >= 0.85)")
    print(f"agent / bare loop          {rate / bare:8.3f}  (what the agent costs over the "
          f"pty transport itself)")


def bare_loop(link: Path, window: float) -> tuple[int, float]:
    """The fastest master this transport allows: one thread, raw fd, no framework."""
    fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    n, t0 = 0, time.perf_counter()
    try:
        while time.perf_counter() - t0 < window:
            for board in range(BOARDS):
                os.write(fd, codec.status_request(board))
                got = b""
                while len(got) < codec.STATUS_LEN:
                    if not select.select([fd], [], [], 1.0)[0]:
                        raise RuntimeError("simulator stopped answering")
                    got += os.read(fd, 64)
                n += 1
    finally:
        os.close(fd)
    return n, time.perf_counter() - t0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(measure(min(max(ap.parse_args().seconds, 1.0), 60.0)))

"""RS-485 bus efficiency: status polls per second across 16 KR-CU16 boards, against the
wire-time bound computed from the frames on the wire, measured in the same run; and the
cost of a wire capture running meanwhile (issue 14), in the same run.

The simulator runs in its own process (``edge-agent simulate``) on a pseudo-terminal and
models the half-duplex wire at 19200 baud: every character takes 10 bit times, a frame
ends with 3.5 silent characters (t3.5) before the board sees it, the board thinks for
its turnaround, its reply takes its own bit time, and the wire is silent for another
3.5 characters before the master may send again (a master that sends sooner waits). The
agent supervises the 16 boards with no pause between polls, so the wire is the
bottleneck. The bound is what a perfect master could do with the frames the agent put on
the wire (their lengths read from its wire ring):

    seconds per exchange = (request + reply bytes) x 10 / baud + 2 x 3.5 x 10 / baud
                           + turnaround

Targets: agent / bound >= 0.9 (issue 17); polls/s with ``edge-agent capture`` running
>= 0.95 of polls/s without (issue 14). Bounded: fixed measuring windows, then everything
stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
GAP_CHARS = 3.5
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
gap_chars = {GAP_CHARS}
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

                async def window_rate(capture: bool) -> tuple[float, int, float]:
                    cap = None
                    if capture:
                        cap = await asyncio.create_subprocess_exec(
                            sys.executable, "-m", "edge_agent.cli", "capture",
                            "kerong:bus:0", "--output", str(run / "bench.pcap"),
                            "--seconds", str(window + 1), "--socket",
                            str(agent.socket_path), stdin=asyncio.subprocess.DEVNULL,
                            stdout=asyncio.subprocess.DEVNULL)
                        await asyncio.sleep(1.0)  # started, polling the wire view
                    start_polls, t0 = total(), time.perf_counter()
                    await asyncio.sleep(window)
                    polls, elapsed = total() - start_polls, time.perf_counter() - t0
                    if cap is not None:
                        await asyncio.wait_for(cap.wait(), 60)
                        assert cap.returncode == 0, "capture failed"
                    return polls / elapsed, polls, elapsed

                rate, polls, elapsed = await window_rate(capture=False)
                records = agent.buses["bus"].wire_snapshot(2000)
                rate_cap, _, _ = await window_rate(capture=True)
                rate2, _, _ = await window_rate(capture=False)
            bare_polls, bare_elapsed = bare_loop(link, window)
        finally:
            sim.terminate()
            sim.wait(10)
    tx = [len(r.data) for r in records if r.direction == "tx" and r.data]
    rx = [len(r.data) for r in records if r.direction == "rx" and r.data]
    char = 10 / BAUD
    per_poll = ((sum(tx) / len(tx) + sum(rx) / len(tx)) * char + 2 * GAP_CHARS * char
                + TURNAROUND_MS / 1000)
    bound = 1 / per_poll
    ratio = rate / bound
    without = (rate + rate2) / 2  # before and after the capture window
    print(f"boards on the bus          {BOARDS}")
    print(f"frames on the wire         {sum(tx) / len(tx):.1f} + {sum(rx) / len(tx):.1f} "
          f"bytes per exchange (mean of {len(tx)} from the agent's wire ring)")
    print(f"wire-time bound            {bound:8.1f} polls/s "
          f"({per_poll * 1000:.2f} ms per exchange at {BAUD} baud: bytes x 10 bits, "
          f"2 x {GAP_CHARS:g}-char gaps, {TURNAROUND_MS:g} ms turnaround)")
    print(f"agent, measured            {rate:8.1f} polls/s ({polls} polls in {elapsed:.1f} s, "
          f"{rate / BOARDS:.1f} per board)")
    bare = bare_polls / bare_elapsed
    print(f"bare loop, same transport  {bare:8.1f} polls/s (blocking write/read on the pty, "
          f"no agent)")
    print(f"efficiency ratio           {ratio:8.3f}  (agent / wire-time bound; "
          f"target >= 0.9)")
    print(f"agent / bare loop          {rate / bare:8.3f}  (what the agent costs over the "
          f"pty transport itself)")
    print(f"with capture running       {rate_cap:8.1f} polls/s against {without:.1f} without "
          f"(before {rate:.1f}, after {rate2:.1f}): {rate_cap / without:.3f} (target >= 0.95)")
    print(json.dumps({"figure": "bus_efficiency", "ratio": round(ratio, 3),
                      "target": ">= 0.9", "baseline": "wire-time bound from the frames on "
                      "the wire (bit time, 2 x t3.5 gaps, turnaround)",
                      "polls_per_s": round(rate, 1), "bound_per_s": round(bound, 1),
                      "bare_per_s": round(bare, 1)}))
    print(json.dumps({"figure": "capture_overhead", "ratio": round(rate_cap / without, 3),
                      "target": ">= 0.95", "baseline": "the same agent and bus without "
                      "capture, windows before and after, same run",
                      "with_capture_per_s": round(rate_cap, 1),
                      "without_per_s": round(without, 1)}))


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

"""The bus doctor's speed (issue 14): ``edge-agent scan``'s sweep of a KR-CU16 bus at 3
line settings, against the wire-time bound of the requests it sends, in the same run.

The simulator (in this process, its own thread) serves a pseudo-terminal as a UART
would: the boards are set to 38400 baud, so at 19200 and 9600 they hear garbage and
never answer; at 38400 the paced wire model applies (10 bits a character at the boards'
baud, 3.5-character gaps, 1 ms turnaround). Four boards of the sixteen addresses answer.

The bound is the time the protocol itself needs for the requests the scan sent, taken
from the scan's own counts: for an answer, the request's bit time at the trial's baud,
the two gaps, the turnaround and the reply's bit time; for a silent address, the
response timeout the probe declares, counted from the write (a master cannot know sooner
that nobody is there).
What is left is the scan's own cost: opening the port per setting, the plugin's probe
code, the event loop. Target: scan time <= 1.5x the bound.

KR-CU16 has 16 addresses (protocols.md); it is the only bus protocol with a probe in this
tree, so the sweep is 16 addresses x 3 settings = 48 requests (the issue names a
32-address bus; the cost per request is what the ratio measures).

    .venv/bin/python bench/scan_speed.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from edge_agent_kerong import codec
from edge_agent_kerong.simulator import BusOptions, PtyEndpoint, SimBoard, SimBus

from edge_agent.plugins import PluginHost
from edge_agent.scan import scan

BOARD_BAUD = 38400
BAUDS = [19200, 9600, 38400]
PRESENT = [0, 3, 7, 12]
TURNAROUND_MS = 1.0
GAP_CHARS = 3.5
PROBE_TIMEOUT_MS = 80  # the plugin's default probe_timeout_ms


async def one_scan(port: str) -> tuple[float, list[dict[str, object]]]:
    host = PluginHost()
    host.load_entry_points()
    try:
        probes = await host.call_each("edge_agent_bus_probes")
        chosen = [(name, p) for name, ps in probes.items() for p in ps or []
                  if p.protocol == "kerong-cu16"]
        t0 = time.perf_counter()
        trials = await scan(port, chosen, {"kerong": {"probe_timeout_ms": PROBE_TIMEOUT_MS}},
                            bauds=BAUDS)
        return time.perf_counter() - t0, [t.to_json() for t in trials]
    finally:
        host.shutdown()


def bound(trials: list[dict[str, object]]) -> float:
    total = 0.0
    for t in trials:
        baud = int(str(t["settings"]).split()[0])
        n, found = int(str(t["transactions"])), len(t["found"])  # type: ignore[arg-type]
        silent = n - found
        char = 10 / BOARD_BAUD
        total += found * (codec.REQUEST_LEN * 10 / baud + 2 * GAP_CHARS * char
                          + TURNAROUND_MS / 1000 + codec.STATUS_LEN * char)
        # The response timeout runs from the write: the request's own bit time is in it.
        total += silent * max(PROBE_TIMEOUT_MS / 1000, codec.REQUEST_LEN * 10 / baud)
    return total


def main(runs: int) -> None:
    bus = SimBus([SimBoard(a, items=0xFFFF) for a in PRESENT],
                 BusOptions(baudrate=BOARD_BAUD, check_line=True, pace=True,
                            turnaround_ms=TURNAROUND_MS, gap_chars=GAP_CHARS))
    ep = PtyEndpoint(bus)
    ep.start()
    try:
        results = [asyncio.run(one_scan(ep.port)) for _ in range(runs)]
    finally:
        ep.stop()
    elapsed = statistics.median(r[0] for r in results)
    trials = results[0][1]
    b = bound(trials)
    found = {str(t["settings"]): [f["identity"] for f in t["found"]]  # type: ignore[attr-defined]
             for t in trials}
    sent = sum(int(str(t["transactions"])) for t in trials)
    print(f"sweep: {len(trials)} line settings x 16 addresses = {sent} requests; boards at "
          f"{BOARD_BAUD} baud, addresses {PRESENT}")
    for settings, ids in found.items():
        print(f"  {settings}: {len(ids)} found {ids}")
    print(f"wire-time bound of those requests   {b:.3f} s (bit times, gaps, turnaround; "
          f"the {PROBE_TIMEOUT_MS} ms response timeout per silent address)")
    print(f"scan, median of {runs}                  {elapsed:.3f} s")
    print(f"figure: scan / bound = {elapsed / b:.3f} (target <= 1.5)")
    assert found[f"{BOARD_BAUD} 8N1"] and len(found[f"{BOARD_BAUD} 8N1"]) == len(PRESENT)
    print(json.dumps({"figure": "scan_speed", "ratio": round(elapsed / b, 3),
                      "target": "<= 1.5", "baseline": "wire-time bound of the requests the "
                      "scan sent (bit times, t3.5 gaps, turnaround, the probe's response "
                      "timeout for silent addresses)", "scan_s": round(elapsed, 3),
                      "bound_s": round(b, 3), "requests": sent}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    main(max(1, min(ap.parse_args().runs, 9)))

"""Shift start (issue 11): 60 officers badge at 4 stations within a few minutes while the
site polls 208 lockers; the figure is badge -> unlock command on the wire, p95 (target
<= 300 ms), beside a bare loop doing the least the same hardware needs in the same run:
libosdp's control panel takes the card, a dict finds a full compartment, the Kerong
unlock frame is written to the bus.

Everything real: libosdp on both ends (secure channel) on ptys, Kerong boards simulated
on ptys, the agent as its own ``edge-agent run`` process with signed entitlements. The
time runs from the simulated reader's card event to the board simulator receiving the
unlock. Bounded: 60 officers, 4 stations, fixed pacing.

    .venv/bin/python bench/shift_start.py [--officers 60] [--gap 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import osdp
import serial
from edge_agent_kerong import codec
from edge_agent_kerong.simulator import BusOptions, PtyEndpoint, SimBoard, SimBus
from edge_agent_osdp.driver import SerialChannel
from edge_agent_osdp.simulator import ReaderSimulator

from edge_agent import entitlements as ent
from edge_agent.oneshot import SocketClient

STATIONS = 4


class TimedBus(SimBus):
    """A simulated bus that notes when each unlock request arrives."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.unlock_at: list[tuple[int, int, float]] = []

    def handle(self, req: codec.Request) -> bytes | None:
        if req.cmd == codec.CMD_UNLOCK:
            self.unlock_at.append((req.board, req.lock, time.monotonic()))
        return super().handle(req)


def time_to_unlock(present: Any, bus: TimedBus) -> float | None:
    """Seconds from a card presented to the board receiving an unlock (None: none came)."""
    before = len(bus.unlock_at)
    t0 = time.monotonic()
    present()
    end = t0 + 5
    while time.monotonic() < end and len(bus.unlock_at) == before:
        time.sleep(0.001)
    return bus.unlock_at[before][2] - t0 if len(bus.unlock_at) > before else None


def cards(n: int) -> list[str]:
    return [f"{0xC0DE0000 + i:08X}" for i in range(n)]


def agent_run(root: Path, n: int, gap: float) -> list[float]:
    keys = root / "keys"
    priv, pub, _ = ent.keygen(keys)
    csv = root / "officers.csv"
    csv.write_text("officer_id,name,roles,badges,qualifications\n" + "".join(
        f"PC-{i:04d},Officer {i},officer,{c},\n" for i, c in enumerate(cards(n))))
    snapshot = ent.sign(ent.load_private(priv), ent.parse_records(
        csv, ent.load_badge_key(keys / "badge.key")), valid_hours=2)
    station_bus = TimedBus([SimBoard(b, items=0xFFFF) for b in range(STATIONS)],
                           BusOptions(auto_close_s=0.3))
    load_bus = SimBus([SimBoard(b, items=0xFFFF) for b in range(13)], BusOptions())
    eps = [PtyEndpoint(station_bus), PtyEndpoint(load_bus)]
    readers = [ReaderSimulator(str(root / f"rdr{s}"), pd_address=100 + s, serial_number=s + 1,
                               key=os.urandom(16), key_file=str(keys / f"rdr{s}.key"))
               for s in range(STATIONS)]
    for x in (*eps, *readers):
        x.start()
    parts = ['[site]\nid = "shift"\n[agent]\npoll_interval = 1.0\nlog_level = "error"\n',
             f'[entitlements]\ntrusted_keys = ["{pub}"]\nbadge_key = "{keys / "badge.key"}"\n',
             f'[[buses]]\nid = "stations"\nport = "{eps[0].port}"\nprotocol = "kerong-cu16"\n',
             f'[[buses]]\nid = "lockers"\nport = "{eps[1].port}"\nprotocol = "kerong-cu16"\n']
    for s in range(STATIONS):
        parts.append(f'[[devices]]\nplugin = "osdp"\nidentity = "osdp:RDR-{s + 1:08X}"\n'
                     f'address = "{root / f"rdr{s}"}"\nproperties = {{ pd_address = {100 + s}, '
                     f'key_file = "{keys / f"rdr{s}.key"}" }}\n'
                     f'[[stations]]\nid = "S{s}"\nreader = "osdp:RDR-{s + 1:08X}"\n'
                     f'slots = [{{ device = "kerong:stations:{s}", compartments = "1-16", '
                     'equipment = "radio" }]\n')
    (root / "site.toml").write_text("\n".join(parts))
    sock = root / "agent.sock"
    agent = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "run", "--site",
                              str(root / "site.toml"), "--state-dir", str(root / "state"),
                              "--socket", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    lat: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with SocketClient(sock) as c:
            c.call("entitlements_load", body=snapshot)
            while time.monotonic() < deadline:
                devs = c.call("devices")
                if len([d for d in devs if d["link"] == "online"]) >= STATIONS * 2 + 13:
                    break
                time.sleep(0.2)
            time.sleep(1.0)
        for i, card in enumerate(cards(n)):
            rdr = readers[i % STATIONS]
            took = time_to_unlock(lambda rdr=rdr, card=card: rdr.present(card), station_bus)
            if took is not None:
                lat.append(took)
            time.sleep(gap)
    finally:
        agent.terminate()
        agent.wait(20)
        for x in (*readers, *eps):
            x.stop()
    return lat


def bare_run(root: Path, n: int, gap: float) -> list[float]:
    """The least the hardware needs: card in (libosdp CP), dict lookup, frame out."""
    bus = TimedBus([SimBoard(0, items=0xFFFF)], BusOptions(auto_close_s=0.3))
    ep = PtyEndpoint(bus)
    ep.start()
    key = os.urandom(16)
    sim = ReaderSimulator(str(root / "bare-rdr"), pd_address=101, key=key)
    sim.start()
    port = serial.Serial(ep.port, 19200, timeout=0)
    known = {c: i % 16 for i, c in enumerate(cards(n))}
    rdr = serial.serial_for_url(str(root / "bare-rdr"), baudrate=9600, timeout=0)
    lat: list[float] = []

    def on_event(pd: int, event: dict[str, Any]) -> int:
        if event.get("event") == osdp.Event.CardRead:
            lock = known.get(bytes(event["data"]).hex().upper())
            if lock is not None:
                port.write(codec.encode_request(0, lock, codec.CMD_UNLOCK))
        return 0

    cp = osdp.ControlPanel([osdp.PDInfo(101, SerialChannel(rdr), scbk=key,
                                        flags=[osdp.LibFlag.EnforceSecure])],
                           log_level=osdp.LogLevel.Error, event_handler=on_event)
    cp.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not cp.is_sc_active(101):
            time.sleep(0.02)
        for card in cards(n):
            took = time_to_unlock(lambda card=card: sim.present(card), bus)
            if took is not None:
                lat.append(took)
            time.sleep(gap)
    finally:
        cp.stop()
        sim.stop()
        ep.stop()
        port.close()
    return lat


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[max(0, int(len(xs) * q) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--officers", type=int, default=60)
    ap.add_argument("--gap", type=float, default=0.5, help="seconds between badges")
    a = ap.parse_args()
    n, gap = max(4, min(a.officers, 64)), max(0.05, min(a.gap, 5.0))
    with tempfile.TemporaryDirectory(prefix="ea-shift-") as d:
        agent = agent_run(Path(d), n, gap)
        bare = bare_run(Path(d), n, gap)
    a95, b95 = pct(agent, 0.95), pct(bare, 0.95)
    print(f"shift start: {n} officers at {STATIONS} stations, a badge every {gap:g} s, "
          "the site polling 13 more boards (208 lockers)")
    print(f"agent: badge -> unlock on the wire p50 {statistics.median(agent) * 1000:.0f} ms, "
          f"p95 {a95 * 1000:.0f} ms ({len(agent)} of {n} issued; target p95 <= 300 ms)")
    print(f"bare (libosdp CP, dict, frame out): p50 {statistics.median(bare) * 1000:.0f} ms, "
          f"p95 {b95 * 1000:.0f} ms")
    print(f"figure: agent p95 / bare p95 = {a95 / b95:.2f}")
    print(json.dumps({"figure": "shift_start", "ratio": round(a95 / b95, 3),
                      "agent_p95_ms": round(a95 * 1000, 1), "bare_p95_ms": round(b95 * 1000, 1),
                      "issued": len(agent), "officers": n, "target": "agent p95 <= 300 ms",
                      "baseline": "libosdp CP + dict lookup + Kerong frame written"}))


if __name__ == "__main__":
    main()

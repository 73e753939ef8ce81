"""Fleet supervision cost, measured in one run.

One agent (a separate ``edge-agent run`` process) supervises 200 simulated REST locker
gateways with 48 lockers each and 20 Modbus armoury cabinets (both profiles) on loopback,
one poll per device per second. Printed:

* the agent's CPU share of one core and its peak memory (VmHWM) over the window,
* the p99 staleness of device state: from a door changed on a simulator to the change on
  the agent's event stream,
* beside a bare asyncio loop (a separate process) doing the same work on the same
  simulators, in the same run: each device polled on its own staggered 1 s schedule (as
  the agent's supervisors do, not in lock step), the same HTTP GETs and Modbus reads, each
  reading parsed and compared with the last one to find the changes, the same long poll of
  each gateway's card reader, and the same door changes made on the simulators during its
  window as during the agent's. The figure is
  agent CPU / bare CPU; target <= 1.2 (issue 17).

The simulators (real aiohttp servers, pymodbus's own servers) run in this process. Every
loop is bounded in count and time; all traffic is on 127.0.0.1.

    .venv/bin/python bench/fleet_supervision.py [--gateways 200] [--cabinets 20] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from edge_agent_armoury.profile import ProfileLibrary
from edge_agent_armoury.simulator import CabinetSimulator
from edge_agent_gateway.simulator import GatewaySimulator

from edge_agent.client import AgentClient

CLK = os.sysconf("SC_CLK_TCK")

BARE = textwrap.dedent('''
    """The baseline: the same polls, nothing else (no state, no audit, no API)."""
    import asyncio, json, sys, time
    import aiohttp
    from pymodbus.client import AsyncModbusTcpClient
    from edge_agent_armoury.profile import ProfileLibrary, state_reads

    changes = [0]

    async def gateway(session, port, stop, offset):
        await asyncio.sleep(offset)  # staggered, as each supervisor starts on its own
        last = None
        nxt = time.monotonic()
        while time.monotonic() < stop:
            async with session.get(f"http://127.0.0.1:{port}/lockers") as r:
                reading = await r.json()
            if last is not None and reading != last:
                changes[0] += 1
            last = reading
            nxt += 1.0
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    async def reader(session, port, stop):
        # The gateway's built-in card reader, long-polled as the driver does (contract
        # 1.3): first where its list ends, then wait up to 20 s for cards.
        after = None
        while time.monotonic() < stop:
            q = f"after={after or 0}&wait={0 if after is None else 20}"
            try:
                async with session.get(f"http://127.0.0.1:{port}/reader/events?{q}",
                                       timeout=aiohttp.ClientTimeout(
                                           total=max(0.1, stop - time.monotonic()))) as r:
                    got = await r.json()
            except (asyncio.TimeoutError, aiohttp.ClientError):
                return
            after = int(got.get("last", 0))

    async def cabinet(port, profile, unit, stop, offset):
        await asyncio.sleep(offset)
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0,
                                 reconnect_delay=0)
        await c.connect()
        reads = state_reads(profile)
        fns = {"coil": c.read_coils, "discrete": c.read_discrete_inputs,
               "holding": c.read_holding_registers, "input": c.read_input_registers}
        last = None
        nxt = time.monotonic()
        while time.monotonic() < stop:
            reading = []
            for rd in reads:
                r = await fns[rd.table](rd.address, count=rd.count, device_id=unit)
                reading.append(tuple(r.bits if rd.table in ("coil", "discrete")
                                     else r.registers))
            if last is not None and reading != last:
                changes[0] += 1
            last = reading
            nxt += 1.0
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        c.close()

    async def main():
        spec = json.loads(sys.argv[1])
        lib = ProfileLibrary()
        stop = time.monotonic() + spec["seconds"]
        import random
        rng = random.Random(7)
        # No pool limit (aiohttp's default is 100): 200 reader long polls stay open.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            await asyncio.gather(
                *(gateway(s, p, stop, rng.random()) for p in spec["gateways"]),
                *(reader(s, p, stop) for p in spec["gateways"]),
                *(cabinet(p, lib.get(n), u, stop, rng.random())
                  for p, n, u in spec["cabinets"]))
        print(json.dumps({"changes": changes[0]}))

    asyncio.run(main())
''')


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_doors(gws: list[GatewaySimulator], seconds: float, seed: int,
               pending: dict[tuple[str, int], float] | None = None) -> int:
    """About 10 door openings a second spread over the fleet, for ``seconds``; the same
    for the agent's window and the bare loop's. Returns how many were made."""
    rng = random.Random(seed)
    end = time.monotonic() + seconds
    made = 0
    while time.monotonic() < end:
        g = rng.choice(gws)
        n = rng.randrange(g.lockers)
        with g.lock:
            if g.state[n].door_open:
                continue
            g.state[n].door_open = True
        made += 1
        if pending is not None:
            pending[(f"gateway:{g.serial}", n + 1)] = time.monotonic()
        time.sleep(0.1)
    return made


def close_all(gws: list[GatewaySimulator]) -> None:
    for g in gws:
        with g.lock:
            for locker in g.state:
                locker.door_open = False


def site(gws: list[GatewaySimulator], cabs: list[CabinetSimulator]) -> str:
    out = ['[site]\nid = "fleet-bench"\n',
           "[agent]\npoll_interval = 1.0\ncommand_timeout = 2.0\nlog_level = \"warning\"\n",
           "[audit]\ncheckpoint_interval = 60\n"]
    for g in gws:
        out.append(f'[[devices]]\nplugin = "gateway"\nidentity = "gateway:{g.serial}"\n'
                   f'address = "http://127.0.0.1:{g.port}"\nproperties = {{ host = '
                   f'"127.0.0.1", port = {g.port}, serial = "{g.serial}" }}\n')
    for c in cabs:
        out.append(f'[[devices]]\nplugin = "armoury"\nidentity = "armoury:{c.serial}"\n'
                   f'address = "{c.address}"\nproperties = {{ profile = "{c.profile.name}" }}\n')
    return "\n".join(out)


async def measure_agent(sock: Path, pid: int, gws: list[GatewaySimulator],
                        cabs: list[CabinetSimulator], seconds: float) -> dict[str, float]:
    total = len(gws) + len(cabs)
    deadline = time.monotonic() + 120
    async with AgentClient(sock, timeout=10) as c:
        # Armoury cabinets are never adopted by themselves (trust pinning): a technician
        # adopts each, as at installation.
        for cab in cabs:
            while True:
                try:
                    await c.call("adopt", id=f"armoury:{cab.serial}",
                                 body={"reason": "bench installation"})
                    break
                except Exception:  # not found yet: discovery is still starting
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
        while time.monotonic() < deadline:
            st = await c.get("/v1/status")
            if st["devices"].get("online", 0) == total:
                break
            await asyncio.sleep(1.0)
        else:
            raise SystemExit(f"only {st['devices']} of {total} online after 120 s")
    await asyncio.sleep(3.0)  # settle after connect storms
    pending: dict[tuple[str, int], float] = {}
    lat: list[float] = []

    async def watch() -> None:
        async with AgentClient(sock, timeout=None) as c2:
            async for kind, data in c2.stream():
                if kind != "device":
                    continue
                now = time.monotonic()
                for comp in data.get("compartments") or []:
                    key = (data["id"], comp["index"])
                    t0 = pending.get(key)
                    if t0 is not None and comp["door"] == "open":
                        lat.append(now - t0)
                        del pending[key]

    watcher = asyncio.get_running_loop().create_task(watch())
    await asyncio.sleep(0.5)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.to_thread(open_doors, gws, seconds, 3, pending)
    cpu = cpu_seconds(pid) - cpu0
    elapsed = time.monotonic() - t0
    await asyncio.sleep(2.5)  # let the last changes arrive
    watcher.cancel()
    lat.sort()
    return {"cpu_share": cpu / elapsed, "peak_mb": peak_rss_mb(pid),
            "p50": statistics.median(lat) if lat else float("nan"),
            "p99": lat[int(len(lat) * 0.99) - 1] if lat else float("nan"),
            "changes": len(lat), "missed": len(pending)}


def measure_bare(gws: list[GatewaySimulator], cabs: list[CabinetSimulator],
                 seconds: float) -> dict[str, float]:
    spec = {"seconds": seconds + 4, "gateways": [g.port for g in gws],
            "cabinets": [[c.port, c.profile.name, c.unit] for c in cabs]}
    close_all(gws)
    proc = subprocess.Popen([sys.executable, "-c", BARE, json.dumps(spec)],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(3.0)  # connections up
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    made = open_doors(gws, seconds, 3)  # the same changes as in the agent's window
    cpu = cpu_seconds(proc.pid) - cpu0
    elapsed = time.monotonic() - t0
    peak = peak_rss_mb(proc.pid)
    out, _ = proc.communicate(timeout=30)
    seen = json.loads(out.strip().splitlines()[-1])["changes"]
    return {"cpu_share": cpu / elapsed, "peak_mb": peak, "made": made, "seen": seen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gateways", type=int, default=200)
    ap.add_argument("--cabinets", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    lib = ProfileLibrary()
    # Plain HTTP on both sides (the bare loop polls http:// too): the figure is the cost of
    # supervision, not of TLS.
    gws = [GatewaySimulator(serial=f"GW-{i:04d}", lockers=48, tls=False)
           for i in range(args.gateways)]
    cabs = [CabinetSimulator(lib.get("sentinel-wc12" if i % 2 == 0 else "boltline-td8"),
                             f"CAB-{i:04d}", auto_open=False) for i in range(args.cabinets)]
    for g in gws:  # HTTP only: no mDNS for a load test
        g._thread.start()
        g._call(g._serve())
    for c in cabs:
        c.start()
    with tempfile.TemporaryDirectory(prefix="ea-fleet-") as d:
        cfg = Path(d) / "fleet.toml"
        cfg.write_text(site(gws, cabs))
        sock = Path(d) / "agent.sock"
        prof = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get(
            "BENCH_PROFILE") else []
        agent = subprocess.Popen([sys.executable, *prof, "-m", "edge_agent.cli", "run", "--site",
                                  str(cfg), "--state-dir", str(Path(d) / "state"),
                                  "--socket", str(sock)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL,
                                 env={**os.environ, "EDGE_AGENT_PLUGINS": "gateway,armoury"})
        try:
            while not sock.exists():
                if agent.poll() is not None:
                    raise SystemExit("the agent exited; run it by hand to see why")
                time.sleep(0.2)
            a = asyncio.run(measure_agent(sock, agent.pid, gws, cabs, args.seconds))
        finally:
            agent.terminate()
            agent.wait(timeout=30)
    b = measure_bare(gws, cabs, args.seconds)
    for c in cabs:
        c.stop()
    for g in gws:
        g._loop.call_soon_threadsafe(g._loop.stop)
    n = args.gateways + args.cabinets
    print(f"fleet: {args.gateways} REST gateways x 48 lockers + {args.cabinets} Modbus "
          f"cabinets = {n} devices, 1 poll/s each, {args.seconds:g} s window")
    print(f"agent: CPU {a['cpu_share'] * 100:.1f}% of one core, peak RSS {a['peak_mb']:.0f} "
          f"MiB, staleness p50 {a['p50'] * 1000:.0f} ms p99 {a['p99'] * 1000:.0f} ms "
          f"({a['changes']} door changes seen, {a['missed']} missed)")
    print(f"bare asyncio loop, same staggered polls and door changes: CPU "
          f"{b['cpu_share'] * 100:.1f}% of one core, peak RSS {b['peak_mb']:.0f} MiB "
          f"({b['made']} door changes made, {b['seen']} readings changed)")
    ratio = a["cpu_share"] / b["cpu_share"]
    print(f"figure: agent CPU / bare-loop CPU = {ratio:.2f} (target <= 1.2)")
    print(json.dumps({"figure": "fleet_cpu", "ratio": round(ratio, 3), "target": "<= 1.2",
                      "baseline": "bare asyncio loop: same staggered 1 s polls of the same "
                                  "devices, readings parsed and diffed, same reader long "
                                  "polls, same door changes",
                      "agent_cpu_share": round(a["cpu_share"], 4),
                      "bare_cpu_share": round(b["cpu_share"], 4),
                      "staleness_p99_ms": round(a["p99"] * 1000, 1)}))


if __name__ == "__main__":
    main()

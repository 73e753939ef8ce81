"""Discovery latency, measured in one run.

1. Bus probe: from a simulated KR-CU16 board answering its first probe to the device
   appearing on the agent's API event stream (Unix socket, server-sent events).
2. mDNS: from a service announcement to the device *online* on the API event stream (its
   identity confirmed over its own protocol and its first reading taken), as a ratio to
   a bare loop doing the same work in the same run: a zeroconf browser that resolves the
   announcement, asks the device for its identity and its state over the same TCP
   protocol, and delivers the record to a client over a Unix socket. The bare loop runs
   in its own process (as the agent is one), so neither side's work queues behind the
   other's on one event loop. Target: ratio <= 1.2 (issue 17); p50 and p95 printed.

mDNS traffic stays inside a private network namespace: the script re-runs itself under
``unshare -rn`` (loopback only) when it can, else it binds zeroconf to 127.0.0.1 only.
Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "mdns"))
import edgetest_plugin  # noqa: E402
from edge_agent_kerong.simulator import BusOptions, PtyEndpoint, SimBoard, SimBus  # noqa: E402

from edge_agent.client import AgentClient  # noqa: E402
from edge_agent.testing import running_agent, wait_until  # noqa: E402


class StreamWatch:
    """Records when each device id first appears on the API event stream."""

    def __init__(self, sock: Path, link: str | None = None) -> None:
        self.sock = sock
        self.link = link  # only count the device once it reaches this link state
        self.seen: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with AgentClient(self.sock) as c:
            async for kind, data in c.stream():
                if kind == "device" and (self.link is None or data.get("link") == self.link):
                    self.seen.setdefault(data["id"], time.monotonic())

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def probe_latency(rounds: int) -> list[float]:
    rounds = min(rounds, 16)  # board addresses 0-15
    boards = [SimBoard(a, present=False) for a in range(rounds)]
    sim = SimBus(boards, BusOptions(pace=False, turnaround_ms=0.2))
    ep = PtyEndpoint(sim)
    ep.start()
    toml = (f'[site]\nid = "bench"\n[agent]\npoll_interval = 1.0\nprobe_interval = 0.2\n'
            f'[[buses]]\nid = "bus"\nport = "{ep.port}"\nprotocol = "kerong-cu16"\n'
            '[vendor.kerong]\nprobe_timeout_ms = 20\n')
    out = []
    try:
        with tempfile.TemporaryDirectory() as d:
            async with running_agent(toml, Path(d)) as (agent, _c):
                watch = StreamWatch(agent.socket_path)
                watch.start()
                await asyncio.sleep(0.3)
                for board in range(rounds):
                    sim.drop_board(board, present=True)  # plugged in
                    dev = f"kerong:bus:{board}"
                    await wait_until(lambda dev=dev: dev in watch.seen, timeout=10)
                    out.append(watch.seen[dev] - sim.first_answer[board])
                await watch.stop()
    finally:
        ep.stop()
    return out


def _svc(i: int, port: int) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        edgetest_plugin.SERVICE, f"bench-{i}.{edgetest_plugin.SERVICE}",
        addresses=[socket.inet_aton("127.0.0.1")], port=port,
        properties={b"vendor": b"edgetest", b"serial": f"SN-{i}".encode()},
        server=f"bench-{i}.local.")


BARE_CHILD = r"""
import asyncio, json, shutil, socket, sys, tempfile, time
from pathlib import Path
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
SERVICE = sys.argv[1]

async def main() -> None:
    seen: dict[str, float] = {}
    tasks: set[asyncio.Task[None]] = set()
    tmp = Path(tempfile.mkdtemp(prefix="ea-disc-"))

    async def client_side(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while line := await r.readline():
            name = json.loads(line)["name"]
            if name not in seen:
                seen[name] = time.monotonic()
                print(json.dumps({"name": name, "t": seen[name]}), flush=True)

    uds = await asyncio.start_unix_server(client_side, str(tmp / "bare.sock"))
    _r, to_client = await asyncio.open_unix_connection(str(tmp / "bare.sock"))
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)

    async def ask(host: str, port: int, line: str) -> dict[str, object]:
        r, w = await asyncio.open_connection(host, port)
        w.write(line.encode() + b"\n")
        await w.drain()
        got = json.loads(await r.readline())
        w.close()
        return got

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(SERVICE, name)
        if not await info.async_request(zc.zeroconf, 3000):
            return
        host, port = info.parsed_scoped_addresses()[0], int(info.port or 0)
        ident = await ask(host, port, "INFO")  # the same identity probe as the driver's
        if ident.get("serial") != (info.properties or {}).get(b"serial", b"").decode():
            return
        state = await ask(host, port, "STATE")  # and the same first reading
        to_client.write(json.dumps({"name": name, "serial": ident["serial"],
                                    "state": state}).encode() + b"\n")
        await to_client.drain()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            t = asyncio.get_running_loop().create_task(resolve(name))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    browser = AsyncServiceBrowser(zc.zeroconf, [SERVICE], handlers=[on_change])
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # until told
    await browser.async_cancel()
    await zc.async_close()
    to_client.close()
    uds.close()
    shutil.rmtree(tmp, ignore_errors=True)

asyncio.run(main())
"""


async def mdns_latency(rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Each announcement is taken up by the agent (this process) and by the bare loop
    (its own process, so neither side's work waits behind the other's on one event loop;
    CLOCK_MONOTONIC is one clock for both)."""
    serials: dict[int, str] = {}

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # The edgetest protocol: INFO -> serial, STATE -> compartments (one line each).
        line = (await r.readline()).decode().strip()
        port = w.get_extra_info("sockname")[1]
        if line == "INFO":
            w.write(json.dumps({"serial": serials.get(port, "?")}).encode() + b"\n")
        else:
            w.write(json.dumps({"compartments": [{"door": "closed", "item": "present"}]})
                    .encode() + b"\n")
        await w.drain()
        w.close()

    bare_seen: dict[str, float] = {}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BARE_CHILD, edgetest_plugin.SERVICE,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdin is not None
    first = json.loads(await asyncio.wait_for(child.stdout.readline(), 30))
    assert first.get("ready"), first

    async def read_child() -> None:
        assert child.stdout is not None
        while line := await child.stdout.readline():
            rec = json.loads(line)
            bare_seen.setdefault(rec["name"], rec["t"])

    reader = asyncio.get_running_loop().create_task(read_child())
    advertiser = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    toml = ('[site]\nid = "bench"\n[agent]\npoll_interval = 1.0\n'
            '[discovery.mdns]\nenabled = true\ninterfaces = ["127.0.0.1"]\n')
    bare, agent_lat, hub_lat = [], [], []
    try:
        with tempfile.TemporaryDirectory() as d:
            async with running_agent(toml, Path(d),
                                     extra_plugins={"edgetest": edgetest_plugin},
                                     load_entry_points=False) as (agent, _c):
                watch = StreamWatch(agent.socket_path, link="online")
                watch.start()
                hub_seen: dict[str, float] = {}
                sub = agent.hub.subscribe()

                async def drain_hub() -> None:
                    while True:
                        kind, data = await sub.queue.get()
                        if kind == "device" and data.get("link") == "online":
                            hub_seen.setdefault(data["id"], time.monotonic())

                hub_task = asyncio.get_running_loop().create_task(drain_hub())
                await asyncio.sleep(1.0)
                for i in range(rounds):
                    server = await asyncio.start_server(serve, "127.0.0.1", 0)
                    port = server.sockets[0].getsockname()[1]
                    serials[port] = f"SN-{i}"
                    info = _svc(i, port)
                    announce = await advertiser.async_register_service(info)
                    t0 = time.monotonic()  # probing done; the announcement goes out now
                    await announce
                    await wait_until(lambda i=i, name=info.name: f"edgetest:SN-{i}" in
                                     watch.seen and name in bare_seen, timeout=10,
                                     what=f"service {i} online on both sides")
                    bare.append(bare_seen[info.name] - t0)
                    agent_lat.append(watch.seen[f"edgetest:SN-{i}"] - t0)
                    hub_lat.append(hub_seen[f"edgetest:SN-{i}"] - t0)
                    await asyncio.sleep(0.3)  # the pins restart and first polls settle
                await watch.stop()
                hub_task.cancel()
    finally:
        await advertiser.async_close()
        child.stdin.write(b"stop\n")
        await child.stdin.drain()
        await asyncio.wait_for(child.wait(), 20)
        reader.cancel()
    return bare, hub_lat, agent_lat


def ms(xs: list[float]) -> str:
    p95 = sorted(xs)[max(0, int(len(xs) * 0.95) - 1)]
    return (f"p50 {statistics.median(xs) * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  "
            f"max {max(xs) * 1000:7.1f} ms  (n={len(xs)})")


async def main(rounds: int) -> None:
    probe = await probe_latency(rounds)
    print(f"bus probe: board answers -> device on API stream   {ms(probe)}")
    bare, hub, agent = await mdns_latency(rounds)
    print(f"mDNS: announce -> bare: resolve, probe, read, deliver {ms(bare)}")
    print(f"mDNS: announce -> device online inside the agent      {ms(hub)}")
    print(f"mDNS: announce -> device online on the API stream     {ms(agent)}")
    ratio = statistics.median(agent) / statistics.median(bare)
    print(f"figure: agent / bare (medians) = {ratio:.2f} (target <= 1.2)")
    print(json.dumps({"figure": "mdns_discovery", "ratio": round(ratio, 3),
                      "target": "<= 1.2", "baseline": "zeroconf browser + resolve + the same "
                      "identity probe and first read over TCP + delivery over a Unix socket, "
                      "in its own process",
                      "agent_p50_ms": round(statistics.median(agent) * 1000, 1),
                      "bare_p50_ms": round(statistics.median(bare) * 1000, 1)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--no-netns", action="store_true", help="stay on this host's loopback")
    args = ap.parse_args()
    rounds = min(max(args.rounds, 1), 50)
    in_ns = os.environ.get("EDGE_AGENT_BENCH_NETNS") == "1"
    if not in_ns and not args.no_netns and shutil.which("unshare") and shutil.which("ip"):
        env = dict(os.environ, EDGE_AGENT_BENCH_NETNS="1")
        cmd = f'ip link set lo up && exec "{sys.executable}" "{__file__}" --rounds {rounds}'
        sys.exit(subprocess.call(["unshare", "-rn", "sh", "-c", cmd], env=env))
    logging.basicConfig(level=logging.CRITICAL)  # the bench's fake devices are not the point
    print("network: " + ("private namespace (unshare -rn), loopback"
                         if in_ns else "this host's loopback only"))
    asyncio.run(main(rounds))

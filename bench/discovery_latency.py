"""Discovery latency, measured in one run.

1. Bus probe: from a simulated KR-CU16 board answering its first probe to the device
   appearing on the agent's API event stream (Unix socket, server-sent events).
2. mDNS: from a service announcement to the device appearing on the API event stream,
   as a ratio to a bare zeroconf browser (AsyncServiceBrowser + resolve) seeing the same
   announcement in the same run. Target: ratio <= 1.2.

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

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "mdns"))
import edgetest_plugin  # noqa: E402
from edge_agent_kerong.simulator import BusOptions, PtyEndpoint, SimBoard, SimBus  # noqa: E402

from edge_agent.client import AgentClient  # noqa: E402
from edge_agent.testing import running_agent, wait_until  # noqa: E402


class StreamWatch:
    """Records when each device id first appears on the API event stream."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.seen: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with AgentClient(self.sock) as c:
            async for kind, data in c.stream():
                if kind == "device":
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


async def mdns_latency(rounds: int) -> tuple[list[float], list[float], list[float]]:
    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        line = (await r.readline()).decode().strip()
        w.write(json.dumps({"serial": "?", "compartments": []}).encode() + b"\n")
        del line
        await w.drain()
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bare_seen: dict[str, float] = {}
    bare_tasks: set[asyncio.Task[None]] = set()
    bare_zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(edgetest_plugin.SERVICE, name)
        if await info.async_request(bare_zc.zeroconf, 3000):
            bare_seen.setdefault(name, time.monotonic())

    def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            t = asyncio.get_running_loop().create_task(resolve(name))
            bare_tasks.add(t)
            t.add_done_callback(bare_tasks.discard)

    browser = AsyncServiceBrowser(bare_zc.zeroconf, [edgetest_plugin.SERVICE],
                                  handlers=[on_change])
    advertiser = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    toml = ('[site]\nid = "bench"\n[agent]\npoll_interval = 1.0\n'
            '[discovery.mdns]\nenabled = true\ninterfaces = ["127.0.0.1"]\n')
    bare, agent_lat, hub_lat = [], [], []
    with tempfile.TemporaryDirectory() as d:
        async with running_agent(toml, Path(d), extra_plugins={"edgetest": edgetest_plugin},
                                 load_entry_points=False) as (agent, _c):
            watch = StreamWatch(agent.socket_path)
            watch.start()
            hub_seen: dict[str, float] = {}
            sub = agent.hub.subscribe()

            async def drain_hub() -> None:
                while True:
                    kind, data = await sub.queue.get()
                    if kind == "device":
                        hub_seen.setdefault(data["id"], time.monotonic())

            hub_task = asyncio.get_running_loop().create_task(drain_hub())
            await asyncio.sleep(1.0)
            for i in range(rounds):
                info = _svc(i, port)
                announce = await advertiser.async_register_service(info)
                t0 = time.monotonic()  # probing done; the announcement goes out now
                await announce
                await wait_until(lambda i=i, name=info.name: f"edgetest:SN-{i}" in watch.seen
                                 and name in bare_seen, timeout=10,
                                 what=f"service {i} seen by both")
                bare.append(bare_seen[info.name] - t0)
                agent_lat.append(watch.seen[f"edgetest:SN-{i}"] - t0)
                hub_lat.append(hub_seen[f"edgetest:SN-{i}"] - t0)
            await watch.stop()
            hub_task.cancel()
    await browser.async_cancel()
    await advertiser.async_close()
    await bare_zc.async_close()
    server.close()
    return bare, hub_lat, agent_lat


def ms(xs: list[float]) -> str:
    return (f"median {statistics.median(xs) * 1000:7.1f} ms  "
            f"max {max(xs) * 1000:7.1f} ms  (n={len(xs)})")


async def main(rounds: int) -> None:
    probe = await probe_latency(rounds)
    print(f"bus probe: board answers -> device on API stream   {ms(probe)}")
    bare, hub, agent = await mdns_latency(rounds)
    print(f"mDNS: announcement -> bare zeroconf browser resolved {ms(bare)}")
    print(f"mDNS: announcement -> device event inside the agent  {ms(hub)}")
    print(f"mDNS: announcement -> device on agent API stream     {ms(agent)}")
    ratio = statistics.median(agent) / statistics.median(bare)
    print(f"mDNS ratio agent / bare browser (medians)            {ratio:7.2f}  (target <= 1.2)")


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

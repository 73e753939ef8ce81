"""Uplink backlog drain (issue 12): 100,000 audit records forwarded to a local Mosquitto
at QoS 1 with the cursor made durable after every batch, against a bare aiomqtt loop
publishing the same payloads at QoS 1 with the same number in flight, in the same run.
Target: agent throughput >= 0.8x the bare loop's.

The broker is Debian's mosquitto on a free loopback port; nothing subscribes (the broker
still acknowledges every QoS 1 publish). Bounded: fixed record count, one run each.

    .venv/bin/python bench/uplink_drain.py [--records 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import aiomqtt

from edge_agent.alarms import AlarmBook
from edge_agent.config import UplinkSection
from edge_agent.store.audit import AuditLog, Query, canonical_json
from edge_agent.uplink import WINDOW, Uplink


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fill(log: AuditLog, n: int) -> None:
    for i in range(0, n, 1000):
        await asyncio.gather(*(log.append({
            "action": "door_opened", "device": f"kerong:bank-{k % 7}:{k % 3}",
            "compartment": k % 16 + 1, "actor": "kerong:bank"}) for k in range(i, i + 1000)))


async def agent_drain(log: AuditLog, state: Path, url: str) -> float:
    stopping = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: object, name: str) -> asyncio.Task[None]:
        t = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        tasks.add(t)
        return t

    state.mkdir(parents=True, exist_ok=True)
    rt = SimpleNamespace(audit=log, alarms=AlarmBook(), stopping=stopping, spawn=spawn)
    up = Uplink(rt, UplinkSection(broker=url, status_interval=3600), state,  # type: ignore[arg-type]
                "bench-site", status=lambda: {})
    t0 = time.perf_counter()
    up.start()
    while up.acked < (log.last_seq or 0):  # noqa: ASYNC110 - polls the uplink's cursor
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    stopping.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)  # the cursor's last write
    assert json.loads((state / "uplink.json").read_bytes())["acked_seq"] == log.last_seq
    return elapsed


async def bare_drain(payloads: list[bytes], port: int) -> float:
    sem = asyncio.Semaphore(WINDOW)
    async with aiomqtt.Client("127.0.0.1", port, identifier="bare",
                              protocol=aiomqtt.ProtocolVersion.V5) as c:
        c.pending_calls_threshold = WINDOW + 10  # as the agent's client: no log per call
        async def one(p: bytes) -> None:
            async with sem:
                await c.publish("edge-agent/bare/audit", p, qos=1)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(p) for p in payloads))
        return time.perf_counter() - t0


async def main(n: int, runs: int) -> None:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ea-uplink-") as d:
        root = Path(d)
        conf = root / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            await asyncio.sleep(0.5)
            log = AuditLog(root / "audit", boot_id="bench", checkpoint_every=100_000)
            await asyncio.to_thread(log.open)
            await fill(log, n)
            payloads = [canonical_json({**r, "site": "bench-site"}) for r in
                        await asyncio.to_thread(lambda: list(log.iter_query(
                            Query(limit=None))))]
            # Alternate the two, RUNS times each, and compare medians: single runs on a
            # shared machine vary by 2x.
            agents, bares = [], []
            for i in range(runs):
                agents.append(await agent_drain(log, root / f"a{i}",
                                                f"mqtt://127.0.0.1:{port}"))
                bares.append(await bare_drain(payloads, port))
            agent, bare = statistics.median(agents), statistics.median(bares)
            await asyncio.to_thread(log.close)
        finally:
            broker.terminate()
            broker.wait(10)
    ratio = bare / agent  # throughput ratio: agent records/s over bare records/s
    print(f"backlog of {len(payloads)} records, QoS 1, {WINDOW} in flight, local Mosquitto")
    print(f"agent (reads the log, durable cursor every 0.2 s), median of {len(agents)}: "
          f"{agent:.2f} s, "
          f"{len(payloads) / agent:,.0f} records/s")
    print(f"bare aiomqtt loop, same payloads from memory, median: {bare:.2f} s, "
          f"{len(payloads) / bare:,.0f} records/s")
    print(f"figure: agent throughput / bare = {ratio:.2f} (target >= 0.8)")
    print(json.dumps({"figure": "uplink_drain", "ratio": round(ratio, 3), "target": ">= 0.8",
                      "baseline": "bare aiomqtt QoS 1 loop, same payloads, same window",
                      "agent_s": round(agent, 2), "bare_s": round(bare, 2),
                      "records": len(payloads)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(max(1000, min(a.records, 1_000_000)), max(1, min(a.runs, 9))))

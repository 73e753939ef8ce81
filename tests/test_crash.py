"""kill -9 of the agent while events are being written, then a restart: every store file
parses and no event the API acknowledged is missing."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import site_toml

from edge_agent.client import AgentClient
from edge_agent.errors import ClientError
from edge_agent.testing import short_tempdir

ITERATIONS = 5


async def _wait_socket(sock: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        assert proc.poll() is None, f"agent exited with {proc.returncode}"
        if sock.exists():
            try:
                async with AgentClient(sock, timeout=2) as c:
                    devs = await c.get("/v1/devices")
                    if any(d["link"] == "online" for d in devs):
                        return
            except ClientError:
                pass
        await asyncio.sleep(0.05)
    raise AssertionError("agent did not come up")


async def _hammer(sock: Path, acked: list[dict[str, Any]], stop: asyncio.Event, worker: int
                  ) -> None:
    n = 0
    try:
        async with AgentClient(sock, timeout=5) as c:
            while not stop.is_set():
                n += 1
                reason = f"w{worker}-{n}"
                try:
                    r = await c.post("/v1/devices/kerong:bus:0/unlock",
                                     {"compartment": 1 + n % 16, "reason": reason})
                except ClientError:
                    return  # the agent died mid-request: not acknowledged
                acked.append({"seq": r["audit_seq"], "reason": reason})
    except ClientError:
        return


def _check_files(state: Path) -> list[dict[str, Any]]:
    registry = state / "registry.json"
    if registry.exists():
        json.loads(registry.read_text())  # raises if torn
    records = []
    for seg in sorted((state / "audit").glob("audit-*.jsonl")):
        data = seg.read_bytes()
        assert not data or data.endswith(b"\n"), f"{seg} has a torn tail after restart"
        records += [json.loads(line) for line in data.splitlines()]
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(1, len(seqs) + 1)), "audit sequence has gaps or repeats"
    for prev, rec in itertools.pairwise(records):
        assert rec["prev"] == prev["hash"], f"chain broken at {rec['seq']}"
    return records


def _agent(cfg: Path, state: Path, sock: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(cfg), "--state-dir",
         str(state), "--socket", str(sock), "--log-level", "warning"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def kill_cycles(cfg: Path, state: Path, iterations: int, seed: int,
                      max_delay: float = 1.2) -> dict[str, Any]:
    """Start the agent, hammer it with unlocks, kill -9 it at a random moment; repeat.

    Then a clean start, and a check of every file and every acknowledged event. Returns
    the figures; raises AssertionError on any loss or unparseable file. Shared with
    bench/crash_soak.py, which runs many more iterations.
    """
    rng = random.Random(seed)
    acked: list[dict[str, Any]] = []
    with short_tempdir() as d:
        sock = d / "agent.sock"
        for _ in range(iterations):
            proc = _agent(cfg, state, sock)
            try:
                await _wait_socket(sock, proc)
                stop = asyncio.Event()
                workers = [asyncio.create_task(_hammer(sock, acked, stop, w)) for w in range(6)]
                await asyncio.sleep(rng.uniform(0.05, max_delay))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                stop.set()
                await asyncio.gather(*workers)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            _check_files(state)  # parses after every kill, before any recovery
        # One clean start at the end cuts any torn tail and records the recovery.
        proc = _agent(cfg, state, sock)
        try:
            await _wait_socket(sock, proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    records = _check_files(state)
    by_seq = {r["seq"]: r for r in records}
    for a in acked:
        rec = by_seq.get(a["seq"])
        assert rec is not None, f"acknowledged event {a['seq']} missing after kill -9"
        assert rec["action"] == "unlock" and rec["reason"] == a["reason"]
    return {"iterations": iterations, "acknowledged": len(acked), "records": len(records),
            "starts": sum(1 for r in records if r["action"] == "agent_started"),
            "torn_tails_recovered": sum(1 for r in records
                                        if r["action"] == "audit_recovered")}


async def test_kill_9_while_writing_loses_no_acknowledged_event(kerong_bus, tmp_path: Path
                                                                ) -> None:
    _sim, pty = kerong_bus({0: 0}, pace=False, turnaround_ms=0.2)
    cfg = tmp_path / "site.toml"
    cfg.write_text(site_toml({"bus": pty.port}, poll=0.05,
                             extra='[vendor.kerong]\nunlock_reply = "yes"\n'))
    result = await kill_cycles(cfg, tmp_path / "state", ITERATIONS, seed=1234)
    assert result["acknowledged"] > 50, "the test did not produce enough acknowledged writes"
    assert result["starts"] == ITERATIONS + 1

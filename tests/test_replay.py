"""Replaying a site's wire (issue 14): a fault recorded at a "site" with `edge-agent
capture` (a board wired with the wrong hook polarity, another one dropping off the bus)
is replayed by `edge-agent simulate --replay` on a desk, and a fresh agent there sees the
same alarms and the same board go offline. Bytes only: the replay knows no protocol."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import site_toml

from edge_agent.testing import running_agent, short_tempdir, wait_device


async def faults_seen(client: Any) -> tuple[set[tuple[str, str]], set[str]]:
    raised = await client.call("events", action="alarm_raised", limit=1000)
    offline = await client.call("events", action="device_offline", limit=1000)
    return ({(e["device"], e["details"]["code"]) for e in raised},
            {e["device"] for e in offline})


async def replay_on_desk(recording: Path, state: Path
                         ) -> tuple[tuple[set[tuple[str, str]], set[str]], list[str]]:
    """`edge-agent simulate --replay` of a capture or bundle on a fresh pty, a fresh
    agent on it until board 0 alarms and board 1 is offline: the faults it saw, and what
    the replay printed while starting."""
    with short_tempdir() as d:
        link = d / "ttyREPLAY"
        replay = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "simulate", "--replay", str(recording),
             "--link", str(link)], stdout=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL)
        try:
            assert replay.stdout is not None
            said = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                line = replay.stdout.readline()
                said.append(line)
                if not line or line.strip() == "ready":
                    break
            assert link.exists()
            async with running_agent(site_toml({"Bank-1": str(link)}), state) as (
                    _agent, client):
                await wait_device(client, "kerong:Bank-1:0", lambda d: d["alarms"],
                                  timeout=20)
                await wait_device(client, "kerong:Bank-1:1",
                                  lambda d: d["link"] == "offline", timeout=30)
                return await faults_seen(client), said
        finally:
            replay.terminate()
            replay.wait(10)


async def test_a_recorded_fault_replays_on_a_desk(kerong_bus: Any, tmp_path: Path) -> None:
    # The site: two boards; the bus reads HOOK bit 0 as closed while the site says 1.
    sim, pty = kerong_bus({0: 0x00FF, 1: 0x0F0F}, hook_closed_bit=0, pace=False)
    capture = tmp_path / "bank.pcap"
    async with running_agent(site_toml({"Bank-1": pty.port}), tmp_path / "site") as (
            agent, client):
        await wait_device(client, "kerong:Bank-1:1")
        cap = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge_agent.cli", "capture", "kerong:Bank-1:0",
            "--output", str(capture), "--seconds", "4", "--socket", str(agent.socket_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
        await asyncio.sleep(1.5)
        sim.drop_board(1)  # board 1's cable is cut during the capture
        out, _ = await cap.communicate()
        assert cap.returncode == 0 and b"wrote" in out
        await wait_device(client, "kerong:Bank-1:1", lambda d: d["link"] == "offline")
        at_site = await faults_seen(client)
    assert ("kerong:Bank-1:0", "hook_polarity") in at_site[0]
    assert "kerong:Bank-1:1" in at_site[1]

    # The desk: the capture answers a fresh agent as the site's boards did.
    on_desk, _said = await replay_on_desk(capture, tmp_path / "desk")
    assert ("kerong:Bank-1:0", "hook_polarity") in on_desk[0]
    assert on_desk[0] <= at_site[0] and "kerong:Bank-1:1" in on_desk[1]


async def test_a_support_bundle_replays_the_fault_it_recorded(kerong_bus: Any,
                                                           tmp_path: Path) -> None:
    """The bundle a technician sends in (its wire rings) is enough: replayed on a desk,
    a fresh agent sees the site's hook-polarity alarm and the board that dropped off."""
    sim, pty = kerong_bus({0: 0x00FF, 1: 0x0F0F}, hook_closed_bit=0, pace=False)
    bundle = tmp_path / "support.tar.gz"
    async with running_agent(site_toml({"Bank-1": pty.port}), tmp_path / "site") as (
            agent, client):
        await wait_device(client, "kerong:Bank-1:1")
        sim.drop_board(1)
        await wait_device(client, "kerong:Bank-1:1", lambda d: d["link"] == "offline")
        await wait_device(client, "kerong:Bank-1:0", lambda d: d["alarms"])
        at_site = await faults_seen(client)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge_agent.cli", "bundle", "--output", str(bundle),
            "--socket", str(agent.socket_path), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err
    on_desk, said = await replay_on_desk(bundle, tmp_path / "desk")
    assert any("replaying bus Bank-1 from the bundle" in line for line in said), said
    assert ("kerong:Bank-1:0", "hook_polarity") in at_site[0]
    assert ("kerong:Bank-1:0", "hook_polarity") in on_desk[0]
    assert "kerong:Bank-1:1" in on_desk[1]


def test_replay_refuses_what_is_not_a_capture(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("locker bank B is dead")
    out = subprocess.run([sys.executable, "-m", "edge_agent.cli", "simulate", "--replay",
                          str(bad), "--link", str(tmp_path / "tty")], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "not a capture" in out.stderr, out.stderr

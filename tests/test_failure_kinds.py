"""Contract 1.2 failure kinds, seen as a technician and a script see them: a door that
does not open after an accepted unlock is never audited "ok", and a compartment the
board does not have is refused before anything is audited."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import site_toml

from edge_agent.errors import ClientError
from edge_agent.testing import running_agent, wait_device

DEV = "kerong:Bank-1:0"


def cli(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args, "--socket",
                           str(sock)], capture_output=True, text=True, timeout=60)


async def test_a_jammed_bolt_is_door_did_not_open_and_out_of_range_is_refused(
        kerong_bus, tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0xFFFF})
    sim.jammed.add((0, 6))  # lock 7: the board acknowledges, the door stays shut
    toml = site_toml({"Bank-1": pty.port}).replace(
        "[agent]\n", "[agent]\nunlock_settle = 0.5\n")
    async with running_agent(toml, tmp_path / "state") as (agent, client):
        await wait_device(client, DEV, lambda d: d["compartments"])
        sock = agent.socket_path
        done = await asyncio.to_thread(
            cli, sock, "unlock", DEV, "7", "--reason", "issue radio", "--json")
        assert done.returncode == 1, done
        err = json.loads(done.stdout)
        assert err["error"] == "door_did_not_open" and "still reads closed" in err["message"]
        assert (0, 6) in sim.unlocks
        outcome = await client.get("/v1/events", action="unlock", compartment=7)
        assert [e["outcome"] for e in outcome] == ["door_did_not_open"]
        # A compartment the board does not have: refused, nothing audited, range named.
        done = await asyncio.to_thread(
            cli, sock, "unlock", DEV, "17", "--reason", "typo")
        assert done.returncode == 2  # a usage error, like compartment 0 (issue 13)
        assert "no compartment 17" in done.stderr and "1-16" in done.stderr
        asked = await client.get("/v1/events", action="unlock_requested", compartment=17)
        assert asked == []
        # A KR-CU16 declares no identify (contract 1.2): refused, nothing audited.
        dev = await client.get(f"/v1/devices/{DEV}")
        assert dev["capabilities"] == []
        with pytest.raises(ClientError) as refused:
            await client.post(f"/v1/devices/{DEV}/identify", {})
        assert refused.value.status == 400 and refused.value.code == "unsupported"
        assert await client.get("/v1/events", action="identify") == []
        # A good one still answers ok.
        r = await client.post(f"/v1/devices/{DEV}/unlock", {"compartment": 2, "reason": "ok"})
        assert r["state"]["door"] == "open"

"""Client commands against a running agent, run as real processes; exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from helpers import site_toml

from edge_agent.testing import running_agent, short_tempdir, wait_until

ROOT = Path(__file__).resolve().parent.parent


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent.cli", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_client_commands(kerong_bus, tmp_path: Path) -> None:
    sim, pty = kerong_bus({4: 0x0010})
    async with running_agent(site_toml({"bank": pty.port}), tmp_path / "s") as (agent, _c):
        await wait_until(lambda: "kerong:bank:4" in agent.devices
                         and agent.devices["kerong:bank:4"].compartments)
        sock = str(agent.socket_path)
        code, out, _ = await cli("devices", "--socket", sock)
        assert code == 0 and "kerong:bank:4" in out and "online" in out
        code, out, _ = await cli("devices", "--socket", sock, "--json")
        assert code == 0 and json.loads(out)[0]["compartments"][4]["item"] == "present"
        code, out, _ = await cli("status", "--socket", sock)
        assert code == 0 and "test-site" in out and "online 1" in out
        code, out, _ = await cli("plugins", "--socket", sock)
        assert code == 0 and "kerong" in out and "loaded" in out
        code, out, err = await cli("unlock", "kerong:bank:4", "3", "--reason", "spare radio",
                                   "--socket", sock)
        assert code == 0, err
        assert "unlocked kerong:bank:4 compartment 3" in out
        assert sim.unlocks == [(4, 2)]
        code, out, _ = await cli("events", "--socket", sock, "--type", "unlock", "--json")
        ev = json.loads(out)
        assert code == 0 and ev[-1]["reason"] == "spare radio" and ev[-1]["compartment"] == 3
        code, out, _ = await cli("events", "--socket", sock, "--device", "kerong:bank:4")
        assert code == 0 and "unlock kerong:bank:4/3" in out
        # Runtime failure: the device drops off the bus -> exit 1 with what to do.
        sim.drop_board(4)
        await wait_until(lambda: agent.devices["kerong:bank:4"].link == "offline", timeout=10)
        code, _, err = await cli("unlock", "kerong:bank:4", "3", "--reason", "x",
                                 "--socket", sock)
        assert code == 1 and "offline" in err


async def test_unreachable_agent_and_usage_errors() -> None:
    with short_tempdir() as d:
        code, _, err = await cli("devices", "--socket", str(d / "none.sock"))
        assert code == 1
        assert "cannot reach the agent" in err and "--socket" in err
    code, _, err = await cli("unlock", "x")
    assert code == 2 and "usage" in err
    code, _, err = await cli("run", "--site", "/nonexistent/site.toml")
    assert code == 2 and "no such file" in err


async def test_demo_headless_json() -> None:
    """The demo site: Kerong boards on a pty bus and a TCP bridge, a REST gateway and both
    cabinet models found by mDNS (loopback only), every one online with its compartments."""
    code, out, err = await cli("demo", "--headless", "--seconds", "6", "--json")
    assert code == 0, err
    demo = json.loads(out)
    got = {d["id"]: (d["link"], len(d["compartments"]), d["source"]) for d in demo["devices"]}
    kerong = {f"kerong:locker-bank-{b}:{n}": ("online", 16, "bus-probe")
              for b, n in (("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1))}
    assert got == {**kerong, "gateway:GW-DEMO-01": ("online", 12, "mdns"),
                   "armoury:WC12-DEMO-1": ("online", 12, "mdns"),
                   "armoury:TD8-DEMO-2": ("online", 8, "mdns")}
    assert any(d["address"].startswith("socket://127.0.0.1:") for d in demo["devices"])

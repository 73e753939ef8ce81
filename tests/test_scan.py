"""The bus doctor (issue 14): `edge-agent scan` finds boards at a baud rate and address
nobody expected, on a pseudo-terminal that behaves as a UART (at the wrong baud rate a
board hears garbage and never answers); it refuses a port the agent owns, and borrows a
live bus from the agent through the API (audited), giving it back after: the agent's
boards go offline meanwhile and come back online."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import site_toml

from edge_agent.testing import running_agent, wait_device, wait_event

DEV = "kerong:Bank-1:0"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args],
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_scan_finds_a_board_at_an_unexpected_baud_and_address(kerong_bus: Any,
                                                               tmp_path: Path) -> None:
    # A KR-CU16 set to board 7 at 9600 baud (the plugin expects 19200).
    _sim, pty = kerong_bus({7: 0x00FF}, baudrate=9600, check_line=True, pace=False)
    out = cli("scan", pty.port, "--bauds", "19200,9600,38400", "--json",
              "--socket", str(tmp_path / "no-agent.sock"))
    assert out.returncode == 0, out.stderr
    trials = {t["settings"]: t for t in json.loads(out.stdout)}
    assert trials["9600 8N1"]["found"] and trials["9600 8N1"]["plugin"] == "kerong"
    assert [f["identity"] for f in trials["9600 8N1"]["found"]] == ["kerong:scan-kerong:7"]
    assert trials["9600 8N1"]["found"][0]["rtt_ms"] is not None
    assert trials["19200 8N1"]["found"] == [] and trials["38400 8N1"]["found"] == []
    table = cli("scan", pty.port, "--bauds", "19200,9600", "--socket",
                str(tmp_path / "no-agent.sock"))
    assert "1 board(s) answer at 9600 8N1 to kerong" in table.stdout, table.stdout
    # Nothing there at all: said so, exit 1.
    _silent, spty = kerong_bus({}, pace=False)
    none = cli("scan", spty.port, "--bauds", "19200", "--socket",
               str(tmp_path / "no-agent.sock"))
    assert none.returncode == 1 and "no board answered" in none.stdout
    bad = cli("scan", spty.port, "--bauds", "9600,fast", "--socket",
              str(tmp_path / "no-agent.sock"))
    assert bad.returncode == 2 and "'fast' is not a baud rate" in bad.stderr
    assert "Traceback" not in bad.stderr


async def test_scan_borrows_a_live_bus_and_gives_it_back(kerong_bus: Any,
                                                         tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    toml = site_toml({"Bank-1": pty.port})
    async with running_agent(toml, tmp_path / "s") as (agent, client):
        await wait_device(client, DEV)
        sock = str(agent.socket_path)
        refused = await asyncio.to_thread(cli, "scan", pty.port, "--socket", sock)
        assert refused.returncode == 2 and "the agent owns" in refused.stderr
        assert "--borrow Bank-1" in refused.stderr
        scan = await asyncio.to_thread(
            cli, "scan", "--borrow", "Bank-1", "--reason", "bank B dead, checking wiring",
            "--bauds", "19200", "--json", "--socket", sock)
        assert scan.returncode == 0, scan.stderr
        found = [f["identity"] for t in json.loads(scan.stdout) for f in t["found"]]
        assert found == ["kerong:scan-kerong:0"]
        assert "borrowed bus Bank-1" in scan.stderr and "gave bus Bank-1 back" in scan.stderr
        lent = await wait_event(client, action="bus_lent")
        assert lent["reason"] == "bank B dead, checking wiring"
        back = await wait_event(client, action="bus_returned")
        assert back["seq"] > lent["seq"]
        # While it was lent the board went offline; now it is back, by itself.
        offline = await client.call("events", action="device_offline", device=DEV)
        assert offline and offline[-1]["seq"] > lent["seq"]
        await wait_device(client, DEV, timeout=20)
        status = await client.call("status")
        assert not any(a["id"] == "bus:Bank-1:lent" for a in status["alarms"])

"""The Kerong plugin through a real serial device server: ser2net (Debian) exposes the
simulator's pty over RFC 2217 and the agent connects with pyserial's rfc2217:// URL."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import free_port, site_toml, wait_port

from edge_agent.testing import running_agent, wait_device, wait_devices

SER2NET = shutil.which("ser2net") or "/usr/sbin/ser2net"
pytestmark = pytest.mark.skipif(not Path(SER2NET).exists(),
                                reason="ser2net not installed (./run installs it)")


async def test_kerong_boards_through_ser2net_rfc2217(kerong_bus, tmp_path: Path) -> None:
    sim, pty = kerong_bus({2: 0x8001, 7: 0})
    port = free_port()
    cfg = tmp_path / "ser2net.yaml"
    cfg.write_text(f"""%YAML 1.1
---
connection: &kerong
    accepter: telnet(rfc2217),tcp,127.0.0.1,{port}
    enable: on
    options:
      kickolduser: true
    connector: serialdev,{pty.tty_name},19200n81,local
""")
    proc = subprocess.Popen([SER2NET, "-n", "-c", str(cfg), "-P", str(tmp_path / "pid")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_port(port)
        # ser2net does not answer RFC 2217 SET_CONTROL; pyserial has an option for that.
        toml = site_toml({"bridge": f"rfc2217://127.0.0.1:{port}?ign_set_control"})
        async with running_agent(toml, tmp_path / "state") as (_agent, client):
            found = await wait_devices(client, {"kerong:bridge:2", "kerong:bridge:7"},
                                       lambda d: d["compartments"], timeout=30,
                                       what="with compartments, through ser2net")
            b2 = found["kerong:bridge:2"]["compartments"]
            assert b2[0]["item"] == "present" and b2[15]["item"] == "present"
            assert b2[1]["item"] == "absent"
            assert found["kerong:bridge:2"]["address"].startswith("rfc2217://")
            sim.set_door(7, 4, closed=False)
            await wait_device(client, "kerong:bridge:7",
                              lambda d: d["compartments"][4]["door"] == "open",
                              what="to show the door change through ser2net")
            result = await client.post("/v1/devices/kerong:bridge:2/unlock",
                                       {"compartment": 9, "reason": "through the bridge"})
            assert sim.unlocks == [(2, 8)]
            assert result["state"]["door"] == "open"
    finally:
        proc.terminate()
        proc.wait(10)

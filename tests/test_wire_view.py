"""Every transport in the wire view (issue 14): a REST gateway's HTTP exchanges and a
Modbus TCP cabinet's ADUs reach `GET /v1/devices/{id}/wire` through the contract (the
driver's optional wire(), the plugin's describe_wire), not vendor code in the core."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from edge_agent_armoury.profile import ProfileLibrary
from edge_agent_armoury.simulator import CabinetSimulator
from edge_agent_gateway.simulator import GatewaySimulator

from edge_agent.testing import adopt, running_agent, wait_device

TIMING = ("[agent]\npoll_interval = 0.1\ncommand_timeout = 1.0\noffline_after = 2\n"
          "backoff_initial = 0.1\nbackoff_max = 0.5\n")


async def test_http_and_modbus_in_the_wire_view(tmp_path: Path) -> None:
    gw = GatewaySimulator(serial="GW-Wire-1", lockers=4, mdns=False)
    await asyncio.to_thread(gw._thread.start)
    await asyncio.to_thread(gw._call, gw._serve())
    cab = CabinetSimulator(ProfileLibrary([]).get("boltline-td8"), "TD8-0042")
    await asyncio.to_thread(cab.start)
    site = (f'[site]\nid = "Wire"\n{TIMING}'
            f'[[devices]]\nplugin = "gateway"\nidentity = "gateway:GW-Wire-1"\n'
            f'address = "{gw.scheme}://127.0.0.1:{gw.port}"\n'
            f'properties = {{ host = "127.0.0.1", port = {gw.port}, serial = "GW-Wire-1" }}\n'
            f'[[devices]]\nplugin = "armoury"\nidentity = "armoury:TD8-0042"\n'
            f'address = "{cab.address}"\nproperties = {{ profile = "boltline-td8" }}\n')
    try:
        async with running_agent(site, tmp_path / "s") as (_agent, client):
            await wait_device(client, "gateway:GW-Wire-1", timeout=15)
            await adopt(client, "armoury:TD8-0042")
            await wait_device(client, "armoury:TD8-0042", timeout=15)
            await asyncio.sleep(0.5)
            http: Any = await client.call("wire", id="gateway:GW-Wire-1", limit=50)
            assert http["bus"] is None and http["transport"].startswith("https://")
            tx = [f for f in http["frames"] if f["dir"] == "tx"]
            rx = [f for f in http["frames"] if f["dir"] == "rx"]
            assert tx and any(f["decoded"].startswith("GET /lockers") for f in tx)
            assert rx and any(f["decoded"].startswith("200 [") for f in rx)
            modbus: Any = await client.call("wire", id="armoury:TD8-0042", limit=50)
            assert modbus["bus"] is None and modbus["transport"].startswith("modbus-tcp://")
            decoded = " | ".join(f["decoded"] for f in modbus["frames"])
            assert "read" in decoded and "unit" in decoded and "tid" in decoded, decoded
            assert {f["dir"] for f in modbus["frames"]} == {"tx", "rx"}
    finally:
        await asyncio.to_thread(cab.stop)
        await asyncio.to_thread(gw.stop)

"""Regenerate http.json: each HTTP exchange between the gateway driver and the gateway
simulator (method, path, body; status, answer), while the driver connects, reads state,
opens locker 3 and marks locker 5 out of service.

    .venv/bin/python plugins/gateway/tests/data/record_http.py
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from edge_agent_gateway.driver import GatewayDriver
from edge_agent_gateway.simulator import GatewaySimulator


async def main() -> None:
    sim = GatewaySimulator(serial="GW-0042", lockers=6)
    sim.mdns_interfaces = ["127.0.0.1"]
    await asyncio.to_thread(sim.start)
    exchanges: list[dict[str, Any]] = []
    sim.recording = exchanges
    drv = GatewayDriver("127.0.0.1", sim.port, "GW-0042", {})
    try:
        await drv.connect()
        sim.state[1].door_open = True
        await drv.read_state()
        await drv.unlock(3)
        await drv.set_out_of_service(5, True, "DAMAGED-HINGE")
        await drv.read_state()
    finally:
        await drv.close()
        await asyncio.to_thread(sim.stop)
    out = Path(__file__).with_name("http.json")
    out.write_text(json.dumps(exchanges, indent=1) + "\n")
    print(f"wrote {out}: {len(exchanges)} exchanges")


if __name__ == "__main__":
    asyncio.run(main())

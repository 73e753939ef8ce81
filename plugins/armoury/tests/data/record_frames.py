"""Regenerate frames.json: what the driver sent and what pymodbus's server answered, for
each shipped profile, over TCP and RTU, with the cabinet in a known state.

    .venv/bin/python plugins/armoury/tests/data/record_frames.py

Only rerun it on purpose (a new profile, a deliberate protocol change): the test compares
today's requests and decoding against these bytes.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from edge_agent_armoury.driver import CabinetDriver, Endpoint, _Shared
from edge_agent_armoury.profile import ProfileLibrary
from edge_agent_armoury.simulator import CabinetSimulator


async def record(profile: str, serial: str, transport: str, link: str) -> dict[str, Any]:
    lib = ProfileLibrary()
    sim = CabinetSimulator(lib.get(profile), serial, transport=transport, link=link)
    await asyncio.to_thread(sim.start)
    await asyncio.to_thread(sim.take, 2)
    await asyncio.to_thread(sim.put, 4, None)
    await asyncio.to_thread(sim.slot, 3, door_open=True)
    await asyncio.to_thread(sim.update, tamper=True, main_door=True, temperature=23.4)
    trace: list[tuple[bool, bytes]] = []
    drv = CabinetDriver(lib.get(profile), Endpoint.parse(sim.address), serial=serial)
    try:
        await drv.connect()
        client = _Shared.clients[drv.endpoint.key][0]
        client.ctx.trace_packet = lambda sending, data: (trace.append((sending, data)), data)[1]
        state = await drv.read_state()
    finally:
        await drv.close()
        await asyncio.to_thread(sim.stop)
    pairs = []
    for sending, data in trace:
        if sending:
            pairs.append({"tx": data.hex()})
        else:
            pairs[-1]["rx"] = data.hex()
    return {"profile": profile, "transport": transport, "unit": drv.unit, "exchanges": pairs,
            "compartments": [{"index": c.index, "door": c.door.value, "item": c.item.value,
                              "tag": c.tag} for c in state.compartments],
            "details": dict(state.details)}


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        sets = [await record("sentinel-wc12", "WC12-0001", "tcp", ""),
                await record("boltline-td8", "TD8-0002", "tcp", ""),
                await record("boltline-td8", "TD8-0003", "rtu", f"{d}/ttyRTU")]
    out = Path(__file__).with_name("frames.json")
    out.write_text(json.dumps(sets, indent=1) + "\n")
    print(f"wrote {out}: {sum(len(s['exchanges']) for s in sets)} exchanges")


if __name__ == "__main__":
    asyncio.run(main())

"""Spoofed gateways, run in a private network namespace by test_gateway.py. A genuine
gateway GW-0042 is supervised; a second advertisement under a new instance name claims
GW-0042 from another address, first with an API that also answers GW-0042, then with
one that answers another serial. Neither may take the device over. Then the genuine
gateway really moves (DHCP): that move is accepted. Prints a JSON summary."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from edge_agent_gateway.simulator import GatewaySimulator

from edge_agent.testing import running_agent, wait_until

DEV = "gateway:GW-0042"


async def main() -> int:
    gw = GatewaySimulator(serial="GW-0042", lockers=12)
    await asyncio.to_thread(gw.start)
    out: dict[str, object] = {}
    toml = ('[site]\nid = "gw-spoof"\n[agent]\npoll_interval = 0.2\ncommand_timeout = 1.0\n'
            'backoff_initial = 0.1\nbackoff_max = 0.5\n'
            '[discovery.mdns]\nenabled = true\ninterfaces = ["127.0.0.1"]\n')

    def conflicts(agent) -> list[str]:  # type: ignore[no-untyped-def]
        return [e["why"] for e in agent.inbox_items() if e["id"].startswith("conflict:")]

    try:
        with tempfile.TemporaryDirectory() as d:
            async with running_agent(toml, Path(d)) as (agent, client):
                await wait_until(lambda: DEV in agent.devices and agent.devices[DEV].link
                                 == "online", timeout=20, what="gateway online")
                genuine = agent.devices[DEV].candidate.address
                out["genuine"] = genuine
                # 1. Same serial, answered by the spoofer's API too, from 127.0.0.3.
                spoof = GatewaySimulator(serial="GW-0042", name="gw-evil", host="127.0.0.3",
                                         lockers=12)
                await asyncio.to_thread(spoof.start)
                await wait_until(lambda: len(conflicts(agent)) >= 1, timeout=20,
                                 what="the claim from 127.0.0.3 in the inbox")
                out["address_after_spoof"] = agent.devices[DEV].candidate.address
                r = await client.post(f"/v1/devices/{DEV}/unlock",
                                      {"compartment": 3, "reason": "after spoof"})
                out["unlock_after_spoof"] = {"genuine_opens": list(gw.opens),
                                             "spoof_opens": list(spoof.opens),
                                             "audit_seq": r["audit_seq"]}
                status = await client.get("/v1/status")
                out["alarms"] = [a["message"] for a in status["alarms"]]
                out["health"] = status["health"]
                await asyncio.to_thread(spoof.stop)
                # 2. A spoofer advertising GW-0042 whose API answers another serial.
                spoof2 = GatewaySimulator(serial="EVIL-7", advertise_serial="GW-0042",
                                          name="gw-evil2", host="127.0.0.4", lockers=2)
                await asyncio.to_thread(spoof2.start)
                await wait_until(lambda: len(conflicts(agent)) >= 2, timeout=20,
                                 what="the claim from 127.0.0.4 in the inbox")
                await asyncio.sleep(2.0)
                out["link_during_spoof2"] = agent.devices[DEV].link
                out["address_during_spoof2"] = agent.devices[DEV].candidate.address
                await asyncio.to_thread(spoof2.stop)
                await client.post(f"/v1/devices/{DEV}/unlock",
                                  {"compartment": 4, "reason": "after spoof 2"})
                out["genuine_opens"] = list(gw.opens)
                out["conflicts"] = conflicts(agent)
                events = await client.get("/v1/events", limit=1000)
                out["audited"] = {
                    "conflicts": [e["details"]["claimed_at"] for e in events
                                  if e["action"] == "device_identity_conflict"],
                    "moves": [e["details"] for e in events
                              if e["action"] == "device_address_changed"],
                    "unlocks": [(e["compartment"], e["outcome"]) for e in events
                                if e["action"] == "unlock"]}
                # 3. The genuine gateway moves (its old address is gone): accepted.
                await asyncio.to_thread(gw.move, "127.0.0.2")
                await wait_until(lambda: agent.devices[DEV].candidate.address
                                 .startswith("https://127.0.0.2:") and agent.devices[DEV].link
                                 == "online", timeout=20, what="genuine move accepted")
                moves = await client.get("/v1/events", action="device_address_changed")
                out["real_move"] = moves[-1]["details"] if moves else None
    finally:
        await asyncio.to_thread(gw.stop)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Gateway scenario, run in a private network namespace by test_gateway.py: discovery
through real mDNS, state, unlock, 500s, a spoofed advertisement, an IP change. Prints a
JSON summary of what the agent saw; exits non-zero on error."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from edge_agent_gateway.simulator import GatewaySimulator

from edge_agent.errors import ClientError
from edge_agent.testing import running_agent, wait_until

DEV = "gateway:GW-0042"


async def main() -> int:
    gw = GatewaySimulator(serial="GW-0042", lockers=12)
    await asyncio.to_thread(gw.start)
    out: dict[str, object] = {}
    toml = ('[site]\nid = "gw-test"\n[agent]\npoll_interval = 0.2\ncommand_timeout = 1.0\n'
            'backoff_initial = 0.1\nbackoff_max = 0.5\n'
            '[discovery.mdns]\nenabled = true\ninterfaces = ["127.0.0.1"]\n')
    try:
        with tempfile.TemporaryDirectory() as d:
            async with running_agent(toml, Path(d)) as (agent, client):
                await wait_until(lambda: DEV in agent.devices and agent.devices[DEV].link
                                 == "online" and agent.devices[DEV].compartments, timeout=20,
                                 what="gateway online")
                dev = (await client.get(f"/v1/devices/{DEV}"))
                out["first"] = {k: dev[k] for k in ("address", "source", "link")}
                out["interface"] = dev["properties"]["interface"]
                out["serial_confirmed"] = dev["info"]["serial"]
                out["items"] = [c["item"] for c in dev["compartments"]]
                gw.state[7].door_open = True
                await wait_until(lambda: agent.devices[DEV].compartments[7]["door"] == "open",
                                 what="door change followed")
                r = await client.post(f"/v1/devices/{DEV}/unlock",
                                      {"compartment": 5, "reason": "radio swap"})
                out["unlock"] = {"state": r["state"], "opens": list(gw.opens)}
                # A jammed lock (contract 1.2 failure kind): refused with its kind, audited.
                gw.state[2].jammed = True
                try:
                    await client.post(f"/v1/devices/{DEV}/unlock",
                                      {"compartment": 3, "reason": "jam test"})
                    out["jammed"] = "accepted"
                except ClientError as exc:
                    out["jammed"] = {"status": exc.status, "code": exc.code}
                gw.state[2].jammed = False
                jam = await client.get("/v1/events", action="unlock", compartment=3)
                out["jammed_outcome"] = jam[-1]["outcome"] if jam else None
                # 500s: degraded/offline, then back.
                gw.faults.error_500 = True
                await wait_until(lambda: agent.devices[DEV].link == "offline", timeout=10,
                                 what="offline on 500s")
                out["reason_500"] = agent.devices[DEV].supervisor.status.reason
                gw.faults.error_500 = False
                await wait_until(lambda: agent.devices[DEV].link == "online", timeout=10,
                                 what="back after 500s")
                # Slow answers (past the request timeout), then dropped connections.
                for fault, value in (("slow_s", 3.0), ("drop", True)):
                    setattr(gw.faults, fault, value)
                    await wait_until(lambda: agent.devices[DEV].link == "offline",
                                     timeout=15, what=f"offline on {fault}")
                    out[f"reason_{fault}"] = agent.devices[DEV].supervisor.status.reason
                    setattr(gw.faults, fault, 0.0 if fault == "slow_s" else False)
                    await wait_until(lambda: agent.devices[DEV].link == "online", timeout=15,
                                     what=f"back after {fault}")
                # Out of service: audited, refused by the agent, and set on the gateway.
                r = await client.post(f"/v1/devices/{DEV}/out-of-service",
                                      {"compartment": 9, "reason": "DAMAGED-HINGE",
                                       "out": True})
                out["oos"] = {"told": r["device_told"], "on_gateway":
                              [gw.state[8].out_of_service, gw.state[8].reason]}
                await wait_until(lambda: agent.devices[DEV].compartments[8]["fault"],
                                 what="gateway reports it")
                out["oos"]["fault"] = agent.devices[DEV].compartments[8]["fault"]
                # A spoofer takes the gateway's name while it is off mDNS.
                await asyncio.to_thread(gw.withdraw)
                spoof = GatewaySimulator(serial="EVIL-9", name=gw.name, lockers=2)
                await asyncio.to_thread(spoof.start)
                await wait_until(lambda: any("identity conflict" in e["why"]
                                             for e in agent.inbox_items()), timeout=15,
                                 what="spoof in the inbox")
                out["spoof_inbox"] = [e["why"] for e in agent.inbox_items()]
                out["spoof_device_created"] = "gateway:EVIL-9" in agent.devices
                await asyncio.to_thread(spoof.stop)
                # The genuine gateway comes back at a new address.
                await asyncio.to_thread(gw.move, "127.0.0.2")
                await wait_until(lambda: agent.devices[DEV].candidate.address
                                 .startswith("https://127.0.0.2:") and agent.devices[DEV].link
                                 == "online", timeout=20, what="same device at the new IP")
                devs = await client.get("/v1/devices")
                out["devices_after_move"] = [d["id"] for d in devs]
                out["address_after_move"] = agent.devices[DEV].candidate.address
                moved = await client.get("/v1/events", action="device_address_changed")
                out["move_audited"] = bool(moved)
    finally:
        await asyncio.to_thread(gw.stop)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

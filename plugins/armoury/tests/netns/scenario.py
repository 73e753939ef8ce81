"""Armoury cabinets found through real mDNS (``_modbus._tcp``), run in a private network
namespace by test_mdns_cabinets.py. Prints a JSON summary; exits non-zero on error."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from edge_agent_armoury import SERVICE_TYPE
from edge_agent_armoury.profile import ProfileLibrary
from edge_agent_armoury.simulator import CabinetSimulator
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edge_agent.errors import ClientError
from edge_agent.testing import adopt, running_agent, wait_until

SITE = ('[site]\nid = "armoury-mdns"\n[agent]\npoll_interval = 0.2\ncommand_timeout = 1.0\n'
        'backoff_initial = 0.1\nbackoff_max = 0.5\n'
        '[discovery.mdns]\nenabled = true\ninterfaces = ["127.0.0.1"]\n'
        '[vendor.armoury]\nprofile_dirs = ["{profiles}"]\n')


async def advertise(zc: AsyncZeroconf, name: str, port: int, props: dict[str, str]) -> None:
    info = AsyncServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}",
                            addresses=[socket.inet_aton("127.0.0.1")], port=port,
                            properties=props, server=f"{name.lower()}.local.")
    await zc.async_register_service(info)


async def main() -> int:
    site_dir = Path(tempfile.mkdtemp(prefix="ea-profiles-"))
    # A model this site added as a profile file only: found by mDNS like the shipped ones.
    builtin = ProfileLibrary().files["sentinel-wc12"].read_text()
    (site_dir / "site-wc6.toml").write_text(
        builtin.replace('name = "sentinel-wc12"', 'name = "site-wc6"')
        .replace("slots = 12", "slots = 6"))
    lib = ProfileLibrary([site_dir])
    wc = CabinetSimulator(lib.get("sentinel-wc12"), "WC12-0100", mdns=True)
    td = CabinetSimulator(lib.get("boltline-td8"), "TD8-0200", mdns=True)
    w6 = CabinetSimulator(lib.get("site-wc6"), "WC6-0300", mdns=True)
    sims = {"armoury:WC12-0100": wc, "armoury:TD8-0200": td, "armoury:WC6-0300": w6}
    for sim in sims.values():
        await asyncio.to_thread(sim.start)
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    out: dict[str, object] = {}
    try:
        # A spoofer claims another serial for the WC-12's controller; another cabinet
        # advertises a profile nobody has.
        await advertise(zc, "FAKE-1", wc.port, {"profile": "sentinel-wc12", "serial": "FAKE-1"})
        await advertise(zc, "ODD-7", td.port, {"profile": "acme-x9", "serial": "ODD-7"})
        with tempfile.TemporaryDirectory() as d:
            async with running_agent(SITE.format(profiles=site_dir), Path(d)) as (agent,
                                                                                 client):
                for ident in ("armoury:WC12-0100", "armoury:TD8-0200", "armoury:WC6-0300"):
                    await adopt(client, ident, timeout=30)  # never on discovery alone
                for ident in ("armoury:WC12-0100", "armoury:TD8-0200", "armoury:WC6-0300"):
                    await wait_until(lambda i=ident: i in agent.devices and agent.devices[i]
                                     .link == "online" and agent.devices[i].compartments,
                                     timeout=30, what=f"{ident} online")
                devs = {x["id"]: x for x in await client.get("/v1/devices")}
                out["cabinets"] = {
                    i: {"source": x["source"], "address": x["address"], "link": x["link"],
                        "slots": len(x["compartments"]), "model": x["info"]["model"],
                        "interface": x["properties"]["interface"],
                        "tags_ok": [c["tag"] for c in x["compartments"]] == [
                            sims[i].home_tag(n) for n in range(1, len(x["compartments"]) + 1)]}
                    for i, x in devs.items() if i in sims}
                await asyncio.to_thread(td.update, tamper=True)
                await wait_until(lambda: "tamper" in agent.devices["armoury:TD8-0200"].alarms,
                                 what="tamper followed")
                await asyncio.to_thread(wc.take, 2)
                await wait_until(lambda: agent.devices["armoury:WC12-0100"].compartments[1][
                    "item"] == "absent", what="weapon taken followed")
                fake = await wait_until(lambda: agent.devices.get("armoury:FAKE-1"),
                                        timeout=20, what="spoof offered")
                # The spoof is identified for the inbox (it fails: the controller's own
                # serial is another), is not supervised, and cannot be adopted.
                spoof = await wait_until(lambda: next(
                    (e for e in agent.inbox_items() if e["id"] == "armoury:FAKE-1"
                     and "not identified" in e["what"]), None), timeout=20,
                    what="spoof in the inbox, not identified")
                try:
                    await client.call("adopt", id="armoury:FAKE-1", body={"reason": "x"})
                    refused = ""
                except ClientError as exc:
                    refused = str(exc)
                out["spoof"] = {"link": fake.link, "reason": spoof["what"],
                                "refused": refused}
                await wait_until(lambda: any("ODD-7" in e["what"]
                                             for e in agent.inbox_items()), timeout=20,
                                 what="unknown profile in the inbox")
                out["inbox"] = [e["what"] + ": " + e["why"] for e in agent.inbox_items()]
    finally:
        await zc.async_close()
        for sim in sims.values():
            await asyncio.to_thread(sim.stop)
        shutil.rmtree(site_dir, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""mDNS discovery scenario, run in a private network namespace by test_mdns.py.

Starts a simulated network locker (TCP server), advertises it and two bad
advertisements through real zeroconf on loopback, runs an agent with the test plugin,
and prints what the agent saw as JSON. Exits non-zero on failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

sys.path.insert(0, str(Path(__file__).parent))
import edgetest_plugin

from edge_agent.testing import running_agent, wait_device

STATE = {"compartments": [{"door": "closed", "item": "present"}] * 3
         + [{"door": "open", "item": "absent"}]}


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = (await reader.readline()).decode().strip()
    if line == "INFO":
        writer.write(json.dumps({"serial": "SN-0042"}).encode() + b"\n")
    else:
        writer.write(json.dumps(STATE).encode() + b"\n")
    await writer.drain()
    writer.close()


def info(name: str, port: int, props: dict[bytes, bytes]) -> AsyncServiceInfo:
    return AsyncServiceInfo(edgetest_plugin.SERVICE, f"{name}.{edgetest_plugin.SERVICE}",
                            addresses=[bytes([127, 0, 0, 1])], port=port, properties=props,
                            server=f"{name}.local.")


async def main() -> int:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    toml = ('[site]\nid = "mdns-test"\n[agent]\npoll_interval = 0.2\n'
            '[discovery.mdns]\nenabled = true\ninterfaces = ["127.0.0.1"]\n')
    tag = os.environ.get("MDNS_SITE_TAG")  # the site_tag variant of the scenario
    if tag:
        toml += f'site_tag = "{tag}"\n'
    mine = {b"site": tag.encode()} if tag else {}
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as d:
        async with running_agent(toml, Path(d), extra_plugins={"edgetest": edgetest_plugin},
                                 load_entry_points=False) as (_agent, client):
            t0 = time.monotonic()
            await zc.async_register_service(info("locker-a", port, {
                b"vendor": b"edgetest", b"serial": b"SN-0042", b"model": b"ET-4", **mine}))
            if tag:  # the same kind of locker, the neighbouring site's
                await zc.async_register_service(info("neighbour", port, {
                    b"vendor": b"edgetest", b"serial": b"SN-0099", b"site": b"station-14"}))
            await zc.async_register_service(info("other-vendor", port, {
                b"vendor": b"acme", b"serial": b"X1"}))
            await zc.async_register_service(info("bad-txt", port, {
                b"vendor": b"edgetest", b"\xff\xfe": b"x"}))
            await wait_device(client, "edgetest:SN-0042", timeout=20)
            out["discovery_seconds"] = round(time.monotonic() - t0, 2)
            for _ in range(500):  # bounded: 10 s
                if len(await client.call("inbox")) >= (3 if tag else 2):
                    break
                await asyncio.sleep(0.02)
            out["devices"] = await client.get("/v1/devices")
            out["inbox"] = await client.get("/v1/inbox")
            out["status_mdns"] = (await client.get("/v1/status"))["mdns"]
    await zc.async_close()
    server.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

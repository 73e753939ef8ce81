"""Contract 1.2 pushed events: a board that reports a change on its own has it applied at
once, not at the next poll; a board that pushes nothing works as before."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from helpers import site_toml

from edge_agent.testing import running_agent, wait_device, wait_until

DEV = "kerong:Bank-1:0"
POLL = 30.0  # far longer than the test: whatever shows up was pushed, not polled


async def test_a_pushed_door_change_reaches_the_stream_before_any_poll(kerong_bus,
                                                                       tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0xFFFF}, push_changes=True, pace=False)
    toml = (site_toml({"Bank-1": pty.port}, poll=POLL)
            + "[vendor.kerong]\nlisten_unsolicited = true\n")
    async with running_agent(toml, tmp_path / "s") as (_agent, client):
        await wait_device(client, DEV, lambda d: d["compartments"], timeout=15)
        seen: list[tuple[float, str]] = []

        async def watch() -> None:
            async for kind, data in client.stream():
                if kind == "audit" and data.get("action") in ("door_opened", "door_closed") \
                        and data.get("compartment") == 5:
                    seen.append((time.monotonic(), data["action"]))
                    if len(seen) == 2:
                        return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.3)  # subscribed
        started = time.monotonic()
        await asyncio.to_thread(sim.set_door, 0, 4, False)
        await wait_until(lambda: len(seen) == 1, timeout=5, what="door_opened on the stream")
        await asyncio.to_thread(sim.set_door, 0, 4, True)
        await asyncio.wait_for(watcher, 5)
        assert [a for _, a in seen] == ["door_opened", "door_closed"]
        # Far inside one poll interval: pushed. (bench figures are not asserted here.)
        assert seen[0][0] - started < POLL / 10
        dev = await client.get(f"/v1/devices/{DEV}")
        assert dev["counters"]["pushed"] >= 2 and dev["counters"]["polls"] <= 2
        # Commands still work on a bus with a listener.
        r = await client.post(f"/v1/devices/{DEV}/unlock", {"compartment": 2, "reason": "t"})
        assert r["state"]["door"] == "open"
        print(f"pushed door change on the stream after {1000 * (seen[0][0] - started):.1f} ms")


async def test_a_board_that_pushes_nothing_still_polls(kerong_bus, tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    toml = site_toml({"Bank-1": pty.port}) + "[vendor.kerong]\nlisten_unsolicited = true\n"
    async with running_agent(toml, tmp_path / "s") as (_agent, client):
        await wait_device(client, DEV, lambda d: d["compartments"], timeout=15)
        await asyncio.to_thread(sim.set_door, 0, 4, False)
        await wait_device(client, DEV, lambda d: d["compartments"][4]["door"] == "open",
                         timeout=5, what="the poll sees the door")
        dev = await client.get(f"/v1/devices/{DEV}")
        assert dev["counters"]["pushed"] == 0


async def test_seen_follows_the_polls_not_only_discovery(kerong_bus, tmp_path: Path) -> None:
    """A device's "seen" time is when it last answered (it used to stay at discovery for
    devices discovery does not offer again, such as network ones)."""
    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    toml = site_toml({"Bank-1": pty.port}, poll=0.1).replace("probe_interval = 2.0",
                                                               "probe_interval = 60.0")
    async with running_agent(toml, tmp_path / "s") as (_agent, client):
        await wait_device(client, DEV)
        first = (await client.get(f"/v1/devices/{DEV}"))["last_seen"]
        await asyncio.sleep(1.0)
        later = (await client.get(f"/v1/devices/{DEV}"))["last_seen"]
        assert later - first >= 0.5

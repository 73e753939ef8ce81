"""The agent end to end: discovery on a pty bus and behind TCP, state following,
unlock through the API into the audit log."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

from helpers import site_toml

from edge_agent.testing import running_agent, wait_device, wait_devices, wait_event


def _comp(dev: dict, index: int) -> dict:
    return next(c for c in dev["compartments"] if c["index"] == index)


async def test_discovers_boards_on_pty_and_tcp_with_correct_state(kerong_bus, tmp_path: Path
                                                                  ) -> None:
    pty_bus, pty = kerong_bus({0: 0x0003, 5: 0x0000})
    tcp_bus, tcp = kerong_bus({1: 0xFFFF}, tcp=True)
    pty_bus.set_door(5, 9, closed=False)
    toml = site_toml({"bank-a": pty.port, "bank-b": tcp.port})
    async with running_agent(toml, tmp_path / "state") as (_agent, client):
        await wait_devices(client, {"kerong:bank-a:0", "kerong:bank-a:5", "kerong:bank-b:1"},
                           lambda d: d["compartments"], what="with state")
        listed = {d["id"]: d for d in await client.get("/v1/devices")}
        assert set(listed) == {"kerong:bank-a:0", "kerong:bank-a:5", "kerong:bank-b:1"}
        a0, a5, b1 = listed["kerong:bank-a:0"], listed["kerong:bank-a:5"], listed["kerong:bank-b:1"]
        assert a0["link"] == "online" and a0["bus_id"] == "bank-a"
        assert [c["item"] for c in a0["compartments"][:3]] == ["present", "present", "absent"]
        assert _comp(a5, 10)["door"] == "open" and _comp(a5, 9)["door"] == "closed"
        assert all(c["item"] == "present" for c in b1["compartments"])
        assert b1["address"].startswith("socket://127.0.0.1:")

        # The simulator changes state: the agent follows and audits each change.
        tcp_bus.set_item(1, 3, present=False)
        pty_bus.set_door(0, 0, closed=False)
        await wait_device(client, "kerong:bank-b:1",
                          lambda d: d["compartments"][3]["item"] == "absent",
                          what="to show the item removed")
        await wait_device(client, "kerong:bank-a:0",
                          lambda d: d["compartments"][0]["door"] == "open",
                          what="to show the door opened")
        removed = await wait_event(client, action="item_removed", device="kerong:bank-b:1")
        opened = await wait_event(client, action="door_opened", device="kerong:bank-a:0")
        got = {(e["action"], e.get("device"), e.get("compartment")) for e in (removed, opened)}
        assert ("item_removed", "kerong:bank-b:1", 4) in got
        assert ("door_opened", "kerong:bank-a:0", 1) in got


async def test_unlock_through_api_reaches_right_lock_and_is_audited(kerong_bus, tmp_path: Path
                                                                    ) -> None:
    sim_a, pty = kerong_bus({0: 0, 2: 0})
    sim_b, tcp = kerong_bus({2: 0}, tcp=True)
    toml = site_toml({"bank-a": pty.port, "bank-b": tcp.port})
    async with running_agent(toml, tmp_path / "state") as (_agent, client):
        await wait_devices(client, {"kerong:bank-b:2", "kerong:bank-a:2"})
        result = await client.post("/v1/devices/kerong:bank-b:2/unlock",
                                   {"compartment": 7, "reason": "radio battery swap"})
        # Only board 2 on bus B saw an unlock, of lock index 6.
        assert sim_b.unlocks == [(2, 6)]
        assert sim_a.unlocks == []
        assert result["state"]["door"] == "open"
        me = getpass.getuser()
        assert result["actor"] == me
        # Durable: the audit record is on disk when the API answers.
        segments = sorted((tmp_path / "state" / "audit").glob("audit-*.jsonl"))
        lines = [json.loads(line) for seg in segments for line in seg.read_text().splitlines()]
        done = next(r for r in lines if r["seq"] == result["audit_seq"])
        assert done["action"] == "unlock" and done["outcome"] == "ok"
        assert done["actor"] == me and done["reason"] == "radio battery swap"
        assert done["device"] == "kerong:bank-b:2" and done["compartment"] == 7
        requested = [r for r in lines if r["action"] == "unlock_requested"]
        assert requested and requested[-1]["seq"] < done["seq"]
        # The event is also served back through the API.
        evs = await client.get("/v1/events", device="kerong:bank-b:2", action="unlock")
        assert evs[-1]["seq"] == result["audit_seq"]


async def test_unlock_errors_are_clear(kerong_bus, tmp_path: Path) -> None:
    from edge_agent.errors import ClientError

    sim, pty = kerong_bus({0: 0})
    async with running_agent(site_toml({"a": pty.port}), tmp_path / "s") as (_agent, client):
        await wait_device(client, "kerong:a:0")
        for body, status in (({"compartment": 1}, 400), ({"compartment": 0, "reason": "x"}, 400),
                             ({"compartment": 17, "reason": "x"}, 502)):
            try:
                await client.post("/v1/devices/kerong:a:0/unlock", body)
            except ClientError as exc:
                assert exc.status == status, (body, exc)
            else:
                raise AssertionError(f"{body} accepted")
        try:
            await client.post("/v1/devices/kerong:zz:9/unlock", {"compartment": 1, "reason": "x"})
        except ClientError as exc:
            assert exc.status == 404 and "edge-agent devices" in str(exc)
        sim.drop_board(0)
        await wait_device(client, "kerong:a:0", lambda d: d["link"] == "offline", timeout=10)
        try:
            await client.post("/v1/devices/kerong:a:0/unlock", {"compartment": 1, "reason": "x"})
        except ClientError as exc:
            assert exc.status == 409 and "offline" in str(exc)
        else:
            raise AssertionError("unlock of an offline device accepted")
        assert sim.unlocks == []

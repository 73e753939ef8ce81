"""The armoury plugin in a running agent against pymodbus's own Modbus server: both
shipped cabinet models over Modbus TCP, one over RTU on a serial line, a third model
added as a site profile only, every alarm raised and cleared, and a wrong identity."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from edge_agent_armoury.profile import ProfileLibrary
from edge_agent_armoury.simulator import CabinetSimulator

from edge_agent.agent import Agent
from edge_agent.errors import ClientError
from edge_agent.testing import adopt, running_agent, short_tempdir, wait_until

# A third model, added the way a site would: one TOML file, no code.
ACME_K4 = """
[profile]
name = "acme-k4"
vendor = "Acme"
model = "K4 key and Taser safe"
slots = 4
unit = 7
pulse_reset = "device"
pulse_ms = 300

[identity]
serial = { table = "holding", address = 0, type = "string", count = 4 }

[cabinet]
tamper = { table = "coil", address = 50 }

[slot]
lock = { table = "coil", address = 10, stride = 1 }
present = { table = "input", address = 20, stride = 1, bit = 15 }
tag = { table = "input", address = 30, stride = 2, type = "hex", count = 2 }
"""


def _site(devices: list[tuple[str, str, dict[str, Any]]], profile_dir: Path) -> str:
    out = ['[site]\nid = "armoury-test"\n',
           "[agent]\npoll_interval = 0.1\ncommand_timeout = 1.0\noffline_after = 2\n"
           "backoff_initial = 0.1\nbackoff_max = 0.5\n",
           f'[vendor.armoury]\ndoor_open_limit_s = 1.0\nprofile_dirs = ["{profile_dir}"]\n']
    for ident, address, props in devices:
        p = ", ".join(f'{k} = {v!r}' if isinstance(v, int) else f'{k} = "{v}"'
                      for k, v in props.items())
        out.append(f'[[devices]]\nplugin = "armoury"\nidentity = "{ident}"\n'
                   f'address = "{address}"\nproperties = {{ {p} }}\n')
    return "\n".join(out)


def _alarms(agent: Agent, dev: str) -> set[tuple[str, int | None]]:
    return {(a.code, a.compartment) for a in agent.devices[dev].alarms.values()}


async def test_cabinets_state_unlock_and_every_alarm(tmp_path: Path) -> None:
    profile_dir = tmp_path / "profiles"
    profile_dir.mkdir()
    (profile_dir / "acme-k4.toml").write_text(ACME_K4)
    lib = ProfileLibrary([profile_dir])
    with short_tempdir() as run:
        sims = {
            "armoury:WC12-0001": CabinetSimulator(lib.get("sentinel-wc12"), "WC12-0001"),
            "armoury:TD8-0002": CabinetSimulator(lib.get("boltline-td8"), "TD8-0002"),
            "armoury:TD8-0003": CabinetSimulator(lib.get("boltline-td8"), "TD8-0003",
                                                 transport="rtu", link=str(run / "ttyRTU")),
            "armoury:K4-9": CabinetSimulator(lib.get("acme-k4"), "K4-9"),
        }
        for sim in sims.values():
            await asyncio.to_thread(sim.start)
        try:
            devices = [(ident, sim.address, {"profile": sim.profile.name})
                       for ident, sim in sims.items()]
            # Someone lists the WC-12's address under another cabinet's serial.
            devices.append(("armoury:TD8-9999", sims["armoury:WC12-0001"].address,
                            {"profile": "sentinel-wc12"}))
            async with running_agent(_site(devices, profile_dir), tmp_path / "state") as (
                    agent, client):
                await _check(agent, client, sims)
        finally:
            for sim in sims.values():
                await asyncio.to_thread(sim.stop)


async def _check(agent: Agent, client: Any, sims: dict[str, CabinetSimulator]) -> None:
    wc, td, rtu, k4 = (sims[k] for k in sims)
    # Armoury devices are never adopted on discovery: each waits for a technician.
    for ident in sims:
        assert agent.devices[ident].link == "discovered"
        answer = await adopt(client, ident)
        assert answer["pins"]["serial"] == ident.split(":")[1]
    for ident in sims:
        await wait_until(lambda i=ident: agent.devices[i].link == "online"
                         and agent.devices[i].compartments, timeout=15, what=f"{ident} online")
    # The wrong serial cannot be adopted; the inbox names both serials.
    try:
        await client.call("adopt", id="armoury:TD8-9999", body={"reason": "label checked"})
        raise AssertionError("a cabinet with the wrong serial was adopted")
    except ClientError as exc:
        assert exc.status == 409 and "WC12-0001" in str(exc) and "TD8-9999" in str(exc)
    inbox = {i["id"]: i for i in await client.call("inbox")}
    assert "WC12-0001" in inbox["armoury:TD8-9999"]["what"]
    assert agent.devices["armoury:TD8-9999"].link == "discovered"

    # State: slot count, items and tag ids as the cabinets hold them, for every model.
    for ident, sim in sims.items():
        d = await client.get(f"/v1/devices/{ident}")
        assert len(d["compartments"]) == sim.profile.profile.slots
        assert [c["tag"] for c in d["compartments"]] == [
            sim.home_tag(n) for n in range(1, sim.profile.profile.slots + 1)]
        assert {c["item"] for c in d["compartments"]} == {"present"}
        assert d["info"]["serial"] == ident.split(":")[1]
        assert d["alarms"] == []
    assert (await client.get("/v1/devices/armoury:TD8-0003"))["info"]["details"][
        "transport"].startswith("rtu:")

    # Unlock: the agent pulses the WC-12's coil and drops it itself...
    r = await client.post("/v1/devices/armoury:WC12-0001/unlock",
                          {"compartment": 3, "reason": "firearms officer issue"})
    assert r["state"]["door"] == "open" and wc.unlocks == [3]
    await wait_until(lambda: (3, False) in wc.coil_writes, what="agent ends the pulse")
    assert not await asyncio.to_thread(wc.coil, 3)
    # ... the TD-8 (RTU) and the site-profile K4 drop it on their own.
    for ident, sim, slot in (("armoury:TD8-0003", rtu, 2), ("armoury:K4-9", k4, 4)):
        await client.post(f"/v1/devices/{ident}/unlock", {"compartment": slot,
                                                          "reason": "taser issue"})
        assert sim.unlocks == [slot]
        await wait_until(lambda s=sim, n=slot: not s.coil(n), what="controller pulse ends")
        assert sim.coil_writes == [(slot, True)]

    # Door held open past the limit (1 s in this site config), then closed.
    await wait_until(lambda: ("door_held_open", 3) in _alarms(agent, "armoury:WC12-0001"),
                     timeout=5, what="door held open")
    await wait_until(lambda: ("door_held_open", 2) in _alarms(agent, "armoury:TD8-0003"),
                     timeout=5, what="door held open on the RTU dock")
    st = await client.get("/v1/status")
    assert any(a["code"] == "door_held_open" and a["device"] == "armoury:WC12-0001"
               for a in st["alarms"])
    await asyncio.to_thread(wc.slot, 3, door_open=False)
    await asyncio.to_thread(rtu.slot, 2, door_open=False)
    await wait_until(lambda: not _alarms(agent, "armoury:WC12-0001")
                     and not _alarms(agent, "armoury:TD8-0003"), what="door alarms clear")

    # The TD-8's main door (a normally-closed contact in a status word) held open.
    await asyncio.to_thread(td.update, main_door=True)
    await wait_until(lambda: ("door_held_open", None) in _alarms(agent, "armoury:TD8-0002"),
                     timeout=5, what="main door held open")
    await asyncio.to_thread(td.update, main_door=False)

    # Tamper: critical, the agent's health says so.
    await asyncio.to_thread(td.update, tamper=True)
    await wait_until(lambda: ("tamper", None) in _alarms(agent, "armoury:TD8-0002"),
                     what="tamper")
    assert (await client.get("/v1/status"))["health"] == "degraded"
    await asyncio.to_thread(td.update, tamper=False)
    await wait_until(lambda: not _alarms(agent, "armoury:TD8-0002"), what="tamper clears")

    # A weapon returned to the wrong slot; an item with no readable tag.
    tag5 = await asyncio.to_thread(wc.take, 5)
    await asyncio.to_thread(wc.take, 6)
    await asyncio.to_thread(wc.put, 6, tag5)
    await asyncio.to_thread(wc.put, 8, None)
    await wait_until(lambda: {("wrong_slot", 6), ("tag_unreadable", 8)}
                     <= _alarms(agent, "armoury:WC12-0001"), what="wrong slot and no tag")
    msg = agent.devices["armoury:WC12-0001"].alarms["wrong_slot:6"].message
    assert msg == f"armoury:WC12-0001: slot 6: tag {tag5} belongs in slot 5"
    await asyncio.to_thread(wc.take, 6)
    await asyncio.to_thread(wc.put, 5, tag5)
    await asyncio.to_thread(wc.put, 8, wc.home_tag(8))
    await wait_until(lambda: not _alarms(agent, "armoury:WC12-0001"), what="all clear")

    # Every transition is in the audit trail, with the weapon's tag on removal.
    raised = await client.get("/v1/events", action="alarm_raised")
    cleared = await client.get("/v1/events", action="alarm_cleared")
    codes = {(e["device"], e["details"]["code"]) for e in raised}
    assert codes >= {("armoury:WC12-0001", "door_held_open"), ("armoury:TD8-0002", "tamper"),
                     ("armoury:TD8-0002", "door_held_open"),
                     ("armoury:WC12-0001", "wrong_slot"), ("armoury:WC12-0001",
                                                           "tag_unreadable")}
    assert len(cleared) == len(raised) >= 6
    removed = await client.get("/v1/events", action="item_removed",
                               device="armoury:WC12-0001")
    assert tag5 in [e.get("item") for e in removed]

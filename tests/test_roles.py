"""Roles on the control socket: the caller's Unix groups, named in [roles], decide what
it may do; a refusal is audited with the caller and the missing role; a weapon
compartment opened from the socket needs two different armourers."""

from __future__ import annotations

import asyncio
import getpass
import grp
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import as_other_user, site_toml

from edge_agent.errors import ClientError
from edge_agent.testing import adopt, running_agent, wait_device

DEV = "kerong:Bank-1:0"
MINE = grp.getgrgid(os.getgid()).gr_name
OTHER_UID = 65534  # nobody


def config(pty: str, roles: str) -> str:
    return site_toml({"Bank-1": pty}, extra=f"""
{roles}

[custody]
second_person_s = 30

[[stations]]
id = "Armoury"
reader = "osdp:RDR-000000AA"
slots = [{{ device = "{DEV}", compartments = "1-4", equipment = "taser" }},
         {{ device = "{DEV}", compartments = "5-8", equipment = "radio" }}]
""")


async def unlock(client: Any, comp: int) -> tuple[int | None, Any]:
    try:
        return 200, await client.call("unlock", id=DEV, body={"compartment": comp,
                                                               "reason": "roles test"})
    except ClientError as exc:
        return exc.status, exc.code


async def test_a_viewer_reads_but_may_not_open(kerong_bus: Any, tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    toml = config(pty.port, f'[roles]\nviewer = ["{MINE}"]\ntechnician = ["no-such-group"]')
    async with running_agent(toml, tmp_path / "s") as (_agent, client):
        # A board holding Tasers waits for a technician to adopt it; a viewer may not.
        await wait_device(client, DEV, lambda d: d["presented"], timeout=15)
        with pytest.raises(ClientError) as refused_adopt:
            await client.call("adopt", id=DEV, body={"reason": "viewer tries"})
        assert refused_adopt.value.status == 403
        assert (await client.call("status"))["health"] in ("ok", "degraded")
        status, code = await unlock(client, 6)
        assert (status, code) == (403, "forbidden") and sim.unlocks == []
        refused = await client.call("events", action="access_refused")
        assert refused[-1]["actor"] == getpass.getuser()
        assert refused[-1]["details"] == {"call": "unlock",
                                          "missing_role": "technician|armourer"}


async def test_a_technician_opens_lockers_but_not_weapons(kerong_bus: Any,
                                                         tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    toml = config(pty.port, f'[roles]\ntechnician = ["{MINE}"]')
    async with running_agent(toml, tmp_path / "s") as (_agent, client):
        await adopt(client, DEV)
        await wait_device(client, DEV)
        assert (await unlock(client, 6))[0] == 200 and sim.unlocks == [(0, 5)]
        status, code = await unlock(client, 2)  # a taser slot
        assert (status, code) == (403, "forbidden") and sim.unlocks == [(0, 5)]
        refused = await client.call("events", action="access_refused")
        assert refused[-1]["details"]["missing_role"] == "armourer"
        # Entitlements are the armourer's too.
        with pytest.raises(ClientError) as exc:
            await client.call("entitlements_load", body={})
        assert exc.value.status == 403


async def test_a_weapon_compartment_needs_two_different_armourers(kerong_bus: Any,
                                                                  tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    armourers = f'"{MINE}"' + (', "nogroup"' if os.geteuid() == 0 else "")
    toml = config(pty.port, f"[roles]\ntechnician = [\"{MINE}\"]\narmourer = [{armourers}]")
    async with running_agent(toml, tmp_path / "s") as (agent, client):
        await adopt(client, DEV)
        await wait_device(client, DEV)
        status, answer = await unlock(client, 2)
        assert status == 200 and "second armourer" in answer["waiting"]
        assert sim.unlocks == []
        # The same person again is not a second person.
        assert await unlock(client, 2) == (403, "forbidden")
        assert sim.unlocks == []
        if os.geteuid() != 0:
            pytest.skip("a second Unix user needs root to make (setuid nobody)")
        # Let nobody reach this test's socket (and the private directory it is in).
        os.chmod(Path(agent.socket_path).parent, 0o711)
        os.chmod(agent.socket_path, 0o666)
        second = await asyncio.to_thread(as_other_user, Path(agent.socket_path), "unlock",
                                         {"compartment": 2, "reason": "second"}, id=DEV)
        assert second["status"] == 200, second
        assert sim.unlocks == [(0, 1)]
        confirmed = await client.call("events", action="second_person")
        assert confirmed[-1]["actor"] == "nobody"
        assert confirmed[-1]["details"]["first"] == getpass.getuser()

"""Devices are trusted only once pinned (issue 15): discovery grants no trust to an
armoury device, adoption pins what a device presents (serial, TLS certificate), and a
pinned device that answers as another is blocked, alarmed and audited, never re-learned;
re-adopting an armoury device takes two people.

Real parts: the gateway simulator is an HTTPS server with a self-signed certificate of
its own; the cabinet is pymodbus's Modbus RTU server on a pseudo-terminal."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from edge_agent_armoury.profile import ProfileLibrary
from edge_agent_armoury.simulator import CabinetSimulator
from edge_agent_gateway.simulator import GatewaySimulator
from helpers import as_other_user

from edge_agent.client import AgentClient
from edge_agent.errors import ClientError
from edge_agent.pinning import short
from edge_agent.testing import (
    adopt,
    running_agent,
    short_tempdir,
    wait_device,
    wait_event,
    wait_status,
)

TIMING = ("[agent]\npoll_interval = 0.1\ncommand_timeout = 1.0\noffline_after = 2\n"
          "backoff_initial = 0.1\nbackoff_max = 0.5\n")
GW = "gateway:Gw-Pin-7"  # mixed case, as sites name things


def gateway_site(gw: GatewaySimulator, *, auto_adopt: str, extra: str = "") -> str:
    return (f'[site]\nid = "Pin-Site"\n{TIMING}auto_adopt = {auto_adopt}\n'
            f'[[devices]]\nplugin = "gateway"\nidentity = "{GW}"\n'
            f'address = "{gw.scheme}://127.0.0.1:{gw.port}"\n'
            f'properties = {{ host = "127.0.0.1", port = {gw.port}, serial = "Gw-Pin-7" }}\n'
            '[vendor.gateway]\nrequest_timeout = 0.5\n' + extra)


def start_gateway() -> GatewaySimulator:
    gw = GatewaySimulator(serial="Gw-Pin-7", lockers=6, mdns=False)
    gw._thread.start()
    gw._call(gw._serve())  # no mDNS outside a namespace: configured by address
    return gw


def names(fingerprint: str, text: str) -> bool:
    """Does ``text`` name this certificate (in full or the short form)?"""
    return fingerprint.split(":", 1)[1][:16] in text.replace(":", "")


async def unlock(client: AgentClient, device: str, comp: int) -> int:
    try:
        await client.call("unlock", id=device, body={"compartment": comp, "reason": "pin"})
        return 200
    except ClientError as exc:
        return exc.status or 0


async def test_a_gateway_certificate_is_pinned_on_adoption_and_a_new_one_blocks_it(
        tmp_path: Path) -> None:
    gw = await asyncio.to_thread(start_gateway)
    try:
        assert gw.fingerprint and gw.scheme == "https"
        # auto_adopt covers kerong only: the gateway waits, showing its certificate.
        site = gateway_site(gw, auto_adopt='["kerong"]')
        async with running_agent(site, tmp_path / "state") as (_agent, client):
            dev = await wait_device(client, GW, lambda d: d.get("presented"), timeout=15)
            assert dev["link"] == "discovered" and not dev["adopted"]
            assert dev["presented"]["fingerprint"] == gw.fingerprint
            inbox = {i["id"]: i for i in await client.call("inbox")}
            assert short(gw.fingerprint) in inbox[GW]["what"]
            assert "auto_adopt does not cover" in inbox[GW]["why"]
            assert await unlock(client, GW, 1) == 409 and gw.opens == []

            # The label says another certificate: refused, nothing adopted.
            with pytest.raises(ClientError) as wrong:
                await client.call("adopt", id=GW, body={
                    "reason": "label", "expect": {"fingerprint": "sha256:" + "00" * 32}})
            assert wrong.value.status == 409 and wrong.value.code == "identity_mismatch"
            # The label matches: adopted, the certificate pinned, the adoption audited.
            answer = await client.call("adopt", id=GW, body={
                "reason": "label checked", "expect": {"fingerprint": gw.fingerprint}})
            assert answer["pins"]["fingerprint"] == gw.fingerprint
            dev = await wait_device(client, GW, timeout=15)
            rows = {r["label"]: r["value"] for r in dev["diagnostics"]}
            assert rows["tls"] == "certificate pinned" and rows["base url"].startswith("https")
            assert await unlock(client, GW, 2) == 200 and gw.opens == [1]
            adopted = await client.call("events", action="device_adopted", device=GW)
            assert adopted[-1]["details"]["pins"]["fingerprint"] == gw.fingerprint

            # The gateway comes back with another certificate (same address, same
            # serial): blocked, not re-learned; a critical alarm; audited once.
            old = gw.fingerprint
            new = await asyncio.to_thread(gw.new_certificate)
            dev = await wait_device(client, GW, lambda d: d["link"] == "blocked", timeout=15)
            assert names(new, dev["reason"]) and names(old, dev["reason"])
            status = await wait_status(client, lambda s: any(
                a["code"] == "identity_mismatch" for a in s["alarms"]))
            assert status["health"] == "degraded"
            assert await unlock(client, GW, 3) == 409 and gw.opens == [1]
            await asyncio.sleep(1.2)  # a few slow retries, still blocked, audited once
            dev = await client.call("device", id=GW)
            assert dev["link"] == "blocked" and dev["pins"]["fingerprint"] == old
            mism = await client.call("events", action="device_identity_mismatch", device=GW)
            assert len(mism) == 1 and mism[0]["outcome"] == "blocked"
            assert mism[0]["details"]["pinned"]["fingerprint"] == old
            assert mism[0]["details"]["presented"]["fingerprint"] == new
            inbox = {i["id"]: i for i in await client.call("inbox")}
            assert inbox[GW]["why"].startswith("blocked: ")

            # A technician compares the new certificate with the gateway and re-adopts.
            answer = await client.call("adopt", id=GW, body={
                "reason": "gateway replaced under warranty", "expect": {"fingerprint": new}})
            assert answer["pins"]["fingerprint"] == new
            await wait_device(client, GW, timeout=15)
            ev = await wait_event(client, lambda e: e["details"].get("replaces"),
                                  action="device_adopted")
            assert ev["details"]["replaces"]["fingerprint"] == old
            status = await client.call("status")
            assert not any(a["code"] == "identity_mismatch" for a in status["alarms"])
            assert await unlock(client, GW, 4) == 200 and gw.opens == [1, 3]

        # A restart keeps the pin: the gateway with yet another certificate is blocked
        # at the first connection, before any command.
        newer = await asyncio.to_thread(gw.new_certificate)
        async with running_agent(site, tmp_path / "state") as (_agent, client):
            dev = await wait_device(client, GW, lambda d: d["link"] == "blocked", timeout=15)
            assert names(newer, dev["reason"])
            assert await unlock(client, GW, 5) == 409 and gw.opens == [1, 3]
    finally:
        await asyncio.to_thread(gw.stop)


async def test_an_auto_adopted_locker_is_pinned_on_first_contact(tmp_path: Path) -> None:
    gw = await asyncio.to_thread(start_gateway)
    try:
        site = gateway_site(gw, auto_adopt="true")
        async with running_agent(site, tmp_path / "state") as (_agent, client):
            await wait_device(client, GW, timeout=15)
            pinned = await wait_event(client, lambda e: True, action="device_pinned")
            assert pinned["device"] == GW and pinned["actor"] == "agent"
            assert pinned["details"]["pins"]["fingerprint"] == gw.fingerprint
            await asyncio.to_thread(gw.new_certificate)
            await wait_device(client, GW, lambda d: d["link"] == "blocked", timeout=15)
    finally:
        await asyncio.to_thread(gw.stop)


async def test_a_gateway_holding_tasers_is_re_adopted_by_two_people(tmp_path: Path) -> None:
    """A station keeps Tasers in the gateway: it is an armoury device. Never adopted on
    discovery even with auto_adopt = true; its re-adoption after a certificate change
    needs a second person (another Unix user on the socket)."""
    gw = await asyncio.to_thread(start_gateway)
    try:
        station = (f'[[stations]]\nid = "Tasers"\nreader = "{GW}"\n'
                   f'slots = [{{ device = "{GW}", compartments = "1-6", equipment = "taser" }}]\n'
                   "[custody]\nsecond_person_s = 30\n")
        site = gateway_site(gw, auto_adopt="true", extra=station)
        async with running_agent(site, tmp_path / "state") as (agent, client):
            dev = await wait_device(client, GW, lambda d: d.get("presented"), timeout=15)
            assert not dev["adopted"]
            inbox = {i["id"]: i for i in await client.call("inbox")}
            assert "armoury device" in inbox[GW]["why"]
            await adopt(client, GW)  # the first adoption: one technician
            await wait_device(client, GW, timeout=15)
            new = await asyncio.to_thread(gw.new_certificate)
            await wait_device(client, GW, lambda d: d["link"] == "blocked", timeout=15)
            first = await client.call("adopt", id=GW, body={"reason": "new gateway"})
            assert "second person" in first["waiting"] and "adopted" not in first
            assert (await client.call("device", id=GW))["link"] == "blocked"
            with pytest.raises(ClientError) as same:
                await client.call("adopt", id=GW, body={"reason": "me again"})
            assert same.value.status == 403
            assert (await client.call("device", id=GW))["link"] == "blocked"
            waiting = await client.call("events", action="device_adopt_waiting")
            assert waiting[-1]["details"]["pins"]["fingerprint"] == new
            if os.geteuid() != 0:
                pytest.skip("a second Unix user needs root to make (setuid nobody)")
            os.chmod(Path(agent.socket_path).parent, 0o711)
            os.chmod(agent.socket_path, 0o666)
            second = await asyncio.to_thread(as_other_user, Path(agent.socket_path),
                                             "adopt", {"reason": "checked it too"}, id=GW)
            assert second["status"] == 200 and second["answer"]["adopted"], second
            await wait_device(client, GW, timeout=15)
            ev = (await client.call("events", action="device_adopted"))[-1]
            assert ev["details"]["first"] and ev["details"]["replaces"]
            assert ev["details"]["pins"]["fingerprint"] == new
    finally:
        await asyncio.to_thread(gw.stop)


async def test_a_swapped_rs485_cabinet_controller_is_blocked(tmp_path: Path) -> None:
    """A Modbus RTU cabinet on a serial line, adopted; its controller is swapped for
    another unit at the same bus address: blocked, alarmed, audited, no command reaches
    it, and it cannot be adopted under the old cabinet's identity."""
    lib = ProfileLibrary([])
    with short_tempdir() as run:
        link = str(run / "ttyRTU")
        sim = CabinetSimulator(lib.get("boltline-td8"), "TD8-0003", transport="rtu", link=link)
        await asyncio.to_thread(sim.start)
        dev_id = "armoury:TD8-0003"
        site = (f'[site]\nid = "Armoury-1"\n{TIMING}auto_adopt = true\n'
                f'[[devices]]\nplugin = "armoury"\nidentity = "{dev_id}"\n'
                f'address = "modbus-rtu://{link}?baudrate=9600"\n'
                'properties = { profile = "boltline-td8" }\n')
        swapped: Any = None
        try:
            async with running_agent(site, tmp_path / "state") as (_agent, client):
                dev = await wait_device(client, dev_id, lambda d: d.get("presented"),
                                        timeout=15)
                assert dev["link"] == "discovered" and dev["device_class"] == "armoury"
                assert dev["presented"]["serial"] == "TD8-0003"
                answer = await adopt(client, dev_id)
                assert answer["pins"]["serial"] == "TD8-0003"
                await wait_device(client, dev_id, timeout=15)
                # The controller is swapped: another unit, same line, same unit address.
                await asyncio.to_thread(sim.stop)
                swapped = CabinetSimulator(lib.get("boltline-td8"), "TD8-0099",
                                           transport="rtu", link=link)
                await asyncio.to_thread(swapped.start)
                dev = await wait_device(client, dev_id, lambda d: d["link"] == "blocked",
                                        timeout=20)
                assert "TD8-0099" in dev["reason"] and "TD8-0003" in dev["reason"]
                assert await unlock(client, dev_id, 2) == 409 and swapped.unlocks == []
                mism = await wait_event(client, lambda e: True,
                                        action="device_identity_mismatch")
                assert mism["device"] == dev_id and mism["outcome"] == "blocked"
                status = await client.call("status")
                assert any(a["code"] == "identity_mismatch" and a["severity"] == "critical"
                           for a in status["alarms"])
                # Not re-learned: adopting it under the old identity is refused.
                with pytest.raises(ClientError) as refused:
                    await client.call("adopt", id=dev_id, body={"reason": "try"})
                assert refused.value.status == 409 and "TD8-0099" in str(refused.value)
                # The genuine controller is put back: it answers as adopted again.
                await asyncio.to_thread(swapped.stop)
                swapped = None
                sim = CabinetSimulator(lib.get("boltline-td8"), "TD8-0003", transport="rtu",
                                       link=link)
                await asyncio.to_thread(sim.start)
                await wait_device(client, dev_id, timeout=20)
                status = await client.call("status")
                assert not any(a["code"] == "identity_mismatch" for a in status["alarms"])
        finally:
            await asyncio.to_thread(sim.stop)
            if swapped is not None:
                await asyncio.to_thread(swapped.stop)

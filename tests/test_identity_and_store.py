"""Devices are keyed by hardware identity, the registry is written only on change and
atomically, and a corrupt registry is moved aside with an alarm, never reset silently."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from helpers import site_toml
from serial.tools.list_ports_common import ListPortInfo

from edge_agent.contract import UsbMatcher
from edge_agent.discovery.serialports import matching, usb_ports
from edge_agent.testing import running_agent, wait_device, wait_until


async def test_renamed_port_keeps_device_identity(kerong_bus, tmp_path: Path) -> None:
    _sim, pty = kerong_bus({2: 0})
    first, second = tmp_path / "ttyUSB0", tmp_path / "ttyUSB3"
    os.symlink(pty.port, first)
    state = tmp_path / "state"
    async with running_agent(site_toml({"bank": str(first)}), state) as (_agent, client):
        first_seen = (await wait_device(client, "kerong:bank:2",
                                        lambda d: d["compartments"]))["first_seen"]
    os.rename(first, second)  # the kernel renumbered the adapter after a reboot
    async with running_agent(site_toml({"bank": str(second)}), state) as (_agent, client):
        await wait_device(client, "kerong:bank:2")
        devs = await client.get("/v1/devices")
        assert [d["id"] for d in devs] == ["kerong:bank:2"]
        assert devs[0]["first_seen"] == first_seen
        assert str(second) in devs[0]["address"]


async def test_registry_written_only_on_change_and_parses(kerong_bus, tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0})
    state = tmp_path / "state"
    async with running_agent(site_toml({"bank": pty.port}, poll=0.05), state) as (_agent, client):
        await wait_device(client, "kerong:bank:0", lambda d: d["compartments"])
        registry = state / "registry.json"
        await wait_until(registry.exists)
        await asyncio.sleep(0.5)
        before = registry.stat().st_mtime_ns
        polls = (await client.call("device", id="kerong:bank:0"))["counters"]["polls"]
        await asyncio.sleep(1.0)
        after = (await client.call("device", id="kerong:bank:0"))["counters"]["polls"]
        assert after > polls + 5, (polls, after)
        assert registry.stat().st_mtime_ns == before, "unchanged state was rewritten"
        sim.set_item(0, 5, True)
        await wait_until(lambda: registry.stat().st_mtime_ns != before, what="write on change")
        doc = json.loads(registry.read_text())
        comps = next(iter(doc["compartments"].values()))["compartments"]
        assert comps[5]["item"] == "present"
        assert not list(state.glob(".*.tmp"))


async def test_corrupt_registry_is_moved_aside_with_alarm(kerong_bus, tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0})
    state = tmp_path / "state"
    state.mkdir()
    (state / "registry.json").write_text('{"devices": {"1": {"id": "x"')
    async with running_agent(site_toml({"bank": pty.port}), state) as (_agent, client):
        st = await client.get("/v1/status")
        assert st["health"] == "degraded"
        alarm = st["alarms"][0]
        assert alarm["severity"] == "critical" and "moved aside" in alarm["message"]
        aside = list(state.glob("registry.json.corrupt-*"))
        assert len(aside) == 1 and aside[0].read_text().startswith('{"devices"')
        await wait_device(client, "kerong:bank:0")


def test_usb_ports_matched_by_vid_pid_and_named_by_id(tmp_path: Path) -> None:
    ftdi = ListPortInfo("/dev/ttyUSB0")
    ftdi.vid, ftdi.pid, ftdi.serial_number = 0x0403, 0x6001, "A50285BI"
    other = ListPortInfo("/dev/ttyACM0")
    other.vid, other.pid = 0x2341, 0x0043
    plain = ListPortInfo("/dev/ttyS0")
    by_id = {"/dev/ttyUSB0": "/dev/serial/by-id/usb-FTDI_FT232R_A50285BI-if00-port0"}
    ports = usb_ports([ftdi, other, plain], by_id=by_id)
    assert [p.device for p in ports] == ["/dev/ttyUSB0", "/dev/ttyACM0"]
    assert ports[0].stable == by_id["/dev/ttyUSB0"]
    assert ports[0].bus_id == "usb-0403-6001-A50285BI"
    got = matching(ports, [("kerong", UsbMatcher(0x0403, 0x6001)),
                           ("acme", UsbMatcher(0x0403, 0x6001))])
    assert [(p.device, plugins) for p, plugins in got] == [("/dev/ttyUSB0", ["acme", "kerong"])]

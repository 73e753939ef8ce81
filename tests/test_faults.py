"""Faults stay where they start: garbage and silence on one bus, plugins that raise or
hang. Other devices keep polling on time, and outages are logged once each way."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import site_toml

from edge_agent.api.schema import Device
from edge_agent.client import AgentClient
from edge_agent.contract import (
    Candidate,
    CompartmentState,
    DeviceInfo,
    DeviceState,
    Door,
    DriverContext,
    Item,
    PluginInfo,
)
from edge_agent.hookspecs import hookimpl
from edge_agent.testing import running_agent, wait_device, wait_devices


async def _polls_during(client: AgentClient, dev_id: str, seconds: float) -> int:
    before: Device = await client.call("device", id=dev_id)
    await asyncio.sleep(seconds)
    after: Device = await client.call("device", id=dev_id)
    return after["counters"]["polls"] - before["counters"]["polls"]


async def test_garbage_and_silence_degrade_one_bus_only(kerong_bus, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    caplog.set_level(logging.INFO)
    bad_sim, bad = kerong_bus({0: 0x00FF})
    _good_sim, good = kerong_bus({1: 0x0F00}, tcp=True)
    toml = site_toml({"bad": bad.port, "good": good.port}, poll=0.1)
    async with running_agent(toml, tmp_path / "s") as (_agent, client):
        await wait_devices(client, {"kerong:bad:0", "kerong:good:1"})
        # Garbage before every reply: frames are still found, no exception escapes.
        bad_sim.faults.garbage_rate = 1.0
        polls = await _polls_during(client, "kerong:bad:0", 1.0)
        assert polls >= 3
        assert (await client.call("device", id="kerong:bad:0"))["link"] == "online"
        # Pure garbage, no frames: the board goes silent from the agent's point of view.
        bad_sim.faults.silent = True
        good_polls = await _polls_during(client, "kerong:good:1", 2.0)
        await wait_device(client, "kerong:bad:0", lambda d: d["link"] == "offline",
                          what="to go offline")
        # Other devices kept polling on time (0.1 s interval: ~20 polls in 2 s).
        assert good_polls >= 10, good_polls
        await asyncio.sleep(1.5)  # several reconnect attempts while offline
        bad_sim.faults.silent = False
        bad_sim.faults.garbage_rate = 0.0
        await wait_device(client, "kerong:bad:0", timeout=10, what="to be back online")
        assert (await client.call("device", id="kerong:good:1"))["link"] == "online"
        st = await client.get("/v1/status")
        assert st["devices"]["online"] == 2
    msgs = [r.getMessage() for r in caplog.records if "kerong:bad:0" in r.getMessage()]
    went_down = [m for m in msgs if " degraded:" in m or " offline:" in m]
    came_back = [m for m in msgs if "recovered after" in m]
    # Logged once when the outage began (degraded, then offline) and once on recovery:
    # no line per failed poll or reconnect attempt.
    assert 1 <= len(went_down) <= 2, msgs
    assert len(came_back) == 1, msgs


# --------------------------------------------------------------------- bad plugins


class _Driver:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def connect(self) -> DeviceInfo:
        return DeviceInfo(vendor="Test", model="T1", compartments=1)

    async def read_state(self) -> DeviceState:
        if self.mode == "raise":
            raise RuntimeError("driver bug")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return DeviceState((CompartmentState(1, Door.CLOSED, Item.PRESENT),))

    async def unlock(self, compartment: int) -> DeviceState:
        return await self.read_state()

    async def identify(self) -> None:
        return None

    async def close(self) -> None:
        return None


def make_plugin(name: str, mode: str) -> Any:
    class Plugin:
        @hookimpl
        def edge_agent_plugin_info(self) -> PluginInfo:
            return PluginInfo(name=name, vendor="Test", version="0", contract="1.0")

        @hookimpl
        def edge_agent_create_driver(self, candidate: Candidate, context: DriverContext
                                     ) -> Any:
            if mode == "hook-hang":
                time.sleep(3)  # blocks its worker thread, never the event loop
            if mode == "hook-raise":
                raise ValueError("cannot build driver")
            return _Driver(mode)

    return Plugin()


async def test_plugins_that_raise_or_hang_do_not_stall_others(kerong_bus, tmp_path: Path
                                                              ) -> None:
    _sim, pty = kerong_bus({0: 1})
    devices = "".join(
        f'[[devices]]\nplugin = "{m}"\nidentity = "{m}:1"\naddress = "test"\n'
        for m in ("raise", "hang", "hook-raise", "hook-hang")
    )
    toml = site_toml({"a": pty.port}, poll=0.1,
                     extra=devices + "[plugins]\nhook_timeout = 0.5\n")
    plugins = {m: make_plugin(m, m) for m in ("raise", "hang", "hook-raise", "hook-hang")}
    started = time.monotonic()
    async with running_agent(toml, tmp_path / "s", extra_plugins=plugins) as (_agent, client):
        await wait_device(client, "kerong:a:0")
        polls = await _polls_during(client, "kerong:a:0", 2.0)
        assert polls >= 10, polls
        await wait_device(client, "raise:1", lambda d: d["link"] == "offline")
        await wait_device(client, "hang:1", lambda d: d["link"] in ("degraded", "offline"))
        assert "cannot build driver" in (await client.call("device", id="hook-raise:1"))["error"]
        assert "did not return in time" in (
            await client.call("device", id="hook-hang:1"))["error"]
        plugins_json = {p["name"]: p for p in await client.get("/v1/plugins")}
        assert plugins_json["hook-hang"]["status"] == "isolated"
        assert "hung" in plugins_json["hook-hang"]["reason"]
        assert plugins_json["raise"]["faults"] >= 1
        assert "RuntimeError" in plugins_json["raise"]["last_fault"]
        assert plugins_json["kerong"]["status"] == "loaded"
    assert time.monotonic() - started < 30


async def test_a_wrong_hook_polarity_is_an_alarm_that_names_the_setting(kerong_bus,
                                                                        tmp_path: Path) -> None:
    """Boards that read HOOK 0 as closed, a site config that says 1: every door reads open
    and the audit trail would be inverted silently (issue 13 item 12)."""
    _sim, pty = kerong_bus({0: 0xFFFF}, hook_closed_bit=0, pace=False)
    async with running_agent(site_toml({"Bank-1": pty.port}), tmp_path / "s") as (_agent,
                                                                                  client):
        dev = "kerong:Bank-1:0"
        await wait_device(client, dev, lambda d: d["compartments"])
        status = await wait_until_alarm(client)
        assert status["health"] == "degraded"
        msg = next(a["message"] for a in status["alarms"] if a.get("code") == "hook_polarity")
        assert msg.startswith(f"{dev}: all 16 doors read open")
        assert "hook_closed_bit = 1" in msg and "try 0" in msg


async def wait_until_alarm(client) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(100):
        status = await client.get("/v1/status")
        if any(a.get("code") == "hook_polarity" for a in status["alarms"]):
            return status  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no hook_polarity alarm: {status['alarms']}")

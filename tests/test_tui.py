"""The technician dashboard, headless with Textual's pilot, against a real agent with
simulated hardware on a real Unix socket."""

from __future__ import annotations

import getpass
import io
from pathlib import Path
from typing import Any

from helpers import site_toml
from rich.console import Console
from textual.widgets import DataTable, Static

from edge_agent.testing import running_agent, wait_device, wait_devices, wait_event, wait_until
from tui.app import Dashboard
from tui.screens import (
    DeviceScreen,
    DevicesScreen,
    DiagnosticsScreen,
    EventsScreen,
    InboxScreen,
    OverviewScreen,
    PluginsScreen,
)
from tui.vtable import VirtualTable

SIZE = (80, 24)


async def settle(pilot: Any, cond: Any, what: str = "condition", tries: int = 100) -> None:
    for _ in range(tries):
        await pilot.pause(0.05)
        if cond():
            return
    raise AssertionError(f"dashboard never showed {what}; screen: {pilot.app.screen!r}")


def text_of(app: Dashboard, selector: str) -> str:
    """What a Static shows, as plain text (it may hold a Rich table)."""
    console = Console(width=200, record=True, color_system=None, file=io.StringIO())
    console.print(app.screen.query_one(selector, Static).content)
    return console.export_text()


async def started(kerong_bus: Any, tmp_path: Path, extra: str = "") -> Any:
    sim, pty = kerong_bus({0: 0x0001, 1: 0})
    return sim, running_agent(site_toml({"bank": pty.port}, extra=extra), tmp_path / "s")


async def test_overview_devices_detail_and_live_compartment(kerong_bus, tmp_path: Path
                                                            ) -> None:
    sim, ctx = await started(kerong_bus, tmp_path)
    async with ctx as (agent, client):
        await wait_devices(client, {"kerong:bank:0", "kerong:bank:1"},
                           lambda d: d["compartments"])
        app = Dashboard(str(agent.socket_path))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, lambda: "online 2" in text_of(app, "#summary"), "counts")
            assert isinstance(app.screen, OverviewScreen)
            # The link bar says "connected" once the whole snapshot is in (a tick later).
            await settle(pilot, lambda: "site test-site" in text_of(app, "#linkbar"),
                         "link bar")
            await pilot.press("d")
            assert isinstance(app.screen, DevicesScreen)
            table = app.screen.query_one("#devices", VirtualTable)
            await settle(pilot, lambda: table.row_count == 2, "two device rows")
            assert str(table.get_row("kerong:bank:0")[1]).endswith("online")
            await pilot.press("enter")
            assert isinstance(app.screen, DeviceScreen)
            await settle(pilot, lambda: " 1 locked item" in text_of(app, "#grid"),
                         "grid: " + text_of(app, "#grid"))
            sim.set_door(0, 0, closed=False)  # the simulator opens door 1
            await settle(pilot, lambda: " 1 OPEN item" in text_of(app, "#grid"),
                         "door 1 open")
            await pilot.press("escape")
            assert isinstance(app.screen, DevicesScreen)
            await pilot.press("slash")
            await pilot.press(*"bank:1", "enter")
            await settle(pilot, lambda: table.row_count == 1, "filtered to one row")
            await pilot.press("escape")  # clears the filter first (issue 13), stays here
            await settle(pilot, lambda: table.row_count == 2, "the filter cleared")
            assert isinstance(app.screen, DevicesScreen)
            await pilot.press("escape", "e")
            assert isinstance(app.screen, EventsScreen)
            events = app.screen.query_one("#events", DataTable)
            await settle(pilot, lambda: events.row_count > 0, "events")
            await pilot.press("escape", "p")
            assert isinstance(app.screen, PluginsScreen)
            plugins = app.screen.query_one("#plugins", DataTable)
            await settle(pilot, lambda: plugins.row_count >= 1, "plugins")
            assert str(plugins.get_row("kerong")[1]) == "loaded"


async def test_unlock_from_dashboard_is_audited_with_user_and_reason(kerong_bus,
                                                                    tmp_path: Path) -> None:
    sim, ctx = await started(kerong_bus, tmp_path)
    async with ctx as (agent, client):
        await wait_device(client, "kerong:bank:1")
        app = Dashboard(str(agent.socket_path))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, lambda: "kerong:bank:1" in app.model.devices, "device")
            app.open_device("kerong:bank:1")
            await pilot.pause(0.1)
            await pilot.press("u")
            await pilot.press("1", "2", "enter")
            await pilot.press(*"spare battery", "enter")
            await wait_until(lambda: sim.unlocks == [(1, 11)], what="unlock on the wire")
            rec = await wait_event(client, action="unlock")
            assert rec["actor"] == getpass.getuser()
            assert rec["reason"] == "spare battery" and rec["compartment"] == 12


async def test_read_only_offers_no_action(kerong_bus, tmp_path: Path) -> None:
    sim, ctx = await started(kerong_bus, tmp_path)
    async with ctx as (agent, client):
        await wait_device(client, "kerong:bank:0")
        app = Dashboard(str(agent.socket_path), read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, lambda: "kerong:bank:0" in app.model.devices, "device")
            app.open_device("kerong:bank:0")
            await pilot.pause(0.2)
            assert "READ-ONLY" in text_of(app, "#linkbar")
            shown = {b.binding.key for b in app.active_bindings.values()
                     if b.enabled and b.binding.show}
            assert "u" not in shown and "o" not in shown and "i" not in shown, shown
            assert "g" in shown  # diagnostics stays available
            await pilot.press("u")
            await pilot.pause(0.2)
            assert isinstance(app.screen, DeviceScreen)  # no prompt opened
        assert sim.unlocks == []


async def test_inbox_adopt_and_persistent_ignore(kerong_bus, tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0, 1: 0})
    toml = site_toml({"bank": pty.port}).replace(
        "probe_interval = 2.0", "probe_interval = 2.0\nauto_adopt = false")
    state = tmp_path / "s"
    async with running_agent(toml, state) as (agent, client):
        await wait_devices(client, {"kerong:bank:0", "kerong:bank:1"}, lambda d: True)
        app = Dashboard(str(agent.socket_path))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, lambda: len(app.model.inbox) == 2, "two inbox entries",
                         tries=100)
            await pilot.press("i")
            assert isinstance(app.screen, InboxScreen)
            table = app.screen.query_one("#inbox", DataTable)
            await settle(pilot, lambda: table.row_count == 2, "inbox rows")
            await pilot.press("a", *"new bank", "enter")
            await wait_device(client, "kerong:bank:0", what="adopted device supervised")
            await settle(pilot, lambda: table.row_count == 1, "one left", tries=100)
            await pilot.press("x", *"spare board, not in use", "enter")
            await wait_device(client, "kerong:bank:1", lambda d: d["ignored"] is not None,
                              what="to be ignored")
    async with running_agent(toml, state) as (agent, client):
        await wait_device(client, "kerong:bank:0")
        spare = await wait_device(client, "kerong:bank:1", lambda d: True)
        assert spare["ignored"] == "spare board, not in use"
        assert spare["link"] == "ignored"  # not supervised: never polled
        assert await client.get("/v1/inbox") == []


async def test_diagnostics_shows_decoded_frames(kerong_bus, tmp_path: Path) -> None:
    sim, ctx = await started(kerong_bus, tmp_path)
    async with ctx as (agent, client):
        await wait_device(client, "kerong:bank:0")
        app = Dashboard(str(agent.socket_path))
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, lambda: app.model.connected, "link")
            await pilot.press("colon", *"diag kerong:bank:0", "enter")
            assert isinstance(app.screen, DiagnosticsScreen)
            wire = app.screen.query_one("#wire", DataTable)
            await settle(pilot, lambda: wire.row_count > 2, "wire frames", tries=100)
            decoded = [str(wire.get_cell(k.value, "decoded")) for k in wire.rows]
            assert any(x.startswith("status? board 0") for x in decoded)
            assert any(x.startswith("status reply board 0") for x in decoded)
            assert "19200 8N1" in text_of(app, "#diag-head")
            assert "garbage bytes 0" in text_of(app, "#counters")
            sim.faults.garbage_rate = 1.0  # noise before every reply from now on
            await settle(pilot, lambda: "garbage bytes 0" not in text_of(app, "#counters")
                         and "garbage bytes -" not in text_of(app, "#counters"),
                         "garbage counted", tries=100)


async def test_agent_restart_while_dashboard_open(kerong_bus, tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0})
    toml = site_toml({"bank": pty.port})
    state = tmp_path / "s"
    from edge_agent.testing import short_tempdir

    with short_tempdir() as d:
        sock = d / "agent.sock"
        from edge_agent.agent import Agent
        from edge_agent.config import parse_site_config

        async def start() -> Agent:
            a = Agent(parse_site_config(toml), state_dir=state, socket_path=sock)
            await a.start()
            return a

        agent = await start()
        app = Dashboard(str(sock))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, lambda: app.model.connected, "connected")
            await agent.stop()
            await settle(pilot, lambda: "LINK TO AGENT LOST" in text_of(app, "#linkbar"),
                         "link lost")
            agent = await start()
            try:
                await settle(pilot, lambda: "site test-site" in text_of(app, "#linkbar"),
                             "reconnected", tries=200)
            finally:
                await agent.stop()


async def test_bus_doctor_from_the_dashboard_borrows_scans_and_gives_back(
        kerong_bus, tmp_path: Path) -> None:
    """Issue 14: the scan as a dashboard screen (b from the overview). Enter on a bus,
    a reason, and the agent lends the bus (audited) for `edge-agent scan`; the boards
    found are listed and the bus comes back to the agent, its boards online again."""
    _sim, ctx = await started(kerong_bus, tmp_path)
    async with ctx as (agent, client):
        await wait_devices(client, ["kerong:bank:0", "kerong:bank:1"])
        app = Dashboard(str(agent.socket_path))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, lambda: app.model.status is not None, "status")
            await pilot.press("b")
            await settle(pilot, lambda: app.screen.query("#scan-buses")
                         and app.screen.query_one("#scan-buses").row_count == 1, "the bus")
            await pilot.press("enter")
            await pilot.press(*"bank B dead", "enter")
            try:
                await settle(pilot, lambda: app.screen.query_one("#scan-results").row_count,
                             "scan results", tries=1200)
            finally:
                print("SCAN STATE:", text_of(app, "#scan-state"))
            assert "2 board(s) answer at 19200 8N1 to kerong" in text_of(app, "#scan-state")
        lent = await wait_event(client, action="bus_lent")
        assert lent["reason"] == "bank B dead"
        await wait_event(client, action="bus_returned")
        await wait_devices(client, ["kerong:bank:0", "kerong:bank:1"],
                           lambda d: d["link"] == "online", timeout=20)


async def test_support_bundle_from_the_dashboard(kerong_bus, tmp_path: Path,
                                                 monkeypatch: Any) -> None:
    """Issue 14: B on the overview writes `edge-agent bundle` to the current directory
    and says where."""
    import tarfile

    _sim, ctx = await started(kerong_bus, tmp_path)
    monkeypatch.chdir(tmp_path)
    async with ctx as (agent, client):
        await wait_device(client, "kerong:bank:1")
        app = Dashboard(str(agent.socket_path))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, lambda: app.model.connected, "the link")
            await pilot.press("B")
            await settle(pilot, lambda: list(tmp_path.glob("edge-agent-bundle-*.tar.gz"))
                         and any("written" in str(n.message)
                                 for n in app._notifications), "the bundle", tries=600)
    bundle = next(tmp_path.glob("edge-agent-bundle-*.tar.gz"))
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert "edge-agent-bundle/devices.json" in names and any("wire/" in n for n in names)

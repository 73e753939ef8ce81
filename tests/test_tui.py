"""The first dashboard: wire to screen, headless with Textual's pilot, against a real
agent with simulated hardware on a real socket."""

from __future__ import annotations

from pathlib import Path

from helpers import site_toml
from textual.widgets import DataTable, Static

from edge_agent.testing import running_agent, wait_until
from tui.app import DashboardApp


async def test_dashboard_shows_devices_and_follows_compartment_changes(kerong_bus,
                                                                      tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0x0001, 1: 0})
    async with running_agent(site_toml({"bank": pty.port}), tmp_path / "s") as (agent, _c):
        await wait_until(lambda: len(agent.devices) == 2 and all(
            d.compartments for d in agent.devices.values()))
        app = DashboardApp(str(agent.socket_path), flush_interval=0.05)
        async with app.run_test(size=(120, 30)) as pilot:
            table = app.query_one("#devices", DataTable)

            async def rows() -> int:
                await pilot.pause(0.05)
                return table.row_count

            for _ in range(100):
                if await rows() == 2:
                    break
            assert table.row_count == 2
            assert "site test-site" in str(app.query_one("#link", Static).render())
            row = table.get_row("kerong:bank:0")
            assert row[0] == "kerong:bank:0" and str(row[3]) == "online"
            comps = app.query_one("#compartments", DataTable)
            assert str(comps.get_cell("1", "item")) == "present"
            assert str(comps.get_cell("1", "door")) == "closed"
            # The simulator opens door 1 of board 0: the grid follows.
            sim.set_door(0, 0, closed=False)
            for _ in range(100):
                await pilot.pause(0.05)
                if str(comps.get_cell("1", "door")) == "OPEN":
                    break
            assert str(comps.get_cell("1", "door")) == "OPEN"

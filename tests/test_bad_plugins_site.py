"""A site with three bad plugins installed beside the good ones: one written for an
incompatible contract, one that fails to import, one that raises in every hook. The agent
refuses or contains each with a reason the technician reads from ``edge-agent plugins``
(the CLI, against the running agent), and the Kerong boards keep being polled."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import site_toml

from edge_agent.testing import running_agent, wait_device, wait_devices

ANGRY = """
    from edge_agent.contract import PluginInfo
    from edge_agent.hookspecs import hookimpl

    def _boom(hook):
        raise RuntimeError(f"angry plugin fails in {hook}")

    @hookimpl
    def edge_agent_plugin_info():
        return PluginInfo(name="angry", vendor="Angry", version="0.1", contract="1.1")
    @hookimpl
    def edge_agent_bus_probes():
        _boom("bus_probes")
    @hookimpl
    def edge_agent_usb_matchers():
        _boom("usb_matchers")
    @hookimpl
    def edge_agent_mdns_matchers():
        _boom("mdns_matchers")
    @hookimpl
    def edge_agent_mdns_candidate(service):
        _boom("mdns_candidate")
    @hookimpl
    def edge_agent_create_driver(candidate, context):
        _boom("create_driver")
    @hookimpl
    def edge_agent_settings_schema():
        _boom("settings_schema")
    @hookimpl
    def edge_agent_simulator(options):
        _boom("simulator")
    @hookimpl
    def edge_agent_describe_wire(chunks):
        _boom("describe_wire")
"""
OLD = """
    from edge_agent.contract import PluginInfo
    from edge_agent.hookspecs import hookimpl
    @hookimpl
    def edge_agent_plugin_info():
        return PluginInfo(name="old", vendor="Old", version="0.9", contract="0.3")
"""


def _dist(where: Path) -> None:
    (where / "angry_plugin.py").write_text(textwrap.dedent(ANGRY))
    (where / "old_plugin.py").write_text(textwrap.dedent(OLD))
    (where / "noimport_plugin.py").write_text("raise ImportError('libacme.so not found')\n")
    info = where / "edge_agent_badplugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edge-agent-badplugins\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[edge_agent.plugins]\nangry = angry_plugin\nold = old_plugin\n"
        "noimport = noimport_plugin\n")


async def test_bad_plugins_refused_or_contained_rest_of_site_works(
        kerong_bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dist(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sim, pty = kerong_bus({0: 0x00FF, 2: 0x0F0F})
    extra = ('[[devices]]\nplugin = "angry"\nidentity = "angry:1"\naddress = "x"\n'
             "[discovery.serial]\nusb_autodetect = true\n")
    async with running_agent(site_toml({"bank": pty.port}, poll=0.1, extra=extra),
                             tmp_path / "state") as (agent, client):
        await wait_devices(client, {"kerong:bank:0", "kerong:bank:2"},
                           lambda d: d["link"] == "online" and d["compartments"])
        sim.set_door(2, 5, closed=False)
        await wait_device(client, "kerong:bank:2",
                          lambda d: d["compartments"][5]["door"] == "open",
                          what="to be followed still")
        r = await client.post("/v1/devices/kerong:bank:0/unlock",
                              {"compartment": 3, "reason": "still works"})
        assert r["state"] is not None and (0, 2) in sim.unlocks
        cli = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "edge_agent.cli", "plugins", "--json",
                             "--socket", str(agent.socket_path)],
            capture_output=True, text=True, timeout=60)
        table = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "edge_agent.cli", "plugins",
                             "--socket", str(agent.socket_path)],
            capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    got = {p["name"]: p for p in json.loads(cli.stdout)}
    assert got["old"]["status"] == "refused"
    assert "written for contract 0.3" in got["old"]["reason"]
    assert got["noimport"]["status"] == "refused"
    assert "libacme.so not found" in got["noimport"]["reason"]
    angry = got["angry"]
    assert angry["faults"] >= 3, angry
    assert "angry plugin fails in" in angry["last_fault"]
    assert got["kerong"]["status"] == "loaded" and got["kerong"]["faults"] == 0
    # The table a technician reads says the same, one line per plugin.
    lines = {ln.split()[0]: ln for ln in table.stdout.splitlines()[1:] if ln.strip()}
    assert "refused" in lines["old"] and "contract 0.3" in lines["old"]
    assert "libacme.so" in lines["noimport"]
    assert "fault" in lines["angry"] and "angry plugin fails in" in lines["angry"]

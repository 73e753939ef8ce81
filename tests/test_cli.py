"""Client commands against a running agent, run as real processes; exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from helpers import site_toml

from edge_agent.testing import running_agent, short_tempdir, wait_device, wait_until

ROOT = Path(__file__).resolve().parent.parent


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent.cli", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_client_commands(kerong_bus, tmp_path: Path) -> None:
    sim, pty = kerong_bus({4: 0x0010})
    async with running_agent(site_toml({"bank": pty.port}), tmp_path / "s") as (agent, client):
        await wait_device(client, "kerong:bank:4", lambda d: d["compartments"])
        sock = str(agent.socket_path)
        code, out, _ = await cli("devices", "--socket", sock)
        assert code == 0 and "kerong:bank:4" in out and "online" in out
        code, out, _ = await cli("devices", "--socket", sock, "--json")
        assert code == 0 and json.loads(out)[0]["compartments"][4]["item"] == "present"
        code, out, _ = await cli("status", "--socket", sock)
        assert code == 0 and "test-site" in out and "online 1" in out
        code, out, _ = await cli("plugins", "--socket", sock)
        assert code == 0 and "kerong" in out and "loaded" in out
        code, out, err = await cli("unlock", "kerong:bank:4", "3", "--reason", "spare radio",
                                   "--socket", sock)
        assert code == 0, err
        assert "unlocked kerong:bank:4 compartment 3" in out
        assert sim.unlocks == [(4, 2)]
        code, out, _ = await cli("events", "--socket", sock, "--type", "unlock", "--json")
        ev = json.loads(out)
        assert code == 0 and ev[-1]["reason"] == "spare radio" and ev[-1]["compartment"] == 3
        code, out, _ = await cli("events", "--socket", sock, "--device", "kerong:bank:4")
        assert code == 0 and "unlock kerong:bank:4/3" in out
        # Runtime failure: the device drops off the bus -> exit 1 with what to do.
        sim.drop_board(4)
        await wait_device(client, "kerong:bank:4", lambda d: d["link"] == "offline", timeout=10)
        code, _, err = await cli("unlock", "kerong:bank:4", "3", "--reason", "x",
                                 "--socket", sock)
        assert code == 1 and "offline" in err


async def test_unreachable_agent_and_usage_errors() -> None:
    with short_tempdir() as d:
        code, _, err = await cli("devices", "--socket", str(d / "none.sock"))
        assert code == 1
        assert "cannot reach the agent" in err and "--socket" in err
    code, _, err = await cli("unlock", "x")
    assert code == 2 and "usage" in err
    code, _, err = await cli("run", "--site", "/nonexistent/site.toml")
    assert code == 2 and "no such file" in err


async def test_demo_headless_json() -> None:
    """The demo site: Kerong boards on a pty bus and a TCP bridge, a REST gateway and both
    cabinet models found by mDNS (loopback only), every one online with its compartments."""
    code, out, err = await cli("demo", "--headless", "--seconds", "6", "--json")
    assert code == 0, err
    demo = json.loads(out)
    got = {d["id"]: (d["link"], len(d["compartments"]), d["source"]) for d in demo["devices"]}
    kerong = {f"kerong:{b}:{n}": ("online", 16, "bus-probe")
              for b, n in (("locker-bank-a", 0), ("locker-bank-a", 1), ("locker-bank-a", 2),
                           ("locker-bank-b", 0), ("locker-bank-b", 1), ("station-bus", 0),
                           ("station-bus", 1))}
    readers = {f"osdp:RDR-0000000{n}": ("online", 0, "static") for n in (1, 2)}
    assert got == {**kerong, **readers, "gateway:GW-DEMO-01": ("online", 12, "mdns"),
                   "armoury:WC12-DEMO-1": ("online", 12, "mdns"),
                   "armoury:TD8-DEMO-2": ("online", 8, "mdns")}
    assert any(d["address"].startswith("socket://127.0.0.1:") for d in demo["devices"])


async def test_events_follow_applies_type_and_output_needs_a_format(kerong_bus,
                                                                    tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    toml = site_toml({"Bank-1": pty.port})
    async with running_agent(toml, tmp_path / "s") as (agent, client):
        dev = "kerong:Bank-1:0"
        await wait_device(client, dev)
        sock = str(agent.socket_path)
        follow = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge_agent.cli", "events", "-f", "--type", "door_opened",
            "--json", "--socket", sock, stdout=asyncio.subprocess.PIPE)
        await asyncio.sleep(1.0)
        await client.post(f"/v1/devices/{dev}/unlock", {"compartment": 3, "reason": "f"})
        await asyncio.to_thread(sim.set_door, 0, 8, False)
        await wait_device(client, dev, lambda d: d["compartments"][8]["door"] == "open")
        await asyncio.sleep(0.5)
        follow.terminate()
        out, _ = await follow.communicate()
        actions = [json.loads(line)["action"] for line in out.decode().splitlines()]
        assert actions and set(actions) == {"door_opened"}, actions
        csv_out = tmp_path / "out.csv"
        code, _, err = await cli("events", "--socket", sock, "--output", str(csv_out))
        assert code == 0 and csv_out.read_text().startswith("seq,ts,actor,action")
        code, out_text, err = await cli("events", "--socket", sock, "--output",
                                        str(tmp_path / "out.txt"))
        assert code == 2 and "--format" in err and out_text == ""


async def test_decisions_from_the_shell_like_the_dashboard(kerong_bus, tmp_path: Path) -> None:
    """adopt, out-of-service, return-to-service, identify and ignore as commands: each
    through the API, audited with the caller and the reason."""
    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    toml = site_toml({"Bank-1": pty.port}).replace("[agent]\n", "[agent]\nauto_adopt = false\n")
    async with running_agent(toml, tmp_path / "s") as (agent, client):
        dev = "kerong:Bank-1:0"
        await wait_device(client, dev, lambda d: True)
        sock = str(agent.socket_path)
        code, out, err = await cli("adopt", dev, "--reason", "label checked", "--socket", sock)
        assert code == 0 and f"adopted {dev}" in out, err
        await wait_device(client, dev)
        code, out, err = await cli("out-of-service", dev, "3", "--reason", "broken hinge",
                                   "--socket", sock)
        assert code == 0 and "out of service" in out, err
        code, _, err = await cli("unlock", dev, "3", "--reason", "try", "--socket", sock)
        assert code == 1 and "out of service" in err
        code, out, err = await cli("return-to-service", dev, "3", "--reason", "fixed",
                                   "--socket", sock)
        assert code == 0 and "back in service" in out, err
        code, _, err = await cli("unlock", dev, "3", "--reason", "works", "--socket", sock)
        assert code == 0, err
        code, out, _ = await cli("identify", dev, "--socket", sock, "--json")
        assert code == 1 and json.loads(out)["error"] == "unsupported"
        code, out, err = await cli("ignore", dev, "--reason", "not ours", "--socket", sock)
        assert code == 0 and f"ignored {dev}" in out, err
        events = await client.get("/v1/events", device=dev, limit=1000)
        said = [(e["action"], e["reason"]) for e in events if e["actor"] != dev
                and e["action"] in ("device_adopted", "out_of_service", "back_in_service",
                                    "discovery_ignored")]
        assert said == [("device_adopted", "label checked"), ("out_of_service", "broken hinge"),
                        ("back_in_service", "fixed"), ("discovery_ignored", "not ours")]


def test_one_shot_commands_import_no_framework() -> None:
    """A one-shot command answers like a native tool: importing the CLI entry point pulls
    in neither aiohttp, pydantic (the config models), asyncio, the plugin host nor the
    store; only the commands that need them import them. Nor http.client, which brings
    the email package and ssl: the one-shot client speaks HTTP/1.1 itself."""
    import subprocess

    heavy = ["aiohttp", "pydantic", "edge_agent.config", "asyncio", "pluggy", "tinydb",
             "edge_agent.plugins", "edge_agent.store.audit", "textual", "zeroconf",
             "http.client", "email", "ssl"]
    code = ("import sys, edge_agent.cli\n"
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "", f"importing edge_agent.cli pulled in: {out}"


async def test_cli_says_what_is_wrong_and_what_to_do(kerong_bus, tmp_path: Path) -> None:
    """Issue 13's CLI wording: a compartment out of range exits 2 like compartment 0; an
    unknown device is named once, with the closest one; `events` with an unknown device
    or type says so (not silence and exit 0); a device waiting in the inbox says how to
    adopt it, and `edge-agent inbox` lists the ids; health says why it is degraded."""
    sim, pty = kerong_bus({0: 0, 1: 0}, pace=False)
    toml = site_toml({"Bank-1": pty.port}).replace(
        "[agent]\n", '[agent]\nauto_adopt = false\n')
    async with running_agent(toml, tmp_path / "s") as (agent, client):
        sock = ("--socket", str(agent.socket_path))
        await wait_device(client, "kerong:Bank-1:1", lambda d: True)
        code, out, err = await cli("inbox", *sock)
        assert code == 0 and "kerong:Bank-1:0" in out and "edge-agent adopt ITEM" in out, err
        code, _, err = await cli("unlock", "kerong:Bank-1:1", "2", "--reason", "x", *sock)
        assert code == 1 and "waiting in the inbox" in err \
            and "edge-agent adopt kerong:Bank-1:1" in err, err
        await cli("adopt", "kerong:Bank-1:1", "--reason", "label checked", *sock)
        await wait_device(client, "kerong:Bank-1:1")
        code, _, err = await cli("unlock", "kerong:Bank-1:1", "99", "--reason", "x", *sock)
        assert code == 2 and "compartments are 1-16" in err, err
        code, _, err = await cli("unlock", "kerong:Bank-1:1", "0", "--reason", "x", *sock)
        assert code == 2, err
        code, _, err = await cli("unlock", "Kerong:bank-1:1", "2", "--reason", "x", *sock)
        assert code == 2 and err.count("edge-agent devices") <= 1, err
        assert "did you mean 'kerong:Bank-1:1'" in err, err
        code, out, err = await cli("events", "--device", "KERONG:Bank-1:1", *sock)
        assert code == 1 and out == "" and "did you mean 'kerong:Bank-1:1'" in err, err
        code, out, err = await cli("events", "--type", "unlok", *sock)
        assert code == 2 and "did you mean unlock" in err, err
        code, out, err = await cli("events", "--type", "door_closed", "--device",
                                   "kerong:Bank-1:1", *sock)
        assert code == 0 and out == "" and "no events match" in err, err
        for lock in range(16):  # every door open, none unlocked: a critical alarm
            sim.set_door(1, lock, False)
        await wait_until(lambda: agent.status()["health"] == "degraded", timeout=10)
        code, out, err = await cli("status", *sock)
        assert code == 0 and "health   degraded: 1 critical alarm: kerong:Bank-1:1" in out, out

"""Custody end to end: officers badge at OSDP readers (libosdp's own peripheral device on a
pty, secure channel on) in front of Kerong lockers (simulated boards on a pty); the agent
decides from the signed entitlements on the box and audits every step. Observed the way a
site sees it: the reader's LED, the boards, the API and the audit trail."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from edge_agent_osdp.simulator import ReaderSimulator
from helpers import as_other_user, site_toml

from edge_agent import entitlements as ent
from edge_agent.api import schema
from edge_agent.client import AgentClient
from edge_agent.errors import ClientError
from edge_agent.testing import adopt, running_agent, wait_device, wait_event, wait_until

LOCKERS = "kerong:Bank-1:0"  # radios 1-8 (keypad 1), phones 9-12 (keypad 2)
ARMOURY = "kerong:Bank-1:3"  # tasers 1-4
ALICE, BOB, CAROL = "A1B2C3D4", "B0B0B0B0", "CA201001"  # card numbers (hex)
TODAY = dt.date.today()


def officers_csv(path: Path) -> Path:
    later = (TODAY + dt.timedelta(days=300)).isoformat()
    path.write_text(
        "officer_id,name,roles,badges,qualifications\n"
        f"PC-1001,Alice Ames,officer,{ALICE},taser:{later}\n"
        f"PC-1002,Bob Bell,officer,{BOB},taser:2020-01-31\n"
        f"ARM-7,Carol Cole,officer;armourer,{CAROL},\n", encoding="utf-8")
    return path


class Site:
    def __init__(self, tmp: Path, kerong_bus: Any) -> None:
        self.tmp = tmp
        self.keys = tmp / "keys"
        priv, pub, _ = ent.keygen(self.keys)
        self.pub = pub
        self.snapshot = ent.sign(ent.load_private(priv), ent.parse_records(
            officers_csv(tmp / "officers.csv"), ent.load_badge_key(self.keys / "badge.key")),
            valid_hours=12)
        self.bus, self.pty = kerong_bus({0: 0x0FFF, 3: 0x000F}, pace=False, auto_close_s=60.0)
        self.readers: dict[str, ReaderSimulator] = {}
        for n, name in ((1, "lockers"), (2, "armoury")):
            sim = ReaderSimulator(str(tmp / f"ttyRDR{n}"), pd_address=100 + n,
                                  serial_number=n, key=os.urandom(16),
                                  key_file=str(self.keys / f"rdr-{n}.key"))
            sim.start()
            self.readers[name] = sim

    def toml(self) -> str:
        extra = f"""
[entitlements]
trusted_keys = ["{self.pub}"]
badge_key = "{self.keys / 'badge.key'}"

[custody]
second_person_s = 5
take_s = 20

[[devices]]
plugin = "osdp"
identity = "osdp:RDR-00000001"
address = "{self.tmp / 'ttyRDR1'}"
properties = {{ pd_address = 101, key_file = "{self.keys / 'rdr-1.key'}" }}

[[devices]]
plugin = "osdp"
identity = "osdp:RDR-00000002"
address = "{self.tmp / 'ttyRDR2'}"
properties = {{ pd_address = 102, key_file = "{self.keys / 'rdr-2.key'}" }}

[[stations]]
id = "Locker-Station"
reader = "osdp:RDR-00000001"
slots = [{{ device = "{LOCKERS}", compartments = "1-8", equipment = "radio", keypad = "1" }},
         {{ device = "{LOCKERS}", compartments = "9-12", equipment = "phone", keypad = "2" }}]

[[stations]]
id = "Armoury"
reader = "osdp:RDR-00000002"
slots = [{{ device = "{ARMOURY}", compartments = "1-4", equipment = "taser" }}]

[policy.radio]
due_hours = 10
"""
        return site_toml({"Bank-1": self.pty.port}, extra=extra)

    def stop(self) -> None:
        for sim in self.readers.values():
            sim.stop()


@pytest.fixture
def site(tmp_path: Path, kerong_bus: Any) -> Any:
    s = Site(tmp_path, kerong_bus)
    yield s
    s.stop()


async def ready(client: AgentClient, site: Site) -> None:
    await client.call("entitlements_load", body=site.snapshot)
    await adopt_once(client, ARMOURY)  # a board holding Tasers: never adopted on discovery
    for dev in (LOCKERS, ARMOURY):  # online, with a first reading to compare against
        await wait_device(client, dev, lambda d: d["link"] == "online" and d["compartments"],
                          timeout=15)
    for dev in ("osdp:RDR-00000001", "osdp:RDR-00000002"):
        await wait_device(client, dev, timeout=15)


async def adopt_once(client: AgentClient, device: str) -> None:
    """Adopt ``device`` unless an earlier run of the agent on this state already did."""
    d = await wait_device(client, device, lambda d: True, timeout=15)
    if not d["adopted"]:
        await adopt(client, device)


async def signal(sim: ReaderSimulator, colour: str, before: int) -> None:
    await wait_until(lambda: sim.signals[before:] and sim.signals[-1] == colour, timeout=5,
                     what=f"the reader to show {colour} (shown: {sim.signals[before:]})")


async def badge(sim: ReaderSimulator, card: str, keys: str = "") -> int:
    before = len(sim.signals)
    await asyncio.to_thread(sim.present, card, keys)
    return before


async def test_issue_and_return_a_radio_with_a_card(site: Site, tmp_path: Path) -> None:
    rdr = site.readers["lockers"]
    async with running_agent(site.toml(), tmp_path / "state") as (_agent, client):
        await ready(client, site)
        # An unknown card: red, and the refusal is audited.
        before = await badge(rdr, "DEADBEEF")
        await signal(rdr, "red", before)
        refused = await wait_event(client, action="issue_refused")
        assert refused["reason"] == "unknown card" and refused["actor"] == "card:unknown"

        # Alice chooses radios (keypad 1): compartment 1 opens, the reader goes green.
        before = await badge(rdr, ALICE, keys="1")
        await signal(rdr, "green", before)
        assert site.bus.unlocks == [(0, 0)]
        granted = await wait_event(client, action="issue_granted")
        assert granted["actor"] == "officer:PC-1001" and granted["compartment"] == 1
        assert granted["details"]["equipment"] == "radio"
        # She takes it: custody opens with a due time 10 h on.
        site.bus.set_item(0, 0, False)
        opened = await wait_event(client, action="custody_opened")
        assert opened["details"]["officer"] == "PC-1001"
        assert opened["details"]["due"] == pytest.approx(
            granted["details"]["due"], abs=1)
        site.bus.set_door(0, 0, True)
        # Her own view: what she holds, her qualifications, her last records (no badge).
        me = await client.call("person", id="PC-1001")
        schema.adapter(schema.Person).validate_python(me, strict=True)
        assert [h["equipment"] for h in me["holdings"]] == ["radio"]
        assert me["name"] == "Alice Ames" and me["qualifications"]["taser"]["valid"]
        actions = [e["action"] for e in me["events"]]
        assert actions[0] == "custody_opened" and "issue_granted" in actions
        assert "badges" not in me and ALICE not in str(me)
        for bad, status in (("PC-9999", 404), ("x y", 400)):
            with pytest.raises(ClientError) as exc:
                await client.call("person", id=bad)
            assert exc.value.status == status

        # Badging again at the same station is a return: her compartment opens.
        before = await badge(rdr, ALICE)
        await signal(rdr, "green", before)
        assert site.bus.unlocks[-1] == (0, 0)
        await wait_event(client, action="return_granted")
        site.bus.set_item(0, 0, True)
        closed = await wait_event(client, action="custody_closed")
        assert closed["details"]["holder"] == "PC-1001" and closed["outcome"] == "ok"
        assert closed["reason"] == "returned by the holder"

        # A station issuing two classes without a keypad choice says how to choose.
        before = await badge(rdr, BOB)
        await signal(rdr, "red", before)
        why = await wait_event(client, lambda e: "keypad" in (e.get("reason") or ""),
                               action="issue_refused")
        assert "1 radio, 2 phone" in why["reason"]


async def test_tasers_need_a_valid_qualification_and_a_second_person(site: Site,
                                                                     tmp_path: Path) -> None:
    rdr = site.readers["armoury"]
    async with running_agent(site.toml(), tmp_path / "state") as (_agent, client):
        await ready(client, site)
        before = await badge(rdr, BOB)
        await signal(rdr, "red", before)
        ev = await wait_event(client, lambda e: "expired" in (e.get("reason") or ""),
                              action="issue_refused")
        assert ev["reason"] == "taser qualification expired on 2020-01-31"
        assert ev["actor"] == "officer:PC-1002"

        # Alice is qualified: amber, waiting for a second person; nothing opens yet.
        before = await badge(rdr, ALICE)
        await signal(rdr, "amber", before)
        await wait_event(client, action="issue_waiting")
        assert site.bus.unlocks == []
        # She cannot be her own second person; Bob is not an armourer.
        before = await badge(rdr, ALICE)
        await signal(rdr, "red", before)
        await wait_event(client, lambda e: "someone else" in (e.get("reason") or ""),
                         action="issue_refused")
        before = await badge(rdr, BOB)
        await signal(rdr, "red", before)
        await wait_event(client, lambda e: "armourer" in (e.get("reason") or ""),
                         action="issue_refused")
        assert site.bus.unlocks == []
        # Carol, an armourer, confirms: the taser slot opens for Alice.
        before = await badge(rdr, CAROL)
        await signal(rdr, "green", before)
        second = await wait_event(client, action="second_person")
        assert second["actor"] == "officer:ARM-7" and second["details"]["first"] == "PC-1001"
        granted = await wait_event(client, action="issue_granted")
        assert granted["actor"] == "officer:PC-1001"
        assert granted["details"]["second_person"] == "ARM-7"
        assert site.bus.unlocks == [(3, 0)]

        site.bus.set_item(3, 0, False)
        opened = await wait_event(client, action="custody_opened")
        assert opened["reason"] == "taken" and opened["details"]["second_person"] == "ARM-7"
        before = await badge(rdr, ALICE)  # she holds a taser: this is a return, not an issue
        await signal(rdr, "green", before)
        await wait_event(client, action="return_granted")


async def test_two_person_window_times_out(site: Site, tmp_path: Path) -> None:
    rdr = site.readers["armoury"]
    async with running_agent(site.toml(), tmp_path / "state") as (_agent, client):
        await ready(client, site)
        before = await badge(rdr, ALICE)
        await signal(rdr, "amber", before)
        timed_out = await wait_event(client, lambda e: "second person within" in (
            e.get("reason") or ""), action="issue_refused", timeout=12)
        assert timed_out["reason"] == "no second person within 5 s"
        await signal(rdr, "red", 0)
        assert site.bus.unlocks == []


async def test_unauthorised_removal_is_a_critical_alarm(site: Site, tmp_path: Path) -> None:
    async with running_agent(site.toml(), tmp_path / "state") as (_agent, client):
        await ready(client, site)
        site.bus.set_item(3, 1, False)  # a taser leaves slot 2 with no issue open
        ev = await wait_event(client, action="unauthorised_removal")
        assert ev["device"] == ARMOURY and ev["compartment"] == 2
        status = await client.call("status")
        alarm = next(a for a in status["alarms"] if a.get("code") == "unauthorised_removal")
        assert alarm["severity"] == "critical" and "taser" in alarm["message"]


async def test_custody_survives_a_restart_between_the_door_and_the_item(site: Site,
                                                                        tmp_path: Path
                                                                        ) -> None:
    rdr = site.readers["lockers"]
    state = tmp_path / "state"
    async with running_agent(site.toml(), state) as (_agent, client):
        await ready(client, site)
        before = await badge(rdr, ALICE, keys="2")  # a phone
        await signal(rdr, "green", before)
        granted = await wait_event(client, action="issue_granted")
        assert granted["compartment"] == 9
    # The agent is down when she takes the phone.
    site.bus.set_item(0, 8, False)
    async with running_agent(site.toml(), state) as (_agent, client):
        opened = await wait_event(client, action="custody_opened", timeout=15)
        assert opened["details"]["officer"] == "PC-1001"
        assert opened["reason"] in ("taken while the agent was away",
                                    "taken (opened for them before the agent restarted)")
        assert opened["details"]["granted_seq"] == granted["seq"]
        events = await client.call("events", action="unauthorised_removal")
        assert events == []


async def cli(*args: str) -> tuple[int, str, str]:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_reports_match_the_audit_trail(site: Site, tmp_path: Path) -> None:
    import json

    rdr = site.readers["lockers"]
    async with running_agent(site.toml(), tmp_path / "state") as (agent, client):
        await ready(client, site)
        sock = str(agent.socket_path)
        for keys, lock in (("1", 0), ("2", 8)):  # a radio, then a phone
            before = await badge(rdr, ALICE, keys=keys)
            await signal(rdr, "green", before)
            site.bus.set_item(0, lock, False)
            await wait_event(client, lambda e, lock=lock: e.get("compartment") == lock + 1,
                             action="custody_opened")
            site.bus.set_door(0, lock, True)
        code, out, err = await cli("report", "custody", "--json", "--socket", sock)
        assert code == 0, err
        held = json.loads(out)
        trail = await client.call("events", action="custody_opened")
        assert sorted((h["officer"], h["equipment"], h["seq"]) for h in held) == sorted(
            (e["details"]["officer"], e["details"]["equipment"], e["seq"]) for e in trail)
        code, out, _ = await cli("report", "overdue", "--json", "--socket", sock)
        assert json.loads(out) == []
        code, out, _ = await cli("report", "deployable", "--equipment", "taser", "--json",
                                 "--socket", sock)
        dep = json.loads(out)
        assert dep["available"] == {"Armoury": 4}
        assert [o["officer"] for o in dep["officers"]] == ["PC-1001"]  # Bob's has lapsed
        csv_path = tmp_path / "usage.csv"
        code, _, err = await cli("report", "usage", "--format", "csv", "--output",
                                 str(csv_path), "--socket", sock)
        assert code == 0, err
        rows = csv_path.read_text().splitlines()[1:]
        per_class = {}
        for row in rows:
            equipment, _hour, n = row.split(",")
            per_class[equipment] = per_class.get(equipment, 0) + int(n)
        assert per_class == {"phone": 1, "radio": 1}
        code, out, err = await cli("report", "usage", "--socket", sock)
        assert code == 0 and "2 in all" in out, err
        # One officer: the same holdings as the custody report says are hers.
        mine = sorted(h["equipment"] for h in held if h["officer"] == "PC-1001")
        code, out, err = await cli("report", "person", "--officer", "PC-1001", "--socket", sock)
        assert code == 0 and "Alice Ames" in out and f"holds {len(mine)}" in out, err
        for kit in mine:
            assert kit in out


async def test_custody_survives_kill_9_between_the_door_and_the_item(site: Site,
                                                                     tmp_path: Path) -> None:
    """The agent (its own process) is killed with SIGKILL after the compartment opened for
    Alice and before she took the phone; it comes back and books the phone to her."""
    import signal as sig
    import subprocess
    import sys

    from edge_agent.testing import short_tempdir

    rdr = site.readers["lockers"]
    cfg = tmp_path / "site.toml"
    cfg.write_text(site.toml())
    state = tmp_path / "state"
    with short_tempdir() as d:
        sock = d / "agent.sock"

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(cfg),
                 "--state-dir", str(state), "--socket", str(sock), "--log-level", "warning"],
                stdin=subprocess.DEVNULL)

        agent = start()
        try:
            await wait_until(sock.exists, timeout=20, what="the agent's socket")
            async with AgentClient(sock) as client:
                await ready(client, site)
                before = await badge(rdr, ALICE, keys="2")
                await signal(rdr, "green", before)
                granted = await wait_event(client, action="issue_granted")
            agent.send_signal(sig.SIGKILL)
            agent.wait(10)
            site.bus.set_item(0, 8, False)  # she takes the phone while the agent is dead
            sock.unlink(missing_ok=True)
            agent = start()
            await wait_until(sock.exists, timeout=20, what="the agent's socket again")
            async with AgentClient(sock) as client:
                opened = await wait_event(client, action="custody_opened", timeout=20)
                assert opened["details"]["officer"] == "PC-1001"
                assert opened["details"]["granted_seq"] == granted["seq"]
                assert await client.call("events", action="unauthorised_removal") == []
                held = (await client.call("custody"))["holdings"]
                assert [(h["officer"], h["equipment"]) for h in held] == [("PC-1001", "phone")]
        finally:
            agent.kill()
            agent.wait(10)


async def test_sim_card_presents_a_card_at_a_simulated_reader(tmp_path: Path,
                                                              kerong_bus: Any) -> None:
    """`edge-agent simulate` serves its simulators on a control socket and `edge-agent
    sim card` presents a card there: the technician's (and a test's) way to drive it."""
    import subprocess
    import sys

    from edge_agent.testing import short_tempdir

    keys = tmp_path / "keys"
    ent.keygen(keys)
    _bus, pty = kerong_bus({0: 0xFFFF}, pace=False)
    sim_cfg = tmp_path / "sim.toml"
    sim_cfg.write_text(f"""[site]\nid = "sim"\n
[[simulators]]
plugin = "osdp"
link = "{tmp_path / 'ttyRDR9'}"
pd_address = 109
serial_number = 9
key_file = "{keys / 'rdr-9.key'}"

[[simulators]]
plugin = "kerong"
transport = "pty"
link = "{tmp_path / 'ttyKR7'}"
boards = [2]
items = 65535
""")
    with short_tempdir() as d:
        control = d / "sim.sock"
        sim = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "simulate", "--site",
                                str(sim_cfg), "--control", str(control)],
                               stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        try:
            assert sim.stdout is not None
            while (line := sim.stdout.readline()) and line.strip() != "ready":
                pass
            toml = site_toml({"Bank-1": pty.port, "Bank-7": str(tmp_path / "ttyKR7")},
                             extra=f"""
[entitlements]
badge_key = "{keys / 'badge.key'}"
[[devices]]
plugin = "osdp"
identity = "osdp:RDR-00000009"
address = "{tmp_path / 'ttyRDR9'}"
properties = {{ pd_address = 109, key_file = "{keys / 'rdr-9.key'}" }}
[[stations]]
id = "Front-Desk"
reader = "osdp:RDR-00000009"
slots = [{{ device = "{LOCKERS}", compartments = "1-16", equipment = "radio" }},
         {{ device = "kerong:Bank-7:2", compartments = "1-16", equipment = "battery" }}]
""")
            async with running_agent(toml, tmp_path / "state") as (_agent, client):
                await wait_device(client, "osdp:RDR-00000009", timeout=15)
                await wait_device(client, "kerong:Bank-7:2", lambda d: d["compartments"],
                                  timeout=15)
                code, out, err = await cli("sim", "card", "osdp:RDR-00000009", "C0FFEE01",
                                           "--control", str(control))
                assert code == 0, err
                assert "the reader shows red" in out
                refused = await wait_event(client, action="issue_refused")
                assert refused["reason"].startswith("cannot identify anyone")
                code, _, err = await cli("sim", "card", "osdp:RDR-00000042", "C0FFEE01",
                                         "--control", str(control))
                assert code == 2 and "no simulated reader osdp:RDR-00000042" in err
                # `sim take`: an item forced out of a compartment, no unlock.
                code, out, err = await cli("sim", "take", str(tmp_path / "ttyKR7"), "2", "5",
                                           "--control", str(control))
                assert code == 0 and "with no unlock" in out, err
                taken = await wait_event(client, action="unauthorised_removal")
                assert (taken["device"], taken["compartment"]) == ("kerong:Bank-7:2", 5)
        finally:
            sim.terminate()
            sim.wait(10)


async def test_stale_entitlements_refuse_weapons_until_two_armourers_break_glass(
        site: Site, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a second Unix user needs root to make (setuid nobody)")
    # A snapshot that expires two seconds after it is loaded.
    site.snapshot = ent.sign(ent.load_private(site.keys / "signing.key"), ent.parse_records(
        tmp_path / "officers.csv", ent.load_badge_key(site.keys / "badge.key")),
        valid_hours=2 / 3600)
    rdr = site.readers["armoury"]
    async with running_agent(site.toml(), tmp_path / "state") as (agent, client):
        await ready(client, site)
        await asyncio.sleep(2.5)
        before = await badge(rdr, ALICE)
        await signal(rdr, "red", before)
        stale = await wait_event(client, lambda e: "not current" in (e.get("reason") or ""),
                                 action="issue_refused")
        assert stale["actor"] == "officer:PC-1001"
        first = await client.call("break_glass", body={"reason": "snapshot feed down",
                                                       "minutes": 10})
        assert "second armourer" in first["waiting"]
        os.chmod(Path(agent.socket_path).parent, 0o711)
        os.chmod(agent.socket_path, 0o666)
        second = await asyncio.to_thread(as_other_user, Path(agent.socket_path),
                                         "break_glass",
                                         {"reason": "snapshot feed down", "minutes": 10})
        assert second["status"] == 200, second
        on = await wait_event(client, action="break_glass")
        assert on["outcome"] == "on" and on["details"]["first"] == first["actor"]
        status = await client.call("status")
        assert any(a["id"] == "custody:break-glass" and a["severity"] == "critical"
                   for a in status["alarms"])
        # Now the two-person Taser issue goes ahead on the stale snapshot.
        before = await badge(rdr, ALICE)
        await signal(rdr, "amber", before)
        before = await badge(rdr, CAROL)
        await signal(rdr, "green", before)
        assert site.bus.unlocks == [(3, 0)]


async def test_a_gateway_with_a_built_in_reader_issues_its_own_lockers(
        site: Site, tmp_path: Path) -> None:
    """A REST locker gateway with a card reader of its own: its badge events come through
    contract 1.3's pushed credentials (the driver long-polls the gateway), its LED answers."""
    from edge_agent_gateway.simulator import GatewaySimulator

    gw = GatewaySimulator(serial="GW-RDR-1", lockers=4, mdns=False)
    gw.start()
    try:
        toml = site.toml() + f"""
[[devices]]
plugin = "gateway"
identity = "gateway:GW-RDR-1"
address = "{gw.scheme}://127.0.0.1:{gw.port}"
properties = {{ host = "127.0.0.1", port = {gw.port}, serial = "GW-RDR-1" }}

[[stations]]
id = "Front-Desk"
reader = "gateway:GW-RDR-1"
slots = [{{ device = "gateway:GW-RDR-1", compartments = "1-4", equipment = "battery" }}]
"""
        async with running_agent(toml, tmp_path / "state") as (_agent, client):
            await ready(client, site)
            await wait_device(client, "gateway:GW-RDR-1",
                              lambda d: d["link"] == "online" and d["compartments"],
                              timeout=15)
            await asyncio.sleep(0.5)  # the driver's first look at the reader
            await asyncio.to_thread(gw.present, ALICE)
            await wait_until(lambda: gw.signals[-1:] == ["green"], timeout=10,
                             what=f"the gateway's reader to go green ({gw.signals})")
            granted = await wait_event(client, action="issue_granted")
            assert granted["device"] == "gateway:GW-RDR-1"
            assert granted["details"]["equipment"] == "battery"
            assert gw.opens == [granted["compartment"] - 1]
            await asyncio.to_thread(gw.present, "0BADCA2D")
            await wait_until(lambda: gw.signals[-1:] == ["red"], timeout=10,
                             what="red for an unknown card")
    finally:
        gw.stop()


async def test_the_support_bundle_carries_no_secret_and_no_name(site: Site,
                                                                tmp_path: Path) -> None:
    """Secrets and personal data planted everywhere (a card number, an officer's name, a
    reason, an uplink password, a vendor token, the keys); the bundle has none of them,
    and still proves its audit chain."""
    import tarfile

    pw = tmp_path / "uplink.pw"
    pw.write_text("s3cr3t-PASSWORD-42\n")
    pw.chmod(0o600)
    toml = site.toml() + f"""
[uplink]
broker = "mqtt://127.0.0.1:1"
username = "site-user-XYZZY"
password_file = "{pw}"

[vendor.kerong]
hook_closed_bit = 1
"""
    cfg = tmp_path / "site.toml"
    cfg.write_text(toml)
    rdr = site.readers["lockers"]
    async with running_agent(toml, tmp_path / "state") as (agent, client):
        await ready(client, site)
        before = await badge(rdr, ALICE, keys="1")
        await signal(rdr, "green", before)
        site.bus.set_item(0, 0, False)
        await wait_event(client, action="custody_opened")
        await client.call("unlock", id=LOCKERS, body={"compartment": 7,
                                                      "reason": "SECRET-REASON for Bob"})
        out = tmp_path / "bundle.tar.gz"
        code, _out, err = await cli("bundle", "--output", str(out), "--site", str(cfg),
                                      "--socket", str(agent.socket_path))
        assert code == 0, err
    blob = b""
    names = []
    with tarfile.open(out) as tar:
        for member in tar.getmembers():
            names.append(member.name)
            f = tar.extractfile(member)
            assert f is not None
            blob += f.read()
    planted = [ALICE, ALICE.lower(), "Alice Ames", "Alice", "SECRET-REASON",
               "s3cr3t-PASSWORD-42", "site-user-XYZZY", "PC-1001",
               (site.keys / "badge.key").read_text().strip(),
               (site.keys / "rdr-1.key").read_text().strip()]
    for secret in planted:
        assert secret.encode() not in blob, f"{secret!r} leaked into the bundle"
    assert "edge-agent-bundle/chain.json" in names and "edge-agent-bundle/wire/" \
        "kerong_Bank-1_0.json" in names and "edge-agent-bundle/site-config.json" in names
    assert b'"hashes_recomputed_ok": true' in blob and b'"links_ok": true' in blob

"""SVG snapshots of every dashboard screen at 80x24, from fixed data (the pilot tests
in test_tui.py cover the same screens against a live agent). Update deliberately with
``pytest tests/test_tui_snapshots.py --snapshot-update`` and review the SVGs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent.api.schema import (
    Alarm,
    AuditRecord,
    Custody,
    Deployable,
    Device,
    InboxItem,
    Person,
    Plugin,
    Status,
    Wire,
    adapter,
)
from tui.app import Dashboard
from tui.state import Model

T0 = 1_795_000_000.0  # fixed epoch: shown times do not depend on the day


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def comps(items: int, opened: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [{"index": i, "door": "open" if i in opened else "closed",
             "item": "present" if items >> (i - 1) & 1 else "absent", "fault": None,
             "tag": None} for i in range(1, 17)]


def device(dev_id: str, link: str, items: int, **extra: Any) -> dict[str, Any]:
    d = {"id": dev_id, "plugin": "kerong", "vendor": "Kerong", "model": "KR-CU16",
         "source": "bus-probe", "address": f"/dev/serial/by-id/usb-FTDI-if00 board "
         f"{dev_id[-1]}", "bus_id": "bank-a", "properties": {}, "first_seen": T0,
         "last_seen": T0 + 60, "adopted": True, "ignored": None, "out_of_service": {},
         "link": link, "error": "", "compartments": comps(items), "since": T0, "reason": "",
         "alarms": [],
         "capabilities": [],  # a KR-CU16 has no identify indicator
         "counters": {"polls": 120, "poll_failures": 0, "timeouts": 0, "reconnects": 0,
                      "plugin_faults": 0, "pushed": 0, "last_poll_ms": 9.1},
         "info": {"vendor": "Kerong", "model": "KR-CU16", "compartments": 16, "serial": None,
                  "firmware": None, "details": {"hook_meaning": "HOOK bit 1 = door closed"}},
         "diagnostics": [{"label": "hook meaning", "value": "HOOK bit 1 = door closed",
                          "source": "device"},
                         {"label": "checksum errors", "value": "3", "source": "reading"}]}
    d.update(extra)
    return d


def checked(record: Any, data: Any) -> Any:
    """Fixed data is only worth a snapshot if it is what the API sends."""
    adapter(record).validate_python(data, strict=True)
    return data


def event(seq: int, action: str, dev: str | None, comp: int | None, actor: str,
          reason: str | None, outcome: str, *, ts: str | None = None,
          details: dict[str, Any] | None = None) -> AuditRecord:
    e = {"seq": seq, "ts": ts or f"2026-11-19T08:{seq:02d}:00.000+00:00", "mono": float(seq),
         "boot": "b", "action": action, "device": dev, "compartment": comp, "actor": actor,
         "reason": reason, "outcome": outcome, "details": details or {}, "prev": "0" * 64,
         "hash": "0" * 64}
    return checked(AuditRecord, e)  # type: ignore[no-any-return]


def model() -> Model:
    m = Model()
    m.connected = True
    m.link_text = "site station-12 · agent 0.1.0 · /run/edge-agent/agent.sock"
    m.status = checked(Status, {
        "site": {"id": "station-12", "name": "Station 12 equipment room"},
        "agent": {"version": "0.1.0", "pid": 1, "uptime": 60.0}, "devices": {"total": 3},
        "store": {}, "inbox": 1, "buses": [
            {"id": "bank-a", "port": "/dev/serial/by-id/usb-FTDI-if00",
             "settings": "19200 8N1", "answering": ["b0", "b1", "b2"], "error": ""}],
        "plugins": {"kerong": "loaded"},
        "health": "ok", "alarms": [], "audit": {"error": None, "last_seq": 6}})
    for d in (device("kerong:bank-a:0", "online", 0x00FF, compartments=comps(0x00FF, (3,))),
              device("kerong:bank-a:1", "degraded", 0x0F0F,
                     reason="board 1 did not answer a status poll within 300 ms"),
              device("kerong:bank-a:2", "offline", 0, reason="no answer for 3 polls",
                     out_of_service={"5": {"reason": "broken hinge", "actor": "tech"}})):
        m.put_device(checked(Device, d))
    m.changed_at.clear()
    for i, (action, dev, comp, actor, reason, outcome) in enumerate([
            ("device_online", "kerong:bank-a:0", None, "agent", None, "ok"),
            ("door_opened", "kerong:bank-a:0", 3, "kerong:bank-a:0", None, "ok"),
            ("item_removed", "kerong:bank-a:0", 3, "kerong:bank-a:0", None, "ok"),
            ("unlock", "kerong:bank-a:1", 7, "tech", "radio battery swap", "ok"),
            ("unlock", "kerong:bank-a:1", 9, "tech", "taser issue", "door_did_not_open"),
            ("device_offline", "kerong:bank-a:2", None, "agent", "no answer", "ok")],
            start=1):
        m.put_event(event(i, action, dev, comp, actor, reason, outcome))
    plugin = {"vendor": "Kerong", "description": "", "source": "edge_agent_kerong",
              "distribution": "edge-agent-kerong", "hooks": [], "last_fault": None}
    m.plugins = checked(list[Plugin], [
        {**plugin, "name": "kerong", "status": "loaded", "version": "1.0.0",
         "contract": "1.0", "faults": 0, "reason": ""},
        {**plugin, "name": "acme", "status": "refused", "version": "2.0", "contract": "2.0",
         "faults": 0, "reason": "written for contract 2.0, this agent implements 1.0"}])
    m.inbox = checked(list[InboxItem], [
        {"id": "mdns:locker-9._acme._tcp.local.", "what": "mDNS locker-9",
         "why": "acme: TXT vendor='other', expected 'acme'", "since": T0}])
    holding = {"station": "Locker-Station", "device": "kerong:bank-a:0", "item": None,
               "since": T0 - 3600, "overdue": ""}
    m.custody = checked(Custody, {
        "holdings": [
            {**holding, "officer": "PC-1003", "name": "Dave Dunn", "equipment": "radio",
             "compartment": 4, "due": T0, "seq": 41, "overdue": "critical"},
            {**holding, "officer": "PC-1001", "name": "Alice Ames", "equipment": "taser",
             "device": "kerong:bank-a:1", "compartment": 2, "due": 4_000_000_000.0,
             "seq": 57}],
        "sessions": [], "waiting": [{"station": "Taser-Dock", "officer": "PC-1004",
                                     "equipment": "taser"}],
        "classes": ["radio", "taser"]})
    m.deployable = {
        "radio": checked(Deployable, {
            "equipment": "radio", "available": {"Locker-Station": 6},
            "stale_entitlements": False, "qualified_but_nothing_available": 0,
            "officers": [{"officer": "PC-1001", "name": "Alice Ames",
                          "qualified_until": None, "holds": 0},
                         {"officer": "PC-1002", "name": "Bob Brown",
                          "qualified_until": None, "holds": 0}]}),
        "taser": checked(Deployable, {
            "equipment": "taser", "available": {}, "stale_entitlements": False,
            "qualified_but_nothing_available": 1, "officers": []})}
    m.people["PC-1003"] = checked(Person, {
        "officer": "PC-1003", "name": "Dave Dunn", "in_snapshot": True,
        "roles": ["officer"], "snapshot": "ent-2026-12-01", "stale_entitlements": False,
        "qualifications": {"taser": {"until": "2026-06-30", "valid": False},
                           "firearm": {"until": "2027-03-31", "valid": True}},
        "holdings": [{**holding, "officer": "PC-1003", "name": "Dave Dunn",
                      "equipment": "radio", "compartment": 4, "due": T0, "seq": 41,
                      "overdue": "critical"}],
        "events": [event(9, "custody_opened", "kerong:bank-a:0", 4, "officer:PC-1003",
                         "taken", "ok"),
                   event(8, "issue_refused", None, None, "officer:PC-1003",
                         "taser qualification expired on 2026-06-30", "refused")]})
    m.usage = [event(20 + i, "custody_opened", "kerong:bank-a:0", 1, "officer:PC-1001",
                     None, "ok", ts=f"2026-11-2{i % 7}T{7 + (i * 5) % 12:02d}:15:00+00:00",
                     details={"equipment": ("radio", "phone", "taser")[i % 3]})
               for i in range(40)]
    m.wire["kerong:bank-a:0"] = checked(Wire, {
        "bus": "bank-a", "address": "/dev/serial/by-id/usb-FTDI-if00", "settings": "19200 8N1",
        "bus_info": {"answering": ["b0", "b1"], "error": ""},
        "counters": {"transactions": 240, "timeouts": 2, "errors": 0, "reopens": 0,
                     "last_rtt_ms": 8.9},
        "diagnostics": [{"label": "checksum errors", "value": "3", "source": "reading"},
                        {"label": "garbage bytes", "value": "17", "source": "reading"}],
        "frames": [{"t": T0 + i * 0.5, "dir": "tx" if i % 2 == 0 else "rx",
                    "hex": "02 00 30 03 35" if i % 2 == 0 else "02 00 35 ff 00 ff 00 03 36",
                    "decoded": "status? board 0" if i % 2 == 0 else
                    "status reply board 0: hooks 0000000011111111 ir 0000000011111111",
                    "note": ""} for i in range(8)]})
    return m


def app(read_only: bool = False) -> Dashboard:
    return Dashboard("/run/edge-agent/agent.sock", model=model(), read_only=read_only)


SCREENS = {
    "overview": [],
    "devices": ["d"],
    "device": ["d", "enter"],
    "device_read_only": ["d", "enter"],
    "diagnostics": ["d", "g"],
    "inbox": ["i"],
    "events": ["e"],
    "plugins": ["p"],
    "custody": ["c"],
    "deployable": ["c", "y"],
    "person": ["c", "enter"],
    "usage": ["c", "u"],
    "help": ["question_mark"],
    "scan": ["b"],
}


@pytest.mark.parametrize("name", sorted(SCREENS))
def test_screen_snapshot(name: str, snap_compare: Any) -> None:
    assert snap_compare(app(read_only=name.endswith("read_only")), press=SCREENS[name],
                        terminal_size=(80, 24))


@pytest.mark.parametrize("name", ["overview", "devices", "device", "events", "alarms"])
def test_wide_terminal_snapshot(name: str, snap_compare: Any) -> None:
    """200x60: the devices table's columns grow into the width (whole addresses), the
    events' reasons are not cut at 40."""
    press = {"alarms": ["a"]}.get(name) or SCREENS[name]
    assert snap_compare(app(), press=press, terminal_size=(200, 60))


async def test_sort_marks_its_column_and_reverses_and_columns_use_a_wide_terminal() -> None:
    """Issue 13 (Missing): a sort indicator and reverse sort, columns that use a wide
    terminal, a breadcrumb, and un-ignore offered for an ignored device."""
    from tui.vtable import VirtualTable

    for size, whole in (((80, 24), False), ((200, 60), True)):
        dash = app()
        async with dash.run_test(size=size) as pilot:
            await pilot.press("d")
            await pilot.pause()
            table = dash.screen.query_one("#devices", VirtualTable)
            head = str(dash.screen.query_one("#devices-header").render())
            assert "▲" not in head and "vendor" in head
            crumbs = str(dash.screen.query_one("#linkbar").render())
            assert crumbs.startswith("Overview > Devices"), crumbs
            line = "".join(seg.text for seg in table.render_line(0))
            addr = dash.model.devices[table.order[0]]["address"]
            assert (addr in line) is whole, (size, line)
            await pilot.press("s", "s")  # device, then state
            await pilot.pause()
            head = str(dash.screen.query_one("#devices-header").render())
            assert "state ▲" in head, head
            ascending = list(table.order)
            await pilot.press("S")
            await pilot.pause()
            assert "state ▼" in str(dash.screen.query_one("#devices-header").render())
            assert table.order == ascending[::-1]
    dash = app()
    ignored = next(iter(dash.model.devices))
    dash.model.devices[ignored]["link"] = "ignored"
    async with dash.run_test(size=(80, 24)) as pilot:
        dash.open_device(ignored)
        await pilot.pause()
        assert dash.screen.check_action("unignore", ()) is True
        crumbs = str(dash.screen.query_one("#linkbar").render())
        assert crumbs.startswith(f"Overview > {ignored}"), crumbs
    dash = app()
    other = next(iter(dash.model.devices))
    async with dash.run_test(size=(80, 24)) as pilot:
        dash.open_device(other)
        await pilot.pause()
        assert dash.screen.check_action("unignore", ()) is False
        assert dash.screen.check_action("unlock", ()) is True
        dash.model.devices[other]["compartments"] = []  # a card reader: nothing to open
        assert dash.screen.check_action("unlock", ()) is False
        assert dash.screen.check_action("out_of_service", ()) is False


async def test_help_and_jump_stay_on_the_footer_when_a_device_offers_everything() -> None:
    """80x24, a device offering every action (identify, return to service): the footer
    fills up, and '? Help' and ': Jump' must not be what is cut (issue 13, item 10)."""
    dash = app()
    d = dash.model.devices["kerong:bank-a:0"]
    d["capabilities"] = ["identify"]
    d["out_of_service"] = {"3": {"by": "tech", "reason": "hinge", "since": T0}}
    async with dash.run_test(size=(80, 24)) as pilot:
        await pilot.press("d", "enter")
        await pilot.pause()
        assert "Return to service" in " ".join(
            b.binding.description for b in dash.screen.active_bindings.values())
        keys = {str(k.render()).strip(): k.region for k in dash.screen.query("FooterKey")}
        for wanted in ("? Help", ": Jump"):
            region = next(r for text, r in keys.items() if text.startswith(wanted))
            assert region.width and region.right <= 80, (wanted, region)


async def test_the_device_screen_offers_only_what_the_device_can_do() -> None:
    for caps, offered in (([], False), (["identify"], True)):
        dash = app()
        dash.model.devices["kerong:bank-a:0"]["capabilities"] = caps
        async with dash.run_test(size=(200, 60)) as pilot:
            await pilot.press("d", "enter")
            await pilot.pause()
            footer = " ".join(b.binding.description
                              for b in dash.screen.active_bindings.values()
                              if b.binding.show and dash.screen.check_action(
                                  b.binding.action, ()) is not False)
            assert ("Identify" in footer) is offered, footer


async def test_events_filter_matches_mixed_case_ids_and_says_when_nothing_does() -> None:
    dash = app()
    dash.model.put_event(event(7, "door_opened", "armoury:WC12-DEMO-1", 4,
                               "armoury:WC12-DEMO-1", None, "ok"))
    async with dash.run_test(size=(80, 24)) as pilot:
        await pilot.press("e", "slash")
        await pilot.press(*"device=armoury:WC12-DEMO-1", "enter")
        await pilot.pause()
        table = dash.screen.query_one("#events")
        assert table.row_count == 1
        assert dash.screen.query_one("#no-match").has_class("hidden")
        await pilot.press("slash", *"ctrl+u".split(), *"device=nosuch", "enter")
        await pilot.pause()
        assert table.row_count == 0
        note = dash.screen.query_one("#no-match")
        assert not note.has_class("hidden") and "no events match" in str(note.render())


async def test_alarm_severity_survives_without_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR: a critical alarm is marked in words and reverse video (it used to be
    dark grey on near-black, the least readable line on the screen)."""
    monkeypatch.setenv("NO_COLOR", "1")
    dash = app()
    assert dash.model.status is not None
    dash.model.status["alarms"] = checked(list[Alarm], [
        {"id": "audit:index", "severity": "critical", "since": T0, "device": None,
         "code": None, "compartment": None,
         "message": "1 audit index(es) did not match their segments"},
        {"id": "mdns", "severity": "warning", "since": T0 + 1, "device": None,
         "code": None, "compartment": None, "message": "mDNS discovery unavailable"}])
    async with dash.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        text = dash.screen.query_one("#summary").render()
        plain = text.plain
        assert "!! CRITICAL  1 audit index(es)" in plain and "! warning  mDNS" in plain
        marks = [span.style for span in text.spans
                 if plain[span.start:span.end].strip() in ("!! CRITICAL", "! warning")]
        assert len(marks) == 2
        assert all(getattr(m, "reverse", None) is True or "reverse" in str(m) for m in marks)


async def test_jump_completes_with_tab_and_ignores_case() -> None:
    """Issue 13 item 2: Tab completes in the ':' jump, and case does not matter."""
    from tui.screens import DeviceScreen, DiagnosticsScreen

    dash = app()
    async with dash.run_test(size=(80, 24)) as pilot:
        await pilot.press("colon", *"diag k", "tab")
        box = dash.screen.query_one("#jump")
        assert box.value == "diag kerong:bank-a:"  # the common start of three boards
        await pilot.press("2", "enter")
        await pilot.pause()
        assert isinstance(dash.screen, DiagnosticsScreen)
        assert dash.screen.device_id == "kerong:bank-a:2"
        await pilot.press("escape", "colon", *"KERONG:BANK-A:1", "enter")
        await pilot.pause()
        assert isinstance(dash.screen, DeviceScreen)
        assert dash.screen.device_id == "kerong:bank-a:1"


async def test_events_follow_the_tail_only_while_the_cursor_is_on_it() -> None:
    """Issue 13 item 5: reading history on a live site is not pulled back to the newest
    row; a marker says following or paused; G follows again."""
    dash = app()
    async with dash.run_test(size=(80, 24)) as pilot:
        await pilot.press("e")
        await pilot.pause()
        table = dash.screen.query_one("#events")
        assert table.cursor_row == table.row_count - 1
        await pilot.press("up", "up")
        dash.model.put_event(event(7, "door_opened", "kerong:bank-a:0", 2, "kerong", None,
                                   "ok"))
        await pilot.pause(0.5)
        assert table.row_count == 7 and table.cursor_row == 3
        assert "PAUSED" in str(dash.screen.query_one("#follow").render())
        await pilot.press("G")
        await pilot.pause(0.3)
        assert table.cursor_row == 6
        assert "following" in str(dash.screen.query_one("#follow").render())


async def test_the_overview_says_when_its_values_are_stale() -> None:
    """Issue 13 item 10: with the link down the overview says its numbers are the last
    known ones, not 'agent ok' as if live."""
    dash = app()
    dash.model.connected = False
    async with dash.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        text = dash.screen.query_one("#summary").render().plain
        assert text.startswith("LINK DOWN: last known state below")


@pytest.mark.parametrize("screen", ["overview", "device", "custody"])
def test_high_contrast_snapshot(screen: str, snap_compare: Any) -> None:
    """Issue 13 item 9: the high-contrast theme, for sunlit rooms and weak eyes."""
    dash = Dashboard("/run/edge-agent/agent.sock", model=model(), theme="high-contrast")
    assert snap_compare(dash, press=SCREENS[screen], terminal_size=(80, 24))


@pytest.mark.parametrize("screen", ["overview", "device", "custody"])
def test_no_color_snapshot(screen: str, snap_compare: Any,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13 item 9: with NO_COLOR every state still reads (words and reverse video)."""
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(app(), press=SCREENS[screen], terminal_size=(80, 24))


def fleet_model(tmp: Any) -> Model:
    """Headquarters: ingest's files for five sites, read by the real fleet view."""
    from edge_agent.api.fleetview import fleet

    def site(name: str, status: dict[str, Any] | None, problems: list[str] | None = None,
             last_seq: int = 100) -> None:
        root = tmp / name
        root.mkdir()
        if status is not None:
            (root / "status.json").write_text(json.dumps(status))
        (root / "ingest.json").write_text(json.dumps({"last_seq": last_seq,
                                                      "problems": problems or []}))

    live = {"online": True, "session": 3, "health": "ok", "backlog": 0,
            "oldest_unsent_s": 0.0, "entitlements": "ent-2026-12-01", "alarms": []}
    site("Station-01", {**live, "ts": T0 - 5})
    site("Station-12", {**live, "ts": T0 - 3, "health": "degraded", "backlog": 5120,
                        "oldest_unsent_s": 4200.0,
                        "alarms": ["kerong:bank-a:3: door held open 140 s"]})
    site("Station-19", {"online": False, "session": 7, "ts": T0 - 900})
    site("Station-23", {**live, "ts": T0 - 600})
    site("Station-31", {**live, "ts": T0 - 2}, problems=[
        "seq 8812 arrived again with other content: the site's log was rewritten after it "
        "was forwarded"])
    m = Model()
    m.fleet = fleet(tmp, now=T0)
    return m


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
def test_fleet_snapshot(size: tuple[int, int], snap_compare: Any, tmp_path: Any) -> None:
    """Issue 12: every site at a glance, worst first (tampered, dead, quiet, degraded)."""
    dash = Dashboard("/run/edge-agent/agent.sock", model=fleet_model(tmp_path),
                     fleet="/srv/hq/sites")
    assert snap_compare(dash, terminal_size=size)


def test_the_fleet_is_worst_first(tmp_path: Any) -> None:
    rows = fleet_model(tmp_path).fleet or []
    assert [(r["site"], r["state"]) for r in rows] == [
        ("Station-31", "TAMPERED"), ("Station-19", "DEAD"), ("Station-23", "QUIET"),
        ("Station-12", "degraded"), ("Station-01", "ok")]


def alarm_model() -> Model:
    m = model()
    assert m.status is not None
    m.status["alarms"] = checked(list[Alarm], [
        {"id": "uplink:refused", "severity": "critical", "since": T0 - 600,
         "message": "headquarters' broker refuses this site's records (Not authorized)",
         "device": None, "code": None, "compartment": None, "acked": None},
        {"id": "mdns", "severity": "warning", "since": T0 - 60,
         "message": "mDNS discovery unavailable: no such interface 10.9.9.9",
         "device": None, "code": None, "compartment": None,
         "acked": {"by": "tech", "at": T0, "reason": "NIC swap booked", "seq": 88}}])
    return m


@pytest.mark.parametrize("screen", [["a"], ["o"]], ids=["alarms", "doors"])
def test_alarms_and_doors_snapshot(screen: list[str], snap_compare: Any) -> None:
    """Issue 13 (Missing): alarms with acknowledge; every open compartment site-wide."""
    dash = Dashboard("/run/edge-agent/agent.sock", model=alarm_model())
    assert snap_compare(dash, press=screen, terminal_size=(80, 24))


async def test_alarms_not_yet_seen_come_first() -> None:
    """Unacknowledged first, critical first, oldest first; an acknowledgement reorders."""
    m = alarm_model()
    assert m.status is not None
    m.status["alarms"].append(checked(Alarm, {
        "id": "store", "severity": "warning", "since": T0 - 5, "message": "store slow",
        "device": None, "code": None, "compartment": None, "acked": None}))
    dash = Dashboard("/run/edge-agent/agent.sock", model=m)
    async with dash.run_test(size=(80, 24)) as pilot:
        await pilot.press("a")
        await pilot.pause(0.3)
        table = dash.screen.query_one("#alarms")
        assert [str(k.value) for k in table.rows] == ["uplink:refused", "store", "mdns"]
        m.status["alarms"][0]["acked"] = {"by": "tech", "at": T0, "reason": "x", "seq": 9}
        await pilot.pause(1.3)
        assert [str(k.value) for k in table.rows] == ["store", "uplink:refused", "mdns"]


def test_diagnostics_timing_from_the_frames() -> None:
    """Round-trip percentiles and the gap before each request, from the wire's frames
    (issue 14): a timeout (an empty rx) is not a round trip; the gap counts from the
    last frame before the request."""
    from tui.screens import wire_timing

    frames = []
    t = 0.0
    for i in range(100):
        frames.append({"t": t, "dir": "tx", "hex": "02 00 30 03 35"})
        if i % 10 == 9:
            frames.append({"t": t + 0.3, "dir": "rx", "hex": "", "note": "timeout"})
            t += 0.3 + 0.005
            continue
        frames.append({"t": t + 0.002 + i * 0.0001, "dir": "rx", "hex": "02 00 35"})
        t += 0.002 + i * 0.0001 + 0.005
    got = wire_timing(frames)
    assert got["n"] == 90
    assert got["p50"] is not None and abs(got["p50"] - 6.8) < 0.2
    assert got["p99"] is not None and abs(got["p99"] - 11.8) < 0.2
    assert got["gap_min"] is not None and abs(got["gap_min"] - 5.0) < 0.01

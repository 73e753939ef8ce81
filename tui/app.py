"""The technician's dashboard: ``edge-agent-tui --socket PATH [--read-only]``.

Attaches to the agent's Unix socket, loads current state, then follows the event stream
(one link worker for the whole app). If the agent goes away the top bar turns red and
the dashboard reconnects by itself; if its terminal goes away (SSH dropped) it exits.
Screens: overview, devices, device detail, diagnostics, discovery inbox, events, plugins.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from textual.app import App
from textual.binding import Binding
from textual.theme import Theme

from edge_agent.api.schema import AuditRecord, CommandAnswer, Device, Status, Wire
from edge_agent.client import AgentClient, default_socket
from edge_agent.errors import ClientError
from tui.screens import (
    AlarmsScreen,
    CustodyScreen,
    DeployableScreen,
    DeviceScreen,
    DevicesScreen,
    DiagnosticsScreen,
    DoorsScreen,
    EventsScreen,
    FleetScreen,
    HelpScreen,
    InboxScreen,
    JumpScreen,
    OverviewScreen,
    PluginsScreen,
    ScanScreen,
    UsageScreen,
)
from tui.state import Model

HIGH_CONTRAST = Theme(
    name="high-contrast", primary="#ffffff", secondary="#ffff00", accent="#00ffff",
    warning="#ffff00", error="#ff3030", success="#00ff00", foreground="#ffffff",
    background="#000000", surface="#000000", panel="#202020", dark=True,
)

SCREENS = {"overview": OverviewScreen, "devices": DevicesScreen, "inbox": InboxScreen,
           "custody": CustodyScreen, "deployable": DeployableScreen, "usage": UsageScreen,
           "alarms": AlarmsScreen, "doors": DoorsScreen, "scan": ScanScreen,
           "events": EventsScreen, "plugins": PluginsScreen}


class Dashboard(App[None]):
    CSS = """
    .heading { text-style: bold; margin-top: 1; }
    .hidden { display: none; }
    #devices, #events, #wire, #inbox, #plugins { height: 1fr; }
    #attention { height: auto; max-height: 10; }
    #diag-counters { height: 5; }
    #rtt { width: 1fr; height: 3; }
    #counters { width: 2fr; }
    """
    # Our own ':' jump replaces Textual's command palette (and its footer entry).
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("colon", "jump", "Jump", key_display=":"),
    ]

    def __init__(self, socket_path: str, *, read_only: bool = False,
                 theme: str | None = None, title: str = "edge-agent",
                 model: Model | None = None, fleet: str | None = None) -> None:
        """``model``: render a given state and do not connect (snapshot tests).
        ``fleet``: headquarters' view of every site, from fleet ingest's directory."""
        super().__init__()
        self.socket_path = socket_path
        self.fleet_dir = fleet
        self.read_only = read_only
        self.offline_model = model is not None
        self.model = model or Model()
        self.title = title
        self.register_theme(HIGH_CONTRAST)
        if theme:
            self.theme = theme
        self._wire_pending = False
        self._fetching: set[str] = set()

    def on_mount(self) -> None:
        if self.fleet_dir is not None:
            self.model.link_text = f"fleet · {self.fleet_dir} (from edge-agent fleet ingest)"
            self.model.connected = True
            self.push_screen(FleetScreen())
            return
        self.push_screen(OverviewScreen())
        if self.offline_model:
            return
        self.run_worker(self._link(), exclusive=True, group="link", name="agent-link")
        self.set_interval(2.0, self._poll_slow)

    # ------------------------------------------------------------ agent link

    async def _link(self) -> None:
        m = self.model
        delay = 0.5
        while True:
            try:
                async with AgentClient(self.socket_path, timeout=5) as c:
                    stream = c.stream()
                    # Subscribe first, then read the snapshot: a change made in between
                    # arrives on the stream instead of being lost.
                    kind, _ = await anext(stream)
                    if kind != "open":
                        raise ValueError(f"unexpected first stream item {kind!r}")
                    status: Status = await c.call("status")
                    m.status = status
                    devices: list[Device] = await c.call("devices")
                    for d in devices:
                        m.put_device(d)
                    m.events.clear()
                    events: list[AuditRecord] = await c.call("events", limit=200)
                    for e in events:
                        m.put_event(e)
                    m.plugins = await c.call("plugins")
                    m.inbox = await c.call("inbox")
                    m.custody = await c.call("custody")
                    m.connected = True
                    site = status["site"]
                    m.link_text = (f"site {site['id']} · agent {status['agent']['version']}"
                                   f" · {self.socket_path}")
                    delay = 0.5
                    last_seq = m.events[-1]["seq"] if m.events else 0
                    async for kind, data in stream:
                        if kind == "device":
                            m.put_device(cast(Device, data))
                        elif kind == "audit" and data["seq"] > last_seq:
                            m.put_event(cast(AuditRecord, data))
                        elif kind == "overflow":
                            break
                    reason = "the agent closed the event stream"
            except ClientError as exc:
                reason = str(exc)
            except (OSError, ValueError) as exc:
                reason = repr(exc)
            m.connected = False
            m.link_text = f"LINK TO AGENT LOST — {reason} — reconnecting…"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _poll_slow(self) -> None:
        """Status, inbox and plugins change rarely: poll them, don't stream them."""
        if not self.model.connected:
            return
        try:
            async with AgentClient(self.socket_path, timeout=3) as c:
                self.model.status = await c.call("status")
                self.model.inbox = await c.call("inbox")
                self.model.plugins = await c.call("plugins")
                self.model.custody = await c.call("custody")
        except ClientError:
            pass

    def fetch_wire(self, device_id: str, then: Callable[[Wire], None]) -> None:
        if self.offline_model:
            then(self.model.wire.get(device_id) or {"bus": None, "frames": []})
            return
        if self._wire_pending or not self.model.connected:
            return
        self._wire_pending = True

        async def go() -> None:
            try:
                async with AgentClient(self.socket_path, timeout=3) as c:
                    then(await c.call("wire", id=device_id, limit=80))
            except ClientError:
                pass
            finally:
                self._wire_pending = False

        self.run_worker(go(), group="wire")

    def _fetch(self, group: str, fn: Callable[[AgentClient], Awaitable[None]]) -> None:
        """One read at a time per group, off the UI; nothing while the link is down."""
        if self.offline_model or not self.model.connected or group in self._fetching:
            return
        self._fetching.add(group)

        async def go() -> None:
            try:
                async with AgentClient(self.socket_path, timeout=5) as c:
                    await fn(c)
            except ClientError:
                pass
            finally:
                self._fetching.discard(group)

        self.run_worker(go(), group=group)

    def fetch_fleet(self) -> None:
        """Headquarters: ingest's files, read in a thread (never on the UI loop)."""
        if self.fleet_dir is None or self.offline_model or "fleet" in self._fetching:
            return
        self._fetching.add("fleet")
        from edge_agent.api.fleetview import fleet

        async def go() -> None:
            try:
                assert self.fleet_dir is not None
                self.model.fleet = await asyncio.to_thread(fleet, Path(self.fleet_dir))
            finally:
                self._fetching.discard("fleet")

        self.run_worker(go(), group="fleet")

    def fetch_deployable(self, classes: list[str]) -> None:
        async def fn(c: AgentClient) -> None:
            for cls in classes:
                self.model.deployable[cls] = await c.call("deployable", equipment=cls)
        self._fetch("deployable", fn)

    def fetch_person(self, officer: str) -> None:
        async def fn(c: AgentClient) -> None:
            self.model.people[officer] = await c.call("person", id=officer)
        self._fetch("person", fn)

    def fetch_usage(self, days: float) -> None:
        import edge_agent.api.usage as usage

        async def fn(c: AgentClient) -> None:
            self.model.usage = await c.call("events", action=usage.ACTION,
                                            since=usage.since(days, time.time()),
                                            limit=100_000)
        self._fetch("usage", fn)

    # ------------------------------------------------------------ commands

    def run_command(self, what: str, target: str, answer: dict[str, Any] | None, *,
                    extra: dict[str, Any] | None = None) -> None:
        if answer is None:
            return
        if self.read_only:
            self.notify("read-only dashboard: no actions", severity="error")
            return
        if not self.model.connected:
            # What the screens show is the last known state: nothing is sent on it.
            self.notify("the link to the agent is down: nothing was sent", severity="error",
                        timeout=8)
            return
        body = {"reason": answer["reason"], **(extra or {})}
        if answer.get("compartment") is not None:
            body["compartment"] = answer["compartment"]

        async def go() -> None:
            try:
                async with AgentClient(self.socket_path, timeout=10) as c:
                    result: CommandAnswer = await c.call(what, id=target, body=body)
                seq = result["audit_seq"]
                waiting = dict(result).get("waiting")  # a weapon compartment: the first of two
                if waiting:
                    self.notify(f"not opened yet: {waiting}", severity="warning", timeout=10)
                    return
                self.notify(f"{what.replace('_', ' ')} done" + (f" (audit #{seq})" if seq
                                                                 else ""), timeout=4)
            except ClientError as exc:
                self.notify(f"{what.replace('_', ' ')} failed: {exc}", severity="error",
                            timeout=8)

        self.run_worker(go(), group="command")

    # ------------------------------------------------------------ navigation

    def goto(self, name: str) -> None:
        screen = SCREENS[name]()
        while len(self.screen_stack) > 2:
            self.pop_screen()
        if name == "overview":
            return
        self.push_screen(screen)

    def action_goto(self, name: str) -> None:
        self.goto(name)

    def open_device(self, device_id: str) -> None:
        self.push_screen(DeviceScreen(device_id))

    def open_diagnostics(self, device_id: str) -> None:
        self.push_screen(DiagnosticsScreen(device_id))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_jump(self) -> None:
        if self.fleet_dir is not None:
            self.notify("the fleet view has one screen: sites, worst first", timeout=4)
            return
        choices = [*SCREENS, *sorted(self.model.devices),
                   *(f"diag {d}" for d in sorted(self.model.devices))]
        self.push_screen(JumpScreen(choices), self._jump)

    def _jump(self, target: str | None) -> None:
        if not target:
            return
        # Case does not matter: device ids are mixed-case (armoury:WC12-DEMO-1).
        by_lower = {d.lower(): d for d in self.model.devices}
        low = target.lower()
        if low in SCREENS:
            self.goto(low)
        elif low.startswith("diag ") and low[5:] in by_lower:
            self.open_diagnostics(by_lower[low[5:]])
        elif low in by_lower:
            self.open_device(by_lower[low])
        else:
            matches = [d for lo, d in by_lower.items() if low in lo]
            if len(matches) == 1:
                self.open_device(matches[0])
            else:
                self.notify(f"no screen or device {target!r}", severity="warning")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edge-agent-tui",
                                description="Technician dashboard for edge-agent.")
    p.add_argument("--socket", default=default_socket(), help="agent API socket")
    p.add_argument("--read-only", action="store_true",
                   help="offer no action that changes hardware")
    p.add_argument("--theme", choices=["textual-dark", "textual-light", "ansi-dark",
                                       "ansi-light", "high-contrast"],
                   help="colour theme (NO_COLOR is honoured whatever the theme)")
    p.add_argument("--title", help="what the top bar calls this site (default: its id)")
    p.add_argument("--fleet", metavar="DIR", help="headquarters: every site at a glance "
                   "from the --out directory of 'edge-agent fleet ingest' (no agent socket)")
    args = p.parse_args(argv)
    if not sys.stdout.isatty():
        print("edge-agent-tui needs a terminal", file=sys.stderr)
        return 2
    read_only = args.read_only or os.environ.get("EDGE_AGENT_TUI_READ_ONLY") == "1"
    Dashboard(args.socket, read_only=read_only, theme=args.theme,
              title=args.title or "edge-agent", fleet=args.fleet).run()
    return 0


if __name__ == "__main__":
    # As `python -m tui.app`: run the imported module's main, not this __main__ copy
    # (the screens check their app against tui.app.Dashboard).
    from tui.app import main as _main

    sys.exit(_main())

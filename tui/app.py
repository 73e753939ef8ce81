"""First technician dashboard: live devices, the selected device's compartments, events.

It attaches to the agent's Unix socket, loads current state, then follows the event
stream. Device rows are updated in place by key and in batches at a bounded rate (a
DataTable repaints whole on any change, so per-event updates would not scale). If the
agent goes away the header says so and the dashboard reconnects by itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from edge_agent.client import AgentClient
from edge_agent.errors import ClientError

DEVICE_COLUMNS = ("device", "vendor", "model", "state", "address", "seen", "items", "open")
LINK_STYLE = {"online": "green", "degraded": "yellow", "offline": "bold red",
              "connecting": "cyan", "discovered": "cyan", "error": "bold red"}


def _link(link: str) -> Text:
    return Text(link, style=LINK_STYLE.get(link, ""))


def device_cells(d: dict[str, Any]) -> tuple[Any, ...]:
    comps = d.get("compartments") or []
    items = sum(1 for c in comps if c["item"] == "present")
    opened = sum(1 for c in comps if c["door"] == "open")
    seen = time.strftime("%H:%M:%S", time.localtime(d["last_seen"])) if d.get("last_seen") else "-"
    return (d["id"], d.get("vendor") or d["plugin"], d.get("model") or "-", _link(d["link"]),
            d.get("address", ""), seen, f"{items}/{len(comps)}", str(opened))


def comp_cells(c: dict[str, Any]) -> tuple[Any, ...]:
    door = Text("OPEN", style="bold yellow") if c["door"] == "open" else Text(c["door"])
    item = Text(c["item"], style="green" if c["item"] == "present" else "dim")
    return (str(c["index"]), door, item, c.get("tag") or "", c.get("fault") or "")


class DashboardApp(App[None]):
    CSS = """
    #link { height: 1; padding: 0 1; background: $panel; }
    #link.down { background: $error; color: $text; }
    #devices { height: 1fr; }
    #lower { height: 1fr; }
    #compartments { width: 1fr; }
    #events { width: 2fr; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self, socket_path: str, *, title: str = "edge-agent",
                 flush_interval: float = 0.25) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.title = title
        self.flush_interval = flush_interval
        self.devices: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self.selected: str | None = None
        self.connected = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting…", id="link")
        yield DataTable(id="devices", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="lower"):
            yield DataTable(id="compartments", cursor_type="row")
            with Vertical(id="events"):
                yield RichLog(id="eventlog", max_lines=500, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#devices", DataTable)
        for col in DEVICE_COLUMNS:
            table.add_column(col, key=col)
        comps = self.query_one("#compartments", DataTable)
        for col in ("#", "door", "item", "tag", "fault"):
            comps.add_column(col, key=col)
        self.run_worker(self._follow(), exclusive=True, group="link", name="agent-link")
        self.set_interval(self.flush_interval, self._flush_pending)

    # ------------------------------------------------------------ agent link

    def _set_link(self, up: bool, text: str) -> None:
        self.connected = up
        w = self.query_one("#link", Static)
        w.update(text)
        w.set_class(not up, "down")

    async def _follow(self) -> None:
        delay = 0.5
        while True:
            try:
                async with AgentClient(self.socket_path, timeout=5) as c:
                    status = await c.get("/v1/status")
                    devices = await c.get("/v1/devices")
                    events = await c.get("/v1/events", limit=50)
                    self._set_link(True, f"site {status['site']['id']} · agent "
                                   f"{status['agent']['version']} · health {status['health']}"
                                   f" · {self.socket_path}")
                    delay = 0.5
                    for d in devices:
                        self._pending[d["id"]] = d
                    log = self.query_one("#eventlog", RichLog)
                    for e in events:
                        log.write(self._event_text(e))
                    async for kind, data in c.stream():
                        if kind == "device":
                            self._pending[data["id"]] = data
                        elif kind == "audit":
                            log.write(self._event_text(data))
                        elif kind == "overflow":
                            break
            except ClientError as exc:
                self._set_link(False, f"LINK TO AGENT LOST: {exc} · retrying")
            except (OSError, ValueError) as exc:
                self._set_link(False, f"LINK TO AGENT LOST: {exc!r} · retrying")
            else:
                self._set_link(False, "LINK TO AGENT LOST: stream ended · retrying")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    @staticmethod
    def _event_text(e: dict[str, Any]) -> Text:
        where = e.get("device") or ""
        if e.get("compartment"):
            where += f"/{e['compartment']}"
        style = "bold red" if e.get("outcome") not in (None, "ok") else ""
        t = Text(f"{e['ts'][11:19]} #{e['seq']} {e['action']} {where} ", style=style)
        if e.get("actor") and e["actor"] != "agent":
            t.append(f"by {e['actor']} ", style="bold")
        if e.get("reason"):
            t.append(repr(e["reason"]), style="italic")
        return t

    # ------------------------------------------------------------ table updates

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        table = self.query_one("#devices", DataTable)
        with self.batch_update():
            for dev_id, d in pending.items():
                cells = device_cells(d)
                if dev_id in self.devices:
                    for col, value in zip(DEVICE_COLUMNS, cells, strict=True):
                        table.update_cell(dev_id, col, value)
                else:
                    table.add_row(*cells, key=dev_id)
                self.devices[dev_id] = d
            if self.selected is None and self.devices:
                self.selected = next(iter(self.devices))
            if self.selected in pending:
                self._show_compartments(self.devices[self.selected])

    def _show_compartments(self, d: dict[str, Any]) -> None:
        comps = self.query_one("#compartments", DataTable)
        comps.border_title = d["id"]
        wanted = {str(c["index"]): c for c in d.get("compartments") or []}
        existing = {str(k.value) for k in comps.rows}
        if set(wanted) != existing:
            comps.clear()
            for key, c in wanted.items():
                comps.add_row(*comp_cells(c), key=key)
            return
        for key, c in wanted.items():
            for col, value in zip(("#", "door", "item", "tag", "fault"), comp_cells(c),
                                  strict=True):
                comps.update_cell(key, col, value)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "devices" or event.row_key.value is None:
            return
        self.selected = str(event.row_key.value)
        if self.selected in self.devices:
            self._show_compartments(self.devices[self.selected])

    def action_refresh(self) -> None:
        # An exclusive worker replaces (cancels) the running link: reload from scratch.
        self.run_worker(self._follow(), exclusive=True, group="link", name="agent-link")

"""The dashboard's screens. Each renders from the shared :class:`tui.state.Model` on a
timer (bounded repaint rate) and updates table rows by key, never rebuilding a table
because one value changed."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import ActiveBinding, Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.suggester import SuggestFromList
from textual.widgets import DataTable, Footer, Input, Label, Sparkline, Static

import edge_agent.api.times as times
from edge_agent.api.schema import AuditRecord, Custody, Device, Wire
from tui.state import attention_order, counts, faults, site_alarms
from tui.vtable import VirtualTable

if TYPE_CHECKING:
    from tui.app import Dashboard

LINK_STYLE = {"online": "green", "degraded": "yellow", "offline": "bold red",
              "connecting": "cyan", "discovered": "cyan", "error": "bold red",
              "ignored": "dim", "blocked": "bold reverse red"}


def link_text(link: str) -> Text:
    return Text(link, style=LINK_STYLE.get(link, ""))


def hhmmss(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"


def event_text(e: AuditRecord) -> Text:
    where = e.get("device") or ""
    if e.get("compartment"):
        where += f"/{e['compartment']}"
    bad = e.get("outcome") not in (None, "ok")
    t = Text(f"{times.local(e['ts'], date=False)} #{e['seq']} ", style="dim")
    t.append(e["action"], style="bold red" if bad else "bold")
    t.append(f" {where}")
    if e["actor"] not in ("", "agent", e.get("device")):
        t.append(f" by {e['actor']}", style="bold")
    if e.get("reason"):
        t.append(f" {e['reason']!r}", style="italic")
    return t


class LinkBar(Static):
    """One line: site, agent health and the state of the link to the agent."""

    DEFAULT_CSS = """
    LinkBar { height: 1; padding: 0 1; background: $panel; }
    LinkBar.down { background: $error; color: $text; text-style: bold; }
    """

    def refresh_from(self, app: Dashboard) -> None:
        m = app.model
        # Where you are (the screens you came through), then the link. A link that is
        # down comes first: it is what the technician must see, however narrow.
        crumbs = " > ".join(s.crumb for s in app.screen_stack if isinstance(s, BaseScreen))
        link = ("READ-ONLY · " if app.read_only else "") + m.link_text
        text = f"{link} │ {crumbs}" if not m.connected else f"{crumbs} │ {link}"
        if text != getattr(self, "_shown", None):
            self._shown = text
            self.update(text)
            self.set_class(not m.connected, "down")


class KeysFooter(Footer):
    """Textual's footer, recomposed only when the keys it shows change.

    The footer rebuilds all its key widgets on every bindings signal, and a screen change
    sends several (focus, screen stack, app focus) with the same keys: at 200 columns that
    was most of the time from Enter on a device to its screen drawn."""

    _shown_keys: tuple[tuple[str, str, str, bool], ...] | None = None

    def bindings_changed(self, screen: Screen[object]) -> None:
        keys = tuple((k, b.binding.action, b.binding.description, b.enabled)
                     for k, b in screen.active_bindings.items() if b.binding.show)
        if keys == self._shown_keys and self._bindings_ready:
            return
        super().bindings_changed(screen)
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self._shown_keys = keys  # a recompose is on its way with these keys


class BaseScreen(Screen[None]):
    """Link bar on top, footer with this screen's keys below, periodic refresh."""

    BINDINGS = [Binding("escape", "back", "Back")]
    refresh_interval = 0.25

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        """Help and jump first in the footer: at 80 columns a device's actions fill the
        line, and what is cut must never be the way to find the rest."""
        bindings = super().active_bindings
        first = [k for k, b in bindings.items() if b.binding.action in ("help", "jump")]
        return {**{k: bindings[k] for k in first}, **bindings}

    @property
    def crumb(self) -> str:
        """This screen's name in the breadcrumb on the link bar."""
        return type(self).__name__.removesuffix("Screen")

    @property
    def dash(self) -> Dashboard:
        from tui.app import Dashboard

        assert isinstance(self.app, Dashboard)
        return self.app

    def compose(self) -> ComposeResult:
        yield LinkBar(id="linkbar")
        yield from self.body()
        yield KeysFooter()

    def body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.set_interval(self.refresh_interval, self._tick)
        self._tick()

    def _tick(self) -> None:
        if self.app.screen is not self:
            return  # screens under the active one wait; they catch up when shown again
        self.query_one(LinkBar).refresh_from(self.dash)
        self.render_model()

    def on_screen_resume(self) -> None:
        self._tick()

    def render_model(self) -> None:
        pass

    def action_back(self) -> None:
        # Esc in a filter box cancels the edit; Esc with a filter applied clears it;
        # only then does Esc leave the screen (the less/k9s habit).
        box = next(iter(self.query("#filter").results(Input)), None)
        applied = str(getattr(self, "filter_text", ""))
        if box is not None and self.focused is box:
            box.value = applied
            box.set_class(not applied, "hidden")
            self.focus_next()
            return
        if applied and box is not None:
            box.value = ""
            box.post_message(Input.Submitted(box, ""))
            return
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()


class KeyedTable(DataTable[Any]):
    """A DataTable updated by row key: add, update changed cells, remove."""

    def cursor_key(self) -> str | None:
        """Key of the row under the cursor (same API as VirtualTable)."""
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return str(key) if key else None

    def sync(self, rows: dict[str, tuple[Any, ...]], columns: tuple[str, ...]) -> None:
        existing = {str(k.value) for k in self.rows}
        for key in existing - rows.keys():
            self.remove_row(key)
        for key, cells in rows.items():
            if key in existing:
                for col, value in zip(columns, cells, strict=True):
                    if self.get_cell(key, col) != value:
                        self.update_cell(key, col, value)
            else:
                self.add_row(*cells, key=key)


# ------------------------------------------------------------------------ overview


class OverviewScreen(BaseScreen):
    BINDINGS = [
        Binding("escape", "back", "Back", show=False),  # nowhere to go back to
        Binding("d", "app.goto('devices')", "Devices"),
        Binding("i", "app.goto('inbox')", "Inbox"),
        Binding("e", "app.goto('events')", "Events"),
        Binding("p", "app.goto('plugins')", "Plugins"),
        Binding("c", "app.goto('custody')", "Custody"),
        # Not in the footer: at 80 columns it would push out "? Help" and ": Jump".
        Binding("a", "app.goto('alarms')", "Alarms", show=False),
        Binding("o", "app.goto('doors')", "Open doors", show=False),
        Binding("b", "app.goto('scan')", "Bus doctor", show=False),
        Binding("B", "bundle", "Support bundle", show=False),
        Binding("enter", "open", "Open device"),
    ]

    def body(self) -> ComposeResult:
        yield Static(id="summary")
        yield Label("Needs attention", classes="heading")
        yield KeyedTable(id="attention", cursor_type="row")
        yield Label("Last events", classes="heading")
        yield Static(id="last-events")

    def on_mount(self) -> None:
        t = self.query_one("#attention", KeyedTable)
        for col in ("device", "state", "why"):
            t.add_column(col, key=col)
        super().on_mount()

    def render_model(self) -> None:
        m = self.dash.model
        st = m.status
        c = counts(m)
        site = st["site"] if st else {}
        health = st["health"] if st else "?"
        summary = Text()
        if not m.connected:
            # What follows is the last known state, not the present: say so first.
            summary.append("LINK DOWN: last known state below\n", style="bold reverse red")
        summary.append(f"{site.get('name') or site.get('id', '?')}  ", style="bold")
        summary.append(f"agent {health}  ", style="green" if health == "ok" else "bold red")
        summary.append(f"online {c.get('online', 0)}  ", style="green")
        summary.append(f"degraded {c.get('degraded', 0)}  ",
                       style="yellow" if c.get("degraded") else "")
        summary.append(f"offline {c.get('offline', 0) + c.get('error', 0)}  ",
                       style="bold red" if c.get("offline") or c.get("error") else "")
        alarms = site_alarms(m)
        summary.append(f"alarms {len(alarms)}  ", style="bold red" if alarms else "")
        summary.append(f"inbox {len(m.inbox)}")
        for a in alarms[:8]:
            # Severity in words and in reverse video, not in colour alone: it must read
            # the same with NO_COLOR, on a monochrome screen and in a photo of it.
            critical = a["severity"] == "critical"
            summary.append("\n")
            summary.append(" !! CRITICAL " if critical else " ! warning ",
                           style="bold reverse red" if critical else "bold reverse yellow")
            summary.append(f" {a['message']}",
                           style="bold red" if critical else "bold yellow")
        if len(alarms) > 8:
            summary.append(f"\n... and {len(alarms) - 8} more alarms", style="bold")
        if st and st["audit"].get("error"):
            summary.append(f"\nAUDIT LOG: {st['audit']['error']} (unlocks refused)",
                           style="bold red")
        # A plugin the agent refused or isolated drives nothing: its devices never show.
        for p in m.plugins:
            if p["status"] != "loaded":
                summary.append(f"\n ! plugin {p['name']} {p['status']} ",
                               style="bold reverse yellow")
                summary.append(f" {(p['reason'] or p['last_fault'] or '')[:60]} (p)",
                               style="bold yellow")
        self.query_one("#summary", Static).update(summary)
        # Devices waiting in the inbox are the inbox's (counted above), not an outage.
        bad = [d for d in attention_order(list(m.devices.values()))
               if (d["link"] != "online" or d["alarms"]) and d["link"] != "ignored"
               and not (d["link"] == "discovered" and not d["adopted"])]
        rows = {d["id"]: (d["id"], link_text(d["link"]),
                          (d.get("reason") or d["error"] or "; ".join(
                              a["message"].removeprefix(d["id"] + ": ")
                              for a in d["alarms"]))[:60]) for d in bad}
        self.query_one("#attention", KeyedTable).sync(rows, ("device", "state", "why"))
        last = list(m.events)[-8:]
        self.query_one("#last-events", Static).update(
            Text("\n").join(event_text(e) for e in last) if last else Text("no events yet"))

    @on(DataTable.RowSelected, "#attention")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.dash.open_device(str(event.row_key.value))

    def action_open(self) -> None:
        if (key := self.query_one("#attention", KeyedTable).cursor_key()) is not None:
            self.dash.open_device(key)

    def action_bundle(self) -> None:
        """B: a support bundle (``edge-agent bundle``) written to the current directory,
        for the vendor; nothing personal or secret goes in it."""
        if not self.dash.model.connected:
            self.notify("the link to the agent is down: no bundle", severity="error")
            return
        name = f"edge-agent-bundle-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz"
        path = os.path.abspath(name)
        self.notify(f"writing the support bundle {name}…", timeout=3)

        async def go() -> None:
            code, _out, err = await run_cli(self.dash.socket_path, "bundle", "--output",
                                            path, timeout=120)
            if code == 0:
                self.notify(f"support bundle written: {path}", timeout=15)
            else:
                self.notify(f"support bundle failed: {err.strip()}", severity="error",
                            timeout=15)

        self.run_worker(go(), group="bundle", exclusive=True)


# ------------------------------------------------------------------------ devices

# Widths + a space each fit 80 columns, the smallest terminal a technician's laptop gives
# over SSH: the vendor column must show there too.
# A wide terminal's spare columns go to the device, model, transport and vendor columns
# (the third figure: their shares).
DEVICE_COLUMNS = (("device", 22, 3), ("state", 10, 0), ("model", 8, 2), ("transport", 13, 4),
                  ("seen", 8, 0), ("faults", 6, 0), ("vendor", 6, 2))


class DevicesScreen(BaseScreen):
    """Every device, live. A virtual table: only the visible rows are drawn."""

    refresh_interval = 0.1  # small, frequent batches: a keypress never waits for a big one
    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("g", "diagnostics", "Diagnostics"),
    ]

    def body(self) -> ComposeResult:
        table = VirtualTable(DEVICE_COLUMNS, id="devices", keep_tail=(3,))
        yield Static(table.header(), id="devices-header")
        yield table
        yield Input(placeholder="filter devices (Enter to apply, empty to clear)",
                    id="filter", classes="hidden")

    def on_mount(self) -> None:
        self.filter_text = ""
        self.sort_column: int | None = None
        self.full_sync = True
        self.marked: set[str] = set()
        self.query_one("#devices", VirtualTable).focus()
        super().on_mount()

    def _cells(self, d: Device) -> tuple[Any, ...]:
        m = self.dash.model
        state = link_text(d["link"])
        if m.recently_changed(d["id"], "link"):
            state = Text("*", style="bold magenta") + state
        address = d["address"]
        return (d["id"], state, d["model"] or "-", address,
                hhmmss(d["last_seen"]), str(faults(d)), d["vendor"] or d["plugin"])

    def _wanted(self, key: str) -> bool:
        d = self.dash.model.devices.get(key)
        if d is None:
            return False
        text = " ".join((d["id"], d["vendor"], d["model"], d["address"], d["link"]))
        return self.filter_text in text.lower()

    def render_model(self) -> None:
        """Touch only rows whose device changed (or whose change marker expired)."""
        m = self.dash.model
        t = self.query_one("#devices", VirtualTable)
        changed = m.drain_changed()
        if self.full_sync:
            self.full_sync = False
            changed = set(m.devices)
        expired = {k for k in self.marked if not m.recently_changed(k, "link")}
        for key in changed | expired:
            d = m.devices.get(key)
            if d is None:
                t.remove_row(key)
                continue
            t.set_row(key, self._cells(d))
            if m.recently_changed(key, "link"):
                self.marked.add(key)
        self.marked -= expired

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.remove_class("hidden")
        box.focus()

    @on(Input.Submitted, "#filter")
    def _apply_filter(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip().lower()
        t = self.query_one("#devices", VirtualTable)
        t.set_filter(self._wanted if self.filter_text else None)
        t.focus()
        if not self.filter_text:
            event.input.add_class("hidden")

    def on_resize(self) -> None:
        t = self.query_one("#devices", VirtualTable)
        if t.fit(self.size.width - 2):  # the scroll bar's column
            self._header()

    def _header(self) -> None:
        self.query_one("#devices-header", Static).update(
            self.query_one("#devices", VirtualTable).header())

    def action_sort(self) -> None:
        """s: the next column, ascending (the header marks it ▲)."""
        t = self.query_one("#devices", VirtualTable)
        self.sort_column = 0 if self.sort_column is None else (
            (self.sort_column + 1) % len(DEVICE_COLUMNS))
        t.sort_by(self.sort_column)
        self._header()
        self.notify(f"sorted by {DEVICE_COLUMNS[self.sort_column][0]} (S reverses)", timeout=2)

    def action_reverse(self) -> None:
        """S: the same column the other way (▼)."""
        t = self.query_one("#devices", VirtualTable)
        col, rev = t.sorting
        t.sort_by(col if col is not None else 0, not rev)
        self.sort_column = col if col is not None else 0
        self._header()

    def _selected(self) -> str | None:
        return self.query_one("#devices", VirtualTable).cursor_key()

    def action_open(self) -> None:
        if (dev := self._selected()) is not None:
            self.dash.open_device(dev)

    @on(VirtualTable.RowSelected, "#devices")
    def _row_selected(self, event: VirtualTable.RowSelected) -> None:
        self.dash.open_device(event.key)

    def action_diagnostics(self) -> None:
        if (dev := self._selected()) is not None:
            self.dash.open_diagnostics(dev)


# ------------------------------------------------------------------------ device


def compartment_grid(d: Device, per_row: int = 4) -> Table:
    grid = Table.grid(padding=(0, 1))
    oos = d["out_of_service"]
    comps = d["compartments"]
    for start in range(0, len(comps), per_row):
        cells = []
        for c in comps[start:start + per_row]:
            idx = c["index"]
            if str(idx) in oos:
                label, style = "OUT OF SERVICE", "reverse dim"
            elif c.get("fault"):
                label, style = f"FAULT {c['fault']}", "bold red"
            else:
                door = "OPEN" if c["door"] == "open" else "locked"
                item = "item" if c["item"] == "present" else "empty"
                label = f"{door} {item}"
                style = "bold yellow" if c["door"] == "open" else (
                    "green" if c["item"] == "present" else "")
            if c.get("tag"):
                label += f" {c['tag']}"
            cells.append(Text(f"{idx:>2} {label:<13}", style=style))
        grid.add_row(*cells)
    return grid


class DeviceScreen(BaseScreen):
    BINDINGS = [
        Binding("u", "unlock", "Unlock"),
        Binding("i", "identify", "Identify"),
        Binding("o", "out_of_service", "Out of service"),
        Binding("r", "return_to_service", "Return to service"),
        Binding("n", "unignore", "Un-ignore"),
        Binding("g", "diagnostics", "Diagnostics"),
    ]

    def __init__(self, device_id: str) -> None:
        super().__init__()
        self.device_id = device_id

    @property
    def crumb(self) -> str:
        return self.device_id

    def body(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="identity")
            yield Static(id="grid")
            yield Label("Recent events of this device", classes="heading")
            yield Static(id="dev-events")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("unlock", "identify", "out_of_service", "return_to_service",
                      "unignore") and self.dash.read_only:
            return False  # hidden from the footer and refused
        if action in ("unlock", "out_of_service"):
            # A reader or a device with no compartments has nothing to open or take out.
            d = self.dash.model.devices.get(self.device_id)
            return d is None or bool(d["compartments"])
        if action == "unignore":
            # Offered only for an ignored device: back to the inbox, for adoption.
            d = self.dash.model.devices.get(self.device_id)
            return bool(d and d["link"] == "ignored")
        if action == "return_to_service":
            # Offered only while something on this device is out of service.
            d = self.dash.model.devices.get(self.device_id)
            return bool(d and d.get("out_of_service"))
        if action == "identify":
            # Offered only where the device declares it (contract 1.2 capabilities).
            d = self.dash.model.devices.get(self.device_id)
            return d is None or "identify" in d["capabilities"]
        return True

    def render_model(self) -> None:
        d = self.dash.model.devices.get(self.device_id)
        if d is None:
            self.query_one("#identity", Static).update(f"{self.device_id}: not (yet) known")
            return
        caps = (*d["capabilities"], d["link"], bool(d.get("out_of_service")))
        if caps != getattr(self, "_caps", None):
            self._caps = caps
            self.refresh_bindings()  # the footer offers what this device can do
        info = d.get("info") or {}
        ident = Text()
        ident.append(f"{d['id']}  ", style="bold")
        ident.append_text(link_text(d["link"]))
        if d.get("reason"):
            ident.append(f"  {d['reason']}", style="italic")
        ident.append(f"\n{d['vendor'] or info.get('vendor', '')} "
                     f"{d['model'] or info.get('model', '')}"
                     f"  serial {info.get('serial') or '-'}"
                     f"  firmware {info.get('firmware') or '-'}")
        ident.append(f"\n{d['source']} · {d['address']}")
        if iface := d["properties"].get("interface"):
            ident.append(f"\nfound on interface {iface}", style="dim")
        # What only the vendor's plugin knows, as labelled rows (contract 1.2): the
        # dashboard names no vendor's fields.
        for row in d.get("diagnostics") or []:
            if row["source"] == "device":
                ident.append(f"\n{row['label']}: {row['value']}", style="dim")
        for a in d["alarms"]:
            ident.append(f"\nALARM {a['message'].removeprefix(d['id'] + ': ')}",
                         style="bold red" if a["severity"] == "critical" else "bold yellow")
        self.query_one("#identity", Static).update(ident)
        self.query_one("#grid", Static).update(compartment_grid(d))
        evs = [e for e in self.dash.model.events if e.get("device") == self.device_id][-10:]
        self.query_one("#dev-events", Static).update(
            Text("\n").join(event_text(e) for e in evs) if evs else Text("none yet"))

    def action_unlock(self) -> None:
        self.app.push_screen(ConfirmScreen(
            f"Unlock a compartment of {self.device_id}", need_compartment=True),
            lambda r: self.dash.run_command("unlock", self.device_id, r))

    def action_unignore(self) -> None:
        self.app.push_screen(ConfirmScreen(
            f"Un-ignore {self.device_id}: back in the inbox, to be adopted"),
            lambda r: self.dash.run_command("unignore", self.device_id, r))

    def action_out_of_service(self) -> None:
        self.app.push_screen(ConfirmScreen(
            f"Take a compartment of {self.device_id} out of service", need_compartment=True),
            lambda r: self.dash.run_command("out_of_service", self.device_id, r))

    def action_return_to_service(self) -> None:
        d = self.dash.model.devices.get(self.device_id)
        out = ", ".join(sorted(d.get("out_of_service") or {}, key=int)) if d else ""
        self.app.push_screen(ConfirmScreen(
            f"Return a compartment of {self.device_id} to service (out: {out})",
            need_compartment=True),
            lambda r: self.dash.run_command("out_of_service", self.device_id, r,
                                            extra={"out": False}))

    def action_identify(self) -> None:
        self.app.push_screen(ConfirmScreen(f"Identify {self.device_id}"),
                             lambda r: self.dash.run_command("identify", self.device_id, r))

    def action_diagnostics(self) -> None:
        self.dash.open_diagnostics(self.device_id)


class ConfirmScreen(ModalScreen[dict[str, Any] | None]):
    """Asks for a reason (and a compartment); Enter confirms, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 70; height: auto; border: thick $warning;
                               background: $surface; padding: 1 2; }
    """

    def __init__(self, title: str, *, need_compartment: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.need_compartment = need_compartment

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text)
            if self.need_compartment:
                yield Input(placeholder="compartment number", id="compartment",
                            type="integer")
            yield Input(placeholder="reason (required, goes into the audit log)", id="reason")
            yield Label("Enter to confirm · Esc to cancel", id="hint")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        comp = None
        if self.need_compartment:
            raw = self.query_one("#compartment", Input).value.strip()
            if not raw.isdigit() or int(raw) < 1:
                self.query_one("#hint", Label).update("give a compartment number")
                self.query_one("#compartment", Input).focus()
                return
            comp = int(raw)
            if event.input.id == "compartment":
                self.query_one("#reason", Input).focus()
                return
        if not reason:
            self.query_one("#hint", Label).update("a reason is required")
            self.query_one("#reason", Input).focus()
            return
        self.dismiss({"reason": reason, "compartment": comp})

    def action_cancel(self) -> None:
        self.dismiss(None)


# ------------------------------------------------------------------------ diagnostics


class DiagnosticsScreen(BaseScreen):
    refresh_interval = 1.0

    def __init__(self, device_id: str) -> None:
        super().__init__()
        self.device_id = device_id
        self.rtt: list[float] = []

    @property
    def crumb(self) -> str:
        return "Diagnostics"

    def body(self) -> ComposeResult:
        yield Static(id="diag-head")
        with Horizontal(id="diag-counters"):
            yield Static(id="counters")
            yield Sparkline([], id="rtt")
        yield KeyedTable(id="wire", cursor_type="row")

    def on_mount(self) -> None:
        t = self.query_one("#wire", KeyedTable)
        for col in WIRE_COLUMNS:
            t.add_column(col, key=col)
        super().on_mount()

    def render_model(self) -> None:
        self.dash.fetch_wire(self.device_id, self._show)

    def _show(self, wire: Wire) -> None:
        d = self.dash.model.devices.get(self.device_id)
        c: dict[str, Any] = dict(d.get("counters") or {}) if d else {}
        bus_c = wire.get("counters") or {}
        head = Text(f"{self.device_id}  ", style="bold")
        head.append_text(link_text(d["link"] if d else "?"))
        if wire.get("bus") is None and wire.get("transport"):
            head.append(f"\n{wire.get('transport')} (the driver's own link)")
        else:
            head.append(f"\nbus {wire.get('bus') or '-'} {wire.get('address') or ''} "
                        f"{wire.get('settings') or ''}")
        bi = wire.get("bus_info") or {}
        if bi:
            head.append(f"\nanswering: {len(bi.get('answering', []))} board(s)"
                        + (f"  ERROR {bi['error']}" if bi.get("error") else ""))
        if d and (iface := d["properties"].get("interface")):
            head.append(f"\nfound on interface {iface}")
        self.query_one("#diag-head", Static).update(head)
        rtt = bus_c.get("last_rtt_ms") or c.get("last_poll_ms")
        if rtt is not None:
            self.rtt = ([*self.rtt, float(rtt)])[-60:]
        # The plugin's own figures (checksum errors, garbage bytes …) as labelled rows
        # (contract 1.2): the dashboard names no vendor's fields.
        vendor_rows = "  ".join(f"{r['label']} {r['value']}"
                                for r in wire.get("diagnostics") or [])
        self.query_one("#counters", Static).update(
            f"polls {c.get('polls', 0)}  failures {c.get('poll_failures', 0)}  "
            f"timeouts {c.get('timeouts', 0)} (bus {bus_c.get('timeouts', 0)})\n"
            f"{vendor_rows or 'no figures from the plugin'}\n"
            f"reconnects {c.get('reconnects', 0)}  bus reopens {bus_c.get('reopens', 0)}  "
            f"plugin faults {c.get('plugin_faults', 0)}\n"
            + wire_timing_line(wire["frames"], rtt))
        self.query_one("#rtt", Sparkline).data = self.rtt
        rows = {}
        frames = wire["frames"][-61:]  # 60 shown, and the one before for the first gap
        for i in range(1 if len(frames) > 60 else 0, len(frames)):
            f = frames[i]
            stamp = time.strftime("%H:%M:%S", time.localtime(f["t"]))
            gap = f"+{(f['t'] - frames[i - 1]['t']) * 1000:.1f}" if i else ""
            rows[f"{f['t']:.6f}-{i}"] = (
                f"{stamp}.{int(f['t'] % 1 * 1000):03d}", gap, f["dir"], f["hex"][:32],
                (f["decoded"] or f["note"] or "")[:60])
        self.query_one("#wire", KeyedTable).sync(rows, WIRE_COLUMNS)


WIRE_COLUMNS = ("time", "gap ms", "dir", "hex", "decoded")


def wire_timing(frames: list[Any]) -> dict[str, float | int | None]:
    """Round trips (a request to the first bytes back) and the idle gap before each
    request (from the last frame before it), in ms, from the frames on the wire."""
    rtts: list[float] = []
    gaps: list[float] = []
    sent: float | None = None
    last: float | None = None
    for f in frames:
        if f["dir"] == "tx":
            if last is not None:
                gaps.append((f["t"] - last) * 1000)
            sent = f["t"]
        elif f["dir"] == "rx" and sent is not None and f.get("hex"):
            rtts.append((f["t"] - sent) * 1000)
            sent = None
        last = f["t"]

    def pct(xs: list[float], q: float) -> float | None:
        return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else None

    return {"n": len(rtts), "p50": pct(rtts, 0.5), "p95": pct(rtts, 0.95),
            "p99": pct(rtts, 0.99), "gap_p50": pct(gaps, 0.5), "gap_min": min(gaps)
            if gaps else None}


def wire_timing_line(frames: list[Any], last_rtt: float | None) -> str:
    t = wire_timing(frames)

    def ms(v: float | int | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    if not t["n"]:
        return f"round trip {ms(last_rtt)} ms"
    return (f"round trip p50 {ms(t['p50'])} p95 {ms(t['p95'])} p99 {ms(t['p99'])} ms "
            f"({t['n']})\ngap before a request p50 {ms(t['gap_p50'])} min "
            f"{ms(t['gap_min'])} ms")


# ------------------------------------------------------------------------ inbox


class InboxScreen(BaseScreen):
    BINDINGS = [Binding("a", "adopt", "Adopt"), Binding("x", "ignore", "Ignore")]

    def body(self) -> ComposeResult:
        yield KeyedTable(id="inbox", cursor_type="row")

    def on_mount(self) -> None:
        t = self.query_one("#inbox", KeyedTable)
        for col in ("found", "what", "why"):
            t.add_column(col, key=col)
        super().on_mount()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in ("adopt", "ignore") and self.dash.read_only)

    def render_model(self) -> None:
        rows = {e["id"]: (e["id"], e["what"][:40], e["why"][:80])
                for e in self.dash.model.inbox}
        self.query_one("#inbox", KeyedTable).sync(rows, ("found", "what", "why"))

    def _selected(self) -> str | None:
        return self.query_one("#inbox", KeyedTable).cursor_key()

    def action_adopt(self) -> None:
        if (item := self._selected()) is not None:
            self.app.push_screen(ConfirmScreen(f"Adopt {item}"),
                                 lambda r: self.dash.run_command("adopt", item, r))

    def action_ignore(self) -> None:
        if (item := self._selected()) is not None:
            self.app.push_screen(ConfirmScreen(f"Ignore {item} (persists)"),
                                 lambda r: self.dash.run_command("ignore", item, r))


# ------------------------------------------------------------------------ events

EVENT_COLUMNS = ("seq", "time", "action", "outcome", "device", "actor", "reason")


class EventsScreen(BaseScreen):
    BINDINGS = [Binding("slash", "filter", "Filter", key_display="/"),
                Binding("G,end", "follow", "Follow", key_display="G")]
    MAX_ROWS = 500

    def body(self) -> ComposeResult:
        yield Label("", id="follow")
        yield KeyedTable(id="events", cursor_type="row")
        yield Label("", id="no-match", classes="hidden")
        yield Input(placeholder="filter: text, or device=… action=… actor=… since=HH:MM",
                    id="filter", classes="hidden")

    def on_mount(self) -> None:
        t = self.query_one("#events", KeyedTable)
        for col in EVENT_COLUMNS:
            t.add_column(col, key=col)
        self.filter_text = ""
        self.shown_version = -1
        super().on_mount()

    def on_resize(self) -> None:
        self.shown_version = -1  # the reason column's width follows the terminal's

    def _match(self, e: AuditRecord) -> bool:
        # The filter text is lowercased, so every value is compared lowercased too
        # (device ids are mixed-case: armoury:WC12-DEMO-1).
        for term in self.filter_text.split():
            if "=" in term:
                k, v = term.split("=", 1)
                if k == "since":
                    try:  # the one rule: HH:MM today, or ISO (naive = local)
                        since = times.to_utc_iso(v)
                    except ValueError:
                        return False
                    if e["ts"] < since:
                        return False
                elif v not in str(e.get(k) or "").lower():
                    return False
            elif term not in " ".join(str(e.get(k, "")) for k in
                                      ("action", "device", "actor", "reason")).lower():
                return False
        return True

    def render_model(self) -> None:
        m = self.dash.model
        if m.events_version == self.shown_version:
            return
        self.shown_version = m.events_version
        # The reason takes what a wide terminal has beside the other columns (~100).
        reason_w = max(40, self.size.width - 100)
        evs = [e for e in m.events if self._match(e)][-self.MAX_ROWS:]
        rows = {str(e["seq"]): (str(e["seq"]), times.local(e["ts"], date=False),
                                e["action"],
                                # "ok" is the rule: only the exceptions are written out
                                "" if e["outcome"] == "ok" else e["outcome"],
                                (e.get("device") or "") + (f"/{e['compartment']}"
                                                           if e.get("compartment") else ""),
                                e["actor"], (e.get("reason") or "")[:reason_w])
                for e in evs}
        t = self.query_one("#events", KeyedTable)
        # Follow the tail only while the cursor is on the newest row (the `less +F`
        # habit): reading history on a live site must not be pulled away from it.
        following = t.row_count == 0 or t.cursor_row >= t.row_count - 1
        with self.app.batch_update():
            t.sync(rows, EVENT_COLUMNS)
            if t.row_count and following:
                t.move_cursor(row=t.row_count - 1)
            self.query_one("#follow", Label).update(
                "following new events" if following else
                "PAUSED: reading history (G or End: follow again)")
            none = self.query_one("#no-match", Label)
            none.update(f"no events match “{self.filter_text}” (/ to change, empty to clear)"
                        if self.filter_text and not rows else "")
            none.set_class(not (self.filter_text and not rows), "hidden")

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.remove_class("hidden")
        box.focus()

    def action_follow(self) -> None:
        t = self.query_one("#events", KeyedTable)
        if t.row_count:
            t.move_cursor(row=t.row_count - 1)
        self.shown_version = -1
        self.render_model()

    @on(Input.Submitted, "#filter")
    def _apply(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip().lower()
        self.shown_version = -1
        self.query_one("#events", KeyedTable).focus()
        if not self.filter_text:
            event.input.add_class("hidden")
        self.render_model()


# ------------------------------------------------------------------------ custody

CUSTODY_COLUMNS = ("officer", "name", "kit", "where", "due", "status")


class CustodyScreen(BaseScreen):
    """Who holds what, overdue first; compartments open for someone; two-person issues
    waiting for their second person."""

    refresh_interval = 1.0
    BINDINGS = [Binding("enter", "person", "Person"),
                Binding("y", "deployable", "Deployable"),
                Binding("u", "usage", "Usage")]

    # On top of this screen, so Esc comes back here.
    def action_deployable(self) -> None:
        self.app.push_screen(DeployableScreen())

    def action_usage(self) -> None:
        self.app.push_screen(UsageScreen())

    def body(self) -> ComposeResult:
        yield Static(id="custody-summary")
        yield KeyedTable(id="custody", cursor_type="row")

    def on_mount(self) -> None:
        t = self.query_one("#custody", KeyedTable)
        for col in CUSTODY_COLUMNS:
            t.add_column(col, key=col)
        super().on_mount()

    def render_model(self) -> None:
        view = self.dash.model.custody
        now = time.time()
        rows = {}
        holdings = view["holdings"] if view else []
        for h in holdings:
            late = h["due"] < now
            # Short words: at 80 columns the status must still show.
            status = Text(("OVERDUE!" if h["overdue"] == "critical" else "OVERDUE")
                          if late else "out",
                          style="bold red reverse" if h["overdue"] == "critical" else
                          "bold yellow" if late else "")
            where = f"{h['device']}/{h['compartment']}"
            if len(where) > 20:  # the end names the board and compartment
                where = "…" + where[-19:]
            rows[str(h["seq"])] = (h["officer"], h["name"][:12], h["equipment"], where,
                                   time.strftime("%a %H:%M", time.localtime(h["due"])), status)
        self.query_one("#custody", KeyedTable).sync(rows, CUSTODY_COLUMNS)
        overdue = sum(1 for h in holdings if h["due"] < now)
        text = Text(f"{len(holdings)} item(s) out", style="bold")
        if overdue:
            text.append(f"  {overdue} OVERDUE", style="bold red")
        for s in (view["sessions"] if view else []):
            text.append(f"\nopen for {s['officer']}: {s['equipment']} at {s['station']} "
                        f"({s['kind']})", style="cyan")
        for w in (view["waiting"] if view else []):
            text.append(f"\n{w['station']}: {w['officer']}'s {w['equipment']} waits for a "
                        "second person (armourer)", style="bold yellow")
        if view is None:
            text = Text("no custody information yet (stations configured?)", style="dim")
        self.query_one("#custody-summary", Static).update(text)
        self._officers = {str(h["seq"]): h["officer"] for h in holdings}

    _officers: dict[str, str] = {}

    @on(DataTable.RowSelected, "#custody")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        officer = self._officers.get(str(event.row_key.value))
        if officer:
            self.app.push_screen(PersonScreen(officer))

    def action_person(self) -> None:
        key = self.query_one("#custody", KeyedTable).cursor_key()
        if key is not None and key in self._officers:
            self.app.push_screen(PersonScreen(self._officers[key]))


# ------------------------------------------------------------------------ deployable

def custody_classes(view: Custody | None) -> list[str]:
    return list(view.get("classes") or []) if view is not None else []


DEPLOYABLE_COLUMNS = ("class", "available", "where", "deployable", "note")
OFFICER_COLUMNS = ("officer", "name", "qualified until", "holds")


class DeployableScreen(BaseScreen):
    """Per equipment class the stations issue: items ready to issue and where, and the
    officers who could be issued one now (a valid qualification, under their limit);
    below, those officers for the class under the cursor."""

    refresh_interval = 2.0
    BINDINGS = [Binding("enter", "person", "Person")]

    def body(self) -> ComposeResult:
        yield KeyedTable(id="deploy-classes", cursor_type="row")
        yield Label("Deployable officers", classes="heading", id="deploy-heading")
        yield KeyedTable(id="deploy-officers", cursor_type="row")

    def on_mount(self) -> None:
        for table, cols in (("#deploy-classes", DEPLOYABLE_COLUMNS),
                            ("#deploy-officers", OFFICER_COLUMNS)):
            t = self.query_one(table, KeyedTable)
            for col in cols:
                t.add_column(col, key=col)
        super().on_mount()

    def _tick(self) -> None:
        if self.app.screen is self:
            self.dash.fetch_deployable(custody_classes(self.dash.model.custody))
        super()._tick()

    def render_model(self) -> None:
        m = self.dash.model
        rows: dict[str, tuple[Any, ...]] = {}
        for cls in custody_classes(m.custody):
            d = m.deployable.get(cls)
            if d is None:
                rows[cls] = (cls, "…", "", "", "")
                continue
            n = sum(d["available"].values())
            where = ", ".join(f"{k} {v}" for k, v in sorted(d["available"].items()))
            note = ("STALE entitlements" if d["stale_entitlements"] else
                    f"{d['qualified_but_nothing_available']} qualified, nothing available"
                    if d["qualified_but_nothing_available"] else "")
            rows[cls] = (cls, Text(str(n), style="" if n else "bold red"), where[:30],
                         str(len(d["officers"])),
                         Text(note, style="bold red" if note else ""))
        classes = self.query_one("#deploy-classes", KeyedTable)
        classes.sync(rows, DEPLOYABLE_COLUMNS)
        chosen = classes.cursor_key()
        d = m.deployable.get(chosen or "")
        officers = {o["officer"]: (o["officer"], str(o.get("name", ""))[:16],
                                   str(o.get("qualified_until") or "-"), str(o["holds"]))
                    for o in (d["officers"] if d else [])}
        self.query_one("#deploy-heading", Label).update(
            f"Deployable officers: {chosen}" if chosen else "Deployable officers")
        self.query_one("#deploy-officers", KeyedTable).sync(officers, OFFICER_COLUMNS)

    def action_person(self) -> None:
        key = self.query_one("#deploy-officers", KeyedTable).cursor_key()
        if key is not None:
            self.app.push_screen(PersonScreen(key))

    @on(DataTable.RowSelected, "#deploy-officers")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(PersonScreen(str(event.row_key.value)))


# ------------------------------------------------------------------------ person


class PersonScreen(BaseScreen):
    """One officer: qualifications in the snapshot in force (valid or expired), what
    they hold now, and their last audit records."""

    refresh_interval = 2.0

    def __init__(self, officer: str) -> None:
        super().__init__()
        self.officer = officer

    @property
    def crumb(self) -> str:
        return self.officer

    def body(self) -> ComposeResult:
        yield Static(id="person-head")
        yield Label("Qualifications", classes="heading")
        yield KeyedTable(id="person-quals", cursor_type="row")
        yield Label("Holds", classes="heading")
        yield KeyedTable(id="person-holds", cursor_type="row")
        yield Label("Last events", classes="heading")
        yield Static(id="person-events")

    def on_mount(self) -> None:
        for table, cols in (("#person-quals", ("class", "until", "state")),
                            ("#person-holds", ("kit", "where", "due", "status"))):
            t = self.query_one(table, KeyedTable)
            for col in cols:
                t.add_column(col, key=col)
        super().on_mount()

    def _tick(self) -> None:
        if self.app.screen is self:
            self.dash.fetch_person(self.officer)
        super()._tick()

    def render_model(self) -> None:
        p = self.dash.model.people.get(self.officer)
        head = Text(f"{self.officer}", style="bold")
        if p is None:
            head.append("  (asking the agent…)", style="dim")
            self.query_one("#person-head", Static).update(head)
            return
        head.append(f"  {p['name']}")
        if p["roles"]:
            head.append(f"  roles: {', '.join(p['roles'])}")
        if not p["in_snapshot"]:
            head.append("\nNOT IN THE ENTITLEMENTS IN FORCE (still holds kit)",
                        style="bold reverse red")
        head.append(f"\nentitlements {p['snapshot'] or 'none'}",
                    style="bold red" if p["stale_entitlements"] else "dim")
        if p["stale_entitlements"]:
            head.append(" STALE", style="bold reverse red")
        self.query_one("#person-head", Static).update(head)
        quals = {k: (k, q["until"], Text("valid" if q["valid"] else "EXPIRED",
                                         style="green" if q["valid"] else "bold red"))
                 for k, q in p["qualifications"].items()}
        self.query_one("#person-quals", KeyedTable).sync(quals, ("class", "until", "state"))
        now = time.time()
        holds = {}
        for h in p["holdings"]:
            late = h["due"] < now
            holds[str(h["seq"])] = (
                h["equipment"], f"{h['device']}/{h['compartment']}"[-24:],
                time.strftime("%a %H:%M", time.localtime(h["due"])),
                Text("OVERDUE" if late else "out", style="bold red" if late else ""))
        self.query_one("#person-holds", KeyedTable).sync(holds, ("kit", "where", "due",
                                                                 "status"))
        events = p["events"][:8]
        self.query_one("#person-events", Static).update(
            Text("\n").join(event_text(e) for e in events) if events
            else Text("no events in 30 days", style="dim"))


# ------------------------------------------------------------------------ usage


class UsageScreen(BaseScreen):
    """Issues per hour of the day per equipment class over the last 7 days, as a chart
    (plotext, the same figure as ``edge-agent report usage``)."""

    refresh_interval = 1.0  # draws when the answer comes; asks again every 30 s
    days = 7.0
    _asked = 0.0

    def body(self) -> ComposeResult:
        yield Static(id="usage-head")
        yield Static(id="usage-chart")

    def _tick(self) -> None:
        if self.app.screen is self and time.monotonic() - self._asked > 30:
            self._asked = time.monotonic()
            self.dash.fetch_usage(self.days)
        super()._tick()

    def on_resize(self) -> None:
        self._drawn_for = None
        self.render_model()

    _drawn_for: tuple[int, int, int] | None = None

    def render_model(self) -> None:
        import edge_agent.api.usage as usage

        events = self.dash.model.usage
        head = self.query_one("#usage-head", Static)
        if events is None:
            head.update(Text("asking the agent for 7 days of issues…", style="dim"))
            return
        counts = usage.per_hour(events)
        total = sum(sum(v) for v in counts.values())
        # The totals per class in words: the chart tells classes apart by colour only.
        head.update(Text(f"issues per hour of the day, last {self.days:g} days: {total} "
                         "in all (" + ", ".join(f"{k} {sum(v)}" for k, v in counts.items())
                         + ")", style="bold"))
        size = (self.size.width, self.size.height, len(events))
        if size == self._drawn_for:
            return
        self._drawn_for = size
        chart = self.query_one("#usage-chart", Static)
        if not counts:
            chart.update(Text("no issues in that time", style="dim"))
            return
        chart.update(Text.from_ansi(usage.chart(counts, self.size.width - 2,
                                                max(self.size.height - 5, 8))))


# ------------------------------------------------------------------------ plugins


class PluginsScreen(BaseScreen):
    def body(self) -> ComposeResult:
        yield KeyedTable(id="plugins", cursor_type="row")

    def on_mount(self) -> None:
        t = self.query_one("#plugins", KeyedTable)
        for col in ("plugin", "status", "version", "contract", "faults", "reason"):
            t.add_column(col, key=col)
        super().on_mount()

    def render_model(self) -> None:
        rows = {}
        for p in self.dash.model.plugins:
            status = Text(p["status"], style="green" if p["status"] == "loaded" else "bold red")
            rows[p["name"]] = (p["name"], status, p["version"] or "-",
                               p["contract"] or "-", str(p["faults"]),
                               (p["reason"] or p["last_fault"] or "")[:200])
        self.query_one("#plugins", KeyedTable).sync(
            rows, ("plugin", "status", "version", "contract", "faults", "reason"))


# ------------------------------------------------------------------------ palette, help


class JumpScreen(ModalScreen[str | None]):
    """``:`` — type a screen name or a device id (Tab completes), Enter to go."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("tab", "complete", "Complete", priority=True)]
    DEFAULT_CSS = """
    JumpScreen { align: center top; }
    JumpScreen > Input { width: 70; margin-top: 2; border: thick $accent; }
    """

    def __init__(self, choices: list[str]) -> None:
        super().__init__()
        self.choices = choices

    def compose(self) -> ComposeResult:
        yield Input(placeholder=": overview | devices | inbox | events | plugins | "
                    "<device id> | diag <device id>",
                    suggester=SuggestFromList(self.choices, case_sensitive=False), id="jump")

    def action_complete(self) -> None:
        """Tab: take the suggestion shown (the longest common start of every match, when
        several match)."""
        box = self.query_one("#jump", Input)
        typed = box.value.lower()
        matches = [c for c in self.choices if c.lower().startswith(typed)] if typed else []
        if not matches:
            return
        common = os.path.commonprefix([m.lower() for m in matches])  # noqa: RUF071 - by char
        best = matches[0] if len(matches) == 1 else matches[0][:len(common)]
        box.value = best
        box.cursor_position = len(best)

    @on(Input.Submitted)
    def _go(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


HELP = """\
[b]edge-agent dashboard[/b] — keyboard first; the mouse is optional.

  [b]:[/b]        jump to a screen or device (Tab completes, Enter goes)
  [b]/[/b]        filter the current table      [b]s S[/b] sort, reverse (devices)
  [b]Enter[/b]    open the selected device      [b]g[/b]  diagnostics of a device
  [b]Esc[/b]      back                          [b]q[/b]  quit      [b]?[/b]  this help
  [b]d i e p c[/b] devices, inbox, events, plugins, custody (from the overview)
  [b]a o[/b]      alarms ([b]k[/b] acknowledge), open doors site-wide (from the overview)
  [b]b B[/b]      bus doctor (scan a bus), support bundle (from the overview)
  Device: [b]u[/b] unlock  [b]i[/b] identify  [b]o[/b] out of service  [b]r[/b] return to service
          [b]n[/b] un-ignore. Each asks for a reason for the audit log.
  Inbox:  [b]a[/b] adopt   [b]x[/b] ignore (persists).
  Custody: [b]Enter[/b] the officer  [b]y[/b] deployable per class  [b]u[/b] usage chart.

The top bar shows where you are (Overview > Devices > …). Red: the
link to the agent is down; the dashboard reconnects by itself.
Started with --read-only, no action that moves hardware is offered.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: 100%; max-width: 84; height: auto; border: thick $accent;
                          background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Static(HELP)

    def action_close(self) -> None:
        self.dismiss(None)


# ------------------------------------------------------------------------ fleet


FLEET_COLUMNS = ("site", "state", "alarms", "backlog", "oldest", "status", "snapshot")
FLEET_STYLE = {"TAMPERED": "bold reverse red", "DEAD": "bold reverse red",
               "STOPPED": "bold red",
               "QUIET": "bold yellow", "degraded": "yellow", "ok": "green", "unknown": "dim"}


class FleetScreen(BaseScreen):
    """Headquarters: every site at a glance, worst first (tampered, dead, quiet,
    degraded), from what ``edge-agent fleet ingest`` keeps; below, the selected site's
    chain problems and alarms."""

    refresh_interval = 2.0
    BINDINGS = [Binding("escape", "back", "Back", show=False)]

    def body(self) -> ComposeResult:
        yield Static(id="fleet-summary")
        yield KeyedTable(id="fleet", cursor_type="row")
        yield Static(id="fleet-detail")

    def on_mount(self) -> None:
        t = self.query_one("#fleet", KeyedTable)
        for col in FLEET_COLUMNS:
            t.add_column(col, key=col)
        super().on_mount()

    def _tick(self) -> None:
        if self.app.screen is self:
            self.dash.fetch_fleet()
        super()._tick()

    def render_model(self) -> None:
        sites = self.dash.model.fleet
        if sites is None:
            self.query_one("#fleet-summary", Static).update(
                Text(f"reading {self.dash.fleet_dir}…", style="dim"))
            return
        by_state: dict[str, int] = {}
        for r in sites:
            by_state[r["state"]] = by_state.get(r["state"], 0) + 1
        summary = Text(f"{len(sites)} site(s): ", style="bold")
        for state in ("TAMPERED", "DEAD", "STOPPED", "QUIET", "degraded", "unknown", "ok"):
            if by_state.get(state):
                summary.append(f"{by_state[state]} {state}  ", style=FLEET_STYLE[state])
        if not sites:
            summary = Text(f"no sites in {self.dash.fleet_dir} yet (is fleet ingest "
                           "running?)", style="dim")
        self.query_one("#fleet-summary", Static).update(summary)
        rows = {r["site"]: (r["site"][:18], Text(r["state"], style=FLEET_STYLE.get(
                    r["state"], "")), str(len(r["alarms"])),
                    "-" if r["backlog"] is None else str(r["backlog"]),
                    times.ago(r["oldest_unsent_s"]), times.ago(r["status_age_s"]),
                    (r["entitlements"] or "-")[:14]) for r in sites}
        table = self.query_one("#fleet", KeyedTable)
        table.sync(rows, FLEET_COLUMNS)
        key = table.cursor_key()
        chosen = next((r for r in sites if r["site"] == key), None)
        detail = Text()
        if chosen is not None:
            detail.append(f"{chosen['site']}: seq {chosen['last_seq']} taken", style="bold")
            if chosen["gaps_waiting"]:
                detail.append(f", {chosen['gaps_waiting']} record(s) waiting for a gap")
            for prob in chosen["problems"][:4]:
                detail.append(f"\n TAMPER {prob}", style="bold red")
            for alarm in chosen["alarms"][:4]:
                detail.append(f"\n alarm: {alarm}", style="yellow")
        self.query_one("#fleet-detail", Static).update(detail)


# ------------------------------------------------------------------------ alarms


ALARM_COLUMNS = ("sev", "alarm", "since", "seen by")


class AlarmsScreen(BaseScreen):
    """Every alarm raised now: not yet acknowledged first, critical first, oldest first.
    ``k`` acknowledges the selected one (who and why go into the audit log); it stays
    until its cause clears."""

    refresh_interval = 1.0
    BINDINGS = [Binding("k", "ack", "Acknowledge")]

    def body(self) -> ComposeResult:
        yield Static(id="alarms-summary")
        yield KeyedTable(id="alarms", cursor_type="row")

    def on_mount(self) -> None:
        t = self.query_one("#alarms", KeyedTable)
        for col in ALARM_COLUMNS:
            t.add_column(col, key=col)
        super().on_mount()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "ack" and self.dash.read_only)

    def render_model(self) -> None:
        alarms = site_alarms(self.dash.model)
        rows = {}
        for a in alarms:
            critical = a["severity"] == "critical"
            acked = a.get("acked")
            sev = Text("!! CRIT" if critical else "! warn",
                       style=("bold reverse red" if critical else "bold yellow")
                       if not acked else "dim")
            width = max(20, self.size.width - 46)  # since and seen-by stay visible at 80
            rows[a["id"]] = (sev, Text(a["message"][:width], style="dim" if acked else ""),
                             hhmmss(a["since"]),
                             f"{acked['by']}: {acked['reason']}"[:30] if acked else "-")
        table = self.query_one("#alarms", KeyedTable)
        if list(rows) != [str(k.value) for k in table.rows]:
            table.clear()  # a new alarm or an acknowledgement reorders: a few rows, redrawn
        table.sync(rows, ALARM_COLUMNS)
        open_ = [a for a in alarms if not a.get("acked")]
        text = Text(f"{len(alarms)} alarm(s), {len(open_)} not acknowledged",
                    style="bold red" if open_ else "bold")
        if not alarms:
            text = Text("no alarms", style="green")
        self.query_one("#alarms-summary", Static).update(text)

    def action_ack(self) -> None:
        key = self.query_one("#alarms", KeyedTable).cursor_key()
        if key is not None:
            self.app.push_screen(ConfirmScreen(f"Acknowledge {key}"),
                                 lambda r: self.dash.run_command("ack_alarm", key, r))


# ------------------------------------------------------------------------ open doors


DOOR_COLUMNS = ("device", "comp", "item", "state", "model")


class DoorsScreen(BaseScreen):
    """Every compartment whose door is open now, site-wide, and every one out of
    service; Enter opens its device."""

    refresh_interval = 1.0
    BINDINGS = [Binding("enter", "open", "Open device")]

    def body(self) -> ComposeResult:
        yield Static(id="doors-summary")
        yield KeyedTable(id="doors", cursor_type="row")

    def on_mount(self) -> None:
        t = self.query_one("#doors", KeyedTable)
        for col in DOOR_COLUMNS:
            t.add_column(col, key=col)
        super().on_mount()

    def render_model(self) -> None:
        rows: dict[str, tuple[Any, ...]] = {}
        open_n = oos_n = 0
        for dev_id, d in sorted(self.dash.model.devices.items()):
            oos = d.get("out_of_service") or {}
            for c in d["compartments"]:
                is_open = c["door"] == "open"
                out = str(c["index"]) in oos
                if not (is_open or out):
                    continue
                open_n += is_open
                oos_n += out
                state = Text("OPEN", style="bold yellow") if is_open else Text("closed")
                if out:
                    state.append(" · out of service", style="dim")
                rows[f"{dev_id}|{c['index']}"] = (dev_id[-26:], str(c["index"]), c["item"],
                                                 state, d["model"][:12])
        self.query_one("#doors", KeyedTable).sync(rows, DOOR_COLUMNS)
        self.query_one("#doors-summary", Static).update(Text(
            f"{open_n} door(s) open, {oos_n} compartment(s) out of service, across "
            f"{len(self.dash.model.devices)} device(s)", style="bold"))

    def action_open(self) -> None:
        key = self.query_one("#doors", KeyedTable).cursor_key()
        if key is not None:
            self.dash.open_device(key.split("|", 1)[0])

    @on(DataTable.RowSelected, "#doors")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.dash.open_device(str(event.row_key.value).split("|", 1)[0])


# ------------------------------------------------------------------------ bus doctor

SCAN_BUS_COLUMNS = ("bus", "port", "line", "answering")
SCAN_COLUMNS = ("line", "plugin", "boards", "which", "rtt ms", "silent", "error")


async def run_cli(socket_path: str, *args: str, timeout: float = 600) -> tuple[int, str, str]:
    """An ``edge-agent`` command as its own process (the one implementation of scan and
    bundle), without blocking the dashboard. Bounded by ``timeout``."""
    import asyncio
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent.cli", *args, "--socket", socket_path,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, "", f"gave up after {timeout:g} s"
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


class ScanScreen(BaseScreen):
    """The bus doctor from the dashboard: pick one of the site's buses, give a reason,
    and the agent lends it for ``edge-agent scan`` (audited; its boards are offline
    meanwhile and come back after). Every line setting the plugins' probes declare,
    every address: which boards answer, how fast, to which plugin."""

    BINDINGS = [Binding("enter", "scan", "Scan at its baud"),
                Binding("f", "scan(True)", "Full sweep")]

    def body(self) -> ComposeResult:
        yield Label("Enter: scan a bus at its baud · f: at every line setting\n"
                    "The agent lends the bus (audited); its boards are offline meanwhile.")
        yield KeyedTable(id="scan-buses", cursor_type="row")
        yield Static("", id="scan-state")
        yield KeyedTable(id="scan-results", cursor_type="row")

    def on_mount(self) -> None:
        for tid, cols in (("#scan-buses", SCAN_BUS_COLUMNS), ("#scan-results", SCAN_COLUMNS)):
            t = self.query_one(tid, KeyedTable)
            for col in cols:
                t.add_column(col, key=col)
        self.running: str | None = None
        super().on_mount()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "scan" and self.dash.read_only)

    def render_model(self) -> None:
        st = self.dash.model.status
        buses: list[dict[str, Any]] = list(st["buses"]) if st else []
        rows = {b["id"]: (b["id"], b["port"], b.get("settings", ""),
                          str(len(b.get("answering") or []))) for b in buses}
        self.query_one("#scan-buses", KeyedTable).sync(rows, SCAN_BUS_COLUMNS)

    @on(DataTable.RowSelected, "#scan-buses")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_scan()  # Enter on the table (it takes the key before the screen)

    def action_scan(self, full: bool = False) -> None:
        if self.dash.read_only:
            return
        bus = self.query_one("#scan-buses", KeyedTable).cursor_key()
        if bus is None or self.running:
            return
        st = self.dash.model.status
        info = next((b for b in (st["buses"] if st else []) if b["id"] == bus), {})
        baud = str(info.get("settings", "")).split(" ")[0]
        bauds = None if full or not baud.isdigit() else baud
        what = "every line setting" if bauds is None else f"{bauds} baud"
        self.app.push_screen(
            ConfirmScreen(f"Scan bus {bus} at {what}: its boards are offline until the scan "
                          "is done"),
            lambda answer: self._start(bus, answer, bauds))

    def _start(self, bus: str, answer: dict[str, Any] | None, bauds: str | None) -> None:
        if answer is None:
            return
        if self.dash.read_only or not self.dash.model.connected:
            self.notify("nothing was sent: " + ("read-only dashboard" if self.dash.read_only
                                                 else "the link to the agent is down"),
                        severity="error")
            return
        self.running = bus
        self.query_one("#scan-state", Static).update(
            Text(f"scanning {bus}… (every line setting and address; up to a few minutes)",
                 style="bold yellow"))
        self.run_worker(self._scan(bus, answer["reason"], bauds), group="scan",
                        exclusive=True)

    async def _scan(self, bus: str, reason: str, bauds: str | None) -> None:
        import json

        _code, out, err = await run_cli(self.dash.socket_path, "scan", "--borrow", bus,
                                        "--reason", reason, "--json",
                                        *(("--bauds", bauds) if bauds else ()))
        self.running = None
        state = self.query_one("#scan-state", Static)
        try:
            trials = json.loads(out) if out.strip() else None
        except ValueError:
            trials = None
        if not isinstance(trials, list):
            state.update(Text(f"scan of {bus} failed: {err.strip() or out.strip()}",
                              style="bold red"))
            return
        rows = {}
        for i, t in enumerate(trials):
            rtts = [f["rtt_ms"] for f in t["found"] if f.get("rtt_ms") is not None]
            rows[str(i)] = (t["settings"], t["plugin"], str(len(t["found"])),
                            ", ".join(f["identity"] for f in t["found"])[:40] or "-",
                            f"{min(rtts):.1f}-{max(rtts):.1f}" if rtts else "-",
                            str(t["timeouts"]), (t["error"] or "")[:40])
        self.query_one("#scan-results", KeyedTable).sync(rows, SCAN_COLUMNS)
        best = max(trials, key=lambda t: len(t["found"]), default=None)
        if best and best["found"]:
            state.update(Text(f"{bus}: {len(best['found'])} board(s) answer at "
                              f"{best['settings']} to {best['plugin']}; the bus is back "
                              "with the agent", style="bold green"))
        else:
            state.update(Text(f"{bus}: no board answered at any line setting: check power, "
                              "wiring (A/B), termination", style="bold red"))

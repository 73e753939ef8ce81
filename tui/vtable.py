"""A virtual table: renders only the rows on screen.

Textual's DataTable re-renders and re-indexes the whole table on any change (about
100 ms at 1,000 rows, see field notes), so a table that follows 100 changes a second
starves the keyboard. This widget keeps rows in a dict keyed by device id, keeps the
display order in a list, and draws only the visible lines (``render_line``), so a
change or a keypress costs what the screen shows, whatever the row count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = str | Text


class VirtualTable(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    VirtualTable { height: 1fr; }
    """
    BINDINGS = [
        Binding("up", "cursor(-1)", show=False),
        Binding("down", "cursor(1)", show=False),
        Binding("pageup", "cursor(-20)", show=False),
        Binding("pagedown", "cursor(20)", show=False),
        Binding("home", "cursor(-1000000)", show=False),
        Binding("end", "cursor(1000000)", show=False),
        Binding("enter", "select", show=False),
    ]

    class RowSelected(Message):
        def __init__(self, table: VirtualTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> VirtualTable:
            return self.table

    def __init__(self, columns: Sequence[tuple[str, int] | tuple[str, int, int]], *,
                 id: str | None = None, keep_tail: Sequence[int] = ()) -> None:
        """``columns``: (label, width[, grow]). A wide terminal's spare columns go to
        the columns with a ``grow`` share, in proportion. ``keep_tail``: columns cut at
        the start ("…dev/ttyUSB0") rather than the end (addresses, paths)."""
        super().__init__(id=id)
        self.base = [(c[0], c[1]) for c in columns]
        self.grow = [c[2] if len(c) > 2 else 0 for c in columns]
        self.columns = list(self.base)  # (label, width), widened to the terminal
        self.keep_tail = set(keep_tail)
        self.rows: dict[str, tuple[Cell, ...]] = {}
        self.order: list[str] = []
        self.cursor = 0
        self._sort_col: int | None = None
        self._reverse = False
        self._filter: Callable[[str], bool] | None = None
        self._width = sum(w + 1 for _, w in self.columns)
        self._user_moved = False

    def fit(self, width: int) -> bool:
        """Widen the growing columns to use ``width`` cells (never below their base
        widths). True if the layout changed (the caller redraws its header)."""
        spare = width - sum(w + 1 for _, w in self.base)
        shares = sum(self.grow)
        if spare <= 0 or not shares:
            cols = list(self.base)
        else:
            extra = [spare * g // shares for g in self.grow]
            cols = [(label, w + e) for (label, w), e in zip(self.base, extra, strict=True)]
        if cols == self.columns:
            return False
        self.columns = cols
        self._width = sum(w + 1 for _, w in cols)
        self.virtual_size = Size(self._width, len(self.order))
        self.refresh()
        return True

    # ------------------------------------------------------------ data

    @property
    def row_count(self) -> int:
        return len(self.order)

    def get_row(self, key: str) -> tuple[Cell, ...]:
        return self.rows[key]

    def cursor_key(self) -> str | None:
        return self.order[self.cursor] if 0 <= self.cursor < len(self.order) else None

    def set_row(self, key: str, cells: tuple[Cell, ...]) -> None:
        """Add or replace a row; repaint only if it is (or would be) visible."""
        new = key not in self.rows
        self.rows[key] = cells
        if new or self._sort_col is not None:
            self._reorder()
        elif (i := self._visible(key)) is not None:
            self.refresh_line(i)  # that line only: a busy site changes rows all the time

    def remove_row(self, key: str) -> None:
        if self.rows.pop(key, None) is not None:
            self._reorder()

    def set_filter(self, fn: Callable[[str], bool] | None) -> None:
        self._filter = fn
        self._reorder()

    def sort_by(self, col: int | None, reverse: bool = False) -> None:
        self._sort_col = col
        self._reverse = reverse
        self._reorder()

    @property
    def sorting(self) -> tuple[int | None, bool]:
        return self._sort_col, self._reverse

    def _reorder(self) -> None:
        # The cursor follows its row once the user has moved it; before that it stays on top.
        keep = self.cursor_key() if self._user_moved else None
        keys = [k for k in self.rows if self._filter is None or self._filter(k)]
        if self._sort_col is None:
            keys.sort(reverse=self._reverse)
        else:
            c = self._sort_col
            keys.sort(key=lambda k: (_natural(str(self.rows[k][c])), k), reverse=self._reverse)
        self.order = keys
        self.cursor = keys.index(keep) if keep in keys else min(self.cursor, len(keys) - 1)
        if not self._user_moved:
            self.cursor = 0
        self.cursor = max(self.cursor, 0)
        self.virtual_size = Size(self._width, len(keys))
        self.refresh()

    def _visible(self, key: str) -> int | None:
        """The row's index if it is on screen."""
        try:
            i = self.order.index(key)
        except ValueError:
            return None
        top = int(self.scroll_offset.y)
        return i if top <= i < top + self.size.height else None

    # ------------------------------------------------------------ drawing

    def render_line(self, y: int) -> Strip:
        i = int(self.scroll_offset.y) + y
        width = self.size.width
        if i >= len(self.order):
            return Strip.blank(width)
        key = self.order[i]
        line = Text(no_wrap=True, overflow="ellipsis")
        for n, ((_, w), cell) in enumerate(zip(self.columns, self.rows[key], strict=False)):
            t = cell.copy() if isinstance(cell, Text) else Text(str(cell))
            if n in self.keep_tail and t.cell_len > w:
                t = Text("…") + t[len(t) - w + 1:]
            t.truncate(w, overflow="ellipsis", pad=True)
            line.append_text(t)
            line.append(" ")
        if i == self.cursor:
            line.stylize(Style(reverse=True, bold=self.has_focus))
        segments = list(line.render(self.app.console))
        strip = Strip([s for s in segments if s.text != "\n"])
        strip = strip.crop(int(self.scroll_offset.x), int(self.scroll_offset.x) + width)
        return strip.extend_cell_length(width, self.rich_style).crop(0, width)

    def header(self) -> Text:
        """Column names; the sorted one carries ▲ (ascending) or ▼ (descending)."""
        t = Text(style="bold")
        for i, (label, w) in enumerate(self.columns):
            if i == self._sort_col:
                label = f"{label} {'▼' if self._reverse else '▲'}"
                t.append(label[:w].ljust(w) + " ", style="bold reverse")
            else:
                t.append(label[:w].ljust(w) + " ")
        return t

    # ------------------------------------------------------------ keys

    def action_cursor(self, delta: int) -> None:
        if not self.order:
            return
        self._user_moved = True
        old = self.cursor
        self.cursor = max(0, min(len(self.order) - 1, self.cursor + delta))
        top = int(self.scroll_offset.y)
        h = max(1, self.size.height)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
            self.refresh()
        elif self.cursor >= top + h:
            self.scroll_to(y=self.cursor - h + 1, animate=False)
            self.refresh()
        elif self.cursor != old:
            # Only the two lines that changed: a key costs two lines, not the screen.
            self.refresh_line(old)
            self.refresh_line(self.cursor)

    def action_select(self) -> None:
        key = self.cursor_key()
        if key is not None:
            self.post_message(self.RowSelected(self, key))


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that orders "9" before "10" and "bank:2" before "bank:10"."""
    parts = re.split(r"(\d+)", text.lower())
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)

"""The audit export's CSV: columns and cells safe to open in a spreadsheet or print on a
terminal (stdlib only: the API server and the CLI's offline export share it)."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

CSV_FIELDS = ["seq", "ts", "actor", "action", "device", "compartment", "item", "reason",
              "outcome", "boot", "details", "prev", "hash"]


def csv_line(values: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode()


# Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@")
# C0 controls, DEL and C1 controls: a terminal or spreadsheet acts on them (ESC, BEL, CR).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def csv_value(v: Any) -> str:
    """One CSV cell, safe to open in a spreadsheet or print on a terminal.

    Control characters become ``\\xNN`` and a cell that would start a formula gets a
    leading apostrophe (the OWASP advice); the JSON-lines export keeps every value exact.
    """
    if v is None:
        return ""
    s = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
    s = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)
    if s.startswith(_FORMULA_START):
        s = "'" + s
    return s

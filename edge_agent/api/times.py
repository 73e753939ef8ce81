"""One rule for times everywhere a person reads or types them (CLI and dashboard):

* shown in the local time of the box or terminal, with its zone (``14:02:11 GMT``;
  the audit trail itself stays in UTC ISO 8601);
* typed as ISO 8601 (``2026-11-30T22:41``, naive = local time, or with an offset/``Z``)
  or as ``HH:MM[:SS]`` meaning that time today, local.

Standard library only: the CLI and the dashboard import it without the server.
"""

from __future__ import annotations

import datetime as dt
import re

_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


def parse(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An aware datetime from what a person typed; ValueError with an example if not."""
    text = text.strip()
    now = now or dt.datetime.now().astimezone()
    m = _CLOCK.match(text)
    if m:
        hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        return now.replace(hour=hour, minute=minute, second=second, microsecond=0)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a time: {text!r} (say 22:41 for today, or "
                         "2026-11-30T22:41, local unless it carries an offset)") from exc
    return parsed.astimezone() if parsed.tzinfo is None else parsed


def to_utc_iso(text: str, now: dt.datetime | None = None) -> str:
    """What a person typed, as the audit log's UTC ISO 8601 (for the API's filters)."""
    return parse(text, now).astimezone(dt.UTC).isoformat(timespec="milliseconds")


def local(ts: str | float, *, date: bool = True) -> str:
    """An audit timestamp (ISO) or epoch seconds in local time with its zone."""
    when = (dt.datetime.fromtimestamp(ts) if isinstance(ts, (int, float))
            else dt.datetime.fromisoformat(ts)).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S %Z" if date else "%H:%M:%S")


def zone() -> str:
    return dt.datetime.now().astimezone().strftime("%Z")


def ago(seconds: float | None) -> str:
    """A duration a person reads at a glance: 45s, 12m, 3.5h (``-`` for unknown)."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"

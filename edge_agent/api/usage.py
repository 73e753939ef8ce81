"""Usage: issues per hour of the day per equipment class, from ``custody_opened`` audit
records as the API returns them, and its chart (plotext). Client-side: the CLI's
``report usage`` and the dashboard's usage screen draw the same figure from the same
records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from edge_agent.api.schema import AuditRecord

ACTION = "custody_opened"


def since(days: float, now: float) -> str:
    """The ``since`` filter (ISO UTC) for the last ``days`` days."""
    return dt.datetime.fromtimestamp(now - days * 86400, dt.UTC).isoformat()


def per_hour(events: Iterable[AuditRecord]) -> dict[str, list[int]]:
    """Equipment class -> 24 counts of issues, by local hour of the day."""
    counts: dict[str, list[int]] = {}
    for e in events:
        equipment = str((e.get("details") or {}).get("equipment", "?"))
        hour = dt.datetime.fromisoformat(e["ts"]).astimezone().hour
        counts.setdefault(equipment, [0] * 24)[hour] += 1
    return dict(sorted(counts.items()))


def chart(counts: dict[str, list[int]], width: int, height: int, *,
          colour: bool = True) -> str:
    """The bar chart as text (ANSI colours unless ``colour`` is False)."""
    import plotext as plt  # only the chart needs it

    plt.clear_figure()
    plt.plotsize(max(width, 30), max(height, 8))
    plt.multiple_bar(list(range(24)), list(counts.values()), labels=list(counts))
    plt.xlabel("hour of day (local)")
    plt.ylabel("issues")
    if not colour:
        plt.theme("clear")
    return str(plt.build())

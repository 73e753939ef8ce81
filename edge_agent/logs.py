"""The agent's logs for the field: what it says, kept in a ring for ``edge-agent logs``.

* Under systemd (``JOURNAL_STREAM`` names our stderr), each line carries its syslog
  priority as a ``<N>`` prefix, which journald turns into the entry's priority (so
  ``journalctl -p warning -u edge-agent`` works) and no timestamp (journald adds its own).
  On a terminal, lines keep a local timestamp.
* Every record also goes to :data:`RING` (the last 5,000), with the device it is about:
  the ``device`` a caller passes as ``extra``, or the first device id (``plugin:…``) in
  the message. ``GET /v1/logs`` and ``edge-agent logs [--device D] [-f]`` read it over
  the control socket, so a technician reads the agent's logs without root.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import sys
import threading
import time
from typing import Any

CAPACITY = 5000
# A device id as the core writes them: "<plugin>:<identity>" (kerong:bank-a:3).
_DEVICE = re.compile(r"\b([a-z][a-z0-9_-]*:[A-Za-z0-9][A-Za-z0-9_.:-]*[A-Za-z0-9])")
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}


class LogRing(logging.Handler):
    """The newest log records as dicts, numbered, thread-safe."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        super().__init__()
        self._lines: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._seq = 0
        self._mutex = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not take logging down
            message = str(record.msg)
        device = getattr(record, "device", None)
        if device is None and (m := _DEVICE.search(message)) is not None:
            device = m.group(1)
        if record.exc_info and record.exc_info[1] is not None:
            message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        with self._mutex:
            self._seq += 1
            self._lines.append({"seq": self._seq, "ts": record.created,
                                "level": record.levelname.lower(), "logger": record.name,
                                "device": device, "message": message})

    def read(self, *, after: int = 0, device: str | None = None, level: str | None = None,
             limit: int = 200) -> list[dict[str, Any]]:
        """Lines after ``after`` (oldest first), the newest ``limit`` of them; ``device``
        matches case-insensitively; ``level`` is the least severe level to include."""
        floor = logging.getLevelName(level.upper()) if level else 0
        want = device.lower() if device else None
        with self._mutex:
            lines = [ln for ln in self._lines if ln["seq"] > after
                     and (want is None or (ln["device"] or "").lower() == want)
                     and (not isinstance(floor, int)
                          or logging.getLevelName(ln["level"].upper()) >= floor)]
        return lines[-limit:] if limit else lines


RING = LogRing()


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message`` for journald's stream protocol."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def under_journald() -> bool:
    """True if stderr is the stream systemd connected to the journal for this service."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    dev, _, ino = stream.partition(":")
    return f"{st.st_dev}" == dev and f"{st.st_ino}" == ino


def setup(level: str = "info") -> None:
    """Configure the process's logging: journald or terminal format, plus the ring."""
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    handler = logging.StreamHandler()
    if under_journald():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    for old in [h for h in root.handlers if not isinstance(h, LogRing)]:
        root.removeHandler(old)
    root.addHandler(handler)
    attach()


def attach() -> None:
    """Have the ring see every record the root logger handles (idempotent)."""
    root = logging.getLogger()
    if RING not in root.handlers:
        root.addHandler(RING)


def line_text(line: dict[str, Any]) -> str:
    """One ring line as a terminal shows it: local time, level, logger, message."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(line["ts"]))
    return f"{when} {line['level'].upper():<7} {line['logger']}: {line['message']}"

"""Replaying a site's recorded wire as a simulator (``edge-agent simulate --replay``).

A capture (``edge-agent capture``, pcap with both directions) holds what the agent sent
and what the boards sent back; so does a support bundle (``edge-agent bundle``), whose
``wire/`` files hold each bus's last frames with their timestamps. The replay answers
each request as the site's boards answered *that same request*, in the order they did:
a board that answered the first 40 status polls and then fell silent answers the
replaying agent's first 40 and then never again; a burst of garbage comes back on the
poll it came back on. Requests the recording never saw get no answer. Bytes only: no
protocol knowledge, so it replays any vendor's serial protocol; the agent and its
plugin under test cannot tell it from the site.

It serves one pseudo-terminal; ``link`` is a stable symlink to it for the site config.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import threading
import time
import tty
from pathlib import Path

Chunk = tuple[float, str, bytes]

MAX_REPLY_DELAY = 0.2  # seconds: a recorded reply delay is kept, up to this


def bundle_chunks(data: bytes, bus: str | None = None) -> tuple[list[Chunk], str]:
    """The recorded wire of one bus in a support bundle (``edge-agent bundle``), and
    that bus's id. ``bus``: which, when the bundle holds several (ValueError names
    them). Every device on a bus carries the bus's frames: they are taken once."""
    import io
    import json
    import tarfile

    by_bus: dict[str, dict[tuple[float, str, str], bytes]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if len(parts) < 2 or parts[-2] != "wire" or not member.isfile():
                    continue
                f = tar.extractfile(member)
                doc = json.loads(f.read()) if f is not None else {}
                if not isinstance(doc, dict) or not doc.get("bus"):
                    continue  # a network device's exchanges: not a serial bus
                frames = by_bus.setdefault(str(doc["bus"]), {})
                for fr in doc.get("frames") or []:
                    if fr.get("dir") in ("tx", "rx") and fr.get("hex"):
                        frames[(float(fr["t"]), fr["dir"], fr["hex"])] = bytes.fromhex(
                            fr["hex"])
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a support bundle ({exc})") from exc
    if not by_bus:
        raise ValueError("the bundle holds no serial bus's wire")
    if bus is None:
        if len(by_bus) > 1:
            raise ValueError(f"the bundle holds the wire of buses {', '.join(sorted(by_bus))}:"
                             " say which with --bus")
        bus = next(iter(by_bus))
    if bus not in by_bus:
        raise ValueError(f"no bus {bus!r} in the bundle (it has {', '.join(sorted(by_bus))})")
    chunks = [(t, d, raw) for (t, d, _), raw in by_bus[bus].items()]
    return sorted(chunks, key=lambda c: c[0]), bus


class Script:
    """Per request (its exact bytes), the replies recorded for it, in order."""

    def __init__(self, chunks: list[Chunk]) -> None:
        self.replies: dict[bytes, collections.deque[tuple[bytes, float]]] = {}
        self.last: dict[bytes, tuple[bytes, float]] = {}
        self.unsolicited = b""
        current: bytes | None = None
        sent_at = 0.0
        answer = b""
        first_rx: float | None = None

        def close() -> None:
            if current is not None:
                delay = min(MAX_REPLY_DELAY, max(0.0, (first_rx or sent_at) - sent_at))
                self.replies.setdefault(current, collections.deque()).append(
                    (answer, delay))

        for t, direction, data in sorted(chunks, key=lambda c: c[0]):
            if direction == "tx":
                close()
                current, sent_at, answer, first_rx = data, t, b"", None
            elif current is None:
                self.unsolicited += data
            else:
                answer += data
                first_rx = t if first_rx is None else first_rx
        close()
        self.requests = sorted(self.replies, key=len, reverse=True)  # longest match first

    def answer(self, request: bytes) -> tuple[bytes, float]:
        """The next recorded reply to ``request`` (the last one again when they run out;
        nothing for a request never seen)."""
        queue = self.replies.get(request)
        if queue:
            self.last[request] = queue.popleft()
            return self.last[request]
        return self.last.get(request, (b"", 0.0))

    def match(self, buffer: bytes) -> bytes | None:
        """The recorded request ``buffer`` starts with, if any."""
        return next((r for r in self.requests if buffer.startswith(r)), None)

    def could_match(self, buffer: bytes) -> bool:
        return any(r.startswith(buffer) for r in self.requests)


class ReplaySimulator:
    def __init__(self, chunks: list[Chunk], link: str) -> None:
        self.script = Script(chunks)
        self.link = Path(link)
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay", daemon=True)
        self.answered = 0

    def start(self) -> None:
        self.link.unlink(missing_ok=True)
        self.link.symlink_to(os.ttyname(self.slave))
        if self.script.unsolicited:
            os.write(self.master, self.script.unsolicited)
        self._thread.start()

    def _run(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if not ready:
                    continue
                buffer += os.read(self.master, 4096)
            except OSError:
                return
            while buffer:
                request = self.script.match(buffer)
                if request is None:
                    if self.script.could_match(buffer):
                        break  # the rest of a request is still on its way
                    buffer = buffer[1:]  # bytes no recorded request starts with
                    continue
                buffer = buffer[len(request):]
                reply, delay = self.script.answer(request)
                if reply:
                    time.sleep(delay)
                    with contextlib.suppress(OSError):
                        os.write(self.master, reply)
                    self.answered += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.link.unlink(missing_ok=True)

    def describe(self) -> list[str]:
        n = sum(len(q) for q in self.script.replies.values())
        return [f"replay of {n} recorded exchange(s) ({len(self.script.replies)} distinct "
                f"request(s)) on {self.link}"]

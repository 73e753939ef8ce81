"""In-process fan-out of live events to API stream clients.

Each subscriber has a bounded queue. A client that cannot keep up is cut off (it gets an
``overflow`` notice and reconnects, re-reading current state) instead of making the
agent buffer without bound or wait for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

Event = tuple[str, dict[str, Any]]


class Subscription:
    def __init__(self, hub: EventHub, maxsize: int) -> None:
        self.hub = hub
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, event: Event) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            # Make room for the notice so the client learns why its stream ended.
            self.queue.get_nowait()
            self.queue.put_nowait(("overflow", {"dropped": True}))

    def close(self) -> None:
        self.hub.subscribers.discard(self)


class EventHub:
    def __init__(self) -> None:
        self.subscribers: set[Subscription] = set()

    def subscribe(self, maxsize: int = 2000) -> Subscription:
        sub = Subscription(self, maxsize)
        self.subscribers.add(sub)
        return sub

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        for sub in list(self.subscribers):
            sub.offer((kind, data))

"""The discovery inbox: what was found and is not trusted or not adopted, with why."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class InboxItem:
    id: str
    what: str
    why: str
    since: float = field(default_factory=time.time)
    device: str | None = None  # the device an adopt or ignore acts on, if any

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "what": self.what, "why": self.why,
                               "since": self.since}
        if self.device is not None:
            doc["device"] = self.device
        return doc

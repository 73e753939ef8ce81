from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edge_agent_kerong.simulator import BusOptions, PtyEndpoint, SimBoard, SimBus, TcpEndpoint


@pytest.fixture
def kerong_bus() -> Iterator[Callable[..., tuple[SimBus, Any]]]:
    """Factory: a simulated KR-CU16 bus on a pty (``tcp=True``: behind a TCP port)."""
    endpoints: list[Any] = []

    def make(boards: dict[int, int], *, tcp: bool = False, **options: Any
             ) -> tuple[SimBus, Any]:
        bus = SimBus([SimBoard(a, items=items) for a, items in boards.items()],
                     BusOptions(**options))
        ep = TcpEndpoint(bus) if tcp else PtyEndpoint(bus)
        ep.start()
        endpoints.append(ep)
        return bus, ep

    yield make
    for ep in endpoints:
        ep.stop()

from __future__ import annotations

# Import hypothesis before any Textual app runs: its pytest plugin otherwise imports it at
# the terminal summary, and CPython 3.11's AST compiler then fails with "AST constructor
# recursion depth mismatch" (the recursion depth left behind by Textual's app run).
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis.internal.observability  # noqa: F401
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

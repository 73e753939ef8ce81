"""Helpers for testing the agent and vendor plugins against real parts.

Used by edge-agent's own tests and meant for plugin authors: an in-process agent on a
real Unix socket and a real state directory, and a bounded ``wait_until``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from edge_agent.agent import Agent
from edge_agent.client import AgentClient
from edge_agent.config import parse_site_config


async def wait_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
                     what: str = "condition") -> Any:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


@contextlib.contextmanager
def short_tempdir(prefix: str = "ea-") -> Any:
    """A short directory for Unix sockets (their paths are limited to 107 bytes)."""
    d = tempfile.mkdtemp(prefix=prefix)
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_agent(
    site_toml: str,
    state_dir: Path,
    *,
    extra_plugins: dict[str, object] | None = None,
    load_entry_points: bool = True,
) -> AsyncIterator[tuple[Agent, AgentClient]]:
    """Start an agent in this event loop from a site config held in a string."""
    config = parse_site_config(site_toml, "<test>")
    with short_tempdir() as sockdir:
        agent = Agent(config, state_dir=state_dir, socket_path=sockdir / "agent.sock",
                      extra_plugins=extra_plugins, load_entry_points=load_entry_points)
        await agent.start()
        try:
            async with AgentClient(agent.socket_path) as client:
                yield agent, client
        finally:
            await agent.stop()

"""Helpers for testing the agent and vendor plugins against real parts.

Used by edge-agent's own tests and meant for plugin authors: an in-process agent on a
real Unix socket and a real state directory, and a bounded ``wait_until``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
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


def netns_available() -> bool:
    """True if this machine can make a private network namespace (``unshare -rn``)."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"],
                           capture_output=True, timeout=20)
    return probe.returncode == 0


def run_in_netns(script: Path, *, timeout: float = 120, loopback_fallback: bool = False
                 ) -> dict[str, Any]:
    """Run a Python script in a private network namespace with only ``lo`` up, so its
    mDNS traffic never reaches a real interface; return the JSON object it prints last.

    The script exits non-zero on failure; its stderr tail is in the assertion message.
    Without namespaces, ``loopback_fallback`` runs it on the host (the script must bind
    zeroconf to 127.0.0.1 only); otherwise the calling test is skipped.
    """
    if netns_available():
        cmd = ["unshare", "-rn", "sh", "-c",
               f'ip link set lo up && exec "{sys.executable}" "{script}"']
    elif loopback_fallback:
        cmd = [sys.executable, str(script)]
    else:
        import pytest

        pytest.skip("needs unshare and ip for a private network namespace "
                    "(./run installs util-linux and iproute2)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=dict(os.environ))
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stderr[-4000:]}"
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out

"""The shipped systemd unit and the agent's side of systemd's notify protocol:
systemd-analyze verifies the unit and rates its exposure 2.0 or less; the agent says
READY=1 once its socket serves, and pings the watchdog from its event loop, so a stalled
loop stops the pings."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import site_toml

from edge_agent import sdnotify
from edge_agent.testing import short_tempdir

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "edge-agent.service"
ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
def test_the_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's edge-agent.
    unit = tmp_path / "edge-agent.service"
    unit.write_text(UNIT.read_text().replace(
        "/opt/edge-agent/bin/edge-agent", str(Path(sys.executable).with_name("edge-agent"))))
    verify = subprocess.run([str(ANALYZE), "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    sec = subprocess.run([str(ANALYZE), "security", "--offline=true", str(unit)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", sec.stdout)
    assert m is not None, sec.stdout[-500:] + sec.stderr
    assert float(m.group(1)) <= 2.0 and m.group(2) == "OK", m.group(0)


def _listen(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(0.05)
    return s


def _drain(s: socket.socket) -> list[tuple[float, str]]:
    out = []
    while True:
        try:
            out.append((time.monotonic(), s.recv(4096).decode()))
        except TimeoutError:
            return out


async def test_watchdog_pings_stop_when_the_loop_stalls(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    with short_tempdir() as d:
        sock = _listen(d / "notify")
        monkeypatch.setenv("NOTIFY_SOCKET", str(d / "notify"))
        monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s: a ping every 0.05 s
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(sdnotify.watchdog(stop))
        await asyncio.sleep(0.5)
        healthy = [m for _t, m in await asyncio.to_thread(_drain, sock)]
        assert healthy.count("WATCHDOG=1") >= 5
        stalled_at = time.monotonic()
        time.sleep(0.6)  # the loop is stuck: a blocking call where none should be
        resumed_at = time.monotonic()
        await asyncio.sleep(0.2)
        stop.set()
        await task
        # Datagrams sent during the stall would queue with earlier timestamps; there
        # must be none: after the last ping before the stall, the next comes after it.
        pings = [t for t, m in await asyncio.to_thread(_drain, sock) if m == "WATCHDOG=1"]
        assert pings and all(t >= resumed_at for t in pings), (stalled_at, resumed_at, pings)
        sock.close()


def test_the_agent_says_ready_under_systemd(kerong_bus: Any, tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    cfg = tmp_path / "site.toml"
    cfg.write_text(site_toml({"Bank-1": pty.port}))
    with short_tempdir() as d:
        listener = _listen(d / "notify")
        listener.settimeout(20)
        env = {**os.environ, "NOTIFY_SOCKET": str(d / "notify"), "WATCHDOG_USEC": "2000000"}
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(cfg), "--state-dir",
             str(tmp_path / "state"), "--socket", str(d / "agent.sock"), "--log-level",
             "warning"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            first = listener.recv(4096).decode()
            assert first.startswith("READY=1") and (d / "agent.sock").exists()
            assert listener.recv(4096).decode() == "WATCHDOG=1"
            agent.terminate()
            assert agent.wait(20) == 0
            rest = []
            listener.settimeout(0.2)
            try:
                while True:
                    rest.append(listener.recv(4096).decode())
            except TimeoutError:
                pass
            assert "STOPPING=1" in rest
        finally:
            agent.kill()
            listener.close()

"""Logs for the field (issue 14): `edge-agent logs [--device D] [--level L] [-f]` reads
the agent's own log lines over the control socket (no root, no journal access), with
the device each line is about; under systemd the lines carry journald priorities. The
agent runs as its own process, as at a site."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import site_toml

from edge_agent.oneshot import SocketClient
from edge_agent.testing import short_tempdir

DEV, OTHER = "kerong:Bank-1:0", "kerong:Bank-1:1"


def cli(sock: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args, "--socket",
                           str(sock)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def wait_for(pred: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_logs_by_device_follow_and_journald_priorities(kerong_bus: Any,
                                                       tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0xFFFF, 1: 0}, pace=False)
    cfg = tmp_path / "site.toml"
    cfg.write_text(site_toml({"Bank-1": pty.port}))
    err = tmp_path / "agent.stderr"
    with short_tempdir() as d, open(err, "wb") as errf:
        sock = d / "agent.sock"
        st = os.fstat(errf.fileno())
        # systemd connects a service's stderr to the journal and says which stream it is.
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(cfg),
             "--state-dir", str(tmp_path / "state"), "--socket", str(sock),
             "--log-level", "info"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=errf, env=env)
        try:
            wait_for(sock.exists, "the socket")
            with SocketClient(sock) as c:
                wait_for(lambda: {d["id"]: d["link"] for d in c.call("devices")}.get(DEV)
                         == "online", "the board online")
            sim.drop_board(0)  # board 0's cable is cut
            out = wait_for(lambda: (r := cli(sock, "logs", "--device", DEV)).returncode == 0
                           and "offline" in r.stdout and r.stdout, "the outage in the logs")
            assert all(DEV in line for line in out.splitlines()), out
            mine = cli(sock, "logs", "--device", OTHER).stdout
            assert "offline" not in mine
            warnings = cli(sock, "logs", "--level", "warning").stdout
            assert "offline" in warnings and " INFO " not in warnings
            # Follow: the recovery arrives on a running `logs -f`.
            follow = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "logs", "--device", DEV, "-f",
                 "--socket", str(sock)], stdout=subprocess.PIPE, text=True,
                stdin=subprocess.DEVNULL)
            try:
                time.sleep(1.0)
                sim.drop_board(0, present=True)
                assert follow.stdout is not None
                seen = ""
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and "recovered" not in seen:
                    seen += follow.stdout.readline()
                assert "recovered" in seen, seen
            finally:
                follow.terminate()
                follow.wait(10)
        finally:
            agent.terminate()
            agent.wait(20)
    journal = err.read_text()
    lines = [ln for ln in journal.splitlines() if ln]
    assert lines and all(ln.startswith("<") and ln[2] == ">" for ln in lines), lines[:5]
    assert any(ln.startswith("<3>") and "offline" in ln for ln in lines)  # an error
    assert any(ln.startswith("<6>") for ln in lines)  # info

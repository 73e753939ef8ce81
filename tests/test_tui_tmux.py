"""The real dashboard in a real terminal (tmux): start, navigate with keys, read the
screen back, and see a compartment change after the simulator changes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import site_toml

from edge_agent.testing import short_tempdir

pytestmark = pytest.mark.skipif(not shutil.which("tmux"), reason="tmux not installed "
                                "(./run installs it)")
TUI = Path(sys.executable).with_name("edge-agent-tui")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", "ea-test", *args], capture_output=True, text=True,
                          timeout=20).stdout


def screen_until(needle: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = tmux("capture-pane", "-p", "-t", "tui")
        if needle in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared; screen:\n{text}")


def test_dashboard_in_tmux(kerong_bus, tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0x0002})
    cfg = tmp_path / "site.toml"
    cfg.write_text(site_toml({"bank": pty.port}))
    with short_tempdir() as d:
        sock = d / "agent.sock"
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(cfg), "--state-dir",
             str(tmp_path / "state"), "--socket", str(sock), "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            env = {**os.environ, "TERM": "xterm-256color"}
            subprocess.run(["tmux", "-L", "ea-test", "new-session", "-d", "-s", "tui",
                            "-x", "80", "-y", "24", f"{TUI} --socket {sock}"], env=env,
                           check=True, timeout=20)
            screen_until("online 1")
            tmux("send-keys", "-t", "tui", "d")
            screen_until("kerong:bank:0")
            tmux("send-keys", "-t", "tui", "Enter")
            text = screen_until(" 2 locked item")
            assert " 1 locked empty" in text
            sim.set_door(0, 1, closed=False)
            screen_until(" 2 OPEN item")
            tmux("send-keys", "-t", "tui", "?")
            screen_until("keyboard first")
            tmux("send-keys", "-t", "tui", "Escape")
            time.sleep(0.5)  # a lone ESC followed at once by a key reads as Alt+key
            screen_until("OPEN item")
            tmux("send-keys", "-t", "tui", "q")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "tui" in tmux("ls"):
                time.sleep(0.2)
            assert "tui" not in tmux("ls"), "the dashboard did not exit on q"
        finally:
            tmux("kill-server")
            agent.terminate()
            agent.wait(15)

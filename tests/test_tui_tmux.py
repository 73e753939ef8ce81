"""The real dashboard in a real terminal (tmux): start, navigate with keys, read the
screen back, and see a compartment change after the simulator changes it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import Tmux, site_toml

from edge_agent.testing import short_tempdir

pytestmark = pytest.mark.skipif(not shutil.which("tmux"), reason="tmux not installed "
                                "(./run installs it)")
TUI = Path(sys.executable).with_name("edge-agent-tui")
REVERSE = re.compile(r"\x1b\[(?:[0-9;]*;)?7(?:;[0-9;]*)?m")  # SGR 7 (reverse), e.g. 1;7


def test_dashboard_in_tmux(kerong_bus, tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0x0002, 1: 0})
    cfg = tmp_path / "site.toml"
    cfg.write_text(site_toml({"bank": pty.port}))
    term = Tmux("ea-test", "tui")
    with short_tempdir() as d:
        sock = d / "agent.sock"
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(cfg), "--state-dir",
             str(tmp_path / "state"), "--socket", str(sock), "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            term.start(f"{TUI} --socket {sock}", {**os.environ, "TERM": "xterm-256color"})
            term.screen_until("online 2")
            term.keys("d")
            term.screen_until("kerong:bank:1")
            # The cursor row is drawn in reverse video: after Down it is the second row,
            # and the first is drawn plain again (only the two changed lines are redrawn,
            # so a stale highlight would stay on the terminal).
            for key, on, off in (("Down", "kerong:bank:1", "kerong:bank:0"),
                                 ("Up", "kerong:bank:0", "kerong:bank:1")):
                term.keys(key)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    lines = term("capture-pane", "-p", "-e", "-t", "tui").splitlines()
                    row = {k: next(ln for ln in lines if k in ln) for k in (on, off)}
                    if REVERSE.search(row[on]) and not REVERSE.search(row[off]):
                        break
                    time.sleep(0.1)
                else:
                    raise AssertionError(f"after {key}: {row!r}")
            term.keys("Enter")
            text = term.screen_until(" 2 locked item")
            assert " 1 locked empty" in text
            sim.set_door(0, 1, closed=False)
            term.screen_until(" 2 OPEN item")
            term.keys("?")
            term.screen_until("keyboard first")
            term.keys("Escape")
            time.sleep(0.5)  # a lone ESC followed at once by a key reads as Alt+key
            term.screen_until("OPEN item")
            term.keys("q")
            assert term.wait_gone(), "the dashboard did not exit on q"
        finally:
            term("kill-server")
            agent.terminate()
            agent.wait(15)


def test_custody_screen_in_tmux_at_80x24(kerong_bus, tmp_path: Path) -> None:
    """An officer takes a radio at a card reader; the technician's dashboard (a real
    terminal, 80x24) shows who holds it on the custody screen."""
    from test_custody import ALICE, ARMOURY, Site

    from edge_agent.oneshot import SocketClient

    site = Site(tmp_path, kerong_bus)
    cfg = tmp_path / "site.toml"
    cfg.write_text(site.toml())
    term = Tmux("ea-test", "custody")
    with short_tempdir() as d:
        sock = d / "agent.sock"
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(cfg), "--state-dir",
             str(tmp_path / "state"), "--socket", str(sock), "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            with SocketClient(sock) as c:
                c.call("entitlements_load", body=site.snapshot)
                # The Taser board waits for a technician (an armoury device): adopt it
                # once it has been identified.
                while time.monotonic() < deadline and not any(
                        d["id"] == ARMOURY and d.get("presented") for d in c.call("devices")):
                    time.sleep(0.1)
                c.call("adopt", id=ARMOURY, body={"reason": "label checked"})

                def all_online() -> bool:
                    devices = c.call("devices")
                    return len(devices) >= 4 and all(d["link"] == "online" for d in devices)

                while time.monotonic() < deadline and not all_online():  # bounded
                    time.sleep(0.1)
                site.readers["lockers"].present(ALICE, "1")
                while time.monotonic() < deadline and not c.call("events",
                                                                 action="issue_granted"):
                    time.sleep(0.1)
                site.bus.set_item(0, 0, False)
                while time.monotonic() < deadline and not c.call("custody")["holdings"]:
                    time.sleep(0.1)
            term.start(f"{TUI} --socket {sock}", {**os.environ, "TERM": "xterm-256color"})
            term.screen_until("online")
            term.keys("c")
            text = term.screen_until("1 item(s) out")
            assert "PC-1001" in text and "Alice Ames" in text and "radio" in text
            # The officer's own view: qualifications, what she holds, her last events.
            term.keys("Enter")
            text = term.screen_until("custody_opened")
            assert "Alice Ames" in text and "valid" in text and "custody_opened" in text
            term.keys("Escape")
            time.sleep(0.5)  # a lone Escape, not Alt+y: terminals wait to tell them apart
            term.keys("y")  # deployable per class
            text = term.screen_until("Deployable officers")
            assert "radio" in text and "taser" in text
            term.keys("Escape")
            time.sleep(0.5)
            term.keys("u")  # usage: one radio issued, drawn by plotext
            text = term.screen_until("1 in all")
            assert "hour of day" in text
            term.keys("q")
            assert term.wait_gone(), "the dashboard did not exit on q"
        finally:
            term("kill-server")
            agent.terminate()
            agent.wait(15)
            site.stop()

"""The SSH recipe from the README: an account whose ForceCommand is the dashboard, with
no shell and no forwarding. A real sshd on loopback (its own config, keys and port),
a real ssh client in a real terminal (tmux)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Tmux, free_port, site_toml, wait_port

from edge_agent.testing import short_tempdir

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(
    not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("tmux")
         and os.geteuid() == 0),
    reason="needs root, openssh-server, openssh-client and tmux (./run installs them)")
TUI = Path(sys.executable).with_name("edge-agent-tui")


def test_forcecommand_gives_the_dashboard_and_nothing_else(kerong_bus, tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0})
    cfg = tmp_path / "site.toml"
    cfg.write_text(site_toml({"bank": pty.port}))
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(tmp_path / name)], check=True, timeout=30)
    (tmp_path / "authorized_keys").write_text((tmp_path / "client.pub").read_text())
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    port = free_port()
    term = Tmux("ea-ssh", "ssh")
    with short_tempdir() as d:
        sock = d / "agent.sock"
        (tmp_path / "sshd_config").write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {tmp_path / "host"}
PidFile {tmp_path / "sshd.pid"}
AuthorizedKeysFile {tmp_path / "authorized_keys"}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AcceptEnv TERM
Match User root
    ForceCommand {TUI} --socket {sock} --read-only
    PermitTTY yes
    AllowTcpForwarding no
    AllowStreamLocalForwarding no
    X11Forwarding no
    AllowAgentForwarding no
    PermitTunnel no
    PermitUserRC no
""")
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(cfg), "--state-dir",
             str(tmp_path / "state"), "--socket", str(sock), "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp_path / "sshd_config")],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        ssh = ["ssh", "-i", str(tmp_path / "client"), "-p", str(port), "-o",
               "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
               "LogLevel=ERROR", "-o", "BatchMode=yes", "root@127.0.0.1"]
        try:
            wait_port(port)
            # A login gets the dashboard, read-only, in its terminal.
            env = {**os.environ, "TERM": "xterm-256color"}
            term.start(" ".join([*ssh[:-1], "-tt", ssh[-1]]), env)
            term.screen_until("READ-ONLY · site test-site")
            term.screen_until("online 1")
            term.keys("q")
            assert term.wait_gone(), "quitting the dashboard did not end the session"
            # Asking for a command still runs only the dashboard (which wants a terminal).
            out = subprocess.run([*ssh, "id; cat /etc/passwd"], capture_output=True,
                                 text=True, timeout=30, stdin=subprocess.DEVNULL)
            assert "uid=" not in out.stdout and "root:" not in out.stdout
            assert "needs a terminal" in out.stderr
            # No forwarding: a stdio forward to a port that is listening (sshd's own, which
            # would answer with its banner if forwarding were allowed) is refused.
            fwd = subprocess.run([*ssh[:-1], "-W", f"127.0.0.1:{port}", ssh[-1]],
                                 capture_output=True, text=True, timeout=30,
                                 stdin=subprocess.DEVNULL)
            assert fwd.returncode != 0 and "SSH-2.0" not in fwd.stdout
            assert "forwarding failed" in fwd.stderr
        finally:
            term("kill-server")
            sshd.terminate()
            sshd.wait(10)
            agent.terminate()
            agent.wait(15)

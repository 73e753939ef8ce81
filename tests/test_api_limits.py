"""File-descriptor exhaustion through the API socket: 1,100 half-sent requests against an
agent process whose descriptor limit is 1,024 (soft and hard, as a unit file might set).
Reads still answer at once, commands still reach the store, and the log stays small."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import http, site_toml

from edge_agent.testing import short_tempdir

HALF_SENT = 1100
DEV = "kerong:Bank-1:0"


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_half_sent_requests_cannot_starve_the_agent(kerong_bus, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < HALF_SENT + 200:
        pytest.skip(f"this test needs {HALF_SENT + 200} descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HALF_SENT + 200), hard))
    _sim, pty = kerong_bus({0: 0})
    site = tmp_path / "site.toml"
    site.write_text(site_toml({"Bank-1": pty.port}))
    log_path = tmp_path / "agent.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    with short_tempdir() as sockdir, open(log_path, "wb") as log_file:
        sock = sockdir / "agent.sock"
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(site),
             "--state-dir", str(tmp_path / "state"), "--socket", str(sock)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=limit)
        clients: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    status, body, _ = http(sock, "GET", f"/v1/devices/{DEV}")
                    if status == 200 and body["link"] == "online":
                        break
                except (OSError, ValueError, IndexError):
                    pass
                time.sleep(0.2)
            else:
                raise AssertionError("agent never came up: " + log_path.read_text()[-2000:])
            connected = 0
            for _ in range(HALF_SENT):
                c = socket.socket(socket.AF_UNIX)
                c.setblocking(False)
                clients.append(c)
                give_up = time.monotonic() + 2.0
                while True:  # a full listen backlog says EAGAIN: wait for the agent
                    try:
                        c.connect(str(sock))
                        break
                    except BlockingIOError:
                        if time.monotonic() > give_up:
                            break
                        time.sleep(0.001)
                try:
                    c.send(b"GET /v1/status HTTP/1.1\r\nHost: agent\r\n")  # never finished
                    connected += 1
                except OSError:
                    pass  # not connected, or closed by the agent to make room
            assert connected > 1024, connected
            time.sleep(0.5)
            status, body, took = http(sock, "GET", "/v1/status")
            assert status == 200 and took < 2.0, (status, took)
            assert body["api"]["limit"] < 1024 // 2
            assert open_fds(proc.pid) < 1024 - 100, "descriptors are not kept for the store"
            # A command still reaches the audit log and the registry.
            status, body, took = http(sock, "POST", f"/v1/devices/{DEV}/out-of-service",
                                      {"compartment": 2, "reason": "fd test", "out": True})
            assert status == 200 and took < 2.0, (status, body)
            time.sleep(0.5)
            status, body, _ = http(sock, "GET", "/v1/status")
            assert body["store"]["error"] is None and body["health"] == "ok", body
            assert body["api"]["evicted"] > 0
            # Slow connections that stay under the limit time out on their own.
            time.sleep(12)
            status, body, _ = http(sock, "GET", "/v1/status")
            assert body["api"]["open"] <= 2, body["api"]
        finally:
            for c in clients:
                c.close()
            proc.terminate()
            proc.wait(timeout=20)
    text = log_path.read_text()
    assert len(text) < 20_000, f"{len(text)} bytes of log:\n{text[-3000:]}"
    assert "Traceback" not in text and "EMFILE" not in text and "Too many open" not in text
    assert text.count("connections open (the limit)") == 1

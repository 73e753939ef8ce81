"""Every acknowledged decision survives a kill -9 straight after its answer: out of
service, back in service, adopt, ignore. The agent runs as a process of its own and is
killed the moment the 200 arrives (the registry flushes later); on restart the decision
is in force, rebuilt from the audit trail. An empty registry is rebuilt the same way,
with an alarm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import http, site_toml

from edge_agent.testing import short_tempdir

DEV = "kerong:Bank-1:0"


@contextmanager
def agent_process(site: Path, state: Path, sock: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(site),
         "--state-dir", str(state), "--socket", str(sock)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body, _ = http(sock, "GET", f"/v1/devices/{DEV}")
                if status == 200 and body["link"] in ("online", "discovered", "ignored"):
                    break
            except (OSError, ValueError, IndexError):
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("agent not up: " + proc.stderr.read().decode()[-2000:]
                                     if proc.poll() is not None else "agent not up")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


def decide_then_kill(site: Path, state: Path, sock: Path, path: str, body: dict) -> int:
    with agent_process(site, state, sock) as proc:
        status, answer, _ = http(sock, "POST", path, body)
        os.kill(proc.pid, signal.SIGKILL)  # before the registry's next flush
        proc.wait(timeout=10)
    assert status == 200, answer
    seq: int = answer["audit_seq"]
    return seq


def test_each_decision_survives_kill_9_after_its_answer(kerong_bus, tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0xFFFF})
    site = tmp_path / "site.toml"
    site.write_text(site_toml({"Bank-1": pty.port}).replace(
        "[agent]\n", "[agent]\nauto_adopt = false\n"))
    state = tmp_path / "state"
    with short_tempdir() as d:
        sock = d / "agent.sock"
        decide_then_kill(site, state, sock, f"/v1/inbox/{DEV}/adopt", {"reason": "label ok"})
        with agent_process(site, state, sock):
            status, dev, _ = http(sock, "GET", f"/v1/devices/{DEV}")
            assert dev["adopted"] is True
        decide_then_kill(site, state, sock, f"/v1/devices/{DEV}/out-of-service",
                         {"compartment": 7, "reason": "Taser dock hinge", "out": True})
        with agent_process(site, state, sock):
            for _ in range(50):
                status, dev, _ = http(sock, "GET", f"/v1/devices/{DEV}")
                if dev["link"] == "online":
                    break
                time.sleep(0.1)
            assert dev["out_of_service"]["7"]["reason"] == "Taser dock hinge"
            status, body, _ = http(sock, "POST", f"/v1/devices/{DEV}/unlock",
                                   {"compartment": 7, "reason": "try"})
            assert status == 409 and "out of service" in body["message"]
            replayed = http(sock, "GET", "/v1/events?action=decisions_replayed")[1]
            assert replayed and replayed[-1]["details"]["decisions"] >= 1
        decide_then_kill(site, state, sock, f"/v1/devices/{DEV}/out-of-service",
                         {"compartment": 7, "reason": "fixed", "out": False})
        with agent_process(site, state, sock):
            status, dev, _ = http(sock, "GET", f"/v1/devices/{DEV}")
            assert "7" not in dev["out_of_service"]
        decide_then_kill(site, state, sock, f"/v1/inbox/{DEV}/ignore", {"reason": "not ours"})
        with agent_process(site, state, sock):
            status, dev, _ = http(sock, "GET", f"/v1/devices/{DEV}")
            assert dev["link"] == "ignored" and dev["adopted"] is False
            inbox = http(sock, "GET", "/v1/inbox")[1]
            assert DEV not in [i["id"] for i in inbox]


def test_an_empty_registry_is_an_alarm_and_rebuilt_from_the_trail(kerong_bus,
                                                                  tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0xFFFF})
    site = tmp_path / "site.toml"
    site.write_text(site_toml({"Bank-1": pty.port}))
    state = tmp_path / "state"
    with short_tempdir() as d:
        sock = d / "agent.sock"
        with agent_process(site, state, sock):
            status, _, _ = http(sock, "POST", f"/v1/devices/{DEV}/out-of-service",
                                {"compartment": 3, "reason": "cracked door", "out": True})
            assert status == 200
        (state / "registry.json").write_bytes(b"")  # what a power cut can leave
        with agent_process(site, state, sock):
            status, dev, _ = http(sock, "GET", f"/v1/devices/{DEV}")
            assert dev["out_of_service"]["3"]["reason"] == "cracked door"
            body = http(sock, "GET", "/v1/status")[1]
            assert body["health"] == "degraded"
            assert any("registry.json" in a["message"] and "empty" in a["message"]
                       for a in body["alarms"])
        assert list(state.glob("registry.json.corrupt-*"))

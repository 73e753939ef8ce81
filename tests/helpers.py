"""Helpers shared by the tests (importable: tests/ is on pythonpath)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path


def site_toml(buses: dict[str, str], *, poll: float = 0.1, extra: str = "") -> str:
    """A minimal site config with the given buses (id -> port or URL)."""
    parts = [
        '[site]\nid = "test-site"\n',
        f"[agent]\npoll_interval = {poll}\ncommand_timeout = 1.0\noffline_after = 3\n"
        "backoff_initial = 0.1\nbackoff_max = 0.5\nprobe_interval = 2.0\n",
    ]
    for bus_id, port in buses.items():
        parts.append(f'[[buses]]\nid = "{bus_id}"\nport = "{port}"\nprotocol = "kerong-cu16"\n')
    parts.append(extra)
    return "\n".join(parts)


class Tmux:
    """A private tmux server (its own socket name) for driving programs in a terminal."""

    def __init__(self, server: str, session: str) -> None:
        # One tmux server per test process: a second copy of the suite on the same host
        # must not attach to (or kill) this one's sessions.
        self.server, self.session = f"{server}-{os.getpid()}", session

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.server, *args], capture_output=True,
                              text=True, timeout=20).stdout

    def start(self, command: str, env: dict[str, str], size: tuple[int, int] = (80, 24)
              ) -> None:
        subprocess.run(["tmux", "-L", self.server, "new-session", "-d", "-s", self.session,
                        "-x", str(size[0]), "-y", str(size[1]), command], env=env,
                       check=True, timeout=20)

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", self.session, *keys)

    def screen_until(self, needle: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self("capture-pane", "-p", "-t", self.session)
            if needle in text:
                return text
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} never appeared; screen:\n{text}")

    def wait_gone(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.session in self("ls"):
            time.sleep(0.2)
        return self.session not in self("ls")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def http(sock_path: Path, method: str, path: str, body: dict | None = None,
         timeout: float = 5.0) -> tuple[int, dict, float]:
    """One request on a fresh connection; (status, JSON body, seconds taken)."""
    started = time.monotonic()
    data = json.dumps(body).encode() if body is not None else b""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                  .encode() + data)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    if b"chunked" in head.lower():
        out, rest = b"", payload
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        payload = out
    return status, json.loads(payload), time.monotonic() - started


def as_other_user(sock: Path, route: str, body: dict, *, id: str | None = None,
                  uid: int = 65534) -> dict:
    """One API call from another Unix user (a forked child that drops to ``uid``, nobody
    by default; needs root). Returns ``{"status", "answer"}``."""
    import os

    from edge_agent.errors import ClientError
    from edge_agent.oneshot import SocketClient

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with SocketClient(sock) as c:
                try:
                    out = {"status": 200, "answer": c.call(route, id=id, body=body)}
                except ClientError as exc:
                    out = {"status": exc.status, "answer": exc.code or str(exc)}
            os.write(w, json.dumps(out).encode())
        except BaseException as exc:
            os.write(w, json.dumps({"status": None, "answer": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)

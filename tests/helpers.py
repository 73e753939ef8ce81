"""Helpers shared by the tests (importable: tests/ is on pythonpath)."""

from __future__ import annotations

import socket
import subprocess
import time


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
        self.server, self.session = server, session

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

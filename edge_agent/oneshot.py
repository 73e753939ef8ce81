"""A small synchronous client for the agent's Unix-socket API, standard library only.

The CLI's one-shot commands (``devices``, ``status``, ``unlock`` …) use it: a technician
types them all day and scripts call them in loops, so a command must cost one connect,
one request and one answer, not an event loop and an HTTP framework. (The dashboard,
which holds a live stream open, uses the asyncio :class:`edge_agent.client.AgentClient`.)

Answers are plain JSON typed by :mod:`edge_agent.api.schema`::

    with SocketClient(path) as c:
        devices: list[schema.Device] = c.call("devices")
        answer: schema.UnlockAnswer = c.call("unlock", id=dev, body={...})
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from edge_agent.api.routes import ROUTES, path
from edge_agent.errors import ClientError

DEFAULT_SOCKET = "/run/edge-agent/agent.sock"


def default_socket() -> str:
    return os.environ.get("EDGE_AGENT_SOCKET", DEFAULT_SOCKET)


def api_error(status: int, data: Any, text: str) -> ClientError:
    """The API's error object (``{"error": CODE, "message", "hint"}``) as a ClientError."""
    if not isinstance(data, dict):
        return ClientError(text or f"HTTP {status}", status=status)
    msg = str(data.get("message") or data.get("error") or text)
    hint = str(data.get("hint") or "")
    return ClientError(msg + (f" ({hint})" if hint else ""), status=status,
                       code=str(data.get("error") or "error"), hint=hint)


def unreachable(socket_path: str, exc: BaseException) -> ClientError:
    why = "no socket there" if not Path(socket_path).exists() else (
        str(exc) or type(exc).__name__)
    return ClientError(
        f"cannot reach the agent at {socket_path} ({why}). Is 'edge-agent run' "
        "running? Pass --socket PATH or set EDGE_AGENT_SOCKET.")


class SseParser:
    """The agent's event stream, a line at a time: ``feed(line)`` returns ``(kind, data)``
    when an event is complete. The first comment line means the agent has subscribed the
    client (``("open", {})``): state fetched after it, plus what follows, misses nothing.
    Shared by the one-shot and the asyncio clients."""

    def __init__(self) -> None:
        self.kind, self.data, self.opened = "message", list[str](), False

    def feed(self, line: str) -> tuple[str, Any] | None:
        line = line.rstrip("\n").rstrip("\r")
        if line.startswith(":"):
            if self.opened:
                return None
            self.opened = True
            return "open", {}
        if not line:
            done = (self.kind, json.loads("\n".join(self.data))) if self.data else None
            self.kind, self.data = "message", []
            return done
        if line.startswith("event: "):
            self.kind = line[7:]
        elif line.startswith("data: "):
            self.data.append(line[6:])
        return None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float | None) -> None:
        super().__init__("agent", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class SocketClient:
    """One keep-alive connection to the agent; ``with SocketClient(path) as c: ...``."""

    def __init__(self, socket_path: str | os.PathLike[str] | None = None,
                 *, timeout: float = 10.0) -> None:
        self.socket_path = str(socket_path or default_socket())
        self.timeout = timeout
        self._conn: _UnixConnection | None = None

    def __enter__(self) -> SocketClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open(self, method: str, target: str, body: Any, timeout: float | None
              ) -> http.client.HTTPResponse:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = _UnixConnection(self.socket_path, timeout)
            try:
                self._conn.request(method, target, body=payload, headers=headers)
                return self._conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as exc:
                self.close()  # a kept-alive connection the agent closed: once more
                if attempt:
                    raise unreachable(self.socket_path, exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise unreachable(self.socket_path, exc) from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _target(url: str, params: dict[str, Any]) -> str:
        query = {k: str(v) for k, v in params.items() if v is not None}
        return url + ("?" + urllib.parse.urlencode(query) if query else "")

    def request(self, method: str, url: str, body: Any = None, **params: Any) -> Any:
        resp = self._open(method, self._target(url, params), body, self.timeout)
        try:
            text = resp.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise unreachable(self.socket_path, exc) from exc
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = None
        if resp.status >= 400:
            raise api_error(resp.status, data, text)
        return data

    def get(self, url: str, **params: Any) -> Any:
        return self.request("GET", url, **params)

    def post(self, url: str, body: Any) -> Any:
        return self.request("POST", url, body)

    def call(self, route: str, *, id: str | None = None, body: Any = None,
             **query: Any) -> Any:
        """Call a named route of :data:`edge_agent.api.schema.ROUTES`."""
        r = ROUTES[route]
        url = path(route, id=urllib.parse.quote(id, safe="")) if id is not None else r.path
        return self.request(r.method, url, body, **query)

    def download(self, url: str, out: IO[bytes], progress: Callable[[int, int], None] | None
                 = None, **params: Any) -> int:
        """Copy a streamed answer into the binary file ``out``; return the bytes copied.
        ``progress``: told (bytes so far, 0: total unknown) as chunks arrive."""
        resp = self._open("GET", self._target(url, params), None, self.timeout)
        if resp.status >= 400:
            text = resp.read().decode("utf-8", "replace")
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                data = None
            raise api_error(resp.status, data, text)
        n = 0
        try:
            while chunk := resp.read1(65536):
                out.write(chunk)
                n += len(chunk)
                if progress is not None:
                    progress(n, 0)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise unreachable(self.socket_path, exc) from exc
        return n

    def stream(self) -> Iterator[tuple[str, Any]]:
        """Yield ``(kind, data)`` from the live event stream until it ends; the first item
        is ``("open", {})`` once the agent has subscribed this client."""
        resp = self._open("GET", path("events_stream"), None, 40.0)
        if resp.status >= 400:
            raise api_error(resp.status, None, resp.read().decode("utf-8", "replace"))
        parser = SseParser()
        try:
            for raw in resp:
                if (event := parser.feed(raw.decode())) is not None:
                    yield event
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise unreachable(self.socket_path, exc) from exc

"""A small synchronous client for the agent's Unix-socket API, standard library only.

The CLI's one-shot commands (``devices``, ``status``, ``unlock`` …) use it: a technician
types them all day and scripts call them in loops, so a command must cost one connect,
one request and one answer, not an event loop and an HTTP framework. (The dashboard,
which holds a live stream open, uses the asyncio :class:`edge_agent.client.AgentClient`.)

It speaks HTTP/1.1 itself (:class:`_Connection`): the standard library's ``http.client``
pulls in the ``email`` package and ``ssl`` (~70 ms of imports on the project's machine
class, more than the request), and the answers come from one server, the agent's own
aiohttp listener: a status line, headers, then a ``Content-Length`` body, a chunked body,
or a body that ends when the connection closes.

Answers are plain JSON typed by :mod:`edge_agent.api.schema`::

    with SocketClient(path) as c:
        devices: list[schema.Device] = c.call("devices")
        answer: schema.UnlockAnswer = c.call("unlock", id=dev, body={...})
"""

from __future__ import annotations

import io
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


def not_understood(socket_path: str, exc: BaseException) -> ClientError:
    return ClientError(
        f"the answer from {socket_path} is not the agent's API ({exc}). Is it the agent's "
        "socket? Pass --socket PATH or set EDGE_AGENT_SOCKET.")


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


class _ProtocolError(Exception):
    """The agent's answer was not HTTP/1.1 as this client reads it."""


class _Disconnected(_ProtocolError):
    """The connection closed before a status line: a kept-alive connection the agent
    closed, worth one retry on a fresh connection."""


_MAX_LINE = 65536


class _Response:
    """One answer: ``status``, ``headers`` (lower-case names), and its body read with
    ``read()``, ``read1(n)`` or line by line."""

    def __init__(self, conn: _Connection, rfile: io.BufferedReader) -> None:
        self._conn, self._rfile = conn, rfile
        line = rfile.readline(_MAX_LINE + 1)
        if not line:
            raise _Disconnected("connection closed before an answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _ProtocolError(f"not an HTTP answer: {line[:80]!r}")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while True:
            h = rfile.readline(_MAX_LINE + 1)
            if not h:
                raise _ProtocolError("connection closed inside the headers")
            if h in (b"\r\n", b"\n"):
                break
            name, sep, value = h.decode("latin-1").partition(":")
            if not sep:
                raise _ProtocolError(f"bad header line: {h[:80]!r}")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self._left: int | None = None
        if not self._chunked and length is not None:
            if not length.isdigit():
                raise _ProtocolError(f"bad Content-Length: {length!r}")
            self._left = int(length)
        self._chunk_left = 0
        self._done = self._left == 0
        self.will_close = (self.headers.get("connection", "").lower() == "close"
                           or (not self._chunked and self._left is None))
        if self._done:
            self._finish()

    def _finish(self) -> None:
        self._done = True
        if self.will_close:
            self._conn.close()

    def read1(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes of the body, b"" at its end."""
        if self._done:
            return b""
        if self._chunked:
            if self._chunk_left == 0:
                size_line = self._rfile.readline(_MAX_LINE + 1)
                try:
                    self._chunk_left = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _ProtocolError(f"bad chunk size: {size_line[:40]!r}") from None
                if self._chunk_left == 0:
                    while self._rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._finish()
                    return b""
            data = self._rfile.read1(min(n, self._chunk_left))
            if not data:
                raise _ProtocolError("connection closed inside a chunk")
            self._chunk_left -= len(data)
            if self._chunk_left == 0 and self._rfile.readline(_MAX_LINE + 1) not in (
                    b"\r\n", b"\n"):
                raise _ProtocolError("chunk not followed by CRLF")
            return data
        want = n if self._left is None else min(n, self._left)
        data = self._rfile.read1(want)
        if self._left is None:
            if not data:
                self._finish()
            return data
        if not data:
            raise _ProtocolError(f"connection closed with {self._left} bytes of the body "
                                 "still to come")
        self._left -= len(data)
        if self._left == 0:
            self._finish()
        return data

    def read(self) -> bytes:
        out = bytearray()
        while chunk := self.read1():
            out += chunk
        return bytes(out)

    def __iter__(self) -> Iterator[bytes]:
        """The body a line at a time (the event stream)."""
        pending = b""
        while chunk := self.read1():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line + b"\n"
        if pending:
            yield pending


class _Connection:
    """A kept-alive HTTP/1.1 connection over the agent's Unix socket."""

    def __init__(self, socket_path: str, timeout: float | None) -> None:
        self.socket_path, self.timeout = socket_path, timeout
        self._sock: socket.socket | None = None
        self._rfile: io.BufferedReader | None = None

    def close(self) -> None:
        if self._rfile is not None:
            self._rfile.close()
            self._rfile = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, method: str, target: str, body: bytes | None) -> _Response:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except OSError:
                sock.close()
                raise
            self._sock, self._rfile = sock, sock.makefile("rb")
        self._sock.settimeout(self.timeout)
        head = f"{method} {target} HTTP/1.1\r\nHost: agent\r\nAccept: */*\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._sock.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
        assert self._rfile is not None
        return _Response(self, self._rfile)


class SocketClient:
    """One keep-alive connection to the agent; ``with SocketClient(path) as c: ...``."""

    def __init__(self, socket_path: str | os.PathLike[str] | None = None,
                 *, timeout: float = 10.0) -> None:
        self.socket_path = str(socket_path or default_socket())
        self.timeout = timeout
        self._conn: _Connection | None = None

    def __enter__(self) -> SocketClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open(self, method: str, target: str, body: Any, timeout: float | None
              ) -> _Response:
        payload = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            fresh = self._conn is None
            if self._conn is None:
                self._conn = _Connection(self.socket_path, timeout)
            self._conn.timeout = timeout
            try:
                return self._conn.request(method, target, payload)
            except (_Disconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()  # a kept-alive connection the agent closed: once more
                if attempt or fresh:
                    raise unreachable(self.socket_path, exc) from exc
            except _ProtocolError as exc:
                self.close()
                raise not_understood(self.socket_path, exc) from exc
            except OSError as exc:
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
        except _ProtocolError as exc:
            self.close()
            raise not_understood(self.socket_path, exc) from exc
        except OSError as exc:
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
        except _ProtocolError as exc:
            self.close()
            raise not_understood(self.socket_path, exc) from exc
        except OSError as exc:
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
        except _ProtocolError as exc:
            self.close()
            raise not_understood(self.socket_path, exc) from exc
        except OSError as exc:
            self.close()
            raise unreachable(self.socket_path, exc) from exc

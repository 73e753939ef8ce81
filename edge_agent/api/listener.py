"""The API's Unix-socket listener, bounded so that local clients cannot starve the agent.

aiohttp accepts every connection and waits for ever for a request that never completes.
A local process opening a thousand half-sent requests then holds a thousand file
descriptors: the store's writes fail with EMFILE, the accept loop logs on every retry,
and ``/v1/status`` stalls. So, as web servers in front of anything important do:

* **A cap** on open connections, well under the descriptor limit (the rest stay free
  for the store, buses and plugins). At the cap, the oldest connection that has not
  started a request is closed to make room (a slow-loris connection, not a client
  being served); if every connection is busy the newcomer gets a ``503`` and is closed.
* **A deadline** for each request to arrive: a connection with no request under way
  that has sent nothing useful for ``request_timeout`` seconds (from connecting, or
  since its last answer) is closed. Long answers (the event stream) are not affected.
* **Logged once** per episode, not once per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

_BODY = (b'{"error": "too_many_connections", "message": "too many connections to the agent '
         b'API", "hint": "try again shortly"}')
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY))


def connection_cap(wanted: int, reserve: int = 256) -> int:
    """At most ``wanted``, and never more than half of what the descriptor limit leaves
    after ``reserve`` descriptors for everything else the agent opens."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, (soft - reserve) // 2))


def raise_fd_limit(target: int = 65536) -> None:
    """Raise the soft descriptor limit towards the hard one (systemd's default soft
    limit is 1024 whatever the hard limit allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class _Conn:
    __slots__ = ("busy", "deadline", "opened", "served", "transport")

    def __init__(self, transport: asyncio.BaseTransport, deadline: float) -> None:
        self.transport = transport
        self.opened = time.monotonic()
        self.deadline = deadline
        self.busy = 0  # requests under way
        self.served = 0


class _Tracked(asyncio.Protocol):
    """Stands between the socket and aiohttp's protocol, to count and time connections."""

    def __init__(self, listener: BoundedListener, inner: Any) -> None:
        self._listener = listener
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._listener._opened(transport)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._listener._closed(self._transport)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()


class BoundedListener:
    """Serve an aiohttp application on a Unix socket with a connection cap and deadline."""

    def __init__(self, runner: web.AppRunner, *, max_connections: int = 256,
                 request_timeout: float = 10.0) -> None:
        self.runner = runner
        self.max_connections = connection_cap(max_connections)
        self.request_timeout = request_timeout
        self._conns: dict[asyncio.BaseTransport, _Conn] = {}
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._at_cap = False
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    # ------------------------------------------------------------ aiohttp side

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        conn = self._conns.get(request.transport) if request.transport else None
        if conn is not None:
            conn.busy += 1
        try:
            return await handler(request)
        finally:
            if conn is not None:
                conn.busy -= 1
                conn.served += 1
                conn.deadline = time.monotonic() + self.request_timeout

    # ------------------------------------------------------------ socket side

    def _factory(self) -> asyncio.Protocol:
        if len(self._conns) >= self.max_connections and not self._evict_one():
            self.refused += 1
            self._log_cap()
            return _Refuse()
        return _Tracked(self, self.runner.server())  # type: ignore[misc]

    def _evict_one(self) -> bool:
        """Close the oldest connection that has no request under way."""
        idle = [c for c in self._conns.values() if c.busy == 0]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.opened)
        self._conns.pop(victim.transport, None)
        victim.transport.close()
        self.evicted += 1
        self._log_cap()
        return True

    def _log_cap(self) -> None:
        if not self._at_cap:
            self._at_cap = True
            log.warning("API: %d connections open (the limit): closing the oldest that "
                        "send no request, refusing the rest while every one is busy",
                        self.max_connections)

    def _opened(self, transport: asyncio.BaseTransport) -> None:
        self._conns[transport] = _Conn(transport, time.monotonic() + self.request_timeout)

    def _closed(self, transport: asyncio.BaseTransport) -> None:
        self._conns.pop(transport, None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            late = [c for c in self._conns.values() if c.busy == 0 and now > c.deadline]
            for c in late:
                self._conns.pop(c.transport, None)
                c.transport.close()
            if late:
                first = self.timed_out == 0
                self.timed_out += len(late)
                if first:
                    log.warning("API: closed %d connection(s) that sent no complete request "
                                "within %gs", len(late), self.request_timeout)
            if self._at_cap and len(self._conns) < self.max_connections // 2:
                self._at_cap = False
                log.warning("API: connections back under the limit (%d evicted, %d refused, "
                            "%d timed out so far)", self.evicted, self.refused,
                            self.timed_out)

    async def start(self, path: Path, mode: int = 0o660) -> None:
        """Listen on ``path``. The socket is bound and listening under a temporary name,
        given its mode, then renamed into place: whoever waits for the path to exist
        (a test, a script, systemd) can connect at once. A bind straight to the path
        leaves a moment where it exists but refuses connections."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmp = path.with_name(path.name + ".new")
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            try:
                sock.bind(str(tmp))
                bound = tmp
            except OSError:  # a path near the sun_path limit: no room for the suffix
                sock.bind(str(path))
                bound = path
            os.chmod(bound, mode)
            sock.listen(128)
            sock.setblocking(False)
            self._server = await loop.create_unix_server(self._factory, sock=sock)
            if bound != path:
                os.replace(bound, path)
        except BaseException:
            sock.close()
            raise
        self._sweeper = loop.create_task(self._sweep(), name="api-sweeper")

    async def stop(self) -> None:
        """Stop listening; the runner's cleanup then closes the open connections."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            self._server.close()

    def to_json(self) -> dict[str, Any]:
        return {"open": len(self._conns), "limit": self.max_connections,
                "evicted": self.evicted, "refused": self.refused,
                "timed_out": self.timed_out}

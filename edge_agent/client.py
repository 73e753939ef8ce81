"""asyncio client for the agent's Unix-socket API: the dashboard and tests, which hold the
live event stream open. One-shot commands use :mod:`edge_agent.oneshot`."""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from edge_agent.api.routes import ROUTES, path
from edge_agent.errors import ClientError
from edge_agent.oneshot import (
    DEFAULT_SOCKET,
    SseParser,
    api_error,
    default_socket,
    unreachable,
)

__all__ = ["DEFAULT_SOCKET", "AgentClient", "api_error", "default_socket"]

class AgentClient:
    """``async with AgentClient(path) as c: devices: list[Device] = await c.call("devices")``."""

    def __init__(self, socket_path: str | os.PathLike[str] | None = None,
                 *, timeout: float = 10.0) -> None:
        self.socket_path = str(socket_path or default_socket())
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AgentClient:
        connector = aiohttp.UnixConnector(path=self.socket_path)
        self._session = aiohttp.ClientSession(
            connector=connector, base_url="http://agent",
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _unreachable(self, exc: Exception) -> ClientError:
        return unreachable(self.socket_path, exc)

    async def request(self, method: str, path: str, body: Any = None,
                      params: dict[str, str] | None = None) -> Any:
        assert self._session is not None, "use 'async with AgentClient(...)'"
        try:
            async with self._session.request(
                method, path, json=body, params=params,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                text = await resp.text()
                try:
                    data = json.loads(text) if text else None
                except json.JSONDecodeError:
                    data = None
                if resp.status >= 400:
                    raise api_error(resp.status, data, text)
                return data
        except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError,
                TimeoutError) as exc:
            raise self._unreachable(exc) from exc

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params={k: str(v) for k, v in params.items()
                                                       if v is not None})

    async def post(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, body)

    async def call(self, route: str, *, id: str | None = None, body: Any = None,
                   **query: Any) -> Any:
        """Call a named route of :data:`edge_agent.api.schema.ROUTES`; the answer is the
        route's record in :mod:`edge_agent.api.schema` (annotate the variable)."""
        r = ROUTES[route]
        url = path(route, id=urllib.parse.quote(id, safe="")) if id is not None else r.path
        return await self.request(r.method, url, body, params={
            k: str(v) for k, v in query.items() if v is not None})

    async def download(self, path: str, out: Any, **params: Any) -> int:
        """Copy a streamed response body into the binary file ``out``; return bytes."""
        assert self._session is not None
        query = {k: str(v) for k, v in params.items() if v is not None}
        try:
            async with self._session.get(path, params=query,
                                         timeout=aiohttp.ClientTimeout(total=None)) as resp:
                if resp.status >= 400:
                    text = await resp.text()
                    try:
                        data = json.loads(text)
                    except json.JSONDecodeError:
                        data = None
                    raise api_error(resp.status, data, text)
                n = 0
                async for chunk in resp.content.iter_chunked(65536):
                    out.write(chunk)
                    n += len(chunk)
                return n
        except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError,
                TimeoutError) as exc:
            raise self._unreachable(exc) from exc

    async def stream(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yield ``(kind, data)`` from the live event stream until it ends.

        The first item is ``("open", {})`` once the agent has subscribed this client:
        state fetched after it, plus the events that follow, misses nothing.
        """
        assert self._session is not None
        try:
            async with self._session.get(path("events_stream"),
                                         timeout=aiohttp.ClientTimeout(total=None,
                                                                       sock_read=40)) as resp:
                parser = SseParser()
                async for raw in resp.content:
                    if (event := parser.feed(raw.decode())) is not None:
                        yield event
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                FileNotFoundError, ConnectionRefusedError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc

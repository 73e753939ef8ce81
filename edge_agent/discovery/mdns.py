"""mDNS/DNS-SD browsing through zeroconf's asyncio API, bound to named interfaces.

zeroconf listens on every interface unless told otherwise; a site names the interfaces
(addresses) to browse and nothing else is touched. mDNS gives an address and a claimed
name, never an identity: plugins build the identity, and drivers confirm it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from edge_agent.contract import MdnsService

log = logging.getLogger(__name__)

OnService = Callable[[MdnsService], Awaitable[None]]
OnProblem = Callable[[str, str, str], None]  # (service name, service type, why)


def decode_txt(props: Mapping[bytes, bytes | None]) -> tuple[dict[str, str], list[str]]:
    """Decode TXT records; return the good ones and a note per malformed one."""
    out: dict[str, str] = {}
    bad: list[str] = []
    for k, v in props.items():
        try:
            key = k.decode("utf-8")
            out[key] = "" if v is None else v.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(f"TXT key {k!r} is not UTF-8")
    return out, bad


class MdnsBrowser:
    """Browses a set of service types and hands resolved services to ``on_service``."""

    def __init__(
        self,
        interfaces: Sequence[str],
        service_types: Sequence[str],
        on_service: OnService,
        on_problem: OnProblem,
        *,
        resolve_timeout_ms: int = 3000,
    ) -> None:
        self.interfaces = list(interfaces)
        self.service_types = sorted(set(service_types))
        self._on_service = on_service
        self._on_problem = on_problem
        self._timeout = resolve_timeout_ms
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.seen: dict[str, MdnsService] = {}

    async def start(self) -> None:
        if not self.service_types:
            return
        v6 = any(":" in i for i in self.interfaces)
        v4 = any(":" not in i for i in self.interfaces)
        ipv = IPVersion.All if (v4 and v6) else (IPVersion.V6Only if v6 else IPVersion.V4Only)
        self._aiozc = AsyncZeroconf(interfaces=self.interfaces, ip_version=ipv)
        self._browser = AsyncServiceBrowser(
            self._aiozc.zeroconf, self.service_types, handlers=[self._changed]
        )
        log.info("mDNS: browsing %s on %s", ", ".join(self.service_types),
                 ", ".join(self.interfaces))

    def _changed(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            self.seen.pop(name, None)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        assert self._aiozc is not None
        info = AsyncServiceInfo(service_type, name)
        try:
            ok = await info.async_request(self._aiozc.zeroconf, self._timeout)
        except Exception as exc:  # zeroconf raises a variety on malformed records
            self._on_problem(name, service_type, f"could not resolve: {exc!r}")
            return
        if not ok:
            self._on_problem(name, service_type, "no SRV/TXT answer within timeout")
            return
        addresses = tuple(info.parsed_scoped_addresses())
        if not addresses or not info.port:
            self._on_problem(name, service_type, "record has no address or port")
            return
        props, bad = decode_txt(info.properties or {})
        for note in bad:
            self._on_problem(name, service_type, note)
        svc = MdnsService(
            service_type=service_type,
            name=name,
            addresses=addresses,
            port=int(info.port),
            properties=props,
            interface=",".join(self.interfaces),
        )
        self.seen[name] = svc
        try:
            await self._on_service(svc)
        except Exception:
            log.exception("mDNS: handling %s failed", name)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._aiozc is not None:
            await self._aiozc.async_close()

    def to_json(self) -> dict[str, Any]:
        return {"interfaces": self.interfaces, "service_types": self.service_types,
                "seen": sorted(self.seen)}

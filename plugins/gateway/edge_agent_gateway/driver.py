"""Async driver for one REST locker gateway (aiohttp client)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json as _json
import ssl
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import yarl

from edge_agent.contract import (
    CompartmentState,
    CredentialRead,
    DeviceInfo,
    DeviceState,
    Door,
    Item,
    PushChannel,
    Signal,
    WireRecord,
)
from edge_agent.errors import (
    DeviceTimeout,
    DriverError,
    IdentityMismatch,
    LockJammed,
    ProtocolError,
    TransportError,
)

OPEN_TIMEOUT = 20.0  # the gateway's own open attempt times out at 20 s (protocols.md)
OPEN_RETRIES = 3
WIRE_BYTES = 1024  # what the wire view keeps of each request or answer


class GatewayDriver:
    # The gateway's open answers doorOpen and its lockers pop open (contract 1.2).
    door_opens_on_unlock = True
    capabilities = frozenset({"identify", "out_of_service", "indicate"})

    def __init__(self, host: str, port: int, serial: str, settings: Mapping[str, Any],
                 events: PushChannel | None = None, *, tls: bool = False,
                 pins: Mapping[str, str] | None = None) -> None:
        pinned = (pins or {}).get("fingerprint")
        # A pinned certificate means TLS whatever an advertisement now says (no downgrade).
        self.tls = tls or pinned is not None
        self.base = f"{'https' if self.tls else 'http'}://{host}:{port}"
        # Self-signed, as embedded gateways are: trust is the pinned SHA-256, checked by
        # aiohttp on every new connection; before adoption, none (the inbox shows it).
        self._ssl: aiohttp.Fingerprint | bool = (
            aiohttp.Fingerprint(bytes.fromhex(pinned.removeprefix("sha256:")))
            if pinned else False) if self.tls else True
        self.pinned = pinned
        self._wire: collections.deque[WireRecord] = collections.deque(maxlen=200)
        self.fingerprint: str | None = pinned  # checked by aiohttp on every connection
        self.host, self.port = host, port
        self.serial = serial
        self.timeout = float(settings.get("request_timeout", 2.0))
        self._session: aiohttp.ClientSession | None = None
        self._last_raw: Any = None
        self._last_state: DeviceState | None = None
        self.events = events
        self._reader: asyncio.Task[None] | None = None
        self._reader_after: int | None = None
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _url(self, path: str) -> yarl.URL:
        url = self._urls.get(path)
        if url is None:  # parsed once: the poll asks for the same path every second
            url = yarl.URL(self.base + path)
            if len(self._urls) < 64:
                self._urls[path] = url
        return url

    def _client_timeout(self, total: float) -> aiohttp.ClientTimeout:
        t = self._timeouts.get(total)
        if t is None:
            t = self._timeouts[total] = aiohttp.ClientTimeout(total=total)
        return t

    async def _request(self, method: str, path: str, *, json: Any = None,
                       timeout: float | None = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        sent = f"{method} {path}".encode() + (b" " + _json.dumps(json).encode()
                                               if json is not None else b"")
        self._wire.append(WireRecord(time.time(), "tx", sent[:WIRE_BYTES]))
        try:
            async with self._session.request(
                method, self._url(path), json=json, ssl=self._ssl,
                timeout=self._client_timeout(timeout or self.timeout),
            ) as resp:
                body = await resp.read()
                status = f"{resp.status} ".encode()
                self._wire.append(WireRecord(time.time(), "rx", status + body[
                    :WIRE_BYTES - len(status)]))
                if resp.status >= 500:
                    raise DriverError(f"gateway answered {resp.status} to {method} {path}")
                if resp.status >= 400:
                    raise ProtocolError(f"gateway refused {method} {path}: {resp.status}")
                return _json.loads(body)
        except aiohttp.ServerFingerprintMismatch as exc:
            raise IdentityMismatch(
                f"{self.base} presents certificate sha256:{exc.got.hex()}, not the pinned "
                f"sha256:{exc.expected.hex()}") from exc
        except TimeoutError as exc:
            raise DeviceTimeout(f"{method} {path}: no answer") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise TransportError(f"{self.base}: {exc}") from exc
        except (ValueError, UnicodeDecodeError, aiohttp.ContentTypeError) as exc:
            raise ProtocolError(f"{method} {path}: not JSON") from exc

    def wire(self, limit: int = 100) -> list[WireRecord]:
        """Contract 1.4: the last HTTP exchanges (request line and JSON body; status and
        body of the answer, each cut at WIRE_BYTES)."""
        return list(self._wire)[-limit:]

    async def _read_fingerprint(self) -> str:
        """Before adoption: the certificate the gateway presents, from a handshake of
        our own (aiohttp does not expose it). Once pinned, aiohttp's Fingerprint check
        on every connection is what holds the gateway to it."""
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        try:
            async with asyncio.timeout(self.timeout):
                _reader, writer = await asyncio.open_connection(self.host, self.port, ssl=ctx)
        except TimeoutError as exc:
            raise DeviceTimeout(f"{self.base}: no TLS handshake") from exc
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"{self.base}: {exc}") from exc
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            if not der:
                raise ProtocolError(f"{self.base}: presented no certificate")
            return "sha256:" + hashlib.sha256(der).hexdigest()
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    async def connect(self) -> DeviceInfo:
        if self.tls and self.pinned is None:  # what it presents on this connection
            self.fingerprint = await self._read_fingerprint()
        info = await self._request("GET", "/info")
        if not isinstance(info, dict) or info.get("serial") != self.serial:
            got = info.get("serial") if isinstance(info, dict) else None
            raise IdentityMismatch(f"advertised serial {self.serial}, the gateway says "
                                   f"{got!r}")
        lockers = await self._request("GET", "/lockers")
        self._start_reader()
        return DeviceInfo(vendor=str(info.get("vendor", "")), model=str(info.get("model", "")),
                          compartments=len(lockers), serial=self.serial,
                          firmware=str(info.get("firmware", "")) or None,
                          fingerprint=self.fingerprint,
                          details={"api": info.get("apiVersion"), "base_url": self.base,
                                   "tls": "certificate pinned" if isinstance(
                                       self._ssl, aiohttp.Fingerprint) else
                                   "not pinned yet" if self.tls else "none (plain HTTP)"})

    async def read_state(self) -> DeviceState:
        raw = await self._request("GET", "/lockers")
        if raw != self._last_raw:  # most polls change nothing: skip rebuilding the state
            self._last_state, self._last_raw = parse_lockers(raw), raw
        assert self._last_state is not None
        return self._last_state

    async def unlock(self, compartment: int) -> DeviceState:
        last: Exception | None = None
        for attempt in range(OPEN_RETRIES):
            try:
                r = await self._request("POST", f"/lockers/{compartment - 1}/open",
                                        timeout=OPEN_TIMEOUT)
                if not r.get("success"):
                    why = str(r.get("message") or "no reason given")
                    # The gateway's words for a lock that did not move (contract 1.2 kind).
                    kind = LockJammed if "jam" in why.lower() else DriverError
                    raise kind(f"gateway could not open locker {compartment}: {why}")
                return await self.read_state()
            except (TransportError, DeviceTimeout) as exc:
                last = exc
                if attempt < OPEN_RETRIES - 1:
                    await asyncio.sleep(1.0)
        assert last is not None
        raise last

    async def set_out_of_service(self, compartment: int, out: bool, reason: str) -> None:
        await self._request("PATCH", f"/lockers/{compartment - 1}",
                            json={"outOfService": out, "reasonCode": reason if out else ""})

    async def identify(self) -> None:
        await self._request("POST", "/identify")

    async def indicate(self, signal: Signal) -> None:
        """The built-in reader's LED and buzzer (contract 1.3)."""
        await self._request("POST", "/reader/signal", json={"signal": str(signal)})

    def _start_reader(self) -> None:
        if self.events is not None and (self._reader is None or self._reader.done()):
            self._reader = asyncio.get_running_loop().create_task(self._follow_reader())

    async def _follow_reader(self) -> None:
        """Long-poll the built-in reader; push each card (contract 1.3). A gateway with no
        reader answers 404 once, and the driver stops asking."""
        assert self.events is not None
        while True:
            after = self._reader_after if self._reader_after is not None else -1
            try:
                # The first look (wait=0) only learns where the gateway's list ends.
                got = await self._request("GET", f"/reader/events?after={max(after, 0)}"
                                          f"&wait={0 if after < 0 else 20}", timeout=25)
            except ProtocolError as exc:
                if ": 404" in str(exc):
                    return  # no reader on this gateway
                await asyncio.sleep(1.0)  # garbage from a confused gateway: ask again
                continue
            except DriverError:
                await asyncio.sleep(1.0)  # the poll loop reports the outage
                continue
            if not isinstance(got, dict):
                return
            last = int(got.get("last", 0))
            if after < 0:  # first look: skip what was presented before we connected
                self._reader_after = last
                continue
            for ev in got.get("events", []):
                if ev.get("type") == "card" and ev.get("card"):
                    self.events.credential(CredentialRead(
                        card=str(ev["card"]), keys=str(ev.get("keys", "")),
                        bits=len(str(ev["card"])) * 4))
            self._reader_after = last

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._session is not None:
            await self._session.close()
            self._session = None


def parse_lockers(lockers: Any) -> DeviceState:
    """The body of ``GET /lockers`` as a device state (pure: used by recorded-frame tests)."""
    if not isinstance(lockers, list):
        raise ProtocolError("GET /lockers did not return a list")
    comps = []
    try:
        for lk in sorted(lockers, key=lambda x: int(x["lockerId"])):
            comps.append(CompartmentState(
                index=int(lk["lockerId"]) + 1,
                door=Door.OPEN if lk.get("doorOpen") else Door.CLOSED,
                item=Item.PRESENT if lk.get("occupied") else Item.ABSENT,
                fault=f"out of service ({lk.get('reasonCode')})" if lk.get("outOfService")
                else None))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"GET /lockers: malformed locker entry: {exc!r}") from exc
    return DeviceState(tuple(comps))

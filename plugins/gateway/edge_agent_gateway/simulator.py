"""A REST locker gateway simulator: a real HTTPS server (a self-signed certificate made
at start, as an embedded gateway has) that advertises itself through real zeroconf,
with faults (slow answers, 500s, dropped connections, a new IP address,
disappearing from mDNS and coming back). Runs its own event loop in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import random
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edge_agent_gateway import SERVICE_TYPE


@dataclass
class Locker:
    door_open: bool = False
    occupied: bool = True
    out_of_service: bool = False
    reason: str = ""
    jammed: bool = False  # the motor runs, the bolt does not move


@dataclass
class GatewayFaults:
    slow_s: float = 0.0
    error_500: bool = False
    drop: bool = False
    garbage: bool = False  # 200 with a body that is not JSON


@dataclass
class GatewaySimulator:
    serial: str
    lockers: int = 12
    host: str = "127.0.0.1"
    port: int = 0
    name: str = ""
    advertise_serial: str | None = None  # a spoofer claims someone else's name
    mdns_interfaces: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    scenario: bool = False  # officers take and return kit now and then
    scenario_interval: float = 2.0
    seed: int = 0
    txt: dict[str, str] = field(default_factory=dict)  # extra TXT keys (a site tag, say)
    mdns: bool = True  # False: HTTP only (a gateway configured by address)
    tls: bool = True  # HTTPS with a self-signed certificate; False: plain HTTP

    def __post_init__(self) -> None:
        self.state = [Locker(occupied=i % 3 != 0) for i in range(self.lockers)]
        self.faults = GatewayFaults()
        self.opens: list[int] = []
        self.recording: list[dict[str, Any]] | None = None  # set to a list to capture
        self.lock = threading.Lock()
        self.name = self.name or f"gw-{self.serial}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"sim-gw-{self.serial}")
        self._runner: web.AppRunner | None = None
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._scenario_task: Any = None
        # The built-in card reader: events the gateway reports, what it was told to show.
        self.reader_events: list[dict[str, Any]] = []
        self.signals: list[str] = []
        self._reader_cond: asyncio.Condition | None = None
        self._cert_dir = tempfile.mkdtemp(prefix=f"sim-gw-{self.serial}-")
        self.fingerprint: str | None = None  # "sha256:<hex>" of the certificate served
        if self.tls:
            self._make_certificate()

    def _make_certificate(self) -> None:
        """A new key and self-signed certificate (what a factory-reset or swapped gateway
        would present)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name or self.serial),
                          x509.NameAttribute(NameOID.SERIAL_NUMBER, self.serial)])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=3650))
                .sign(key, hashes.SHA256()))
        der = cert.public_bytes(serialization.Encoding.DER)
        self.fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()
        with open(f"{self._cert_dir}/cert.pem", "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(f"{self._cert_dir}/key.pem", "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(f"{self._cert_dir}/cert.pem", f"{self._cert_dir}/key.pem")
        return ctx

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    # ---------------------------------------------------------------- HTTP

    async def _maybe_fault(self, request: web.Request) -> None:
        if self.faults.slow_s:
            await asyncio.sleep(self.faults.slow_s)
        if self.faults.drop:
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPInternalServerError()
        if self.faults.error_500:
            raise web.HTTPInternalServerError(text="simulated failure")
        if self.faults.garbage:
            raise web.HTTPOk(text="\x02\xff<<not json>>", content_type="application/json")

    async def info(self, request: web.Request) -> web.Response:
        await self._maybe_fault(request)
        return web.json_response({"vendor": "EdgeSim", "model": "LG-12", "serial": self.serial,
                                  "apiVersion": "1", "firmware": "2.4.1"})

    def _locker_json(self, i: int) -> dict[str, Any]:
        lk = self.state[i]
        return {"lockerId": i, "doorOpen": lk.door_open, "occupied": lk.occupied,
                "outOfService": lk.out_of_service, "reasonCode": lk.reason}

    async def list_lockers(self, request: web.Request) -> web.Response:
        await self._maybe_fault(request)
        with self.lock:
            return web.json_response([self._locker_json(i) for i in range(self.lockers)])

    async def open_locker(self, request: web.Request) -> web.Response:
        await self._maybe_fault(request)
        i = int(request.match_info["id"])
        if not 0 <= i < self.lockers:
            return web.json_response({"success": False, "lockerId": i, "doorOpen": False,
                                      "message": "no such locker"}, status=404)
        with self.lock:
            if self.state[i].out_of_service:
                return web.json_response({"success": False, "lockerId": i, "doorOpen": False,
                                          "message": "out of service"})
            if self.state[i].jammed:
                return web.json_response({"success": False, "lockerId": i, "doorOpen": False,
                                          "message": "lock jammed"})
            self.state[i].door_open = True
            self.opens.append(i)
        return web.json_response({"success": True, "lockerId": i, "doorOpen": True,
                                  "message": ""})

    async def patch_locker(self, request: web.Request) -> web.Response:
        await self._maybe_fault(request)
        i = int(request.match_info["id"])
        body = await request.json()
        with self.lock:
            self.state[i].out_of_service = bool(body.get("outOfService"))
            self.state[i].reason = str(body.get("reasonCode", ""))
        return web.json_response(self._locker_json(i))

    async def identify(self, request: web.Request) -> web.Response:
        return web.json_response({"success": True})

    # ---------------------------------------------------------------- built-in reader

    @property
    def identity(self) -> str:
        return f"gateway:{self.serial}"  # how `edge-agent sim card` names this reader

    def present(self, card: str, keys: str = "") -> None:
        """A card held to the gateway's reader (with keypad digits entered first)."""
        async def add() -> None:
            assert self._reader_cond is not None
            async with self._reader_cond:
                self.reader_events.append({"seq": len(self.reader_events) + 1,
                                           "type": "card", "card": card.upper(),
                                           "keys": keys})
                self._reader_cond.notify_all()

        self._call(add())

    async def reader_poll(self, request: web.Request) -> web.Response:
        """Long poll: events after ``?after=N``, waiting up to ``wait`` seconds (max 25)."""
        await self._maybe_fault(request)
        try:
            after = int(request.query.get("after", "0"))
            wait = min(float(request.query.get("wait", "20")), 25.0)
        except ValueError:
            return web.json_response({"message": "after and wait are numbers"}, status=400)
        assert self._reader_cond is not None
        async with self._reader_cond:
            try:
                await asyncio.wait_for(self._reader_cond.wait_for(
                    lambda: len(self.reader_events) > after), wait)
            except TimeoutError:
                pass
            return web.json_response({"events": self.reader_events[after:],
                                      "last": len(self.reader_events)})

    async def reader_signal(self, request: web.Request) -> web.Response:
        body = await request.json()
        signal = str(body.get("signal", ""))
        if signal not in ("granted", "refused", "waiting", "idle"):
            return web.json_response({"success": False, "message": "unknown signal"},
                                     status=400)
        self.signals.append({"granted": "green", "refused": "red", "waiting": "amber",
                             "idle": "off"}[signal])
        return web.json_response({"success": True})

    # ---------------------------------------------------------------- lifecycle

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    @web.middleware
    async def _tap(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Capture each exchange when ``recording`` is a list (recorded-frame data)."""
        body = await request.text() if self.recording is not None else ""
        resp: web.StreamResponse = await handler(request)
        if self.recording is not None and isinstance(resp, web.Response):
            self.recording.append({"method": request.method, "path": request.path,
                                   "body": json.loads(body) if body else None,
                                   "status": resp.status,
                                   "answer": json.loads(resp.text or "null")})
        return resp

    async def _serve(self) -> None:
        self._reader_cond = asyncio.Condition()
        app = web.Application(middlewares=[self._tap])
        app.router.add_get("/info", self.info)
        app.router.add_get("/lockers", self.list_lockers)
        app.router.add_post("/lockers/{id}/open", self.open_locker)
        app.router.add_patch("/lockers/{id}", self.patch_locker)
        app.router.add_post("/identify", self.identify)
        app.router.add_get("/reader/events", self.reader_poll)
        app.router.add_post("/reader/signal", self.reader_signal)
        # A reader long poll may be open when the gateway stops: do not wait it out.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port,
                           ssl_context=self._ssl_context())
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        assert sockets
        self.port = sockets[0].getsockname()[1]

    def _service(self) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE, f"{self.name}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(self.host)], port=self.port,
            properties={**self.txt, "vendor": "edgesim", "model": "LG-12", "api": "1",
                        "serial": self.advertise_serial or self.serial,
                        **({"tls": "1"} if self.tls else {})},
            server=f"{self.name}.local.")

    async def _end_announcing(self) -> None:
        task = getattr(self, "_announcing", None)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _advertise(self) -> None:
        if self._zc is None:
            self._zc = AsyncZeroconf(interfaces=self.mdns_interfaces,
                                     ip_version=IPVersion.V4Only)
        self._info = self._service()
        # cooperating_responders: when the gateway comes back, caches may still hold the
        # records of whoever held its name meanwhile (a spoofer); the real device claims it.
        # The announcement goes on in a task of zeroconf's: kept, so stop() can end it.
        self._announcing = await self._zc.async_register_service(
            self._info, allow_name_change=False, cooperating_responders=True)

    async def _withdraw(self) -> None:
        if self._zc is not None and self._info is not None:
            await self._end_announcing()
            await (await self._zc.async_unregister_service(self._info))  # goodbyes sent
            self._info = None

    async def _scenario(self) -> None:
        rng = random.Random(self.seed)
        while True:
            await asyncio.sleep(self.scenario_interval * (0.5 + rng.random()))
            with self.lock:
                lk = self.state[rng.randrange(self.lockers)]
                if lk.out_of_service:
                    continue
                if lk.door_open:
                    lk.door_open = False
                else:
                    lk.door_open, lk.occupied = True, not lk.occupied

    def start(self) -> None:
        self._thread.start()
        self._call(self._serve())
        if self.mdns:
            self._call(self._advertise())
        if self.scenario:
            self._scenario_task = asyncio.run_coroutine_threadsafe(self._scenario(),
                                                                   self._loop)

    def withdraw(self) -> None:
        """Disappear from mDNS (the HTTP server keeps running)."""
        self._call(self._withdraw())

    def advertise(self) -> None:
        self._call(self._advertise())

    def move(self, host: str) -> None:
        """Come back at another address (DHCP gave the gateway a new IP)."""
        async def go() -> None:
            await self._withdraw()
            if self._runner is not None:
                await self._runner.cleanup()
            self.host, self.port = host, 0
            await self._serve()
            await self._advertise()

        self._call(go())

    def new_certificate(self) -> str:
        """Come back on the same address and port with a new key and certificate (a
        replaced or factory-reset gateway, or someone in the middle). Returns the new
        fingerprint."""
        async def go() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            self._make_certificate()
            await self._serve()

        self._call(go())
        assert self.fingerprint is not None
        return self.fingerprint

    def stop(self) -> None:
        async def go() -> None:
            if self._scenario_task is not None:
                self._scenario_task.cancel()
            await self._withdraw()
            if self._zc is not None:
                await self._zc.async_close()
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            self._call(go())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            shutil.rmtree(self._cert_dir, ignore_errors=True)

    def describe(self) -> list[str]:
        return [f"REST locker gateway {self.serial} ({self.lockers} lockers) at "
                f"{self.scheme}://{self.host}:{self.port}, mDNS {SERVICE_TYPE}"
                + (f", certificate {self.fingerprint}" if self.fingerprint else "")]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> GatewaySimulator:
        known = {"serial", "lockers", "host", "port", "name", "interfaces", "scenario",
                 "scenario_interval", "seed", "txt", "mdns", "tls"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown gateway simulator option(s): {', '.join(unknown)}")
        return cls(serial=str(options.get("serial", "GW-0001")),
                   lockers=int(options.get("lockers", 12)),
                   host=str(options.get("host", "127.0.0.1")),
                   port=int(options.get("port", 0)), name=str(options.get("name", "")),
                   mdns_interfaces=list(options.get("interfaces", ["127.0.0.1"])),
                   scenario=bool(options.get("scenario", False)),
                   scenario_interval=float(options.get("scenario_interval", 2.0)),
                   seed=int(options.get("seed", 0)),
                   txt={str(k): str(v) for k, v in dict(options.get("txt", {})).items()},
                   mdns=bool(options.get("mdns", True)), tls=bool(options.get("tls", True)))

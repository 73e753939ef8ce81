"""The agent's control API, served on a Unix socket (like the Docker engine's).

``curl --unix-socket /run/edge-agent/agent.sock http://agent/v1/devices`` works. The
caller's OS user comes from the socket's peer credentials (``SO_PEERCRED``), which the
caller cannot forge; every command is audited with it.

Routes (all JSON):

* ``GET  /v1/status``                     site, agent health, counts, alarms, buses
* ``GET  /v1/devices``                    every device with its compartments
* ``GET  /v1/devices/{id}``               one device
* ``GET  /v1/devices/{id}/wire``          the last frames on the device's bus
* ``POST /v1/devices/{id}/unlock``        body ``{"compartment": N, "reason": "..."}``
* ``GET  /v1/events``                     audit records, from the index: ``?limit=&after_seq=
  &since=&until=&device=&compartment=&item=&actor=&action=``
* ``GET  /v1/events/export``              every match, streamed: ``&format=jsonl|csv``
* ``GET  /v1/events/stream``              server-sent events: ``audit`` and ``device``
* ``GET  /v1/plugins``                    loaded, refused and isolated plugins
* ``POST /v1/devices/{id}/identify``      flash/beep the device, if it can
* ``POST /v1/devices/{id}/out-of-service`` ``{"compartment": N, "reason": "...", "out": true}``
* ``GET  /v1/inbox``                      discovered but not adopted, with why
* ``POST /v1/inbox/{id}/adopt``           ``{"reason": "..."}``
* ``POST /v1/inbox/{id}/ignore``          ``{"reason": "..."}`` (persists)

Every error has one shape, ``{"error": CODE, "message": "...", "hint": "..."}``, with
400 (``bad_request``, ``no_such_compartment``, ``unsupported``), 404 (``not_found``),
409 (``device_unavailable``, ``lock_jammed``, ``door_did_not_open``), 502
(``driver_error``), 503 (``store_unavailable``: fail closed; ``too_many_connections``)
and 504 (``device_timeout``: the command was sent, its outcome is unknown).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import itertools
import json
import logging
import os
import pwd
import re
import socket
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web

from edge_agent.api.export import CSV_FIELDS, csv_line, csv_value
from edge_agent.api.listener import BoundedListener
from edge_agent.api.schema import ROUTES
from edge_agent.contract import WireRecord
from edge_agent.entitlements import EntitlementError
from edge_agent.errors import (
    AccessDenied,
    DeviceTimeout,
    DeviceUnavailable,
    DoorDidNotOpen,
    DriverError,
    IdentityMismatch,
    LockJammed,
    NoSuchCompartment,
    StoreError,
    StoreUnavailable,
    Unsupported,
)
from edge_agent.events import EventHub
from edge_agent.plugins import PluginHost
from edge_agent.store.audit import AuditLog, Query, canonical_json, parse_time

if TYPE_CHECKING:
    from edge_agent.lending import BusLending

log = logging.getLogger(__name__)
AGENT_KEY = web.AppKey("agent", object)


def peer_user(request: web.Request) -> tuple[str, int | None]:
    """OS user name and uid of the process at the other end of the Unix socket."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return "unknown", None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return "unknown", None
    _pid, uid, _gid = struct.unpack("3i", creds)
    try:
        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return f"uid:{uid}", uid


ROLES = ("viewer", "technician", "armourer")


# What _authorise learns about the caller, kept on the request for the handlers.
CALLER_USER = web.RequestKey("user", str)
CALLER_ROLES = web.RequestKey("roles", frozenset)


def caller_roles(uid: int | None, roles: Any) -> frozenset[str]:
    """The roles of the socket's peer: every role when the site config has no
    ``[roles]`` (the socket's 0660 mode is then the only boundary); else those whose Unix
    groups the caller is in (primary or supplementary). Any role can read."""
    if roles is None:
        return frozenset(ROLES)
    if uid is None:
        return frozenset()
    try:
        pw = pwd.getpwuid(uid)
        gids = os.getgrouplist(pw.pw_name, pw.pw_gid)
    except (KeyError, OSError):
        return frozenset()
    names = set()
    for gid in gids:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.add(str(gid))
    held = {role for role in ROLES if names & set(getattr(roles, role))}
    return frozenset(held | ({"viewer"} if held else set()))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status,
                             dumps=lambda o: orjson.dumps(o, default=str).decode())


_CODES = {400: "bad_request", 404: "not_found"}


def error_body(code: str, message: str, hint: str = "") -> dict[str, str]:
    """The one error shape of the API."""
    return {"error": code, "message": message, "hint": hint}


def _error(status: int, message: str, hint: str = "", *, code: str | None = None
           ) -> web.Response:
    return _json(error_body(code or _CODES.get(status, "error"), message, hint),
                 status=status)


MAX_COMPARTMENT = 512  # no board or cabinet has more


def _text(value: Any, what: str, *, required: bool = True) -> str:
    """A string field: present (if required), non-blank, and text (a lone UTF-16
    surrogate from JSON cannot be written to the audit log: refused here, not a 500)."""
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise _http(400, f"{what} is required (a non-empty string)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _http(400, f"{what} is not valid text (lone surrogate)") from exc
    if len(value) > 2000:
        raise _http(400, f"{what} is longer than 2000 characters")
    return value.strip()


def _compartment(value: Any) -> int:
    """A compartment number: a JSON integer from 1 to MAX_COMPARTMENT (no bools, no
    floats, no strings)."""
    if not isinstance(value, int) or isinstance(value, bool) or not \
            1 <= value <= MAX_COMPARTMENT:
        raise _http(400, f"compartment must be an integer from 1 to {MAX_COMPARTMENT}")
    return value


def _int_query(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 9 or not lo <= int(raw) <= hi:
        raise _http(400, f"{key} must be an integer from {lo} to {hi}")
    return int(raw)


def _http(status: int, message: str, hint: str = "") -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 404: web.HTTPNotFound}[status]
    return cls(text=json.dumps(error_body(_CODES[status], message, hint)),
               content_type="application/json")


class AgentApi(Protocol):
    """What the API needs of the agent (the composition root provides it)."""

    @property
    def devices(self) -> Mapping[str, Any]: ...
    @property
    def buses(self) -> Mapping[str, Any]: ...
    @property
    def bus_info(self) -> Mapping[str, dict[str, Any]]: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def hub(self) -> EventHub: ...
    @property
    def plugins(self) -> PluginHost: ...
    @property
    def lending(self) -> BusLending: ...

    def device(self, device_id: str) -> Any: ...
    def status(self) -> dict[str, Any]: ...
    def inbox_items(self) -> list[dict[str, Any]]: ...
    def describe_wire(self, dev: Any, chunks: list[bytes]) -> list[str]: ...
    async def unlock(self, device_id: str, compartment: int, *, actor: str,
                     reason: str, roles: frozenset[str] = ...) -> dict[str, Any]: ...
    async def access_refused(self, user: str, call: str, missing: str, *,
                             why: str = "") -> None: ...
    def custody_view(self) -> dict[str, Any]: ...
    def deployable(self, equipment: str) -> dict[str, Any]: ...
    async def person(self, officer_id: str) -> dict[str, Any] | None: ...
    async def ack_alarm(self, alarm_id: str, *, actor: str,
                        reason: str) -> dict[str, Any]: ...
    async def break_glass(self, *, actor: str, roles: frozenset[str], reason: str,
                          minutes: float) -> dict[str, Any]: ...
    @property
    def config(self) -> Any: ...
    async def identify(self, device_id: str, *, actor: str) -> dict[str, Any]: ...
    async def set_out_of_service(self, device_id: str, compartment: int, *, actor: str,
                                 reason: str, out: bool) -> dict[str, Any]: ...
    async def adopt(self, item_id: str, *, actor: str, reason: str,
                    expect: dict[str, str] | None = None) -> dict[str, Any]: ...
    async def ignore(self, item_id: str, *, actor: str, reason: str) -> dict[str, Any]: ...
    async def unignore(self, item_id: str, *, actor: str, reason: str) -> dict[str, Any]: ...
    def entitlements_summary(self) -> dict[str, Any]: ...
    async def load_entitlements(self, raw: bytes, *, actor: str) -> dict[str, Any]: ...


class ApiServer:
    def __init__(self, agent: AgentApi) -> None:
        self.agent = agent
        self.listener: BoundedListener | None = None
        self.app = web.Application(middlewares=[self._bounded, self._contained,
                                                self._authorise])
        self.app[AGENT_KEY] = agent
        # Every route is named once, in the schema; a handler of the same name serves it.
        for route in ROUTES.values():
            self.app.router.add_route(route.method, route.path, getattr(self, route.name),
                                      name=route.name)
        self.runner: web.AppRunner | None = None
        self._streams: set[web.StreamResponse] = set()

    @staticmethod
    def _prepare(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            # A socket left by a crashed agent: the state-dir lock says we own it now.
            path.unlink()

    @web.middleware
    async def _bounded(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.listener is None:
            return await handler(request)  # type: ignore[no-any-return]
        return await self.listener.middleware(request, handler)

    @web.middleware
    async def _contained(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """No request produces aiohttp's bare 500: a bug in a handler is logged with its
        traceback and answered in the one error shape."""
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:
            log.exception("API %s %s failed", request.method, request.path)
            return _error(500, f"the agent failed on this request: {type(exc).__name__}",
                          "this is a bug: the agent's log has the traceback",
                          code="internal")

    @web.middleware
    async def _authorise(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Each route's role ([roles] in the site config), from the caller's Unix groups.
        A refusal is audited with the caller and the missing role."""
        route = request.match_info.route.name
        user, uid = peer_user(request)
        roles = caller_roles(uid, self.agent.config.roles)
        request[CALLER_USER], request[CALLER_ROLES] = user, roles
        need = (ROUTES[route].role if route in ROUTES else "") or "viewer"
        if not roles & set(need.split("|")):
            await self.agent.access_refused(user, route or request.path, need)
            roles_text = need.replace("|", " or ")
            return _error(403, f"{user} may not {route or request.path}: the {roles_text} "
                          "role is needed", f"ask for membership of a group listed under "
                          f"[roles] {roles_text} in the site config", code="forbidden")
        return await handler(request)  # type: ignore[no-any-return]

    async def start(self, path: Path, *, max_connections: int = 256,
                    request_timeout: float = 10.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._prepare, path)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                    shutdown_timeout=1.0)
        await self.runner.setup()
        self.listener = BoundedListener(self.runner, max_connections=max_connections,
                                        request_timeout=request_timeout)
        await self.listener.start(path, mode=0o660)

    async def stop(self) -> None:
        for resp in list(self._streams):
            with contextlib.suppress(Exception):
                await resp.write_eof()
        if self.listener is not None:
            await self.listener.stop()
        if self.runner is not None:
            await self.runner.cleanup()

    # ------------------------------------------------------------------ handlers

    async def status(self, request: web.Request) -> web.Response:
        status = self.agent.status()
        if self.listener is not None:
            status["api"] = self.listener.to_json()
        return _json(status)

    async def devices(self, request: web.Request) -> web.Response:
        return _json([d.to_json() for d in sorted(self.agent.devices.values(),
                                                   key=lambda d: d.id)])

    def _dev(self, request: web.Request) -> Any:
        dev_id = request.match_info["id"]
        try:
            return self.agent.device(dev_id)
        except DeviceUnavailable as exc:
            raise _http(404, str(exc), "list devices with 'edge-agent devices'") from exc

    async def device(self, request: web.Request) -> web.Response:
        return _json(self._dev(request).to_json())

    async def wire(self, request: web.Request) -> web.Response:
        dev = self._dev(request)
        bus = self.agent.buses.get(dev.candidate.bus_id or "")
        limit = _int_query(request, "limit", 100, 1, 10_000)
        if bus is None:
            return await self._driver_wire(dev, limit)
        frames, diagnostics = await self._frames(dev, bus.wire_snapshot(limit))
        return _json({"bus": bus.bus_id, "address": bus.address,
                      "diagnostics": diagnostics,
                      "bus_info": self.agent.bus_info.get(bus.bus_id),
                      "settings": bus.settings.describe(),
                      "counters": bus.counters.to_json(), "frames": frames})

    async def _frames(self, dev: Any, records: list[Any]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Wire records as the API gives them, each decoded by the device's plugin (off
        the loop), and the plugin's reading figures for the same device."""
        decoded = await asyncio.get_running_loop().run_in_executor(
            None, self.agent.describe_wire, dev, [w.data for w in records])
        frames = [{"t": w.t, "dir": w.direction, "hex": w.data.hex(" "), "note": w.note,
                   "decoded": text} for w, text in zip(records, decoded, strict=True)]
        diagnostics = [row for row in dev.to_json().get("diagnostics", [])
                       if row["source"] == "reading"]
        return frames, diagnostics

    async def _driver_wire(self, dev: Any, limit: int) -> web.Response:
        """A driver-owned transport's chunks (contract 1.4 ``DeviceDriver.wire``)."""
        driver = dev.supervisor.driver if dev.supervisor is not None else None
        fn = getattr(driver, "wire", None)
        records: list[Any] = []
        if callable(fn):
            try:
                got = fn(limit)
                records = [r for r in got if isinstance(r, WireRecord)][-limit:]
            except Exception as exc:  # a plugin's, not ours: isolate it, answer anyway
                self.agent.plugins.isolate(dev.candidate.plugin, f"wire() raised {exc!r}")
        frames, diagnostics = await self._frames(dev, records)
        return _json({"bus": None, "transport": dev.candidate.address,
                      "diagnostics": diagnostics, "frames": frames})

    async def unlock(self, request: web.Request) -> web.Response:
        dev = self._dev(request)
        body = await self._body(request)
        comp = _compartment(body.get("compartment"))
        reason = body["reason"]
        return await self._command(request, lambda u: self.agent.unlock(
            dev.id, comp, actor=u, reason=reason, roles=request[CALLER_ROLES]))

    @staticmethod
    def _query(request: web.Request, default_limit: int | None) -> Query:
        q = request.query
        try:
            limit = int(q["limit"]) if "limit" in q else default_limit
            return Query(
                after_seq=int(q.get("after_seq", "0")),
                since=parse_time(q["since"]) if q.get("since") else None,
                until=parse_time(q["until"]) if q.get("until") else None,
                device=q.get("device"), item=q.get("item"), actor=q.get("actor"),
                action=q.get("action") or q.get("type"),
                compartment=int(q["compartment"]) if q.get("compartment") else None,
                limit=min(limit, 100_000) if limit is not None else None)
        except ValueError as exc:
            raise web.HTTPBadRequest(
                text=json.dumps(error_body("bad_request", f"bad query: {exc}",
                                           "limit, after_seq and compartment are integers; "
                                           "times are ISO 8601")),
                content_type="application/json") from exc
        except StoreError as exc:
            raise web.HTTPBadRequest(text=json.dumps(error_body("bad_request", str(exc))),
                                     content_type="application/json") from exc

    async def events(self, request: web.Request) -> web.Response:
        query = self._query(request, 100)
        hits = await asyncio.get_running_loop().run_in_executor(
            None, self.agent.audit.query, query)
        return _json(hits)

    async def events_export(self, request: web.Request) -> web.StreamResponse:
        """Stream every matching record as JSON lines or CSV (``?format=csv``)."""
        query = self._query(request, None)
        fmt = request.query.get("format", "jsonl")
        if fmt not in ("jsonl", "csv"):
            return _error(400, "format must be jsonl or csv")
        resp = web.StreamResponse(headers={
            "Content-Type": "text/csv" if fmt == "csv" else "application/x-ndjson"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        it = self.agent.audit.iter_query(query)
        if fmt == "csv":
            await resp.write(csv_line(CSV_FIELDS))

        def chunk() -> list[dict[str, Any]]:
            return list(itertools.islice(it, 2000))

        while True:
            recs = await loop.run_in_executor(None, chunk)
            if not recs:
                break
            if fmt == "csv":
                data = b"".join(csv_line([csv_value(r.get(f)) for f in CSV_FIELDS])
                                for r in recs)
            else:
                data = b"".join(canonical_json(r) + b"\n" for r in recs)
            await resp.write(data)
        await resp.write_eof()
        return resp

    async def events_stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        sub = self.agent.hub.subscribe()
        self._streams.add(resp)
        try:
            await resp.write(b": edge-agent event stream\n\n")
            queue = sub.queue
            ended = False
            while not ended:
                events: list[tuple[str, Any]] = []
                if queue.empty():
                    try:
                        # asyncio.timeout, not wait_for: no task per event.
                        async with asyncio.timeout(15):
                            events.append(await queue.get())
                    except TimeoutError:
                        await resp.write(b": keepalive\n\n")
                        continue
                # Everything queued so far goes out in one write (a burst of changes on
                # a busy site is one syscall, not one per event).
                while not queue.empty():
                    events.append(queue.get_nowait())
                out = bytearray()
                for kind, data in events:
                    out += b"event: %s\ndata: %s\n\n" % (
                        kind.encode(), orjson.dumps(data, default=str))
                    if kind == "overflow":
                        ended = True
                        break
                await resp.write(bytes(out))
        except ConnectionResetError:
            pass
        finally:
            sub.close()
            self._streams.discard(resp)
        return resp

    async def entitlements(self, request: web.Request) -> web.Response:
        return _json(self.agent.entitlements_summary())

    async def entitlements_load(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if not raw.lstrip().startswith(b"{"):
            return _error(400, "body is not JSON", "send the snapshot file as it is")
        user, _uid = peer_user(request)
        try:
            result = await self.agent.load_entitlements(raw, actor=user)
        except EntitlementError as exc:
            return _error(400, str(exc), "nothing changed: the snapshot in force stays",
                          code="entitlements_refused")
        except StoreUnavailable as exc:
            return _error(503, str(exc), code="store_unavailable")
        return _json({"loaded": True, **result})

    async def plugins(self, request: web.Request) -> web.Response:
        return _json([r.to_json() for r in sorted(self.agent.plugins.records.values(),
                                                   key=lambda r: r.name)])

    async def inbox(self, request: web.Request) -> web.Response:
        return _json(self.agent.inbox_items())

    async def _body(self, request: web.Request, *, need_reason: bool = True
                    ) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):  # bad JSON, or an int of 5,000 digits
            body = None
        if not isinstance(body, dict):
            raise _http(400, "body must be a JSON object",
                        'e.g. {"compartment": 3, "reason": "..."}')
        if need_reason:
            body["reason"] = _text(body.get("reason"), "reason")
        return body

    async def _command(self, request: web.Request, fn: Any) -> web.Response:
        user, _uid = peer_user(request)
        try:
            result = await fn(user)
        except StoreUnavailable as exc:
            return _error(503, str(exc), "free disk space on the state directory's filesystem",
                          code="store_unavailable")
        except DeviceUnavailable as exc:
            return _error(409, str(exc), code="device_unavailable")
        except DeviceTimeout as exc:
            return _error(504, str(exc), code="device_timeout")
        except (Unsupported, NoSuchCompartment) as exc:
            return _error(400, str(exc), code=exc.kind)
        except IdentityMismatch as exc:
            return _error(409, str(exc), "compare the device with its label",
                          code="identity_mismatch")
        except (LockJammed, DoorDidNotOpen) as exc:
            return _error(409, str(exc), "see the compartment before trying again",
                          code=exc.kind)
        except DriverError as exc:
            return _error(502, str(exc), code="driver_error")
        except AccessDenied as exc:
            await self.agent.access_refused(user, request.match_info.route.name or "",
                                            exc.missing or "?", why=str(exc))
            return _error(403, str(exc), code="forbidden")
        if isinstance(result, dict):
            result["actor"] = user
        status = 202 if isinstance(result, dict) and result.get("waiting") else 200
        return _json(result if result is not None else {"ok": True, "actor": user},
                     status=status)

    async def custody(self, request: web.Request) -> web.Response:
        return _json(self.agent.custody_view())

    async def break_glass(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        minutes = body.get("minutes")
        if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) \
                or not 1 <= minutes <= 60:
            return _error(400, "minutes must be a number from 1 to 60")
        return await self._command(request, lambda u: self.agent.break_glass(
            actor=u, roles=request[CALLER_ROLES], reason=body["reason"], minutes=float(minutes)))

    async def deployable(self, request: web.Request) -> web.Response:
        equipment = request.query.get("equipment", "")
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", equipment):
            return _error(400, "say which equipment class: ?equipment=taser")
        return _json(self.agent.deployable(equipment))

    async def lend_bus(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        seconds = body.get("seconds", 120)
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) \
                or not 5 <= seconds <= 900:
            return _error(400, "seconds must be a number from 5 to 900")
        bus = request.match_info["id"]
        return await self._command(request, lambda u: self.agent.lending.lend(
            bus, actor=u, reason=body["reason"], seconds=float(seconds)))

    async def return_bus(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        bus = request.match_info["id"]
        return await self._command(request, lambda u: self.agent.lending.give_back(
            bus, actor=u, why=body["reason"]))

    async def logs(self, request: web.Request) -> web.Response:
        from edge_agent.logs import RING

        level = request.query.get("level")
        if level is not None and level not in ("debug", "info", "warning", "error"):
            return _error(400, "level is one of debug, info, warning, error")
        device = request.query.get("device")
        if device is not None and not 0 < len(device) <= 200:
            return _error(400, "device: give a device id")
        after = _int_query(request, "after", 0, 0, 999_999_999)
        limit = _int_query(request, "limit", 200, 1, 5000)
        return _json(RING.read(after=after, device=device, level=level, limit=limit))

    async def _on_id_with_reason(self, request: web.Request, fn: Any) -> web.Response:
        """A decision on ``{id}`` with a reason (acknowledge, ignore, unignore)."""
        body = await self._body(request)
        item = request.match_info["id"]
        return await self._command(request, lambda u: fn(
            item, actor=u, reason=body["reason"].strip()))

    async def ack_alarm(self, request: web.Request) -> web.Response:
        return await self._on_id_with_reason(request, self.agent.ack_alarm)

    async def person(self, request: web.Request) -> web.Response:
        officer = request.match_info["id"]
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", officer):
            return _error(400, "an officer id is letters, digits and . _ : - (up to 64)")
        view = await self.agent.person(officer)
        if view is None:
            return _error(404, f"no officer {officer!r} in the entitlements in force, and "
                               "they hold nothing", code="not_found")
        return _json(view)

    async def identify(self, request: web.Request) -> web.Response:
        dev = self._dev(request)
        return await self._command(request, lambda u: self.agent.identify(dev.id, actor=u))

    async def out_of_service(self, request: web.Request) -> web.Response:
        dev = self._dev(request)
        body = await self._body(request)
        comp = _compartment(body.get("compartment"))
        out = body.get("out", True)
        if not isinstance(out, bool):  # "false" is a string: never taken as truthy
            return _error(400, "out must be true or false (JSON booleans)")
        return await self._command(request, lambda u: self.agent.set_out_of_service(
            dev.id, comp, actor=u, reason=body["reason"], out=out))

    async def adopt(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        item = request.match_info["id"]
        expect = body.get("expect", {})
        if not isinstance(expect, dict) or set(expect) - {"serial", "fingerprint"} \
                or not all(isinstance(v, str) and 0 < len(v) <= 200 for v in expect.values()):
            return _error(400, 'expect must be {"serial": "...", "fingerprint": "..."} '
                               "(either or both, as the device's label says)")
        return await self._command(request, lambda u: self.agent.adopt(
            item, actor=u, reason=body["reason"].strip(), expect=expect))

    async def unignore(self, request: web.Request) -> web.Response:
        return await self._on_id_with_reason(request, self.agent.unignore)

    async def ignore(self, request: web.Request) -> web.Response:
        return await self._on_id_with_reason(request, self.agent.ignore)

"""The socket API's schema: every route named once, its request and answer as typed
records, and the one error shape. The server registers its routes from :data:`ROUTES`,
clients build paths with :func:`path` and read answers as these records, and
:func:`openapi` writes the OpenAPI document (``docs/openapi.json``, kept true by a test).

The records are :class:`~typing.TypedDict` s: what travels is plain JSON, mypy checks
every key a client reads, and importing this module costs nothing (no pydantic, no
aiohttp), so the one-shot CLI and the dashboard share it. pydantic builds the OpenAPI
document and validates answers in tests from these same classes. This module imports
nothing of the agent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from annotated_types import Ge, MinLen
from typing_extensions import TypedDict  # on 3.11 pydantic reads only this one

from edge_agent.api.routes import ROUTES, Route, path

API_VERSION = "1"

# ------------------------------------------------------------------ errors


class Error(TypedDict):
    """Every error answer: a stable code for scripts, a message and a hint for people."""

    error: str
    """stable code, e.g. no_such_compartment, lock_jammed"""
    message: str
    hint: str


ERROR_CODES = {
    "bad_request": 400, "no_such_compartment": 400, "unsupported": 400,
    "entitlements_refused": 400,
    "forbidden": 403,
    "not_found": 404,
    "device_unavailable": 409, "lock_jammed": 409, "door_did_not_open": 409,
    "driver_error": 502,
    "internal": 500,
    "store_unavailable": 503, "too_many_connections": 503,
    "device_timeout": 504,
}


# ------------------------------------------------------------------ records

Link = Literal["discovered", "connecting", "online", "degraded", "offline", "error",
               "ignored", "blocked"]
"""``blocked``: the device answered as another than the one adopted (its pins)."""


class Compartment(TypedDict):
    index: int
    door: Literal["open", "closed", "unknown"]
    item: Literal["present", "absent", "unknown"]
    fault: NotRequired[str | None]
    tag: NotRequired[str | None]


class Alarm(TypedDict):
    id: str
    severity: Literal["critical", "warning"]
    message: str
    since: float
    device: str | None
    code: str | None
    compartment: int | None
    acked: NotRequired[Acknowledgement | None]
    """set once a technician acknowledged it; it stays raised until its cause clears"""


class Acknowledgement(TypedDict):
    by: str
    at: float
    reason: str
    seq: int
    """the alarm_acknowledged record"""


class Diagnostic(TypedDict):
    """One labelled row of what only the vendor's plugin knows (contract 1.2)."""

    label: str
    value: str
    source: Literal["device", "reading"]
    """'device': fixed at connect (DeviceInfo.details); 'reading': from the latest
    reading (DeviceState.details)"""


class Counters(TypedDict):
    polls: int
    poll_failures: int
    timeouts: int
    reconnects: int
    plugin_faults: int
    last_poll_ms: float | None
    pushed: int


class Pins(TypedDict):
    """What was pinned when the device was adopted (edge_agent.pinning)."""

    identity: str
    plugin: str
    address: str
    bus_id: str | None
    serial: str | None
    fingerprint: str | None
    """``sha256:<hex>`` of the key or TLS certificate the device presented"""


class Presented(TypedDict, total=False):
    """What the device presented the last time it was identified."""

    vendor: str
    model: str
    serial: str | None
    firmware: str | None
    fingerprint: str | None
    error: str
    """why it could not be identified"""


class Device(TypedDict):
    id: str
    plugin: str
    vendor: str
    model: str
    source: str
    address: str
    bus_id: str | None
    properties: dict[str, Any]
    first_seen: float
    last_seen: float
    """the last answer from the device (poll or push), else the last discovery"""
    adopted: bool
    ignored: str | None
    out_of_service: dict[str, dict[str, Any]]
    """compartment number (as text) -> who took it out and why"""
    link: Link
    error: str
    compartments: list[Compartment]
    alarms: list[Alarm]
    capabilities: list[Literal["identify", "out_of_service", "indicate"]]
    """optional commands the device has (contract 1.2)"""
    since: NotRequired[float]
    reason: NotRequired[str]
    counters: NotRequired[Counters]
    info: NotRequired[dict[str, Any] | None]
    diagnostics: NotRequired[list[Diagnostic]]
    device_class: NotRequired[str]
    """locker, armoury or reader (contract 1.4); an armoury device is never auto-adopted"""
    pins: NotRequired[Pins | None]
    presented: NotRequired[Presented | None]


class InboxItem(TypedDict):
    id: str
    what: str
    why: str
    since: float
    device: NotRequired[str]


class AuditRecord(TypedDict):
    seq: int
    ts: str
    mono: float
    boot: str
    actor: str
    action: str
    device: NotRequired[str | None]
    compartment: NotRequired[int | None]
    item: NotRequired[str | None]
    reason: NotRequired[str | None]
    outcome: str
    details: NotRequired[dict[str, Any]]
    prev: str
    hash: str


class Plugin(TypedDict):
    name: str
    status: Literal["loaded", "refused", "isolated", "disabled"]
    reason: str
    vendor: str | None
    version: str | None
    contract: str | None
    description: str
    source: str
    distribution: str
    faults: int
    last_fault: str | None
    hooks: list[str]


class Status(TypedDict):
    site: dict[str, Any]
    agent: dict[str, Any]
    devices: dict[str, int]
    audit: dict[str, Any]
    store: dict[str, Any]
    alarms: list[Alarm]
    inbox: int
    buses: list[dict[str, Any]]
    mdns: NotRequired[dict[str, Any] | None]
    plugins: dict[str, str]
    health: Literal["ok", "degraded"]
    health_reason: NotRequired[str]
    """why health is degraded ('' when ok): commands refused, or the critical alarms"""
    api: NotRequired[dict[str, Any] | None]
    uplink: NotRequired[dict[str, Any]]
    """the MQTT link to headquarters: connected, acked_seq, backlog, session, error"""
    entitlements: NotRequired[str]
    """id of the signed entitlements snapshot in force"""


class Frame(TypedDict):
    t: float
    dir: str
    hex: str
    note: str
    decoded: str | None


class Wire(TypedDict):
    bus: str | None
    """the core-owned bus the frames are from; None for a driver-owned transport"""
    transport: NotRequired[str | None]
    """a driver-owned transport (HTTP, Modbus TCP): the device's address (contract 1.4)"""
    address: NotRequired[str | None]
    settings: NotRequired[str | None]
    bus_info: NotRequired[dict[str, Any] | None]
    counters: NotRequired[dict[str, Any]]
    diagnostics: NotRequired[list[Diagnostic]]
    frames: list[Frame]


class HoldingRecord(TypedDict):
    officer: str
    name: str
    equipment: str
    station: str
    device: str
    compartment: int
    item: str | None
    since: float
    due: float
    seq: int
    overdue: Literal["", "warning", "critical"]


class Custody(TypedDict):
    holdings: list[HoldingRecord]
    sessions: list[dict[str, Any]]
    waiting: list[dict[str, Any]]
    classes: NotRequired[list[str]]
    """the equipment classes the site's stations issue"""


class LoanRequest(TypedDict):
    reason: Annotated[str, MinLen(1)]
    seconds: NotRequired[Annotated[float, Ge(5)]]
    """at most this long (default 120, at most 900): then the agent takes it back"""


class LogLine(TypedDict):
    seq: int
    ts: float
    level: Literal["debug", "info", "warning", "error", "critical"]
    logger: str
    device: str | None
    """the device the line is about, when it names one"""
    message: str


class Qualification(TypedDict):
    until: str
    valid: bool


class Person(TypedDict):
    officer: str
    name: str
    in_snapshot: bool
    """False: not in the snapshot in force (left the force?) but still holds something"""
    roles: list[str]
    qualifications: dict[str, Qualification]
    snapshot: str | None
    stale_entitlements: bool
    holdings: list[HoldingRecord]
    events: list[AuditRecord]
    """newest first: the last 20 of 30 days"""


class Deployable(TypedDict):
    equipment: str
    available: dict[str, int]
    """station id -> items of the class ready to issue there"""
    stale_entitlements: bool
    officers: list[dict[str, Any]]
    qualified_but_nothing_available: int


# ------------------------------------------------------------------ requests and answers


class UnlockRequest(TypedDict):
    compartment: Annotated[int, Ge(1)]
    reason: Annotated[str, MinLen(1)]


class Reason(TypedDict):
    reason: Annotated[str, MinLen(1)]


class OutOfServiceRequest(TypedDict):
    compartment: Annotated[int, Ge(1)]
    reason: Annotated[str, MinLen(1)]
    out: NotRequired[bool]
    """false puts the compartment back in service (default true)"""


class BreakGlassRequest(TypedDict):
    reason: Annotated[str, MinLen(1)]
    minutes: Annotated[float, Ge(1)]


class EntitlementsSummary(TypedDict):
    loaded: bool
    id: NotRequired[str | None]
    issued: NotRequired[str | None]
    expires: NotRequired[str | None]
    key_id: NotRequired[str | None]
    officers: NotRequired[int | None]
    problem: NotRequired[str | None]
    audit_seq: NotRequired[int | None]


class CommandAnswer(TypedDict):
    audit_seq: int | None
    """the outcome record (None while it waits in memory for the disk: see audit_pending)"""
    actor: str
    audit_pending: NotRequired[str | None]


class BusLoan(CommandAnswer):
    bus: str
    port: str
    """what the scan opens"""
    settings: str
    until: float


class UnlockAnswer(CommandAnswer):
    device: str
    compartment: int
    state: NotRequired[Compartment | None]
    waiting: NotRequired[str]
    """a weapon compartment: set (HTTP 202) when this call is the first of two armourers;
    nothing opened yet, the second must make the same call within the window"""


class OutOfServiceAnswer(CommandAnswer):
    device: str
    compartment: int
    out_of_service: bool
    device_told: bool | str


class DecisionAnswer(CommandAnswer):
    id: str
    adopted: NotRequired[bool]
    ignored: NotRequired[bool]
    pins: NotRequired[Pins]
    """what the adoption pinned"""
    presented: NotRequired[Presented]
    waiting: NotRequired[str]
    """re-adopting a pinned armoury device: set (HTTP 202) when this call is the first of
    two people; nothing changed yet"""


# ------------------------------------------------------------------ routes

__all__ = ["ROUTES", "Route", "adapter", "openapi", "path"]  # the routes, re-exported


# ------------------------------------------------------------------ OpenAPI


def _records() -> list[type]:
    return [v for v in globals().values()
            if isinstance(v, type) and issubclass(v, dict) and hasattr(v, "__annotations__")
            and v.__module__ == __name__]


def adapter(record: Any) -> Any:
    """A pydantic ``TypeAdapter`` for a record (or ``list[record]``): validation in tests
    and tools. Imports pydantic, so only call it where that cost is fine."""
    from pydantic import TypeAdapter

    for cls in _records():  # field docstrings become descriptions; answers may grow
        cls.__pydantic_config__ = {  # type: ignore[attr-defined]
            "use_attribute_docstrings": True, "extra": "allow"}
    return TypeAdapter(record)


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the socket API, from :data:`ROUTES`."""
    schemas: dict[str, Any] = {}

    def ref(record: type) -> dict[str, Any]:
        doc = adapter(record).json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in doc.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[record.__name__] = doc
        return {"$ref": f"#/components/schemas/{record.__name__}"}

    error = {"description": "error", "content": {"application/json": {"schema": ref(Error)}}}
    paths: dict[str, Any] = {}
    for r in ROUTES.values():
        op: dict[str, Any] = {"operationId": r.name, "summary": r.summary,
                              "responses": {"default": error},
                              "x-required-role": r.role or "viewer"}
        params = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                  ] if "{id}" in r.path else []
        params += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                   for q in r.query]
        if params:
            op["parameters"] = params
        if r.request is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": ref(globals()[r.request])}}}
        if r.answer is None:
            op["responses"]["200"] = {"description": "a stream", "content": {
                "text/event-stream": {}, "application/x-ndjson": {}, "text/csv": {}}}
        else:
            schema = ref(globals()[r.answer])
            if r.many:
                schema = {"type": "array", "items": schema}
            op["responses"]["200"] = {"description": "ok", "content": {
                "application/json": {"schema": schema}}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {"openapi": "3.1.0",
            "info": {"title": "edge-agent socket API", "version": API_VERSION,
                     "description": "HTTP + JSON on the agent's Unix socket; the caller is "
                                    "the socket's peer user. Errors: "
                                    + ", ".join(f"{c} ({s})" for c, s in ERROR_CODES.items())},
            "paths": paths, "components": {"schemas": schemas}}


if __name__ == "__main__":  # python -m edge_agent.api.schema > docs/openapi.json
    import json

    print(json.dumps(openapi(), indent=2, sort_keys=True))

"""The socket API's schema: every route named once, its request and answer as pydantic
models, and the one error shape. The server registers its routes from :data:`ROUTES`,
clients build paths with :func:`path`, and :func:`openapi` writes the OpenAPI document
(``docs/openapi.json``, kept true by a test). This module imports nothing of the agent:
the dashboard may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

API_VERSION = "1"


class _Open(BaseModel):
    """Answers may gain fields; clients ignore what they do not know."""

    model_config = ConfigDict(extra="allow")


# ------------------------------------------------------------------ errors


class Error(BaseModel):
    """Every error answer: a stable code for scripts, a message and a hint for people."""

    error: str = Field(description="stable code, e.g. no_such_compartment, lock_jammed")
    message: str
    hint: str = ""


ERROR_CODES = {
    "bad_request": 400, "no_such_compartment": 400, "unsupported": 400,
    "entitlements_refused": 400,
    "not_found": 404,
    "device_unavailable": 409, "lock_jammed": 409, "door_did_not_open": 409,
    "driver_error": 502,
    "store_unavailable": 503, "too_many_connections": 503,
    "device_timeout": 504,
}


# ------------------------------------------------------------------ records


class Compartment(_Open):
    index: int
    door: Literal["open", "closed", "unknown"]
    item: Literal["present", "absent", "unknown"]
    fault: str | None = None
    tag: str | None = None


class Alarm(_Open):
    id: str
    severity: Literal["critical", "warning"]
    message: str
    since: float
    device: str | None = None
    code: str | None = None
    compartment: int | None = None


class Device(_Open):
    id: str
    plugin: str
    vendor: str
    model: str
    source: str
    address: str
    bus_id: str | None = None
    properties: dict[str, Any] = {}
    first_seen: float
    last_seen: float
    adopted: bool
    ignored: str | None = None
    out_of_service: dict[str, dict[str, Any]] = {}
    link: str
    error: str = ""
    compartments: list[Compartment] = []
    alarms: list[Alarm] = []
    capabilities: list[Literal["identify", "out_of_service"]] = Field(
        default=[], description="optional commands the device has (contract 1.2)")
    since: float | None = None
    reason: str | None = None
    counters: dict[str, Any] | None = None
    info: dict[str, Any] | None = None


class InboxItem(_Open):
    id: str
    what: str
    why: str
    since: float
    device: str | None = None


class AuditRecord(_Open):
    seq: int
    ts: str
    mono: float
    boot: str
    actor: str
    action: str
    device: str | None = None
    compartment: int | None = None
    item: str | None = None
    reason: str | None = None
    outcome: str
    details: dict[str, Any] = {}
    prev: str
    hash: str


class Plugin(_Open):
    name: str
    status: str
    version: str | None = None
    contract: str | None = None
    reason: str = ""


class Status(_Open):
    site: dict[str, Any]
    agent: dict[str, Any]
    devices: dict[str, int]
    audit: dict[str, Any]
    store: dict[str, Any]
    alarms: list[Alarm]
    inbox: int
    buses: list[dict[str, Any]]
    mdns: dict[str, Any] | None = None
    plugins: dict[str, str]
    health: Literal["ok", "degraded"]
    api: dict[str, Any] | None = None


class Wire(_Open):
    bus: str | None
    frames: list[dict[str, Any]]


# ------------------------------------------------------------------ requests and answers


class UnlockRequest(BaseModel):
    compartment: int = Field(ge=1)
    reason: str = Field(min_length=1)


class Reason(BaseModel):
    reason: str = Field(min_length=1)


class OutOfServiceRequest(BaseModel):
    compartment: int = Field(ge=1)
    reason: str = Field(min_length=1)
    out: bool = True


class EntitlementsSummary(_Open):
    loaded: bool
    id: str | None = None
    issued: str | None = None
    expires: str | None = None
    key_id: str | None = None
    officers: int | None = None
    problem: str | None = None
    audit_seq: int | None = None


class CommandAnswer(_Open):
    audit_seq: int | None = Field(description="the outcome record (None while it waits "
                                              "in memory for the disk: see audit_pending)")
    actor: str
    audit_pending: str | None = None


class UnlockAnswer(CommandAnswer):
    device: str
    compartment: int
    state: Compartment | None


class OutOfServiceAnswer(CommandAnswer):
    device: str
    compartment: int
    out_of_service: bool
    device_told: bool | str


class DecisionAnswer(CommandAnswer):
    id: str


# ------------------------------------------------------------------ routes


@dataclass(frozen=True)
class Route:
    name: str
    method: Literal["GET", "POST"]
    path: str
    summary: str
    answer: type[BaseModel] | None = None  # None: a stream (SSE or export)
    many: bool = False  # the answer is a list of ``answer``
    request: type[BaseModel] | None = None
    query: tuple[str, ...] = ()


ROUTES: dict[str, Route] = {r.name: r for r in (
    Route("status", "GET", "/v1/status", "site, health, counts, alarms, buses", Status),
    Route("devices", "GET", "/v1/devices", "every device with its compartments", Device,
          many=True),
    Route("device", "GET", "/v1/devices/{id}", "one device", Device),
    Route("wire", "GET", "/v1/devices/{id}/wire", "the last frames on the device's bus",
          Wire, query=("limit",)),
    Route("unlock", "POST", "/v1/devices/{id}/unlock", "open one compartment (audited)",
          UnlockAnswer, request=UnlockRequest),
    Route("identify", "POST", "/v1/devices/{id}/identify", "flash or beep the device",
          CommandAnswer),
    Route("out_of_service", "POST", "/v1/devices/{id}/out-of-service",
          "take a compartment out of service or put it back (a decision)",
          OutOfServiceAnswer, request=OutOfServiceRequest),
    Route("adopt", "POST", "/v1/inbox/{id}/adopt", "adopt a discovered device (a decision)",
          DecisionAnswer, request=Reason),
    Route("ignore", "POST", "/v1/inbox/{id}/ignore",
          "ignore a discovered device or inbox entry (a decision)", DecisionAnswer,
          request=Reason),
    Route("events", "GET", "/v1/events", "audit records from the indexes", AuditRecord,
          many=True, query=("limit", "after_seq", "since", "until", "device", "compartment",
                            "item", "actor", "action")),
    Route("events_stream", "GET", "/v1/events/stream",
          "server-sent events: audit records and device changes"),
    Route("events_export", "GET", "/v1/events/export", "every match, streamed (jsonl, csv)",
          query=("format", "since", "until", "device", "compartment", "item", "actor",
                 "action")),
    Route("plugins", "GET", "/v1/plugins", "loaded, refused and isolated plugins", Plugin,
          many=True),
    Route("inbox", "GET", "/v1/inbox", "discovered but not adopted, with why", InboxItem,
          many=True),
    Route("entitlements", "GET", "/v1/entitlements",
          "the signed training-records snapshot in force", EntitlementsSummary),
    Route("entitlements_load", "POST", "/v1/entitlements",
          "verify a signed snapshot and put it in force (audited)", EntitlementsSummary),
)}


def path(name: str, **params: str) -> str:
    """The path of a named route, e.g. ``path("unlock", id="kerong:bank:0")``."""
    p = ROUTES[name].path
    for key, value in params.items():
        p = p.replace("{" + key + "}", value)
    return p


# ------------------------------------------------------------------ OpenAPI


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the socket API, from :data:`ROUTES`."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in doc.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = doc
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = {"description": "error", "content": {"application/json": {"schema": ref(Error)}}}
    paths: dict[str, Any] = {}
    for r in ROUTES.values():
        op: dict[str, Any] = {"operationId": r.name, "summary": r.summary,
                              "responses": {"default": error}}
        params = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                  ] if "{id}" in r.path else []
        params += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                   for q in r.query]
        if params:
            op["parameters"] = params
        if r.request is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": ref(r.request)}}}
        if r.answer is None:
            op["responses"]["200"] = {"description": "a stream", "content": {
                "text/event-stream": {}, "application/x-ndjson": {}, "text/csv": {}}}
        else:
            schema = ref(r.answer)
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

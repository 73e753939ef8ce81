"""Every route of the socket API, named once: method, path, summary, the records it takes
and answers (by name, in :mod:`edge_agent.api.schema`), its query and the role it needs.

Standard library only, so the one-shot CLI can build requests without importing the
records (and what they import).
"""

from __future__ import annotations

from typing import Literal, NamedTuple


class Route(NamedTuple):  # not a dataclass: importing dataclasses costs the CLI 15 ms
    name: str
    method: Literal["GET", "POST"]
    path: str
    summary: str
    answer: str | None = None  # a record of edge_agent.api.schema; None: a stream
    many: bool = False  # the answer is a list of ``answer``
    request: str | None = None
    query: tuple[str, ...] = ()
    role: str = ""  # the role(s) a caller needs, "a|b" = either ([roles]); "" = viewer


ROUTES: dict[str, Route] = {r.name: r for r in (
    Route("status", "GET", "/v1/status", "site, health, counts, alarms, buses", "Status"),
    Route("devices", "GET", "/v1/devices", "every device with its compartments", "Device",
          many=True),
    Route("device", "GET", "/v1/devices/{id}", "one device", "Device"),
    Route("wire", "GET", "/v1/devices/{id}/wire", "the last frames on the device's bus",
          "Wire", query=("limit",)),
    Route("unlock", "POST", "/v1/devices/{id}/unlock", "open one compartment (audited; a "
          "weapon compartment needs two armourers)", "UnlockAnswer", request="UnlockRequest",
          role="technician|armourer"),
    Route("identify", "POST", "/v1/devices/{id}/identify", "flash or beep the device",
          "CommandAnswer", role="technician"),
    Route("out_of_service", "POST", "/v1/devices/{id}/out-of-service",
          "take a compartment out of service or put it back (a decision)",
          "OutOfServiceAnswer", request="OutOfServiceRequest", role="technician"),
    Route("adopt", "POST", "/v1/inbox/{id}/adopt", "adopt a discovered device (a decision)",
          "DecisionAnswer", request="Reason", role="technician"),
    Route("ignore", "POST", "/v1/inbox/{id}/ignore",
          "ignore a discovered device or inbox entry (a decision)", "DecisionAnswer",
          request="Reason", role="technician"),
    Route("unignore", "POST", "/v1/inbox/{id}/unignore",
          "take an ignore back: the device or entry is in the inbox again (a decision)",
          "DecisionAnswer", request="Reason", role="technician"),
    Route("events", "GET", "/v1/events", "audit records from the indexes", "AuditRecord",
          many=True, query=("limit", "after_seq", "since", "until", "device", "compartment",
                            "item", "actor", "action")),
    Route("events_stream", "GET", "/v1/events/stream",
          "server-sent events: audit records and device changes"),
    Route("events_export", "GET", "/v1/events/export", "every match, streamed (jsonl, csv)",
          query=("format", "since", "until", "device", "compartment", "item", "actor",
                 "action")),
    Route("plugins", "GET", "/v1/plugins", "loaded, refused and isolated plugins", "Plugin",
          many=True),
    Route("inbox", "GET", "/v1/inbox", "discovered but not adopted, with why", "InboxItem",
          many=True),
    Route("entitlements", "GET", "/v1/entitlements",
          "the signed training-records snapshot in force", "EntitlementsSummary"),
    Route("entitlements_load", "POST", "/v1/entitlements",
          "verify a signed snapshot and put it in force (audited)", "EntitlementsSummary",
          role="armourer"),
    Route("custody", "GET", "/v1/custody", "who holds what (overdue first), open sessions, "
          "two-person issues waiting", "Custody"),
    Route("break_glass", "POST", "/v1/custody/break-glass", "two armourers: stale "
          "entitlements stop refusing issues for N minutes (audited)", "CommandAnswer",
          request="BreakGlassRequest", role="armourer"),
    Route("deployable", "GET", "/v1/custody/deployable", "officers who could be issued a "
          "class now, and where items of it are available", "Deployable",
          query=("equipment",)),
    Route("ack_alarm", "POST", "/v1/alarms/{id}/ack", "acknowledge a raised alarm (who, "
          "why; audited); it stays raised until its cause clears", "DecisionAnswer",
          request="Reason", role="technician|armourer"),
    Route("lend_bus", "POST", "/v1/buses/{id}/lend", "lend a bus to a scan: the agent "
          "closes its port until it is given back or the loan runs out (audited)",
          "BusLoan", request="LoanRequest", role="technician"),
    Route("return_bus", "POST", "/v1/buses/{id}/return", "give a lent bus back to the "
          "agent (audited)", "DecisionAnswer", request="Reason", role="technician"),
    Route("logs", "GET", "/v1/logs", "the agent's recent log lines (a ring of 5,000), "
          "oldest first", "LogLine", many=True, query=("device", "level", "after", "limit"),
          role="technician|armourer"),
    Route("person", "GET", "/v1/custody/officers/{id}", "one officer: qualifications in "
          "the snapshot in force, what they hold, their last audit records", "Person"),
)}


def path(name: str, **params: str) -> str:
    """The path of a named route, e.g. ``path("unlock", id="kerong:bank:0")``."""
    p = ROUTES[name].path
    for key, value in params.items():
        p = p.replace("{" + key + "}", value)
    return p



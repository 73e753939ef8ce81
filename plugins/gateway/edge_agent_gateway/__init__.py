"""REST locker gateway plugin for edge-agent (protocols.md section 4).

Service type ``_edge-lockergw._tcp.local.``; TXT records: ``vendor``, ``model``,
``serial``, ``api`` (API version, ``1``). The serial in TXT is only a claim: the driver
confirms it with ``GET /info`` before the device is trusted.

REST API (JSON): ``GET /info`` -> ``{"vendor", "model", "serial", "apiVersion"}``;
``GET /lockers`` -> ``[{"lockerId", "doorOpen", "occupied", "outOfService", "reasonCode"}]``;
``POST /lockers/{id}/open`` -> ``{"success", "lockerId", "doorOpen", "message"}``;
``PATCH /lockers/{id}`` with ``{"outOfService": bool, "reasonCode": str}``.
"""

__version__ = "0.1.0"
SERVICE_TYPE = "_edge-lockergw._tcp.local."

"""Exception hierarchy of edge-agent.

Everything the agent raises on purpose derives from :class:`EdgeAgentError`.
Library exceptions (pyserial, aiohttp, TinyDB, zeroconf, pydantic) are mapped to one
of these at the boundary where they are caught, with ``raise ... from`` so the original
cause stays in the traceback.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Root of every error edge-agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """A site config file is unreadable, is not TOML, or does not match the schema.

    ``problems`` holds one human-readable line per problem, each naming the file,
    the line and the key path.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


class PluginError(EdgeAgentError):
    """A vendor plugin could not be loaded, was refused, or misbehaved."""


class DriverError(EdgeAgentError):
    """A device driver call failed. Raised by drivers; the supervisor handles it."""


class TransportError(DriverError):
    """The port, socket or bus under a device could not be opened or failed."""


class DeviceTimeout(DriverError):
    """A device did not answer within its deadline."""


class ProtocolError(DriverError):
    """A device answered, but not with what the protocol allows."""


class Unsupported(DriverError):
    """The device cannot do what was asked (for example it has no identify LED)."""

    kind = "unsupported"


# Failure kinds (contract 1.2): a driver raises one of these when the device says so,
# and the core audits the command's outcome as ``kind`` instead of a plain "failed".

class LockJammed(DriverError):
    """The device reports the lock did not move (jammed, blocked bolt, motor fault)."""

    kind = "lock_jammed"


class DoorDidNotOpen(DriverError):
    """The unlock was accepted but the door still reads closed after the settle time.
    Raised by the core when a driver reports door state; a driver may raise it too."""

    kind = "door_did_not_open"


class NoSuchCompartment(DriverError):
    """The compartment is outside the device's range. The core refuses such a request
    before anything is audited; a driver raises it when the device itself says so."""

    kind = "no_such_compartment"


class IdentityMismatch(DriverError):
    """The device answered, but not as the device that was adopted (contract 1.4): another
    serial, another key or certificate, another board at a pinned bus address. The core
    blocks the device (no commands), raises a critical alarm and audits it once; it is not
    re-learned until a technician adopts it again."""

    kind = "identity_mismatch"


def failure_kind(exc: BaseException) -> str:
    """The outcome to audit for a failed command: its kind, or plain "failed"."""
    return str(getattr(exc, "kind", "failed"))


class DeviceUnavailable(EdgeAgentError):
    """A command targeted a device that is unknown, offline or not adopted."""


class AccessDenied(EdgeAgentError):
    """The caller's roles (Unix groups, ``[roles]`` in the site config) do not allow it."""

    def __init__(self, message: str, missing: str = "") -> None:
        super().__init__(message)
        self.missing = missing


class StoreError(EdgeAgentError):
    """The state store or the audit log could not be read or written."""


class StoreUnavailable(StoreError):
    """The audit log cannot take writes (disk full, I/O error): commands fail closed."""


class ClientError(EdgeAgentError):
    """A command-line or dashboard client could not reach or use the agent's API."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 hint: str = "") -> None:
        self.status = status
        self.code = code  # the API's error code, when the agent answered with one
        self.hint = hint
        super().__init__(message)

    def to_json(self) -> dict[str, str | None]:
        return {"error": self.code or ("unreachable" if self.status is None else "error"),
                "message": str(self), "hint": self.hint}

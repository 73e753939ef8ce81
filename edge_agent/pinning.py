"""Trust pinning: what a device was when it was adopted, and whether it still is.

Discovery never grants trust. A device is adopted by a technician (or, where the site
config's ``[agent] auto_adopt`` allows its class, by the agent on first contact; never
an armoury device). Adoption pins what identifies it: the identity its plugin derived,
the serial and the key or certificate fingerprint it presented, and for a board on a
serial bus, the bus and the board address. Every later connection is compared with the
pins; any difference blocks the device (no commands), raises a critical alarm and is
audited once, and nothing is re-learned until it is adopted again (by two people for an
armoury device).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edge_agent.contract import DeviceInfo


@dataclass(frozen=True)
class Pins:
    """What was pinned at adoption (stored in the registry and in the adoption's audit
    record, so a lost registry gets it back from the trail)."""

    identity: str
    plugin: str
    address: str
    bus_id: str | None = None
    serial: str | None = None
    fingerprint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> Pins | None:
        if not isinstance(doc, dict) or not isinstance(doc.get("identity"), str):
            return None
        return cls(identity=doc["identity"], plugin=str(doc.get("plugin", "")),
                   address=str(doc.get("address", "")), bus_id=doc.get("bus_id"),
                   serial=doc.get("serial"), fingerprint=doc.get("fingerprint"))

    def for_driver(self) -> dict[str, str]:
        """The pins a driver checks itself (contract 1.4 ``DriverContext.pins``)."""
        out = {}
        if self.serial:
            out["serial"] = self.serial
        if self.fingerprint:
            out["fingerprint"] = self.fingerprint
        return out

    def describe(self) -> str:
        parts = [self.identity]
        if self.serial:
            parts.append(f"serial {self.serial}")
        if self.fingerprint:
            parts.append(f"key {short(self.fingerprint)}")
        if self.bus_id:
            parts.append(f"at {self.address}")
        return ", ".join(parts)


def short(fingerprint: str) -> str:
    """``sha256:ab12…`` as a technician compares it with a label: the first 16 hex
    digits in pairs (the whole value is in the audit record and the API)."""
    algo, _, hexd = fingerprint.partition(":")
    hexd = hexd.replace(":", "")
    return f"{algo}:" + ":".join(hexd[i:i + 2] for i in range(0, min(len(hexd), 16), 2)) \
        + ("…" if len(hexd) > 16 else "")


def presented(info: DeviceInfo) -> dict[str, Any]:
    """What a device presented on a connection, as the inbox and the API show it."""
    return {"vendor": info.vendor, "model": info.model, "serial": info.serial,
            "firmware": info.firmware, "fingerprint": info.fingerprint}


def mismatch(pins: Pins, info: DeviceInfo) -> str | None:
    """Why ``info`` is not the pinned device, or None if it is."""
    if pins.serial and info.serial != pins.serial:
        return (f"answers with serial {info.serial!r}; adopted as serial {pins.serial!r} "
                "(a swapped or spoofed device)")
    if pins.fingerprint and info.fingerprint != pins.fingerprint:
        if info.fingerprint is None:
            return (f"presented no key or certificate; adopted with {short(pins.fingerprint)}"
                    " (a downgrade or a swapped device)")
        return (f"presents {short(info.fingerprint)}; adopted with "
                f"{short(pins.fingerprint)} (its certificate changed)")
    return None

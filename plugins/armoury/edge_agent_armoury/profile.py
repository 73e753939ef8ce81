"""Declarative device profiles: a cabinet model's Modbus register map, in TOML.

A profile has four tables (see ``profiles/sentinel-wc12.toml`` for an annotated one):

``[profile]``   name, vendor, model, number of slots, Modbus unit id, lock pulse, limits
``[identity]``  where the serial number (and firmware version) is read from
``[cabinet]``   points of the whole cabinet: main door, tamper, mains, battery, temperature
``[slot]``      points of slot 1; slot *n* uses ``address + (n - 1) * stride``

A **point** is ``{ table, address, ... }`` where ``table`` is one of ``coil`` (FC01/05),
``discrete`` (FC02), ``holding`` (FC03) or ``input`` (FC04). Booleans live in coils and
discrete inputs, or in one ``bit`` of a register; numbers, strings and tag ids live in
registers (big-endian words).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.config import validate_toml
from edge_agent.errors import ConfigError

Table = Literal["coil", "discrete", "holding", "input"]
BIT_TABLES = ("coil", "discrete")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Point(_Strict):
    table: Table
    address: int = Field(ge=0, le=65535)
    stride: int = Field(0, ge=0, le=4096)
    """Slot points only: address step from one slot to the next."""
    type: Literal["bool", "uint16", "int16", "uint32", "string", "hex"] = "bool"
    count: int = Field(1, ge=1, le=32)
    """Registers the value spans (``uint32``: 2; ``string``/``hex``: as many as needed)."""
    bit: int | None = Field(None, ge=0, le=15)
    """For a boolean held in a register: which bit (0 = least significant)."""
    invert: bool = False
    """For booleans: the contact reads true when the condition is false (NC contacts)."""
    scale: float = 1.0
    unit: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        if self.table in BIT_TABLES:
            if self.type != "bool":
                raise ValueError(f"a {self.table} holds one bit: type must be 'bool'")
            if self.bit is not None:
                raise ValueError(f"'bit' is for registers, not {self.table}s")
        elif self.type == "bool" and self.bit is None:
            raise ValueError("a boolean in a register needs 'bit' (0-15)")
        if self.type == "uint32" and self.count != 2:
            raise ValueError("uint32 spans 2 registers: count must be 2")
        if self.type in ("uint16", "int16", "bool") and self.count != 1:
            raise ValueError(f"{self.type} spans 1 register: count must be 1")
        return self

    def at(self, slot: int) -> int:
        """Address of this point for 1-based ``slot`` (0: a cabinet point)."""
        return self.address + (max(slot, 1) - 1) * self.stride

    @property
    def width(self) -> int:
        return 1 if self.table in BIT_TABLES else self.count

    def decode(self, values: Sequence[int | bool]) -> bool | int | float | str:
        """Turn the ``width`` raw values read at this point into its value."""
        if self.type == "bool":
            raw = bool(values[0]) if self.bit is None else bool((int(values[0]) >> self.bit) & 1)
            return raw != self.invert
        regs = [int(v) & 0xFFFF for v in values]
        if self.type == "hex":
            return "".join(f"{r:04X}" for r in regs)
        if self.type == "string":
            raw_bytes = b"".join(r.to_bytes(2, "big") for r in regs)
            return raw_bytes.split(b"\0", 1)[0].decode("ascii", "replace").strip()
        if self.type == "uint32":
            num = (regs[0] << 16) | regs[1]
        elif self.type == "int16":
            num = regs[0] - 0x10000 if regs[0] & 0x8000 else regs[0]
        else:
            num = regs[0]
        return num * self.scale if self.scale != 1.0 else num

    def encode(self, value: bool | int | float | str, current: int = 0) -> list[int]:
        """The raw values that make this point read ``value`` (simulators, tests).
        ``current`` is the register's present value, for a bit inside it."""
        if self.type == "bool":
            on = bool(value) != self.invert
            if self.bit is None:
                return [int(on)]
            mask = 1 << self.bit
            return [(current | mask) if on else (current & ~mask)]
        if self.type in ("hex", "string"):
            text = str(value)
            if self.type == "hex":
                data = bytes.fromhex(text.rjust(self.count * 4, "0")) if text else b""
            else:
                data = text.encode("ascii")
            data = data[: self.count * 2].ljust(self.count * 2, b"\0")
            return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        num = round(float(value) / self.scale) if self.scale != 1.0 else int(value)
        if self.type == "uint32":
            return [(num >> 16) & 0xFFFF, num & 0xFFFF]
        return [num & 0xFFFF]


class ProfileInfo(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)
    vendor: str
    model: str
    kind: str = "armoury cabinet"
    slots: int = Field(ge=1, le=256)
    unit: int = Field(1, ge=0, le=247)
    """Default Modbus unit (slave) id; mDNS TXT ``unit`` or the site config may override."""
    pulse_ms: int = Field(700, ge=50, le=10_000)
    """How long a lock coil stays on to release a slot."""
    pulse_reset: Literal["device", "agent"] = "agent"
    """Who turns the coil off again: the controller's own pulse timer, or the agent."""
    door_open_limit_s: float = Field(60.0, gt=0, le=86_400)
    """A slot or main door open longer than this raises ``door_held_open``."""


class Identity(_Strict):
    serial: Point
    firmware: Point | None = None


class Cabinet(_Strict):
    main_door: Point | None = None
    tamper: Point | None = None
    mains_ok: Point | None = None
    battery: Point | None = None
    temperature: Point | None = None


class Slot(_Strict):
    lock: Point
    door: Point | None = None
    present: Point
    tag: Point | None = None
    """Registers holding the RFID tag id of the item in the slot; all zero = no tag read."""

    @field_validator("lock")
    @classmethod
    def _lock_is_coil(cls, v: Point) -> Point:
        if v.table != "coil":
            raise ValueError("slot.lock must be a coil (FC05 releases it)")
        return v


class Profile(_Strict):
    profile: ProfileInfo
    identity: Identity
    cabinet: Cabinet = Field(default_factory=Cabinet)
    slot: Slot

    @property
    def name(self) -> str:
        return self.profile.name

    def slot_points(self) -> Iterator[tuple[str, Point]]:
        for key in ("door", "present", "tag"):
            p = getattr(self.slot, key)
            if p is not None:
                yield key, p

    def cabinet_points(self) -> Iterator[tuple[str, Point]]:
        for key in ("main_door", "tamper", "mains_ok", "battery", "temperature"):
            p = getattr(self.cabinet, key)
            if p is not None:
                yield key, p


@dataclass(frozen=True)
class Read:
    """One Modbus read request: ``count`` values of ``table`` from ``address``."""

    table: Table
    address: int
    count: int


MAX_READ = {"coil": 2000, "discrete": 2000, "holding": 125, "input": 125}
MAX_GAP = {"coil": 64, "discrete": 64, "holding": 8, "input": 8}


def plan_reads(spans: Iterable[tuple[Table, int, int]]) -> list[Read]:
    """Merge the spans to read into as few requests as the protocol allows, reading a
    small gap rather than paying another round trip."""
    by_table: dict[Table, list[tuple[int, int]]] = {}
    for table, addr, width in spans:
        by_table.setdefault(table, []).append((addr, addr + width))
    out: list[Read] = []
    tables: tuple[Table, ...] = ("coil", "discrete", "holding", "input")
    for table in tables:
        ranges = sorted(by_table.get(table, []))
        start = end = -1
        for lo, hi in ranges:
            fits = max(hi, end) - start <= MAX_READ[table]
            if start >= 0 and lo - end <= MAX_GAP[table] and fits:
                end = max(end, hi)
                continue
            if start >= 0:
                out.append(Read(table, start, end - start))
            start, end = lo, hi
        if start >= 0:
            out.append(Read(table, start, end - start))
    return out


def state_reads(profile: Profile) -> list[Read]:
    spans: list[tuple[Table, int, int]] = []
    for _, p in profile.cabinet_points():
        spans.append((p.table, p.address, p.width))
    for n in range(1, profile.profile.slots + 1):
        for _, p in profile.slot_points():
            spans.append((p.table, p.at(n), p.width))
    return plan_reads(spans)


# ------------------------------------------------------------------------- loading


def _parse(source: str, path: str) -> Profile:
    return validate_toml(Profile, source, path,
                         hint="see the annotated edge_agent_armoury/profiles/sentinel-wc12.toml")


def builtin_profiles() -> dict[str, Path]:
    folder = resources.files("edge_agent_armoury") / "profiles"
    return {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir()
            if str(f).endswith(".toml")}


class ProfileLibrary:
    """Profiles by name: the plugin's own, then each site directory (a site profile of
    the same name replaces a built-in one). Files are read once and kept."""

    def __init__(self, site_dirs: Sequence[str | Path] = ()) -> None:
        self.files: dict[str, Path] = builtin_profiles()
        self.problems: list[str] = []
        for d in site_dirs:
            folder = Path(d)
            if not folder.is_dir():
                self.problems.append(f"{folder}: profile directory does not exist")
                continue
            for f in sorted(folder.glob("*.toml")):
                self.files[f.stem] = f
        self._loaded: dict[str, Profile] = {}

    def names(self) -> list[str]:
        return sorted(self.files)

    def get(self, name: str) -> Profile:
        """The profile called ``name``; :class:`ConfigError` if unknown or invalid."""
        got = self._loaded.get(name)
        if got is not None:
            return got
        path = self.files.get(name)
        if path is None:
            raise ConfigError(name, [f"no device profile {name!r} (known: "
                                     f"{', '.join(self.names()) or 'none'})"])
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), [f"{path}: cannot read: {exc}"]) from exc
        prof = _parse(source, str(path))
        if prof.profile.name != path.stem:
            raise ConfigError(str(path), [f"{path}: profile.name is {prof.profile.name!r} "
                                          f"but the file is {path.name}: make them agree"])
        self._loaded[name] = prof
        return prof

    def check_all(self) -> list[str]:
        """Load every profile; return each problem (used by tests and ``config check``)."""
        problems = list(self.problems)
        for name in self.names():
            try:
                self.get(name)
            except ConfigError as exc:
                problems.extend(exc.problems)
        return problems
